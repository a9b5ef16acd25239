"""Structured pruning (whole neurons and filters), which units are alive, and what a pruned network costs.

A unit is an output row of a Linear weight (a neuron) or an output channel of a
Conv2d weight (a filter). Units are ranked by the L1 or L2 norm of their
surviving weights and pruned with `pruning.prune_by_scores` on one score per
unit, so counts are exact and ties go in position order, as for weights. The
result is an ordinary weight mask with whole rows/filters False: the rest of
the engine (enforcement, rewinding, controls) works unchanged.

Liveness (`effective_mask`). A unit is alive when a signal can reach it from the input
and leave it toward the output, through batch norms, pools, flattening and residual
additions (a channel of ResNet's residual stream stays alive through the shortcut when
one conv's filter for it is pruned). A weight *survives* only if it is unmasked and both
its input and its output unit are alive: a pruned neuron also takes its outgoing column
in the next layer, a pruned channel the next conv's input channel. This is the lottery
ticket papers' "% of weights remaining" applied to structured masks (Frankle & Carbin 2019
count surviving weights; a weight that cannot carry signal does not survive), which makes
structured and early-bird tickets (You et al. 2020) comparable with IMP tickets at the same
sparsity. `training_mask` adds the biases and batch-norm γ/β of dead units, so training keeps
a pruned unit at exactly 0 and the trained network is its effective network.

`count_flops_and_parameters` reports three views of a (masked) network:
  dense       every weight and every multiply-accumulate (MAC) of the architecture
  masked      only surviving weights and their MACs (what sparse kernels could reach); its
              parameters, surviving weights + biases and batch-norm γ/β of live units, are the
              network's *effective parameters*
  effective   the dense-equivalent shrunk architecture: every weight between two live units,
              masked or not (what a smaller dense net costs)
FLOPs are about 2 × MACs. Counts are per example.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from trainer import models
from trainer.pruning import rules
from trainer.pruning.masks import Mask
from trainer.spec import UNIT_NORMS as NORMS  # one list, the spec's


# ---- structured masks ---------------------------------------------------------------------
def alive_units(keep: torch.Tensor) -> torch.Tensor:
    """(out_units,) bool: units with at least one surviving weight."""
    return keep.reshape(keep.shape[0], -1).any(dim=1)


def unit_norms(weight: torch.Tensor, keep: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """(out_units,) norm of each unit's surviving weights (float32, CPU)."""
    rows = (weight.detach().float().cpu() * keep.cpu()).reshape(weight.shape[0], -1)
    if norm == "l1":
        return rows.abs().sum(dim=1)
    if norm == "l2":
        return rows.pow(2).sum(dim=1).sqrt()
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def structured_prunable_names(model_name: str, input_shape, num_classes: int) -> list[str]:
    """Weights whose units may be pruned: every conv/linear weight but the output layer's (its units are
    the classes)."""
    output = models.output_parameter_name(model_name, input_shape, num_classes)
    return [name for name in models.prunable_parameter_names(model_name, input_shape, num_classes) if name != output]


def prune_units(mask: Mask, weights: dict[str, torch.Tensor], fraction: float, *, names=None, norm: str = "l1",
                scope: str = "layerwise", layer_fractions: dict[str, float] | None = None) -> Mask:
    """Prune `fraction` of the surviving units of each named layer (or globally, by each unit's norm
    relative to its layer's mean) by the norm of their surviving weights; returns a weight mask. Layers of
    `mask` not in `names` are copied unchanged."""
    names = list(mask) if names is None else list(names)
    unit_mask = {name: alive_units(mask[name]) for name in names}
    unit_scores = {name: unit_norms(weights[name], mask[name], norm) for name in names}
    if scope == "global":
        unit_scores = _relative_to_layer_mean(unit_scores, unit_mask)
    kept_units = rules.prune_by_scores(unit_mask, unit_scores, fraction, scope,
                                         {n: f for n, f in (layer_fractions or {}).items() if n in unit_mask})
    new_mask = {name: m.clone() for name, m in mask.items()}
    for name in names:
        shape = (-1,) + (1,) * (mask[name].dim() - 1)
        new_mask[name] = mask[name] & kept_units[name].reshape(shape)
    return new_mask


