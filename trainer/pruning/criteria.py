"""Masking criteria, survivor re-initialisations and supermasks (Zhou, Lan, Liu & Yosinski 2019,
"Deconstructing Lottery Tickets: Zeros, Signs, and the Supermask", NeurIPS; their code:
uber-research/deconstructing-lottery-tickets, get_weight_init.py).

A criterion turns the weights a training started from (w_0) and its trained weights (w_T)
into keep-scores: higher survives. In an iterative chain w_0 is the start of the round that
produced w_T: θ0 for the dense round 0, θk (re-initialised as the variant says) for a pruned
round; that is also what the paper's code compares (the first and last stored weights of
the training it prunes). They plug into IMP through `pruning.prune_by_scores`, which prunes
the lowest scores with exact counts and positional tie-breaking, like magnitude pruning:

    large_final            |w_T|            (IMP itself)
    large_init             |w_0|
    magnitude_increase     |w_T| - |w_0|
    movement               |w_T - w_0|
    large_final_same_sign  |w_T| where sign(w_T) = sign(w_0), else -1 (pruned first)

The paper scores a sign changer 0 and breaks ties at random; -1 and position keep the
changers strictly below every same-sign weight and the mask deterministic.

A re-initialisation decides what the survivors restart from:

    rewind              their start values (θk, the default)
    sign_kept_constant  sign(w0) · σ, σ the std of the layer's init distribution
    reshuffled          the survivors' start values permuted within the layer (seeded)

Pruned weights are zero (`MaskEnforcer`) or frozen at their start values
(`FrozenAtInitEnforcer`). The supermask score is the accuracy of the masked network at
its untrained init (θ0, re-initialised as the variant says), with pruned weights zero or,
for a frozen variant, at their frozen values.
"""
from __future__ import annotations

import copy
import math

import torch

from trainer import models
from trainer.datasets import Inputs
from trainer.pruning.masks import FrozenAtInitEnforcer, Mask, apply_mask
from trainer.spec import MASK_CRITERIA as CRITERIA  # one list, the spec's
from trainer.training.loop import evaluate

REINITS = ("rewind", "sign_kept_constant", "reshuffled")
MASKED_WEIGHTS = ("zero", "frozen_init")


# ---- criteria -----------------------------------------------------------------------------
def criterion_scores(criterion: str, start: dict[str, torch.Tensor], final: dict[str, torch.Tensor],
                     names) -> dict[str, torch.Tensor]:
    """Keep-scores (higher survives) of the named weights; float32 on the CPU. `start` holds the
    weights the training that produced `final` started from."""
    scores = {}
    for name in names:
        w0 = start[name].detach().float().cpu()
        w_final = final[name].detach().float().cpu()
        if criterion == "large_final":
            scores[name] = w_final.abs()
        elif criterion == "large_init":
            scores[name] = w0.abs()
        elif criterion == "magnitude_increase":
            scores[name] = w_final.abs() - w0.abs()
        elif criterion == "movement":
            scores[name] = (w_final - w0).abs()
        elif criterion == "large_final_same_sign":
            scores[name] = torch.where(torch.sign(w_final) == torch.sign(w0), w_final.abs(), torch.tensor(-1.0))
        else:
            raise ValueError(f"unknown masking criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    return scores


# ---- re-initialisation of the survivors ------------------------------------------------------
def _fans(shape) -> tuple[int, int]:
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _glorot_std(shape) -> float:
    fan_in, fan_out = _fans(shape)
    return math.sqrt(2.0 / (fan_in + fan_out))


def _kaiming_std(shape) -> float:
    fan_in, _ = _fans(shape)
    return math.sqrt(2.0 / fan_in)


# The registry's initializers and the std of the distribution each draws from.
_INIT_STD = {models._glorot_normal: _glorot_std, models._kaiming_normal: _kaiming_std}


def init_std(model_name: str, shape) -> float | None:
    """The std of the model's init distribution for a weight of `shape`; None when unknown."""
    std = _INIT_STD.get(models.MODELS[model_name].init_weight)
    return std(tuple(shape)) if std is not None else None


def layer_init_stds(model_name: str | None, reference: dict[str, torch.Tensor], names) -> dict[str, float]:
    """σ of each named layer's init distribution; for a model without a known initializer, the std
    of the layer's values in `reference` (its init, or the start of the training) estimates it."""
    stds = {}
    for name in names:
        std = init_std(model_name, reference[name].shape) if model_name is not None else None
        stds[name] = std if std is not None else float(reference[name].float().std())
    return stds


def sign_kept_constant(start: dict[str, torch.Tensor], mask: Mask, stds: dict[str, float]) -> dict[str, torch.Tensor]:
    """Survivors become sign(start)·σ_layer; pruned weights and unmasked tensors keep their start values."""
    state = {name: value.clone() for name, value in start.items()}
    for name, keep in mask.items():
        value = state[name]
        constant = torch.sign(value) * stds[name]
        state[name] = torch.where(keep.to(value.device), constant, value)
    return state


def reshuffled(start: dict[str, torch.Tensor], mask: Mask, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Each layer's survivor values, permuted among the survivor positions (pruned ones untouched)."""
    state = {name: value.clone() for name, value in start.items()}
    for name, keep in mask.items():  # mask order is forward order: the draws do not depend on dict luck
        flat = state[name].reshape(-1)
        positions = keep.reshape(-1).nonzero().reshape(-1).to(flat.device)
        order = torch.randperm(positions.numel(), generator=generator).to(flat.device)
        flat[positions] = flat[positions][order]
    return state


def reinit_survivors(mode: str, start: dict[str, torch.Tensor], mask: Mask, *, model_name: str | None = None,
                     generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The state a round trains from: `start` (θk) with the survivors re-initialised by `mode`."""
    if mode == "rewind":
        return {name: value.clone() for name, value in start.items()}
    if mode == "sign_kept_constant":
        return sign_kept_constant(start, mask, layer_init_stds(model_name, start, mask))
    if mode == "reshuffled":
        if generator is None:
            raise ValueError("reshuffled re-initialisation needs a seeded generator")
        return reshuffled(start, mask, generator)
    raise ValueError(f"unknown re-initialisation {mode!r}; choose one of {', '.join(REINITS)}")


# ---- supermask ----------------------------------------------------------------------------
def supermask_score(untrained_model: torch.nn.Module, mask: Mask, x: Inputs | torch.Tensor, y: torch.Tensor,
                    frozen_values: dict[str, torch.Tensor] | None = None) -> float:
    """Accuracy on (x, y) of `untrained_model` masked: pruned weights zero, or held at `frozen_values`
    (a frozen variant's network). `untrained_model` is not changed."""
    masked = copy.deepcopy(untrained_model)
    if frozen_values is None:
        apply_mask(masked, mask)
    else:
        FrozenAtInitEnforcer(masked, mask, frozen_values).mask_weights()
    return evaluate(masked, x, y)[1]
