"""Crash recovery: a running experiment's worker writes a heartbeat; every worker watches for
running experiments whose heartbeat went stale (their worker was killed, lost its machine, or
lost the database) and queues them again. The trainer resumes a run directory after its last
finished round, so a crash costs at most the round in flight.

Why not Celery's own redelivery (acks_late + Redis visibility timeout)? Redis re-delivers any
message unacknowledged for longer than the visibility timeout, including those of workers that
are alive and in the middle of a long run, so it would start a second copy of every run longer
than the timeout. The heartbeat tells a dead worker from a busy one.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from frontend.models import Experiment

log = logging.getLogger(__name__)


@contextlib.contextmanager
def heartbeat(experiment_id: int):
    """Write the experiment's heartbeat every LOTTERYWEB_HEARTBEAT_SECONDS while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.LOTTERYWEB_HEARTBEAT_SECONDS):
                try:
                    Experiment.objects.filter(pk=experiment_id).update(heartbeat_at=timezone.now())
                except Exception:  # a database hiccup: the next beat tries again
                    log.exception("heartbeat of experiment %s failed", experiment_id)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{experiment_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def requeue_lost_runs() -> list[int]:
    """Queue again every running experiment whose heartbeat is older than LOTTERYWEB_HEARTBEAT_TIMEOUT."""
    from frontend.tasks import run_experiment_task

    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.LOTTERYWEB_HEARTBEAT_TIMEOUT)
    lost = Experiment.objects.filter(status=Experiment.Status.RUNNING).filter(
        Q(heartbeat_at__lt=stale_before) | Q(heartbeat_at__isnull=True, started_at__lt=stale_before))
    requeued = []
    for experiment in lost:
        round_index = experiment.current_round or 0
        kept = f"rounds 0-{round_index - 1} kept" if round_index > 0 else "nothing finished yet"
        last = timezone.localtime(experiment.heartbeat_at or experiment.started_at).strftime("%H:%M:%S")
        message = (f"worker {experiment.worker or '?'} stopped answering during round {round_index} "
                   f"(last heartbeat {last}); re-queued at {timezone.localtime(now).strftime('%H:%M:%S')} to resume "
                   f"from round {round_index} ({kept})")
        # Only if nobody else re-queued or revived it meanwhile.
        claimed = Experiment.objects.filter(pk=experiment.pk, status=Experiment.Status.RUNNING,
                                            heartbeat_at=experiment.heartbeat_at).update(
            status=Experiment.Status.QUEUED, message=message)
        if claimed:
            log.warning("experiment %s: %s", experiment.pk, message)
            run_experiment_task.delay(experiment.pk)
            requeued.append(experiment.pk)
    return requeued


class BrokerRestartWatch:
    """Notices a Redis restart (its run_id changes) and sends the queued experiments' tasks again:
    a Redis without persistence forgets its queue. A duplicate is harmless: a task only runs an
    experiment it can move from queued to running."""

    def __init__(self):
        self.run_id = None

    def check(self) -> list[int]:
        import redis

        from frontend.tasks import run_experiment_task
        run_id = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5).info("server")["run_id"]
        restarted = self.run_id is not None and run_id != self.run_id
        self.run_id = run_id
        if not restarted:
            return []
        resent = list(Experiment.objects.filter(status=Experiment.Status.QUEUED).order_by("created_at", "id")
                      .values_list("pk", flat=True))
        for experiment_id in resent:
            run_experiment_task.delay(experiment_id)
        log.warning("Redis restarted: sent the tasks of %d queued experiments again", len(resent))
        return resent


def start_watchdog() -> threading.Thread:
    """A worker's daemon thread that, every LOTTERYWEB_RECOVERY_INTERVAL seconds, re-queues lost runs
    and re-sends queued ones after a Redis restart."""
    broker = BrokerRestartWatch()

    def watch() -> None:
        while True:
            try:
                broker.check()
            except Exception:  # Redis is away right now: look again next time
                log.info("could not ask Redis whether it restarted", exc_info=True)
            try:
                requeue_lost_runs()
            except Exception:  # the database or the broker is away: look again next time
                log.exception("looking for lost runs failed")
            finally:
                connection.close()
            threading.Event().wait(settings.LOTTERYWEB_RECOVERY_INTERVAL)

    thread = threading.Thread(target=watch, name="lost-run-watchdog", daemon=True)
    thread.start()
    return thread
