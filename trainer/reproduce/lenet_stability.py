"""LeNet is stable to SGD noise from initialisation (k = 0).

Frankle, Dziugaite, Roy & Carbin 2020 (ICML), "Linear Mode Connectivity and the Lottery Ticket
Hypothesis", Section 3 (LeNet-300-100 on MNIST): two copies of the network trained from
θ0 with different data orders are linearly connected: instability (the maximum test error on the
linear path between them minus the mean of the two ends' errors) is below 2% already at k = 0.

Protocol (small): LeNet-300-100 with the paper's open_lth settings (SGD, learning rate 0.1, batch 128),
2,000 iterations (about 4.7 epochs; the paper trains 40 epochs); the dense round 0 of a one-round run,
then trainer.analyses.connectivity from k = 0 (two copies with derived data orders, 11 points on the
path, each evaluated on the whole test set).

Verdict on the measured instability (in points of test error): holds when < 2 points (the paper's
threshold); fails when >= 3 points; undecided in between (one pair of copies cannot resolve a
difference of less than a point), or when a copy diverged.
"""
from __future__ import annotations

from trainer.analyses import connectivity
from trainer.analyses.connectivity import STABILITY_THRESHOLD
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
)

NAME = "lenet_stability"
FAIL_THRESHOLD = 0.03

BUDGET_SETTINGS = {"tiny": ("40it", "20it", 5), "small": ("2000it", "500it", 11), "large": ("10000it", "1000it", 25)}
MATCH_FIELDS = ("model", "training.optimizer", "training.lr", "training.batch_size", "rewind_step")


def stability_spec(budget: str, data_dir) -> dict:
    steps_per_round, eval_interval, _ = BUDGET_SETTINGS[budget]
    return lenet_spec(budget, data_dir, {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "batch_size": 128,
                                         "training_steps": steps_per_round, "eval_interval": eval_interval},
                      pruning={"rounds": 1}, rewind_step="0it")


def steps(budget: str, data_dir) -> list[Step]:
    spec = stability_spec(budget, data_dir)
    return [Step("LeNet-300-100 dense training (round 0)", spec, experiment_trainings(spec)),
            Step("instability of two copies from θ0", spec, 2, analysis=connectivity.NAME,
                 params={"round": 0, "rewind_steps": ["0it"], "points": BUDGET_SETTINGS[budget][2]})]


def measure(session, protocol_steps: list[Step]) -> dict:
    _, connectivity = session.run_all(protocol_steps)
    [curve] = connectivity["curves"]
    ends = curve.get("endpoint_errors") or [None, None]
    measured = {"rewind_iteration": curve["rewind_iteration"], "instability": curve.get("instability"),
                "threshold": STABILITY_THRESHOLD, "copy_a_test_error": ends[0], "copy_b_test_error": ends[1],
                "max_path_test_error": max(curve["test_error"]) if curve.get("test_error") else None}
    chart = {"title": "Test error along the linear path between two copies trained from θ0",
             "x_label": "interpolation α", "y_label": "test error", "log_x": False,
             "series": [{"name": "k = 0", "x": curve.get("alpha", []), "y": curve.get("test_error", [])}]}
    return {"measured": measured, "chart": chart}


def judge(measured: dict) -> Decision:
    instability = measured["instability"]
    if instability is None:
        return decide([missing("instability")])
    text = f"instability at k=0 {100 * instability:.2f} points (threshold {100 * STABILITY_THRESHOLD:g})"
    outcome = HOLDS if instability < STABILITY_THRESHOLD else FAILS if instability >= FAIL_THRESHOLD else UNDECIDED
    return decide([Finding(outcome, text)])


def summary(measured: dict) -> str:
    instability = measured["instability"]
    shown = "-" if instability is None else f"{100 * instability:.2f} points"
    return f"instability at k=0: {shown} (claim: < 2 points)"


CHECK = Check(
    name=NAME, title="LeNet is stable at initialisation (k = 0)",
    claim="LeNet is stable from k=0: instability (max error on the linear path between two copies trained with "
          "different data orders minus the mean error of the two ends) < 2%.",
    source="Frankle, Dziugaite, Roy & Carbin 2020 (ICML), 'Linear Mode Connectivity and the Lottery Ticket "
           "Hypothesis', Section 3 (instability of LeNet-300-100 at initialisation)",
    tolerance="PASS when instability < 2 points of test error; FAIL when >= 3 points; INCONCLUSIVE in between "
              "(one pair of copies cannot resolve less than a point) or when a copy diverged.",
    steps=steps, measure=measure, judge=judge, match_fields=MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="2,000 iterations instead of 40 epochs; Fashion-MNIST when MNIST is not installed; one pair of copies.")
