"""Tickets at θk are not robust to sign changes or shuffles; same-sign shuffles within a unit are tolerated.

Frankle, Schwab & Morcos 2020 (ICLR), "The Early Phase of Neural Network Training", Sections 4-5
(Figures 4-6, ResNet-20 on CIFAR-10): perturbing a matching IMP ticket at its rewind point θk and
training it on hurts badly when signs change (sign flips, shuffles that move values between
weights of different signs), while shuffling only among same-sign weights within each filter is
tolerated (close to the unperturbed ticket).

Protocol (small): LeNet-300-100 (a CPU-sized stand-in for ResNet-20) with Adam 1.2e-3, batch 60,
3,000 iterations per round, 10 rounds of layerwise 20% (output 10%; 10.8% of weights left), rewinding
to k = 100 iterations. Then trainer.analyses.early_phase on the last COMPARED_ROUNDS pruned rounds with
flip_signs, shuffle_layer and shuffle_unit_same_sign (no noise).

Verdict on test accuracy at early stop averaged over the compared rounds (the sparsest), as the
drop from the unperturbed ticket: flip_signs and shuffle_layer each hold when they drop >= 2
points, fail when < 0.5 points; shuffle_unit_same_sign holds when it drops <= 1 point, fails
when > 3 points; in between undecided.
"""
from __future__ import annotations

from trainer import replicate_stats
from trainer.analyses import early_phase
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

NAME = "early_phase_signs"
HURTING = ("flip_signs", "shuffle_layer")
TOLERATED = "shuffle_unit_same_sign"
COMPARED_ROUNDS = 2
HURT_HOLDS, HURT_FAILS = 0.02, 0.005
TOLERATED_HOLDS, TOLERATED_FAILS = 0.01, 0.03

# (iterations per round, eval interval, pruned rounds, rewind step)
BUDGET_SETTINGS = {"tiny": ("30it", "15it", 1, "10it"), "small": ("3000it", "250it", 10, "100it"),
                   "large": ("10000it", "500it", 12, "200it")}
MATCH_FIELDS = ("model", "training.optimizer", "training.lr", "training.batch_size", "pruning.strategy",
                "pruning.schedule", "rewind_step")


def early_phase_spec(budget: str, data_dir) -> dict:
    steps_per_round, eval_interval, rounds, rewind = BUDGET_SETTINGS[budget]
    return lenet_spec(budget, data_dir, {"optimizer": "adam", "lr": 0.0012, "batch_size": 60,
                                         "training_steps": steps_per_round, "eval_interval": eval_interval},
                      pruning={"rounds": rounds, "fraction": 0.2, "layer_fractions": {"fc3.weight": 0.1}},
                      rewind_step=rewind)


def study_params(budget: str) -> dict:
    rounds = BUDGET_SETTINGS[budget][2]
    return {"rounds": list(range(max(1, rounds - COMPARED_ROUNDS + 1), rounds + 1)),
            "perturbations": [*HURTING, TOLERATED], "noise_alphas": []}


def steps(budget: str, data_dir) -> list[Step]:
    spec = early_phase_spec(budget, data_dir)
    params = study_params(budget)
    networks = (len(params["perturbations"]) + 1) * len(params["rounds"])  # + rewinding to 0 per round
    return [Step("LeNet-300-100 IMP with rewinding to k > 0", spec, experiment_trainings(spec)),
            Step("perturbed tickets at θk, trained k..T", spec, networks, analysis=early_phase.NAME, params=params)]


def measure(session, protocol_steps: list[Step]) -> dict:
    _, study = session.run_all(protocol_steps)
    return measurements(study)


def _mean(entries: list[dict]):
    values = [replicate_stats.metric(entry) for entry in entries]
    return sum(values) / len(values) if values and None not in values else None


def measurements(study: dict) -> dict:
    measured = {"compared_rounds": study["rounds"],
                "remaining_fraction": min(entry["remaining_fraction"] for entry in study["ticket"]),
                "ticket_accuracy": _mean(study["ticket"]), "rewind_to_zero_accuracy": _mean(study["rewind_to_zero"])}
    for name in (*HURTING, TOLERATED):
        measured[f"{name}_accuracy"] = _mean(study["perturbations"].get(name, []))
    curves = [("ticket at θk", study["ticket"]), ("rewind to 0", study["rewind_to_zero"])] + \
        [(name.replace("_", " "), study["perturbations"].get(name, [])) for name in (*HURTING, TOLERATED)]
    chart = {"title": "Perturbed tickets at θk: test accuracy at early stop", "x_label": "% of weights remaining",
             "y_label": "test accuracy", "log_x": True,
             "series": [{"name": label, "x": [100 * e["remaining_fraction"] for e in entries],
                         "y": [replicate_stats.metric(e) for e in entries]} for label, entries in curves]}
    return {"measured": measured, "chart": chart}


def _drop(measured: dict, name: str):
    ticket, perturbed = measured["ticket_accuracy"], measured[f"{name}_accuracy"]
    return None if ticket is None or perturbed is None else ticket - perturbed


def judge(measured: dict) -> Decision:
    findings = []
    for name in HURTING:
        drop = _drop(measured, name)
        if drop is None:
            findings.append(missing(name))
            continue
        text = f"{name} {points(measured[f'{name}_accuracy'])} vs ticket {points(measured['ticket_accuracy'])}: " \
               f"{signed_points(-drop)}"
        findings.append(Finding(HOLDS if drop >= HURT_HOLDS else FAILS if drop < HURT_FAILS else UNDECIDED, text))
    drop = _drop(measured, TOLERATED)
    if drop is None:
        findings.append(missing(TOLERATED))
    else:
        text = f"{TOLERATED} {points(measured[f'{TOLERATED}_accuracy'])}: {signed_points(-drop)}"
        findings.append(Finding(HOLDS if drop <= TOLERATED_HOLDS else FAILS if drop > TOLERATED_FAILS else UNDECIDED,
                                text))
    return decide(findings)


def summary(measured: dict) -> str:
    shown = ", ".join(f"{name.replace('_', ' ')} {points(measured[f'{name}_accuracy'])}"
                      for name in (*HURTING, TOLERATED))
    return (f"ticket at θk {points(measured['ticket_accuracy'])}; {shown} (claim: the first two fall, "
            f"the same-sign shuffle within units does not)")


CHECK = Check(
    name=NAME, title="Early phase: sign changes and shuffles break a ticket at θk, same-sign shuffles do not",
    claim="Tickets at θk are not robust to shuffles or sign changes; same-sign shuffles within filters are tolerated.",
    source="Frankle, Schwab & Morcos 2020 (ICLR), 'The Early Phase of Neural Network Training', Sections 4-5 "
           "(Figures 4-6)",
    tolerance="Test accuracy at early stop averaged over the last two pruned rounds: sign flips and layerwise "
              "shuffles each PASS when >= 2 points below the unperturbed ticket (FAIL when < 0.5 points below); "
              "the same-sign shuffle within units PASSES when <= 1 point below it (FAIL when > 3 points below); "
              "otherwise INCONCLUSIVE.",
    steps=steps, measure=measure, judge=judge, match_fields=MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="LeNet-300-100 instead of ResNet-20 on CIFAR-10 (CPU budget); 3,000 iterations per round; one run, "
          "the last two rounds averaged instead of replicates; the reference k = 0 ticket uses the masks found "
          "with rewinding to k.")
