"""Weight-agnostic scores of the run's masks (Gaier & Ha 2019, NeurIPS, "Weight Agnostic Neural Networks",
Sections 3-4): a topology is judged with one shared weight value for every connection, over a range of
values, and its score is the mean accuracy over those values.

Here a topology is a mask of the run: the IMP ticket's mask of each chosen round, and as the control a
random mask with the same number of survivors in every layer (trainer.pruning.rules.random_mask_like,
seeded from the run's init seed and the round). Every conv/linear weight the mask keeps becomes

    w · scale_layer · sign(θ0)       (pruned weights 0; every bias 0; batch norms as at θ0: γ=1, β=0)

for each shared value w: the sign comes from the run's initial weights θ0 (Gaier & Ha share one value
over connections without signs; our masks were found on signed weights, so we keep θ0's sign, as
Zhou et al. 2019's signed-constant supermask does). scale_layer is the standard deviation of the
layer's θ0 (`scale` init_std, the default: w = 1 is the layer's init scale, Zhou et al.'s signed
constant) or 1 (`scale` absolute, Gaier & Ha's raw values). Gaier & Ha evaluate w in
{-2, -1, -0.5, 0.5, 1, 2}, our default; a negative w flips every sign. Nothing is trained.

Each (mask, w) reports its test accuracy and loss; the mask's score is the mean accuracy over the
values w (the paper's "mean" performance) beside the best single value. Note: a ReLU network with zero
biases and no skip connections is positively homogeneous in each layer's weights, so its predictions
(and so its accuracy) are the same for every w > 0 and the same for every w < 0 (the loss does change);
only networks with skip connections (ResNet-20) or other non-homogeneous parts vary within a sign.
Gaier & Ha's networks used non-homogeneous activations and biases, where every w differs.
"""
from __future__ import annotations

import statistics

import torch

from trainer import events, models
from trainer.analyses.common import AnalysisContext, check_rounds, execute, percent_text
from trainer.analyses.params import Param
from trainer.pruning import masks
from trainer.pruning.rules import random_mask_like
from trainer.rundir import json_safe
from trainer.seeds import generator
from trainer.spec import SpecError
from trainer.training.loop import evaluate

NAME = "weight_agnostic"
SCALES = ("init_std", "absolute")
KINDS = ("ticket", "random")

PARAMS = (
    Param("rounds", "int_list", (), "IMP rounds whose ticket masks are scored; empty = every finished round.",
          minimum=0, unordered=True),
    Param("weight_values", "float_list", (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0),
          "The shared weight values w (Gaier & Ha: -2, -1, -0.5, 0.5, 1, 2); every surviving weight is "
          "w × scale × sign(θ0), so a negative w flips every sign.", minimum=-100, maximum=100, unordered=True),
    Param("scale", "str", "init_std", "What w multiplies: init_std (each layer's θ0 standard deviation, so w = 1 is "
          "the init's scale) or absolute (w itself, as Gaier & Ha).", choices=SCALES),
    Param("random_control", "bool", True, "Also score a random mask with the same survivors per layer as each "
          "ticket (the control)."),
)


def run_weight_agnostic(run_path, rounds=(), weight_values=(-2.0, -1.0, -0.5, 0.5, 1.0, 2.0), scale="init_std",
                        random_control=True, *, callback: events.Callback = events.ignore, data_dir=None,
                        stop_requested=lambda: False) -> dict:
    """Score the run's masks with one shared weight value; the result JSON (also in result.json).

    Result: {"ticket": [entry per round], "random": [entry per round] (empty without the control), "rounds",
    "weight_values", "chance", "model", "dataset"}; an entry has round, kind, remaining_fraction,
    test_accuracy and test_loss (lists, one per weight value), mean_accuracy (the weight-agnostic score),
    best_accuracy and best_weight.
    """
    params = {"rounds": list(rounds), "weight_values": list(weight_values), "scale": scale,
              "random_control": random_control}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested)


