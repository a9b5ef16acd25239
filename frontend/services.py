"""What views do besides rendering: create and queue experiments, sweeps, analyses and reproduction
checks, cancel them, read masks."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from frontend import access, catalog, labels, queues, records
from frontend.labels import default_name, set_tags
from frontend.models import AnalysisRun, Experiment, ReproductionRun, Sweep, SweepPoint
from trainer import datasets, downloads, replicate_stats
from trainer.analyses import ANALYSES, check_runs_with_experiment
from trainer.rundir import RunDir, RunDirError
from trainer.spec import ExperimentSpec, SpecError
from trainer.sweeps import SweepDefinition, config_label, expand

log = logging.getLogger(__name__)


class NotAvailable(Exception):
    """Asked for something that does not exist (yet); the message says what."""


def create_experiment(spec: ExperimentSpec, preset: str = "", analyses: list[str] = (), *, owner=None,
                      visibility: str = Experiment.Visibility.PRIVATE, name: str = "", description: str = "",
                      tags: list[str] = ()) -> Experiment:
    """Store the experiment and queue its Celery task; `analyses` are queued when its run finishes.
    `name`, `description`, `tags` are already cleaned (frontend.labels); no name: one is generated."""
    experiment = Experiment.objects.create(spec=spec.to_dict(), preset=preset, model_name=spec.model,
                                           dataset_name=spec.dataset, analyses=list(analyses), owner=owner,
                                           visibility=visibility, name=name, description=description)
    if tags:
        set_tags(experiment, list(tags))
    if not queues.enqueue_or_fail(Experiment, experiment.pk):
        experiment.refresh_from_db()
    return experiment


def set_labels(experiment: Experiment, name: str, description: str, tags: list[str]) -> None:
    """The owner's edit of the name (empty: generated again), description and tags, already cleaned."""
    experiment.name = name or default_name(experiment.spec)
    experiment.description = description
    experiment.save(update_fields=["name", "description"])
    set_tags(experiment, tags)


def requeue(experiment: Experiment) -> None:
    """Queue a failed or cancelled experiment again; the trainer resumes its run directory."""
    before = experiment.status
    Experiment.objects.filter(pk=experiment.pk).update(
        status=Experiment.Status.QUEUED, cancel_requested=False, finished_at=None,
        message=f"re-queued after it was {before}; finished rounds are kept")
    queues.enqueue_or_fail(Experiment, experiment.pk)


def request_cancel(experiment: Experiment) -> None:
    Experiment.objects.filter(pk=experiment.pk).update(cancel_requested=True)


def sweep_points(definition: SweepDefinition, analyses: list[str] = ()) -> list:
    """The sweep's points (trainer.sweeps.SweepPoint), each runnable on this server, or a SpecError that
    names the configuration and field: too many (settings.LOTTERYWEB_MAX_SWEEP_POINTS), a bad value, a
    dataset not installed, two points alike, points of different tasks (one sweep, one metric)."""
    def runnable_here(spec: ExperimentSpec) -> None:
        catalog.check_runnable_here(spec)
        check_runs_with_experiment(list(analyses), spec)
    points = expand(definition, settings.LOTTERYWEB_MAX_SWEEP_POINTS, check=runnable_here)
    task_names = {catalog.task_of_dataset_name(point.spec.dataset) for point in points}
    if len(task_names) > 1:
        raise SpecError("grid.dataset", "the points mix tasks (" + ", ".join(sorted(task_names)) + "): a sweep "
                                        "compares one metric, so keep its datasets to one task")
    return points


def _spec_key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


def reusable_experiments(owner, specs: list[dict]) -> dict[str, Experiment]:
    """{spec key: a finished experiment `owner` may see with exactly that spec}, their own first."""
    wanted = {_spec_key(spec) for spec in specs}
    candidates = Experiment.objects.filter(
        access.visible_to(owner), status=Experiment.Status.FINISHED,
        model_name__in={spec["model"] for spec in specs}, dataset_name__in={spec["dataset"] for spec in specs},
    ).order_by("created_at", "id")
    found: dict[str, Experiment] = {}
    for experiment in candidates:
        key = _spec_key(experiment.spec)
        if key in wanted and (key not in found or (experiment.owner_id == owner.pk != found[key].owner_id)):
            found[key] = experiment
    return found


