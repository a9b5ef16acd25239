"""Renda's ordering of retraining modes: LR rewinding >= weight rewinding >= fine-tuning.

Renda, Frankle & Carbin 2020 (ICLR), "Comparing Rewinding and Fine-tuning in Neural Network
Pruning", Sections 4-5 (iterative pruning): at equal retraining budget, learning-rate
rewinding matches or beats weight rewinding, and both beat fine-tuning.

Protocol (small): LeNet-300-100 (the paper uses CIFAR ResNets and VGG; a CPU-sized stand-in) with
SGD momentum 0.9, learning rate 0.05 dropped tenfold at 50% and 75% of training (so the final LR
differs from the replayed schedule), 3,000 iterations per round, 5 rounds of layerwise 20% (output
10%), k = 0. Then trainer.analyses.retraining with its default parameters: every mode retrains
iterations k..T (equal budget) over every pruned round.

Verdict on each mode's test accuracy at early stop, averaged over the last three pruned rounds
(the sparsest, where the modes differ; one run, so averaging rounds stands in for replicates):
each of lr_rewinding - weight_rewinding and weight_rewinding - fine_tuning holds when >= -0.5
points, fails when < -1.5 points, is undecided in between.
"""
from __future__ import annotations

from trainer import replicate_stats
from trainer.analyses import retraining
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
    signed_points,
)

NAME = "retraining_modes"
ORDER = ("lr_rewinding", "weight_rewinding", "fine_tuning")
TOLERANCE = 0.005
FAIL_MARGIN = 0.015
COMPARED_ROUNDS = 3

BUDGET_SETTINGS = {"tiny": ("40it", "20it", 2), "small": ("3000it", "250it", 5), "large": ("12000it", "500it", 8)}
MATCH_FIELDS = ("model", "training.optimizer", "training.lr", "training.batch_size", "training.lr_schedule",
                "pruning.strategy", "pruning.schedule", "rewind_step")


def retraining_spec(budget: str, data_dir) -> dict:
    steps_per_round, eval_interval, rounds = BUDGET_SETTINGS[budget]
    total = int(steps_per_round[:-2])
    return lenet_spec(budget, data_dir, {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 60,
                                         "training_steps": steps_per_round, "eval_interval": eval_interval,
                                         "lr_schedule": "multistep", "lr_gamma": 0.1,
                                         "lr_milestones": [f"{total // 2}it", f"{3 * total // 4}it"]},
                      pruning={"rounds": rounds}, rewind_step="0it")


def steps(budget: str, data_dir) -> list[Step]:
    spec = retraining_spec(budget, data_dir)
    rounds = spec["pruning"]["rounds"]
    return [Step("LeNet-300-100 IMP with a step LR schedule (weight rewinding)", spec, experiment_trainings(spec)),
            Step("LR rewinding and fine-tuning of every round", spec, 2 * rounds, analysis=retraining.NAME, params={})]


def measure(session, protocol_steps: list[Step]) -> dict:
    _, retraining = session.run_all(protocol_steps)
    return measurements(retraining)


def measurements(retraining: dict) -> dict:
    curves = {mode: {entry["round"]: (entry["remaining_fraction"], replicate_stats.metric(entry))
                     for entry in retraining["modes"].get(mode, [])} for mode in ORDER}
    compared = sorted(retraining["rounds"])[-COMPARED_ROUNDS:]
    measured = {"compared_rounds": compared,
                "remaining_fraction": min((curves["weight_rewinding"].get(r, (None,))[0] or 1.0) for r in compared)}
    for mode in ORDER:
        values = [curves[mode].get(r, (None, None))[1] for r in compared]
        measured[f"{mode}_accuracy"] = sum(values) / len(values) if values and None not in values else None
    chart = {"title": "Retraining modes at equal budget: test accuracy at early stop",
             "x_label": "% of weights remaining", "y_label": "test accuracy", "log_x": True,
             "series": [{"name": mode.replace("_", " "), "x": [100 * curves[mode][r][0] for r in sorted(curves[mode])],
                         "y": [curves[mode][r][1] for r in sorted(curves[mode])]} for mode in ORDER]}
    return {"measured": measured, "chart": chart}


def judge(measured: dict) -> Decision:
    return decide([_at_least(measured, "lr_rewinding", "weight_rewinding"),
                   _at_least(measured, "weight_rewinding", "fine_tuning")])


def _at_least(measured: dict, better: str, worse: str) -> Finding:
    high, low = measured[f"{better}_accuracy"], measured[f"{worse}_accuracy"]
    if high is None or low is None:
        return missing(f"{better} vs {worse}")
    difference = high - low
    text = f"{better} {points(high)} vs {worse} {points(low)}: {signed_points(difference)}"
    return Finding(HOLDS if difference >= -TOLERANCE else FAILS if difference < -FAIL_MARGIN else UNDECIDED, text)


def summary(measured: dict) -> str:
    shown = ", ".join(f"{mode.replace('_', ' ')} {points(measured[f'{mode}_accuracy'])}" for mode in ORDER)
    return f"mean of the last {COMPARED_ROUNDS} rounds: {shown} (claim: in this order)"


CHECK = Check(
    name=NAME, title="Retraining modes: LR rewinding >= weight rewinding >= fine-tuning",
    claim="LR rewinding >= weight rewinding >= fine-tuning, at equal retraining budget.",
    source="Renda, Frankle & Carbin 2020 (ICLR), 'Comparing Rewinding and Fine-tuning in Neural Network Pruning', "
           "Sections 4-5 (iterative pruning)",
    tolerance="Test accuracy at early stop averaged over the last three pruned rounds: each mode within 0.5 points "
              "of (or above) the next in the order is PASS; a mode more than 1.5 points below the next is FAIL; "
              "in between INCONCLUSIVE.",
    steps=steps, measure=measure, judge=judge, match_fields=MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="LeNet-300-100 instead of CIFAR ResNets (CPU budget); one run instead of replicates.")
