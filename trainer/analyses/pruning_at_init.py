"""Pruning at initialisation (Tanaka et al. 2020 and baselines), beside a finished IMP run.

Each method (snip, grasp, synflow, random, magnitude) prunes the run's θ0 to the sparsity of
each chosen IMP round (so the IMP curve and the methods' curves share their x values), with
exact counts, and the mask trains from iteration 0 to T with the run's training settings.
Every entry names its collapsed layers (no weight left: the network cannot learn) and its
cost. The method functions live in trainer.pruning_at_init.
"""
from __future__ import annotations

from trainer import events, pruning_at_init
from trainer.analyses.common import (AnalysisContext, Cancelled, execute, json_safe, round_finished, summary)
from trainer.analyses.params import Param
from trainer.spec import SpecError

NAME = "pruning_at_init"
# % remaining counts only weights between live units (trainer.structured):
# a collapsed layer now shows as 0%, so older results mean something else
RESULTS_VERSION = 2

PARAMS = (
    Param("methods", "str_list", pruning_at_init.METHODS, "snip |g⊙w|, grasp (Hg)⊙w, synflow (iterative, data-free), "
          "random, magnitude |w0|.", choices=pruning_at_init.METHODS, unordered=True),
    Param("rounds", "int_list", (), "IMP rounds whose remaining fraction is a target; empty = every finished pruned round.",
          minimum=1, maximum=100, unordered=True),
    Param("scope", "str", "global", "'global' (one ranking over all prunable layers, as in the paper) or 'layerwise'.",
          choices=("global", "layerwise")),
    Param("synflow_iterations", "int", pruning_at_init.SYNFLOW_ITERATIONS,
          "SynFlow's prune-rescore iterations (exponential schedule to the target).", minimum=1, maximum=10_000),
    Param("score_examples", "int", 256, "Training examples SNIP and GraSP score on (a seeded draw).",
          minimum=1, maximum=100_000),
)


def run_pruning_at_init(run_path, methods=pruning_at_init.METHODS, rounds=(), scope="global",
                        synflow_iterations=pruning_at_init.SYNFLOW_ITERATIONS, score_examples=256, *,
                        callback: events.Callback = events.ignore, data_dir=None, stop_requested=lambda: False) -> dict:
    """Result: {"methods": {method: [record per round, + imp_round]}, "imp": [round summaries], "rounds"}."""
    params = {"methods": list(methods), "rounds": list(rounds), "scope": scope,
              "synflow_iterations": synflow_iterations, "score_examples": score_examples}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested, version=RESULTS_VERSION)


def target_fraction(imp_record: dict) -> float:
    """The fraction each method keeps: the IMP round's unmasked weights, so every method places as many
    weights as IMP did (Tanaka et al.'s compression ratio); their records then report how many of them
    can carry signal (remaining_fraction). Records older than that count have only remaining_fraction."""
    return imp_record.get("unmasked_fraction", imp_record["remaining_fraction"])


def _body(context: AnalysisContext) -> dict:
    params = context.params
    if not params["methods"]:
        raise SpecError("methods", "choose at least one method")
    rounds = context.require_rounds(params["rounds"], "rounds", minimum=1)
    if (done := context.reuse_finished()) is not None:
        return done
    context.start()
    records = {r["round"]: r for r in context.run_dir.records()}
    results = {}
    for method in params["methods"]:
        results[method] = []
        for round_index in rounds:
            unit = f"{method}/round_{round_index:03d}"
            entry = context.unit_record(unit)
            if entry is None:
                context.check_stop()
                run = context.run
                segment, record, _, _ = pruning_at_init.prune_at_init_and_train(
                    run, method, target_fraction(records[round_index]), round_index, run.theta_init(),
                    scope=params["scope"], score_examples=params["score_examples"],
                    synflow_iterations=params["synflow_iterations"], network=f"{NAME}_{method}")
                if segment.status == "cancelled":
                    raise Cancelled()
                entry = json_safe({**record, "imp_round": round_index})
                context.save_unit(unit, entry)
                round_finished(context.callback, entry)
            results[method].append(entry)
    return context.finish({"rounds": rounds, "scope": params["scope"], "methods": results,
                           "imp": [summary(records[r]) for r in sorted(records)]})
