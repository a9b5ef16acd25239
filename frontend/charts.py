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

NETWORK_COLORS = {TICKET: "#1f77b4", "random_reinit": "#d62728", "random_reinit_from_scratch": "#ff7f0e",
                  "random_prune": "#2ca02c"}
NETWORK_TITLES = {TICKET: "winning ticket", "random_reinit": "random reinit", "random_reinit_from_scratch":
                  "random reinit from scratch", "random_prune": "random prune"}
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


def sparsity_vs_accuracy(rounds_by_network: dict[str, list[dict]], bands: dict[str, list[dict]] | None = None
                         ) -> go.Figure:
    """Test accuracy at early stop (solid) and at the end of training (dotted) against % weights remaining.

    With replicates (`bands`, from queries.replicate_bands) each network is drawn as the mean across
    replicates with a shaded min-max band instead of one run's line."""
    figure = go.Figure(layout=_layout("Test accuracy vs. sparsity", xaxis=_remaining_axis(),
                                      yaxis=dict(title="test accuracy (%)")))
    if bands:
        for network, rows in bands.items():
            _add_band(figure, network, rows)
        return figure
    for network, rows in rounds_by_network.items():
        rows = [row for row in rows if row["status"] == "finished"]
        if not rows:
            continue
        color = NETWORK_COLORS.get(network)
        x = [_percent(row["remaining_fraction"]) for row in rows]
        if all(row["early_stop_iteration"] is None for row in rows):
            # No validation split: nothing is early-stopped, the end-of-training line below is the result.
            figure.add_trace(go.Scatter(
                x=x, y=[_percent(row["final_test_accuracy"]) for row in rows], mode="lines+markers",
                name=f"{network_title(network)} (end of training, no early stop)", line=dict(color=color)))
            continue
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


def _rgba(hex_color: str | None, alpha: float) -> str:
    hex_color = (hex_color or "#7f7f7f").lstrip("#")
    red, green, blue = (int(hex_color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red}, {green}, {blue}, {alpha})"


def _min_max_band(x: list, bands: list[dict], fillcolor: str, name: str, meta: str, **options) -> go.Scatter:
    """A shaded area between each point's min and max (max left to right, then min back)."""
    return go.Scatter(x=x + x[::-1], y=[_percent(b["max"]) for b in bands] + [_percent(b["min"]) for b in bands][::-1],
                      mode="lines", fill="toself", fillcolor=fillcolor, line=dict(width=0), hoverinfo="skip",
                      name=name, meta=meta, **options)


def _add_band(figure: go.Figure, network: str, rows: list[dict]) -> None:
    """Mean early-stop accuracy across replicates with its min-max band, and the mean at the end (dotted)."""
    color = NETWORK_COLORS.get(network)
    x = [_percent(row["remaining_fraction"]) for row in rows]
    early = [row["reported"] for row in rows]
    count = max(row["replicates"] for row in rows)
    title = network_title(network)
    figure.add_trace(_min_max_band(x, early, _rgba(color, 0.18), f"{title} min–max of {count} replicates",
                                   f"band:{network}", legendgroup=network))
    figure.add_trace(go.Scatter(
        x=x, y=[_percent(b["mean"]) for b in early], mode="lines+markers", legendgroup=network,
        name=f"{title} ({rows[0].get('point', 'early stop')}, mean of {count})", line=dict(color=color), meta=f"mean:{network}",
        customdata=[[row["round"], 100 * b["std"], 100 * b["min"], 100 * b["max"], b["count"]]
                    for row, b in zip(rows, early)],
        hovertemplate=("round %{customdata[0]}: %{x:.3g}% left, mean %{y:.2f}% ± %{customdata[1]:.2f} "
                       "(min %{customdata[2]:.2f}, max %{customdata[3]:.2f}, n=%{customdata[4]})<extra></extra>")))
    final = [(x_value, row["final"]) for x_value, row in zip(x, rows) if row["final"]]
    figure.add_trace(go.Scatter(
        x=[x_value for x_value, _ in final], y=[_percent(b["mean"]) for _, b in final], mode="lines+markers",
        legendgroup=network, name=f"{title} (end of training, mean)", line=dict(color=color, dash="dot"),
        marker=dict(symbol="circle-open"), hovertemplate="%{x:.3g}% left: mean %{y:.2f}% at the end<extra></extra>"))


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