def create_sweep(owner, definition: SweepDefinition, name: str, *, description: str = "", tags: list[str] = (),
                 visibility: str = Experiment.Visibility.PRIVATE, preset: str = "",
                 analyses: list[str] = ()) -> Sweep:
    """Store the sweep and one experiment per point, queued; a point whose spec a finished experiment the
    owner may see already has is that experiment (reused: nothing trains). Raises SpecError (sweep_points)."""
    points = sweep_points(definition, analyses)
    reusable = reusable_experiments(owner, [point.spec.to_dict() for point in points])
    created: list[int] = []
    with transaction.atomic():
        sweep = Sweep.objects.create(owner=owner, visibility=visibility, name=name, description=description,
                                     base_spec=definition.base_spec, grid=definition.grid, points=definition.points,
                                     seeds=definition.seeds, preset=preset, analyses=list(analyses))
        labels.set_tags(sweep, list(tags))
        for point in points:
            spec = point.spec.to_dict()
            experiment = reusable.get(_spec_key(spec))
            if experiment is None:
                seed = f", seed {point.seed_index}" if definition.seeds > 1 else ""
                experiment = Experiment.objects.create(
                    name=f"{name}: {config_label(point.config)}{seed}"[:200], sweep=sweep, owner=owner,
                    visibility=visibility, spec=spec, preset=preset, model_name=point.spec.model,
                    dataset_name=point.spec.dataset, analyses=list(analyses))
                created.append(experiment.pk)
            SweepPoint.objects.create(sweep=sweep, index=point.index, config=point.config,
                                      seed_index=point.seed_index, experiment=experiment,
                                      reused=experiment.pk not in created)
    for experiment_id in created:  # after the commit: a worker must find the rows
        queues.enqueue_or_fail(Experiment, experiment_id)
    return sweep


def cancel_sweep(sweep: Sweep) -> int:
    """Cancel every point experiment the sweep made that is queued or running (reused ones are left alone);
    returns how many were asked to stop."""
    Sweep.objects.filter(pk=sweep.pk).update(cancel_requested=True)
    active = Experiment.objects.filter(sweep_points__sweep=sweep, sweep_points__reused=False).exclude(
        status__in=Experiment.DONE_STATUSES).distinct()
    count = 0
    for experiment in active:
        request_cancel(experiment)
        count += 1
    return count


def round_mask(experiment: Experiment, round_index: int, network: str):
    """The bool masks (name -> tensor) of one finished round, and the dataset's input shape."""
    if not experiment.run_dir:
        raise NotAvailable("this experiment has not started yet")
    if not experiment.round_results.filter(network=network, replicate=0, round_index=round_index).exists():
        raise NotAvailable(f"round {round_index} of {network} has not finished")
    try:
        run_dir = RunDir.open(experiment.run_dir)
        masks = run_dir.mask(round_index, network)
    except (RunDirError, OSError) as error:
        raise NotAvailable(f"the mask of round {round_index} is not readable: {error}") from None
    entry = datasets.DATASETS.get(experiment.dataset_name)
    return masks, (tuple(entry.info.input_shape) if entry else None)


def request_analysis(experiment: Experiment, name: str, params: dict) -> AnalysisRun:
    """The analysis run for these (validated) parameters, queued unless the same one is queued, running or done.

    The engine finds finished work by a hash of the parameters, so asking twice gives the same result;
    a failed or cancelled request is queued again (it resumes from the units already on disk).
    """
    existing = next((row for row in AnalysisRun.objects.filter(experiment=experiment, name=name)
                     .exclude(status__in=(AnalysisRun.Status.FAILED, AnalysisRun.Status.CANCELLED))
                     if row.params == params), None)  # compared as dicts: JSON key order must not matter
    if existing is not None:
        return existing
    analysis_run = AnalysisRun.objects.create(experiment=experiment, name=name, params=params)
    queues.enqueue_or_fail(AnalysisRun, analysis_run.pk)
    analysis_run.refresh_from_db()
    return analysis_run


