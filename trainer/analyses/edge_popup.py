"""Strong tickets by edge-popup (Ramanujan, Wortsman, Kembhavi, Farhadi & Rastegari 2020, CVPR,
"What's Hidden in a Randomly Weighted Neural Network?"): subnetworks of a random network, no weight
trained.

For each width multiplier w (trainer.models: every hidden layer's units/channels × w), a random
network of the run's model: its conv/linear weights drawn once and frozen, either Kaiming normal
(N(0, 2/fan_in)) or the signed Kaiming constant (±sqrt(2/fan_in), the sign of that draw), biases 0
and batch norms at γ=1, β=0 (the paper's non-affine batch norm); the paper's "unscaled" inits.
Every conv/linear weight has a score, initialised Kaiming uniform (PyTorch's default layer init,
as the paper's code does); for each k the forward pass uses the top-k% edges of each layer by
|score| (trainer.training.score_masks, exactly kept_count(n, k) per layer, the output layer
included) and straight-through gradients train the scores: SGD with momentum 0.9, weight decay
1e-4, lr 0.1 on a cosine schedule, batch 128 (the paper's Conv-2/4/6 and FC settings; it trains
100 epochs, we default to 2, scaled for the CPU). The same weights and initial scores serve every
k of a width: the subnetworks differ only in k, and they train stacked (the run's stack size; each k
its own scores and top-k rule, trainer.training.score_masks.train_scores_stacked). Data: the run's
training split and data order.

The reference per width is the trained dense network of that width with the run's training spec:
the run's round 0 for width 1, trained here for other widths (the model's own init, iterations
0..T of the run). Every network is reported by its test accuracy at the end of training.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from trainer import events, models
from trainer.analyses.common import (
    AnalysisContext,
    Cancelled,
    check_score_training,
    execute,
    percent_text,
    round_finished,
    round_started,
    run_score_study,
    segment_record,
    summary,
    train_networks,
)
from trainer.analyses.params import Param
from trainer.rundir import json_safe
from trainer.seeds import derive_seed, generator
from trainer.training.score_masks import (
    ScoreJob,
    ScoreTraining,
    accuracy_with,
    kept_count,
    top_k_mask,
    top_k_masks,
    train_scores_stacked,
)
from trainer.training.stacked import chunks

NAME = "edge_popup"
WEIGHT_INITS = ("signed_kaiming_constant", "kaiming_normal")

PARAMS = (
    Param("kept_percents", "float_list", (10.0, 30.0, 50.0, 70.0, 90.0),
          "k: the % of each layer's weights a subnetwork uses (its top-k% edges by |score|); the paper sweeps "
          "k from 10% to 90%.", minimum=0.1, maximum=100, unordered=True),
    Param("widths", "float_list", (1.0,), "Width multipliers of the random network (every hidden layer's units or "
          "channels × width; 1 = the run's model). Widths other than 1 also train their dense network once.",
          minimum=0.1, maximum=8, unordered=True),
    Param("weight_init", "str", "signed_kaiming_constant", "The frozen random weights: the signed Kaiming constant "
          "±sqrt(2/fan_in) (the paper's best) or Kaiming normal N(0, 2/fan_in).", choices=WEIGHT_INITS),
    Param("iterations", "step", "2ep", "Score training per subnetwork, in iterations ('500it') or epochs of the run's "
          "training split ('2ep'); the paper trains 100 epochs, scaled down for a CPU."),
    Param("batch_size", "int", 128, "Batch size of the score training (paper: 128).", minimum=1, maximum=4096),
    Param("lr", "float", 0.1, "Initial learning rate of the scores, decayed to 0 on a cosine (paper: 0.1).",
          minimum=1e-6, maximum=1000),
    Param("momentum", "float", 0.9, "SGD momentum of the scores (paper: 0.9).", minimum=0, maximum=0.999),
    Param("weight_decay", "float", 1e-4, "Weight decay on the scores (paper: 1e-4).", minimum=0, maximum=0.1),
)


def run_edge_popup(run_path, kept_percents=(10.0, 30.0, 50.0, 70.0, 90.0), widths=(1.0,),
                   weight_init="signed_kaiming_constant", iterations="2ep", batch_size=128, lr=0.1, momentum=0.9,
                   weight_decay=1e-4, *, callback: events.Callback = events.ignore, data_dir=None,
                   stop_requested=lambda: False) -> dict:
    """Find edge-popup subnetworks of random networks of the run's model; the result JSON (also in result.json).

    Result: {"subnetworks": [entry per (width, k)], "dense": [entry per width], "chance", "iterations", ...};
    a subnetwork entry has width, kept_percent, test_accuracy, used_fraction, weights_used, weights_total,
    parameters_total, layers {name: {shape, total, used}}, train_loss; a dense entry is a round record
    (early_stop, final, ...) plus width, weights_total, parameters_total and source.
    """
    params = {"kept_percents": list(kept_percents), "widths": list(widths), "weight_init": weight_init,
              "iterations": iterations, "batch_size": batch_size, "lr": lr, "momentum": momentum,
              "weight_decay": weight_decay}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested)


def check(params: dict, info: dict) -> None:
    check_score_training(params, ("kept_percents", "widths"))


def _body(context: AnalysisContext) -> dict:
    return run_score_study(context, check, lambda data, iterations: _sweep(context, data, iterations))


def _sweep(context: AnalysisContext, data, iterations: int) -> dict:
    widths = context.params["widths"]
    dense = [_dense(context, width) for width in widths]
    subnetworks = [entry for width in widths for entry in _subnetworks(context, data, width, iterations)]
    return {"subnetworks": subnetworks, "dense": dense}


def frozen_random_network(model_name: str, input_shape, num_classes: int, init_seed: int, width: float,
                          weight_init: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The random network of `width`: (model holding the frozen weights, {weight name: frozen weight})."""
    model = models.build_model(model_name, input_shape, num_classes, derive_seed(init_seed, NAME, "network", width)
                               % (2**31), width)
    draws = generator(init_seed, NAME, "weights", width)
    frozen = {}
    with torch.no_grad():
        for name in models.prunable_parameter_names(model_name, input_shape, num_classes):
            weight = model.get_parameter(name)
            draw_random_weight_(weight, weight_init, draws)
            frozen[name] = weight.detach().clone()
    return model, frozen


