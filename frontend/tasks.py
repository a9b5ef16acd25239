"""The Celery tasks: run an experiment (its owner, and its pieces on other workers: frontend.distributed), an
analysis or a reproduction check through the trainer, feeding its events to frontend.progress; and the threads
every worker starts (lost-run watchdog, queue announcer)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from frontend import distributed, fair_share, listeners, progress, records, recovery, services
from frontend.models import AnalysisRun, Experiment, ReproductionRun
from trainer import downloads, reproduce
from trainer.analyses import run_analysis
from trainer.datadir import DatasetError
from trainer.imp import run_experiment
from trainer.rundir import json_safe
from trainer.spec import ExperimentSpec, SpecError

log = logging.getLogger(__name__)


@worker_ready.connect
def start_worker_threads(sender=None, **_):
    """Every worker watches for lost runs and a broker that lost its queue, and announces its queues."""
    recovery.start_watchdog()
    if sender is not None:  # the worker's consumer: its name and the queues it consumes from
        listeners.start_announcer(sender.hostname, sender.app.amqp.queues.consume_from.keys())


@shared_task(name="frontend.run_experiment", bind=True)
def run_experiment_task(self, experiment_id: int) -> str:
    """A slot on the queue of `experiment_id`: runs that queue's next experiment in fair-share order
    (frontend.fair_share), which need not be the one the message names."""
    close_old_connections()
    worker = self.request.hostname or ""
    experiment, outcome = fair_share.claim_next_experiment(experiment_id, worker)
    if experiment is None:
        return outcome
    experiment_id = experiment.pk
    _use_torch_threads()
    runs_root = Path(settings.LOTTERYWEB_RUNS_DIR)
    runs_root.mkdir(parents=True, exist_ok=True)
    try:
        spec = ExperimentSpec.from_dict(experiment.spec)
        with recovery.heartbeat(experiment_id), progress.recording(experiment_id) as recorder:
            # this task owns the experiment: it trains its pieces, idle workers join in (frontend.distributed)
            results = run_experiment(spec, runs_root, callback=recorder.handle, data_dir=settings.LOTTERYWEB_DATA_DIR,
                                     stop_requested=progress.cancel_checker(experiment_id),
                                     max_pieces=distributed.max_workers(),
                                     train_phase=distributed.phase_trainer(experiment_id, worker))
    except Exception as error:  # the trainer already sent run_failed; make sure the row says so too
        log.exception("experiment %s failed", experiment_id)
        _finish(experiment_id, Experiment.Status.FAILED, f"{type(error).__name__}: {error}", only_if_running=True)
        return Experiment.Status.FAILED
    with transaction.atomic():
        records.store_run_results(experiment_id, results, runs_root / results["run_name"])
    if results["status"] == Experiment.Status.FINISHED:
        services.queue_default_analyses(Experiment.objects.get(pk=experiment_id))
    return results["status"]


@shared_task(name="frontend.run_experiment_piece", bind=True)
def run_experiment_piece_task(self, piece_id: int) -> str:
    """Train one piece of a running experiment on this worker, if it (or another of its phase) is still
    queued and the experiment's cap allows; otherwise return at once."""
    close_old_connections()
    _use_torch_threads()
    return distributed.help_with_piece(piece_id, self.request.hostname or "")


def _use_torch_threads() -> None:
    if settings.LOTTERYWEB_TORCH_THREADS:
        # Small models on a shared machine train faster on fewer threads than torch picks.
        torch.set_num_threads(settings.LOTTERYWEB_TORCH_THREADS)


def _finish(experiment_id: int, status: str, message: str, only_if_running: bool = False) -> None:
    rows = Experiment.objects.filter(pk=experiment_id)
    if only_if_running:
        rows = rows.exclude(status__in=Experiment.DONE_STATUSES)
    rows.update(status=status, message=message, finished_at=timezone.now())


def _queued_row(rows, row_id: int):
    """(row, None) when the row of a delivered task is queued to run now; otherwise (None, what the
    task returns): it is gone, already ran or is running (a duplicate delivery), or it was cancelled
    before it started (which this marks)."""
    row = rows.filter(pk=row_id).first()
    label = f"{rows.model.__name__} {row_id}"
    if row is None:
        log.warning("%s no longer exists; nothing to run", label)
        return None, "missing"
    if row.status != "queued":
        return None, row.status  # a duplicate delivery
    if row.cancel_requested:
        rows.model.objects.filter(pk=row_id).update(status="cancelled", message="cancelled before it started",
                                                    finished_at=timezone.now())
        return None, "cancelled"
    return row, None


