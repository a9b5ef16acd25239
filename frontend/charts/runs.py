"""Charts of an experiment's IMP run: the task's metric (accuracy, perplexity or mean return) against
sparsity (one run, or the mean and min-max band across replicates), early-stop iterations, training
curves, the live page's charts, and experiments compared side by side (Frankle & Carbin 2019, figures
1-4: test accuracy at early stop against % of weights remaining; Yu et al. 2020 for perplexity and return)."""
from __future__ import annotations

import functools

import plotly.graph_objects as go

from frontend.charts.base import figure_layout, min_max_band, remaining_axis, rgba
from frontend.metric_display import axis_title, hover_number, shown
from trainer.events import TICKET
from trainer.tasks import ACCURACY, Metric

NETWORK_COLORS = {TICKET: "#1f77b4", "random_reinit": "#d62728", "random_reinit_from_scratch": "#ff7f0e",
                  "random_prune": "#2ca02c"}
NETWORK_TITLES = {TICKET: "winning ticket", "random_reinit": "random reinit", "random_reinit_from_scratch":
                  "random reinit from scratch", "random_prune": "random prune"}


def network_title(network: str) -> str:
    return NETWORK_TITLES.get(network, network.replace("_", " "))


def metric_axis(title: str, metric: Metric) -> dict:
    """A y axis for the metric; perplexity spans orders of magnitude early in training, so its axis is log."""
    axis = dict(title=title)
    if metric.key == "perplexity":
        axis["type"] = "log"
    return axis


def sparsity_vs_accuracy(rounds_by_network: dict[str, list[dict]], bands: dict[str, list[dict]] | None = None,
                         metric: Metric = ACCURACY) -> go.Figure:
    """Test metric at early stop (solid) and at the end of training (dotted) against % weights remaining.

    With replicates (`bands`, from queries.replicate_bands) each network is drawn as the mean across
    replicates with a shaded min-max band instead of one run's line."""
    scale = functools.partial(shown, metric=metric)
    value = hover_number("y", metric)
    figure = go.Figure(layout=figure_layout(f"Test {metric.label} vs. sparsity", xaxis=remaining_axis(),
                                            yaxis=metric_axis(axis_title("test", metric), metric)))
    if bands:
        for network, rows in bands.items():
            _add_band(figure, network, rows, metric)
        return figure
    for network, rows in rounds_by_network.items():
        rows = [row for row in rows if row["status"] == "finished"]
        if not rows:
            continue
        color = NETWORK_COLORS.get(network)
        x = [shown(row["remaining_fraction"]) for row in rows]
        if all(row["early_stop_iteration"] is None for row in rows):
            # No validation split: nothing is early-stopped, the end-of-training line below is the result.
            figure.add_trace(go.Scatter(
                x=x, y=[scale(row["final_test_metric"]) for row in rows], mode="lines+markers",
                name=f"{network_title(network)} (end of training, no early stop)", line=dict(color=color)))
            continue
        figure.add_trace(go.Scatter(
            x=x, y=[scale(row["early_stop_test_metric"]) for row in rows], mode="lines+markers",
            name=f"{network_title(network)} (early stop)", line=dict(color=color),
            customdata=[[row["round"], row["early_stop_iteration"]] for row in rows],
            hovertemplate=f"round %{{customdata[0]}}: %{{x:.3g}}% left, {value} test {metric.label} at iteration "
                          "%{customdata[1]}<extra></extra>"))
        figure.add_trace(go.Scatter(
            x=x, y=[scale(row["final_test_metric"]) for row in rows], mode="lines+markers",
            name=f"{network_title(network)} (end of training)", line=dict(color=color, dash="dot"),
            marker=dict(symbol="circle-open"),
            hovertemplate=f"%{{x:.3g}}% left: {value} test {metric.label} at the end<extra></extra>"))
    return figure