def draw_random_weight_(weight: torch.Tensor, weight_init: str, draws: torch.Generator) -> None:
    """Fill `weight` in place: Kaiming normal N(0, 2/fan_in), or its sign × sqrt(2/fan_in) (signed Kaiming
    constant)."""
    with torch.no_grad():
        nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu", generator=draws)
        if weight_init == "signed_kaiming_constant":
            weight.copy_(torch.sign(weight) * math.sqrt(2.0 / weight[0].numel()))


def initial_scores(frozen: dict[str, torch.Tensor], init_seed: int, width: float) -> dict[str, torch.Tensor]:
    """One score per weight, Kaiming uniform (a=sqrt(5), PyTorch's default for a layer's weight), as the paper."""
    draws = generator(init_seed, NAME, "scores", width)
    scores = {}
    for name, weight in frozen.items():
        score = torch.empty(weight.shape)
        nn.init.kaiming_uniform_(score, a=math.sqrt(5), generator=draws)
        scores[name] = score.to(weight.device)
    return scores


def _unit_label(width: float, kept_percent: float | None = None) -> str:
    return f"width_{width:g}" + ("" if kept_percent is None else f"/kept_{kept_percent:g}")


def _subnetworks(context: AnalysisContext, data, width: float, iterations: int) -> list[dict]:
    """Every k of one width: the stored units as they are, the others trained stacked (they share the
    frozen weights, the initial scores, the batches and the iterations) and stored as each stack ends."""
    kept_percents = context.params["kept_percents"]
    found = {k: context.unit_record(_unit_label(width, k)) for k in kept_percents}
    missing = [k for k in kept_percents if found[k] is None]
    for part in chunks(len(missing), context.run.stack_size()) if missing else []:
        context.check_stop()
        found.update(_train_stack(context, data, width, [missing[index] for index in part], iterations))
    return [found[k] for k in kept_percents]


