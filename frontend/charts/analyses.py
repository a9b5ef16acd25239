"""Charts of the analyses (trainer.analyses): one builder per study, found in `BUILDERS` by the name its
registry entry gives (`Analysis.chart`). A builder takes the analysis's stored result and returns
[{id, caption, figure}]: the id is unique within the analysis, the caption one line saying what the chart
shows. The papers behind each study are cited in its trainer.analyses module.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import plotly.graph_objects as go

from frontend.charts.base import (
    as_percent,
    figure_layout,
    min_max_band,
    palette_color,
    remaining_axis,
)
from frontend.charts.runs import metric_axis
from frontend.metric_display import axis_title, shown
from trainer import tasks
from trainer.analyses.transfer import training_label
from trainer.tasks import ACCURACY, Metric

STABILITY_THRESHOLD = 0.02  # Frankle et al. 2020: stable when instability < 2%


def _test_accuracy(record: dict | None, moment: str = "early_stop"):
    return as_percent(((record or {}).get(moment) or {}).get("test_accuracy"))


def _finished(records) -> list[dict]:
    return [r for r in records or []
            if r.get("status", "finished") == "finished" and r.get("remaining_fraction") is not None]


def _accuracy_figure(title: str, **layout) -> go.Figure:
    return go.Figure(layout=figure_layout(title, **{"xaxis": remaining_axis(), "yaxis": dict(title="test accuracy (%)"),
                                              **layout}))


def _line_rows(records) -> list[dict]:
    """The finished records in the order their line is drawn: densest first."""
    return sorted(_finished(records), key=lambda r: -r["remaining_fraction"])


def _add_records(figure: go.Figure, records, name: str, color: str | None = None, dash: str | None = None,
                 value=_test_accuracy, symbol: str = "circle", unit: str = "%") -> None:
    """One line through records (round records of the engine): x = % of weights remaining."""
    rows = _line_rows(records)
    if not rows:
        return
    figure.add_trace(go.Scatter(
        x=[as_percent(r["remaining_fraction"]) for r in rows], y=[value(r) for r in rows], mode="lines+markers",
        name=name, line=dict(color=color, dash=dash), marker=dict(symbol=symbol),
        customdata=[[r.get("round")] for r in rows],
        hovertemplate=f"{name}, round %{{customdata[0]}}: %{{x:.3g}}% left, %{{y:.2f}}{unit}<extra></extra>"))


def _label(text: str) -> str:
    return text.replace("_", " ")


def _records_metric(records) -> Metric:
    """The task's metric of engine round records (accuracy for image classifiers)."""
    return next((tasks.metric_of(record.get("final") or {}) for record in records if record.get("final")), ACCURACY)


def retraining_figures(result: dict) -> list[dict]:
    dense = [result["dense"]] if result.get("dense") else []
    modes = result.get("modes") or {}
    metric = _records_metric(dense + [record for records in modes.values() for record in records])
    figure = _accuracy_figure("Retraining modes after pruning", yaxis=metric_axis(axis_title("test", metric), metric))
    key = f"test_{metric.key}"
    value = lambda record: shown(((record or {}).get("early_stop") or {}).get(key), metric)  # noqa: E731
    drawn: dict[str, list] = {}  # label -> the (x, y) points of its line
    coinciding = []
    for index, (mode, records) in enumerate(modes.items()):
        points = [(r["remaining_fraction"], value(r)) for r in _line_rows(dense + list(records))]
        # A mode whose numbers equal an earlier one's would hide under it (with a constant learning rate,
        # learning-rate rewinding and fine-tuning are one procedure): dashed, and named as the same.
        twin = next((label for label, other in drawn.items() if other == points and len(points) > 1), None)
        name = _label(mode) if twin is None else f"{_label(mode)} (= {twin})"
        if twin is not None:
            same_procedure = {_label(mode), twin} == {"lr rewinding", "fine tuning"}
            coinciding.append(f" {_label(mode).capitalize()} and {twin} give the same numbers (dashed line, '=')"
                              + (": with a constant learning rate they are one procedure." if same_procedure else "."))
        _add_records(figure, dense + list(records), name, palette_color(index), dash=None if twin is None else "dash",
                     value=value, unit="%" if metric.percent else "")
        drawn[_label(mode)] = points
    if result.get("mask_chain") == "own":
        masks = ("each mode prunes its own retrained weights round after round, so each has its own masks "
                 "(Renda et al. 2020; weight rewinding's chain is the IMP run)")
    else:
        masks = ("every mode retrains the IMP ticket's masks "
                 "(not Renda et al.'s procedure, where each mode finds its own)")
    budget = result.get("retraining_iterations")
    return [{"id": "accuracy", "figure": figure,
             "caption": f"Test {metric.label} at early stop against % of weights remaining, one line per retraining "
                        "mode, "
                        f"all from the dense round 0: {masks}; each mode retrains "
                        + (f"{budget} iterations per round." if budget else "the same iterations k..T per round.")
                        + "".join(coinciding)}]


