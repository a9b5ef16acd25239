"""Early-bird tickets (You et al. 2020): channel masks from batch-norm scales during one run.

At the end of every epoch of one dense training run of a batch-norm model, the
channel mask keeps the top (1 - p) of |γ| over all batch-norm layers at once.
The normalised Hamming distance between consecutive epochs' masks falls as the
mask settles; the early-bird epoch is the first epoch at which the last
`window` consecutive distances are all below `threshold`. Training uses the
paper's L1 penalty on γ (network slimming), added to γ's gradient.

The ticket: the early-bird channel mask expanded to weight masks (the conv
producing each pruned channel loses that filter; its batch norm's γ and β are
masked too, so the channel outputs exactly zero), trained from θ0 like any
ticket, and compared with the IMP ticket of a finished run at the nearest
sparsity.

Sparsity is counted as for every ticket (trainer.pruning.structured.effective_mask): a weight
survives only between two live units, so a pruned channel also removes the next conv's
weights reading it, and pruning half of VGG-16's channels leaves about a quarter of its
weights, not half. The one-shot IMP comparison is pruned to the ticket's *effective*
remaining fraction, so both hold the same number of weights that can carry signal.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from trainer import events
from trainer.pruning import masks, rules, structured
from trainer.pruning.masks import Mask
from trainer.rundir import RunDir, json_safe, write_json_atomically
from trainer.spec import ExperimentSpec
from trainer.steps import Step
from trainer.training.loop import train_segment

ChannelMask = dict[str, torch.Tensor]  # batch-norm module name -> (channels,) bool, True = kept

SEARCH_NETWORK = "early_bird_search"
TICKET_NETWORK = "early_bird_ticket"
ONE_SHOT_IMP_NETWORK = "early_bird_one_shot_imp"


# ---- channel masks and their distances ------------------------------------------------------
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


def early_bird_index(distances: list[float], window: int = 5, threshold: float = 0.1) -> int | None:
    """The first index i with distances[i-window+1 .. i] all below `threshold`, or None."""
    run = 0
    for index, distance in enumerate(distances):
        run = run + 1 if distance < threshold else 0
        if run >= window:
            return index
    return None


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


def _counts(sparsity: dict) -> dict:
    """A ticket's sparsity fields in the result: effective and unmasked fractions, effective parameters, costs."""
    return {key: sparsity[key] for key in ("remaining_fraction", "unmasked_fraction", "effective_parameters", "costs")}


# ---- entry point --------------------------------------------------------------------------
def _nearest_imp_round(imp_run_path: Path, prunable: list[str], remaining_fraction: float) -> dict | None:
    records = [r for r in RunDir.open(imp_run_path).records() if r["status"] == "finished"]
    if not records:
        return None

    def fraction(record):
        layers = record["layers"]
        return sum(layers[n]["remaining"] for n in prunable if n in layers) / sum(layers[n]["total"] for n in prunable if n in layers)

    best = min(records, key=lambda r: abs(fraction(r) - remaining_fraction))
    return {"run_dir": str(imp_run_path), "round": best["round"], "remaining_fraction": fraction(best),
            "effective_parameters": best.get("effective_parameters"),  # absent from runs made before it existed
            "early_stop": best["early_stop"], "final": best["final"]}