def _add_band(figure: go.Figure, network: str, rows: list[dict], metric: Metric = ACCURACY) -> None:
    """Mean early-stop metric across replicates with its min-max band, and the mean at the end (dotted)."""
    scale = functools.partial(shown, metric=metric)
    value, unit = hover_number("y", metric), "%" if metric.percent else ""
    color = NETWORK_COLORS.get(network)
    x = [shown(row["remaining_fraction"]) for row in rows]
    early = [row["reported"] for row in rows]
    count = max(row["replicates"] for row in rows)
    title = network_title(network)
    figure.add_trace(min_max_band(x, early, rgba(color, 0.18), f"{title} min–max of {count} replicates",
                                  f"band:{network}", scale=scale, legendgroup=network))
    figure.add_trace(go.Scatter(
        x=x, y=[scale(b["mean"]) for b in early], mode="lines+markers", legendgroup=network,
        name=f"{title} ({rows[0].get('point', 'early stop')}, mean of {count})", line=dict(color=color),
        meta=f"mean:{network}",
        customdata=[[row["round"], scale(b["std"]), scale(b["min"]), scale(b["max"]), b["count"]]
                    for row, b in zip(rows, early)],
        hovertemplate=(f"round %{{customdata[0]}}: %{{x:.3g}}% left, mean {value} ± %{{customdata[1]:.2f}}{unit} "
                       f"test {metric.label} (min %{{customdata[2]:.2f}}, max %{{customdata[3]:.2f}}, "
                       "n=%{customdata[4]})<extra></extra>")))
    final = [(x_value, row["final"]) for x_value, row in zip(x, rows) if row["final"]]
    figure.add_trace(go.Scatter(
        x=[x_value for x_value, _ in final], y=[scale(b["mean"]) for _, b in final], mode="lines+markers",
        legendgroup=network, name=f"{title} (end of training, mean)", line=dict(color=color, dash="dot"),
        marker=dict(symbol="circle-open"),
        hovertemplate=f"%{{x:.3g}}% left: mean {value} test {metric.label} at the end<extra></extra>"))


def early_stop_iterations(rounds_by_network: dict[str, list[dict]]) -> go.Figure:
    figure = go.Figure(layout=figure_layout(
        "Early-stopping iteration vs. sparsity", xaxis=remaining_axis(),
        yaxis=dict(title="early-stop iteration (min. validation loss)", rangemode="tozero")))
    for network, rows in rounds_by_network.items():
        rows = [row for row in rows if row["status"] == "finished"]
        if rows:
            figure.add_trace(go.Scatter(
                x=[shown(row["remaining_fraction"]) for row in rows],
                y=[row["early_stop_iteration"] for row in rows],
                mode="lines+markers", name=network_title(network), line=dict(color=NETWORK_COLORS.get(network))))
    return figure


def curve_trace_name(network: str, round_index: int, remaining_fraction: float | None = None,
                     replicate: int = 0) -> str:
    name = f"round {round_index}" if network == TICKET else f"{network_title(network)}, round {round_index}"
    if replicate:
        name += f", replicate {replicate}"
    return name if remaining_fraction is None else f"{name} ({100 * remaining_fraction:.3g}%)"


def training_curves(curves: list[dict], remaining_by_round: dict[int, float] | None = None,
                    metric: Metric = ACCURACY, split: str = "val") -> go.Figure:
    """The validation (or test) metric against iteration, one line per round, darker = sparser."""
    remaining_by_round = remaining_by_round or {}
    key = f"{split}_{metric.key}"
    figure = go.Figure(layout=figure_layout(
        "Training curves per round", xaxis=dict(title="iteration"),
        yaxis=metric_axis(axis_title("validation" if split == "val" else "test", metric), metric)))
    count = max(1, len(curves) - 1)
    for position, curve in enumerate(curves):
        shade = 0.25 + 0.75 * position / count
        figure.add_trace(go.Scatter(
            x=curve["evals"]["iteration"], y=[shown(v, metric) for v in curve["evals"].get(key, [])],
            mode="lines+markers",
            name=curve_trace_name(curve["network"], curve["round"], remaining_by_round.get(curve["round"])),
            line=dict(color=f"rgba(31, 119, 180, {shade:.2f})")))
    return figure


