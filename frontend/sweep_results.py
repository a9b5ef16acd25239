"""What a sweep's pages read: its points with their experiments' status and progress, the sweep's status,
and one row per configuration with mean ± std and n over its seeds (trainer.sweep_summary) in the task's
metric. A handful of queries whatever the sweep's size: the points with their experiments, then every
round row of those experiments."""
from __future__ import annotations

from frontend.access import can_view
from frontend.metric_display import shown
from frontend.models import Experiment, RoundResult, Sweep
from frontend.progress import progress_of
from frontend.queries import progress_label, round_row
from trainer import verdict
from trainer.events import TICKET
from trainer.sweep_summary import configuration_summary
from trainer.sweeps import SweepDefinition, config_label, value_text
from trainer.tasks import ACCURACY, Metric

# The metrics the parallel-coordinates chart can colour by: key -> (summary entry, title words)
PARALLEL_METRICS = {"best_remaining": ("best_remaining", "best ticket: % of weights remaining"),
                    "dense": ("dense", "dense test {metric}"),
                    "best_metric": ("best_metric", "test {metric} at the best ticket")}
DEFAULT_PARALLEL_METRIC = "best_remaining"


def swept_fields(sweep: Sweep) -> list[str]:
    """The fields the sweep varies, in the spec's order."""
    return SweepDefinition(sweep.base_spec, sweep.grid or {}, sweep.points or [], sweep.seeds).swept_fields()


def points_of(sweep: Sweep, user=None) -> list[dict]:
    """The sweep's points in order, each with its experiment, status, progress and whether `user` may open it."""
    rows = []
    for point in sweep.sweep_points.select_related("experiment").order_by("index"):
        experiment = point.experiment
        progress = progress_of(experiment)
        rows.append({"index": point.index, "config": point.config, "label": config_label(point.config),
                     "seed_index": point.seed_index, "reused": point.reused, "experiment": experiment,
                     "status": experiment.status, "done": experiment.is_done,
                     "progress_fraction": progress.get("overall_fraction"),
                     "progress_text": progress_label(progress) if experiment.status == "running" else "",
                     "visible": user is None or can_view(user, experiment)})
    return rows


def status_counts(points: list[dict]) -> dict[str, int]:
    counts = {status: 0 for status in Experiment.Status.values}
    for point in points:
        counts[point["status"]] += 1
    return {status: count for status, count in counts.items() if count}


def sweep_status(sweep: Sweep, points: list[dict]) -> str:
    """running / queued while a point is; then finished (all finished), cancelled (asked), or ended."""
    statuses = {point["status"] for point in points}
    if Experiment.Status.RUNNING in statuses:
        return "running"
    if Experiment.Status.QUEUED in statuses:
        return "queued"
    if statuses <= {Experiment.Status.FINISHED}:
        return "finished"
    return "cancelled" if sweep.cancel_requested else "ended"


def metric_of(points: list[dict]) -> Metric:
    """The sweep's metric: its points share one task (services.sweep_points refuses a mix)."""
    return points[0]["experiment"].metric if points else ACCURACY


def _rows_by_experiment(points: list[dict]) -> dict[int, list[dict]]:
    rows: dict[int, list[dict]] = {}
    results = RoundResult.objects.filter(experiment__in=[point["experiment"].pk for point in points])
    for result in results.order_by("round_index"):
        rows.setdefault(result.experiment_id, []).append(round_row(result))
    return rows


def configuration_table(sweep: Sweep, points: list[dict]) -> list[dict]:
    """One entry per configuration, in the sweep's order: its config and values, its points and the
    summary over its seeds (bands of stored values; "shown" copies in the page's unit)."""
    metric = metric_of(points)
    rows_by_experiment = _rows_by_experiment(points)
    fields = swept_fields(sweep)
    grouped: dict[str, dict] = {}
    for point in points:
        key = config_label(point["config"]) + repr(sorted(point["config"].items()))
        entry = grouped.setdefault(key, {"config": point["config"], "label": point["label"], "points": []})
        entry["points"].append(point)
        point["best_ticket"] = verdict.best_ticket(
            [row for row in rows_by_experiment.get(point["experiment"].pk, [])
             if row["network"] == TICKET and row["replicate"] == 0], metric)
        point["dense"] = next((row["reported_test_metric"] for row in rows_by_experiment.get(point["experiment"].pk, [])
                               if row["network"] == TICKET and row["replicate"] == 0 and row["round"] == 0
                               and row["status"] == "finished"), None)
    table = []
    for number, entry in enumerate(grouped.values()):
        summary = configuration_summary(
            [{"seed_index": point["seed_index"], "rows": rows_by_experiment.get(point["experiment"].pk, []),
              "total_iterations": point["experiment"].iterations_per_round or None} for point in entry["points"]],
            metric)
        table.append({**entry, "number": number, "summary": summary,
                      "values": [value_text(entry["config"].get(name)) for name in fields],
                      "dense_text": band_shown(summary["dense"], metric),
                      "best_remaining_text": band_shown(summary["best_remaining"], None),
                      "best_metric_text": band_shown(summary["best_metric"], metric),
                      "done": sum(point["done"] for point in entry["points"])})
    return table


def band_shown(band: dict | None, metric: Metric | None) -> str:
    """'91.20 ± 0.35' in the page's unit (percent of weights for metric None); '–' without values."""
    if band is None:
        return "–"
    if metric is None:
        return f"{100 * band['mean']:.3g}% ± {100 * band['std']:.2g}"
    return f"{shown(band['mean'], metric):.2f} ± {shown(band['std'], metric):.2f}"


def parallel_metric_title(choice: str, metric: Metric) -> str:
    return PARALLEL_METRICS[choice][1].format(metric=metric.label)


def state(points: list[dict]) -> dict:
    """What the sweep page polls: each point's status and progress (charts.js's polled-section format)."""
    return {"runs": [{"id": point["index"], "status": point["status"], "done": point["done"],
                      "progress_text": point["progress_text"], "progress_fraction": point["progress_fraction"]}
                     for point in points],
            "active": any(not point["done"] for point in points)}
