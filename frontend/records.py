"""Trainer results -> database rows: a round record (results.json's "rounds", a replicate's, a control's)
becomes a RoundResult and its Curve, a finished run's results.json fills in its Experiment, and an
analysis's result.json becomes an AnalysisRun's stored result. Storing a ticket round also stores the
experiment's best ticket on its row (trainer.verdict.best_ticket), which the list page shows and sorts by.

The live recorders (frontend.progress) write the same rows while a run goes on; these functions
rewrite them from the files on disk, which are the truth (frontend.tasks when a run ends,
`manage.py import_run` for a run made with the CLI).
"""
from __future__ import annotations

from pathlib import Path

from django.utils import timezone

from frontend.models import AnalysisRun, Curve, Experiment, RoundResult, task_of_dataset
from trainer import events as trainer_events, replicate_stats, tasks
from trainer.analyses import stored_results
from trainer.rundir import RunDir, json_safe
from trainer.tasks import ACCURACY, Metric
from trainer.verdict import best_ticket, mean_over_replicates


def eval_keys(metric: Metric = ACCURACY) -> list[str]:
    """The keys of a curve's eval points (trainer records): val_<metric>, test_<metric> and the losses."""
    return ["iteration", "val_loss", f"val_{metric.key}", "test_loss", f"test_{metric.key}"]


def empty_evals(metric: Metric = ACCURACY) -> dict:
    return {key: [] for key in eval_keys(metric)}


def empty_train_loss() -> dict:
    return {"iteration": [], "loss": []}


def round_result_fields(record: dict) -> dict:
    """A trainer round record -> RoundResult column values."""
    early_stop = record.get("early_stop") or {}
    final = record.get("final") or {}
    key = tasks.metric_of(final or early_stop).key
    return json_safe({
        "status": record.get("status", ""), "message": record.get("message") or "",
        "remaining_fraction": record["remaining_fraction"], "layers": record.get("layers", {}),
        "early_stop_iteration": early_stop.get("iteration"),
        "early_stop_val_metric": early_stop.get(f"val_{key}"),
        "early_stop_test_metric": early_stop.get(f"test_{key}"),
        "final_test_metric": final.get(f"test_{key}"), "final_val_metric": final.get(f"val_{key}"),
        "wall_seconds": record.get("wall_seconds"), "costs": record.get("costs") or {},
    })


def round_row(result: RoundResult) -> dict:
    return {"network": result.network, "replicate": result.replicate, "round": result.round_index,
            "status": result.status,
            "message": result.message, "remaining_fraction": result.remaining_fraction,
            "early_stop_iteration": result.early_stop_iteration,
            "early_stop_test_metric": result.early_stop_test_metric,
            "early_stop_val_metric": result.early_stop_val_metric,
            "final_test_metric": result.final_test_metric, "wall_seconds": result.wall_seconds,
            "layers": result.layers, "costs": result.costs,
            # The metric the pages report: at early stop, or at the end of training for a run without
            # a validation split (never a point picked on test data).
            "reported_test_metric": (result.early_stop_test_metric if result.early_stop_iteration is not None
                                     else result.final_test_metric)}


def best_ticket_fields(ticket_results, spec: dict | None, dataset_name: str) -> dict:
    """The Experiment row's best_ticket_* values from its ticket RoundResults (of every replicate): with replicates,
    judged on their mean per round (rounds every replicate has finished), the numbers the sparsity chart draws."""
    replicates = int((spec or {}).get("replicates") or 1)
    rows = [round_row(result) for result in ticket_results]
    ticket = best_ticket(mean_over_replicates(rows, replicates), task_of_dataset(dataset_name).metric)
    return {"best_ticket_remaining": ticket["remaining_fraction"] if ticket else None,
            "best_ticket_metric": ticket["reported_test_metric"] if ticket else None,
            "best_ticket_round": ticket["round"] if ticket else None}


def refresh_best_ticket(experiment_id: int) -> None:
    """Store the experiment's best ticket on its row (best_ticket_fields)."""
    found = Experiment.objects.filter(pk=experiment_id).values_list("dataset_name", "spec").first()
    if found is None:
        return
    dataset_name, spec = found
    ticket_results = RoundResult.objects.filter(experiment_id=experiment_id, network=trainer_events.TICKET)
    Experiment.objects.filter(pk=experiment_id).update(**best_ticket_fields(ticket_results, spec, dataset_name))


