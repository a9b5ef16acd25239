"""Early-bird tickets (You et al. 2020) of a batch-norm model, beside a finished IMP run of it.

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

This module is the study's whole engine: the search run, the ticket, the one-shot IMP comparison
and the run's nearest IMP round; the channel-mask math is trainer.pruning.channels.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from trainer import events, models
from trainer.analyses.common import AnalysisContext, Cancelled, adopt_old_result, check_rounds, execute, has_batch_norm
from trainer.analyses.params import Param
from trainer.pruning import masks, structured
from trainer.pruning.channels import (
    ChannelMask,
    add_bn_l1_penalty,
    bn_producers,
    channel_mask,
    distance_matrix,
    mask_distance,
    pruning_at_remaining,
    weight_mask_from_channels,
)
from trainer.pruning.masks import Mask
from trainer.rundir import RunDir, json_safe
from trainer.spec import SpecError
from trainer.steps import Step
from trainer.training.loop import train_segment

NAME = "early_bird"
# % remaining counts only weights between live units and one-shot IMP
# is pruned to that effective fraction (trainer.pruning.structured): older results mean something else
RESULTS_VERSION = 2
SEARCH_NETWORK = "early_bird_search"
TICKET_NETWORK = "early_bird_ticket"
ONE_SHOT_IMP_NETWORK = "early_bird_one_shot_imp"

PARAMS = (
    Param("prune_fraction", "float", 0.5, "Fraction p of all batch-norm channels pruned (smallest |γ|).",
          minimum=0.01, maximum=0.99),
    Param("threshold", "float", 0.1, "Mask distance under which consecutive epochs count as settled.",
          minimum=0.0, maximum=1.0),
    Param("window", "int", 5, "Consecutive distances that must all be under the threshold.", minimum=1, maximum=100),
    Param("bn_l1", "float", 1e-4, "L1 penalty on the batch-norm scales during the search (network slimming).",
          minimum=0.0, maximum=1.0),
    Param("train_examples", "int", None, "Train on the first n training examples only (a quick run); default: all.",
          minimum=1, maximum=1_000_000, optional=True),
    Param("test_examples", "int", None, "Evaluate on the first n test examples only; default: all.",
          minimum=1, maximum=1_000_000, optional=True),
    Param("one_shot_imp", "bool", True, "Also train a one-shot IMP ticket at the early-bird ticket's sparsity."),
)


def run_early_bird(run_path, prune_fraction=0.5, threshold=0.1, window=5, bn_l1=1e-4, train_examples=None,
                   test_examples=None, one_shot_imp=True, *, callback: events.Callback = events.ignore, data_dir=None,
                   stop_requested=lambda: False) -> dict:
    """Result: early_bird_on's dict (epochs, consecutive_distances, distance_matrix,
    early_bird_epoch, search, ticket, one_shot_imp, imp = the run's nearest round)."""
    params = {"prune_fraction": prune_fraction, "threshold": threshold, "window": window, "bn_l1": bn_l1,
              "train_examples": train_examples, "test_examples": test_examples, "one_shot_imp": one_shot_imp}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested, version=RESULTS_VERSION, old_layout=adopt_old_layout)


def adopt_old_layout(run_dir: RunDir) -> list[Path]:
    """Convert the results of the old entry point, <run>/early_bird/p<prune_fraction>/results.json,
    into this study's results (see trainer.analyses.common.adopt_old_result); returns the result
    directories. The old result did not record `test_examples` (taken as None: all) and recorded
    the number of training examples used, which becomes `train_examples`."""
    base = run_dir.path / "early_bird"
    adopted = []
    for old in sorted(base.glob("p*/results.json")) if base.is_dir() else []:
        result = json.loads(old.read_text())
        params = {"prune_fraction": result["prune_fraction"], "threshold": result["threshold"],
                  "window": result["window"], "bn_l1": result["bn_l1"], "train_examples": result["train_examples"],
                  "test_examples": None, "one_shot_imp": "one_shot_imp" in result}
        finished = (result["search"]["status"] == "finished"
                    and result.get("ticket", {}).get("status", "finished") == "finished")
        if finished and result.get("imp") is None and "ticket" in result:
            records = run_dir.records()
            prunable = list(records[0]["layers"]) if records else []
            result["imp"] = _nearest_imp_round(run_dir.path, prunable, result["ticket"]["remaining_fraction"])
        adopted.append(adopt_old_result(run_dir, NAME, PARAMS, params, RESULTS_VERSION,
                                        result if finished else None, old.parent))
    if base.is_dir() and not any(base.iterdir()):
        base.rmdir()
    return adopted


