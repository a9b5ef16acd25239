"""Subnetworks of random networks: edge-popup finds a good one, best at intermediate k, better when wider.

Ramanujan, Wortsman, Kembhavi, Farhadi & Rastegari 2020 (CVPR), "What's Hidden in a Randomly
Weighted Neural Network?", Figures 2-3 (Conv-2..8 on CIFAR-10) and Section 4.1: the top-k%
subnetwork found by edge-popup in a network with frozen random weights performs far above chance and
approaches the trained dense network as the network widens; accuracy is best for k between about 30%
and 70% and falls off towards both ends (few edges: too little capacity; almost all: the random
network itself).

Protocol (small): LeNet-300-100 (Frankle & Carbin's Adam setting, 2,000 iterations) trained once as
the dense reference (a one-shot run; its round 0 is the width-1 dense network), then
trainer.analyses.edge_popup with signed Kaiming constant weights for k = 10, 30, 50, 70, 90% and
widths ×1 and ×2, one epoch of score training each (the paper trains 100; the dense network of width
×2 is trained by the analysis with the run's settings). Fashion-MNIST when MNIST is not installed.

Verdict, test accuracies at the end of score training:
  intermediate k is best (each width)  holds when the best k in 30-70% beats both k = 10% and 90%; fails
                                       when an end beats every intermediate k by more than 1 point
  wider does better                    holds when the widest network's best subnetwork beats width ×1's;
                                       fails when it is more than 1 point worse
  far above chance                     holds when width ×1's best subnetwork >= 2 × chance; fails below 1.5 ×
Anything else is undecided.
"""
from __future__ import annotations

from trainer import datasets
from trainer.analyses import edge_popup
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
    far_above_chance,
    lenet_spec,
    missing,
    points,
)

NAME = "edge_popup_subnetworks"
KEPT_PERCENTS = (10.0, 30.0, 50.0, 70.0, 90.0)
MIDDLE = (30.0, 70.0)  # the paper's "k around 30-70% is best", inclusive
MARGIN = 0.01  # one point of test accuracy

# dense training length, edge-popup score training, widths, k values
BUDGET_SETTINGS = {
    "tiny": ("60it", "30it", (1.0, 2.0), (10.0, 50.0, 90.0)),
    "small": ("2000it", "1ep", (1.0, 2.0), KEPT_PERCENTS),
    "large": ("10000it", "10ep", (1.0, 2.0, 4.0), KEPT_PERCENTS),
}
MATCH_FIELDS = ("model", "training.optimizer", "training.lr", "training.batch_size", "pruning.schedule",
                "pruning.rounds")


def dense_spec(budget: str, data_dir) -> dict:
    steps_per_round = BUDGET_SETTINGS[budget][0]
    return lenet_spec(budget, data_dir, {"optimizer": "adam", "lr": 0.0012, "batch_size": 60,
                                         "training_steps": steps_per_round, "eval_interval": steps_per_round},
                      pruning={"schedule": "one_shot", "rounds": 1}, rewind_step="0it")


def steps(budget: str, data_dir) -> list[Step]:
    spec = dense_spec(budget, data_dir)
    _, iterations, widths, kept = BUDGET_SETTINGS[budget]
    params = {"kept_percents": list(kept), "widths": list(widths), "weight_init": "signed_kaiming_constant",
              "iterations": iterations}
    return [Step("LeNet-300-100 dense training (the width ×1 reference)", spec, experiment_trainings(spec)),
            Step("edge-popup subnetworks for each width and k", spec, len(widths) * len(kept) + len(widths) - 1,
                 analysis=edge_popup.NAME, params=params)]


def measure(session, protocol_steps: list[Step]) -> dict:
    results, analysis = session.run_all(protocol_steps)
    return measurements(results, analysis)


