"""Masking criteria, survivor re-initialisations and supermasks (Zhou, Lan, Liu & Yosinski 2019,
"Deconstructing Lottery Tickets: Zeros, Signs, and the Supermask"), on a finished IMP run.

Every combination of a criterion (large_final = IMP, large_init, magnitude_increase,
movement, large_final_same_sign; trainer.pruning.criteria), a re-initialisation (rewind to θk,
sign_kept_constant, reshuffled) and what pruned weights hold (zero, frozen_init) is one chain
of rounds branching off the run's dense round 0: round r prunes the chain's round r-1 result
(compared with the weights round r-1 started from) with the run's fractions and scope,
re-initialises the survivors, and trains iterations k..T (the masks: trainer.imp.variants).
large_final + rewind + zero is the IMP run itself: its records are reused, not retrained.

Every round reports its supermask score: the test accuracy of the masked network at its
untrained init θ0 (re-initialised as the variant says; pruned weights zero, or at their θ0
values for a frozen variant). The run's own tickets get theirs too (their masks on θ0).
"""
from __future__ import annotations

import itertools
from dataclasses import asdict

from trainer import events
from trainer.analyses.common import AnalysisContext, Cancelled, execute, json_safe, round_finished, summary
from trainer.analyses.params import Param
from trainer.imp.round_training import train_round
from trainer.imp.variants import Variant, variant_mask
from trainer.pruning import criteria, structured
from trainer.seeds import generator
from trainer.spec import SpecError

NAME = "masking_criteria"
# 2: supermask scores at θ0 (were θk), criteria against each round's start (were θk), large_final_same_sign
RESULTS_VERSION = 2

PARAMS = (
    Param("criteria", "str_list", criteria.CRITERIA, "Masking criteria: large_final (IMP) |wT|, large_init |w0|, "
          "magnitude_increase |wT|-|w0|, movement |wT-w0|, large_final_same_sign |wT| of the weights that kept "
          "the sign of w0 (w0: the weights the pruned round started from).", choices=criteria.CRITERIA, unordered=True),
    Param("reinits", "str_list", ("rewind",), "Survivor re-initialisations: rewind (θk), sign_kept_constant "
          "(sign(w0)·σ of the layer's init), reshuffled (survivor values permuted within the layer).",
          choices=criteria.REINITS, unordered=True),
    Param("masked_weights", "str_list", ("zero",),
          "What pruned weights hold: zero, or frozen_init (their start values, θk; in the supermask score, θ0).",
          choices=criteria.MASKED_WEIGHTS, unordered=True),
    Param("rounds", "int", None, "Pruned rounds per chain; default: the run's.", minimum=1, maximum=100, optional=True),
)


def run_masking_criteria(run_path, criteria=criteria.CRITERIA, reinits=("rewind",), masked_weights=("zero",),
                         rounds=None, *, callback: events.Callback = events.ignore, data_dir=None,
                         stop_requested=lambda: False) -> dict:
    """Result: {"variants": {name: {"variant": {...}, "source": "imp_run" | "retrained", "rounds": [record]}},
    "ticket": [{round, remaining_fraction, early_stop, final, supermask_test_accuracy, costs}], "rounds"}."""
    params = {"criteria": list(criteria), "reinits": list(reinits), "masked_weights": list(masked_weights),
              "rounds": rounds}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested, version=RESULTS_VERSION)


def _body(context: AnalysisContext) -> dict:
    params = context.params
    for name in ("criteria", "reinits", "masked_weights"):
        if not params[name]:
            raise SpecError(name, "choose at least one")
    variants = [Variant(criterion=c, reinit=r, masked_weights=m)
                for c, r, m in itertools.product(params["criteria"], params["reinits"], params["masked_weights"])]
    return run_chains(context, variants, params["rounds"])


def run_chains(context: AnalysisContext, variants: list[Variant], rounds: int | None) -> dict:
    """Train (or reuse) every variant's chain of rounds 1..rounds and assemble the result."""
    if 0 not in context.finished_rounds() or not context.run_dir.theta_rewind_path.exists():
        raise SpecError("run_dir", f"{context.run_dir.path} has no finished round 0 to branch from")
    if (done := context.reuse_finished()) is not None:
        return done
    rounds = rounds or context.run_dir.spec.rounds_total()
    context.start()
    chains = {}
    for variant in variants:
        if variant == Variant():
            records = [r for r in context.run_dir.records() if 1 <= r["round"] <= rounds]
            chains[variant.name] = {"variant": asdict(variant), "source": "imp_run",
                                    "rounds": [_with_supermask(context, r) for r in records]}
            continue
        chains[variant.name] = {"variant": asdict(variant), "source": "retrained",
                                "rounds": _chain(context, variant, rounds)}
    return context.finish({"rounds": list(range(1, rounds + 1)), "variants": chains, "ticket": ticket_rounds(context)})


