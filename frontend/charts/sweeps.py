"""Charts of a sweep: each configuration's ticket (test metric against % of weights remaining, the mean
over its seeds with a ±1 std band) on one chart, and the swept fields against a chosen metric as
parallel coordinates (one line per configuration, coloured by the metric)."""
from __future__ import annotations

import functools

import plotly.graph_objects as go

from frontend.charts.base import figure_layout, min_max_band, palette_color, remaining_axis, rgba
from frontend.charts.runs import metric_axis
from frontend.metric_display import axis_title, hover_number, shown
from trainer.sweeps import value_text
from trainer.tasks import ACCURACY, Metric


def sweep_sparsity_vs_metric(configurations: list[dict], metric: Metric = ACCURACY) -> go.Figure:
    """`configurations`: [{"label", "curve": [{remaining_fraction, mean, std, count}, ...]}] (per round over
    seeds: trainer.sweep_summary.ticket_curve). A configuration without finished rounds has no line."""
    scale = functools.partial(shown, metric=metric)
    unit = "%" if metric.percent else ""
    figure = go.Figure(layout=figure_layout(
        f"Test {metric.label} vs. sparsity per configuration (mean ± std over seeds)", xaxis=remaining_axis(),
        yaxis=metric_axis(axis_title("test", metric), metric), height=420))
    for index, configuration in enumerate(configurations):
        curve = configuration["curve"]
        if not curve:
            continue
        color, label = palette_color(index), configuration["label"]
        x = [shown(point["remaining_fraction"]) for point in curve]
        spread = [{"min": point["mean"] - point["std"], "max": point["mean"] + point["std"]} for point in curve]
        figure.add_trace(min_max_band(x, spread, rgba(color, 0.18), f"{label} ± std", f"band:{index}", scale=scale,
                                      legendgroup=str(index), showlegend=False))
        figure.add_trace(go.Scatter(
            x=x, y=[scale(point["mean"]) for point in curve], mode="lines+markers", name=label,
            legendgroup=str(index), line=dict(color=color), meta=f"mean:{index}",
            customdata=[[point["round"], scale(point["std"]), point["count"]] for point in curve],
            hovertemplate=(f"round %{{customdata[0]}}: %{{x:.3g}}% left, mean {hover_number('y', metric)} "
                           f"± %{{customdata[1]:.2f}}{unit} (n=%{{customdata[2]}})<extra>{label}</extra>")))
    return figure


def sweep_parallel_coordinates(configurations: list[dict], fields: list[str], values: list[float | None],
                               title: str) -> go.Figure:
    """One line per configuration through its swept values and `values` (the chosen metric, already in the
    page's unit; a configuration without it is left out). Text and list values get one tick each."""
    kept = [(configuration, value) for configuration, value in zip(configurations, values) if value is not None]
    dimensions = []
    for name in fields:
        column = [configuration["config"].get(name) for configuration, _ in kept]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in column):
            dimensions.append(dict(label=name, values=column))
        else:
            texts = list(dict.fromkeys(value_text(v) for v in column))
            dimensions.append(dict(label=name, values=[texts.index(value_text(v)) for v in column],
                                   tickvals=list(range(len(texts))), ticktext=texts))
    dimensions.append(dict(label=title, values=[value for _, value in kept]))
    figure = go.Figure(layout=figure_layout(f"Swept fields vs. {title}", height=420,
                                            margin=dict(l=80, r=80, t=110, b=40)))
    figure.add_trace(go.Parcoords(
        dimensions=dimensions, meta="parallel",
        line=dict(color=[value for _, value in kept], colorscale="Viridis", showscale=True,
                  colorbar=dict(title=dict(text=title, side="right")))))
    return figure
