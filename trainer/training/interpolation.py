"""Linear interpolation between two networks, and batch-norm statistics for the result.

Pure math on state dicts and models (Frankle et al. 2020, "Linear Mode Connectivity
and the Lottery Ticket Hypothesis"):

  θ(α) = (1 - α) θA + α θB          for α in evenly spaced points of [0, 1]
  instability = max_α error(θ(α)) - (error(θA) + error(θB)) / 2

The endpoints are exact ((1-0)·a + 0·b == a bit for bit), so the path's end errors are
the two trained networks' own errors. Averaged batch-norm running statistics do not
describe the averaged network, so for models with batch norm they are recomputed at
each point from training batches: running stats reset, momentum=None (a cumulative
average over the batches), forward passes in train mode, then evaluation in eval mode.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from trainer.datasets import Inputs, as_inputs
from trainer.pruning.masks import Mask, apply_mask
from trainer.training.loop import evaluate


def evenly_spaced(points: int) -> list[float]:
    """`points` values from 0 to 1 inclusive, both ends exact."""
    if points < 2:
        raise ValueError("an interpolation path needs at least 2 points")
    return [index / (points - 1) for index in range(points)]


def interpolate_states(state_a: dict, state_b: dict, alpha: float) -> dict:
    """(1 - alpha) * a + alpha * b for every floating tensor; integer buffers (batch counts) from a."""
    if state_a.keys() != state_b.keys():
        raise ValueError("the two states have different entries")
    mixed = {}
    for name, a in state_a.items():
        b = state_b[name]
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
        mixed[name] = (1.0 - alpha) * a + alpha * b if a.is_floating_point() else a.clone()
    return mixed


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every batch norm's running mean/var by their average over `batches`.

    Each batch contributes its batch mean and unbiased batch variance with equal weight
    (PyTorch's momentum=None cumulative average). Returns the number of batch norm layers.
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    was_training = model.training
    model.train()
    try:
        for batch in batches:
            model(batch)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
    return len(layers)


def statistics_batches(x: Inputs | torch.Tensor, batch_size: int, count: int, generator: torch.Generator
                       ) -> list[torch.Tensor]:
    """`count` batches (fewer if x is small) of a seeded permutation of x: the same for every point of a path."""
    inputs = as_inputs(x)
    order = torch.randperm(len(inputs), generator=generator).to(inputs.device)
    count = max(1, min(count, len(inputs) // batch_size))
    return [inputs.rows(order[i * batch_size:(i + 1) * batch_size]) for i in range(count)]


def instability(errors: list[float]) -> float:
    """Max error along the path minus the mean of the two end errors."""
    if len(errors) < 2:
        raise ValueError("an interpolation path needs at least 2 points")
    return max(errors) - (errors[0] + errors[-1]) / 2


def evaluate_path(model: nn.Module, state_a: dict, state_b: dict, alphas: list[float], x: Inputs | torch.Tensor,
                  y: torch.Tensor, *, mask: Mask | None = None, bn_batches: list[torch.Tensor] | None = None,
                  on_point=None) -> dict:
    """Loss, accuracy and error of θ(α) on (x, y) for each alpha; `model` is the architecture to load into.

    A mask keeps pruned weights at zero on the whole path (they are zero at both ends already,
    so this only guards against -0.0 and numeric noise). Batch-norm statistics are recomputed
    from `bn_batches` at every point when the model has batch norm.
    """
    curve = {"alpha": [], "loss": [], "accuracy": [], "error": []}
    recomputed = False
    for alpha in alphas:
        model.load_state_dict(interpolate_states(state_a, state_b, alpha))
        if mask is not None:
            apply_mask(model, mask)
        if bn_batches:
            recomputed = recompute_batch_norm(model, bn_batches) > 0 or recomputed
        loss, accuracy = evaluate(model, x, y)
        for key, value in (("alpha", alpha), ("loss", loss), ("accuracy", accuracy), ("error", 1.0 - accuracy)):
            curve[key].append(value)
        if on_point is not None:
            on_point(alpha, loss, accuracy)
    curve["batch_norm_recomputed"] = recomputed
    curve["instability"] = instability(curve["error"])
    return curve