@shared_task(name="frontend.run_analysis")
def run_analysis_task(analysis_run_id: int) -> str:
    """Run one analysis on its experiment's run directory; the engine skips work already on disk."""
    close_old_connections()
    analysis_run, outcome = _queued_row(AnalysisRun.objects.select_related("experiment"), analysis_run_id)
    if analysis_run is None:
        return outcome
    rows = AnalysisRun.objects.filter(pk=analysis_run_id)
    run_dir = analysis_run.experiment.run_dir
    if not run_dir or not Path(run_dir).is_dir():
        rows.update(status=AnalysisRun.Status.FAILED, message="the experiment has no run directory",
                    finished_at=timezone.now())
        return AnalysisRun.Status.FAILED
    if not rows.filter(status=AnalysisRun.Status.QUEUED).update(status=AnalysisRun.Status.RUNNING,
                                                                started_at=timezone.now(), progress_text="starting"):
        return "duplicate"  # another worker took it between the read and here
    _use_torch_threads()
    recorder = progress.AnalysisProgressRecorder(analysis_run_id)
    try:
        result = run_analysis(analysis_run.name, run_dir, analysis_run.params, callback=recorder.handle,
                              data_dir=settings.LOTTERYWEB_DATA_DIR,
                              stop_requested=progress.analysis_cancel_checker(analysis_run_id))
    except Exception as error:
        log.exception("analysis run %s failed", analysis_run_id)
        message = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        rows.update(status=AnalysisRun.Status.FAILED, message=message, finished_at=timezone.now(),
                    progress_fraction=None)
        return AnalysisRun.Status.FAILED
    if result.get("status") == "cancelled":
        rows.update(status=AnalysisRun.Status.CANCELLED, message="cancelled; finished units are kept for a rerun",
                    finished_at=timezone.now(), progress_fraction=None)
        return AnalysisRun.Status.CANCELLED
    rows.update(status=AnalysisRun.Status.FINISHED, result=records.slim_result(result), finished_at=timezone.now(),
                progress_text="finished", progress_fraction=1.0)
    return AnalysisRun.Status.FINISHED


@shared_task(name="frontend.run_reproduction", bind=True)
def run_reproduction_task(self, reproduction_run_id: int) -> str:
    """Run one reproduction check (trainer.reproduce) in the app's runs directory; finished runs and
    analyses of the check found there are reused, so a re-queued check goes on where it stopped."""
    close_old_connections()
    run, outcome = _queued_row(ReproductionRun.objects.all(), reproduction_run_id)
    if run is None:
        return outcome
    rows = ReproductionRun.objects.filter(pk=reproduction_run_id)
    now = timezone.now()
    if not rows.filter(status=ReproductionRun.Status.QUEUED).update(
            status=ReproductionRun.Status.RUNNING, started_at=now, heartbeat_at=now, worker=self.request.hostname or "",
            progress_text="starting"):
        return "duplicate"  # another worker took it between the read and here
    _use_torch_threads()
    runs_root = Path(settings.LOTTERYWEB_RUNS_DIR)
    runs_root.mkdir(parents=True, exist_ok=True)
    recorder = progress.ReproductionProgressRecorder(reproduction_run_id)
    try:
        with recovery.heartbeat(reproduction_run_id, ReproductionRun):
            result = reproduce.run_check(run.check_name, runs_root, budget=run.budget,
                                         data_dir=settings.LOTTERYWEB_DATA_DIR, callback=recorder.handle,
                                         stop_requested=progress.reproduction_cancel_checker(reproduction_run_id))
    except Exception as error:
        log.exception("reproduction run %s failed", reproduction_run_id)
        message = str(error) if isinstance(error, SpecError) else f"{type(error).__name__}: {error}"
        rows.update(status=ReproductionRun.Status.FAILED, message=message, finished_at=timezone.now())
        return ReproductionRun.Status.FAILED
    recorder.write()  # the last step's progress, whatever the throttle held back
    status = {"cancelled": ReproductionRun.Status.CANCELLED, "failed": ReproductionRun.Status.FAILED}.get(
        result.get("status"), ReproductionRun.Status.FINISHED)
    update = {"status": status, "result": json_safe(result), "finished_at": timezone.now()}
    if status == ReproductionRun.Status.CANCELLED:
        update["message"] = "cancelled; finished steps are kept for a rerun"
    elif status == ReproductionRun.Status.FAILED:
        update["message"] = str(result.get("reason") or "the check failed")
    rows.update(**update)  # a finished check keeps its message (e.g. that it was re-queued after a lost worker)
    return status


@shared_task(name="frontend.download_dataset")
def download_dataset_task(dataset_name: str) -> str:
    """Fetch and verify one dataset into the app's data directory (the datasets panel's Download button);
    trainer.downloads writes its progress and outcome to the status file the panel reads."""
    try:
        downloads.download(dataset_name, settings.LOTTERYWEB_DATA_DIR, mirror=settings.LOTTERYWEB_DATASET_MIRROR)
    except DatasetError:
        log.warning("download of %s failed", dataset_name, exc_info=True)
        return downloads.FAILED
    except Exception as error:
        log.exception("download of %s failed", dataset_name)
        downloads.write_status(dataset_name, settings.LOTTERYWEB_DATA_DIR, downloads.FAILED,
                               f"{type(error).__name__}: {error}")
        return downloads.FAILED
    return downloads.FINISHED
