"""SynFlow avoids layer collapse where SNIP, GraSP and magnitude pruning at initialisation collapse.

Tanaka, Kunin, Yamins & Ganguli 2020 (NeurIPS), "Pruning neural networks without any data by
iteratively conserving synaptic flow", Sections 3-4 and Figure 1: at extreme compression, the
single-shot pruning-at-init methods remove a whole layer (layer collapse: no signal can pass, the
network trains to chance), while iterative SynFlow keeps every layer up to the maximal compression.

Protocol (small): LeNet-300-100 with Frankle & Carbin's training (Adam 1.2e-3, batch 60, 2,000
iterations), a one-shot IMP run to the sparsity of 31 rounds of 20% per layer (output 10%): about
0.1% of the weights remain. trainer.analyses.pruning_at_init prunes θ0 to that sparsity with SynFlow
(100 iterations), SNIP, GraSP and magnitude under global scope, trains each mask and names the layers
left without a weight.

Verdict: SynFlow keeps every layer (holds) or collapses one (fails); the baselines all collapse a
layer (holds), none does (fails), or only some do (undecided: the others may collapse at a higher
compression than the one tested).
"""
from __future__ import annotations

from trainer import replicate_stats
from trainer.reproduce.base import (FAILS, HOLDS, UNDECIDED, Check, Decision, Finding, Step, decide,
                                    experiment_trainings, lenet_spec, missing, points)

NAME = "synflow_collapse"
BASELINES = ("snip", "grasp", "magnitude")
METHODS = ("synflow", *BASELINES)
ROUNDS = 31  # 0.8^31 ≈ 0.1% of each hidden layer left

BUDGET_SETTINGS = {"tiny": ("30it", "15it", 10), "small": ("2000it", "250it", 100), "large": ("10000it", "500it", 100)}
MATCH_FIELDS = ("model", "training.optimizer", "pruning.schedule", "pruning.rounds", "pruning.fraction")


def collapse_spec(budget: str, data_dir) -> dict:
    steps_per_round, eval_interval, _ = BUDGET_SETTINGS[budget]
    return lenet_spec(budget, data_dir, {"optimizer": "adam", "lr": 0.0012, "batch_size": 60,
                                         "training_steps": steps_per_round, "eval_interval": eval_interval},
                      pruning={"schedule": "one_shot", "rounds": ROUNDS, "fraction": 0.2}, rewind_step="0it")


def steps(budget: str, data_dir) -> list[Step]:
    spec = collapse_spec(budget, data_dir)
    params = {"methods": list(METHODS), "rounds": [1], "scope": "global",
              "synflow_iterations": BUDGET_SETTINGS[budget][2], "score_examples": 256}
    return [Step("LeNet-300-100 one-shot IMP to ~0.1% remaining", spec, experiment_trainings(spec)),
            Step("pruning at initialisation to the same sparsity", spec, len(METHODS), analysis="pruning_at_init",
                 params=params)]


def measure(session, protocol_steps: list[Step]) -> dict:
    results, analysis = session.run_all(protocol_steps)
    return measurements(results, analysis)


def measurements(results: dict, analysis: dict) -> dict:
    measured = {"remaining_fraction": None}
    bars = []
    for method in METHODS:
        [entry] = analysis["methods"][method]
        measured["remaining_fraction"] = entry["remaining_fraction"]
        measured[f"{method}_collapsed_layers"] = len(entry["collapsed_layers"])
        measured[f"{method}_accuracy"] = replicate_stats.metric(entry)
        bars.append((method, measured[f"{method}_accuracy"]))
    imp = [r for r in results["rounds"] if r["round"] == 1]
    measured["one_shot_imp_accuracy"] = replicate_stats.metric(imp[0]) if imp else None
    measured["collapsed"] = {method: analysis["methods"][method][0]["collapsed_layers"] for method in METHODS}
    chart = {"title": f"Pruning at initialisation to {100 * (measured['remaining_fraction'] or 0):.2f}% remaining: "
                      f"test accuracy at early stop (collapsed layers in the legend)",
             "x_label": "method (0 = SynFlow, 1 = SNIP, 2 = GraSP, 3 = magnitude)", "y_label": "test accuracy",
             "log_x": False,
             "series": [{"name": f"{method} ({len(measured['collapsed'][method])} collapsed)", "x": [index],
                         "y": [accuracy]} for index, (method, accuracy) in enumerate(bars)]}
    return {"measured": measured, "chart": chart}


def judge(measured: dict) -> Decision:
    if measured.get("synflow_collapsed_layers") is None:
        return decide([missing("collapsed layers")])
    synflow = measured["synflow_collapsed_layers"]
    where = f"at {100 * measured['remaining_fraction']:.3f}% remaining"
    synflow_finding = Finding(FAILS if synflow else HOLDS, f"{where} SynFlow collapses {synflow} layer(s), "
                                                           f"test accuracy {points(measured['synflow_accuracy'])}")
    collapsed = [method for method in BASELINES if measured[f"{method}_collapsed_layers"]]
    shown = ", ".join(f"{method} {measured[f'{method}_collapsed_layers']} ({points(measured[f'{method}_accuracy'])})"
                      for method in BASELINES)
    outcome = HOLDS if len(collapsed) == len(BASELINES) else FAILS if not collapsed else UNDECIDED
    return decide([synflow_finding, Finding(outcome, f"collapsed layers of the baselines: {shown}")])


def summary(measured: dict) -> str:
    if measured.get("synflow_collapsed_layers") is None:
        return "no measurement (claim: SynFlow keeps every layer where SNIP/GraSP/magnitude collapse one)"
    shown = ", ".join(f"{method} {measured[f'{method}_collapsed_layers']}" for method in METHODS)
    return (f"collapsed layers at {100 * measured['remaining_fraction']:.3f}% remaining: {shown} "
            f"(claim: SynFlow 0, the others >= 1)")


CHECK = Check(
    name=NAME, title="SynFlow avoids layer collapse",
    claim="SNIP/GraSP/magnitude collapse a layer (cut the flow) at extreme sparsity where SynFlow does not.",
    source="Tanaka, Kunin, Yamins & Ganguli 2020 (NeurIPS), 'Pruning neural networks without any data by "
           "iteratively conserving synaptic flow', Sections 3-4 (layer collapse), Figure 1",
    tolerance="At ~0.1% of LeNet's weights remaining (global scope): PASS when SynFlow keeps every layer and SNIP, "
              "GraSP and magnitude each leave a layer empty; FAIL when SynFlow collapses a layer or no baseline does; "
              "INCONCLUSIVE when only some baselines collapse.",
    steps=steps, measure=measure, judge=judge, match_fields=MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="LeNet-300-100 instead of the paper's VGG/ResNets (CPU budget); one compression level, one seed.")