def _relative_to_layer_mean(unit_scores: dict[str, torch.Tensor], unit_mask: dict[str, torch.Tensor]) -> dict:
    """Each unit's norm over its layer's mean alive-unit norm. Raw norms grow with fan-in and differ
    by init scale, so a global ranking of raw norms empties whole early layers at once (VGG-16's
    conv1-5 in one 20% round at init); relative norms rank units against their own layer's typical size."""
    relative = {}
    for name, scores in unit_scores.items():
        alive = unit_mask[name]
        mean = scores[alive].mean() if bool(alive.any()) else scores.new_tensor(1.0)
        relative[name] = scores / mean if float(mean) > 0 else scores
    return relative


# ---- liveness: which units, and so which weights, can carry signal ------------------------
@dataclass(frozen=True)
class LayerLiveness:
    """One conv/linear layer of a traced network and which of its units are alive."""
    name: str                    # module name, e.g. 'conv3' or 'stage2.0.shortcut_conv'
    module: nn.Module            # the traced copy: shape, groups, bias
    inputs_alive: torch.Tensor   # (input channels,) or (input features,) of a linear layer, bool
    outputs_alive: torch.Tensor  # (output units,) bool
    output_positions: int        # spatial positions of one output channel (1 for a linear layer)


@dataclass(frozen=True)
class Liveness:
    layers: list[LayerLiveness]
    norms: dict[str, tuple[nn.Module, torch.Tensor]]  # batch-norm module name -> (module, channels alive)


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _alive(activation: torch.Tensor) -> torch.Tensor:
    """(units,) bool along dim 1: a signal arrives (value > 0) and leaves (gradient > 0) at some position."""
    if activation.grad is None:  # nothing of it reaches the output
        return torch.zeros(activation.shape[1], dtype=torch.bool)
    both = (activation.detach() > 0) & (activation.grad > 0)
    dims = [d for d in range(both.dim()) if d != 1]
    return both.amax(dim=dims) if dims else both


def _trace(network: nn.Module, mask: Mask, input_shape) -> Liveness:
    """Liveness of every unit of `network` (a scratch float64 CPU copy whose values are overwritten).

    Weights become their mask (1 = survives, 0 = pruned), biases 0, batch norms the identity
    scaled by their γ mask; one all-ones input goes forward and the output's sum backward. Every
    value and gradient is then >= 0 and a unit is alive exactly when some path of surviving
    weights reaches it from the input (value > 0) and leads on to the output (gradient > 0),
    whatever lies between: batch norms, pools, flattening, residual additions. Float64 keeps the
    products of fan-ins (about 1e52 for ResNet-20) far from overflow.
    """
    network.requires_grad_(False).eval()
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    modules: list[tuple[str, nn.Module]] = []

    def remember(name):
        def hook(module, inputs, output):
            for tensor in (inputs[0], output):
                if tensor.requires_grad:
                    tensor.retain_grad()
            seen[name] = (inputs[0], output)
        return hook

    handles = []
    with torch.no_grad():
        for name, module in network.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, _NORMS):
                module.bias.zero_()
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
            else:
                continue
            keep = mask.get(f"{name}.weight")
            module.weight.copy_(keep.to(module.weight) if keep is not None else torch.ones_like(module.weight))
            modules.append((name, module))
            handles.append(module.register_forward_hook(remember(name)))
    ones = torch.ones((1, *input_shape), dtype=torch.float64, requires_grad=True)
    try:
        network(ones).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    layers, norms = [], {}
    for name, module in modules:
        inputs, output = seen[name]
        if isinstance(module, _NORMS):
            norms[name] = (module, _alive(inputs))
        else:
            positions = output[0, 0].numel() if isinstance(module, nn.Conv2d) else 1
            layers.append(LayerLiveness(name, module, _alive(inputs), _alive(output), positions))
    return Liveness(layers, norms)


def _scratch_architecture(model_name: str, input_shape, num_classes: int) -> nn.Module:
    with torch.device("meta"):  # every value is overwritten by _trace: skip the random init
        network = models.MODELS[model_name].architecture(tuple(input_shape), num_classes)
    return network.to_empty(device="cpu").double()


def _scratch_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float64)


