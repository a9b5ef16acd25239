"""Structured pruning (whole neurons and filters) and the cost of a pruned network.

A unit is an output row of a Linear weight (a neuron) or an output channel of a
Conv2d weight (a filter). Units are ranked by the L1 or L2 norm of their
surviving weights and pruned with `pruning.prune_by_scores` on one score per
unit, so counts are exact and ties go in position order, as for weights. The
result is an ordinary weight mask with whole rows/filters False: the rest of
the engine (enforcement, rewinding, controls) works unchanged. A pruned unit
keeps its bias, so it outputs a constant that could be folded into the next
layer's bias; the structured cost below counts it as removed.

`count_flops_and_parameters` reports three views of a (masked) network:
  dense       every weight and every multiply-accumulate (MAC) of the architecture
  masked      only surviving weights and their MACs (what sparse kernels could reach)
  effective   the dense-equivalent shrunk architecture: a unit is kept only if a signal
              reaches it from the input and it reaches the output, so a pruned neuron
              also removes its column in the next layer (what a smaller dense net costs)
FLOPs are about 2 × MACs. Counts are per example.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer import models, pruning
from trainer.masks import Mask

from trainer.spec import UNIT_NORMS as NORMS  # noqa: E402  (one list, the spec's)


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
    """Weights whose units may be pruned: every conv/linear weight but the output layer's (its units are the classes)."""
    output = models.output_parameter_name(model_name, input_shape, num_classes)
    return [name for name in models.prunable_parameter_names(model_name, input_shape, num_classes) if name != output]


def prune_units(mask: Mask, weights: dict[str, torch.Tensor], fraction: float, *, names=None, norm: str = "l1",
                scope: str = "layerwise", layer_fractions: dict[str, float] | None = None) -> Mask:
    """Prune `fraction` of the surviving units of each named layer (or globally) by the norm of their
    surviving weights; returns a weight mask. Layers of `mask` not in `names` are copied unchanged."""
    names = list(mask) if names is None else list(names)
    unit_mask = {name: alive_units(mask[name]) for name in names}
    unit_scores = {name: unit_norms(weights[name], mask[name], norm) for name in names}
    kept_units = pruning.prune_by_scores(unit_mask, unit_scores, fraction, scope,
                                         {n: f for n, f in (layer_fractions or {}).items() if n in unit_mask})
    new_mask = {name: m.clone() for name, m in mask.items()}
    for name in names:
        shape = (-1,) + (1,) * (mask[name].dim() - 1)
        new_mask[name] = mask[name] & kept_units[name].reshape(shape)
    return new_mask


# ---- cost of a pruned network -------------------------------------------------------------
def _channel_alive(activation: torch.Tensor) -> torch.Tensor:
    """(channels,) bool: a signal arrives (value > 0) and leaves (gradient > 0) at some position."""
    both = (activation.detach() > 0) & (activation.grad > 0)
    dims = [d for d in range(both.dim()) if d != 1]
    return both.amax(dim=dims) if dims else both


def count_flops_and_parameters(model_name: str, input_shape, num_classes: int, mask: Mask | None = None) -> dict:
    """Parameters and MACs per example of `model_name` under `mask` (None = dense): dense, masked and
    effective (structured) totals plus one entry per conv/linear layer. Liveness comes from one
    float64 pass with the mask as weights (1 = survives), zero biases and identity batch norm."""
    mask = mask or {}
    with torch.device("meta"):  # every value is overwritten below: skip the random init
        network = models.MODELS[model_name].architecture(tuple(input_shape), num_classes)
    network = network.to_empty(device="cpu").double().eval()
    layers, norms, seen = [], [], {}

    def remember(name):
        def hook(module, inputs, output):
            inputs[0].retain_grad()
            output.retain_grad()
            seen[name] = (inputs[0], output)
        return hook

    handles = []
    with torch.no_grad():
        for name, module in network.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                weight_name = f"{name}.weight"
                keep = mask.get(weight_name)
                module.weight.copy_(keep.double() if keep is not None else torch.ones_like(module.weight))
                if module.bias is not None:
                    module.bias.zero_()
                layers.append((name, module))
                handles.append(module.register_forward_hook(remember(name)))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
                norms.append((name, module))
                handles.append(module.register_forward_hook(remember(name)))
    ones = torch.ones((1, *input_shape), dtype=torch.float64, requires_grad=True)
    network(ones).sum().backward()
    for handle in handles:
        handle.remove()

    report_layers = []
    totals = {view: {"parameters": 0, "weights": 0, "macs": 0} for view in ("dense", "masked", "effective")}
    for name, module in layers:
        inputs, output = seen[name]
        weight = module.weight
        positions = output[0, 0].numel() if isinstance(module, nn.Conv2d) else 1
        per_unit = weight[0].numel() // weight.shape[1]  # kernel size (1 for linear)
        groups = getattr(module, "groups", 1)
        keep = mask.get(f"{name}.weight")
        surviving = int(keep.sum()) if keep is not None else weight.numel()
        in_alive, out_alive = int(_channel_alive(inputs).sum()), int(_channel_alive(output).sum())
        effective_weights = out_alive * (in_alive // groups) * per_unit
        bias = module.bias is not None
        entry = {
            "name": f"{name}.weight", "kind": "conv" if isinstance(module, nn.Conv2d) else "linear",
            "shape": list(weight.shape), "output_positions": positions,
            "dense": {"weights": weight.numel(), "macs": weight.numel() * positions,
                      "in_units": weight.shape[1] * groups, "out_units": weight.shape[0]},
            "masked": {"weights": surviving, "macs": surviving * positions},
            "effective": {"weights": effective_weights, "macs": effective_weights * positions,
                          "in_units": in_alive, "out_units": out_alive},
        }
        report_layers.append(entry)
        for view, weights, biases in (("dense", weight.numel(), weight.shape[0] if bias else 0),
                                      ("masked", surviving, weight.shape[0] if bias else 0),
                                      ("effective", effective_weights, out_alive if bias else 0)):
            totals[view]["weights"] += weights
            totals[view]["macs"] += entry[view]["macs"]
            totals[view]["parameters"] += weights + biases
    for name, module in norms:
        channels = module.num_features
        alive = int(_channel_alive(seen[name][0]).sum())
        totals["dense"]["parameters"] += 2 * channels
        totals["masked"]["parameters"] += sum(int(mask[key].sum()) if key in mask else channels
                                              for key in (f"{name}.weight", f"{name}.bias"))
        totals["effective"]["parameters"] += 2 * alive
    return {**totals, "layers": report_layers}
