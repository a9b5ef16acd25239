"""Pruning at initialisation (Tanaka et al. 2020 and the baselines they compare).

Every method scores the prunable weights of θ0 (keep-scores: higher survives)
and `prune_to_remaining` cuts to an exact target count with
`rules.prune_by_scores`, so counts and ties follow the IMP rules:

    snip       |g ⊙ w|, g the loss gradient on one data batch (Lee et al. 2019)
    grasp      (H g) ⊙ w on one batch; the paper's score is S = -(H g) ⊙ w and it
               removes the highest S, i.e. keeps the highest (H g) ⊙ w (Wang et al. 2020)
    synflow    |∂R/∂w ⊙ w| of R = 1ᵀ f(1) with |w| everywhere and batch norm in eval mode,
               data-free, pruned iteratively on an exponential schedule (Tanaka et al. 2020)
    random     uniform scores (seeded)
    magnitude  |w0|

A layer left with no weights is "collapsed": the network can no longer pass a
signal and trains to chance. `collapsed_layers` names them.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from trainer.pruning import masks, rules
from trainer.pruning.masks import Mask

METHODS = ("snip", "grasp", "synflow", "random", "magnitude")
GRASP_TEMPERATURE = 200.0  # the GraSP paper divides the logits by T = 200
SYNFLOW_ITERATIONS = 100


# ---- scores -------------------------------------------------------------------------------
def _masked_copy(model: torch.nn.Module, mask: Mask | None) -> torch.nn.Module:
    copied = copy.deepcopy(model)
    if mask is not None:
        masks.apply_mask(copied, mask)
    return copied


def snip_scores(model: torch.nn.Module, names, inputs: torch.Tensor, targets: torch.Tensor,
                mask: Mask | None = None) -> dict[str, torch.Tensor]:
    """|∂L/∂w ⊙ w| for the named weights, L the mean cross-entropy on (inputs, targets)."""
    network = _masked_copy(model, mask).train()
    parameters = dict(network.named_parameters())
    weights = [parameters[name] for name in names]
    loss = F.cross_entropy(network(inputs), targets)
    gradients = torch.autograd.grad(loss, weights)
    return {name: (g * w).detach().abs().float().cpu() for name, g, w in zip(names, gradients, weights)}


def grasp_scores(model: torch.nn.Module, names, inputs: torch.Tensor, targets: torch.Tensor,
                 mask: Mask | None = None, temperature: float = GRASP_TEMPERATURE) -> dict[str, torch.Tensor]:
    """Keep-scores (H g) ⊙ w: the negative of GraSP's S = -(H g) ⊙ w, whose highest values the paper removes.

    g is the gradient of the loss on logits / temperature, H its Hessian; H g is one
    Hessian-vector product (double backward), never the Hessian itself.
    """
    network = _masked_copy(model, mask).train()
    parameters = dict(network.named_parameters())
    weights = [parameters[name] for name in names]
    loss = F.cross_entropy(network(inputs) / temperature, targets)
    gradients = torch.autograd.grad(loss, weights)
    loss = F.cross_entropy(network(inputs) / temperature, targets)
    gradients_with_graph = torch.autograd.grad(loss, weights, create_graph=True)
    dot = sum((g_graph * g.detach()).sum() for g_graph, g in zip(gradients_with_graph, gradients))
    hessian_gradient = torch.autograd.grad(dot, weights)
    return {name: (hg * w).detach().float().cpu() for name, hg, w in zip(names, hessian_gradient, weights)}


def synflow_scores(model: torch.nn.Module, names, input_shape, mask: Mask | None = None) -> dict[str, torch.Tensor]:
    """|∂R/∂w ⊙ w| with R = sum of the outputs for an all-ones input, every parameter and buffer
    replaced by its absolute value (pruned weights 0), batch norm in eval mode; float64 so deep
    nets do not overflow."""
    network = _masked_copy(model, mask).double().eval()
    with torch.no_grad():
        for tensor in network.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    parameters = dict(network.named_parameters())
    weights = [parameters[name] for name in names]
    device = weights[0].device
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    flow = network(ones).sum()
    gradients = torch.autograd.grad(flow, weights)
    return {name: (g * w).detach().abs().float().cpu() for name, g, w in zip(names, gradients, weights)}


def magnitude_scores(model: torch.nn.Module, names) -> dict[str, torch.Tensor]:
    parameters = dict(model.named_parameters())
    return rules.magnitude_scores({name: parameters[name] for name in names})


# ---- cutting to a target ------------------------------------------------------------------
def remaining_count(remaining_fraction: float, total: int) -> int:
    """Weights kept of `total` at `remaining_fraction` (the count prune_by_scores would keep)."""
    return total - rules.prune_count(1.0 - remaining_fraction, total)


def prune_to_remaining(mask: Mask, scores: dict[str, torch.Tensor], remaining_fraction: float,
                       scope: str = "global") -> Mask:
    """Prune `mask` until exactly `remaining_fraction` of all its weights survive (of each
    layer's, under layerwise scope); fractions are of the dense size, not of the survivors."""
    if scope == "global":
        total = sum(m.numel() for m in mask.values())
        survivors = sum(int(m.sum()) for m in mask.values())
        keep = remaining_count(remaining_fraction, total)
        if survivors <= keep:
            return {name: m.clone() for name, m in mask.items()}
        return rules.prune_by_scores(mask, scores, (survivors - keep) / survivors, "global")
    if scope == "layerwise":
        layer_fractions = {}
        for name, m in mask.items():
            survivors, keep = int(m.sum()), remaining_count(remaining_fraction, m.numel())
            if survivors > keep:
                layer_fractions[name] = (survivors - keep) / survivors
        return rules.prune_by_scores(mask, scores, 0.0, "layerwise", layer_fractions)
    raise ValueError(f"unknown pruning scope {scope!r}")


def collapsed_layers(mask: Mask) -> list[str]:
    """Layers with no surviving weight."""
    return [name for name, m in mask.items() if m.numel() and not bool(m.any())]


def synflow_mask(model: torch.nn.Module, mask: Mask, remaining_fraction: float, input_shape,
                 iterations: int = SYNFLOW_ITERATIONS, scope: str = "global") -> Mask:
    """Iterative SynFlow: rescore and prune to remaining_fraction^(i/iterations), i = 1..iterations."""
    current = {name: m.clone() for name, m in mask.items()}
    for step in range(1, iterations + 1):
        scores = synflow_scores(model, list(mask), input_shape, current)
        current = prune_to_remaining(current, scores, remaining_fraction ** (step / iterations), scope)
    return current


def pruning_at_init_mask(method: str, model: torch.nn.Module, mask: Mask, remaining_fraction: float, *,
                         inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                         input_shape=None, random_generator: torch.Generator | None = None,
                         scope: str = "global", synflow_iterations: int = SYNFLOW_ITERATIONS) -> Mask:
    """The mask `method` computes on `model` (θ0) to reach `remaining_fraction`."""
    names = list(mask)
    if method == "synflow":
        return synflow_mask(model, mask, remaining_fraction, input_shape, synflow_iterations, scope)
    if method == "snip":
        scores = snip_scores(model, names, inputs, targets, mask)
    elif method == "grasp":
        scores = grasp_scores(model, names, inputs, targets, mask)
    elif method == "random":
        scores = rules.random_scores(mask, random_generator)
    elif method == "magnitude":
        scores = magnitude_scores(model, names)
    else:
        raise ValueError(f"unknown pruning-at-init method {method!r}; choose one of {', '.join(METHODS)}")
    return prune_to_remaining(mask, scores, remaining_fraction, scope)
