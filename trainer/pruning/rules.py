"""Pruning strategies: which surviving weights to remove in a round.

The count is exact: a group (one layer, or all globally pruned layers) with n
survivors loses round(fraction * n) of them (halves round up). Ties in the
score are broken by position (earlier layer, then lower flat index, is pruned
first), so the same weights always give the same mask.
"""
from __future__ import annotations

import math

import torch

from trainer.pruning.masks import Mask


def prune_count(fraction: float, survivors: int) -> int:
    return min(survivors, math.floor(fraction * survivors + 0.5))


def one_shot_fraction(fraction: float, rounds: int) -> float:
    """The fraction one round must prune to reach what `rounds` rounds of `fraction` reach."""
    return 1.0 - (1.0 - fraction) ** rounds


def magnitude_scores(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: w.detach().abs().float().cpu() for name, w in weights.items()}


def random_scores(mask: Mask, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {name: torch.rand(m.shape, generator=generator) for name, m in mask.items()}


def prune_by_scores(mask: Mask, scores: dict[str, torch.Tensor], fraction: float, scope: str,
                    layer_fractions: dict[str, float] | None = None) -> Mask:
    """Remove the lowest-scoring surviving weights.

    `layer_fractions` overrides `fraction` for the named layers, which are then pruned
    on their own even under global scope (the paper's output layer at half rate).
    """
    layer_fractions = layer_fractions or {}
    new_mask = {name: m.clone() for name, m in mask.items()}
    own_rate = [name for name in mask if name in layer_fractions]
    shared = [name for name in mask if name not in layer_fractions]
    for name in own_rate:
        _prune_group(new_mask, scores, [name], layer_fractions[name])
    if scope == "global":
        if shared:
            _prune_group(new_mask, scores, shared, fraction)
    elif scope == "layerwise":
        for name in shared:
            _prune_group(new_mask, scores, [name], fraction)
    else:
        raise ValueError(f"unknown pruning scope {scope!r}")
    return new_mask


def _prune_group(mask: Mask, scores: dict[str, torch.Tensor], names: list[str], fraction: float) -> None:
    survivor_scores = [scores[name].reshape(-1)[mask[name].reshape(-1)] for name in names]
    survivors = sum(s.numel() for s in survivor_scores)
    count = prune_count(fraction, survivors)
    if count == 0:
        return
    # A stable sort of the concatenated survivors breaks ties by position.
    order = torch.sort(torch.cat(survivor_scores), stable=True).indices[:count]
    offset = 0
    for name, layer_scores in zip(names, survivor_scores):
        in_layer = order[(order >= offset) & (order < offset + layer_scores.numel())] - offset
        if in_layer.numel():
            flat_mask = mask[name].reshape(-1)
            survivor_positions = flat_mask.nonzero().reshape(-1)
            flat_mask[survivor_positions[in_layer]] = False
        offset += layer_scores.numel()


def random_mask_like(mask: Mask, generator: torch.Generator) -> Mask:
    """A random mask with exactly the same number of survivors in every layer."""
    random_mask = {}
    for name, m in mask.items():
        keep = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=generator)[:keep]] = True
        random_mask[name] = flat.reshape(m.shape)
    return random_mask