def measurements(results: dict, analysis: dict) -> dict:
    chance = 1.0 / datasets.DATASETS[results["spec"]["dataset"]].info.num_classes
    widths = sorted({entry["width"] for entry in analysis["subnetworks"]})
    by_width = {width: {e["kept_percent"]: e["test_accuracy"] for e in analysis["subnetworks"] if e["width"] == width}
                for width in widths}
    dense = {e["width"]: (e.get("final") or {}).get("test_accuracy") for e in analysis["dense"]}
    measured = {"chance": chance, "widths": widths,  # JSON keys: width and k as text ("2", "50")
                "accuracy_by_width": {f"{w:g}": {f"{k:g}": a for k, a in by_width[w].items()} for w in widths},
                "dense_by_width": {f"{w:g}": dense.get(w) for w in widths}}
    for width in widths:
        known = {k: a for k, a in by_width[width].items() if a is not None}
        measured[f"x{width:g}_best_k"] = max(known, key=known.get) if known else None
        measured[f"x{width:g}_best_accuracy"] = max(known.values()) if known else None
        measured[f"x{width:g}_dense_accuracy"] = dense.get(width)
    chart = {"title": "Edge-popup: test accuracy of the top-k% subnetwork of a random LeNet-300-100",
             "x_label": "k: % of each layer's weights used", "y_label": "test accuracy", "log_x": False,
             "series": [series for width in widths for series in (
                 {"name": f"edge-popup, width ×{width:g}", "x": sorted(by_width[width]),
                  "y": [by_width[width][k] for k in sorted(by_width[width])]},
                 {"name": f"dense, width ×{width:g} (trained)", "x": [0.0, 100.0], "y": [dense.get(width)] * 2})]
             + [{"name": "chance", "x": [0.0, 100.0], "y": [chance, chance]}]}
    return {"measured": measured, "chart": chart}


def _middle_is_best(width: float, accuracies: dict) -> Finding:
    middle = [a for k, a in accuracies.items() if MIDDLE[0] <= k <= MIDDLE[1] and a is not None]
    ends = [a for k, a in accuracies.items() if not MIDDLE[0] <= k <= MIDDLE[1] and a is not None]
    if not middle or not ends:
        return missing(f"width ×{width:g} at both intermediate and extreme k")
    text = (f"width ×{width:g}: best intermediate k {points(max(middle))}, best of the ends (k < 30% or > 70%) "
            f"{points(max(ends))}")
    outcome = HOLDS if max(middle) > max(ends) else FAILS if max(ends) - max(middle) > MARGIN else UNDECIDED
    return Finding(outcome, text)


def judge(measured: dict) -> Decision:
    widths = measured["widths"]
    if not widths:
        return decide([missing("edge-popup subnetworks")])
    findings = [_middle_is_best(w, {float(k): a for k, a in measured["accuracy_by_width"][f"{w:g}"].items()})
                for w in widths]
    narrow, wide = measured[f"x{widths[0]:g}_best_accuracy"], measured[f"x{widths[-1]:g}_best_accuracy"]
    if len(widths) > 1:
        if narrow is None or wide is None:
            findings.append(missing("the widths' best subnetworks"))
        else:
            outcome = HOLDS if wide > narrow else FAILS if narrow - wide > MARGIN else UNDECIDED
            findings.append(Finding(outcome, f"best subnetwork at width ×{widths[-1]:g} {points(wide)} vs ×"
                                             f"{widths[0]:g} {points(narrow)}"))
    chance = measured["chance"]
    if narrow is None:
        findings.append(missing("width ×1's best subnetwork"))
    else:
        findings.append(far_above_chance(narrow, chance, f"best subnetwork at width ×{widths[0]:g}"))
    return decide(findings)


def summary(measured: dict) -> str:
    parts = [f"×{w:g}: best k={measured[f'x{w:g}_best_k']}% {points(measured[f'x{w:g}_best_accuracy'])} "
             f"(dense {points(measured[f'x{w:g}_dense_accuracy'])})" for w in measured["widths"]]
    return "; ".join(parts) + " (claim: best at k 30-70%, better when wider, far above chance)"


CHECK = Check(
    name=NAME, title="Edge-popup: subnetworks of random networks",
    claim="The subnetwork of a wide enough random net approaches the trained dense accuracy; k around 30-70% is "
          "best; wider nets do better.",
    source="Ramanujan, Wortsman, Kembhavi, Farhadi & Rastegari 2020 (CVPR), 'What's Hidden in a Randomly Weighted "
           "Neural Network?', Section 4.1, Figures 2-3",
    tolerance="Test accuracy at the end of score training. PASS when, at every width, the best k in 30-70% beats "
              "k = 10% and 90%, the widest network's best subnetwork beats width ×1's, and width ×1's best is "
              ">= 2 × chance; FAIL when an end k beats every intermediate k by more than 1 point, the widest is more "
              "than 1 point worse, or the best is < 1.5 × chance; INCONCLUSIVE otherwise.",
    steps=steps, measure=measure, judge=judge, match_fields=MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="LeNet-300-100 on (Fashion-)MNIST instead of Conv-2..8 on CIFAR-10 (CPU budget); widths ×1 and ×2; one "
          "epoch of score training (the paper: 100); one seed. 'Approaches the dense accuracy' is reported (the "
          "dense lines of the chart), not judged: at this budget the gap is large.")
