"""One experiment spread over many workers: its pieces (trainer.imp.pieces) as ExperimentPiece rows and
Celery tasks.

The experiment's own task (frontend.tasks.run_experiment_task) is the *owner*. For each phase (the
replicates' chains, then the controls) it stores the engine's plan as rows, once: a re-queued owner keeps
the stored plan. It sends one task per queued piece to the experiment's queue, as a Celery group
(queues.enqueue_pieces), and then claims and trains pieces itself, one at a time. A piece task on another
worker claims its piece, or else another queued piece of the phase, and trains it; it returns at once when
none is left or the experiment already trains LOTTERYWEB_MAX_WORKERS_PER_EXPERIMENT pieces. So a lone
worker trains every piece itself, and every idle worker of the queue joins in. With nothing left to claim
the owner waits for the pieces training elsewhere, and queues again any whose heartbeat went stale (its
worker died): that piece resumes after its last finished round, as an experiment does.

A claim is one transaction that locks the experiment row, as a progress flush does: of two workers that
claim one piece one wins, and the cap holds. The cap is also the plan's `max_pieces`, so the results equal
a one-worker run with the same cap: the same networks train in the same stacks. Cancelling the experiment
stops every piece; so does the experiment failing.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from frontend import progress, queues, recovery
from frontend.models import Experiment, ExperimentPiece
from trainer.imp import pieces
from trainer.imp.pieces import Piece
from trainer.imp.run import Run, open_run
from trainer.spec import ExperimentSpec

log = logging.getLogger(__name__)

Status = ExperimentPiece.Status
POLL_SECONDS = 1.0  # how often an owner with nothing to claim looks at its pieces


class PieceFailed(Exception):
    """A piece of the experiment failed (on whichever worker): the experiment fails with its message."""


def max_workers() -> int:
    return max(1, int(settings.LOTTERYWEB_MAX_WORKERS_PER_EXPERIMENT))


def _clock() -> str:
    return timezone.localtime(timezone.now()).strftime("%H:%M:%S")


# ---- the plan and claims -------------------------------------------------------------------------

def store_plan(experiment_id: int, planned: list[Piece]) -> list[ExperimentPiece]:
    """The rows of a phase's pieces: created from `planned` the first time; afterwards the stored plan
    stands (the run directory holds its stacks' work), and its failed or cancelled pieces are queued again."""
    phase = planned[0].phase
    with progress.experiment_writes, transaction.atomic():
        rows = ExperimentPiece.objects.filter(experiment_id=experiment_id, phase=phase)
        if not rows.exists():
            ExperimentPiece.objects.bulk_create(
                [ExperimentPiece(experiment_id=experiment_id, phase=phase, index=piece.index, networks=piece.to_json())
                 for piece in planned])
        rows.filter(status__in=(Status.FAILED, Status.CANCELLED)).update(
            status=Status.QUEUED, worker="", heartbeat_at=None, message=f"queued again at {_clock()}")
    return list(rows.order_by("index"))


def claim(experiment_id: int, phase: str, worker: str, prefer: int | None = None,
          from_end: bool = False) -> ExperimentPiece | None:
    """Take a queued piece of the phase for `worker`: `prefer` if it is still queued, else the first
    (`from_end`: the last) one. None when none is queued, the experiment is not running, or it already
    trains as many pieces as the cap allows."""
    with progress.experiment_writes, transaction.atomic():
        # the experiment row's lock serialises the claims of one experiment (SQLite: the write lock)
        experiment = Experiment.objects.select_for_update().filter(
            pk=experiment_id, status=Experiment.Status.RUNNING, cancel_requested=False).first()
        if experiment is None:
            return None
        rows = ExperimentPiece.objects.filter(experiment_id=experiment_id)
        if rows.filter(status=Status.RUNNING).count() >= max_workers():
            return None
        queued = rows.filter(phase=phase, status=Status.QUEUED).order_by("-index" if from_end else "index")
        row = (queued.filter(pk=prefer).first() if prefer is not None else None) or queued.first()
        if row is None:
            return None
        now = timezone.now()
        if not rows.filter(pk=row.pk, status=Status.QUEUED).update(
                status=Status.RUNNING, worker=worker, started_at=now, heartbeat_at=now, finished_at=None):
            return None
    row.refresh_from_db()
    return row


def train_claimed(row: ExperimentPiece, worker: str, open_piece_run: Callable[[], Run]) -> str:
    """Train a piece this worker claimed, beating its heartbeat, and record the outcome on its row:
    the engine's status ("finished", "diverged", "cancelled"), or "failed" (logged, the message on the row)."""
    piece = Piece.from_json(row.phase, row.index, row.networks)
    try:
        with recovery.heartbeat(row.pk, ExperimentPiece):
            status = pieces.run_piece(open_piece_run(), piece)
    except Exception as error:
        log.exception("piece %s of experiment %s failed", row.pk, row.experiment_id)
        _end(row, worker, Status.FAILED, f"{type(error).__name__}: {error}")
        return Status.FAILED
    if status == "cancelled":
        _end(row, worker, Status.CANCELLED, "stopped; its finished rounds are kept")
    else:
        _end(row, worker, Status.FINISHED, "every chain of this piece diverged" if status == "diverged" else None)
    return status


def _end(row: ExperimentPiece, worker: str, status: str, message: str | None) -> None:
    """Record a piece's outcome (`message` None: keep its message, e.g. that it was queued again after a
    lost worker), unless it was taken from this worker meanwhile (its heartbeat went stale)."""
    update = {"status": status, "finished_at": timezone.now()} | ({} if message is None else {"message": message})
    with progress.experiment_writes:
        ExperimentPiece.objects.filter(pk=row.pk, worker=worker, status=Status.RUNNING).update(**update)


# ---- lost pieces ---------------------------------------------------------------------------------

def requeue_stale_pieces(experiment_id: int) -> list[int]:
    """Queue again the experiment's running pieces whose heartbeat is older than LOTTERYWEB_HEARTBEAT_TIMEOUT
    (their worker died or lost the database), and send their tasks: each resumes after its last finished round."""
    stale_before = timezone.now() - timedelta(seconds=settings.LOTTERYWEB_HEARTBEAT_TIMEOUT)
    requeued = []
    for row in ExperimentPiece.objects.filter(experiment_id=experiment_id, status=Status.RUNNING,
                                              heartbeat_at__lt=stale_before):
        last = timezone.localtime(row.heartbeat_at).strftime("%H:%M:%S")
        message = (f"worker {row.worker or '?'} stopped answering (last heartbeat {last}); "
                   f"queued again at {_clock()}, resumes after its last finished round")
        # only if nobody revived it meanwhile: its heartbeat is still the stale one
        with progress.experiment_writes:
            requeued_now = ExperimentPiece.objects.filter(
                pk=row.pk, status=Status.RUNNING, heartbeat_at=row.heartbeat_at).update(status=Status.QUEUED,
                                                                                        message=message)
        if requeued_now:
            log.warning("piece %s of experiment %s: %s", row.pk, experiment_id, message)
            requeued.append(row.pk)
    _send(requeued)
    return requeued


def release_pieces_of_worker(worker: str, started_before=None) -> list[int]:
    """Queue again at once every running piece of `worker` (known to be dead: its supervisor saw it exit),
    and send their tasks. `started_before` (when it died) leaves alone what a new worker of the same name
    started since."""
    rows = ExperimentPiece.objects.filter(worker=worker, status=Status.RUNNING,
                                          started_at__lte=started_before or timezone.now())
    released = list(rows.values_list("pk", flat=True))
    ExperimentPiece.objects.filter(pk__in=released, status=Status.RUNNING).update(
        status=Status.QUEUED, message=f"worker {worker} was lost; queued again at {_clock()}, "
                                      "resumes after its last finished round")
    _send(released)
    return released


def _send(piece_ids: list[int]) -> None:
    """Send the pieces' tasks; with the broker away the owner still trains them."""
    try:
        queues.enqueue_pieces(piece_ids)
    except Exception:
        log.warning("could not send the tasks of pieces %s; their experiment's owner trains them", piece_ids,
                    exc_info=True)


# ---- the owner and the helpers -------------------------------------------------------------------

def phase_trainer(experiment_id: int, worker: str, poll_seconds: float = POLL_SECONDS
                  ) -> Callable[[Run, list[Piece]], str]:
    """The owner's `train_phase` for trainer.imp.run_experiment: plan the phase's rows, send their tasks,
    train what is left to claim, wait for the rest. "finished", or "cancelled" when the experiment was;
    raises PieceFailed when a piece failed."""

    def train_phase(run: Run, planned: list[Piece]) -> str:
        if not planned:
            return "finished"
        phase = planned[0].phase
        rows = store_plan(experiment_id, planned)
        _send([row.pk for row in rows if row.status == Status.QUEUED])
        phase_rows = ExperimentPiece.objects.filter(experiment_id=experiment_id, phase=phase)
        while True:
            stopping = run.stop_requested()
            if not stopping:
                # from the end: the piece tasks take the queue's tasks from its start
                row = claim(experiment_id, phase, worker, from_end=True)
                if row is not None and train_claimed(row, worker, lambda: run) != Status.FAILED:
                    continue
            requeue_stale_pieces(experiment_id)
            failed = phase_rows.filter(status=Status.FAILED).first()
            if failed is not None:
                with progress.experiment_writes:
                    phase_rows.filter(status=Status.QUEUED).update(
                        status=Status.CANCELLED, finished_at=timezone.now(),
                        message=f"not started: piece {failed.index} failed")
                raise PieceFailed(f"piece {failed.index} of the {phase} (on {failed.worker or '?'}) failed: "
                                  f"{failed.message}")
            running = phase_rows.filter(status=Status.RUNNING).exists()
            with progress.experiment_writes:
                if stopping and not running:
                    phase_rows.filter(status=Status.QUEUED).update(
                        status=Status.CANCELLED, finished_at=timezone.now(), message="cancelled before it started")
                    return "cancelled"
                if not stopping:  # a piece stopped by an earlier cancel or failure: its turn again
                    phase_rows.filter(status=Status.CANCELLED).update(status=Status.QUEUED, worker="")
            if not running and not phase_rows.filter(status=Status.QUEUED).exists():
                return "finished"
            time.sleep(poll_seconds)

    return train_phase


def help_with_piece(piece_id: int, worker: str) -> str:
    """A piece task's work: claim piece `piece_id` (or another queued one of its phase) and train it with
    its own progress recorder; what it did, in a word."""
    row = ExperimentPiece.objects.select_related("experiment").filter(pk=piece_id).first()
    if row is None:
        return "missing"
    claimed = claim(row.experiment_id, row.phase, worker, prefer=piece_id)
    if claimed is None:
        return "nothing to claim"  # taken, done, the cap reached, or the experiment is no longer running
    experiment = row.experiment
    spec = ExperimentSpec.from_dict(experiment.spec)
    with progress.recording(experiment.pk) as recorder:
        return train_claimed(claimed, worker, lambda: open_run(
            spec, Path(settings.LOTTERYWEB_RUNS_DIR), callback=recorder.handle, data_dir=settings.LOTTERYWEB_DATA_DIR,
            stop_requested=progress.experiment_stop_checker(experiment.pk)))
