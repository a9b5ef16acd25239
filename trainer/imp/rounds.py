"""The ticket chain: iterative magnitude pruning with rewinding (Frankle & Carbin 2019; late
rewinding to iteration k: Frankle et al. 2019, "Stabilizing the Lottery Ticket Hypothesis").

Round 0 trains the dense network from θ0 and captures θk at the rewind step.
Round r prunes round r-1's trained weights, resets the survivors to θk and
trains them from iteration k to the end. Every finished round is on disk, so
running the same spec again resumes after the last finished round; every
random choice has its own derived seed, so the resumed run is identical.
The replicates of a round train stacked.

Every function takes the run (trainer.imp.run.Run) first.
"""
from __future__ import annotations

from trainer import events
from trainer.imp import variants
from trainer.imp.replicates import Replicate
from trainer.imp.round_training import announce_round, finish_round, round_record, train_networks
from trainer.pruning import masks, rules
from trainer.rundir import save_tensor_dict_atomically
from trainer.seeds import generator
from trainer.training.stacked import chunks


def round_mask(run, round_index: int, replicate: Replicate | None = None) -> masks.Mask:
    """The mask of round r from round r-1's mask and trained weights."""
    run_dir = run.replicate_or_first(replicate).run_dir
    return next_mask(run, run_dir.mask(round_index - 1), run_dir.final_weights(round_index - 1), round_index,
                     replicate)


def next_mask(run, previous_mask: masks.Mask, trained: dict, round_index: int,
              replicate: Replicate | None = None, started_from: dict | None = None) -> masks.Mask:
    """Prune `previous_mask` by the run's rule (strategy, scope, fractions) on `trained` weights.

    `started_from`: the weights the training that produced `trained` started from, which
    criteria other than large_final compare with; default the ticket chain's (θ0 when
    `trained` is the dense round 0, θk after)."""
    spec = run.spec.pruning
    replicate = run.replicate_or_first(replicate)
    fraction, layer_fractions = run.round_fractions()
    if spec.strategy == "magnitude" and (spec.criterion != "large_final" or spec.structure != "unstructured"):
        variant = variants.Variant(criterion=spec.criterion, structure=spec.structure, norm=spec.unit_norm)
        if started_from is None:
            started_from = run.theta_init(replicate) if round_index == 1 else run.theta_rewind(replicate)
        return variants.variant_mask(run, variant, previous_mask, trained, started_from)
    if spec.strategy == "magnitude":
        scores = rules.magnitude_scores({name: trained[name] for name in previous_mask})
    else:
        scores = rules.random_scores(previous_mask, generator(replicate.init_seed, "random_pruning", round_index))
    return rules.prune_by_scores(previous_mask, scores, fraction, spec.scope, layer_fractions)


def run_ticket_rounds(run, replicates: list[Replicate] | None = None) -> str:
    """The IMP chains of `replicates` (default: every replicate), round by round; the replicates of a
    round train stacked. A diverged replicate ends its own chain only; "diverged" when all have."""
    alive = list(run.replicates if replicates is None else replicates)
    for round_index in range(0, run.spec.rounds_total() + 1):
        todo = []
        for replicate in alive:
            existing = replicate.run_dir.record(round_index)
            if existing is not None and (round_index > 0 or replicate.run_dir.theta_rewind_path.exists()):
                run.callback(events.make_event(events.ROUND_SKIPPED, round=round_index, replicate=replicate.index))
                if existing["status"] == "diverged":
                    alive = [other for other in alive if other is not replicate]
            else:
                todo.append(replicate)
        for part in chunks(len(todo), run.stack_size()) if todo else []:
            statuses = train_ticket_round(run, round_index, [todo[index] for index in part])
            if "cancelled" in statuses.values():
                return "cancelled"
            alive = [replicate for replicate in alive if statuses.get(replicate.index) != "diverged"]
        if not alive:
            return "diverged"
    return "finished"


def train_ticket_round(run, round_index: int, replicates: list[Replicate]) -> dict[int, str]:
    """Round r of the given replicates, stacked; their statuses by replicate index."""
    built = []
    for replicate in replicates:
        if round_index == 0:
            model = run.model_with(run.theta_init(replicate))
            built.append((model, masks.dense_mask(model, run.prunable)))
        else:
            mask = round_mask(run, round_index, replicate)
            built.append((run.model_with(run.theta_rewind(replicate)), mask))
    start = 0 if round_index == 0 else run.rewind_iteration
    for replicate, (_, mask) in zip(replicates, built):
        announce_round(run, round_index, events.TICKET, mask, start, replicate.index)
    segments = train_networks(
        run, [model for model, _ in built], [mask for _, mask in built], start,
        [(events.TICKET, round_index, replicate) for replicate in replicates],
        snapshot_at=run.rewind_iteration if round_index == 0 else None)
    for replicate, (model, mask), segment in zip(replicates, built, segments):
        if round_index == 0 and segment.snapshot is not None:
            save_tensor_dict_atomically(segment.snapshot, replicate.run_dir.theta_rewind_path)
        record = round_record(run, round_index, events.TICKET, mask, start, segment, replicate.index)
        finish_round(run, round_index, events.TICKET, mask, model, segment, record, replicate)
    return {replicate.index: segment.status for replicate, segment in zip(replicates, segments)}