def _body(context: AnalysisContext) -> dict:
    spec = context.run_dir.spec
    if not has_batch_norm(spec.model, spec.dataset):
        raise SpecError("run_dir", _needs_batch_norm(spec.model, spec.dataset))
    if (done := context.reuse_finished()) is not None:
        return done
    context.start()
    finished = [r for r in context.run_dir.records() if r["status"] == "finished" and r["round"] > 0]
    result = early_bird_on(context.run, **context.params,
                                      imp_run_dir=context.run_dir.path if finished else None,
                                      callback=context.callback, stop_requested=context.stop_requested)
    if result["search"]["status"] == "cancelled" or result.get("ticket", {}).get("status") == "cancelled":
        raise Cancelled()
    return context.finish(result)


def early_bird_index(distances: list[float], window: int = 5, threshold: float = 0.1) -> int | None:
    """The first index i with distances[i-window+1 .. i] all below `threshold`, or None."""
    run = 0
    for index, distance in enumerate(distances):
        run = run + 1 if distance < threshold else 0
        if run >= window:
            return index
    return None


def _counts(sparsity: dict) -> dict:
    """A ticket's sparsity fields in the result: effective and unmasked fractions, effective parameters, costs."""
    return {key: sparsity[key] for key in ("remaining_fraction", "unmasked_fraction", "effective_parameters", "costs")}


def _nearest_imp_round(imp_run_path: Path, prunable: list[str], remaining_fraction: float) -> dict | None:
    records = [r for r in RunDir.open(imp_run_path).records() if r["status"] == "finished"]
    if not records:
        return None

    def fraction(record):
        layers = record["layers"]
        present = [n for n in prunable if n in layers]
        return sum(layers[n]["remaining"] for n in present) / sum(layers[n]["total"] for n in present)

    best = min(records, key=lambda r: abs(fraction(r) - remaining_fraction))
    return {"run_dir": str(imp_run_path), "round": best["round"], "remaining_fraction": fraction(best),
            "effective_parameters": best.get("effective_parameters"),  # absent from runs made before it existed
            "early_stop": best["early_stop"], "final": best["final"]}


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
        data = dataclasses.replace(data, train_inputs=data.train_inputs.select(slice(train_examples)),
                                   train_y=data.train_y[:train_examples])
    if test_examples is not None:
        data = dataclasses.replace(data, test_inputs=data.test_inputs.select(slice(test_examples)),
                                   test_y=data.test_y[:test_examples])
    per_epoch = data.iterations_per_epoch
    total = Step.parse(spec.training.training_steps).to_iterations(per_epoch)
    theta_init = run.theta_init()
    model = run.model_with(theta_init)
    if not bn_producers(model):
        raise ValueError(_needs_batch_norm(spec.model, spec.dataset))
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
        "threshold": threshold, "window": window, "bn_l1": bn_l1, "train_examples": len(data.train_y),
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
        # effective: a pruned channel takes the next conv's inputs too
        remaining = ticket_sparsity["remaining_fraction"]
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


def check(params: dict, info: dict) -> None:
    check_rounds(params, info)
    if not info["has_batch_norm"]:
        raise SpecError("analysis", _needs_batch_norm(info["model"], info["dataset"]))


def _needs_batch_norm(model_name: str, dataset_name: str) -> str:
    with_batch_norm = [name for name in models.MODELS if has_batch_norm(name, dataset_name)]
    return (f"{model_name} has no batch norm; early-bird tickets need a model with it "
            f"({', '.join(with_batch_norm)})")
