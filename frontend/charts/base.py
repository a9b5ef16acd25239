"""What every chart shares: the page style, the axis of weights remaining (log, dense on the left as in
Frankle & Carbin 2019's figures), percentages, the colour palette, min-max bands, and `figure_json`, which
turns a figure into JSON that a template embeds and static/frontend/charts.js draws."""
from __future__ import annotations

import plotly.graph_objects as go
import plotly.io

_BASE_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), height=380,
                    legend=dict(yanchor="top", y=1.0, xanchor="left", x=1.02, font=dict(size=11)),
                    font=dict(size=12))
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def figure_json(figure: go.Figure) -> str:
    """Plotly JSON that is safe inside a <script type="application/json"> element."""
    text = plotly.io.to_json(figure, validate=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def as_percent(value):
    return None if value is None else 100.0 * value


def figure_layout(title: str, **overrides) -> dict:
    layout = dict(_BASE_LAYOUT, title=dict(text=title, x=0.01))
    layout.update(overrides)
    return layout


def remaining_axis() -> dict:
    # As in the paper: log scale, from dense (100%) on the left to sparse on the right.
    return dict(title="% of weights remaining", type="log", autorange="reversed", tickformat=".3~g")


def rgba(hex_color: str | None, alpha: float) -> str:
    hex_color = (hex_color or "#7f7f7f").lstrip("#")
    red, green, blue = (int(hex_color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red}, {green}, {blue}, {alpha})"


def min_max_band(x: list, bands: list[dict], fillcolor: str, name: str, meta: str, scale=as_percent,
                 **options) -> go.Scatter:
    """A shaded area between each point's min and max (max left to right, then min back); `scale` turns a
    stored value into the plotted one (percent by default)."""
    upper = [scale(b["max"]) for b in bands]
    lower = [scale(b["min"]) for b in bands]
    return go.Scatter(x=x + x[::-1], y=upper + lower[::-1],
                      mode="lines", fill="toself", fillcolor=fillcolor, line=dict(width=0), hoverinfo="skip",
                      name=name, meta=meta, **options)


def palette_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]