def store_record(experiment_id: int, record: dict) -> None:
    """Write one finished round (with its curves) exactly as the trainer recorded it."""
    identity = {"network": record.get("network", trainer_events.TICKET), "replicate": record.get("replicate", 0),
                "round_index": record["round"]}
    RoundResult.objects.update_or_create(experiment_id=experiment_id, **identity, defaults=round_result_fields(record))
    Curve.objects.update_or_create(
        experiment_id=experiment_id, **identity,
        defaults={"evals": json_safe(record.get("curve") or empty_evals(tasks.metric_of(record.get("final") or {}))),
                  "train_loss": json_safe(record.get("train_loss") or empty_train_loss())})
    if identity["network"] == trainer_events.TICKET:
        refresh_best_ticket(experiment_id)


def store_run_results(experiment_id: int, results: dict, run_path: Path) -> None:
    """results.json is the truth: rewrite every round and the run's location from it, whatever
    live updates were lost on the way (a failed flush, a restarted database). Call it in a transaction."""
    for record in replicate_stats.all_records(results):
        store_record(experiment_id, record)
    experiment = Experiment.objects.get(pk=experiment_id)
    experiment.run_name = results["run_name"]
    experiment.run_dir = str(run_path)
    experiment.results_path = str(run_path / "results.json")
    if not experiment.is_done:
        experiment.status = results["status"]
        experiment.finished_at = timezone.now()
    experiment.save()


def import_results(run_dir: RunDir, results: dict, round_records: list[dict]) -> tuple[Experiment, bool]:
    """The Experiment of a run directory made elsewhere (created, or refreshed when imported before)
    and its rounds, from its parsed results.json and `replicate_stats.all_records(results)`.
    Returns (experiment, created). Call it in a transaction."""
    spec = run_dir.spec
    experiment, created = Experiment.objects.get_or_create(
        run_dir=str(run_dir.path),
        # no owner: the team sees it (frontend.access), and the page should say so
        defaults={"spec": spec.to_dict(), "model_name": spec.model, "dataset_name": spec.dataset,
                  "visibility": Experiment.Visibility.TEAM})
    experiment.spec = {**spec.to_dict(), **{key: results["spec"][key] for key in ("controls", "replicates")
                                            if key in results.get("spec", {})}}
    experiment.status = results.get("status", Experiment.Status.FINISHED)
    experiment.run_name = run_dir.path.name
    experiment.results_path = str(run_dir.results_path)
    experiment.rounds_total = spec.rounds_total()
    experiment.iterations_per_round = results.get("total_iterations", 0)
    experiment.trainings_total = experiment.trainings_done = len(round_records)
    experiment.finished_at = experiment.finished_at or timezone.now()
    experiment.save()
    for record in round_records:
        store_record(experiment.pk, record)
    return experiment, created


def import_finished_analyses(experiment: Experiment, run_dir: RunDir) -> int:
    """An AnalysisRun for every finished analysis on disk the experiment does not have yet (results of an
    older run layout converted first, by trainer.analyses.stored_results); how many."""
    imported = 0
    for result in stored_results(run_dir.path):
        name, params = result.get("analysis"), result.get("params", {})
        known = AnalysisRun.objects.filter(experiment=experiment, name=name)
        if not name or any(row.params == params for row in known):
            continue
        AnalysisRun.objects.create(experiment=experiment, name=name, params=params, result=result,
                                   status=AnalysisRun.Status.FINISHED, finished_at=timezone.now())
        imported += 1
    return imported


def slim_result(value):
    """An analysis result as an AnalysisRun stores it: without per-iteration curves and per-layer tables
    (they stay in result.json on disk)."""
    if isinstance(value, dict):
        return {key: slim_result(item) for key, item in value.items() if key not in ("curve", "train_loss", "layers")}
    if isinstance(value, list):
        return [slim_result(item) for item in value]
    return json_safe(value)