def curve_trace_name(network: str, round_index: int, remaining_fraction: float | None = None,
                     replicate: int = 0) -> str:
    name = f"round {round_index}" if network == TICKET else f"{network_title(network)}, round {round_index}"
    if replicate:
        name += f", replicate {replicate}"
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


def live_figures(curves: list[dict], planned: list[tuple[str, int, int]] = ()) -> dict[str, go.Figure]:
    """The live page's two charts, with one (maybe still empty) line per planned training
    (network, replicate, round).

    Each trace's `meta` is "network:replicate:round", all the page's script needs to append points.
    Lines without points stay out of the legend until their first point arrives.
    """
    accuracy = go.Figure(layout=_layout("Validation accuracy (live)", xaxis=dict(title="iteration"),
                                        yaxis=dict(title="validation accuracy (%)"), uirevision="live"))
    loss = go.Figure(layout=_layout("Training loss (live)", xaxis=dict(title="iteration"),
                                    yaxis=dict(title="train loss", type="log"), uirevision="live"))
    by_key = {(curve["network"], curve.get("replicate", 0), curve["round"]): curve for curve in curves}
    keys = list(planned) + [key for key in by_key if key not in planned]
    for network, replicate, round_index in keys:
        curve = by_key.get((network, replicate, round_index))
        evals = curve["evals"] if curve else {"iteration": [], "val_accuracy": []}
        train_loss = curve["train_loss"] if curve else {"iteration": [], "loss": []}
        common = dict(name=curve_trace_name(network, round_index, replicate=replicate),
                      meta=f"{network}:{replicate}:{round_index}")
        # replicates share their network's colour, lighter the higher their number
        color = _rgba(NETWORK_COLORS.get(network), 1.0 / (1 + 0.5 * replicate))
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


# ---- analyses (trainer.analyses results) -------------------------------------------------------
# Each builder takes an analysis's stored result dict and returns [{id, caption, figure}]: the id is
# unique within the analysis, the caption one line saying what the chart shows.

ANALYSIS_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                    "#bcbd22", "#17becf"]
STABILITY_THRESHOLD = 0.02  # Frankle et al. 2020: stable when instability < 2%


def _color(index: int) -> str:
    return ANALYSIS_PALETTE[index % len(ANALYSIS_PALETTE)]


def _test_accuracy(record: dict | None, moment: str = "early_stop"):
    return _percent(((record or {}).get(moment) or {}).get("test_accuracy"))


def _finished(records) -> list[dict]:
    return [r for r in records or [] if r.get("status", "finished") == "finished" and r.get("remaining_fraction") is not None]


def _accuracy_figure(title: str, **layout) -> go.Figure:
    return go.Figure(layout=_layout(title, **{"xaxis": _remaining_axis(), "yaxis": dict(title="test accuracy (%)"),
                                              **layout}))


def _add_records(figure: go.Figure, records, name: str, color: str | None = None, dash: str | None = None,
                 value=_test_accuracy, symbol: str = "circle") -> None:
    """One line through records (round records of the engine): x = % of weights remaining."""
    rows = sorted(_finished(records), key=lambda r: -r["remaining_fraction"])
    if not rows:
        return
    figure.add_trace(go.Scatter(
        x=[_percent(r["remaining_fraction"]) for r in rows], y=[value(r) for r in rows], mode="lines+markers",
        name=name, line=dict(color=color, dash=dash), marker=dict(symbol=symbol),
        customdata=[[r.get("round")] for r in rows],
        hovertemplate=f"{name}, round %{{customdata[0]}}: %{{x:.3g}}% left, %{{y:.2f}}%<extra></extra>"))


def _label(text: str) -> str:
    return text.replace("_", " ")