def queue_default_analyses(experiment: Experiment) -> list[AnalysisRun]:
    """The analyses chosen on the new-experiment form, with default parameters, after the IMP run finished."""
    queued = []
    for name in experiment.analyses or []:
        analysis = ANALYSES.get(name)
        if analysis is None:
            continue
        try:
            params = analysis.validate({})
        except SpecError:
            log.exception("default parameters of %s do not validate", name)
            continue
        queued.append(request_analysis(experiment, name, params))
    return queued


def request_analysis_cancel(analysis_run: AnalysisRun) -> None:
    AnalysisRun.objects.filter(pk=analysis_run.pk).update(cancel_requested=True)


def request_reproduction(check_name: str, budget: str, user) -> ReproductionRun:
    """Queue one reproduction check at `budget` (both already validated), unless the same check at the
    same budget is queued or running already: then that run is returned."""
    existing = ReproductionRun.objects.filter(check_name=check_name, budget=budget).exclude(
        status__in=ReproductionRun.DONE_STATUSES).first()
    if existing is not None:
        return existing
    run = ReproductionRun.objects.create(check_name=check_name, budget=budget, requested_by=user)
    queues.enqueue_or_fail(ReproductionRun, run.pk)
    run.refresh_from_db()
    return run


class NotQueued(Exception):
    """Work that could not be queued; the message says why, for the page."""


def request_dataset_download(name: str) -> None:
    """Queue the download of dataset `name` (one of trainer.dataset_sources); its state goes to the data
    directory's status file, which the datasets panel shows (a broker that is away: a failed state saying so)."""
    directory = settings.LOTTERYWEB_DATA_DIR
    try:
        downloads.write_status(name, directory, downloads.QUEUED, "waiting for a worker")
    except OSError as error:
        raise NotQueued(f"the data directory {downloads.status_path(name, directory).parent.parent} is not "
                        f"writable by the web app ({error.strerror or error})") from error
    try:
        queues.enqueue_dataset_download(name)
    except Exception as error:
        log.exception("could not queue the download of %s", name)
        downloads.write_status(name, directory, downloads.FAILED,
                               f"could not queue the download (is Redis running?): {error}")


def request_reproduction_cancel(run: ReproductionRun) -> None:
    """A queued check is cancelled at once (its task finds it cancelled); a running one stops at its next step."""
    rows = ReproductionRun.objects.filter(pk=run.pk)
    if not rows.filter(status=ReproductionRun.Status.QUEUED).update(
            status=ReproductionRun.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now(),
            message="cancelled before it started"):
        rows.update(cancel_requested=True)


def import_run_directory(path) -> tuple[Experiment, bool, int]:
    """Show a run made with the CLI (`python -m trainer run ...`) in the web app: an Experiment
    from its results.json, with every round of every replicate and every finished analysis.

    Importing the same directory again refreshes that experiment instead of adding another.
    Returns (experiment, created, analyses imported). Raises NotAvailable with the reason.
    """
    try:
        run_dir = RunDir.open(Path(path).resolve())
    except RunDirError as error:
        raise NotAvailable(str(error)) from None
    if not run_dir.results_path.is_file():
        raise NotAvailable(f"{run_dir.path} has no results.json yet: let its run finish (or resume it) first")
    try:
        results = json.loads(run_dir.results_path.read_text())
        round_records = replicate_stats.all_records(results)
    except (ValueError, KeyError, TypeError) as error:
        raise NotAvailable(f"{run_dir.results_path} is not a trainer results file: {error}") from None
    with transaction.atomic():
        experiment, created = records.import_results(run_dir, results, round_records)
        imported = records.import_finished_analyses(experiment, run_dir)
    return experiment, created, imported
