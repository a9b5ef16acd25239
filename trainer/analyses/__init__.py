"""Analyses: branches of a finished IMP run directory (issue 5's follow-up science).

One registry entry per analysis: its function, its parameter schema (help strings,
defaults, ranges), its pre-flight `check(params, run_info)` (run_info: trainer.analyses.common.run_info),
the `summary_lines(result)` the CLI prints and the name of its chart builder. Every function has the shape

    run_<analysis>(run_path, <params>..., *, callback=events.ignore, data_dir=None,
                   stop_requested=lambda: False) -> dict

and stores its result in <run_dir>/analyses/<analysis>/<hash of its params>/result.json,
beside the units of work it is assembled from (see trainer.analyses.common). Running it
again finds finished work and skips it. The CLI (`python -m trainer analyze RUN_DIR NAME`)
and the web app reach them through `ANALYSES` / `run_analysis`.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainer.analyses import (
    connectivity,
    early_bird,
    early_phase,
    edge_popup,
    learned_supermask,
    malach,
    masking_criteria,
    pretraining,
    pruning_at_init,
    retraining,
    structured_pruning,
    transfer,
    weight_agnostic,
)
from trainer.analyses.common import check_rounds, make_run_info, no_summary_lines, planned_run_info, run_info
from trainer.analyses.params import Param, describe, validate_params
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec, SpecError


@dataclass(frozen=True)
class Analysis:
    """Everything a study needs besides its module: adding a study is its module, one line here and
    one chart builder in the web app (named by `chart`)."""
    name: str
    title: str
    description: str  # one line, for the CLI help and the web page
    function: Callable[..., dict]
    params: tuple[Param, ...]
    chart: str  # the name of the web app's chart builder for its result
    check: Callable[[dict, dict], None] = check_rounds  # (params, run_info) -> None or SpecError: the pre-flight check
    summary_lines: Callable[[dict], list[str]] = no_summary_lines  # what the CLI prints under a finished result
    old_layout: Callable[[RunDir], list[Path]] | None = None  # converts the study's files of an older run layout
    # offered on the new-experiment form and API: runs with its default parameters when the IMP run finishes
    runs_with_experiment: bool = True
    # the tasks (trainer.tasks) whose runs the study applies to: every study so far trains and evaluates
    # image classifiers (cross-entropy, accuracy, image inputs)
    tasks: tuple[str, ...] = ("classification",)

    def preflight(self, params: dict, info: dict) -> None:
        """The study's check, after the one every study shares: the run's task is one it applies to."""
        self.require_task(info.get("task", "classification"))
        self.check(params, info)

    def require_task(self, task: str) -> None:
        if task not in self.tasks:
            applies = " and ".join(name.replace("_", " ") for name in self.tasks)
            raise SpecError("analysis", f"{self.name} applies to {applies} runs; this run is "
                                        f"{task.replace('_', ' ')} (its controls and replicates are in the run)")

    def validate(self, params: dict | None) -> dict:
        return validate_params(self.params, params)

    def schema(self) -> list[dict]:
        return describe(self.params)


ANALYSES: dict[str, Analysis] = {}


def _register(analysis: Analysis) -> None:
    ANALYSES[analysis.name] = analysis


_register(Analysis(retraining.NAME, "Retraining modes after pruning",
                   "Weight rewinding vs learning-rate rewinding vs fine-tuning on the run's masks (Renda et al. 2020).",
                   retraining.run_retraining, retraining.PARAMS, "retraining_figures",
                   summary_lines=retraining.summary_lines,
                   tasks=("classification", "language_modeling", "reinforcement_learning")))
_register(Analysis(connectivity.NAME, "Linear mode connectivity",
                   "Instability of two copies trained from θk with different data orders (Frankle et al. 2020).",
                   connectivity.run_connectivity, connectivity.PARAMS, "connectivity_figures",
                   check=connectivity.check, summary_lines=connectivity.summary_lines))
_register(Analysis(transfer.NAME, "Ticket transfer",
                   "The run's tickets trained on another dataset or with another optimizer, beside random tickets "
                   "and tickets found there (Morcos et al. 2019).",
                   transfer.run_transfer, transfer.PARAMS, "transfer_figures",
                   check=transfer.check, summary_lines=transfer.summary_lines,
                   runs_with_experiment=False))  # no default target dataset
_register(Analysis(masking_criteria.NAME, "Masking criteria and supermasks",
                   "Zhou et al. 2019: which weights to keep (large final, large init, magnitude increase, movement), "
                   "how survivors restart, pruned weights zero or frozen at init, "
                   "and the untrained masked network's accuracy.",
                   masking_criteria.run_masking_criteria, masking_criteria.PARAMS, "masking_criteria_figures"))
_register(Analysis(pruning_at_init.NAME, "Pruning at initialisation",
                   "SNIP, GraSP, SynFlow, random and magnitude masks at θ0 to the run's sparsities, then trained "
                   "(Tanaka et al. 2020); layer collapse is reported.",
                   pruning_at_init.run_pruning_at_init, pruning_at_init.PARAMS, "pruning_at_init_figures",
                   old_layout=pruning_at_init.adopt_old_layout))
_register(Analysis(early_bird.NAME, "Early-bird tickets",
                   "Channel masks from batch-norm scales during one training run, their epoch-to-epoch distance "
                   "and the early-bird epoch (You et al. 2020).",
                   early_bird.run_early_bird, early_bird.PARAMS, "early_bird_figures",
                   check=early_bird.check, old_layout=early_bird.adopt_old_layout))
_register(Analysis(structured_pruning.NAME, "Structured pruning",
                   "Neuron and filter pruning by L1/L2 norm with the run's rates, with parameter and FLOP counts.",
                   structured_pruning.run_structured_pruning, structured_pruning.PARAMS, "structured_pruning_figures"))

_register(Analysis(edge_popup.NAME, "Strong tickets: edge-popup",
                   "Subnetworks of random networks (frozen weights) found by training a score per weight: top-k% edges "
                   "per layer, swept over k and width, beside the trained dense network (Ramanujan et al. 2020).",
                   edge_popup.run_edge_popup, edge_popup.PARAMS, "edge_popup_figures",
                   check=edge_popup.check, summary_lines=edge_popup.summary_lines))
_register(Analysis(learned_supermask.NAME, "Learned supermasks",
                   "Bernoulli masks with sigmoid scores trained by a straight-through estimator on the run's frozen θ0 "
                   "(or its signed constant); no weight trains (Zhou et al. 2019).",
                   learned_supermask.run_learned_supermask, learned_supermask.PARAMS, "learned_supermask_figures",
                   check=learned_supermask.check, summary_lines=learned_supermask.summary_lines))
_register(Analysis(early_phase.NAME, "Early phase: perturbed tickets at θk",
                   "The run's tickets at θk with signs, magnitudes, shuffles or noise changed, then trained k..T, "
                   "beside the unperturbed ticket and rewinding to 0 (Frankle, Schwab & Morcos 2020).",
                   early_phase.run_early_phase, early_phase.PARAMS, "early_phase_figures",
                   check=early_phase.check, summary_lines=early_phase.summary_lines))
_register(Analysis(weight_agnostic.NAME, "Weight-agnostic scores of masks",
                   "The run's ticket masks and random masks evaluated with one shared weight value (sign from θ0) over "
                   "a range of values, no training; the mean accuracy is the mask's score (Gaier & Ha 2019).",
                   weight_agnostic.run_weight_agnostic, weight_agnostic.PARAMS, "weight_agnostic_figures",
                   check=weight_agnostic.check, summary_lines=weight_agnostic.summary_lines))
_register(Analysis(malach.NAME, "Strong tickets: pruning random nets to a target",
                   "Weight-subnetworks of random depth-2l nets matched to a trained depth-l target, by width; "
                   "neuron-subnetworks vs random features vs weight-subnetworks of a two-layer net "
                   "(Malach et al. 2020).",
                   malach.run_malach, malach.PARAMS, "malach_figures",
                   check=malach.check, summary_lines=malach.summary_lines))
_register(Analysis(pretraining.NAME, "Early phase: dense pre-training before IMP",
                   "θ0 trained densely for t iterations on random labels or on rotation prediction (its own 4-way "
                   "head), then the usual IMP chain from those weights, beside the run's ticket (Frankle, Schwab & "
                   "Morcos 2020).",
                   pretraining.run_pretraining, pretraining.PARAMS, "pretraining_figures",
                   check=pretraining.check, summary_lines=pretraining.summary_lines))


def get_analysis(name: str) -> Analysis:
    if name not in ANALYSES:
        raise SpecError("analysis", f"unknown analysis {name!r}; choose one of {', '.join(ANALYSES)}")
    return ANALYSES[name]


def validate(name: str, params: dict | None) -> dict:
    """Checked parameters with defaults filled in; SpecError names the analysis or the parameter."""
    return get_analysis(name).validate(params)


def run_analysis(name: str, run_path, params: dict | None = None, **options) -> dict:
    """Run (or resume) analysis `name` on a run directory; options are callback, data_dir, stop_requested."""
    analysis = get_analysis(name)
    checked = analysis.validate(params)
    analysis.require_task(RunDir.open(run_path).spec.task())
    return analysis.function(run_path, **checked, **options)


def check_runs_with_experiment(names, spec: ExperimentSpec) -> None:
    """The analyses chosen to run with their default parameters when the IMP run of `spec` finishes (the
    new-experiment form and API): each must be one that can, and pass its check on the run as planned.
    SpecError("analyses", ...) names the analysis and says why not."""
    info = None
    for name in names:
        analysis = ANALYSES.get(name)
        if analysis is None or not analysis.runs_with_experiment:
            choices = ", ".join(key for key, entry in ANALYSES.items() if entry.runs_with_experiment)
            raise SpecError("analyses", f"{name!r} cannot run with its default parameters when the run finishes "
                                        f"(choose from {choices}; run it with parameters from the result page)")
        info = info or planned_run_info(spec)
        try:
            analysis.preflight(analysis.validate(None), info)
        except SpecError as error:
            raise SpecError("analyses", f"{analysis.title}: {error.message}") from None


def stored_results(run_path) -> list[dict]:
    """The finished analysis results stored in a run directory (analyses/<name>/<hash>/result.json), after
    converting the files of older layouts once; unreadable results are left out."""
    run_dir = RunDir.open(run_path)
    for analysis in ANALYSES.values():
        if analysis.old_layout is not None:
            analysis.old_layout(run_dir)
    results = []
    for path in sorted(run_dir.path.glob("analyses/*/*/result.json")):
        try:
            result = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(result, dict) and result.get("status") == "finished":
            results.append(result)
    return results


__all__ = ["ANALYSES", "Analysis", "Param", "check_runs_with_experiment", "get_analysis", "make_run_info", "validate",
           "run_analysis", "run_info", "stored_results"]