def _inputs_alive_per_weight(layer: LayerLiveness) -> torch.Tensor:
    """(out units, in units per group, 1, ...) bool: the input unit each weight reads is alive."""
    weight = layer.module.weight
    out_units, per_group = weight.shape[:2]
    groups = getattr(layer.module, "groups", 1)
    first_input = (torch.arange(out_units) // (out_units // groups)) * per_group
    alive = layer.inputs_alive[first_input[:, None] + torch.arange(per_group)[None, :]]
    return alive.reshape(out_units, per_group, *([1] * (weight.dim() - 2)))


def _effective(liveness: Liveness, mask: Mask) -> Mask:
    """Every conv/linear weight and bias and every batch-norm γ and β -> bool, True = effective."""
    def kept(name: str, shape) -> torch.Tensor:
        return mask[name].cpu().bool() if name in mask else torch.ones(shape, dtype=torch.bool)

    effective = {}
    for layer in liveness.layers:
        weight = layer.module.weight
        outputs = layer.outputs_alive.reshape(-1, *([1] * (weight.dim() - 1)))
        effective[f"{layer.name}.weight"] = kept(f"{layer.name}.weight", weight.shape) & outputs \
            & _inputs_alive_per_weight(layer)
        if layer.module.bias is not None:
            bias_kept = kept(f"{layer.name}.bias", layer.outputs_alive.shape)
            effective[f"{layer.name}.bias"] = bias_kept & layer.outputs_alive
    for name, (_module, alive) in liveness.norms.items():
        for parameter in ("weight", "bias"):
            effective[f"{name}.{parameter}"] = kept(f"{name}.{parameter}", alive.shape) & alive
    return effective


def effective_mask(model: nn.Module, mask: Mask, input_shape) -> Mask:
    """The parameters of `model` under `mask` that can carry signal: a weight is effective when it is
    unmasked and both the unit it reads and the unit it feeds are alive (see _trace); a bias, or a
    batch norm's γ and β, when its unit is alive (and it is unmasked). Covers every conv/linear weight
    and bias and every batch-norm γ/β; parameters missing from `mask` count as unmasked. `model`
    supplies the architecture only and is not changed. `mask` may hold unit masks too (an early-bird
    ticket's batch-norm γ/β)."""
    return _effective(_trace(_scratch_copy(model), mask, input_shape), mask)


def training_mask(model: nn.Module, mask: Mask, input_shape) -> Mask:
    """The mask training enforces: `mask` plus, as False, the bias and batch-norm γ and β of every dead
    unit, so a pruned neuron or channel outputs exactly 0 (not a constant bias or batch-norm shift)
    and the trained network computes exactly what its effective network does. With γ = β = 0 a
    batch norm outputs 0 whatever its running statistics. A mask without pruned entries is returned
    as it is (every unit is alive)."""
    if all(bool(m.all()) for m in mask.values()):
        return mask
    liveness = _trace(_scratch_copy(model), mask, input_shape)
    layer_weights = {f"{layer.name}.weight" for layer in liveness.layers}
    dead_unit_parameters = {name: keep for name, keep in _effective(liveness, mask).items()
                            if name not in layer_weights and not bool(keep.all())}
    return {**mask, **dead_unit_parameters}


# ---- what a record reports: sparsity and cost ---------------------------------------------
def _costs(liveness: Liveness, mask: Mask, effective: Mask) -> dict:
    """Parameters, weights and MACs per example of the three views (module docstring), plus one entry per layer."""
    report_layers = []
    totals = {view: {"parameters": 0, "weights": 0, "macs": 0} for view in ("dense", "masked", "effective")}
    for layer in liveness.layers:
        weight, positions = layer.module.weight, layer.output_positions
        per_unit = weight[0].numel() // weight.shape[1]  # kernel size (1 for linear)
        groups = getattr(layer.module, "groups", 1)
        surviving = int(effective[f"{layer.name}.weight"].sum())
        in_alive, out_alive = int(layer.inputs_alive.sum()), int(layer.outputs_alive.sum())
        shrunk_weights = out_alive * (in_alive // groups) * per_unit
        has_bias = layer.module.bias is not None
        entry = {
            "name": f"{layer.name}.weight", "kind": "conv" if isinstance(layer.module, nn.Conv2d) else "linear",
            "shape": list(weight.shape), "output_positions": positions,
            "dense": {"weights": weight.numel(), "macs": weight.numel() * positions,
                      "in_units": weight.shape[1] * groups, "out_units": weight.shape[0]},
            "masked": {"weights": surviving, "macs": surviving * positions},
            "effective": {"weights": shrunk_weights, "macs": shrunk_weights * positions,
                          "in_units": in_alive, "out_units": out_alive},
        }
        report_layers.append(entry)
        live_biases = int(effective[f"{layer.name}.bias"].sum()) if has_bias else 0
        for view, weights, biases in (("dense", weight.numel(), weight.shape[0] if has_bias else 0),
                                      ("masked", surviving, live_biases),
                                      ("effective", shrunk_weights, out_alive if has_bias else 0)):
            totals[view]["weights"] += weights
            totals[view]["macs"] += entry[view]["macs"]
            totals[view]["parameters"] += weights + biases
    for name, (module, alive) in liveness.norms.items():
        totals["dense"]["parameters"] += 2 * module.num_features
        totals["masked"]["parameters"] += int(effective[f"{name}.weight"].sum()) + int(effective[f"{name}.bias"].sum())
        totals["effective"]["parameters"] += 2 * int(alive.sum())
    return {**totals, "layers": report_layers}


def count_flops_and_parameters(model_name: str, input_shape, num_classes: int, mask: Mask | None = None) -> dict:
    """Parameters and MACs per example of `model_name` under `mask` (None = dense): dense, masked and
    effective (structured) totals plus one entry per conv/linear layer."""
    mask = mask or {}
    liveness = _trace(_scratch_architecture(model_name, input_shape, num_classes), mask, input_shape)
    return _costs(liveness, mask, _effective(liveness, mask))


def sparsity(model_name: str, input_shape, num_classes: int, mask: Mask, prunable: list[str] | None = None) -> dict:
    """What a round record reports about `mask` on `model_name` (one liveness trace):

      remaining_fraction    effective surviving weights / all weights of the prunable layers (`prunable`,
                            default the mask's conv/linear weights: an early-bird mask's batch-norm
                            entries are unit masks, not weights)
      unmasked_fraction     the same with every unmasked weight counted, dead units' included
      effective_parameters  effective weights of every layer + biases and batch-norm γ/β of live units
      layers                per prunable layer: shape, total, remaining (effective), unmasked, remaining_fraction
      costs                 count_flops_and_parameters' dense / masked / effective views
    """
    liveness = _trace(_scratch_architecture(model_name, input_shape, num_classes), mask, input_shape)
    effective = _effective(liveness, mask)
    layer_weights = {f"{layer.name}.weight" for layer in liveness.layers}
    prunable = [name for name in (mask if prunable is None else prunable) if name in layer_weights and name in mask]
    costs = _costs(liveness, mask, effective)
    layers = {name: {"shape": list(mask[name].shape), "total": mask[name].numel(),
                     "remaining": int(effective[name].sum()), "unmasked": int(mask[name].sum()),
                     "remaining_fraction": int(effective[name].sum()) / mask[name].numel()}
              for name in prunable}
    total = sum(layer["total"] for layer in layers.values())
    return {"remaining_fraction": sum(layer["remaining"] for layer in layers.values()) / total if total else 1.0,
            "unmasked_fraction": sum(layer["unmasked"] for layer in layers.values()) / total if total else 1.0,
            "effective_parameters": costs["masked"]["parameters"], "layers": layers,
            "costs": {view: costs[view] for view in ("dense", "masked", "effective")}}


def counted_sparsity(mask: Mask, prunable: list[str]) -> dict:
    """sparsity() for networks whose units are not traced (language models, agents: embeddings, recurrent
    gates and two-headed nets have no single chain of units): every unmasked weight counts as remaining,
    effective = unmasked, and costs count weights only (no MACs: they depend on the sequence length or
    rollout, not on the mask alone)."""
    layers = {name: {"shape": list(mask[name].shape), "total": mask[name].numel(),
                     "remaining": int(mask[name].sum()), "unmasked": int(mask[name].sum()),
                     "remaining_fraction": int(mask[name].sum()) / mask[name].numel()}
              for name in prunable if name in mask}
    total = sum(layer["total"] for layer in layers.values())
    remaining = sum(layer["remaining"] for layer in layers.values())
    dense = {"parameters": total, "weights": total, "macs": None}
    kept = {"parameters": remaining, "weights": remaining, "macs": None}
    return {"remaining_fraction": remaining / total if total else 1.0,
            "unmasked_fraction": remaining / total if total else 1.0,
            "effective_parameters": remaining, "layers": layers,
            "costs": {"dense": dense, "masked": kept, "effective": dict(kept)}}
