"""Training one round of a run's networks and recording it, for the ticket chain, the controls and
the analyses' variants alike: the round_started event, the training itself (several networks in one
stack, or one network alone), the round's record and saving it as finished.

Every function takes the run (trainer.imp.run.Run) first: its spec, data, plan and callback.
"""
from __future__ import annotations

import torch

from trainer import events
from trainer.imp.replicates import Replicate
from trainer.pruning import masks
from trainer.rundir import json_safe
from trainer.training.loop import train_segment
from trainer.training.record import SegmentResult
from trainer.training.stacked_loop import train_segments_stacked


def announce_round(run, round_index: int, network: str, mask: masks.Mask, start_iteration: int,
                   replicate: int = 0) -> None:
    run.callback(events.make_event(events.ROUND_STARTED, network, round=round_index, replicate=replicate,
                                   remaining_fraction=run.sparsity(mask)["remaining_fraction"],
                                   start_iteration=start_iteration, end_iteration=run.total_iterations))


def round_record(run, round_index: int, network: str, mask: masks.Mask, start_iteration: int,
                 segment: SegmentResult, replicate: int = 0) -> dict:
    return {
        "round": round_index, "network": network, "replicate": replicate,
        "status": segment.status, "message": segment.message,
        **run.sparsity(mask),  # remaining_fraction (effective), unmasked_fraction, effective_parameters, layers, costs
        "start_iteration": start_iteration, "end_iteration": run.total_iterations,
        "curve": json_safe(segment.curve), "train_loss": json_safe(segment.train_loss),
        "early_stop": json_safe(segment.early_stop()), "final": json_safe(segment.final()),
        "wall_seconds": round(segment.wall_seconds, 3),
    }


def finish_round(run, round_index: int, network: str, mask: masks.Mask, model: torch.nn.Module,
                 segment: SegmentResult, record: dict, replicate: Replicate | None = None) -> None:
    """Save a trained round into its replicate's part of the run directory and announce it."""
    if segment.status == "cancelled":
        return  # the round in flight is not kept: a rerun redoes it
    replicate = run.replicate_or_first(replicate)
    replicate.run_dir.save_round(round_index, network, mask, model.state_dict(), record)
    run.callback(events.make_event(events.ROUND_FINISHED, network, round=round_index, replicate=replicate.index,
                                   summary=_summary(record)))


def _summary(record: dict) -> dict:
    """A round record without its curves: small enough for an event."""
    return {k: v for k, v in record.items() if k not in ("curve", "train_loss")}


def train_round(run, round_index: int, network: str, model: torch.nn.Module, mask: masks.Mask,
                start_iteration: int, snapshot_at: int | None = None,
                frozen_values: dict | None = None) -> tuple[SegmentResult, dict]:
    """One network alone (the analyses' variants: frozen pruned weights need the solo loop); its
    segment and record."""
    announce_round(run, round_index, network, mask, start_iteration)
    segment = train_segment(model, mask, run.data, run.spec, start_iteration, run.total_iterations,
                            round_index=round_index, network=network, callback=run.callback,
                            stop_requested=run.stop_requested, snapshot_at=snapshot_at, frozen_values=frozen_values)
    return segment, round_record(run, round_index, network, mask, start_iteration, segment)


def train_networks(run, models_to_train: list[torch.nn.Module], masks_to_use: list[masks.Mask], start_iteration: int,
                   identities: list[tuple[str, int, Replicate]], snapshot_at: int | None = None) -> list[SegmentResult]:
    """Train networks that share start and end iterations in one stack. `identities` names
    each one (network, round, replicate); events go out under that identity, whatever the mix."""
    labels = {f"{network}@{round_index}#{replicate.index}": (network, round_index, replicate.index)
              for network, round_index, replicate in identities}

    def relabel(event: dict) -> None:
        network, round_index, replicate = labels[event["network"]]
        run.callback({**event, "network": network, "round": round_index, "replicate": replicate})

    segments, _ = train_segments_stacked(
        models_to_train, masks_to_use, run.data, run.spec, start_iteration, run.total_iterations,
        round_index=identities[0][1], networks=list(labels), callback=relabel,
        data_seeds=[replicate.data_seed for _, _, replicate in identities],
        stop_requested=run.stop_requested, snapshot_at=snapshot_at)
    return segments
