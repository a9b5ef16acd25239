"""python manage.py requeue_worker_runs WORKER [--died-at ISO-TIME]: queue again, at once, what a dead
Celery worker was running (frontend.recovery.requeue_runs_of_worker; the pieces of experiments it
trained for another worker's experiment: frontend.distributed.release_pieces_of_worker).

scripts/worker_supervisor.py runs it when one of its workers exits, so the run resumes on the
restarted worker within seconds instead of after the heartbeat timeout. By hand: after a worker's
machine died, to resume its runs without waiting for the timeout.
"""
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from frontend import distributed, recovery


class Command(BaseCommand):
    help = "Queue again the experiments and reproduction checks a dead Celery worker was running."

    def add_arguments(self, parser):
        parser.add_argument("worker", help="the worker's Celery hostname, e.g. worker1@labhost")
        parser.add_argument("--died-at", help="ISO time of its death; runs started later (by a new worker of the "
                                              "same name) are left alone. Default: now")

    def handle(self, *args, worker, died_at=None, **options):
        died = timezone.now()
        if died_at:
            try:
                died = parse_datetime(died_at)
            except ValueError:  # well formed but impossible, e.g. month 13
                died = None
            if died is None:
                raise CommandError(f"--died-at must be an ISO time such as 2025-01-31T10:42:05+00:00; got {died_at!r}",
                                   returncode=2)
            if timezone.is_naive(died):
                died = timezone.make_aware(died)
        requeued = recovery.requeue_runs_of_worker(worker, started_before=died)
        pieces = distributed.release_pieces_of_worker(worker, started_before=died)
        self.stdout.write(f"{worker}: re-queued experiments {requeued['experiments'] or 'none'}, "
                          f"reproduction checks {requeued['reproductions'] or 'none'}, "
                          f"pieces of experiments {pieces or 'none'}")