def run_early_bird(spec: ExperimentSpec, runs_root: Path, *, prune_fraction: float = 0.5, threshold: float = 0.1,
                   window: int = 5, bn_l1: float = 1e-4, train_examples: int | None = None,
                   test_examples: int | None = None, imp_run_dir: Path | None = None,
                   one_shot_imp: bool = True, retrain: bool = True, data_dir=None,
                   callback: events.Callback = events.ignore,
                   stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """`early_bird_on` the run of `spec` under `runs_root` (created if needed: only θ0 is used);
    the result is also written to <run dir>/early_bird/p<prune_fraction>/results.json."""
    from trainer.imp import Run

    spec.validate()
    run_dir = RunDir.create(runs_root, spec)
    run = Run(spec, run_dir, data_dir, callback, stop_requested)
    result = early_bird_on(run, prune_fraction=prune_fraction, threshold=threshold, window=window, bn_l1=bn_l1,
                           train_examples=train_examples, test_examples=test_examples, imp_run_dir=imp_run_dir,
                           one_shot_imp=one_shot_imp, retrain=retrain, callback=callback,
                           stop_requested=stop_requested)
    directory = run_dir.path / "early_bird" / f"p{prune_fraction:g}"
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomically(directory / "results.json", result)
    return result


def early_bird_on(run, *, prune_fraction: float = 0.5, threshold: float = 0.1, window: int = 5, bn_l1: float = 1e-4,
                  train_examples: int | None = None, test_examples: int | None = None,
                  imp_run_dir: Path | None = None, one_shot_imp: bool = True, retrain: bool = True,
                  callback: events.Callback = events.ignore,
                  stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """One dense run of `run`'s spec (a batch-norm model) from θ0 that records the channel mask
    after every epoch (training length in epochs of the possibly reduced training set), then
    the early-bird ticket trained from θ0.

    `train_examples` / `test_examples` keep the first n examples of the training / test split
    (a quick run). Comparisons at the ticket's sparsity over the prunable weights: with
    `one_shot_imp`, a one-shot IMP ticket (global magnitude pruning of the search run's final
    weights, reset to θ0, trained the same way); with `imp_run_dir`, the nearest round of a
    finished IMP run of the same model. Returns a JSON-safe dict.
    """
    if not 0.0 < prune_fraction < 1.0:
        raise ValueError(f"prune_fraction must be in (0, 1), got {prune_fraction}")
    spec = dataclasses.replace(run.spec, training=dataclasses.replace(run.spec.training, eval_interval="1ep"))
    data = run.data
    if train_examples is not None:
        data = dataclasses.replace(data, train_x=data.train_x[:train_examples], train_y=data.train_y[:train_examples])
    if test_examples is not None:
        data = dataclasses.replace(data, test_x=data.test_x[:test_examples], test_y=data.test_y[:test_examples])
    per_epoch = data.iterations_per_epoch
    total = Step.parse(spec.training.training_steps).to_iterations(per_epoch)
    theta_init = run.theta_init()
    model = run.model_with(theta_init)
    if not bn_producers(model):
        raise ValueError(f"{spec.model} has no batch norm: early-bird tickets need one (vgg16, resnet20)")
    epoch_masks: list[ChannelMask] = []
    epochs: list[int] = []

    def sparsity_of(mask: Mask) -> dict:
        return structured.sparsity(spec.model, data.info.input_shape, data.info.num_classes, mask, run.prunable)

    def watch(event: dict) -> None:
        if event["type"] == events.EVAL and event["iteration"] > 0 and event["iteration"] % per_epoch == 0:
            epochs.append(event["iteration"] // per_epoch)
            epoch_masks.append(channel_mask(model, prune_fraction))
        callback(event)

    handles = add_bn_l1_penalty(model, bn_l1)
    dense = masks.dense_mask(model, run.prunable)
    callback(events.make_event(events.ROUND_STARTED, SEARCH_NETWORK, round=0, remaining_fraction=1.0,
                               start_iteration=0, end_iteration=total))
    search = train_segment(model, dense, data, spec, 0, total, round_index=0, network=SEARCH_NETWORK,
                           callback=watch, stop_requested=stop_requested)
    for handle in handles:
        handle.remove()
    consecutive = [mask_distance(epoch_masks[i - 1], epoch_masks[i]) for i in range(1, len(epoch_masks))]
    found = early_bird_index(consecutive, window, threshold)
    early_bird_epoch = epochs[found + 1] if found is not None else None  # distance i compares epochs i and i+1
    result = {
        "run_dir": str(run.run_dir.path), "model": spec.model, "prune_fraction": prune_fraction,
        "threshold": threshold, "window": window, "bn_l1": bn_l1, "train_examples": int(data.train_x.shape[0]),
        "epochs": epochs, "consecutive_distances": consecutive, "distance_matrix": distance_matrix(epoch_masks),
        "early_bird_epoch": early_bird_epoch,
        # The search trains on to the end (the one-shot IMP baseline prunes its final weights); an
        # early-bird user would stop here: the share of the search's training that would have taken.
        "search_fraction_at_early_bird": early_bird_epoch / epochs[-1] if early_bird_epoch and epochs else None,
        "search": {"status": search.status, "final": search.final(), "early_stop": search.early_stop(),
                   "wall_seconds": round(search.wall_seconds, 3)},
    }
    if retrain and search.status == "finished" and epoch_masks:
        # no early bird within the run: the last epoch's mask stands in, flagged by early_bird_epoch None
        chosen = epoch_masks[found + 1] if found is not None else epoch_masks[-1]
        ticket = run.model_with(theta_init)
        weight_mask = weight_mask_from_channels(ticket, chosen, run.prunable)
        ticket_sparsity = sparsity_of(weight_mask)
        remaining = ticket_sparsity["remaining_fraction"]  # effective: a pruned channel takes the next conv's inputs too
        callback(events.make_event(events.ROUND_STARTED, TICKET_NETWORK, round=1, remaining_fraction=remaining,
                                   start_iteration=0, end_iteration=total))
        began = time.perf_counter()
        segment = train_segment(ticket, weight_mask, data, spec, 0, total, round_index=1, network=TICKET_NETWORK,
                                callback=callback, stop_requested=stop_requested)
        result["ticket"] = {
            "mask_epoch": epochs[found + 1] if found is not None else epochs[-1],
            "status": segment.status, **_counts(ticket_sparsity),
            "channels_kept": sum(int(m.sum()) for m in chosen.values()),
            "channels_total": sum(m.numel() for m in chosen.values()),
            "final": segment.final(), "early_stop": segment.early_stop(),
            "wall_seconds": round(time.perf_counter() - began, 3),
        }
        if one_shot_imp:
            imp_model = run.model_with(theta_init)
            final_weights = dict(model.named_parameters())
            # the same number of weights that can carry signal as the early-bird ticket, not its unmasked count
            imp_mask = pruning_at_remaining(dense, {n: final_weights[n] for n in dense}, remaining)
            imp_sparsity = sparsity_of(imp_mask)
            callback(events.make_event(events.ROUND_STARTED, ONE_SHOT_IMP_NETWORK, round=1,
                                       remaining_fraction=imp_sparsity["remaining_fraction"],
                                       start_iteration=0, end_iteration=total))
            imp_segment = train_segment(imp_model, imp_mask, data, spec, 0, total, round_index=1,
                                        network=ONE_SHOT_IMP_NETWORK, callback=callback, stop_requested=stop_requested)
            result["one_shot_imp"] = {"status": imp_segment.status, **_counts(imp_sparsity),
                                      "final": imp_segment.final(), "early_stop": imp_segment.early_stop(),
                                      "wall_seconds": round(imp_segment.wall_seconds, 3)}
        if imp_run_dir is not None:
            result["imp"] = _nearest_imp_round(Path(imp_run_dir), run.prunable, remaining)
    return json_safe(result)