def live_figures(curves: list[dict], planned: list[tuple[str, int, int]] = (),
                 metric: Metric = ACCURACY) -> dict[str, go.Figure]:
    """The live page's two charts (the validation metric and the training loss), with one (maybe still
    empty) line per planned training (network, replicate, round).

    Each trace's `meta` is "network:replicate:round", all the page's script needs to append points.
    Lines without points stay out of the legend until their first point arrives.
    """
    key = f"val_{metric.key}"
    metric_figure = go.Figure(layout=figure_layout(
        f"Validation {metric.label} (live)", xaxis=dict(title="iteration"),
        yaxis=metric_axis(axis_title("validation", metric), metric), uirevision="live"))
    loss = go.Figure(layout=figure_layout("Training loss (live)", xaxis=dict(title="iteration"),
                                          yaxis=dict(title="train loss", type="log"), uirevision="live"))
    by_key = {(curve["network"], curve.get("replicate", 0), curve["round"]): curve for curve in curves}
    keys = list(planned) + [key for key in by_key if key not in planned]
    for network, replicate, round_index in keys:
        curve = by_key.get((network, replicate, round_index))
        evals = curve["evals"] if curve else {"iteration": []}
        train_loss = curve["train_loss"] if curve else {"iteration": [], "loss": []}
        common = dict(name=curve_trace_name(network, round_index, replicate=replicate),
                      meta=f"{network}:{replicate}:{round_index}")
        # replicates share their network's colour, lighter the higher their number
        color = rgba(NETWORK_COLORS.get(network), 1.0 / (1 + 0.5 * replicate))
        metric_figure.add_trace(go.Scatter(x=evals["iteration"], y=[shown(v, metric) for v in evals.get(key, [])],
                                           mode="lines+markers", line=dict(color=color),
                                           showlegend=bool(evals["iteration"]), **common))
        loss.add_trace(go.Scatter(x=train_loss["iteration"], y=train_loss["loss"], mode="lines",
                                  line=dict(color=color), showlegend=bool(train_loss["iteration"]), **common))
    return {"metric": metric_figure, "loss": loss}


def compare_sparsity_vs_accuracy(series: list[dict], metric: Metric = ACCURACY) -> go.Figure:
    """Experiments side by side (of one task): each one's ticket (early-stop test metric vs % remaining), as
    the mean with its min-max band when it has replicates. `series`: [{label, rounds, band}] (band may be None)."""
    scale = functools.partial(shown, metric=metric)
    figure = go.Figure(layout=figure_layout(
        f"Test {metric.label} vs. sparsity (compared)", xaxis=remaining_axis(),
        yaxis=metric_axis(axis_title("test", metric, "at early stop"), metric)))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for index, item in enumerate(series):
        color = palette[index % len(palette)]
        if item.get("band"):
            rows = item["band"]
            x = [shown(row["remaining_fraction"]) for row in rows]
            early = [row["reported"] for row in rows]
            figure.add_trace(min_max_band(x, early, rgba(color, 0.15), item["label"], f"band:{item['label']}",
                                          scale=scale, legendgroup=item["label"], showlegend=False))
            y = [scale(b["mean"]) for b in early]
            name = f"{item['label']} (mean of {max(row['replicates'] for row in rows)})"
        else:
            rows = [row for row in item["rounds"] if row["status"] == "finished"]
            x = [shown(row["remaining_fraction"]) for row in rows]
            y = [scale(row["reported_test_metric"]) for row in rows]
            name = item["label"]
        figure.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, line=dict(color=color),
                                    legendgroup=item["label"], meta=f"experiment:{item['id']}",
                                    hovertemplate=f"%{{x:.3g}}% left: {hover_number('y', metric)}<extra>"
                                                  + item["label"] + "</extra>"))
    return figure
