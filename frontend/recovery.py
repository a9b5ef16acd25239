"""Crash recovery: a running experiment's worker writes a heartbeat; every worker watches for
running experiments whose heartbeat went stale (their worker was killed, lost its machine, or
lost the database) and queues them again. A worker under scripts/worker_supervisor.py (run.sh)
is watched more closely: when it exits, the supervisor queues its runs again at once
(`requeue_runs_of_worker`), without waiting for the heartbeat to go stale. The trainer resumes a
run directory after its last finished round, so a crash costs at most the round in flight.
Reproduction checks (ReproductionRun) beat and are re-queued the same way; a check reuses its
finished runs and analyses on disk.

Why not Celery's own redelivery (acks_late + Redis visibility timeout)? kombu's Redis transport
(5.7) keeps a delivered, unacknowledged message in the `unacked` hash, and any worker that is
waiting for work puts back into the queue every message delivered longer than
`visibility_timeout` ago, whether its worker is dead or alive and in the middle of a long run: a
run longer than the timeout is delivered a second time. The second copy would have to be dropped,
which acknowledges the message, so a later crash of the first worker would find nothing left to
re-deliver. And `task_reject_on_worker_lost` only acts when a prefork child dies under a living
parent; with `--pool=solo` the process that would re-queue the message is the one killed. So a
message is acknowledged when its task starts (CELERY_TASK_ACKS_LATE = False) and the heartbeat
tells a dead worker from a busy one.

Redis itself keeps no experiment: rows live in the database. A Redis without persistence (run.sh
starts one) forgets the queue when it restarts; `BrokerRestartWatch` notices and sends the tasks
of every queued experiment, analysis and reproduction check again.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from datetime import timedelta

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from frontend import queues
from frontend.models import AnalysisRun, Experiment, ReproductionRun

log = logging.getLogger(__name__)


@contextlib.contextmanager
def heartbeat(row_id: int, model=Experiment):
    """Write the row's heartbeat (an experiment's, or a ReproductionRun's with `model`) every
    LOTTERYWEB_HEARTBEAT_SECONDS while the block runs."""
    stop = threading.Event()
    label = f"{model.__name__} {row_id}"

    def beat() -> None:
        try:
            while not stop.wait(settings.LOTTERYWEB_HEARTBEAT_SECONDS):
                try:
                    model.objects.filter(pk=row_id).update(heartbeat_at=timezone.now())
                except Exception:  # a database hiccup: the next beat tries again
                    log.exception("heartbeat of %s failed", label)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{label}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _stale(rows, now):
    """The running rows among `rows` whose heartbeat is older than LOTTERYWEB_HEARTBEAT_TIMEOUT."""
    stale_before = now - timedelta(seconds=settings.LOTTERYWEB_HEARTBEAT_TIMEOUT)
    return rows.filter(status="running").filter(
        Q(heartbeat_at__lt=stale_before) | Q(heartbeat_at__isnull=True, started_at__lt=stale_before))


def requeue_lost_runs() -> list[int]:
    """Queue again every running experiment whose heartbeat is older than LOTTERYWEB_HEARTBEAT_TIMEOUT."""
    now = timezone.now()
    return [experiment.pk for experiment in _stale(Experiment.objects.all(), now)
            if _requeue_experiment(experiment, now, "stopped answering", _last_heartbeat(experiment))]


def requeue_lost_reproductions() -> list[int]:
    """Queue again every running reproduction check whose worker stopped answering; the check finds
    its finished runs and analyses on disk and goes on from there. One whose cancel was asked for
    is marked cancelled instead."""
    now = timezone.now()
    return [run.pk for run in _stale(ReproductionRun.objects.all(), now)
            if _requeue_reproduction(run, now, "stopped answering", _last_heartbeat(run))]


def requeue_runs_of_worker(worker: str, started_before=None) -> dict[str, list[int]]:
    """Queue again, at once, the experiments and reproduction checks that `worker` (a Celery hostname,
    e.g. worker1@host) was running when it died: its supervisor saw it exit, so nobody waits for the
    heartbeat to go stale. `started_before` (when it died) leaves alone what a new worker of the same
    name started since. {"experiments": [...], "reproductions": [...]} queued again."""
    now = timezone.now()
    running = {"status": "running", "worker": worker, "started_at__lte": started_before or now}
    return {"experiments": [experiment.pk for experiment in Experiment.objects.filter(**running)
                            if _requeue_experiment(experiment, now, "died", "")],
            "reproductions": [run.pk for run in ReproductionRun.objects.filter(**running)
                              if _requeue_reproduction(run, now, "died", "")]}


def _last_heartbeat(row) -> str:
    return f" (last heartbeat {timezone.localtime(row.heartbeat_at or row.started_at):%H:%M:%S})"


def _requeue_experiment(experiment: Experiment, now, what_happened: str, detail: str) -> bool:
    """Queue a lost running experiment again to resume after its last finished round (cancel it instead
    when its owner asked to stop it); True when it was queued again."""
    round_index = experiment.current_round or 0
    kept = f"rounds 0-{round_index - 1} kept" if round_index > 0 else "nothing finished yet"
    lost_text = f"worker {experiment.worker or '?'} {what_happened} during round {round_index}{detail}"
    if experiment.cancel_requested:  # the owner asked to stop it: do so instead of resuming
        update = {"status": Experiment.Status.CANCELLED, "finished_at": now,
                  "message": f"cancelled; {lost_text} ({kept})"}
    else:
        update = {"status": Experiment.Status.QUEUED,
                  "message": (f"{lost_text}; re-queued at {timezone.localtime(now).strftime('%H:%M:%S')} to "
                              f"resume from round {round_index} ({kept})")}
    return _settle_lost(experiment, update, queues.enqueue_experiment)


def _requeue_reproduction(run: ReproductionRun, now, what_happened: str, detail: str) -> bool:
    """Queue a lost running reproduction check again (its finished steps are reused), or cancel it
    when that was asked for; True when it was queued again."""
    lost_text = (f"worker {run.worker or '?'} {what_happened} after {run.progress_done} of "
                 f"{run.progress_total or '?'} steps{detail}")
    if run.cancel_requested:
        update = {"status": ReproductionRun.Status.CANCELLED, "finished_at": now, "message": f"cancelled; {lost_text}"}
    else:
        update = {"status": ReproductionRun.Status.QUEUED,
                  "message": (f"{lost_text}; re-queued at {timezone.localtime(now).strftime('%H:%M:%S')}, "
                              "finished steps are reused")}
    return _settle_lost(run, update, queues.enqueue_reproduction)


def _settle_lost(row, update: dict, send) -> bool:
    """Apply `update` to a lost running row, only if nobody else re-queued or revived it meanwhile,
    and send its task when the update queues it again. True when it was queued again."""
    claimed = type(row).objects.filter(pk=row.pk, status="running", heartbeat_at=row.heartbeat_at).update(**update)
    if not claimed:
        return False
    log.warning("%s %s: %s", type(row).__name__, row.pk, update["message"])
    if update["status"] != "queued":
        return False
    send(row.pk)
    return True


BROKER_MARKER_KEY = "lotteryweb:broker-marker"


class BrokerRestartWatch:
    """Notices that Redis lost its data and sends the tasks of queued experiments, analyses and
    reproduction checks again.

    The sign is a marker key that this watch sets: gone means Redis restarted without persistence,
    was flushed or is new, and took its queue with it. That also holds when no worker was up while
    it restarted (a reboot), and a Redis that keeps its data on disk keeps the marker with its queue
    and is left alone. A duplicate task is harmless: a task only runs a row it moves from queued to
    running."""

    def __init__(self, url: str | None = None):
        self.url = url or settings.REDIS_URL
        self._client = None

    def check(self) -> dict[str, list[int]]:
        """{"experiments": [...], "analyses": [...], "reproductions": [...]} whose tasks were sent again
        (empty: Redis kept its data)."""
        if self._client is None:
            self._client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        if not self._client.set(BROKER_MARKER_KEY, timezone.now().isoformat(), nx=True):
            return {}  # the marker is still there, so is the queue
        try:
            return resend_queued_tasks()
        except Exception:
            with contextlib.suppress(Exception):  # Redis went away again: its marker went with it
                self._client.delete(BROKER_MARKER_KEY)  # otherwise: try again next time
            raise


def resend_queued_tasks() -> dict[str, list[int]]:
    experiments = list(Experiment.objects.filter(status=Experiment.Status.QUEUED).order_by("created_at", "id")
                       .values_list("pk", flat=True))
    for experiment_id in experiments:
        queues.enqueue_experiment(experiment_id)
    analyses = list(AnalysisRun.objects.filter(status=AnalysisRun.Status.QUEUED).order_by("created_at", "id")
                    .values_list("pk", flat=True))
    for analysis_run_id in analyses:
        queues.enqueue_analysis(analysis_run_id)
    reproductions = list(ReproductionRun.objects.filter(status=ReproductionRun.Status.QUEUED)
                         .order_by("created_at", "id").values_list("pk", flat=True))
    for reproduction_run_id in reproductions:
        queues.enqueue_reproduction(reproduction_run_id)
    if experiments or analyses or reproductions:
        log.warning("Redis has lost its queue (restarted without persistence, or new): sent the tasks of %d queued "
                    "experiments, %d queued analyses and %d queued reproduction checks again",
                    len(experiments), len(analyses), len(reproductions))
    return {"experiments": experiments, "analyses": analyses, "reproductions": reproductions}


def start_watchdog() -> threading.Thread:
    """A worker's daemon thread that, every LOTTERYWEB_RECOVERY_INTERVAL seconds, re-queues lost runs
    (experiments and reproduction checks) and re-sends the queued ones' tasks when Redis has lost its queue."""
    broker = BrokerRestartWatch()

    def watch() -> None:
        while True:
            try:
                broker.check()
            except Exception:  # Redis is away right now: look again next time
                log.info("could not ask Redis whether it lost its queue", exc_info=True)
            try:
                requeue_lost_runs()
                requeue_lost_reproductions()
            except Exception:  # the database or the broker is away: look again next time
                log.exception("looking for lost runs failed")
            finally:
                connection.close()
            threading.Event().wait(settings.LOTTERYWEB_RECOVERY_INTERVAL)

    thread = threading.Thread(target=watch, name="lost-run-watchdog", daemon=True)
    thread.start()
    return thread
