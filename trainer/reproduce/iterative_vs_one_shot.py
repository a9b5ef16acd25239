"""Iterative pruning is at least as good as one-shot pruning at high sparsity.

Frankle & Carbin 2019 (ICLR), "The Lottery Ticket Hypothesis", Section 2 and Figure 4 (LeNet-300-100
on MNIST; Section 3 the same for Conv-2/4/6): iteratively pruned tickets reach the dense accuracy at
smaller sizes than tickets found by pruning once to the same sparsity, and learn faster.

Protocol (small): the shared LeNet IMP run of the tickets_vs_dense check (12 iterative rounds of 20%,
output layer 10%: 7.0% of the weights remain) beside a one-shot run of the same spec (schedule
one_shot: round 0 is trained, then pruned once to the same per-layer sparsity and rewound to θ0),
3 replicates each with the same seeds, so iterative and one-shot are paired by replicate.

Verdict on the paired difference d = iterative - one-shot of test accuracy at early stop:
holds when mean(d) >= -tolerance (max(1 std of dense, 0.5 points), trainer.verdict); fails when the
95% CI of d lies wholly below -tolerance; undecided otherwise or with fewer than 3 replicates.
"""
from __future__ import annotations

from trainer import replicate_stats, verdict
from trainer.events import TICKET
from trainer.reproduce import tickets_vs_dense
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
    full_spec,
    missing,
    points,
    signed_points,
)

NAME = "iterative_vs_one_shot"


def one_shot_spec(budget: str, data_dir) -> dict:
    """The shared LeNet spec pruned once to the sparsity of its last iterative round; no controls."""
    spec = tickets_vs_dense.lenet_imp_spec(budget, data_dir)
    return full_spec({**spec, "pruning": {**spec["pruning"], "schedule": "one_shot"}, "controls": [],
                      "control_rounds": []})


def steps(budget: str, data_dir) -> list[Step]:
    one_shot = one_shot_spec(budget, data_dir)
    return [tickets_vs_dense.lenet_imp_step(budget, data_dir),
            Step("LeNet-300-100 one-shot pruning to the same sparsity", one_shot, experiment_trainings(one_shot))]


def measure(session, protocol_steps: list[Step]) -> dict:
    iterative, one_shot = session.run_all(protocol_steps)
    return measurements(iterative, one_shot)


def measurements(iterative: dict, one_shot: dict) -> dict:
    last = iterative["spec"]["pruning"]["rounds"]
    iterative_points = verdict.observations_from_results(iterative).get(TICKET, {})
    one_shot_points = verdict.observations_from_results(one_shot).get(TICKET, {})
    comparison = verdict.paired_comparison(iterative_points.get(last, {}), one_shot_points.get(1, {}))
    iterative_bands = replicate_stats.round_bands(iterative)
    one_shot_bands = replicate_stats.round_bands(one_shot)
    measured = {
        "remaining_fraction": iterative_bands.get(last, {}).get("remaining_fraction"),
        "one_shot_remaining_fraction": one_shot_bands.get(1, {}).get("remaining_fraction"),
        "tolerance": verdict.tolerance_of(iterative_points.get(0, {})),
        "replicates": comparison["n"],
        "dense_accuracy": iterative_bands.get(0, {}).get("mean"),
        "iterative_accuracy": iterative_bands.get(last, {}).get("mean"),
        "one_shot_accuracy": one_shot_bands.get(1, {}).get("mean"),
        "iterative_minus_one_shot": comparison["mean_difference"],
        "ci_low": comparison["ci"][0] if comparison["ci"] else None,
        "ci_high": comparison["ci"][1] if comparison["ci"] else None,
        "iterative_early_stop_iteration": comparison["ticket_mean_iteration"],
        "one_shot_early_stop_iteration": comparison["other_mean_iteration"],
    }
    rounds = sorted(iterative_bands)
    chart = {"title": "Iterative vs one-shot pruning: test accuracy at early stop (mean over replicates)",
             "x_label": "% of weights remaining", "y_label": "test accuracy", "log_x": True,
             "series": [{"name": "iterative IMP", "x": [100 * iterative_bands[r]["remaining_fraction"] for r in rounds],
                         "y": [iterative_bands[r]["mean"] for r in rounds]},
                        {"name": "one-shot",
                         "x": [100 * one_shot_bands[r]["remaining_fraction"] for r in sorted(one_shot_bands)],
                         "y": [one_shot_bands[r]["mean"] for r in sorted(one_shot_bands)]}]}
    return {"measured": measured, "chart": chart}


def judge(measured: dict) -> Decision:
    difference, tolerance = measured["iterative_minus_one_shot"], measured["tolerance"]
    if difference is None:
        return decide([missing("iterative vs one-shot")])
    text = (f"at {100 * (measured['remaining_fraction'] or 0):.1f}% remaining "
            f"iterative {points(measured['iterative_accuracy'])} "
            f"vs one-shot {points(measured['one_shot_accuracy'])}: {signed_points(difference)} "
            f"(tolerance {100 * tolerance:.2f} points, n={measured['replicates']})")
    if measured["replicates"] < verdict.MINIMUM_REPLICATES:
        return decide([Finding(UNDECIDED, text + f", fewer than {verdict.MINIMUM_REPLICATES} replicates")])
    if difference >= -tolerance:
        return decide([Finding(HOLDS, text)])
    if measured["ci_high"] is not None and measured["ci_high"] < -tolerance:
        return decide([Finding(FAILS, text)])
    return decide([Finding(UNDECIDED, text)])


def summary(measured: dict) -> str:
    return (f"at {100 * (measured['remaining_fraction'] or 0):.1f}% remaining: "
            f"iterative {points(measured['iterative_accuracy'])}, "
            f"one-shot {points(measured['one_shot_accuracy'])}, dense {points(measured['dense_accuracy'])} "
            f"(claim: iterative >= one-shot)")


CHECK = Check(
    name=NAME, title="Iterative pruning >= one-shot at high sparsity",
    claim="Iterative IMP >= one-shot at high sparsity.",
    source="Frankle & Carbin 2019 (ICLR), 'The Lottery Ticket Hypothesis', Section 2 and Figure 4 (LeNet-300-100)",
    tolerance="At the last iterative round (7% remaining at the small budget), over >= 3 paired replicates: "
              "mean(iterative - one-shot) >= -max(1 std of dense, 0.5 points). FAIL when the 95% CI of the "
              "difference lies wholly below -tolerance.",
    steps=steps, measure=measure, judge=judge, match_fields=tickets_vs_dense.LENET_MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="4,000 iterations per round instead of 50,000; one comparison point (the last round) instead of a curve.")
