"""Retraining modes after pruning (Renda, Frankle & Carbin 2020), on a finished IMP run.

For each chosen round r (mask m_r) the pruned network is retrained three ways, all over
the same iterations k..T and the same data order as the IMP run's own retraining:

  weight_rewinding  survivors reset to θk, the LR schedule from k: this IS the IMP run, so
                    its stored round records are reused, nothing is retrained
  lr_rewinding      start from round r-1's FINAL weights masked by m_r, replay the LR
                    schedule from iteration k to T
  fine_tuning       start from round r-1's final weights masked by m_r, train T-k iterations
                    at the schedule's final learning rate (the rate of iteration T-1)

mask_chain "imp" (default) retrains the IMP run's own masks with each mode: the simple,
directly comparable variant (only the retraining differs). Renda et al. prune each mode's
own trained weights, which gives each mode its own chain of masks: mask_chain "own" does
that for lr_rewinding and fine_tuning (round r's mask prunes the mode's round r-1 result
with the run's pruning settings; round 1 prunes the run's dense round 0, so it equals the
IMP mask). Rounds of an own chain are computed from 1 up to the highest requested round.
"""
from __future__ import annotations

from dataclasses import replace

from trainer import events, masks
from trainer.analyses.common import (AnalysisContext, Cancelled, execute, round_finished, round_started,
                                     segment_record, summary, train_networks)
from trainer.analyses.params import Param
from trainer.spec import SpecError
from trainer.train import Schedule

NAME = "retraining"
MODES = ("weight_rewinding", "lr_rewinding", "fine_tuning")
TRAINED_MODES = ("lr_rewinding", "fine_tuning")
MASK_CHAINS = ("imp", "own")

PARAMS = (
    Param("rounds", "int_list", (), "Pruned rounds of the run to retrain; empty = every finished pruned round.",
          minimum=1, maximum=100, unordered=True),
    Param("modes", "str_list", MODES, "Retraining modes: weight_rewinding (the IMP run itself), lr_rewinding "
          "(final weights, LR schedule replayed from k), fine_tuning (final weights, final LR).", choices=MODES, unordered=True),
    Param("mask_chain", "str", "imp", "'imp': every mode retrains the IMP run's masks; 'own': lr_rewinding and "
          "fine_tuning prune their own retrained weights round after round (Renda et al.).", choices=MASK_CHAINS),
)


def run_retraining(run_path, rounds=(), modes=MODES, mask_chain="imp", *, callback: events.Callback = events.ignore,
                   data_dir=None, stop_requested=lambda: False) -> dict:
    """Retrain the masks of a finished IMP run with each mode; the result JSON (also in result.json).

    Result: {"modes": {mode: [entry per round]}, "dense": round 0 summary, "rewind_iteration",
    "total_iterations", "final_lr", "rounds", "mask_chain", ...}; an entry is a round record
    (remaining_fraction, early_stop, final, curve, train_loss, ...) plus "source" ("imp_run" or
    "retrained"), "start_weights" and "lr".
    """
    params = {"rounds": list(rounds), "modes": list(modes), "mask_chain": mask_chain}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested)


def _body(context: AnalysisContext) -> dict:
    params = context.params
    rounds = context.require_rounds(params["rounds"], "rounds", minimum=1)
    if not params["modes"]:
        raise SpecError("modes", "choose at least one mode")
    if (done := context.reuse_finished()) is not None:
        return done
    context.start()
    run_dir = context.run_dir
    records = {r["round"]: r for r in run_dir.records()}
    trained_modes = [mode for mode in params["modes"] if mode in TRAINED_MODES]
    own_chain = params["mask_chain"] == "own"
    results: dict[str, list] = {}
    for mode in params["modes"]:
        if mode == "weight_rewinding":
            results[mode] = [_imp_entry(records[r]) for r in rounds]
    for mode in trained_modes:
        todo = range(1, max(rounds) + 1) if own_chain else rounds
        entries = {}
        for round_index in todo:
            entries[round_index] = _retrain(context, mode, round_index, own_chain)
            if own_chain and entries[round_index]["status"] != "finished":
                break  # a diverged chain has no weights to prune further
        results[mode] = [entries[r] for r in rounds if r in entries]
    first = records[rounds[0]]
    return context.finish({
        "mask_chain": params["mask_chain"], "rounds": rounds, "modes": results,
        "dense": summary(records[0]) if 0 in records else None,
        "rewind_iteration": first["start_iteration"], "total_iterations": first["end_iteration"],
        "final_lr": _final_lr(context) if "fine_tuning" in trained_modes else None,
    })


def _imp_entry(record: dict) -> dict:
    return {**record, "network": "weight_rewinding", "source": "imp_run", "start_weights": "theta_rewind",
            "lr": "schedule from the rewind iteration"}


def _unit(mode: str, round_index: int) -> str:
    return f"{mode}/round_{round_index:03d}"


def _final_lr(context: AnalysisContext) -> float:
    run = context.run
    return Schedule.from_spec(run.spec.training, run.data.iterations_per_epoch).lr_at(run.total_iterations - 1)


def fine_tuning_training(training, final_lr: float):
    """The run's training settings with a constant LR at `final_lr` (no warmup, no milestones)."""
    return replace(training, lr=final_lr, lr_schedule="constant", lr_milestones=[], warmup_steps="0it")


def _retrain(context: AnalysisContext, mode: str, round_index: int, own_chain: bool) -> dict:
    unit = _unit(mode, round_index)
    stored = context.unit_record(unit)
    if stored is not None:
        return stored
    context.check_stop()
    run, run_dir = context.run, context.run_dir
    if own_chain and round_index > 1:
        previous_state = context.unit_state(_unit(mode, round_index - 1))
        mask = prune_next(run, context.unit_mask(_unit(mode, round_index - 1)), previous_state, round_index)
    elif own_chain:
        previous_state = run_dir.final_weights(0)
        mask = prune_next(run, run_dir.mask(0), previous_state, round_index)
    else:
        previous_state = run_dir.final_weights(round_index - 1)
        mask = run_dir.mask(round_index)
    if mode == "lr_rewinding":
        training, lr = run.spec.training, "schedule from the rewind iteration"
    else:
        lr = _final_lr(context)
        training = fine_tuning_training(run.spec.training, lr)
    start, end = run.rewind_iteration, run.total_iterations
    model = run.model_with(previous_state)  # train_segment zeroes the newly pruned weights first
    round_started(context.callback, mode, round_index, mask, start, end)
    [(segment, state)] = train_networks([model], [mask], run.data, run.spec, start, end, round_index=round_index,
                                        networks=[mode], training=training, callback=context.callback,
                                        stop_requested=context.stop_requested)
    if segment.status == "cancelled":
        raise Cancelled()
    start_weights = f"round {round_index - 1} final weights" + (f" ({mode} chain)" if own_chain and round_index > 1 else "")
    record = segment_record(segment, mask, round_index=round_index, network=mode, start_iteration=start,
                            end_iteration=end, source="retrained", start_weights=start_weights, lr=lr)
    context.save_unit(unit, record, state if own_chain else None, mask if own_chain else None)
    round_finished(context.callback, record)
    return record


def prune_next(run, previous_mask: masks.Mask, trained: dict, round_index: int) -> masks.Mask:
    """Round `round_index`'s mask from `previous_mask` and weights that are not the run's own."""
    return run.next_mask(previous_mask, trained, round_index)
