"""Read-side functions for pages and the websocket: small queries, plain dicts out."""
from __future__ import annotations

import json

from django.db import transaction

from frontend.metric_display import shown
from frontend.models import AnalysisRun, Curve, Experiment
from frontend.progress import piece_rows, progress_of
from frontend.records import round_row
from trainer import replicate_stats
from trainer.events import TICKET
from trainer.lm_networks import LM_LAYER_TYPES, lm_layer_types
from trainer.tasks import ACCURACY, LANGUAGE_MODELING, Metric, Task
from trainer.verdict import best_ticket, mean_over_replicates  # noqa: F401 (the pages' names for them)


def progress_label(progress: dict) -> str:
    fraction = progress.get("overall_fraction")
    return f"{100 * fraction:.0f}%" if fraction is not None else ""


def best_ticket_label(ticket: dict, metric: Metric = ACCURACY) -> str:
    replicates = ticket.get("replicates") or 1
    of = f"mean test {metric.label} of {replicates} replicates" if replicates > 1 else f"test {metric.label}"
    return (f"{100 * ticket['remaining_fraction']:.3g}% of weights: {metric.text(ticket['reported_test_metric'])} "
            f"{of} (round {ticket['round']})")


def _percent(value):
    return None if value is None else 100.0 * value


def matching_round(rows: list[dict], round_index: int) -> dict | None:
    return next((row for row in rows if row["round"] == round_index), None)


def round_table_row(row: dict, control_rows: list[dict | None], bands: dict[str, list[dict]] | None = None,
                    metric: Metric = ACCURACY) -> dict:
    """A ticket round for the result page's table, metric values as shown (percent for accuracy), with each
    control's early-stop metric (the mean across replicates when there are several) and the ticket's band
    across replicates."""
    bands = bands or {}

    def band_of(network: str) -> dict | None:
        found = next((b for b in bands.get(network, []) if b["round"] == row["round"]), None)
        if found is None:
            return None
        reported = found["reported"]
        return {"count": reported["count"],
                **{key: shown(reported[key], metric) for key in ("mean", "std", "min", "max")}}

    controls = []
    for control in control_rows:
        band = band_of(control["network"]) if control and bands else None
        controls.append(band["mean"] if band else shown(control["reported_test_metric"], metric) if control else None)
    return {**row, "remaining_percent": _percent(row["remaining_fraction"]),
            "early_stop_test_value": shown(row["early_stop_test_metric"], metric),
            "reported_test_value": shown(row["reported_test_metric"], metric),
            "final_test_value": shown(row["final_test_metric"], metric),
            "band": band_of(TICKET),
            "control_values": controls,
            # the masked view's parameters: surviving weights plus live units' biases and batch norms
            "effective_parameters": ((row.get("costs") or {}).get("masked") or {}).get("parameters"),
            "macs_left_percent": _cost_percent(row.get("costs"), "masked"),
            "effective_macs_left_percent": _cost_percent(row.get("costs"), "effective")}


def _cost_percent(costs: dict | None, view: str) -> float | None:
    """Multiply-accumulates per example left in `view`, as % of the dense network's."""
    if not costs or not costs.get("dense", {}).get("macs"):
        return None
    return 100 * costs[view]["macs"] / costs["dense"]["macs"]


def curve_row(curve: Curve) -> dict:
    return {"network": curve.network, "replicate": curve.replicate, "round": curve.round_index, "evals": curve.evals,
            "train_loss": curve.train_loss}


def snapshot(experiment_id: int) -> dict | None:
    """Everything the live page shows, as of the experiment's last_seq (one consistent read)."""
    with transaction.atomic():
        experiment = Experiment.objects.filter(pk=experiment_id).first()
        if experiment is None:
            return None
        curves = [curve_row(c) for c in experiment.curves.all()]
        rounds = [round_row(r) for r in experiment.round_results.all()]
        pieces = piece_rows(experiment_id)
    return {"type": "snapshot", "seq": experiment.last_seq, "progress": progress_of(experiment),
            "curves": curves, "rounds": rounds, "pieces": pieces}


def pieces(experiment: Experiment) -> list[dict]:
    """The rows of the experiment's "Pieces" table (frontend.distributed): what each piece trained, where, when."""
    return piece_rows(experiment.pk)


def rounds_by_network(experiment: Experiment, replicate: int = 0) -> dict[str, list[dict]]:
    """network -> one replicate's round rows in round order, the ticket first."""
    grouped: dict[str, list[dict]] = {TICKET: []}
    for result in experiment.round_results.filter(replicate=replicate).order_by("round_index"):
        grouped.setdefault(result.network, []).append(round_row(result))
    return grouped


def all_round_rows(experiment: Experiment) -> list[dict]:
    """Every network's and replicate's round rows in round order (one query)."""
    return [round_row(result) for result in experiment.round_results.order_by("round_index")]


def replicate_bands(experiment: Experiment, rows: list[dict] | None = None) -> dict[str, list[dict]]:
    """network -> per round across replicates: reported (early stop, else end of training) and final test metric bands
    (trainer.replicate_stats.band: mean, std, min, max, count) and the mean remaining fraction.
    Empty when the experiment has a single replicate. `rows`: all_round_rows, when the caller has them."""
    rows = all_round_rows(experiment) if rows is None else rows
    if not any(row["replicate"] > 0 for row in rows):
        return {}
    grouped: dict[str, dict[int, list[dict]]] = {}
    for row in rows:
        grouped.setdefault(row["network"], {}).setdefault(row["round"], []).append(row)
    bands: dict[str, list[dict]] = {}
    for network, by_round in grouped.items():
        for round_index, replicas in sorted(by_round.items()):
            finished = [row for row in replicas if row["status"] == "finished"]
            reported = replicate_stats.band(row["reported_test_metric"] for row in finished)
            if reported is None:
                continue
            bands.setdefault(network, []).append({
                "round": round_index, "reported": reported,
                "point": "early stop" if all(row["early_stop_iteration"] is not None for row in finished)
                         else "end of training",
                "final": replicate_stats.band(row["final_test_metric"] for row in finished),
                "remaining_fraction": sum(row["remaining_fraction"] for row in finished) / len(finished),
                "replicates": len(replicas)})
    return bands