def check(params: dict, info: dict) -> None:
    check_rounds(params, info)
    values = params.get("weight_values") or []
    if not values:
        raise SpecError("weight_values", "choose at least one value")
    if 0 in values:
        raise SpecError("weight_values", "must not contain 0 (every weight would be 0)")


def _body(context: AnalysisContext) -> dict:
    params = context.params
    check(params, {"finished_rounds": context.finished_rounds()})
    if (done := context.reuse_finished()) is not None:
        return done
    rounds = context.require_rounds(params["rounds"], "rounds")
    context.start()
    kinds = KINDS if params["random_control"] else KINDS[:1]
    entries = {kind: [_score(context, kind, round_index) for round_index in rounds] for kind in kinds}
    spec, info = context.run.spec, context.run.data.info
    return context.finish({"ticket": entries["ticket"], "random": entries.get("random", []), "rounds": rounds,
                           "weight_values": params["weight_values"], "chance": 1.0 / info.num_classes,
                           "model": spec.model, "dataset": spec.dataset})


def shared_weight_state(theta_0: dict, mask: masks.Mask, weight_names: list[str], value: float,
                        scale: str) -> dict:
    """θ0 with every conv/linear weight in `weight_names` set to value × scale × sign(θ0) where `mask` keeps it
    (0 where it prunes; a layer the mask does not name is kept whole) and every conv/linear bias set to 0."""
    state = dict(theta_0)
    for name in weight_names:
        initial = theta_0[name]
        layer_scale = initial.std() if scale == "init_std" else torch.ones(())
        kept = mask[name].to(initial.dtype) if name in mask else torch.ones_like(initial)
        state[name] = value * layer_scale * torch.sign(initial) * kept
        bias = name[:-len("weight")] + "bias"
        if bias in state:
            state[bias] = torch.zeros_like(state[bias])
    return state


def _score(context: AnalysisContext, kind: str, round_index: int) -> dict:
    unit = f"{kind}/round_{round_index}"
    stored = context.unit_record(unit)
    if stored is not None:
        return stored
    context.check_stop()
    run, params = context.run, context.params
    info = run.data.info
    mask = run.run_dir.mask(round_index)
    if kind == "random":
        mask = random_mask_like(mask, generator(run.spec.init_seed, NAME, "random", round_index))
    theta_0 = run.theta_init()
    names = models.prunable_parameter_names(run.spec.model, info.input_shape, info.num_classes)
    accuracies, losses = [], []
    for value in params["weight_values"]:
        model = run.model_with(shared_weight_state(theta_0, mask, names, value, params["scale"]))
        loss, accuracy = evaluate(model, run.data.test_inputs, run.data.test_y)
        accuracies.append(accuracy)
        losses.append(loss)
    best = max(range(len(accuracies)), key=accuracies.__getitem__)
    record = {"round": round_index, "kind": kind, "remaining_fraction": run.sparsity(mask)["remaining_fraction"],
              "weight_values": params["weight_values"], "test_accuracy": accuracies, "test_loss": losses,
              "mean_accuracy": statistics.fmean(accuracies), "best_accuracy": accuracies[best],
              "best_weight": params["weight_values"][best]}
    context.save_unit(unit, record)
    return json_safe(record)


def summary_lines(result: dict) -> list[str]:
    random = {entry["round"]: entry for entry in result.get("random") or []}
    scale = result["params"]["scale"].replace("_", " ")
    lines = [f"weight-agnostic scores (one shared weight × {scale} × sign(θ0), "
             f"w in {', '.join(f'{w:g}' for w in result['weight_values'])}); chance {percent_text(result['chance'])}",
             f"{'round':>5} {'% left':>7} {'ticket mean':>11} {'ticket best':>11} {'best w':>6} {'random mean':>11}"]
    for entry in result["ticket"]:
        control = random.get(entry["round"]) or {}
        lines.append(f"{entry['round']:>5} {100 * entry['remaining_fraction']:>7.2f} "
                     f"{percent_text(entry['mean_accuracy']):>11} {percent_text(entry['best_accuracy']):>11} "
                     f"{entry['best_weight']:>6g} {percent_text(control.get('mean_accuracy')):>11}")
    return lines