def retraining_figures(result: dict) -> list[dict]:
    figure = _accuracy_figure("Retraining modes after pruning")
    dense = [result["dense"]] if result.get("dense") else []
    for index, (mode, records) in enumerate((result.get("modes") or {}).items()):
        _add_records(figure, dense + list(records), _label(mode), _color(index))
    if result.get("mask_chain") == "own":
        masks = ("each mode prunes its own retrained weights round after round, so each has its own masks "
                 "(Renda et al. 2020; weight rewinding's chain is the IMP run)")
    else:
        masks = "every mode retrains the IMP ticket's masks (not Renda et al.'s procedure, where each mode finds its own)"
    budget = result.get("retraining_iterations")
    return [{"id": "accuracy", "figure": figure,
             "caption": "Test accuracy at early stop against % of weights remaining, one line per retraining mode, "
                        f"all from the dense round 0: {masks}; each mode retrains "
                        + (f"{budget} iterations per round." if budget else "the same iterations k..T per round.")}]


def connectivity_figures(result: dict) -> list[dict]:
    threshold = result.get("stability_threshold", STABILITY_THRESHOLD)
    curves = go.Figure(layout=_layout("Linear interpolation between the two copies",
                                               xaxis=dict(title="α  (θ = (1−α)·θA + α·θB)", range=[0, 1]),
                                               yaxis=dict(title="test error (%)")))
    for index, curve in enumerate(result.get("curves") or []):
        if not curve.get("alpha"):
            continue
        instability = curve.get("instability")
        name = f"k = {curve['rewind_iteration']} it" + (f" (instability {100 * instability:.2f}%)"
                                                       if instability is not None else "")
        curves.add_trace(go.Scatter(x=curve["alpha"], y=[_percent(v) for v in curve["test_error"]],
                                    mode="lines+markers", name=name, line=dict(color=_color(index)),
                                    hovertemplate="α=%{x:.2f}: %{y:.2f}% error<extra></extra>"))
    by_k = result.get("instability_vs_k") or {}
    ks, values = by_k.get("rewind_iteration") or [], by_k.get("instability") or []
    instability = go.Figure(layout=_layout("Instability vs. rewind iteration k",
                                           xaxis=dict(title="rewind iteration k"),
                                           yaxis=dict(title="instability (%)", rangemode="tozero")))
    instability.add_trace(go.Scatter(
        x=ks, y=[_percent(v) for v in values], mode="lines+markers", name="instability",
        marker=dict(size=9, color=["#2ca02c" if s else "#d62728" for s in by_k.get("stable") or []] or None),
        hovertemplate="k=%{x}: %{y:.2f}%<extra></extra>"))
    instability.add_hline(y=100 * threshold, line=dict(color="#7f7f7f", dash="dash"),
                          annotation_text=f"stable below {100 * threshold:.0f}%", annotation_position="top left")
    where = "the dense network" if not result.get("round") else f"round {result['round']}'s ticket"
    return [
        {"id": "interpolation", "figure": curves,
         "caption": f"Test error along the straight line between two copies of {where} trained from θk with "
                    f"different data orders, one line per k."},
        {"id": "instability", "figure": instability,
         "caption": "Instability (max error on the path minus the mean of its ends) against k; under the dashed "
                    f"{100 * threshold:.0f}% line the copies are linearly connected (stable)."},
    ]


def _variant_name(key: str, entry: dict) -> str:
    variant = entry.get("variant") or {}
    parts = [variant.get("criterion", key)]
    if variant.get("reinit") and variant["reinit"] != "rewind":
        parts.append(variant["reinit"])
    if variant.get("masked_weights") and variant["masked_weights"] != "zero":
        parts.append(f"pruned {variant['masked_weights']}")
    if variant.get("structure") == "units":
        parts = [f"units by {variant.get('norm', '')}"]
    return _label(", ".join(parts))


def _supermask_accuracy(record: dict):
    return _percent(record.get("supermask_test_accuracy"))


