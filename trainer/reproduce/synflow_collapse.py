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

A method collapses when a layer has no weight left (the analysis's detection) or when its trained
network stays within 1 point of chance: the flow is cut even though no layer is empty (e.g. the
surviving weights of one layer feed units whose outgoing weights are all pruned), which is what
collapse means for training (Tanaka et al.: "the network cannot learn").

Verdict: SynFlow does not collapse (holds) or does (fails); the baselines all collapse (holds), none
does (fails), or only some do (undecided: the others may collapse at a higher compression than the
one tested).
"""
from __future__ import annotations

from trainer import datasets, replicate_stats
from trainer.analyses import pruning_at_init
from trainer.reproduce.base import (
    FAILS,
    HOLDS,
    UNDECIDED,
    Check,
    Decision,
    Finding,
    Step,
    decide,
    experiment_trainings,
    lenet_spec,
    missing,
    points,
)

NAME = "synflow_collapse"
BASELINES = ("snip", "grasp", "magnitude")
METHODS = ("synflow", *BASELINES)
ROUNDS = 31  # 0.8^31 ≈ 0.1% of each hidden layer left
CHANCE_MARGIN = 0.01  # trained to within 1 point of chance: no signal passes

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
            Step("pruning at initialisation to the same sparsity", spec, len(METHODS), analysis=pruning_at_init.NAME,
                 params=params)]


def measure(session, protocol_steps: list[Step]) -> dict:
    results, analysis = session.run_all(protocol_steps)
    return measurements(results, analysis)


def measurements(results: dict, analysis: dict) -> dict:
    chance = 1.0 / datasets.DATASETS[results["spec"]["dataset"]].info.num_classes
    measured = {"remaining_fraction": None, "chance": chance}
    empty_layers = {}
    for method in METHODS:
        [entry] = analysis["methods"][method]
        accuracy = replicate_stats.metric(entry)
        empty_layers[method] = entry["collapsed_layers"]
        measured["remaining_fraction"] = entry.get("unmasked_fraction", entry["remaining_fraction"])
        measured[f"{method}_effective_remaining_fraction"] = entry["remaining_fraction"]
        measured[f"{method}_empty_layers"] = len(entry["collapsed_layers"])
        measured[f"{method}_accuracy"] = accuracy
        if entry["collapsed_layers"] or accuracy is not None:  # a diverged training without an empty layer: unknown
            at_chance = accuracy is not None and accuracy <= chance + CHANCE_MARGIN
            measured[f"{method}_collapsed"] = int(bool(entry["collapsed_layers"]) or at_chance)
        else:
            measured[f"{method}_collapsed"] = None
    imp = [r for r in results["rounds"] if r["round"] == 1]
    measured["one_shot_imp_accuracy"] = replicate_stats.metric(imp[0]) if imp else None
    measured["empty_layers"] = empty_layers
    chart = {"title": f"Pruning at initialisation to {100 * (measured['remaining_fraction'] or 0):.3f}% "
                      f"of weights kept: test accuracy at early stop",
             "x_label": "method (0 = SynFlow, 1 = SNIP, 2 = GraSP, 3 = magnitude)", "y_label": "test accuracy",
             "log_x": False,
             "series": [{"name": f"{method} ({_state(measured, method)})", "x": [index],
                         "y": [measured[f"{method}_accuracy"]]} for index, method in enumerate(METHODS)]
             + [{"name": "chance", "x": [0, len(METHODS) - 1], "y": [chance, chance]}]}
    return {"measured": measured, "chart": chart}


def _state(measured: dict, method: str) -> str:
    if measured[f"{method}_collapsed"] is None:
        return "no measurement"
    if measured[f"{method}_empty_layers"]:
        return f"{measured[f'{method}_empty_layers']} empty layer(s)"
    return "flow cut: trained to chance" if measured[f"{method}_collapsed"] else "trains"


def judge(measured: dict) -> Decision:
    if measured.get("synflow_collapsed") is None:
        return decide([missing("SynFlow's collapse")])
    where = f"pruned to {100 * measured['remaining_fraction']:.3f}% of weights kept"
    synflow_finding = Finding(FAILS if measured["synflow_collapsed"] else HOLDS,
                              f"{where} SynFlow {_state(measured, 'synflow')}, test accuracy "
                              f"{points(measured['synflow_accuracy'])}")
    known = [method for method in BASELINES if measured[f"{method}_collapsed"] is not None]
    collapsed = [method for method in known if measured[f"{method}_collapsed"]]
    shown = "; ".join(f"{method} {_state(measured, method)} ({points(measured[f'{method}_accuracy'])})"
                      for method in BASELINES)
    outcome = (HOLDS if len(collapsed) == len(BASELINES) else FAILS if len(known) == len(BASELINES) and not collapsed
               else UNDECIDED)
    return decide([synflow_finding, Finding(outcome, f"baselines: {shown}")])


def summary(measured: dict) -> str:
    if measured.get("synflow_collapsed") is None:
        return "no measurement (claim: SynFlow keeps the flow where SNIP/GraSP/magnitude collapse a layer)"
    shown = ", ".join(f"{method} {'collapsed' if measured[f'{method}_collapsed'] else 'intact'}" for method in METHODS)
    return (f"{100 * measured['remaining_fraction']:.3f}% of weights kept: {shown} "
            f"(claim: SynFlow intact, the others collapsed)")


CHECK = Check(
    name=NAME, title="SynFlow avoids layer collapse",
    claim="SNIP/GraSP/magnitude collapse a layer (cut the flow) at extreme sparsity where SynFlow does not.",
    source="Tanaka, Kunin, Yamins & Ganguli 2020 (NeurIPS), 'Pruning neural networks without any data by "
           "iteratively conserving synaptic flow', Sections 3-4 (layer collapse), Figure 1",
    tolerance="At ~0.1% of LeNet's weights remaining (global scope); collapsed = a layer left without weights, or "
              "the trained network within 1 point of chance (the flow is cut: no signal passes). PASS when SynFlow "
              "does not collapse and SNIP, GraSP and magnitude all do; FAIL when SynFlow collapses or none of the "
              "baselines does; INCONCLUSIVE when only some baselines collapse.",
    steps=steps, measure=measure, judge=judge, match_fields=MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="LeNet-300-100 instead of the paper's VGG/ResNets (CPU budget); one compression level, one seed.")
