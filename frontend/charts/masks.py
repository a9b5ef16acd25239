"""Charts of one round's masks: a heatmap of survivors per layer, and for an MNIST-shaped first fully
connected layer the surviving weights per input pixel (Frankle & Carbin 2019, appendix figures)."""
from __future__ import annotations

import json

import plotly.graph_objects as go
import plotly.io
import torch
import torch.nn.functional as F

from frontend.charts.base import figure_layout

# Heatmaps are downsampled to at most this many cells a side (fraction of survivors per cell).
HEATMAP_MAX_ROWS = 100
HEATMAP_MAX_COLUMNS = 200


def _downsample(fraction_grid: torch.Tensor, max_rows: int, max_columns: int) -> torch.Tensor:
    """Mean over blocks, so a cell shows the fraction of survivors it covers."""
    rows, columns = fraction_grid.shape
    target = (min(rows, max_rows), min(columns, max_columns))
    if target == (rows, columns):
        return fraction_grid
    return F.adaptive_avg_pool2d(fraction_grid[None, None], target)[0, 0]


def _matrix_axes(name: str) -> tuple[str, str]:
    """(row, column) titles of a 2-D weight: a token embedding is vocabulary × dimension, an LSTM's gate
    weights stack the input, forget, cell and output gates (4 × hidden rows)."""
    last = name.rsplit(".", 2)
    if "embedding" in name:
        return "token", "embedding dimension"
    if last[-1].startswith("weight_ih"):
        return "gate unit (4 × hidden)", "input"
    if last[-1].startswith("weight_hh"):
        return "gate unit (4 × hidden)", "hidden unit"
    return "output unit", "input unit"


def mask_grid(mask: torch.Tensor, name: str = "") -> tuple[torch.Tensor, str, str]:
    """A layer's mask as a 2-D grid of survivor fractions, with axis titles.

    Fully connected, embeddings and recurrent weights: the matrix itself (downsampled when large). Conv:
    one cell per (filter, input channel) holding the fraction of that kernel's weights that survive.
    """
    values = mask.float()
    if values.dim() == 1:
        return values[None, :], "", "weight"
    if values.dim() == 2:
        return (values, *_matrix_axes(name))
    if values.dim() == 4:
        return values.mean(dim=(2, 3)), "filter (output channel)", "input channel"
    return values.reshape(values.shape[0], -1), "output", "input"


def mask_heatmap(name: str, mask: torch.Tensor, round_index: int) -> go.Figure:
    grid, y_title, x_title = mask_grid(mask, name)
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
        layout=figure_layout(f"{name} ({shape}), round {round_index}: {remaining:.3g}% kept",
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
        layout=figure_layout(f"Surviving input weights per pixel, round {round_index}",
                       xaxis=dict(scaleanchor="y", constrain="domain", showticklabels=False),
                       yaxis=dict(autorange="reversed", constrain="domain", showticklabels=False),
                       height=320, margin=dict(l=20, r=20, t=50, b=20)))
    return figure


def mask_figures(masks: dict[str, torch.Tensor], round_index: int,
                 input_shape: tuple[int, int, int] | None) -> list[dict]:
    """[{id, title, figure}] for one round: the per-pixel image (MNIST-shaped first FC layer), then each layer."""
    found = []
    names = list(masks)
    if names and input_shape is not None and len(input_shape) == 3:  # images only (not token contexts)
        first = masks[names[0]]
        channels, height, width = input_shape
        if channels == 1 and first.dim() == 2 and first.shape[1] == height * width:
            found.append({"id": "mask-input-pixels", "title": "input pixels",
                          "figure": input_pixel_image(first, (height, width), round_index)})
    for index, name in enumerate(names):
        found.append({"id": f"mask-layer-{index}", "title": name,
                      "figure": mask_heatmap(name, masks[name], round_index)})
    return found


def figures_payload(items: list[dict]) -> str:
    """JSON for the mask endpoint: the figures embedded as plotly JSON objects."""
    return json.dumps([{"id": item["id"], "title": item["title"],
                        "figure": json.loads(plotly.io.to_json(item["figure"], validate=False))} for item in items])
