"""Learned supermasks: a mask learned over the frozen random init θ0, with no weight training, scores far
above chance and far above the dense θ0 network.

Zhou, Lan, Liu & Yosinski 2019 (NeurIPS), "Deconstructing Lottery Tickets: Zeros, Signs, and the
Supermask", Section 5.1 ("Learned supermasks", Table 2): masks learned as Bernoulli(sigmoid(score)) with
straight-through gradients, the weights frozen at θ0, reach high test accuracy (95%+ on MNIST with
FC networks) although no weight is ever trained; the untrained dense network is at chance.

Protocol (small): the dense LeNet-300-100 run of the edge_popup_subnetworks check (shared: a one-shot run,
2,000 Adam iterations; its round 0 starts at θ0 and its curve's iteration-0 point is the dense θ0
network's test accuracy), then trainer.analyses.learned_supermask on θ0 with the paper's lr 100,
momentum 0.9, batch 250, scores from 0, 2 epochs of mask training; the measured accuracy is the mean test
accuracy of 10 masks sampled from the learned probabilities (the paper's evaluation).

Verdict, with chance = 1 / classes:
  far above chance       holds when the sampled masks' accuracy >= 2 × chance; fails below 1.5 × chance
  far above dense θ0     holds when it is >= the dense θ0 network's accuracy + 20 points; fails when it is
                         less than 5 points above it
Anything else is undecided.
"""
from __future__ import annotations

from trainer import datasets
from trainer.analyses import learned_supermask
from trainer.reproduce import edge_popup_subnetworks
from trainer.reproduce.base import (
    FAILS,
    HOLDS,
    UNDECIDED,
    Check,
    Decision,
    Finding,
    Step,
    decide,
    far_above_chance,
    missing,
    points,
    signed_points,
)

NAME = "learned_supermask_accuracy"
PASS_GAIN, FAIL_GAIN = 0.20, 0.05  # over the dense θ0 network, in accuracy

# mask training, masks sampled for the evaluation
BUDGET_SETTINGS = {
    "tiny": ("30it", 2),
    "small": ("2ep", 10),
    "large": ("10ep", 10),
}


def steps(budget: str, data_dir) -> list[Step]:
    run = edge_popup_subnetworks.steps(budget, data_dir)[0]
    iterations, samples = BUDGET_SETTINGS[budget]
    params = {"weights": ["theta_0"], "iterations": iterations, "eval_samples": samples}
    return [run, Step("a Bernoulli supermask learned on the frozen θ0", run.spec, 1,
                      analysis=learned_supermask.NAME, params=params)]


def measure(session, protocol_steps: list[Step]) -> dict:
    results, analysis = session.run_all(protocol_steps)
    return measurements(results, analysis)


def dense_theta_0_accuracy(results: dict) -> float | None:
    """The test accuracy of the untrained dense network: round 0's curve at iteration 0 (round 0 starts at θ0)."""
    dense = next((entry for entry in results["rounds"] if entry["round"] == 0 and entry.get("replicate", 0) == 0), {})
    curve = dense.get("curve") or {}
    iterations = curve.get("iteration") or []
    return curve["test_accuracy"][0] if iterations and iterations[0] == 0 else None


def measurements(results: dict, analysis: dict) -> dict:
    chance = 1.0 / datasets.DATASETS[results["spec"]["dataset"]].info.num_classes
    entry = next((e for e in analysis["masks"] if e["weights"] == "theta_0"), {})
    sampled = entry.get("sampled") or {}
    trained = ((analysis.get("dense") or {}).get("final") or {}).get("test_accuracy")
    measured = {"chance": chance, "sampled_accuracy": sampled.get("test_accuracy"),
                "sampled_accuracy_std": sampled.get("test_accuracy_std"),
                "expected_mask_accuracy": (entry.get("expected") or {}).get("test_accuracy"),
                "kept_fraction_expected": entry.get("kept_fraction_expected"),
                "dense_theta_0_accuracy": dense_theta_0_accuracy(results), "dense_trained_accuracy": trained,
                "iterations": analysis.get("iterations")}
    kept = 100 * (sampled.get("kept_fraction") or 0.0)
    chart = {"title": "Learned supermask: test accuracy of masks learned over the frozen θ0 (no weight training)",
             "x_label": "% of weights kept", "y_label": "test accuracy", "log_x": False,
             "series": [{"name": "learned supermask on θ0 (sampled masks)", "x": [kept],
                         "y": [measured["sampled_accuracy"]]},
                        {"name": "dense θ0 (untrained)", "x": [100.0], "y": [measured["dense_theta_0_accuracy"]]},
                        {"name": "dense (trained)", "x": [100.0], "y": [trained]},
                        {"name": "chance", "x": [0.0, 100.0], "y": [chance, chance]}]}
    return {"measured": measured, "chart": chart}


def judge(measured: dict) -> Decision:
    score, chance, dense = measured["sampled_accuracy"], measured["chance"], measured["dense_theta_0_accuracy"]
    if score is None:
        return decide([missing("the learned supermask's accuracy")])
    findings = [far_above_chance(score, chance, "sampled masks")]
    if dense is None:
        findings.append(missing("the dense θ0 network's accuracy"))
    else:
        gain = score - dense
        outcome = HOLDS if gain >= PASS_GAIN else FAILS if gain < FAIL_GAIN else UNDECIDED
        findings.append(Finding(outcome, f"{signed_points(gain)} over the dense θ0 network ({points(dense)})"))
    return decide(findings)


def summary(measured: dict) -> str:
    return (f"masks learned on the frozen θ0 (sampled): {points(measured['sampled_accuracy'])}, "
            f"{100 * (measured['kept_fraction_expected'] or 0):.1f}% kept; dense θ0 "
            f"{points(measured['dense_theta_0_accuracy'])}, trained dense "
            f"{points(measured['dense_trained_accuracy'])}, "
            f"chance {points(measured['chance'])} (claim: far above chance and the dense θ0)")


CHECK = Check(
    name=NAME, title="Learned supermasks over the frozen θ0",
    claim="Masks can also be learned (Bernoulli mask with sigmoid scores, straight-through gradient) while weights "
          "stay frozen: the learned supermask over θ0 scores far above chance and far above the dense θ0 network, "
          "with no weight training.",
    source="Zhou, Lan, Liu & Yosinski 2019 (NeurIPS), 'Deconstructing Lottery Tickets: Zeros, Signs, and the "
           "Supermask', Section 5.1 ('Learned supermasks'), Table 2",
    tolerance="Mean test accuracy of 10 masks sampled from the learned probabilities. PASS when it is >= 2 × chance "
              "and >= the untrained dense θ0 network's accuracy + 20 points; FAIL when it is < 1.5 × chance or less "
              "than 5 points above the dense θ0 network; INCONCLUSIVE otherwise.",
    steps=steps, measure=measure, judge=judge, match_fields=edge_popup_subnetworks.MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="LeNet-300-100 on (Fashion-)MNIST; 2 epochs of mask training (the paper: 2,000) with the rate decayed on a "
          "cosine (the paper keeps it constant); only the θ0 weights (the signed-constant variant is in the study, "
          "not judged here); one seed.")
