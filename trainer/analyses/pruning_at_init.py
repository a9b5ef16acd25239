"""Pruning at initialisation (Tanaka et al. 2020 and baselines), beside a finished IMP run.

Each method (snip, grasp, synflow, random, magnitude) prunes the run's θ0 to the sparsity of
each chosen IMP round (so the IMP curve and the methods' curves share their x values), with
exact counts, and the mask trains from iteration 0 to T with the run's training settings.
Every entry names its collapsed layers (no weight left: the network cannot learn) and its
cost. The method functions live in trainer.pruning.at_init.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from trainer import events
from trainer.analyses.common import (
    AnalysisContext,
    Cancelled,
    adopt_old_result,
    execute,
    json_safe,
    round_finished,
    summary,
)
from trainer.analyses.params import Param
from trainer.imp.round_training import train_round
from trainer.pruning import at_init, masks
from trainer.pruning.at_init import SYNFLOW_ITERATIONS, collapsed_layers, pruning_at_init_mask
from trainer.rundir import RunDir
from trainer.seeds import generator
from trainer.spec import SpecError

NAME = "pruning_at_init"
# % remaining counts only weights between live units (trainer.pruning.structured):
# a collapsed layer now shows as 0%, so older results mean something else
RESULTS_VERSION = 2

PARAMS = (
    Param("methods", "str_list", at_init.METHODS, "snip |g⊙w|, grasp (Hg)⊙w, synflow (iterative, data-free), "
          "random, magnitude |w0|.", choices=at_init.METHODS, unordered=True),
    Param("rounds", "int_list", (),
          "IMP rounds whose remaining fraction is a target; empty = every finished pruned round.",
          minimum=1, maximum=100, unordered=True),
    Param("scope", "str", "global", "'global' (one ranking over all prunable layers, as in the paper) or 'layerwise'.",
          choices=("global", "layerwise")),
    Param("synflow_iterations", "int", at_init.SYNFLOW_ITERATIONS,
          "SynFlow's prune-rescore iterations (exponential schedule to the target).", minimum=1, maximum=10_000),
    Param("score_examples", "int", 256, "Training examples SNIP and GraSP score on (a seeded draw).",
          minimum=1, maximum=100_000),
)


def run_pruning_at_init(run_path, methods=at_init.METHODS, rounds=(), scope="global",
                        synflow_iterations=at_init.SYNFLOW_ITERATIONS, score_examples=256, *,
                        callback: events.Callback = events.ignore, data_dir=None, stop_requested=lambda: False) -> dict:
    """Result: {"methods": {method: [record per round, + imp_round]}, "imp": [round summaries], "rounds"}."""
    params = {"methods": list(methods), "rounds": list(rounds), "scope": scope,
              "synflow_iterations": synflow_iterations, "score_examples": score_examples}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested, version=RESULTS_VERSION, old_layout=adopt_old_layout)


def adopt_old_layout(run_dir: RunDir) -> list[Path]:
    """Convert the records of the old entry point, <run>/pruning_at_init/<method>/remaining_<fraction>/
    (record.json, mask.pt, final_weights.pt), into this study's results, one per scope (see
    trainer.analyses.common.adopt_old_result); returns the result directories.

    The old entry point pruned to any target fraction; this study prunes to the run's IMP rounds.
    A record whose target is the remaining fraction of a finished IMP round becomes that round's
    entry; the others stay only under old_layout/ (named in `old_targets_without_imp_round`). The
    old records did not keep synflow_iterations and score_examples: the converted parameters say
    the defaults, and `converted_from` says where the numbers came from."""
    base = run_dir.path / "pruning_at_init"
    if not base.is_dir():
        return []
    imp = {r["round"]: r for r in run_dir.records() if r["status"] == "finished"}
    by_scope: dict[str, dict[str, list[dict]]] = {}
    unmatched: dict[str, list[dict]] = {}
    for path in sorted(base.glob("*/remaining_*/record.json")):
        record = json.loads(path.read_text())
        target = record["target_remaining_fraction"]
        rounds = [r for r in sorted(imp) if r > 0 and abs(target_fraction(imp[r]) - target) < 1e-9]
        if rounds:
            by_scope.setdefault(record["scope"], {}).setdefault(record["method"], []).append(
                {**record, "imp_round": rounds[0]})
        else:
            unmatched.setdefault(record["scope"], []).append({"method": record["method"],
                                                              "target_remaining_fraction": target})
    adopted = []
    scopes = sorted(set(by_scope) | set(unmatched)) or ["global"]
    for scope in scopes:
        methods = {m: sorted(entries, key=lambda e: e["imp_round"])
                   for m, entries in sorted(by_scope.get(scope, {}).items())}
        rounds = sorted({e["imp_round"] for entries in methods.values() for e in entries})
        params = {"methods": list(methods) or list(at_init.METHODS), "rounds": rounds, "scope": scope}
        result = {"rounds": rounds, "scope": scope, "methods": methods, "imp": [summary(imp[r]) for r in sorted(imp)],
                  "old_targets_without_imp_round": unmatched.get(scope, [])} if methods else None
        adopted.append(adopt_old_result(run_dir, NAME, PARAMS, params, RESULTS_VERSION, result, base,
                                        move=scope == scopes[-1]))
    return adopted


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
                segment, record, _, _ = prune_at_init_and_train(
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


def prune_at_init_and_train(run, method: str, target: float, round_index: int, theta_init: dict, *,
                            scope: str = "global", score_examples: int = 256,
                            synflow_iterations: int = SYNFLOW_ITERATIONS, network: str | None = None):
    """Prune θ0 with `method` to `target` and train the mask from iteration 0 with the run's
    training. Returns (segment, record, mask, model); the record adds method, scope,
    target_remaining_fraction, collapsed_layers, scoring_seconds and costs."""
    spec, data = run.spec, run.data
    network = network or f"pruning_at_init_{method}"
    model = run.model_with(theta_init)
    began = time.perf_counter()
    count = min(score_examples, len(data.train_y))
    chosen = torch.randperm(len(data.train_y), generator=generator(spec.data_seed, "pruning_at_init_batch"))[:count]
    chosen = chosen.to(data.device)
    mask = pruning_at_init_mask(method, model, masks.dense_mask(model, run.prunable), target,
                                inputs=data.inputs("train", chosen), targets=data.train_y[chosen],
                                input_shape=data.info.input_shape,
                                random_generator=generator(spec.init_seed, "pruning_at_init_random", target),
                                scope=scope, synflow_iterations=synflow_iterations)
    scoring_seconds = time.perf_counter() - began
    segment, record = train_round(run, round_index, network, model, mask, 0)  # the record holds the costs
    record.update({"method": method, "scope": scope, "target_remaining_fraction": target,
                   "collapsed_layers": collapsed_layers(mask), "scoring_seconds": round(scoring_seconds, 3)})
    return segment, record, mask, model
