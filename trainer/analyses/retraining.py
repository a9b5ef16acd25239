"""Retraining modes after pruning (Renda, Frankle & Carbin 2020, "Comparing Rewinding and
Fine-tuning in Neural Network Pruning", ICLR), on a finished IMP run.

After each pruning, the pruned network is retrained one of three ways, all for the same
budget of T-k iterations (iterations k..T, the same data order as the IMP run's rounds):

  weight_rewinding  survivors reset to θk, the LR schedule replayed from k
  lr_rewinding      the previous round's FINAL weights (masked), the LR schedule replayed from k
  fine_tuning       the previous round's final weights (masked), T-k iterations at the schedule's
                    final learning rate (the rate of iteration T-1)

mask_chain "own" (default, Renda et al.'s procedure): each mode is its own iterative chain:
round r prunes THAT MODE's round r-1 weights (compared, for criteria other than large_final,
with the weights that round started from) with the run's pruning settings, then retrains
them by the mode. Round 1 prunes the run's dense round 0, so every chain's first mask is the
IMP mask; from round 2 on the masks differ as the modes' weights do. Weight rewinding's own
chain is the IMP run itself (same procedure, seeds, data order and pruning rule: prune the
previous round's trained weights, reset to θk, train k..T), so its stored rounds are reused
exactly, not retrained. Rounds of an own chain are computed from 1 up to the highest
requested round.

mask_chain "imp_masks": every mode retrains the IMP ticket's masks (round r's mask applied to
the IMP run's round r-1 final weights): it isolates the retraining from the mask, which is a
different question from Renda et al.'s, where each procedure also finds its own masks.
"""
from __future__ import annotations

from dataclasses import replace

from trainer import events, tasks
from trainer.analyses.common import (
    AnalysisContext,
    Cancelled,
    execute,
    round_finished,
    round_started,
    segment_record,
    summary,
    train_networks,
)
from trainer.analyses.params import Param
from trainer.imp.rounds import next_mask
from trainer.pruning import masks
from trainer.spec import SpecError
from trainer.training.loop import Schedule

NAME = "retraining"
# 2: the default mask chain became each mode's own (it was the IMP run's masks)
RESULTS_VERSION = 2
MODES = ("weight_rewinding", "lr_rewinding", "fine_tuning")
TRAINED_MODES = ("lr_rewinding", "fine_tuning")
MASK_CHAINS = ("own", "imp_masks")

PARAMS = (
    Param("rounds", "int_list", (), "Pruned rounds of the run to retrain; empty = every finished pruned round.",
          minimum=1, maximum=100, unordered=True),
    Param("modes", "str_list", MODES,
          "Retraining modes: weight_rewinding (θk, LR schedule from k: the IMP run itself), "
          "lr_rewinding (final weights, LR schedule replayed from k), fine_tuning (final weights, final LR); "
          "each retrains T-k iterations.", choices=MODES, unordered=True),
    Param("mask_chain", "str", "own", "'own' (Renda et al.): each mode prunes its own retrained weights round after "
          "round, so each has its own masks (weight rewinding's own chain is the IMP run). 'imp_masks': every mode "
          "retrains the IMP ticket's masks from the IMP run's weights, which compares retraining on equal masks "
          "and is not Renda et al.'s procedure.", choices=MASK_CHAINS,
          labels=("each mode's own masks (Renda et al.)", "the IMP ticket's masks (not Renda et al.'s procedure)")),
)


def run_retraining(run_path, rounds=(), modes=MODES, mask_chain="own", *, callback: events.Callback = events.ignore,
                   data_dir=None, stop_requested=lambda: False) -> dict:
    """Retrain the masks of a finished IMP run with each mode; the result JSON (also in result.json).

    Result: {"modes": {mode: [entry per round]}, "dense": round 0 summary, "rewind_iteration",
    "total_iterations", "retraining_iterations", "final_lr", "rounds", "mask_chain", ...}; an entry
    is a round record (remaining_fraction, early_stop, final, curve, train_loss, ...) plus "source"
    ("imp_run" or "retrained"), "masks" ("own chain" or "imp run"), "start_weights" and "lr".
    """
    params = {"rounds": list(rounds), "modes": list(modes), "mask_chain": mask_chain}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested, version=RESULTS_VERSION)


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
        "retraining_iterations": first["end_iteration"] - first["start_iteration"],
        "final_lr": _final_lr(context) if "fine_tuning" in trained_modes else None,
    })


