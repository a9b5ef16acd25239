"""The Celery task: run one experiment through the trainer, feeding its events to frontend.progress."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from celery import shared_task
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from frontend import progress
from frontend.models import Experiment
from trainer.imp import run_experiment
from trainer.spec import ExperimentSpec

log = logging.getLogger(__name__)


@shared_task(name="frontend.run_experiment")
def run_experiment_task(experiment_id: int) -> str:
    close_old_connections()
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is None:
        log.warning("experiment %s no longer exists; nothing to run", experiment_id)
        return "missing"
    if experiment.status != Experiment.Status.QUEUED:
        return experiment.status  # a duplicate delivery: the run already happened or is happening
    if experiment.cancel_requested:
        _finish(experiment_id, Experiment.Status.CANCELLED, "cancelled before it started")
        return Experiment.Status.CANCELLED
    Experiment.objects.filter(pk=experiment_id).update(status=Experiment.Status.RUNNING, started_at=timezone.now())
    if settings.LOTTERYWEB_TORCH_THREADS:
        # Small models on a shared machine train faster on fewer threads than torch picks.
        torch.set_num_threads(settings.LOTTERYWEB_TORCH_THREADS)
    runs_root = Path(settings.LOTTERYWEB_RUNS_DIR)
    runs_root.mkdir(parents=True, exist_ok=True)
    try:
        spec = ExperimentSpec.from_dict(experiment.spec)
        with progress.recording(experiment_id) as recorder:
            results = run_experiment(spec, runs_root, callback=recorder.handle, data_dir=settings.LOTTERYWEB_DATA_DIR,
                                     stop_requested=progress.cancel_checker(experiment_id))
    except Exception as error:  # the trainer already sent run_failed; make sure the row says so too
        log.exception("experiment %s failed", experiment_id)
        _finish(experiment_id, Experiment.Status.FAILED, f"{type(error).__name__}: {error}", only_if_running=True)
        return Experiment.Status.FAILED
    _reconcile(experiment_id, results, runs_root / results["run_name"])
    return results["status"]


def _finish(experiment_id: int, status: str, message: str, only_if_running: bool = False) -> None:
    rows = Experiment.objects.filter(pk=experiment_id)
    if only_if_running:
        rows = rows.exclude(status__in=Experiment.DONE_STATUSES)
    rows.update(status=status, message=message, finished_at=timezone.now())


def _reconcile(experiment_id: int, results: dict, run_path: Path) -> None:
    """results.json is the truth: rewrite every round and the run's location from it, whatever
    live updates were lost on the way (a failed flush, a restarted database)."""
    with transaction.atomic():
        for record in results["rounds"]:
            progress.store_record(experiment_id, record)
        for records in results["controls"].values():
            for record in records:
                progress.store_record(experiment_id, record)
        experiment = Experiment.objects.get(pk=experiment_id)
        experiment.run_name = results["run_name"]
        experiment.run_dir = str(run_path)
        experiment.results_path = str(run_path / "results.json")
        if not experiment.is_done:
            experiment.status = results["status"]
            experiment.finished_at = timezone.now()
        experiment.save()
