"""Short random-label pre-training before IMP helps a little; long random-label pre-training hurts.

Frankle, Schwab & Morcos 2020 (ICLR), "The Early Phase of Neural Network Training", Section 5
(ResNet-20 on CIFAR-10): the dense network trained for a while on randomly labelled data, then IMP
from those weights, rewinding to the pre-trained weights. Short pre-training gives tickets at least
as good as IMP from θ0; long pre-training makes them worse.

Protocol (small): LeNet-300-100 (a CPU-sized stand-in for ResNet-20) with Adam 1.2e-3, batch 60,
3,000 iterations per round, 10 rounds of layerwise 20% (output 10%; 10.8% of weights left), rewinding
to θ0 (k = 0): the ticket without pre-training. Then trainer.analyses.pretraining with random labels
for SHORT (1 epoch) and LONG (10 epochs), each chain rewinding to its pre-trained weights.

Verdict on test accuracy at early stop averaged over the last COMPARED_ROUNDS pruned rounds: short
pre-training holds when it is at most 0.5 points below the ticket (it does not hurt; one run cannot
resolve "a little" better), fails when more than 2 points below; long pre-training hurts when it is
at least 1 point below the short one, fails when it is not below it at all; in between undecided.
"""
from __future__ import annotations

from trainer import replicate_stats
from trainer.analyses import pretraining
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

NAME = "pretraining_random_labels"
COMPARED_ROUNDS = 2
SHORT_HOLDS, SHORT_FAILS = -0.005, -0.02  # short minus ticket
LONG_HOLDS, LONG_FAILS = -0.01, 0.0  # long minus short

# (iterations per round, eval interval, pruned rounds, short and long pre-training)
BUDGET_SETTINGS = {"tiny": ("30it", "15it", 1, "5it", "20it"), "small": ("3000it", "250it", 10, "1ep", "10ep"),
                   "large": ("10000it", "500it", 12, "2ep", "40ep")}
MATCH_FIELDS = ("model", "training.optimizer", "training.lr", "training.batch_size", "pruning.strategy",
                "pruning.schedule", "rewind_step")


def base_spec(budget: str, data_dir) -> dict:
    steps_per_round, eval_interval, rounds, _, _ = BUDGET_SETTINGS[budget]
    return lenet_spec(budget, data_dir, {"optimizer": "adam", "lr": 0.0012, "batch_size": 60,
                                         "training_steps": steps_per_round, "eval_interval": eval_interval},
                      pruning={"rounds": rounds, "fraction": 0.2, "layer_fractions": {"fc3.weight": 0.1}},
                      rewind_step="0it")


def study_params(budget: str) -> dict:
    _, _, _, short, long = BUDGET_SETTINGS[budget]
    return {"tasks": [pretraining.RANDOM_LABELS], "pretrain_steps": [short, long]}


def steps(budget: str, data_dir) -> list[Step]:
    spec = base_spec(budget, data_dir)
    chain = spec["pruning"]["rounds"] + 1
    return [Step("LeNet-300-100 IMP rewinding to θ0", spec, experiment_trainings(spec)),
            Step("random-label pre-training (short, long), then IMP from it", spec, 2 * (chain + 1),
                 analysis=pretraining.NAME, params=study_params(budget))]


def measure(session, protocol_steps: list[Step]) -> dict:
    _, study = session.run_all(protocol_steps)
    return measurements(study)


def _last_rounds(records: list[dict]) -> list[dict]:
    pruned = sorted((r for r in records if r["round"] > 0), key=lambda r: r["round"])
    return pruned[-COMPARED_ROUNDS:]


def _mean(records: list[dict]):
    values = [replicate_stats.metric(record) for record in records]
    return sum(values) / len(values) if values and None not in values else None


def measurements(study: dict) -> dict:
    by_length = sorted(study["chains"], key=lambda chain: chain["pretrain_iterations"])
    short_chain, long_chain = by_length[0], by_length[-1]
    ticket = _last_rounds(study["ticket"])
    measured = {"remaining_fraction": min(r["remaining_fraction"] for r in ticket) if ticket else None,
                "ticket_accuracy": _mean(ticket),
                "short_accuracy": _mean(_last_rounds(short_chain["rounds"])),
                "long_accuracy": _mean(_last_rounds(long_chain["rounds"])),
                "short_iterations": short_chain["pretrain_iterations"],
                "long_iterations": long_chain["pretrain_iterations"]}
    curves = [("ticket (no pre-training)", study["ticket"]),
              (f"random labels, {short_chain['pretrain_steps']}", short_chain["rounds"]),
              (f"random labels, {long_chain['pretrain_steps']}", long_chain["rounds"])]
    chart = {"title": "IMP after random-label pre-training: test accuracy at early stop",
             "x_label": "% of weights remaining", "y_label": "test accuracy", "log_x": True,
             "series": [{"name": label, "x": [100 * r["remaining_fraction"] for r in records],
                         "y": [replicate_stats.metric(r) for r in records]} for label, records in curves]}
    return {"measured": measured, "chart": chart}


def judge(measured: dict) -> Decision:
    ticket, short, long = measured["ticket_accuracy"], measured["short_accuracy"], measured["long_accuracy"]
    findings = []
    if ticket is None or short is None:
        findings.append(missing("short pre-training"))
    else:
        gain = short - ticket
        findings.append(Finding(HOLDS if gain >= SHORT_HOLDS else FAILS if gain < SHORT_FAILS else UNDECIDED,
                                f"short pre-training {points(short)} vs ticket {points(ticket)}: "
                                f"{signed_points(gain)}"))
    if short is None or long is None:
        findings.append(missing("long pre-training"))
    else:
        change = long - short
        findings.append(Finding(HOLDS if change <= LONG_HOLDS else FAILS if change >= LONG_FAILS else UNDECIDED,
                                f"long pre-training {points(long)} vs short: {signed_points(change)}"))
    return decide(findings)


def summary(measured: dict) -> str:
    return (f"ticket {points(measured['ticket_accuracy'])}; random labels short {points(measured['short_accuracy'])}, "
            f"long {points(measured['long_accuracy'])} (claim: short helps a little, long hurts)")


CHECK = Check(
    name=NAME, title="Early phase: short random-label pre-training helps a little, long hurts",
    claim="Short random-label pre-training before IMP helps a little, long hurts.",
    source="Frankle, Schwab & Morcos 2020 (ICLR), 'The Early Phase of Neural Network Training', Section 5",
    tolerance="Test accuracy at early stop averaged over the last two pruned rounds: short pre-training PASSES "
              "when at most 0.5 points below the ticket without pre-training (FAIL when more than 2 points below); "
              "long pre-training PASSES when at least 1 point below the short one (FAIL when not below it); "
              "otherwise INCONCLUSIVE.",
    steps=steps, measure=measure, judge=judge, match_fields=MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="LeNet-300-100 instead of ResNet-20 on CIFAR-10 (CPU budget); 3,000 iterations per round; short = 1 "
          "epoch, long = 10 epochs; one run, the last two rounds averaged instead of replicates.")
