"""What views do besides rendering: create and queue experiments, cancel them, read their masks."""
from __future__ import annotations

import logging

from frontend.models import Experiment
from trainer import datasets
from trainer.rundir import RunDir, RunDirError
from trainer.spec import ExperimentSpec

log = logging.getLogger(__name__)


class NotAvailable(Exception):
    """Asked for something that does not exist (yet); the message says what."""


def create_experiment(spec: ExperimentSpec, preset: str = "") -> Experiment:
    """Store the experiment and queue its Celery task."""
    from frontend.tasks import run_experiment_task  # the Celery app is only needed here

    experiment = Experiment.objects.create(spec=spec.to_dict(), preset=preset, model_name=spec.model,
                                           dataset_name=spec.dataset)
    try:
        run_experiment_task.delay(experiment.pk)
    except Exception as error:  # broker down: say so on the experiment's page instead of a 500
        log.exception("could not queue experiment %s", experiment.pk)
        Experiment.objects.filter(pk=experiment.pk).update(
            status=Experiment.Status.FAILED, message=f"could not queue the run (is Redis running?): {error}")
        experiment.refresh_from_db()
    return experiment


def request_cancel(experiment: Experiment) -> None:
    Experiment.objects.filter(pk=experiment.pk).update(cancel_requested=True)


def round_mask(experiment: Experiment, round_index: int, network: str):
    """The bool masks (name -> tensor) of one finished round, and the dataset's input shape."""
    if not experiment.run_dir:
        raise NotAvailable("this experiment has not started yet")
    if not experiment.round_results.filter(network=network, round_index=round_index).exists():
        raise NotAvailable(f"round {round_index} of {network} has not finished")
    try:
        run_dir = RunDir.open(experiment.run_dir)
        masks = run_dir.mask(round_index, network)
    except (RunDirError, OSError) as error:
        raise NotAvailable(f"the mask of round {round_index} is not readable: {error}") from None
    entry = datasets.DATASETS.get(experiment.dataset_name)
    return masks, (tuple(entry.info.input_shape) if entry else None)
