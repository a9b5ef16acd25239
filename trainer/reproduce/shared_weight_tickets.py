"""Weight-agnostic masks: an IMP ticket's mask with one shared weight value scores far above chance and
above a random mask of the same sparsity.

Gaier & Ha 2019 (NeurIPS), "Weight Agnostic Neural Networks", Sections 3-4: a topology evaluated with
one shared weight value for every connection (w in {-2, -1, -0.5, 0.5, 1, 2}) performs far above chance
when the topology, not the weights, encodes the solution. Here the topology is a lottery ticket's mask
(trainer.analyses.weight_agnostic): every kept weight is w × the layer's std of θ0 × sign(θ0).

Protocol (small): the shared LeNet IMP run of the tickets_vs_dense check (12 rounds, k = 0), then
trainer.analyses.weight_agnostic with Gaier & Ha's six values, the random-mask control (same survivors
per layer) and the rounds nearest 20% remaining (tickets_vs_dense's reference round, judged) and the last
round (reported). Nothing trains.

Which accuracy is judged: LeNet-300-100 is a bias-free ReLU network without skip connections, so it is
positively homogeneous in each layer's weights: every w > 0 gives the same predictions (θ0's signs), every
w < 0 flips every sign. Gaier & Ha's score, the mean over ±w, therefore mixes the network with its
sign-flipped twin; the claim is judged on the mean accuracy over the values w > 0 (one number for LeNet),
for the ticket and the random mask alike, and the mean over all w is reported beside it.

Verdict at the reference round, with chance = 1 / classes:
  far above chance       holds when the ticket's accuracy (w > 0) >= 2 × chance; fails below 1.5 × chance
  above a random mask    holds when it is >= the random mask's (w > 0) + 5 points; fails when it is not above it
Anything else is undecided.
"""
from __future__ import annotations

import statistics

from trainer.analyses import weight_agnostic
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
    far_above_chance,
    missing,
    points,
    signed_points,
)

NAME = "shared_weight_tickets"
MARGIN = 0.05  # the ticket's lead over the random mask, in accuracy
WEIGHT_VALUES = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)  # Gaier & Ha's


def steps(budget: str, data_dir) -> list[Step]:
    imp = tickets_vs_dense.lenet_imp_step(budget, data_dir)
    rounds = imp.spec["pruning"]["rounds"]
    scored = sorted({tickets_vs_dense.reference_round(rounds), rounds})
    params = {"rounds": scored, "weight_values": list(WEIGHT_VALUES), "scale": "init_std", "random_control": True}
    return [imp, Step("the IMP masks with one shared weight value, and random masks", imp.spec, 0,
                      analysis=weight_agnostic.NAME, params=params)]


def measure(session, protocol_steps: list[Step]) -> dict:
    _, analysis = session.run_all(protocol_steps)
    return measurements(analysis, protocol_steps[-1].params["rounds"][0])  # sorted: the reference round first


def positive_accuracy(entry: dict) -> float | None:
    """Mean test accuracy over the shared values w > 0 (θ0's signs; all equal for a homogeneous network)."""
    accuracies = [a for w, a in zip(entry["weight_values"], entry["test_accuracy"]) if w > 0 and a is not None]
    return statistics.fmean(accuracies) if accuracies else None


