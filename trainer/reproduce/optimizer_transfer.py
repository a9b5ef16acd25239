"""Tickets transfer across optimizers: a ticket found with one optimizer, trained with the other, beats a random ticket.

Morcos, Yu, Paganini & Tian 2019 (NeurIPS), "One ticket to win them all", Section 4.3 (Figure 5, VGG19
on CIFAR-10): winning tickets found with Adam and trained with SGD (and vice versa) keep most of their
advantage over random tickets (a random mask of the ticket's per-layer sparsity on a random init) and
come close to the tickets found with the target optimizer itself.

Protocol (small): LeNet-300-100 (a CPU-sized stand-in for VGG19), batch 60, 3,000 iterations per round,
10 rounds of layerwise 20% (output 10%; 10.8% of weights left), late rewinding to k = 100 iterations as
in the paper; one run with Adam 1.2e-3 (the run of the early_phase_signs check: it is shared) and one
with SGD 0.1. Then trainer.analyses.transfer on each run's last COMPARED_ROUNDS rounds with the other
run's optimizer and learning rate: the ticket and its random ticket trained k..T with it.

Verdict on test accuracy at early stop averaged over the compared rounds, per direction (Adam → SGD,
SGD → Adam), as the transferred ticket's lead over the random ticket: each holds when >= 1 point,
fails when <= 0 (the random ticket as good), undecided in between. The target's own tickets (the other
run's rounds at the nearest % remaining) are reported, not judged.
"""
from __future__ import annotations

from trainer import replicate_stats
from trainer.analyses import transfer
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
    missing,
    points,
    signed_points,
)
from trainer.reproduce.early_phase_signs import (
    BUDGET_SETTINGS,
    MATCH_FIELDS,
    early_phase_spec,
)

NAME = "optimizer_transfer"
COMPARED_ROUNDS = 2
LEAD_HOLDS, LEAD_FAILS = 0.01, 0.0
SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0}
DIRECTIONS = ("adam_to_sgd", "sgd_to_adam")


def adam_spec(budget: str, data_dir) -> dict:
    return early_phase_spec(budget, data_dir)


def sgd_spec(budget: str, data_dir) -> dict:
    spec = adam_spec(budget, data_dir)
    return {**spec, "training": {**spec["training"], **SGD}}


def study_params(budget: str, target: dict) -> dict:
    rounds = BUDGET_SETTINGS[budget][2]
    return {"rounds": list(range(max(1, rounds - COMPARED_ROUNDS + 1), rounds + 1)),
            "target_optimizer": target["optimizer"], "target_lr": target["lr"],
            "target_momentum": target["momentum"] if target["optimizer"] == "sgd" else None}


def steps(budget: str, data_dir) -> list[Step]:
    adam, sgd = adam_spec(budget, data_dir), sgd_spec(budget, data_dir)
    to_sgd, to_adam = study_params(budget, sgd["training"]), study_params(budget, adam["training"])
    return [Step("LeNet-300-100 IMP with Adam, rewinding to k > 0", adam, experiment_trainings(adam)),
            Step("LeNet-300-100 IMP with SGD, rewinding to k > 0", sgd, experiment_trainings(sgd)),
            Step("Adam tickets and random tickets trained with SGD", adam, 2 * len(to_sgd["rounds"]),
                 analysis=transfer.NAME, params=to_sgd),
            Step("SGD tickets and random tickets trained with Adam", sgd, 2 * len(to_adam["rounds"]),
                 analysis=transfer.NAME, params=to_adam)]


def measure(session, protocol_steps: list[Step]) -> dict:
    adam_results, sgd_results, adam_to_sgd, sgd_to_adam = session.run_all(protocol_steps)
    return measurements({"adam_to_sgd": (adam_to_sgd, sgd_results), "sgd_to_adam": (sgd_to_adam, adam_results)})


def _mean(entries: list):
    values = [replicate_stats.metric(entry) if entry is not None else None for entry in entries]
    return sum(values) / len(values) if values and None not in values else None