def masking_criteria_figures(result: dict) -> list[dict]:
    accuracy = _accuracy_figure("Masking criteria: trained accuracy")
    supermask = _accuracy_figure("Supermask score: masked θ0, no training",
                                 yaxis=dict(title="untrained masked test accuracy (%)"))
    dense = [r for r in result.get("ticket") or [] if r.get("round") == 0]
    for index, (key, entry) in enumerate((result.get("variants") or {}).items()):
        name = _variant_name(key, entry)
        _add_records(accuracy, dense + list(entry.get("rounds") or []), name, _color(index))
        _add_records(supermask, dense + list(entry.get("rounds") or []), name, _color(index), value=_supermask_accuracy)
    return [
        {"id": "accuracy", "figure": accuracy,
         "caption": "Test accuracy at early stop against % of weights remaining, one line per masking variant "
                    "(criterion, survivor re-initialisation, what pruned weights hold)."},
        {"id": "supermask", "figure": supermask,
         "caption": "Supermask score: test accuracy of each variant's mask on θ0 (survivors re-initialised as the "
                    "variant says; pruned weights zero, or at their θ0 values when frozen) with no training at all."},
    ]


def pruning_at_init_figures(result: dict) -> list[dict]:
    figure = _accuracy_figure("Pruning at initialisation vs. IMP")
    _add_records(figure, result.get("imp"), "IMP (this run)", "#000000", dash="dash", symbol="diamond")
    for index, (method, records) in enumerate((result.get("methods") or {}).items()):
        _add_records(figure, records, _label(method), _color(index))
    return [{"id": "accuracy", "figure": figure,
             "caption": "Test accuracy at early stop against % of weights remaining for masks chosen at θ0 "
                        "(then trained), one line per method, with this run's IMP tickets dashed."}]


def pruning_at_init_warnings(result: dict) -> list[str]:
    """'snip at 0.8% of weights: fc1.weight, fc2.weight' for every mask that removed whole layers."""
    warnings = []
    for method, records in (result.get("methods") or {}).items():
        for record in records or []:
            if record.get("collapsed_layers"):
                warnings.append(f"{_label(method)} at {100 * record['remaining_fraction']:.3g}% of weights "
                                f"(round {record.get('round')}): {', '.join(record['collapsed_layers'])} collapsed "
                                f"(no weights left)")
    return warnings