def ticket_curves(experiment: Experiment) -> list[dict]:
    return [curve_row(c) for c in experiment.curves.filter(network=TICKET, replicate=0).order_by("round_index")]


def layer_table(ticket_rounds: list[dict]) -> dict:
    """Rows per layer, one cell per round: {'rounds': [0, 1, ...], 'layers': [{name, shape, total, cells}]}."""
    names: list[str] = []
    for row in ticket_rounds:
        for name in row["layers"]:
            if name not in names:
                names.append(name)
    layers = []
    for name in names:
        first = next(row["layers"][name] for row in ticket_rounds if name in row["layers"])
        cells = [row["layers"].get(name) for row in ticket_rounds]
        layers.append({"name": name, "shape": " × ".join(str(size) for size in first["shape"]),
                       "total": first["total"],
                       "cells": [{"remaining": c["remaining"], "percent": 100 * c["remaining_fraction"]} if c else None
                                 for c in cells]})
    total = [{"remaining": sum(layer["remaining"] for layer in row["layers"].values()),
              "percent": 100 * row["remaining_fraction"]} for row in ticket_rounds]
    return {"rounds": [row["round"] for row in ticket_rounds], "layers": layers, "total": total}


def layer_type_table(ticket_rounds: list[dict], task: Task) -> dict | None:
    """A language model's surviving weights per layer type (embedding, attention, feed-forward, recurrent,
    output: trainer.lm_networks.lm_layer_types), one cell per round; None for other tasks."""
    if task.name != LANGUAGE_MODELING.name:
        return None
    types: dict[str, dict] = {}
    for row in ticket_rounds:
        for name, layer in row["layers"].items():
            try:
                layer_type = lm_layer_types(name)
            except ValueError:  # not a parameter of the registry's language models
                continue
            counts = types.setdefault(layer_type, {}).setdefault(row["round"], [0, 0])
            counts[0] += layer["remaining"]
            counts[1] += layer["total"]
    order = [name for name in LM_LAYER_TYPES if name in types]
    return {"rounds": [row["round"] for row in ticket_rounds],
            "types": [{"name": name.replace("_", " "),
                       "total": next(iter(types[name].values()))[1],
                       "cells": [{"remaining": types[name][row["round"]][0],
                                  "percent": 100 * types[name][row["round"]][0] / types[name][row["round"]][1]}
                                 if types[name].get(row["round"], (0, 0))[1] else None for row in ticket_rounds]}
                      for name in order]}


def analysis_run_row(run: AnalysisRun) -> dict:
    """What the polling endpoint sends of an analysis run (no result: that comes with the page)."""
    return {"id": run.pk, "name": run.name, "status": run.status, "message": run.message,
            "progress_text": run.progress_text, "progress_fraction": run.progress_fraction,
            "done": run.is_done}


def analysis_runs_by_name(experiment: Experiment) -> dict[str, list[AnalysisRun]]:
    """name -> the experiment's analysis runs, newest first."""
    grouped: dict[str, list[AnalysisRun]] = {}
    for run in experiment.analysis_runs.order_by("-created_at", "-id"):
        grouped.setdefault(run.name, []).append(run)
    return grouped


def params_label(params: dict, defaults: dict) -> str:
    """'points=49, seed=1' of the parameters that differ from the defaults ('default parameters' if none)."""
    def text(value) -> str:
        if isinstance(value, list):
            return ", ".join(map(str, value))
        return value.rstrip("/").rsplit("/", 1)[-1] if isinstance(value, str) and "/" in value else str(value)
    # in the schema's order: PostgreSQL's jsonb does not keep the stored key order
    order = list(defaults) + [name for name in params if name not in defaults]
    changed = [f"{name}={text(params[name])}" for name in order
               if name in params and defaults.get(name) != params[name]]
    return "; ".join(changed) or "default parameters"


def analyses_active(experiment: Experiment, runs: list[AnalysisRun]) -> bool:
    """An analysis is queued or running, or one chosen on the new-experiment form is still to be queued."""
    if any(not run.is_done for run in runs):
        return True
    chosen_but_missing = set(experiment.analyses or []) - {run.name for run in runs}
    return bool(chosen_but_missing) and experiment.status == Experiment.Status.FINISHED


def flatten_spec(spec: dict, prefix: str = "") -> dict[str, object]:
    """{"training.lr": 0.1, ...}: nested spec dicts as dotted keys (lists and per-layer dicts as values)."""
    flat: dict[str, object] = {}
    for key, value in spec.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("layer_fractions",):
            flat.update(flatten_spec(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def spec_comparison(experiments: list[Experiment]) -> list[dict]:
    """One row per spec field: each experiment's value and whether they differ (differing rows first)."""
    flats = [flatten_spec(experiment.spec) for experiment in experiments]
    keys = sorted(set().union(*flats))
    missing = object()
    rows = []
    for key in keys:
        values = [flat.get(key, missing) for flat in flats]
        shown = ["–" if value is missing else json.dumps(value) if not isinstance(value, str) else value
                 for value in values]
        rows.append({"field": key, "values": shown, "differs": len(set(shown)) > 1})
    return sorted(rows, key=lambda row: not row["differs"])