def connectivity_figures(result: dict) -> list[dict]:
    threshold = result.get("stability_threshold", STABILITY_THRESHOLD)
    curves = go.Figure(layout=figure_layout("Linear interpolation between the two copies",
                                               xaxis=dict(title="α  (θ = (1−α)·θA + α·θB)", range=[0, 1]),
                                               yaxis=dict(title="test error (%)")))
    for index, curve in enumerate(result.get("curves") or []):
        if not curve.get("alpha"):
            continue
        instability = curve.get("instability")
        name = f"k = {curve['rewind_iteration']} it" + (f" (instability {100 * instability:.2f}%)"
                                                       if instability is not None else "")
        curves.add_trace(go.Scatter(x=curve["alpha"], y=[as_percent(v) for v in curve["test_error"]],
                                    mode="lines+markers", name=name, line=dict(color=palette_color(index)),
                                    hovertemplate="α=%{x:.2f}: %{y:.2f}% error<extra></extra>"))
    by_k = result.get("instability_vs_k") or {}
    ks, values = by_k.get("rewind_iteration") or [], by_k.get("instability") or []
    instability = go.Figure(layout=figure_layout("Instability vs. rewind iteration k",
                                           xaxis=dict(title="rewind iteration k"),
                                           yaxis=dict(title="instability (%)", rangemode="tozero")))
    instability.add_trace(go.Scatter(
        x=ks, y=[as_percent(v) for v in values], mode="lines+markers", name="instability",
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
    return as_percent(record.get("supermask_test_accuracy"))


def masking_criteria_figures(result: dict) -> list[dict]:
    accuracy = _accuracy_figure("Masking criteria: trained accuracy")
    supermask = _accuracy_figure("Supermask score: masked θ0, no training",
                                 yaxis=dict(title="untrained masked test accuracy (%)"))
    dense = [r for r in result.get("ticket") or [] if r.get("round") == 0]
    for index, (key, entry) in enumerate((result.get("variants") or {}).items()):
        name = _variant_name(key, entry)
        _add_records(accuracy, dense + list(entry.get("rounds") or []), name, palette_color(index))
        _add_records(supermask, dense + list(entry.get("rounds") or []), name, palette_color(index),
                     value=_supermask_accuracy)
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
        _add_records(figure, records, _label(method), palette_color(index))
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
        go.Heatmap(z=matrix, x=epochs, y=epochs, zmin=0, colorscale="Viridis",
                   colorbar=dict(title="distance", thickness=12),
                   hovertemplate="epochs %{y} and %{x}: %{z:.3f}<extra></extra>"),
        layout=figure_layout("Channel-mask distance between epochs" + (
            f": early bird at epoch {found} ({100 * result['search_fraction_at_early_bird']:.0f}% of the search)"
            if found and result.get("search_fraction_at_early_bird") else
            f": early bird at epoch {found}" if found else ": no early bird found"),
                       xaxis=dict(title="epoch", dtick=max(1, len(epochs) // 10)),
                       yaxis=dict(title="epoch", autorange="reversed", dtick=max(1, len(epochs) // 10))))
    if found is not None:
        heatmap.add_vline(x=found, line=dict(color="#ff4136", width=2, dash="dash"))
        heatmap.add_hline(y=found, line=dict(color="#ff4136", width=2, dash="dash"))
        heatmap.add_annotation(x=found, y=found, text=f"early bird: epoch {found}", showarrow=True,
                               arrowcolor="#ff4136", font=dict(color="#ff4136"), bgcolor="white")
    bars = []
    ticket = result.get("ticket") or {}
    if ticket.get("status") == "finished":
        bars.append(("early-bird ticket", ticket, "#ff7f0e"))
    if (result.get("one_shot_imp") or {}).get("status") == "finished":
        bars.append(("one-shot IMP ticket", result["one_shot_imp"], "#1f77b4"))
    if result.get("imp"):
        bars.append((f"IMP round {result['imp'].get('round')} (this run)", result["imp"], "#7f7f7f"))
    comparison = go.Figure(layout=figure_layout("Early-bird ticket vs. IMP ticket",
                                                yaxis=dict(title="test accuracy (%)"), xaxis=dict(title=""),
                                                showlegend=False))
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
    costs = go.Figure(layout=figure_layout("What is left: parameters and FLOPs", xaxis=remaining_axis(),
                                     yaxis=dict(title="% of the dense network", rangemode="tozero")))
    ticket = result.get("ticket") or []
    dense = [r for r in ticket if r.get("round") == 0]
    _add_records(accuracy, ticket, "unstructured IMP (this run)", "#000000", dash="dash", symbol="diamond")
    for index, (key, entry) in enumerate((result.get("variants") or {}).items()):
        name, color = _variant_name(key, entry), palette_color(index)
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
    """Dataset transfer (labels name the datasets) or optimizer transfer (labels name the trainings too); results
    stored before optimizer transfer existed have no training fields and chart as dataset transfers."""
    source = (result.get("source") or {}).get("dataset", "the source")
    target = (result.get("target_dataset") or {}).get("name", "the target")
    found_on_target = result.get("target") or {}
    origin, trained, own = source, f"on {target}", f"on {found_on_target.get('dataset', target)}"
    source_training, target_training = result.get("source_training"), result.get("target_training")
    if target_training and target_training != source_training:
        origin += f" with {training_label(source_training)}"
        trained += f" with {training_label(target_training)}"
        own += f" with {found_on_target.get('optimizer', 'the target run')}"
    figure = _accuracy_figure(f"Ticket transfer: {origin} → {trained.removeprefix('on ')}")
    _add_records(figure, result.get("transfer"), f"ticket from {origin}, trained {trained}", "#1f77b4")
    for index, (kind, records) in enumerate((result.get("controls") or {}).items()):
        _add_records(figure, records, f"{_label(kind)} (control)", palette_color(index + 3), dash="dot")
    if found_on_target.get("rounds"):
        _add_records(figure, found_on_target["rounds"], f"ticket found {own}", "#2ca02c", dash="dash", symbol="diamond")
        for index, (kind, records) in enumerate((found_on_target.get("controls") or {}).items()):
            _add_records(figure, records, f"{_label(kind)} found {own}", palette_color(index + 6), dash="dashdot",
                         symbol="diamond-open")
    controls = ", ".join(_label(kind) for kind in result.get("controls") or {}) or "no control"
    return [{"id": "accuracy", "figure": figure,
             "caption": f"Test accuracy at early stop {trained} against % of weights remaining: the tickets found "
                        f"on {origin}, beside {controls} (a random ticket: a random mask of the ticket's per-layer "
                        "sparsity on a fresh init) and, when a target run is chosen, the target's own tickets."}]


def early_phase_figures(result: dict) -> list[dict]:
    accuracy = _accuracy_figure("Perturbed tickets at θk")
    _add_records(accuracy, result.get("ticket"), "ticket at θk (unperturbed)", "#000000", dash="dash", symbol="diamond")
    _add_records(accuracy, result.get("rewind_to_zero"), "rewind to 0 (k = 0)", "#7f7f7f", dash="dot", symbol="square")
    noise = go.Figure(layout=figure_layout("Gaussian noise at θk", xaxis=dict(title="α (noise std / layer's init std)"),
                                           yaxis=dict(title="test accuracy (%)")))
    noisy: dict[int, list] = {}
    index = 0
    for network, records in (result.get("perturbations") or {}).items():
        if records and records[0].get("alpha") is not None:
            for record in _finished(records):
                noisy.setdefault(record["round"], []).append((record["alpha"], _test_accuracy(record)))
            continue
        _add_records(accuracy, records, _label(network), palette_color(index))
        index += 1
    tickets = {r["round"]: r for r in _finished(result.get("ticket"))}
    zero = {r["round"]: r for r in _finished(result.get("rewind_to_zero"))}
    for position, (round_index, points) in enumerate(sorted(noisy.items())):
        color = palette_color(position)
        if round_index in tickets:
            points = [(0.0, _test_accuracy(tickets[round_index]))] + points
        points.sort()
        remaining = (tickets.get(round_index) or {}).get("remaining_fraction")
        name = f"round {round_index}" + (f" ({100 * remaining:.3g}% left)" if remaining is not None else "")
        noise.add_trace(go.Scatter(x=[alpha for alpha, _ in points], y=[value for _, value in points],
                                   mode="lines+markers", name=name, line=dict(color=color),
                                   hovertemplate=f"{name}, α=%{{x:.3g}}: %{{y:.2f}}%<extra></extra>"))
        if round_index in zero:
            level = _test_accuracy(zero[round_index])
            noise.add_trace(go.Scatter(x=[points[0][0], points[-1][0]], y=[level, level], mode="lines",
                                       name=f"{name}: rewind to 0", line=dict(color=color, dash="dot"),
                                       hovertemplate=f"{name}, rewind to 0: %{{y:.2f}}%<extra></extra>"))
    figures = [{"id": "accuracy", "figure": accuracy,
                "caption": "Test accuracy at early stop against % of weights remaining: each perturbation of the "
                           "ticket at θk trained k..T, beside the unperturbed ticket (dashed) and its mask rewound "
                           "to θ0 and trained from 0 (dotted)."}]
    if noisy:
        figures.append({"id": "noise", "figure": noise,
                        "caption": "Test accuracy at early stop against the noise scale α (std α × the layer's init "
                                   "std added to the survivors at θk; α = 0 is the unperturbed ticket), one line per "
                                   "round, with rewinding to 0 dotted."})
    return figures


def pretraining_figures(result: dict) -> list[dict]:
    accuracy = _accuracy_figure("IMP after dense pre-training")
    run_k, chain_k = result.get("run_rewind_iteration"), result.get("rewind_iteration")
    _add_records(accuracy, result.get("ticket"), f"the run's ticket (no pre-training, k = {run_k})", "#000000",
                 dash="dash", symbol="diamond")
    for index, chain in enumerate(result.get("chains") or []):
        name = f"{_label(chain['task'])}, t = {chain['pretrain_steps']} (k = {chain_k})"
        _add_records(accuracy, chain.get("rounds"), name, palette_color(index))
    return [{"id": "accuracy", "figure": accuracy,
             "caption": "Test accuracy at early stop against % of weights remaining: IMP chains started from θ0 "
                        "pre-trained densely for t iterations on random labels or rotation prediction, beside the "
                        "run's own ticket (dashed)."}]


def _reference_line(figure: go.Figure, value, name: str, color: str, dash: str) -> None:
    """A horizontal line across the whole x range (a dense network's or chance's accuracy)."""
    if value is None:
        return
    figure.add_trace(go.Scatter(x=[0, 1], y=[value, value], xaxis="x2", mode="lines", name=name,
                                line=dict(color=color, dash=dash, width=1.5),
                                hovertemplate=f"{name}: %{{y:.2f}}%<extra></extra>"))


def _with_reference_axis(figure: go.Figure) -> None:
    # reference lines live on a hidden [0, 1] axis so they span the chart whatever the data's x range
    figure.update_layout(xaxis2=dict(overlaying="x", range=[0, 1], visible=False))


def edge_popup_figures(result: dict) -> list[dict]:
    figure = go.Figure(layout=figure_layout("Edge-popup: subnetworks of random networks",
                                            xaxis=dict(title="k: % of each layer's weights used", range=[0, 100]),
                                            yaxis=dict(title="test accuracy (%)")))
    _with_reference_axis(figure)
    dense = {entry.get("width"): entry for entry in result.get("dense") or []}
    entries = [e for e in result.get("subnetworks") or [] if e.get("test_accuracy") is not None]
    for index, width in enumerate(sorted({e["width"] for e in entries} | set(dense))):
        color = palette_color(index)
        rows = sorted((e for e in entries if e["width"] == width), key=lambda e: e["kept_percent"])
        if rows:
            figure.add_trace(go.Scatter(
                x=[e["kept_percent"] for e in rows], y=[as_percent(e["test_accuracy"]) for e in rows],
                mode="lines+markers", name=f"edge-popup, width ×{width:g}", line=dict(color=color),
                customdata=[[e["weights_used"]] for e in rows],
                hovertemplate=f"width ×{width:g}, k=%{{x:g}}%: %{{y:.2f}}% "
                              "(%{customdata[0]:,} weights)<extra></extra>"))
        _reference_line(figure, _test_accuracy(dense.get(width), "final"), f"dense, width ×{width:g} (trained)",
                        color, "dash")
    _reference_line(figure, as_percent(result.get("chance")), "chance", "#7f7f7f", "dot")
    init = ((result.get("params") or {}).get("weight_init") or "").replace("_", " ")
    return [{"id": "accuracy", "figure": figure,
             "caption": f"Test accuracy of the top-k% subnetwork of a random network ({init} weights, frozen; only "
                        "scores trained) against k, one line per width, beside the trained dense network of each "
                        "width (dashed, end of training) and chance (dotted)."}]


def learned_supermask_figures(result: dict) -> list[dict]:
    entries = [e for e in result.get("masks") or [] if (e.get("sampled") or {}).get("test_accuracy") is not None]
    labels = [f"{_label(e['weights'])}<br>{100 * e['kept_fraction_expected']:.1f}% kept" for e in entries]
    figure = go.Figure(layout=figure_layout("Learned supermasks on frozen weights",
                                            yaxis=dict(title="test accuracy (%)"),
                                            xaxis=dict(title="frozen weights (expected % of weights kept)"),
                                            barmode="group"))
    figure.add_trace(go.Bar(
        x=labels, y=[as_percent(e["sampled"]["test_accuracy"]) for e in entries], name="sampled masks (mean)",
        error_y=dict(type="data", array=[as_percent(e["sampled"].get("test_accuracy_std")) for e in entries]),
        marker=dict(color=palette_color(0)), hovertemplate="%{x}: %{y:.2f}% (sampled)<extra></extra>"))
    figure.add_trace(go.Bar(
        x=labels, y=[as_percent(e["expected"]["test_accuracy"]) for e in entries], name="expected mask (w·σ(s))",
        marker=dict(color=palette_color(1)), hovertemplate="%{x}: %{y:.2f}% (expected mask)<extra></extra>"))
    _with_reference_axis(figure)
    _reference_line(figure, _test_accuracy(result.get("dense"), "final"), "dense (trained, the run's round 0)",
                    "#000000", "dash")
    _reference_line(figure, as_percent(result.get("chance")), "chance", "#7f7f7f", "dot")
    samples = (result.get("params") or {}).get("eval_samples")
    return [{"id": "accuracy", "figure": figure,
             "caption": f"Test accuracy of Bernoulli masks learned on the run's frozen weights: the mean (± std) over "
                        f"{samples} masks sampled from the learned probabilities (the paper's evaluation) and the "
                        "expected mask, beside the trained dense network and chance."}]


def malach_figures(result: dict) -> list[dict]:
    entries = sorted((e for e in result.get("approximation") or [] if e.get("test_mse") is not None),
                     key=lambda e: e["width"])
    items = []
    target = result.get("target") or {}
    if entries:
        widths = [e["width"] for e in entries]
        error = go.Figure(layout=figure_layout(
            "Approximating a trained target by pruning a random network",
            xaxis=dict(title="hidden width n", type="log"),
            yaxis=dict(title="test MSE of the logits (relative to the target's)"),
            yaxis2=dict(title="agreement with the target (%)", overlaying="y", side="right", range=[0, 100])))
        error.add_trace(go.Scatter(x=widths, y=[e["relative_mse"] for e in entries], mode="lines+markers",
                                   name="relative MSE", line=dict(color=palette_color(0)),
                                   customdata=[[e["test_mse"]] for e in entries],
                                   hovertemplate="n=%{x}: relative MSE %{y:.3f} "
                                                 "(MSE %{customdata[0]:.4g})<extra></extra>"))
        error.add_trace(go.Scatter(x=widths, y=[as_percent(e["agreement"]) for e in entries], yaxis="y2",
                                   mode="lines+markers", name="agreement (same predicted class)",
                                   line=dict(color=palette_color(1), dash="dash"),
                                   hovertemplate="n=%{x}: %{y:.2f}% agreement<extra></extra>"))
        depth, kept = entries[0]["depth"], entries[0]["kept_percent"]
        items.append({"id": "approximation", "figure": error,
                      "caption": f"Weight-subnetworks (top {kept:g}% per layer, weights frozen) of random "
                                 f"depth-{depth} nets trained to match a trained depth-{target.get('depth')} "
                                 "target's logits: test MSE relative to the target's mean square logit, and "
                                 "agreement, against width."})
    two_layer = [e for e in result.get("two_layer") or [] if e.get("test_accuracy") is not None]
    if two_layer:
        figure = go.Figure(layout=figure_layout("Two-layer random network: neuron vs weight subnetworks vs random "
                                                "features", xaxis=dict(title="hidden width n", type="log"),
                                                yaxis=dict(title="test accuracy (%)")))
        for index, model in enumerate(("neuron_subnetwork", "random_features", "weight_subnetwork")):
            rows = sorted((e for e in two_layer if e["model"] == model), key=lambda e: e["width"])
            if rows:
                figure.add_trace(go.Scatter(x=[e["width"] for e in rows],
                                            y=[as_percent(e["test_accuracy"]) for e in rows], mode="lines+markers",
                                            name=_label(model), line=dict(color=palette_color(index)),
                                            hovertemplate=f"{_label(model)}, n=%{{x}}: %{{y:.2f}}%<extra></extra>"))
        _with_reference_axis(figure)
        _reference_line(figure, as_percent(target.get("test_accuracy")), "target network (trained)", "#000000", "dash")
        _reference_line(figure, as_percent(result.get("chance")), "chance", "#7f7f7f", "dot")
        items.append({"id": "two_layer", "figure": figure,
                      "caption": "Test accuracy against hidden width of a random two-layer net pruned to whole units, "
                                 "with only its last layer trained (random features), or pruned to single weights."})
    return items


def weight_agnostic_figures(result: dict) -> list[dict]:
    figure = go.Figure(layout=figure_layout("Weight-agnostic: one shared weight value for every surviving weight",
                                            xaxis=dict(title="shared weight value w"),
                                            yaxis=dict(title="test accuracy (%)")))
    random = {entry["round"]: entry for entry in result.get("random") or []}
    for index, entry in enumerate(result.get("ticket") or []):
        color = palette_color(index)
        label = f"round {entry['round']} ({100 * entry['remaining_fraction']:.3g}% left)"
        for row, name, dash in ((entry, label, None), (random.get(entry["round"]), f"{label}: random mask", "dot")):
            if row is None:
                continue
            figure.add_trace(go.Scatter(
                x=row["weight_values"], y=[as_percent(a) for a in row["test_accuracy"]], mode="lines+markers",
                name=f"{name}, mean {as_percent(row['mean_accuracy']):.2f}%", line=dict(color=color, dash=dash),
                hovertemplate=f"{name}, w=%{{x:g}}: %{{y:.2f}}%<extra></extra>"))
    if not figure.data:
        return []
    _with_reference_axis(figure)
    _reference_line(figure, as_percent(result.get("chance")), "chance", "#7f7f7f", "dot")
    scale = "× each layer's init std " if (result.get("params") or {}).get("scale") == "init_std" else ""
    return [{"id": "accuracy", "figure": figure,
             "caption": f"Untrained test accuracy of each round's ticket mask (solid) and a random mask of the "
                        f"same per-layer sparsity (dotted) when every surviving weight is w {scale}with θ0's sign "
                        "and biases are 0, against w; the legend gives the mean over w (Gaier & Ha's score)."}]


@dataclass(frozen=True)
class StudyCharts:
    figures: Callable[[dict], list[dict]]  # result -> [{id, caption, figure}]
    warnings: Callable[[dict], list[str]] | None = None  # result -> lines shown above the charts


# Keyed by builder name, the `chart` of each study's registry entry (trainer.analyses.ANALYSES).
BUILDERS = {
    "retraining_figures": StudyCharts(retraining_figures),
    "connectivity_figures": StudyCharts(connectivity_figures),
    "transfer_figures": StudyCharts(transfer_figures),
    "masking_criteria_figures": StudyCharts(masking_criteria_figures),
    "pruning_at_init_figures": StudyCharts(pruning_at_init_figures, warnings=pruning_at_init_warnings),
    "early_bird_figures": StudyCharts(early_bird_figures),
    "structured_pruning_figures": StudyCharts(structured_pruning_figures),
    "edge_popup_figures": StudyCharts(edge_popup_figures),
    "learned_supermask_figures": StudyCharts(learned_supermask_figures),
    "early_phase_figures": StudyCharts(early_phase_figures),
    "weight_agnostic_figures": StudyCharts(weight_agnostic_figures),
    "malach_figures": StudyCharts(malach_figures),
    "pretraining_figures": StudyCharts(pretraining_figures),
}


def analysis_figures(chart: str, result: dict, imp_band: list[dict] | None = None) -> list[dict]:
    """The charts of an analysis's result, by builder name (`Analysis.chart`). Analyses branch off
    replicate 0; with replicates, `imp_band` (the ticket's rows of queries.replicate_bands) shades the IMP
    ticket's min-max across replicates behind every accuracy-vs-sparsity chart, so a single-seed
    difference can be read against it."""
    builder = BUILDERS.get(chart)
    items = builder.figures(result) if builder and result else []
    if imp_band:
        for item in items:
            if item["figure"].layout.xaxis.title.text == remaining_axis()["title"]:
                _add_imp_band(item["figure"], imp_band)
    return items


def _add_imp_band(figure: go.Figure, rows: list[dict]) -> None:
    x = [as_percent(row["remaining_fraction"]) for row in rows]
    early = [row["reported"] for row in rows]
    count = max(row["replicates"] for row in rows)
    figure.add_trace(min_max_band(x, early, "rgba(0, 0, 0, 0.08)", f"IMP ticket, min–max of {count} replicates",
                                   "band:imp"))
    figure.data = (figure.data[-1],) + figure.data[:-1]  # underneath the lines


def analysis_warnings(chart: str, result: dict) -> list[str]:
    builder = BUILDERS.get(chart)
    return builder.warnings(result) if builder and builder.warnings and result else []
