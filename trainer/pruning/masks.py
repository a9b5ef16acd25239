"""Masks: which weights of a network survive, and keeping the pruned ones dead.

A mask maps a parameter name to a bool tensor of the parameter's shape
(True = the weight survives). Layers not in the mask are never pruned.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

Mask = dict[str, torch.Tensor]


def dense_mask(model: torch.nn.Module, names: list[str]) -> Mask:
    parameters = dict(model.named_parameters())
    return {name: torch.ones_like(parameters[name], dtype=torch.bool, device="cpu") for name in names}


def remaining_counts(mask: Mask) -> dict[str, tuple[int, int]]:
    """name -> (surviving weights, total weights)."""
    return {name: (int(m.sum()), m.numel()) for name, m in mask.items()}


def remaining_fraction(mask: Mask) -> float:
    survivors = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    return survivors / total if total else 1.0


def layer_summary(mask: Mask) -> dict[str, dict]:
    return {name: {"shape": list(m.shape), "total": m.numel(), "remaining": int(m.sum()),
                   "remaining_fraction": int(m.sum()) / m.numel()}
            for name, m in mask.items()}


class MaskEnforcer:
    """Keeps pruned weights exactly zero during training.

    Zero the pruned weights once (`mask_weights`), then zero their gradients before
    every optimizer step (`mask_gradients`). With a zero weight, a zero gradient and a
    fresh optimizer, SGD (momentum, weight decay) and Adam all compute an update of
    exactly 0 for that weight and keep its momentum/moment state at 0, so one
    elementwise multiply per step is enough (tests check each optimizer).
    """

    def __init__(self, model: torch.nn.Module, mask: Mask):
        parameters = dict(model.named_parameters())
        pruned = [(name, m) for name, m in mask.items() if not bool(m.all())]
        self.parameters = [parameters[name] for name, _ in pruned]
        self.multipliers = [m.to(device=parameters[name].device, dtype=parameters[name].dtype) for name, m in pruned]

    @torch.no_grad()
    def mask_weights(self) -> None:
        if self.parameters:
            torch._foreach_mul_(self.parameters, self.multipliers)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        grads = [p.grad for p in self.parameters if p.grad is not None]
        if grads and len(grads) == len(self.parameters):
            torch._foreach_mul_(grads, self.multipliers)
        else:
            for parameter, multiplier in zip(self.parameters, self.multipliers):
                if parameter.grad is not None:
                    parameter.grad.mul_(multiplier)

    def after_step(self) -> None:
        """Nothing to do: zero weights with zero gradients do not move."""


class FrozenAtInitEnforcer(MaskEnforcer):
    """Pruned weights hold fixed values (their init, Zhou et al. 2019) instead of zero.

    Gradients are masked as usual; weight decay would still shrink the frozen values, so
    they are written back after every optimizer step.
    """

    def __init__(self, model: torch.nn.Module, mask: Mask, frozen_values: dict[str, torch.Tensor]):
        super().__init__(model, mask)
        names = [name for name, m in mask.items() if not bool(m.all())]
        self.keep = [mask[name].to(p.device) for name, p in zip(names, self.parameters)]
        self.frozen = [frozen_values[name].detach().to(device=p.device, dtype=p.dtype).clone()
                       for name, p in zip(names, self.parameters)]

    @torch.no_grad()
    def mask_weights(self) -> None:
        for parameter, keep, frozen in zip(self.parameters, self.keep, self.frozen):
            parameter.copy_(torch.where(keep, parameter, frozen))

    def after_step(self) -> None:
        self.mask_weights()


def apply_mask(model: torch.nn.Module, mask: Mask) -> None:
    MaskEnforcer(model, mask).mask_weights()


def save_mask(mask: Mask, path: Path) -> None:
    """Bit-packed: one bit per weight (LeNet-300-100's mask is ~33 KB)."""
    packed = {name: {"shape": list(m.shape),
                     "bits": torch.from_numpy(np.packbits(m.cpu().numpy().reshape(-1)))}
              for name, m in mask.items()}
    tmp = Path(path).with_suffix(".tmp")
    torch.save(packed, tmp)
    tmp.replace(path)


def load_mask(path: Path) -> Mask:
    packed = torch.load(path, map_location="cpu", weights_only=True)
    mask = {}
    for name, entry in packed.items():
        count = int(np.prod(entry["shape"])) if entry["shape"] else 1
        bits = np.unpackbits(entry["bits"].numpy())[:count].astype(bool)
        mask[name] = torch.from_numpy(bits).reshape(entry["shape"])
    return mask