def early_bird_figures(result: dict) -> list[dict]:
    epochs = result.get("epochs") or []
    matrix = result.get("distance_matrix") or []
    found = result.get("early_bird_epoch")
    heatmap = go.Figure(
        go.Heatmap(z=matrix, x=epochs, y=epochs, zmin=0, colorscale="Viridis", colorbar=dict(title="distance", thickness=12),
                   hovertemplate="epochs %{y} and %{x}: %{z:.3f}<extra></extra>"),
        layout=_layout("Channel-mask distance between epochs" + (
            f": early bird at epoch {found} ({100 * result['search_fraction_at_early_bird']:.0f}% of the search)"
            if found and result.get("search_fraction_at_early_bird") else
            f": early bird at epoch {found}" if found else ": no early bird found"),
                       xaxis=dict(title="epoch", dtick=max(1, len(epochs) // 10)),
                       yaxis=dict(title="epoch", autorange="reversed", dtick=max(1, len(epochs) // 10))))
    if found is not None:
        heatmap.add_vline(x=found, line=dict(color="#ff4136", width=2, dash="dash"))
        heatmap.add_hline(y=found, line=dict(color="#ff4136", width=2, dash="dash"))
        heatmap.add_annotation(x=found, y=found, text=f"early bird: epoch {found}", showarrow=True, arrowcolor="#ff4136",
                               font=dict(color="#ff4136"), bgcolor="white")
    bars = []
    ticket = result.get("ticket") or {}
    if ticket.get("status") == "finished":
        bars.append(("early-bird ticket", ticket, "#ff7f0e"))
    if (result.get("one_shot_imp") or {}).get("status") == "finished":
        bars.append(("one-shot IMP ticket", result["one_shot_imp"], "#1f77b4"))
    if result.get("imp"):
        bars.append((f"IMP round {result['imp'].get('round')} (this run)", result["imp"], "#7f7f7f"))
    comparison = go.Figure(layout=_layout("Early-bird ticket vs. IMP ticket", yaxis=dict(title="test accuracy (%)"),
                                          xaxis=dict(title=""), showlegend=False))
    comparison.add_trace(go.Bar(
        x=[f"{name}<br>{100 * record.get('remaining_fraction', 0):.3g}% of weights" for name, record, _ in bars],
        y=[_test_accuracy(record) for _, record, _ in bars], marker=dict(color=[color for *_, color in bars]),
        text=[f"{_test_accuracy(record):.1f}%" if _test_accuracy(record) is not None else "" for _, record, _ in bars],
        textposition="auto", hovertemplate="%{x}: %{y:.2f}%<extra></extra>"))
    return [
        {"id": "distances", "figure": heatmap,
         "caption": "Normalised Hamming distance between the batch-norm channel masks of every two epochs; the "
                    f"early-bird epoch (dashed) is where the last {result.get('window')} consecutive distances fall "
                    f"under {result.get('threshold')}."},
        {"id": "comparison", "figure": comparison,
         "caption": "Test accuracy at early stop of the early-bird ticket trained from θ0, beside a one-shot IMP "
                    "ticket at the same sparsity and this run's nearest IMP round. % of weights counts only weights "
                    "that can carry signal: a pruned channel also removes the next layer's weights reading it."},
    ]


def _cost_percent(record: dict, kind: str, measure: str):
    costs = record.get("costs") or {}
    dense = (costs.get("dense") or {}).get(measure)
    value = (costs.get(kind) or {}).get(measure)
    return None if not dense or value is None else 100.0 * value / dense


def structured_pruning_figures(result: dict) -> list[dict]:
    accuracy = _accuracy_figure("Structured pruning: accuracy")
    costs = go.Figure(layout=_layout("What is left: parameters and FLOPs", xaxis=_remaining_axis(),
                                     yaxis=dict(title="% of the dense network", rangemode="tozero")))
    ticket = result.get("ticket") or []
    dense = [r for r in ticket if r.get("round") == 0]
    _add_records(accuracy, ticket, "unstructured IMP (this run)", "#000000", dash="dash", symbol="diamond")
    for index, (key, entry) in enumerate((result.get("variants") or {}).items()):
        name, color = _variant_name(key, entry), _color(index)
        records = dense + list(entry.get("rounds") or [])
        _add_records(accuracy, records, name, color)
        _add_records(costs, records, f"{name}: parameters (shrunk)", color,
                     value=lambda r: _cost_percent(r, "effective", "parameters"))
        _add_records(costs, records, f"{name}: FLOPs (shrunk)", color, dash="dot", symbol="square",
                     value=lambda r: _cost_percent(r, "effective", "macs"))
        _add_records(costs, records, f"{name}: effective parameters", color, dash="dash", symbol="circle-open",
                     value=lambda r: _cost_percent(r, "masked", "parameters"))
    return [
        {"id": "accuracy", "figure": accuracy,
         "caption": "Test accuracy at early stop against % of weights remaining when whole neurons/filters are "
                    "pruned by norm, beside this run's unstructured tickets (dashed)."},
        {"id": "costs", "figure": costs,
         "caption": "Parameters and FLOPs (multiply-adds) left as % of dense: shrunk = the dense network of the "
                    "live units; effective parameters = the surviving weights (unmasked, between two live units) "
                    "with the live units' biases and batch norms."},
    ]


def transfer_figures(result: dict) -> list[dict]:
    source = (result.get("source") or {}).get("dataset", "the source")
    target = (result.get("target_dataset") or {}).get("name", "the target")
    figure = _accuracy_figure(f"Ticket transfer: {source} → {target}")
    _add_records(figure, result.get("transfer"), f"ticket from {source}, trained on {target}", "#1f77b4")
    for index, (kind, records) in enumerate((result.get("controls") or {}).items()):
        _add_records(figure, records, f"{_label(kind)} (control)", _color(index + 3), dash="dot")
    found_on_target = result.get("target") or {}
    if found_on_target.get("rounds"):
        _add_records(figure, found_on_target["rounds"], f"ticket found on {found_on_target.get('dataset', target)}",
                     "#2ca02c", dash="dash", symbol="diamond")
        for index, (kind, records) in enumerate((found_on_target.get("controls") or {}).items()):
            _add_records(figure, records, f"{_label(kind)} found on {found_on_target.get('dataset', target)}",
                         _color(index + 6), dash="dashdot", symbol="diamond-open")
    return [{"id": "accuracy", "figure": figure,
             "caption": f"Test accuracy at early stop on {target} against % of weights remaining: the tickets "
                        f"found on {source}, beside controls and (when a target run is chosen) tickets found on {target}."}]


ANALYSIS_FIGURES = {
    "retraining": retraining_figures, "connectivity": connectivity_figures, "transfer": transfer_figures,
    "masking_criteria": masking_criteria_figures, "pruning_at_init": pruning_at_init_figures,
    "early_bird": early_bird_figures, "structured_pruning": structured_pruning_figures,
}
ANALYSIS_WARNINGS = {"pruning_at_init": pruning_at_init_warnings}


def analysis_figures(name: str, result: dict, imp_band: list[dict] | None = None) -> list[dict]:
    """The analysis's charts. Analyses branch off replicate 0; with replicates, `imp_band` (the
    ticket's rows of queries.replicate_bands) shades the IMP ticket's min-max across replicates
    behind every accuracy-vs-sparsity chart, so a single-seed difference can be read against it."""
    builder = ANALYSIS_FIGURES.get(name)
    items = builder(result) if builder and result else []
    if imp_band:
        for item in items:
            if item["figure"].layout.xaxis.title.text == _remaining_axis()["title"]:
                _add_imp_band(item["figure"], imp_band)
    return items


def _add_imp_band(figure: go.Figure, rows: list[dict]) -> None:
    x = [_percent(row["remaining_fraction"]) for row in rows]
    early = [row["reported"] for row in rows]
    count = max(row["replicates"] for row in rows)
    figure.add_trace(_min_max_band(x, early, "rgba(0, 0, 0, 0.08)", f"IMP ticket, min–max of {count} replicates",
                                   "band:imp"))
    figure.data = (figure.data[-1],) + figure.data[:-1]  # underneath the lines


def analysis_warnings(name: str, result: dict) -> list[str]:
    builder = ANALYSIS_WARNINGS.get(name)
    return builder(result) if builder and result else []


def compare_sparsity_vs_accuracy(series: list[dict]) -> go.Figure:
    """Experiments side by side: each one's ticket (early-stop test accuracy vs % remaining), as the mean
    with its min-max band when it has replicates. `series`: [{label, rounds, band}] (band may be None)."""
    figure = go.Figure(layout=_layout("Test accuracy vs. sparsity (compared)", xaxis=_remaining_axis(),
                                      yaxis=dict(title="test accuracy at early stop (%)")))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for index, item in enumerate(series):
        color = palette[index % len(palette)]
        if item.get("band"):
            rows = item["band"]
            x = [_percent(row["remaining_fraction"]) for row in rows]
            early = [row["reported"] for row in rows]
            figure.add_trace(_min_max_band(x, early, _rgba(color, 0.15), item["label"], f"band:{item['label']}",
                                           legendgroup=item["label"], showlegend=False))
            y = [_percent(b["mean"]) for b in early]
            name = f"{item['label']} (mean of {max(row['replicates'] for row in rows)})"
        else:
            rows = [row for row in item["rounds"] if row["status"] == "finished"]
            x = [_percent(row["remaining_fraction"]) for row in rows]
            y = [_percent(row["reported_test_accuracy"]) for row in rows]
            name = item["label"]
        figure.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, line=dict(color=color),
                                    legendgroup=item["label"], meta=f"experiment:{item['id']}",
                                    hovertemplate="%{x:.3g}% left: %{y:.2f}%<extra>" + item["label"] + "</extra>"))
    return figure


def reproduction_chart(chart: dict) -> go.Figure:
    """A reproduction check's chart as trainer.reproduce describes it: one line per series, its axis
    labels, a log x axis when the check asks for one. Missing points (null) stay gaps."""
    xaxis = dict(title=chart.get("x_label", ""))
    if chart.get("log_x"):
        xaxis.update(type="log", tickformat=".3~g")
    figure = go.Figure(layout=_layout(chart.get("title", ""), xaxis=xaxis, yaxis=dict(title=chart.get("y_label", "")),
                                      height=340))
    for index, series in enumerate(chart.get("series", [])):
        figure.add_trace(go.Scatter(x=series.get("x", []), y=series.get("y", []), mode="lines+markers",
                                    name=series.get("name", f"series {index + 1}"), line=dict(color=_color(index))))
    return figure