def _train_stack(context: AnalysisContext, data, width: float, kept_percents: list[float],
                 iterations: int) -> dict[float, dict]:
    spec, info, params = context.run.spec, data.info, context.params
    device = data.device
    jobs, layer_counts = [], []
    for kept_percent in kept_percents:
        model, frozen = frozen_random_network(spec.model, info.input_shape, info.num_classes, spec.init_seed, width,
                                              params["weight_init"])
        frozen = {name: weight.to(device) for name, weight in frozen.items()}
        fraction = kept_percent / 100
        layers = {name: {"shape": list(w.shape), "total": w.numel(), "used": kept_count(w.numel(), fraction)}
                  for name, w in frozen.items()}
        used, total = sum(layer["used"] for layer in layers.values()), sum(layer["total"] for layer in layers.values())
        network = f"edge_popup_x{width:g}_k{kept_percent:g}"
        round_started(context.callback, network, 0, {}, 0, iterations, sparsity={"remaining_fraction": used / total})
        jobs.append(ScoreJob(network, model.to(device), frozen, initial_scores(frozen, spec.init_seed, width),
                             lambda current, _, fraction=fraction: top_k_masks(current, fraction)))
        layer_counts.append((layers, used, total))
    plan = ScoreTraining(iterations, params["lr"], params["momentum"], params["weight_decay"], spec.data_seed,
                         spec.training.metrics_interval)
    results = train_scores_stacked(jobs, data, plan, callback=context.callback, stop_requested=context.stop_requested)
    if any(result.status == "cancelled" for result in results):
        raise Cancelled()
    done = {}
    for kept_percent, job, result, (layers, used, total) in zip(kept_percents, jobs, results, layer_counts):
        masks = {name: top_k_mask(score, kept_percent / 100) for name, score in job.scores.items()}
        test_loss, test_accuracy = accuracy_with(job.model, job.frozen, masks, data.test_inputs, data.test_y)
        val_loss, val_accuracy = accuracy_with(job.model, job.frozen, masks, data.val_inputs, data.val_y)
        finished = result.status == "finished"
        record = {"round": 0, "network": job.network, "status": result.status, "message": result.message,
                  "width": width, "kept_percent": kept_percent, "iterations": iterations,
                  "test_accuracy": test_accuracy if finished else None, "test_loss": test_loss if finished else None,
                  "val_accuracy": val_accuracy if finished else None, "val_loss": val_loss if finished else None,
                  "used_fraction": used / total, "weights_used": used, "weights_total": total,
                  "parameters_total": sum(p.numel() for p in job.model.parameters()), "layers": layers,
                  "train_loss": result.train_loss, "stacked_with": len(jobs),
                  "wall_seconds": round(result.wall_seconds, 3)}
        context.save_unit(_unit_label(width, kept_percent), record)
        round_finished(context.callback, record)
        done[kept_percent] = json_safe(record)
    return done


def _dense(context: AnalysisContext, width: float) -> dict:
    """The trained dense network of `width`: the run's round 0 for width 1, else trained here like round 0."""
    run_dir, spec = context.run_dir, context.run_dir.spec
    if width == 1 and 0 in context.finished_rounds():
        record = run_dir.record(0)
        info = context.run.data.info
        return {**summary(record), "width": width, "source": "the run's round 0",
                "weights_total": sum(layer["total"] for layer in record["layers"].values()),
                "parameters_total": models.parameter_count(spec.model, info.input_shape, info.num_classes)}
    unit = f"dense/{_unit_label(width)}"
    stored = context.unit_record(unit)
    if stored is not None:
        return summary(stored)
    context.check_stop()
    run, info = context.run, context.run.data.info
    seed = derive_seed(spec.init_seed, NAME, "dense", width) % (2**31)
    model = models.build_model(spec.model, info.input_shape, info.num_classes, seed, width).to(run.device)
    mask = {name: torch.ones_like(model.get_parameter(name), dtype=torch.bool)
            for name in models.prunable_parameter_names(spec.model, info.input_shape, info.num_classes)}
    network = f"dense_x{width:g}"
    round_started(context.callback, network, 0, mask, 0, run.total_iterations)
    [(segment, _)] = train_networks([model], [mask], run.data, spec, 0, run.total_iterations, round_index=0,
                                    networks=[network], callback=context.callback,
                                    stop_requested=context.stop_requested)
    if segment.status == "cancelled":
        raise Cancelled()
    record = segment_record(segment, mask, round_index=0, network=network, start_iteration=0,
                            end_iteration=run.total_iterations, width=width, source="trained by this study",
                            weights_total=sum(m.numel() for m in mask.values()),
                            parameters_total=sum(p.numel() for p in model.parameters()))
    context.save_unit(unit, record)
    round_finished(context.callback, record)
    return summary(record)  # its curves stay in the unit's record.json


def summary_lines(result: dict) -> list[str]:
    dense = {entry["width"]: entry for entry in result["dense"]}
    lines = [f"edge-popup on random {result.get('model')} ({result['params']['weight_init'].replace('_', ' ')}), "
             f"{result['iterations']} score-training iterations; chance {percent_text(result['chance'])}",
             f"{'width':>5} {'k %':>5} {'% weights used':>14} {'weights used':>12} {'test acc':>9} "
             f"{'dense acc':>9}"]
    for entry in result["subnetworks"]:
        reference = (dense.get(entry["width"]) or {}).get("final") or {}
        lines.append(f"{entry['width']:>5g} {entry['kept_percent']:>5g} {100 * entry['used_fraction']:>14.2f} "
                     f"{entry['weights_used']:>12,} {percent_text(entry['test_accuracy']):>9} "
                     f"{percent_text(reference.get('test_accuracy')):>9}")
    return lines