def measurements(studies: dict) -> dict:
    """studies: direction -> (the transfer result, the results.json of the run trained with the target optimizer)."""
    measured, series = {}, []
    for direction, (study, own_run) in studies.items():
        tickets, randoms = study[transfer.TRANSFERRED], study["controls"].get(transfer.RANDOM_TICKET, [])
        own = [transfer.nearest_round(own_run["rounds"], entry["remaining_fraction"]) for entry in tickets]
        measured[f"{direction}_remaining_fraction"] = min(entry["remaining_fraction"] for entry in tickets)
        measured[f"{direction}_ticket_accuracy"] = _mean(tickets)
        measured[f"{direction}_random_ticket_accuracy"] = _mean(randoms)
        measured[f"{direction}_own_ticket_accuracy"] = _mean(own)
        label = direction.replace("_to_", " → ").replace("adam", "Adam").replace("sgd", "SGD")
        for name, entries in (("ticket", tickets), ("random ticket", randoms), ("target's own ticket", own)):
            found = [entry for entry in entries if entry is not None]
            series.append({"name": f"{label}: {name}", "x": [100 * entry["remaining_fraction"] for entry in found],
                           "y": [replicate_stats.metric(entry) for entry in found]})
    chart = {"title": "Tickets trained with the other optimizer: test accuracy at early stop",
             "x_label": "% of weights remaining", "y_label": "test accuracy", "log_x": True, "series": series}
    return {"measured": measured, "chart": chart}


def _lead(measured: dict, direction: str):
    ticket, random = measured[f"{direction}_ticket_accuracy"], measured[f"{direction}_random_ticket_accuracy"]
    return None if ticket is None or random is None else ticket - random


def judge(measured: dict) -> Decision:
    findings = []
    for direction in DIRECTIONS:
        lead = _lead(measured, direction)
        if lead is None:
            findings.append(missing(f"{direction} ticket or random ticket"))
            continue
        text = (f"{direction}: ticket {points(measured[f'{direction}_ticket_accuracy'])} vs random ticket "
                f"{points(measured[f'{direction}_random_ticket_accuracy'])}: {signed_points(lead)}")
        findings.append(Finding(HOLDS if lead >= LEAD_HOLDS else FAILS if lead <= LEAD_FAILS else UNDECIDED, text))
    return decide(findings)


def summary(measured: dict) -> str:
    shown = "; ".join(f"{direction.replace('_to_', ' -> ')}: ticket "
                      f"{points(measured[f'{direction}_ticket_accuracy'])}, random ticket "
                      f"{points(measured[f'{direction}_random_ticket_accuracy'])}, target's own "
                      f"{points(measured[f'{direction}_own_ticket_accuracy'])}" for direction in DIRECTIONS)
    return f"{shown} (claim: the transferred ticket beats the random ticket)"


CHECK = Check(
    name=NAME, title="Tickets transfer across optimizers and beat random tickets",
    claim="A ticket found with one optimizer (Adam) and trained with another (SGD), and vice versa, beats a random "
          "ticket (random mask of the same per-layer sparsity, random init).",
    source="Morcos, Yu, Paganini & Tian 2019 (NeurIPS), 'One ticket to win them all', Section 4.3 (Figure 5)",
    tolerance="Test accuracy at early stop averaged over the last two pruned rounds, per direction (Adam → SGD, "
              "SGD → Adam): each PASSES when the transferred ticket is >= 1 point above the random ticket, FAILS "
              "when it is not above it; otherwise INCONCLUSIVE. The target optimizer's own tickets are reported.",
    steps=steps, measure=measure, judge=judge, match_fields=MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="LeNet-300-100 instead of VGG19 on CIFAR-10 (CPU budget); 3,000 iterations per round; one run per "
          "optimizer, the last two rounds averaged instead of replicates; SGD without momentum at 0.1; the Adam run "
          "is the early_phase_signs check's.")
