"""Pruning random networks to approximate a target network (Malach, Yehudai, Shalev-Shwartz & Shamir 2020, ICML,
"Proving the Lottery Ticket Hypothesis: Pruning is All You Need"): a ReLU network of depth l is approximated
by a weight-subnetwork of a random network of depth 2l and polynomial width (Theorem 2.1), while
neuron-subnetworks of a random two-layer network are no stronger than the random-features model (Section 3).

Every network here is a bias-free ReLU MLP defined in this module (layers fc1..fcN on the flattened input; the
theorems' networks have no biases), trained or pruned on the run's dataset (its training split and data order
at this study's batch size); the run's own model is not used.

(a) Approximation vs width. The target: an MLP of depth l (`target_depth` linear layers, hidden width
    `target_width`, Kaiming normal init) trained on the labels for `target_iterations`. For each width n in
    `widths`, a random MLP of depth 2l and hidden width n, weights frozen (Kaiming normal, or the signed Kaiming
    constant), gets one score per weight; its weight-subnetwork uses the top-k% weights of each layer by |score|
    (trainer.training.score_masks, the edge-popup procedure of Ramanujan et al. 2020: the theorem says such a
    subnetwork exists, not how to find it) and the scores are trained to match the target: the loss is the
    mean squared error between the subnetwork's logits and the target's logits on the training inputs.
    Reported on the test inputs: the approximation error (MSE of the logits, and relative to the mean
    square of the target's logits), the agreement (fraction of inputs where both predict the same class)
    and the subnetwork's own test accuracy.
(b) At equal width n, on a random two-layer MLP (input → n ReLU units → classes, frozen random weights):
      neuron-subnetwork   a score per hidden unit; the top-k% units are kept whole (a dropped unit loses its
                          input row and output column), scores trained straight-through on the labels;
      random features     the first layer stays at its random values, only the last layer trains (on all n
                          units; Malach et al.'s random-features model);
      weight-subnetwork   top-k% weights of each layer, scores trained as in (a) but on the labels.
    Reported: test accuracy of each, per width.

Scores and trained layers use one loop (trainer.training.score_masks): SGD with momentum 0.9, a cosine
learning rate from `lr`, weight decay 1e-4 on scores (as edge-popup) and none on trained weights. The three
models of (b) at one width train stacked in one step (train_scores_stacked: one architecture, the same
batches, each its own rule); the networks of (a) differ in width, so each trains alone.
Where we differ from the paper: their experiments prune by edge-popup too, on MNIST-scale data with
wider nets and longer training; we scale widths and iterations for a CPU.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainer import events
from trainer.analyses.common import (
    AnalysisContext,
    Cancelled,
    check_score_training,
    execute,
    percent_text,
    round_finished,
    round_started,
    run_score_study,
)
from trainer.analyses.edge_popup import WEIGHT_INITS, draw_random_weight_, initial_scores
from trainer.analyses.params import Param
from trainer.rundir import json_safe
from trainer.seeds import generator
from trainer.spec import SpecError
from trainer.steps import Step
from trainer.training.loop import PreparedData
from trainer.training.score_masks import (
    ScoreJob,
    ScoreResult,
    ScoreTraining,
    TopKStraightThrough,
    accuracy_with,
    identity_masks,
    top_k_mask,
    top_k_masks,
    train_scores,
    train_scores_stacked,
    train_weights,
)
from trainer.training.stacked import chunks

NAME = "malach"
TWO_LAYER_MODELS = ("neuron_subnetwork", "random_features", "weight_subnetwork")
WEIGHT_DECAY = 1e-4  # on scores, as edge-popup; trained weights get none

PARAMS = (
    Param("target_depth", "int", 2, "l: linear layers of the target network; the random networks have 2l.",
          minimum=1, maximum=4),
    Param("target_width", "int", 32, "Hidden units per layer of the target network.", minimum=1, maximum=1024),
    Param("target_iterations", "step", "2ep", "Training of the target network on the labels ('2ep' or '500it')."),
    Param("widths", "int_list", (50, 100, 200, 400), "Hidden widths n of the random networks (depth 2l in part a, "
          "two layers in part b).", minimum=1, maximum=4096, unordered=True),
    Param("kept_percent", "float", 50.0, "k: the % of each layer's weights (or, for neuron-subnetworks, of the "
          "hidden units) a subnetwork keeps.", minimum=0.1, maximum=100),
    Param("weight_init", "str", "kaiming_normal", "The frozen random weights: Kaiming normal N(0, 2/fan_in) (a "
          "continuous distribution, as the theorem's) or the signed Kaiming constant ±sqrt(2/fan_in).",
          choices=WEIGHT_INITS),
    Param("iterations", "step", "2ep", "Score training (and random-features training) per network, in iterations or "
          "epochs of the run's training split."),
    Param("batch_size", "int", 128, "Batch size of every training here.", minimum=1, maximum=4096),
    Param("lr", "float", 0.1, "Initial learning rate (cosine decay to 0) of scores and trained weights.",
          minimum=1e-6, maximum=1000),
)


def run_malach(run_path, target_depth=2, target_width=32, target_iterations="2ep", widths=(50, 100, 200, 400),
               kept_percent=50.0, weight_init="kaiming_normal", iterations="2ep", batch_size=128, lr=0.1, *,
               callback: events.Callback = events.ignore, data_dir=None, stop_requested=lambda: False) -> dict:
    """Approximate a trained target by weight-subnetworks of random nets (a) and compare two-layer subnetworks
    with random features (b); the result JSON (also in result.json).

    Result: {"target": {depth, width, test_accuracy, mean_square_logit, iterations}, "approximation": [entry per
    width: width, depth, test_mse, relative_mse, agreement, test_accuracy, weights_used, weights_total],
    "two_layer": [entry per (width, model): width, model, test_accuracy, weights_used, weights_total], "chance", ...}.
    """
    params = {"target_depth": target_depth, "target_width": target_width, "target_iterations": target_iterations,
              "widths": list(widths), "kept_percent": kept_percent, "weight_init": weight_init,
              "iterations": iterations, "batch_size": batch_size, "lr": lr}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested)


def check(params: dict, info: dict) -> None:
    check_score_training(params, ("widths",))
    if Step.parse(params["target_iterations"]).amount < 1:
        raise SpecError("target_iterations", "must be at least one iteration")


def _body(context: AnalysisContext) -> dict:
    return run_score_study(context, check, lambda data, iterations: _study(context, data, iterations))


# ---- the networks -----------------------------------------------------------------------------------

class ReluMLP(nn.Module):
    """A bias-free ReLU MLP on the flattened input: fc1..fcN (N = len(hidden) + 1), ReLU between layers."""

    def __init__(self, input_size: int, hidden: list[int], num_classes: int):
        super().__init__()
        sizes = [input_size, *hidden, num_classes]
        self.depth = len(sizes) - 1
        for index in range(self.depth):
            setattr(self, f"fc{index + 1}", nn.Linear(sizes[index], sizes[index + 1], bias=False))

    def weight_names(self) -> list[str]:
        return [f"fc{index + 1}.weight" for index in range(self.depth)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for index in range(self.depth):
            x = getattr(self, f"fc{index + 1}")(x)
            if index + 1 < self.depth:
                x = F.relu(x)
        return x


def random_mlp(input_size: int, hidden: list[int], num_classes: int, weight_init: str, draws: torch.Generator,
               device: torch.device | str = "cpu") -> tuple[ReluMLP, dict[str, torch.Tensor]]:
    """(model, {weight name: its random weight}) with every weight drawn from `draws` (weight_init as edge-popup)."""
    model = ReluMLP(input_size, hidden, num_classes)
    for name in model.weight_names():
        draw_random_weight_(model.get_parameter(name), weight_init, draws)
    model = model.to(device)
    return model, {name: model.get_parameter(name).detach().clone() for name in model.weight_names()}


def unit_masks(unit_scores: torch.Tensor, kept_fraction: float) -> dict[str, torch.Tensor]:
    """The neuron-subnetwork's masks of a two-layer MLP: the top-k hidden units by |score| keep their input row
    (fc1) and output column (fc2); the others lose both. Straight-through gradients reach the unit scores."""
    units = TopKStraightThrough.apply(unit_scores.abs(), kept_fraction)
    return {"fc1.weight": units[:, None], "fc2.weight": units[None, :]}


# ---- the study --------------------------------------------------------------------------------------

def _study(context: AnalysisContext, data: PreparedData, iterations: int) -> dict:
    params = context.params
    target_iterations = Step.parse(params["target_iterations"]).to_iterations(data.iterations_per_epoch)
    target, target_record = _target(context, data, target_iterations)
    approximation = [_approximation(context, data, iterations, target, width) for width in params["widths"]]
    two_layer = [entry for width in params["widths"] for entry in _two_layer(context, data, iterations, width)]
    return {"target": target_record, "approximation": approximation, "two_layer": two_layer}


def _plan(context: AnalysisContext, iterations: int, weight_decay: float) -> ScoreTraining:
    spec = context.run.spec
    return ScoreTraining(iterations, context.params["lr"], 0.9, weight_decay, spec.data_seed,
                         spec.training.metrics_interval)


def _input_size(data: PreparedData) -> int:
    return math.prod(data.info.input_shape)


def _finished_or_cancelled(result: ScoreResult) -> bool:
    if result.status == "cancelled":
        raise Cancelled()
    return result.status == "finished"


def _target(context: AnalysisContext, data: PreparedData, iterations: int) -> tuple[ReluMLP, dict]:
    """The trained target network (stored with its weights, so a resumed study approximates the same one)."""
    params, spec = context.params, context.run.spec
    hidden = [params["target_width"]] * (params["target_depth"] - 1)
    model = ReluMLP(_input_size(data), hidden, data.info.num_classes)
    stored = context.unit_record("target")
    if stored is not None:
        model.load_state_dict(context.unit_state("target"))
        return model.to(data.device), stored
    context.check_stop()
    draws = generator(spec.init_seed, NAME, "target")
    weights = {}
    for name in model.weight_names():
        draw_random_weight_(model.get_parameter(name), "kaiming_normal", draws)
        weights[name] = model.get_parameter(name).detach().clone()
    model = model.to(data.device)
    network = f"malach_target_l{params['target_depth']}"
    round_started(context.callback, network, 0, {}, 0, iterations, sparsity={"remaining_fraction": 1.0})
    result = train_weights(model, weights, data, _plan(context, iterations, 0.0), network=network,
                           callback=context.callback, stop_requested=context.stop_requested)
    finished = _finished_or_cancelled(result)
    model.load_state_dict(weights)
    with torch.no_grad():
        logits = model(data.test_x)
    record = {"round": 0, "network": network, "status": result.status, "message": result.message,
              "depth": params["target_depth"], "width": params["target_width"], "iterations": iterations,
              "test_accuracy": _accuracy(logits, data.test_y) if finished else None,
              "mean_square_logit": logits.pow(2).mean().item(),
              "weights_total": sum(w.numel() for w in weights.values()),
              "train_loss": result.train_loss, "wall_seconds": round(result.wall_seconds, 3)}
    context.save_unit("target", record, state=model.state_dict())
    round_finished(context.callback, record)
    return model, json_safe(record)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == labels).float().mean().item()


def _counts(frozen: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict:
    used = sum(int((masks[name].expand_as(w) if name in masks else torch.ones_like(w)).sum())
               for name, w in frozen.items())
    return {"weights_used": used, "weights_total": sum(w.numel() for w in frozen.values())}


def _approximation(context: AnalysisContext, data: PreparedData, iterations: int, target: ReluMLP,
                   width: int) -> dict:
    unit = f"approximation/width_{width}"
    stored = context.unit_record(unit)
    if stored is not None:
        return stored
    context.check_stop()
    params, spec = context.params, context.run.spec
    depth = 2 * params["target_depth"]
    model, frozen = random_mlp(_input_size(data), [width] * (depth - 1), data.info.num_classes,
                               params["weight_init"], generator(spec.init_seed, NAME, "approximation", width),
                               data.device)
    scores = initial_scores(frozen, spec.init_seed, width)
    fraction = params["kept_percent"] / 100
    network = f"malach_depth{depth}_n{width}"
    round_started(context.callback, network, 0, {}, 0, iterations, sparsity={"remaining_fraction": fraction})
    target.eval()

    def match_target(outputs, inputs, targets):
        with torch.no_grad():
            wanted = target(inputs)
        return F.mse_loss(outputs, wanted)
    result = train_scores(model, frozen, scores, lambda current, _: top_k_masks(current, fraction), data,
                          _plan(context, iterations, WEIGHT_DECAY), network=network, callback=context.callback,
                          stop_requested=context.stop_requested, objective=match_target)
    finished = _finished_or_cancelled(result)
    masks = {name: top_k_mask(score, fraction).to(frozen[name].dtype) for name, score in scores.items()}
    weights = {name: frozen[name] * masks[name] for name in frozen}
    with torch.no_grad():
        test_x = data.test_x  # the whole split, normalized once for both
        outputs = torch.func.functional_call(model, weights, (test_x,))
        wanted = target(test_x)
    mse = F.mse_loss(outputs, wanted).item()
    record = {"round": 0, "network": network, "status": result.status, "message": result.message, "width": width,
              "depth": depth, "kept_percent": params["kept_percent"], "iterations": iterations,
              "test_mse": mse if finished else None,
              "relative_mse": mse / wanted.pow(2).mean().item() if finished else None,
              "agreement": _accuracy(outputs, wanted.argmax(dim=1)) if finished else None,
              "test_accuracy": _accuracy(outputs, data.test_y) if finished else None, **_counts(frozen, masks),
              "train_loss": result.train_loss, "wall_seconds": round(result.wall_seconds, 3)}
    context.save_unit(unit, record)
    round_finished(context.callback, record)
    return json_safe(record)


def _two_layer(context: AnalysisContext, data: PreparedData, iterations: int, width: int) -> list[dict]:
    """The three models of one width, trained stacked (one architecture, the same batches), each stored as a unit."""
    found = {kind: context.unit_record(f"two_layer/width_{width}/{kind}") for kind in TWO_LAYER_MODELS}
    missing = [kind for kind in TWO_LAYER_MODELS if found[kind] is None]
    # tiny MLPs: all three in one stack unless the run's spec fixes a stack size
    for part in chunks(len(missing), context.run.spec.stack_size or len(missing)) if missing else []:
        context.check_stop()
        kinds = [missing[index] for index in part]
        jobs = [_two_layer_job(context, data, iterations, width, kind) for kind in kinds]
        results = train_scores_stacked(jobs, data, _plan(context, iterations, WEIGHT_DECAY), callback=context.callback,
                                       stop_requested=context.stop_requested)
        if any(result.status == "cancelled" for result in results):
            raise Cancelled()
        for kind, job, result in zip(kinds, jobs, results):
            found[kind] = _two_layer_record(context, data, iterations, width, kind, job, result, len(jobs))
    return [found[kind] for kind in TWO_LAYER_MODELS]


def _two_layer_job(context: AnalysisContext, data: PreparedData, iterations: int, width: int, kind: str) -> ScoreJob:
    params, spec = context.params, context.run.spec
    # the same random two-layer network for the three models of a width
    model, frozen = random_mlp(_input_size(data), [width], data.info.num_classes, params["weight_init"],
                               generator(spec.init_seed, NAME, "two_layer", width), data.device)
    fraction = params["kept_percent"] / 100
    network = f"malach_two_layer_n{width}_{kind}"
    round_started(context.callback, network, 0, {}, 0, iterations, model=kind, width=width)
    if kind == "random_features":  # the last layer's weights are the trained "scores" on a frozen mask of ones
        last = frozen["fc2.weight"]
        return ScoreJob(network, model, {"fc2.weight": torch.ones_like(last)}, {"fc2.weight": last.clone()},
                        identity_masks, weight_decay=0.0)
    if kind == "neuron_subnetwork":
        placeholder = {"units": torch.empty(width, 1, device=data.device)}
        unit_scores = initial_scores(placeholder, spec.init_seed, width)["units"][:, 0].clone()
        return ScoreJob(network, model, frozen, {"units": unit_scores},
                        lambda current, _: unit_masks(current["units"], fraction))
    return ScoreJob(network, model, frozen, initial_scores(frozen, spec.init_seed, width),
                    lambda current, _: top_k_masks(current, fraction))


def _two_layer_record(context: AnalysisContext, data: PreparedData, iterations: int, width: int, kind: str,
                      job: ScoreJob, result: ScoreResult, stacked_with: int) -> dict:
    finished = _finished_or_cancelled(result)
    fraction = context.params["kept_percent"] / 100
    frozen = {name: job.model.get_parameter(name).detach() for name in job.model.weight_names()}
    if kind == "random_features":
        frozen["fc2.weight"] = job.scores["fc2.weight"]
        masks = {}
    elif kind == "neuron_subnetwork":
        masks = {name: mask.detach() for name, mask in unit_masks(job.scores["units"], fraction).items()}
    else:
        masks = {name: top_k_mask(score, fraction).to(frozen[name].dtype) for name, score in job.scores.items()}
    ones = {name: torch.ones_like(weight) for name, weight in frozen.items()}
    full_masks = {name: (masks[name].expand_as(ones[name]) if name in masks else ones[name]) for name in frozen}
    loss, accuracy = accuracy_with(job.model, frozen, full_masks, data.test_inputs, data.test_y)
    record = {"round": 0, "network": job.network, "status": result.status, "message": result.message, "width": width,
              "model": kind, "iterations": iterations,
              "kept_percent": None if kind == "random_features" else context.params["kept_percent"],
              "hidden_units_used": int(full_masks["fc1.weight"].any(dim=1).sum()),
              "test_accuracy": accuracy if finished else None, "test_loss": loss if finished else None,
              **_counts(frozen, masks), "train_loss": result.train_loss, "stacked_with": stacked_with,
              "wall_seconds": round(result.wall_seconds, 3)}
    context.save_unit(f"two_layer/width_{width}/{kind}", record)
    round_finished(context.callback, record)
    return json_safe(record)


def summary_lines(result: dict) -> list[str]:
    target = result["target"]
    lines = [f"target: depth {target['depth']}, width {target['width']}, test accuracy "
             f"{percent_text(target['test_accuracy'])}; weight-subnetworks keep {result['params']['kept_percent']:g}% "
             f"per layer; chance {percent_text(result['chance'])}",
             f"(a) {'width':>6} {'depth':>5} {'test MSE':>9} {'relative':>8} {'agreement':>9} {'test acc':>8}"]
    for entry in result["approximation"]:
        mse, relative = entry["test_mse"], entry["relative_mse"]
        lines.append(f"    {entry['width']:>6} {entry['depth']:>5} {'-' if mse is None else f'{mse:.4f}':>9} "
                     f"{'-' if relative is None else f'{relative:.3f}':>8} {percent_text(entry['agreement']):>9} "
                     f"{percent_text(entry['test_accuracy']):>8}")
    lines.append(f"(b) {'width':>6} " + " ".join(f"{model.replace('_', ' '):>18}" for model in TWO_LAYER_MODELS))
    by_width: dict[int, dict] = {}
    for entry in result["two_layer"]:
        by_width.setdefault(entry["width"], {})[entry["model"]] = entry["test_accuracy"]
    for width, accuracies in by_width.items():
        lines.append(f"    {width:>6} " + " ".join(f"{percent_text(accuracies.get(model)):>18}"
                                                    for model in TWO_LAYER_MODELS))
    return lines

