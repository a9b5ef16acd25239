"""Every plotly figure of the web app, built on the server from stored results.

Functions take plain rows (from frontend.queries or a run directory) and return plotly figures;
`figure_json` turns one into JSON that a template embeds and static/frontend/charts.js draws.
Pages hold no chart logic; the live page's script only appends points to the traces made here.
"""
from __future__ import annotations

import json

import plotly.graph_objects as go
import plotly.io
import torch
import torch.nn.functional as F

from trainer.events import TICKET

NETWORK_COLORS = {TICKET: "#1f77b4", "random_reinit": "#d62728", "random_prune": "#2ca02c"}
NETWORK_TITLES = {TICKET: "winning ticket", "random_reinit": "random reinit", "random_prune": "random prune"}
# Heatmaps are downsampled to at most this many cells a side (fraction of survivors per cell).
HEATMAP_MAX_ROWS = 100
HEATMAP_MAX_COLUMNS = 200
_BASE_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), height=380,
                    legend=dict(yanchor="top", y=1.0, xanchor="left", x=1.02, font=dict(size=11)),
                    font=dict(size=12))


def figure_json(figure: go.Figure) -> str:
    """Plotly JSON that is safe inside a <script type="application/json"> element."""
    text = plotly.io.to_json(figure, validate=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def network_title(network: str) -> str:
    return NETWORK_TITLES.get(network, network.replace("_", " "))


def _percent(value):
    return None if value is None else 100.0 * value


def _layout(title: str, **overrides) -> dict:
    layout = dict(_BASE_LAYOUT, title=dict(text=title, x=0.01))
    layout.update(overrides)
    return layout


def _remaining_axis() -> dict:
    # As in the paper: log scale, from dense (100%) on the left to sparse on the right.
    return dict(title="% of weights remaining", type="log", autorange="reversed", tickformat=".3~g")


def sparsity_vs_accuracy(rounds_by_network: dict[str, list[dict]]) -> go.Figure:
    """Test accuracy at early stop (solid) and at the end of training (dotted) against % weights remaining."""
    figure = go.Figure(layout=_layout("Test accuracy vs. sparsity", xaxis=_remaining_axis(),
                                      yaxis=dict(title="test accuracy (%)")))
    for network, rows in rounds_by_network.items():
        rows = [row for row in rows if row["status"] == "finished"]
        if not rows:
            continue
        color = NETWORK_COLORS.get(network)
        x = [_percent(row["remaining_fraction"]) for row in rows]
        figure.add_trace(go.Scatter(
            x=x, y=[_percent(row["early_stop_test_accuracy"]) for row in rows], mode="lines+markers",
            name=f"{network_title(network)} (early stop)", line=dict(color=color),
            customdata=[[row["round"], row["early_stop_iteration"]] for row in rows],
            hovertemplate="round %{customdata[0]}: %{x:.3g}% left, %{y:.2f}% at iteration %{customdata[1]}<extra></extra>"))
        figure.add_trace(go.Scatter(
            x=x, y=[_percent(row["final_test_accuracy"]) for row in rows], mode="lines+markers",
            name=f"{network_title(network)} (end of training)", line=dict(color=color, dash="dot"),
            marker=dict(symbol="circle-open"),
            hovertemplate="%{x:.3g}% left: %{y:.2f}% at the end<extra></extra>"))
    return figure


def early_stop_iterations(rounds_by_network: dict[str, list[dict]]) -> go.Figure:
    figure = go.Figure(layout=_layout("Early-stopping iteration vs. sparsity", xaxis=_remaining_axis(),
                                      yaxis=dict(title="early-stop iteration (min. validation loss)", rangemode="tozero")))
    for network, rows in rounds_by_network.items():
        rows = [row for row in rows if row["status"] == "finished"]
        if rows:
            figure.add_trace(go.Scatter(
                x=[_percent(row["remaining_fraction"]) for row in rows], y=[row["early_stop_iteration"] for row in rows],
                mode="lines+markers", name=network_title(network), line=dict(color=NETWORK_COLORS.get(network))))
    return figure


def curve_trace_name(network: str, round_index: int, remaining_fraction: float | None = None) -> str:
    name = f"round {round_index}" if network == TICKET else f"{network_title(network)}, round {round_index}"
    return name if remaining_fraction is None else f"{name} ({100 * remaining_fraction:.3g}%)"


def training_curves(curves: list[dict], remaining_by_round: dict[int, float] | None = None,
                    metric: str = "val_accuracy") -> go.Figure:
    """Validation accuracy (or another eval metric) against iteration, one line per round, darker = sparser."""
    remaining_by_round = remaining_by_round or {}
    titles = {"val_accuracy": "validation accuracy (%)", "test_accuracy": "test accuracy (%)"}
    figure = go.Figure(layout=_layout("Training curves per round", xaxis=dict(title="iteration"),
                                      yaxis=dict(title=titles.get(metric, metric))))
    count = max(1, len(curves) - 1)
    for position, curve in enumerate(curves):
        shade = 0.25 + 0.75 * position / count
        figure.add_trace(go.Scatter(
            x=curve["evals"]["iteration"], y=[_percent(v) for v in curve["evals"][metric]], mode="lines+markers",
            name=curve_trace_name(curve["network"], curve["round"], remaining_by_round.get(curve["round"])),
            line=dict(color=f"rgba(31, 119, 180, {shade:.2f})")))
    return figure


def live_figures(curves: list[dict], planned: list[tuple[str, int]] = ()) -> dict[str, go.Figure]:
    """The live page's two charts, with one (maybe still empty) line per planned training.

    Each trace's `meta` is "network:round", which is all the page's script needs to append points.
    Lines without points stay out of the legend until their first point arrives.
    """
    accuracy = go.Figure(layout=_layout("Validation accuracy (live)", xaxis=dict(title="iteration"),
                                        yaxis=dict(title="validation accuracy (%)"), uirevision="live"))
    loss = go.Figure(layout=_layout("Training loss (live)", xaxis=dict(title="iteration"),
                                    yaxis=dict(title="train loss", type="log"), uirevision="live"))
    by_key = {(curve["network"], curve["round"]): curve for curve in curves}
    keys = list(planned) + [key for key in by_key if key not in planned]
    for network, round_index in keys:
        curve = by_key.get((network, round_index))
        evals = curve["evals"] if curve else {"iteration": [], "val_accuracy": []}
        train_loss = curve["train_loss"] if curve else {"iteration": [], "loss": []}
        common = dict(name=curve_trace_name(network, round_index), meta=f"{network}:{round_index}")
        color = NETWORK_COLORS.get(network)
        accuracy.add_trace(go.Scatter(x=evals["iteration"], y=[_percent(v) for v in evals["val_accuracy"]],
                                      mode="lines+markers", line=dict(color=color),
                                      showlegend=bool(evals["iteration"]), **common))
        loss.add_trace(go.Scatter(x=train_loss["iteration"], y=train_loss["loss"], mode="lines",
                                  line=dict(color=color), showlegend=bool(train_loss["iteration"]), **common))
    return {"accuracy": accuracy, "loss": loss}


# ---- masks ----------------------------------------------------------------------------------

def _downsample(fraction_grid: torch.Tensor, max_rows: int, max_columns: int) -> torch.Tensor:
    """Mean over blocks, so a cell shows the fraction of survivors it covers."""
    rows, columns = fraction_grid.shape
    target = (min(rows, max_rows), min(columns, max_columns))
    if target == (rows, columns):
        return fraction_grid
    return F.adaptive_avg_pool2d(fraction_grid[None, None], target)[0, 0]


def mask_grid(mask: torch.Tensor) -> tuple[torch.Tensor, str, str]:
    """A layer's mask as a 2-D grid of survivor fractions, with axis titles.

    Fully connected: the out×in mask itself. Conv: one cell per (filter, input channel) holding the
    fraction of that kernel's weights that survive.
    """
    values = mask.float()
    if values.dim() == 2:
        return values, "output unit", "input unit"
    if values.dim() == 4:
        return values.mean(dim=(2, 3)), "filter (output channel)", "input channel"
    return values.reshape(values.shape[0], -1), "output", "input"


def mask_heatmap(name: str, mask: torch.Tensor, round_index: int) -> go.Figure:
    grid, y_title, x_title = mask_grid(mask)
    rows, columns = grid.shape
    small = _downsample(grid, HEATMAP_MAX_ROWS, HEATMAP_MAX_COLUMNS)
    # Cell centres in the layer's own units, so hovering names real units even after downsampling.
    x = [(index + 0.5) * columns / small.shape[1] for index in range(small.shape[1])]
    y = [(index + 0.5) * rows / small.shape[0] for index in range(small.shape[0])]
    remaining = 100.0 * float(mask.float().mean())
    shape = " × ".join(str(size) for size in mask.shape)
    figure = go.Figure(
        go.Heatmap(z=small.round(decimals=3).tolist(), x=x, y=y, zmin=0, zmax=1, colorscale="Viridis",
                   colorbar=dict(title="kept", thickness=12),
                   hovertemplate=f"{y_title} %{{y:.0f}}, {x_title} %{{x:.0f}}: %{{z:.0%}} kept<extra></extra>"),
        layout=_layout(f"{name} ({shape}), round {round_index}: {remaining:.3g}% kept",
                       xaxis=dict(title=x_title), yaxis=dict(title=y_title, autorange="reversed"), height=320))
    return figure


def input_pixel_image(mask: torch.Tensor, image_shape: tuple[int, int], round_index: int) -> go.Figure:
    """Surviving weights leaving each input pixel of a first fully connected layer, as an image."""
    counts = mask.sum(dim=0).reshape(image_shape)
    units = mask.shape[0]
    figure = go.Figure(
        go.Heatmap(z=counts.tolist(), zmin=0, zmax=units, colorscale="Viridis",
                   colorbar=dict(title="weights", thickness=12),
                   hovertemplate="pixel (%{y}, %{x}): %{z} of " + str(units) + " weights kept<extra></extra>"),
        layout=_layout(f"Surviving input weights per pixel, round {round_index}",
                       xaxis=dict(scaleanchor="y", constrain="domain", showticklabels=False),
                       yaxis=dict(autorange="reversed", constrain="domain", showticklabels=False),
                       height=320, margin=dict(l=20, r=20, t=50, b=20)))
    return figure


def mask_figures(masks: dict[str, torch.Tensor], round_index: int,
                 input_shape: tuple[int, int, int] | None) -> list[dict]:
    """[{id, title, figure}] for one round: the per-pixel image (MNIST-shaped first FC layer), then each layer."""
    found = []
    names = list(masks)
    if names and input_shape is not None:
        first = masks[names[0]]
        channels, height, width = input_shape
        if channels == 1 and first.dim() == 2 and first.shape[1] == height * width:
            found.append({"id": "mask-input-pixels", "title": "input pixels",
                          "figure": input_pixel_image(first, (height, width), round_index)})
    for index, name in enumerate(names):
        found.append({"id": f"mask-layer-{index}", "title": name, "figure": mask_heatmap(name, masks[name], round_index)})
    return found


def figures_payload(items: list[dict]) -> str:
    """JSON for the mask endpoint: the figures embedded as plotly JSON objects."""
    return json.dumps([{"id": item["id"], "title": item["title"],
                        "figure": json.loads(plotly.io.to_json(item["figure"], validate=False))} for item in items])
