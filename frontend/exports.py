"""Downloads of one experiment: its metrics and curves as CSV, and a round's ticket as a file
that `python -m trainer retrain` trains again (trainer/tickets.py); a sweep's configurations and points as CSV."""
from __future__ import annotations

import csv
import io
import json

from frontend.models import Curve, Experiment, RoundResult
from frontend.records import eval_keys
from trainer.tasks import ACCURACY, Metric


def metric_columns(metric: Metric = ACCURACY) -> list[str]:
    """metrics.csv's header: the metric columns named after the task's metric (early_stop_test_perplexity)."""
    key = metric.key
    return ["network", "replicate", "round", "status", "remaining_fraction", "early_stop_iteration",
            f"early_stop_val_{key}", f"early_stop_test_{key}", f"final_val_{key}", f"final_test_{key}",
            "params_masked", "macs_masked", "macs_effective", "wall_seconds"]


def curve_columns(metric: Metric = ACCURACY) -> list[str]:
    return ["network", "replicate", "round", "kind", *eval_keys(metric), "train_loss"]


def _csv(header: list[str], rows) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def metrics_csv(experiment: Experiment) -> str:
    """One row per training (network, replicate, round)."""
    def row(result: RoundResult) -> list:
        costs = result.costs or {}
        return [result.network, result.replicate, result.round_index, result.status, result.remaining_fraction,
                result.early_stop_iteration, result.early_stop_val_metric, result.early_stop_test_metric,
                result.final_val_metric, result.final_test_metric,
                costs.get("masked", {}).get("parameters"), costs.get("masked", {}).get("macs"),
                costs.get("effective", {}).get("macs"), result.wall_seconds]
    results = experiment.round_results.order_by("network", "replicate", "round_index")
    return _csv(metric_columns(experiment.metric), (row(result) for result in results))


def curves_csv(experiment: Experiment) -> str:
    """Every evaluation point and train-loss point, long format (kind 'eval' or 'train')."""
    value_keys = eval_keys(experiment.metric)[1:]

    def rows(curve: Curve):
        identity = [curve.network, curve.replicate, curve.round_index]
        evals = curve.evals or {}
        for index, iteration in enumerate(evals.get("iteration", [])):
            values = [evals.get(key, [None] * (index + 1))[index]
                      for key in value_keys]
            yield identity + ["eval", iteration] + values + [None]
        train = curve.train_loss or {}
        for iteration, loss in zip(train.get("iteration", []), train.get("loss", [])):
            yield identity + ["train", iteration, None, None, None, None, loss]
    curves = experiment.curves.order_by("network", "replicate", "round_index")
    return _csv(curve_columns(experiment.metric), (row for curve in curves for row in rows(curve)))


def sweep_configurations_csv(fields: list[str], table: list[dict], metric: Metric = ACCURACY) -> str:
    """One row per configuration of a sweep (frontend.sweep_results.configuration_table): its swept values,
    then mean, std and n over its seeds of the dense metric, the best ticket's remaining fraction and metric,
    and its verdict. Stored units: fractions, not percent."""
    key = metric.key
    stats = [f"dense_test_{key}", "best_ticket_remaining_fraction", f"best_ticket_test_{key}"]
    header = [*fields, "seeds", "points_done"] + [f"{name}_{part}" for name in stats for part in ("mean", "std", "n")]
    header += ["verdict", "verdict_round", "verdict_remaining_fraction"]

    def row(entry: dict) -> list:
        summary = entry["summary"]
        cells = [json_cell(entry["config"].get(name)) for name in fields] + [summary["seeds"], entry["done"]]
        for band in (summary["dense"], summary["best_remaining"], summary["best_metric"]):
            cells += [band["mean"], band["std"], band["count"]] if band else [None, None, 0]
        found = summary["verdict"]
        return cells + [found["verdict"], found["round"], found["remaining_fraction"]]
    return _csv(header, (row(entry) for entry in table))


def sweep_points_csv(fields: list[str], points: list[dict], metric: Metric = ACCURACY) -> str:
    """One row per point (configuration and seed) of a sweep: its experiment, status, dense metric and best
    ticket (points as configuration_table leaves them)."""
    key = metric.key
    header = ["point", *fields, "seed_index", "experiment", "reused", "status", f"dense_test_{key}",
              "best_ticket_round", "best_ticket_remaining_fraction", f"best_ticket_test_{key}"]

    def row(point: dict) -> list:
        best = point.get("best_ticket") or {}
        return ([point["index"]] + [json_cell(point["config"].get(name)) for name in fields]
                + [point["seed_index"], point["experiment"].pk, point["reused"], point["status"], point.get("dense"),
                   best.get("round"), best.get("remaining_fraction"), best.get("reported_test_metric")])
    return _csv(header, (row(point) for point in points))


def json_cell(value):
    """A swept value as a CSV cell: numbers and text as they are, lists and objects as JSON."""
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else value
