"""Channel masks from batch-norm scales (You et al. 2020, "Drawing early-bird tickets"; Liu et al.
2017's network slimming): pure tensor functions that the early-bird study (trainer.analyses.early_bird)
calls. A channel mask keeps the top (1 - p) of |γ| over all batch-norm layers at once; it expands
to weight masks (the producing conv's filter and the batch norm's γ and β), and two channel masks
are compared by their normalised Hamming distance.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.pruning import masks, rules
from trainer.pruning.masks import Mask

ChannelMask = dict[str, torch.Tensor]  # batch-norm module name -> (channels,) bool, True = kept

def bn_producers(model: nn.Module) -> dict[str, str]:
    """Batch-norm module name -> the conv whose output channels it normalises.

    The producer is the last Conv2d registered before the batch norm with as many output
    channels; every model of the registry registers layers in forward order.
    """
    producers, last_conv = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            last_conv[module.out_channels] = name
        elif isinstance(module, nn.BatchNorm2d):
            if module.num_features not in last_conv:
                raise ValueError(f"no conv produces the channels of batch norm {name!r}")
            producers[name] = last_conv[module.num_features]
    return producers


def channel_mask(model: nn.Module, prune_fraction: float) -> ChannelMask:
    """Keep the channels of the largest |γ| over all batch norms together: exactly round(p·total)
    channels go, ties in position order (the IMP counting rules)."""
    scales = {name: module.weight.detach().abs().float().cpu() for name, module in model.named_modules()
              if isinstance(module, nn.BatchNorm2d)}
    everything = {name: torch.ones_like(scale, dtype=torch.bool) for name, scale in scales.items()}
    return rules.prune_by_scores(everything, scales, prune_fraction, "global")


def mask_distance(first: ChannelMask, second: ChannelMask) -> float:
    """Normalised Hamming distance: the fraction of channels kept in one mask and not the other."""
    differing = sum(int((first[name] != second[name]).sum()) for name in first)
    total = sum(m.numel() for m in first.values())
    return differing / total if total else 0.0


def distance_matrix(channel_masks: list[ChannelMask]) -> list[list[float]]:
    return [[mask_distance(a, b) for b in channel_masks] for a in channel_masks]


def weight_mask_from_channels(model: nn.Module, channels: ChannelMask, prunable: list[str]) -> Mask:
    """Weight masks: the dense mask of `prunable`, with each pruned channel's producing filter
    removed, plus the batch norms' γ and β (pruned channels False)."""
    weight_mask = masks.dense_mask(model, prunable)
    producers = bn_producers(model)
    for bn_name, kept in channels.items():
        conv_weight = f"{producers[bn_name]}.weight"
        if conv_weight not in weight_mask:
            weight_mask[conv_weight] = masks.dense_mask(model, [conv_weight])[conv_weight]
        filters = weight_mask[conv_weight]
        weight_mask[conv_weight] = filters & kept.reshape(-1, *([1] * (filters.dim() - 1)))
        weight_mask[f"{bn_name}.weight"] = kept.clone()
        weight_mask[f"{bn_name}.bias"] = kept.clone()
    return weight_mask


def add_bn_l1_penalty(model: nn.Module, strength: float) -> list:
    """Add strength·sign(γ) to every batch-norm γ gradient (the subgradient of strength·Σ|γ|);
    returns the hook handles."""
    handles = []
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and strength > 0:
            gamma = module.weight
            handles.append(gamma.register_hook(lambda grad, gamma=gamma: grad + strength * torch.sign(gamma.detach())))
    return handles


def pruning_at_remaining(mask: Mask, weights: dict[str, torch.Tensor], remaining_fraction: float) -> Mask:
    """Global magnitude pruning of a dense mask to exactly the count closest to `remaining_fraction`."""
    total = sum(m.numel() for m in mask.values())
    keep = round(remaining_fraction * total)
    return rules.prune_by_scores(mask, rules.magnitude_scores(weights), (total - keep) / total, "global")
