"""The one place that sends Celery work: experiments (and the pieces of one, frontend.distributed), analyses
and reproduction checks, which queue each goes to, and what happens when the broker is away.

A GPU host runs one worker per device, each serving one run at a time:

    CUDA_VISIBLE_DEVICES=0 celery -A lotteryweb worker -Q gpu --pool=solo -n gpu0@%h

Everything else (device "cpu", or "auto") goes to Celery's default queue, which the CPU worker
of run.sh serves. Analyses and pieces follow their experiment. Reproduction checks (trainer.reproduce) are
CPU-sized protocols and go to the default queue, as do dataset downloads (the datasets panel's
button). Celery calls `route_task` for every task it sends (settings.CELERY_TASK_ROUTES). Which
queued experiment a delivered message runs is decided when it arrives, round-robin between owners (frontend.fair_share).

The tasks are found by name in the Celery app's registry. frontend.tasks, which registers them, sits
above this module (its tasks queue follow-up work through here), so it is imported on first use, by its
dotted path (TASKS_MODULE, in `_task`): the project's one lazy import. A Celery worker has imported it
already (lotteryweb.celery autodiscovers it; it starts the worker's watchdog and queue announcer); in the
web process and the eager test suite the first send does.
"""
from __future__ import annotations

import logging
from importlib import import_module

from celery import group
from django.conf import settings

from frontend.models import AnalysisRun, Experiment, ExperimentPiece, ReproductionRun
from lotteryweb.celery import app

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "celery"
TASKS_MODULE = "frontend.tasks"
EXPERIMENT_TASK = "frontend.run_experiment"
PIECE_TASK = "frontend.run_experiment_piece"
ANALYSIS_TASK = "frontend.run_analysis"
REPRODUCTION_TASK = "frontend.run_reproduction"
DATASET_DOWNLOAD_TASK = "frontend.download_dataset"
# the task of each queued row, and the word the row's page uses when it could not be queued
_TASK_OF_ROW = {Experiment: (EXPERIMENT_TASK, "run"), AnalysisRun: (ANALYSIS_TASK, "analysis"),
                ReproductionRun: (REPRODUCTION_TASK, "check")}


def queue_for_spec(spec: dict) -> str:
    device = str((spec or {}).get("device", "auto"))
    return settings.LOTTERYWEB_GPU_QUEUE if device.startswith("cuda") else DEFAULT_QUEUE


def route_task(name, args, kwargs, options, task=None, **extra):
    if not args:
        return None
    if name == EXPERIMENT_TASK:
        spec = Experiment.objects.filter(pk=args[0]).values_list("spec", flat=True).first()
    elif name == ANALYSIS_TASK:
        spec = AnalysisRun.objects.filter(pk=args[0]).values_list("experiment__spec", flat=True).first()
    elif name == PIECE_TASK:
        spec = ExperimentPiece.objects.filter(pk=args[0]).values_list("experiment__spec", flat=True).first()
    elif name in (REPRODUCTION_TASK, DATASET_DOWNLOAD_TASK):
        return {"queue": DEFAULT_QUEUE}
    else:
        return None
    return {"queue": queue_for_spec(spec)}


def _task(task_name: str):
    import_module(TASKS_MODULE)  # the one lazy import (see above); after the first call a dict lookup
    return app.tasks[task_name]


def _send(task_name: str, row_id: int) -> None:
    _task(task_name).delay(row_id)


def enqueue_experiment(experiment_id: int) -> None:
    """Send a queued Experiment's task to the workers (raises if the broker is away)."""
    _send(EXPERIMENT_TASK, experiment_id)


def enqueue_pieces(piece_ids: list[int]) -> None:
    """Send one task per piece of a running experiment, as one Celery group, to its queue: every idle
    worker there takes one (raises if the broker is away). Not in eager mode, where a sent task would run
    at once on the sending thread: the experiment's owner trains its pieces itself."""
    if not piece_ids or settings.CELERY_TASK_ALWAYS_EAGER:
        return
    group(_task(PIECE_TASK).si(piece_id) for piece_id in piece_ids).apply_async()


def enqueue_analysis(analysis_run_id: int) -> None:
    """Send a queued AnalysisRun's task to the workers (raises if the broker is away)."""
    _send(ANALYSIS_TASK, analysis_run_id)


def enqueue_reproduction(reproduction_run_id: int) -> None:
    """Send a queued ReproductionRun's task to the workers (raises if the broker is away)."""
    _send(REPRODUCTION_TASK, reproduction_run_id)


def enqueue_dataset_download(dataset_name: str) -> None:
    """Send a dataset download (trainer.downloads) to the default queue's workers (raises if the broker is away)."""
    import_module(TASKS_MODULE)
    app.tasks[DATASET_DOWNLOAD_TASK].delay(dataset_name)


def enqueue_or_fail(model, row_id: int) -> bool:
    """Send a queued row's task (True); with the broker down, mark the row failed with the reason,
    shown on its page instead of a 500 (False)."""
    task_name, what = _TASK_OF_ROW[model]
    try:
        _send(task_name, row_id)
    except Exception as error:
        log.exception("could not queue %s %s", model.__name__, row_id)
        model.objects.filter(pk=row_id).update(status="failed",
                                               message=f"could not queue the {what} (is Redis running?): {error}")
        return False
    return True

