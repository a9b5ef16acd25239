"""Perturbations of a ticket's rewound weights (Frankle, Schwab & Morcos 2020, "The Early Phase of
Neural Network Training", ICLR, Sections 4-5): pure tensor functions on a state dict and a mask.

Every function returns a new state in which only the survivors of `mask` (the prunable weights
it names) change; pruned weights are zero, every other tensor (biases, unmasked layers) is the
input's. θk is the rewound state, θ0 the initial one.

    init_signs                the signs of θ0 with the magnitudes of θk
    init_magnitudes           the magnitudes of θ0 with the signs of θk
    flip_signs                every survivor's sign flipped
    flip_signs_random         a random `fraction` of each layer's survivors flipped (exact count)
    shuffle_<scope>           the survivors' values permuted within a group: global (all prunable
                              layers together), layer (each layer), unit (each output neuron, or
                              each conv filter: one slice along dim 0)
    shuffle_<scope>_same_sign the same, permuting positives among positives and negatives among
                              negatives, so every weight keeps its sign
    noise (`add_noise`)       θk + N(0, (α·σ_layer)²) on the survivors, σ_layer the std of the
                              layer's initialisation distribution

Signs are taken with copysign, so a magnitude is never lost to a zero sign.
"""
from __future__ import annotations

import torch

from trainer.pruning.masks import Mask

SHUFFLE_SCOPES = ("global", "layer", "unit")
SIGN_PERTURBATIONS = ("init_signs", "init_magnitudes", "flip_signs", "flip_signs_random")
SHUFFLES = tuple(f"shuffle_{scope}" for scope in SHUFFLE_SCOPES) + \
    tuple(f"shuffle_{scope}_same_sign" for scope in SHUFFLE_SCOPES)
PERTURBATIONS = SIGN_PERTURBATIONS + SHUFFLES


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in state.items()}


def _set_survivors(state: dict[str, torch.Tensor], mask: Mask, name: str, survivors: torch.Tensor) -> None:
    """state[name] becomes `survivors` where the mask keeps a weight, zero elsewhere."""
    keep = mask[name].to(state[name].device)
    state[name] = torch.where(keep, survivors.to(state[name].dtype), torch.zeros_like(state[name]))


def init_signs(theta_k: dict, theta_0: dict, mask: Mask) -> dict:
    state = _copy(theta_k)
    for name in mask:
        _set_survivors(state, mask, name, torch.copysign(theta_k[name].abs(), theta_0[name].to(theta_k[name].device)))
    return state


def init_magnitudes(theta_k: dict, theta_0: dict, mask: Mask) -> dict:
    state = _copy(theta_k)
    for name in mask:
        _set_survivors(state, mask, name, torch.copysign(theta_0[name].to(theta_k[name].device).abs(), theta_k[name]))
    return state


def flip_signs(theta_k: dict, mask: Mask, fraction: float = 1.0, generator: torch.Generator | None = None) -> dict:
    """Flip the signs of round(fraction · n) of each layer's n survivors, chosen at random (all of them
    when fraction is 1, which needs no generator)."""
    state = _copy(theta_k)
    for name, keep in mask.items():  # mask order is forward order: the draws do not depend on dict luck
        flat_keep = keep.reshape(-1).cpu()
        positions = flat_keep.nonzero().reshape(-1)
        count = int(fraction * positions.numel() + 0.5)
        if count < positions.numel():
            if generator is None:
                raise ValueError("flipping a random fraction of the signs needs a seeded generator")
            positions = positions[torch.randperm(positions.numel(), generator=generator)[:count]]
        flipped = torch.zeros_like(flat_keep)
        flipped[positions] = True
        sign = torch.where(flipped, -1.0, 1.0).reshape(keep.shape).to(theta_k[name].device)
        _set_survivors(state, mask, name, theta_k[name] * sign)
    return state


def permute_within_groups(values: torch.Tensor, groups: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`values` (1-d) permuted uniformly at random among the positions that share a group id (1-d, integers):
    the i-th position of group g receives the value of a random distinct member of g."""
    if values.numel() == 0:
        return values.clone()
    keys = groups.double() + torch.rand(groups.numel(), generator=generator, dtype=torch.float64)
    by_position = torch.argsort(groups, stable=True)  # each group's positions, in order
    shuffled = torch.argsort(keys)  # each group's positions, in random order (a group's keys lie in [g, g+1))
    permuted = values.clone()
    permuted[by_position] = values[shuffled]
    return permuted


def shuffle(theta_k: dict, mask: Mask, scope: str, same_sign: bool, generator: torch.Generator) -> dict:
    """The survivors' values permuted within each group of `scope` (and, if `same_sign`, within each sign)."""
    if scope not in SHUFFLE_SCOPES:
        raise ValueError(f"unknown shuffle scope {scope!r}; choose one of {', '.join(SHUFFLE_SCOPES)}")
    state = _copy(theta_k)
    names = list(mask)
    values, groups, where = [], [], []
    unit_offset = 0
    for layer_index, name in enumerate(names):
        keep = mask[name].reshape(-1).cpu()
        positions = keep.nonzero().reshape(-1)
        survivors = theta_k[name].detach().reshape(-1).cpu()[positions]
        if scope == "global":
            group = torch.zeros_like(positions)
        elif scope == "layer":
            group = torch.full_like(positions, layer_index)
        else:
            per_unit = keep.numel() // mask[name].shape[0]
            group = positions // per_unit + unit_offset
            unit_offset += mask[name].shape[0]
        if same_sign:
            group = group * 3 + (torch.sign(survivors).long() + 1)  # negatives, zeros, positives apart
        values.append(survivors)
        groups.append(group)
        where.append(positions)
    permuted = permute_within_groups(torch.cat(values), torch.cat(groups), generator)
    start = 0
    for name, positions in zip(names, where):
        flat = torch.zeros(mask[name].numel(), dtype=permuted.dtype)
        flat[positions] = permuted[start:start + positions.numel()]
        start += positions.numel()
        _set_survivors(state, mask, name, flat.reshape(mask[name].shape).to(theta_k[name].device))
    return state


def add_noise(theta_k: dict, mask: Mask, alpha: float, stds: dict[str, float], generator: torch.Generator) -> dict:
    """Survivors + Gaussian noise of std alpha · stds[layer] (each layer's init std)."""
    state = _copy(theta_k)
    for name in mask:  # forward order: the draws do not depend on dict luck
        noise = torch.randn(theta_k[name].shape, generator=generator, dtype=torch.float64) * (alpha * stds[name])
        _set_survivors(state, mask, name, theta_k[name] + noise.to(theta_k[name].device, theta_k[name].dtype))
    return state


def perturb(perturbation: str, theta_k: dict, theta_0: dict, mask: Mask, *, generator: torch.Generator,
            flip_fraction: float) -> dict:
    """One of PERTURBATIONS applied to θk (with θ0 where the perturbation takes something from it)."""
    if perturbation == "init_signs":
        return init_signs(theta_k, theta_0, mask)
    if perturbation == "init_magnitudes":
        return init_magnitudes(theta_k, theta_0, mask)
    if perturbation == "flip_signs":
        return flip_signs(theta_k, mask)
    if perturbation == "flip_signs_random":
        return flip_signs(theta_k, mask, flip_fraction, generator)
    if perturbation in SHUFFLES:
        scope = perturbation.removeprefix("shuffle_").removesuffix("_same_sign")
        return shuffle(theta_k, mask, scope, perturbation.endswith("_same_sign"), generator)
    raise ValueError(f"unknown perturbation {perturbation!r}; choose one of {', '.join(PERTURBATIONS)}")
