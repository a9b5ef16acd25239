"""The chart of a reproduction check, drawn as trainer.reproduce describes it."""
from __future__ import annotations

import plotly.graph_objects as go

from frontend.charts.base import figure_layout, palette_color


def reproduction_chart(chart: dict) -> go.Figure:
    """A reproduction check's chart as trainer.reproduce describes it: one line per series, its axis
    labels, a log x axis when the check asks for one. Missing points (null) stay gaps."""
    xaxis = dict(title=chart.get("x_label", ""))
    if chart.get("log_x"):
        xaxis.update(type="log", tickformat=".3~g")
    figure = go.Figure(layout=figure_layout(chart.get("title", ""), xaxis=xaxis,
                                            yaxis=dict(title=chart.get("y_label", "")), height=340))
    for index, series in enumerate(chart.get("series", [])):
        figure.add_trace(go.Scatter(x=series.get("x", []), y=series.get("y", []), mode="lines+markers",
                                    name=series.get("name", f"series {index + 1}"),
                                    line=dict(color=palette_color(index))))
    return figure