def _imp_entry(record: dict) -> dict:
    return {**record, "network": "weight_rewinding", "source": "imp_run", "masks": "imp run",
            "start_weights": "theta_rewind", "lr": "schedule from the rewind iteration"}


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
    if own_chain:
        previous_mask, previous_state = _own_round(context, mode, round_index - 1)
        trained_from = run.theta_init() if round_index == 1 else _own_start(context, mode, round_index - 1)
        mask = next_mask(run, previous_mask, previous_state, round_index, started_from=trained_from)
    else:
        previous_state, mask = run_dir.final_weights(round_index - 1), run_dir.mask(round_index)
    if mode == "lr_rewinding":
        training, lr = run.spec.training, "schedule from the rewind iteration"
    else:
        lr = _final_lr(context)
        training = fine_tuning_training(run.spec.training, lr)
    start, end = run.rewind_iteration, run.total_iterations
    model = run.model_with(previous_state)  # train_segment zeroes the newly pruned weights first
    sparsity = run.sparsity(mask)  # effective remaining fraction, as in the IMP run's records
    round_started(context.callback, mode, round_index, mask, start, end, sparsity=sparsity)
    [(segment, state)] = train_networks([model], [mask], run.data, run.spec, start, end, round_index=round_index,
                                        networks=[mode], training=training, callback=context.callback,
                                        stop_requested=context.stop_requested)
    if segment.status == "cancelled":
        raise Cancelled()
    chain = "dense" if round_index == 1 else (f"{mode} chain" if own_chain else "imp run")
    record = segment_record(segment, mask, round_index=round_index, network=mode, start_iteration=start,
                            end_iteration=end, sparsity=sparsity, source="retrained",
                            masks="own chain" if own_chain else "imp run",
                            start_weights=f"round {round_index - 1} final weights ({chain})", lr=lr)
    context.save_unit(unit, record, state if own_chain else None, mask if own_chain else None)
    round_finished(context.callback, record)
    return record


def _own_round(context: AnalysisContext, mode: str, round_index: int) -> tuple[masks.Mask, dict]:
    """(mask, final weights) of round `round_index` of `mode`'s own chain; round 0 is the run's dense round."""
    if round_index == 0:
        return context.run_dir.mask(0), context.run_dir.final_weights(0)
    unit = _unit(mode, round_index)
    return context.unit_mask(unit), context.unit_state(unit)


def _own_start(context: AnalysisContext, mode: str, round_index: int) -> dict:
    """The weights round `round_index` (>= 1) of `mode`'s own chain trained from: the chain's
    previous final weights with the round's mask applied."""
    _, previous_state = _own_round(context, mode, round_index - 1)
    mask = context.unit_mask(_unit(mode, round_index))
    return {name: value * mask[name].to(value.device) if name in mask else value
            for name, value in previous_state.items()}


def summary_lines(result: dict) -> list[str]:
    lines = ["masks: " + ("each mode's own chain (Renda et al.)" if result.get("mask_chain") == "own"
                          else "the IMP ticket's, for every mode (not Renda et al.'s procedure)")
             + f"; {result.get('retraining_iterations')} retraining iterations per round for every mode",
             ""]
    metric = tasks.ACCURACY
    for entries in result["modes"].values():
        metric = next((tasks.metric_of(entry["final"]) for entry in entries if entry.get("final")), metric)
    name, key = ("acc" if metric.key == "accuracy" else metric.label), f"test_{metric.key}"
    lines[1] = f"{'mode':<18} {'round':>5} {'% remaining':>11} {'early-stop ' + name:>14} {'final ' + name:>9}"
    for mode, entries in result["modes"].items():
        for entry in entries:
            lines.append(f"{mode:<18} {entry['round']:>5} {100 * entry['remaining_fraction']:>11.1f} "
                         f"{metric.text(entry['early_stop'].get(key)):>14} "
                         f"{metric.text(entry['final'].get(key)):>9}")
    return lines