def _unit(variant: Variant, round_index: int) -> str:
    return f"{variant.name}/round_{round_index:03d}"


def _chain(context: AnalysisContext, variant: Variant, rounds: int) -> list[dict]:
    run_dir = context.run_dir
    records = []
    for round_index in range(1, rounds + 1):
        unit = _unit(variant, round_index)
        stored = context.unit_record(unit)
        if stored is not None:
            records.append(stored)
            continue
        context.check_stop()
        run = context.run
        if round_index == 1:
            previous_mask, trained = run_dir.mask(0), run_dir.final_weights(0)
        else:
            previous_unit = _unit(variant, round_index - 1)
            previous_mask, trained = context.unit_mask(previous_unit), context.unit_state(previous_unit)
        trained_from = round_started_from(run, variant, round_index - 1, previous_mask)
        segment, record, mask, model = train_variant_round(run, variant, round_index, previous_mask, trained,
                                                           trained_from)
        if segment.status == "cancelled":
            raise Cancelled()
        record = json_safe(record)
        context.save_unit(unit, record, model.state_dict(), mask)
        round_finished(context.callback, record)
        records.append(record)
        if segment.status != "finished":
            break  # a diverged round leaves nothing to prune further
    return records


def _with_supermask(context: AnalysisContext, record: dict) -> dict:
    mask = context.run_dir.mask(record["round"])
    model = context.run.model_with(context.run.theta_init())
    return {**record, "supermask_test_accuracy": criteria.supermask_score(model, mask, context.run.data.test_inputs,
                                                                           context.run.data.test_y)}


def ticket_rounds(context: AnalysisContext) -> list[dict]:
    """The run's own tickets: summary, supermask score and cost of every finished round."""
    run = context.run
    info = run.data.info
    entries = []
    for record in context.run_dir.records():
        mask = context.run_dir.mask(record["round"])
        costs = structured.count_flops_and_parameters(run.spec.model, info.input_shape, info.num_classes, mask)
        entries.append({**summary(_with_supermask(context, record)),
                        "costs": {view: costs[view] for view in ("dense", "masked", "effective")}})
    return entries


# ---- one variant's chain -----------------------------------------------------------------
def round_start_state(run, variant: Variant, round_index: int, mask, base: dict) -> dict:
    """`base` with the survivors of `mask` re-initialised as `variant` says (one seeded draw per
    round, so θk for training and θ0 for the supermask get the same permutation)."""
    return criteria.reinit_survivors(variant.reinit, base, mask, model_name=run.spec.model,
                                     generator=generator(run.spec.init_seed, "reinit", variant.name, round_index))


def round_started_from(run, variant: Variant, round_index: int, mask) -> dict:
    """The weights round `round_index` of `variant` trained from: θ0 for the dense round 0, else
    θk re-initialised by the variant (what the next round's criterion compares with)."""
    if round_index == 0:
        return run.theta_init()
    return round_start_state(run, variant, round_index, mask, run.theta_rewind())


def train_variant_round(run, variant: Variant, round_index: int, previous_mask, trained: dict, trained_from: dict):
    """Round r of `variant` from round r-1's mask, trained weights and the weights they trained
    from: prune, re-initialise the survivors from θk, score the supermask at θ0, train k..T.
    Returns (segment, record, mask, model)."""
    mask = variant_mask(run, variant, previous_mask, trained, trained_from)
    frozen = variant.masked_weights == "frozen_init"
    untrained = round_start_state(run, variant, round_index, mask, run.theta_init())
    supermask = criteria.supermask_score(run.model_with(untrained), mask, run.data.test_inputs, run.data.test_y,
                                         frozen_values=untrained if frozen else None)
    state = round_start_state(run, variant, round_index, mask, run.theta_rewind())
    model = run.model_with(state)
    segment, record = train_round(run, round_index, variant.name, model, mask, run.rewind_iteration,
                                  frozen_values=state if frozen else None)
    record.update({"variant": asdict(variant), "supermask_test_accuracy": supermask})  # the record holds the costs
    return segment, record, mask, model
