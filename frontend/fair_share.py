"""Fair share between owners: which queued experiment of a queue runs next, and the claim that starts it.

Celery delivers one message per queued experiment, in the order they were sent, so a 200-point sweep
queued first would make everyone else wait behind it. Here a delivered message is a *slot* on its
queue: the worker runs the queued experiment of that queue that comes first in fair-share order,
which need not be the one the message names. Every queued experiment still has a message, so every
one runs; a cancelled or already claimed one only means that a message runs another one, or nothing.

Fair-share order is round-robin between owners: an experiment's turn is the number of its owner's
experiments already running on the queue plus its place among its owner's queued ones there; ties go
to the older one. Imported experiments (no owner) count as one owner.
"""
from __future__ import annotations

import logging
from collections import Counter

from django.utils import timezone

from frontend.models import Experiment
from frontend.queues import queue_for_spec

log = logging.getLogger(__name__)


def round_robin(waiting, running_per_owner: Counter) -> list[int]:
    """The ids of `waiting` ((id, owner, created_at) rows of one queue) in fair-share order, given how
    many experiments each owner already runs on that queue."""
    turns_taken: Counter = Counter()
    keyed = []
    for row_id, owner, created_at in sorted(waiting, key=lambda row: (row[2], row[0])):
        keyed.append((running_per_owner[owner] + turns_taken[owner], created_at, row_id))
        turns_taken[owner] += 1
    return [row_id for _, _, row_id in sorted(keyed)]


def _queue_of_device(device) -> str:
    return queue_for_spec({} if device is None else {"device": device})


def fair_share_orders() -> dict[str, list[int]]:
    """{queue: ids of its queued experiments in the order workers will take them} (cancel requested: left out)."""
    waiting: dict[str, list] = {}
    queued = Experiment.objects.filter(status=Experiment.Status.QUEUED, cancel_requested=False)
    for row_id, owner, created_at, device in queued.values_list("pk", "owner_id", "created_at", "spec__device"):
        waiting.setdefault(_queue_of_device(device), []).append((row_id, owner, created_at))
    running: dict[str, Counter] = {}
    for owner, device in Experiment.objects.filter(status=Experiment.Status.RUNNING).values_list("owner_id",
                                                                                                 "spec__device"):
        running.setdefault(_queue_of_device(device), Counter())[owner] += 1
    return {queue: round_robin(rows, running.get(queue, Counter())) for queue, rows in waiting.items()}


def queue_positions(experiments) -> dict[int, int]:
    """{experiment id: 1-based place among the queued experiments of its queue}: the order workers take them in."""
    places = {row_id: place for order in fair_share_orders().values() for place, row_id in enumerate(order, 1)}
    return {experiment.pk: places[experiment.pk] for experiment in experiments if experiment.pk in places}


def claim_next_experiment(slot_experiment_id: int, worker: str) -> tuple[Experiment | None, str]:
    """Take the experiment that a delivered message for `slot_experiment_id` runs: the first queued one of
    that experiment's queue in fair-share order, moved to running for `worker` (atomically: a row another
    worker took meanwhile is passed over). Returns (the claimed row, "") or (None, what the task returns):
    the named experiment is gone, cancelled before it started (marked here), or already ran or is running."""
    named = Experiment.objects.filter(pk=slot_experiment_id).first()
    if named is None:
        log.warning("experiment %s no longer exists; nothing to run", slot_experiment_id)
        return None, "missing"
    outcome = named.status if named.status != Experiment.Status.QUEUED else "duplicate"
    if named.status == Experiment.Status.QUEUED and named.cancel_requested:
        Experiment.objects.filter(pk=named.pk, status=Experiment.Status.QUEUED).update(
            status=Experiment.Status.CANCELLED, message="cancelled before it started", finished_at=timezone.now())
        outcome = Experiment.Status.CANCELLED
    for candidate_id in fair_share_orders().get(queue_for_spec(named.spec), []):
        claimed = _claim(candidate_id, worker)
        if claimed is not None:
            return claimed, ""
    return None, outcome


def _claim(experiment_id: int, worker: str) -> Experiment | None:
    """Move a queued experiment to running on `worker`; None if it is no longer queued or its cancel was asked."""
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is None:
        return None
    now = timezone.now()
    message = experiment.message
    if experiment.worker:  # it ran before (re-queued after its worker was lost, or after it failed): resuming
        message = f"{message}; " if message else ""
        message += f"resumed by {worker or 'a worker'} at {timezone.localtime(now):%H:%M:%S}"
    update = {"status": Experiment.Status.RUNNING, "started_at": now, "heartbeat_at": now, "worker": worker,
              "message": message}
    if not Experiment.objects.filter(pk=experiment_id, status=Experiment.Status.QUEUED,
                                     cancel_requested=False).update(**update):
        return None
    for field, value in update.items():
        setattr(experiment, field, value)
    return experiment
