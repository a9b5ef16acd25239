"""The controls of the ticket chain (Frankle & Carbin 2019). They branch off a finished run
(open_lth semantics: they train the same iterations k..T as the ticket they control), and one
trains from scratch:
  random_reinit               the round's mask on a fresh initialisation, iterations k..T
  random_reinit_from_scratch  the same network, iterations 0..T (Frankle & Carbin 2019's control;
                              equal to random_reinit when k = 0)
  random_prune                a random mask with the round's per-layer sparsity, on θk
Controls of every replicate that share their start iteration train stacked.

Every function takes the run (trainer.imp.run.Run) first.
"""
from __future__ import annotations

import torch

from trainer import events
from trainer.imp.replicates import Replicate
from trainer.imp.round_training import announce_round, finish_round, round_record, train_networks
from trainer.pruning import masks, rules
from trainer.seeds import derive_seed, generator
from trainer.training.stacked import chunks


def control_network(run, kind: str, round_index: int,
                    replicate: Replicate | None = None) -> tuple[torch.nn.Module, masks.Mask]:
    """The starting network and mask of one control of a finished round."""
    replicate = run.replicate_or_first(replicate)
    ticket_mask = replicate.run_dir.mask(round_index)
    if kind in ("random_reinit", "random_reinit_from_scratch"):  # the same fresh init; they differ in start
        return run.fresh_model(derive_seed(replicate.init_seed, "random_reinit", round_index) % (2**31)), ticket_mask
    if kind == "random_prune":
        return (run.model_with(run.theta_rewind(replicate)),
                rules.random_mask_like(ticket_mask, generator(replicate.init_seed, "random_prune", round_index)))
    raise ValueError(f"unknown control {kind!r}")


def control_start(run, kind: str) -> int:
    """The iteration a control starts training at: the ticket's k, or 0 for the from-scratch reinit."""
    return 0 if kind == "random_reinit_from_scratch" else run.rewind_iteration


def planned_controls(run, kinds: list[str], rounds: list[int]) -> list[tuple[str, int, Replicate]]:
    """(kind, round, replicate) of every control of the chosen rounds (default: all) that finished in
    each replicate's chain, trained or not, in training order: replicate, round, kind."""
    planned = []
    for replicate in run.replicates:
        finished_rounds = [r["round"] for r in replicate.run_dir.records()
                           if r["status"] == "finished" and r["round"] > 0]
        for round_index in rounds or finished_rounds:
            if round_index in finished_rounds:
                planned += [(kind, round_index, replicate) for kind in kinds]
    return planned


def by_start(run, networks: list) -> dict[int, list]:
    """Controls grouped by the iteration they start at, earliest first: each group can share a stack."""
    groups: dict[int, list] = {}
    for network in networks:
        groups.setdefault(control_start(run, network[0]), []).append(network)
    return dict(sorted(groups.items()))


def run_controls(run, kinds: list[str], rounds: list[int]) -> str:
    """Train the missing controls of the chosen rounds of every replicate, stacked: they all
    share the iterations k..T."""
    return train_controls(run, planned_controls(run, kinds, rounds))


def train_controls(run, networks: list[tuple[str, int, Replicate]]) -> str:
    """Train those of `networks` (kind, round, replicate) not on disk yet; networks that share their
    start iteration train in one stack (in chunks of the run's stack size)."""
    todo = []
    for kind, round_index, replicate in networks:
        if replicate.run_dir.record(round_index, kind) is not None:
            run.callback(events.make_event(events.ROUND_SKIPPED, kind, round=round_index, replicate=replicate.index))
        else:
            todo.append((kind, round_index, replicate))
    for start, group in by_start(run, todo).items():
        for part in chunks(len(group), run.stack_size()):
            networks = [group[index] for index in part]
            built = [control_network(run, kind, round_index, replicate) for kind, round_index, replicate in networks]
            for (kind, round_index, replicate), (_, mask) in zip(networks, built):
                announce_round(run, round_index, kind, mask, start, replicate.index)
            segments = train_networks(run, [model for model, _ in built], [mask for _, mask in built], start, networks)
            for (kind, round_index, replicate), (model, mask), segment in zip(networks, built, segments):
                record = round_record(run, round_index, kind, mask, start, segment, replicate.index)
                finish_round(run, round_index, kind, mask, model, segment, record, replicate)
            if any(segment.status == "cancelled" for segment in segments):
                return "cancelled"
    return "finished"