def measurements(analysis: dict, reference_round: int) -> dict:
    tickets = {entry["round"]: entry for entry in analysis["ticket"]}
    randoms = {entry["round"]: entry for entry in analysis["random"]}
    rounds = sorted(tickets)
    measured = {"chance": analysis["chance"], "round": reference_round, "rounds": rounds,
                "weight_values": analysis["weight_values"]}
    for label, round_index in (("", reference_round), ("last_", rounds[-1] if rounds else None)):
        ticket, random = tickets.get(round_index) or {}, randoms.get(round_index) or {}
        measured.update({
            f"{label}remaining_fraction": ticket.get("remaining_fraction"),
            f"{label}ticket_accuracy": positive_accuracy(ticket) if ticket else None,
            f"{label}random_accuracy": positive_accuracy(random) if random else None,
            f"{label}ticket_mean_score": ticket.get("mean_accuracy"),
            f"{label}random_mean_score": random.get("mean_accuracy")})
    measured["last_round"] = rounds[-1] if rounds else None
    remaining = [100 * tickets[r]["remaining_fraction"] for r in rounds]
    chart = {"title": "Weight-agnostic: IMP masks with one shared weight value (× layer std × sign θ0), untrained",
             "x_label": "% of weights remaining", "y_label": "test accuracy", "log_x": True,
             "series": [{"name": "ticket mask, w > 0", "x": remaining,
                         "y": [positive_accuracy(tickets[r]) for r in rounds]},
                        {"name": "random mask, w > 0", "x": remaining,
                         "y": [positive_accuracy(randoms[r]) if r in randoms else None for r in rounds]},
                        {"name": "ticket mask, mean over ±w (Gaier & Ha's score)", "x": remaining,
                         "y": [tickets[r]["mean_accuracy"] for r in rounds]},
                        {"name": "chance", "x": [min(remaining, default=100.0), max(remaining, default=100.0)],
                         "y": [analysis["chance"]] * 2}]}
    return {"measured": measured, "chart": chart}


def judge(measured: dict) -> Decision:
    ticket, random, chance = measured["ticket_accuracy"], measured["random_accuracy"], measured["chance"]
    if ticket is None:
        return decide([missing(f"the ticket's accuracy at round {measured['round']}")])
    findings = [far_above_chance(ticket, chance, f"round {measured['round']} ticket mask, w > 0:")]
    if random is None:
        findings.append(missing("the random mask's accuracy"))
    else:
        lead = ticket - random
        outcome = HOLDS if lead >= MARGIN else FAILS if lead <= 0 else UNDECIDED
        findings.append(Finding(outcome, f"{signed_points(lead)} over the random mask ({points(random)})"))
    return decide(findings)


def summary(measured: dict) -> str:
    def at(label: str) -> str:
        return (f"{100 * (measured[f'{label}remaining_fraction'] or 0):.1f}% remaining: ticket "
                f"{points(measured[f'{label}ticket_accuracy'])}, random mask "
                f"{points(measured[f'{label}random_accuracy'])}"
                f", ticket's mean over ±w {points(measured[f'{label}ticket_mean_score'])}")
    last = f"; last round at {at('last_')}" if measured["last_round"] != measured["round"] else ""
    return (f"one shared weight (w > 0) at {at('')}{last}; chance {points(measured['chance'])} "
            f"(claim: far above chance and above a random mask)")


CHECK = Check(
    name=NAME, title="Weight-agnostic: a ticket's mask with one shared weight",
    claim="A topology evaluated with one shared weight value scores far above chance: an IMP ticket's mask with one "
          "shared weight value (sign from θ0) scores far above chance and above a random mask of the same sparsity.",
    source="Gaier & Ha 2019 (NeurIPS), 'Weight Agnostic Neural Networks', Sections 3-4",
    tolerance="At the round nearest 20% remaining, the test accuracy with the shared values w > 0 (all equal for a "
              "bias-free ReLU net). PASS when the ticket's >= 2 × chance and >= the random mask's + 5 points; FAIL "
              "when the ticket's < 1.5 × chance or not above the random mask's; INCONCLUSIVE otherwise.",
    steps=steps, measure=measure, judge=judge, match_fields=tickets_vs_dense.LENET_MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="Gaier & Ha search topologies without signs, with biases and non-homogeneous activations; our topologies are "
          "IMP masks found on signed weights, so θ0's signs are kept and the judged accuracy is at w > 0 (a ReLU net "
          "without biases gives the same accuracy for every w > 0; the paper's mean over ±w is reported).")
