"""Supermasks: an IMP mask on the untrained initial weights scores far above chance.

Zhou, Lan, Liu & Yosinski 2019 (NeurIPS), "Deconstructing Lottery Tickets: Zeros, Signs, and the
Supermask", Section 5 (LeNet-300-100 / FC on MNIST): applying a lottery-ticket mask to
the initial weights θ0, with no training at all, gives test accuracy far above chance (up to 80% with
the large_final_same_sign mask; large_final masks well above chance too).

Protocol (small): the shared LeNet IMP run of the tickets_vs_dense check (large_final masks, k = 0),
then trainer.analyses.masking_criteria with only the IMP variant (large_final, rewind, zero), which
trains nothing and reports each round's supermask score: the masked θ0's test accuracy. The
measured round is the last one (7% remaining at the small budget; Zhou's scores grow with sparsity).

Verdict with chance = 1 / classes: holds when the score >= 2 × chance; fails when < 1.5 × chance;
undecided in between.
"""
from __future__ import annotations

from trainer import datasets
from trainer.analyses import masking_criteria
from trainer.reproduce import tickets_vs_dense
from trainer.reproduce.base import Check, Decision, Step, decide, far_above_chance, missing, points

NAME = "supermask"
IMP_ONLY = {"criteria": ["large_final"], "reinits": ["rewind"], "masked_weights": ["zero"]}


def steps(budget: str, data_dir) -> list[Step]:
    imp = tickets_vs_dense.lenet_imp_step(budget, data_dir)
    return [imp, Step("supermask scores of the IMP masks at θ0", imp.spec, 0, analysis=masking_criteria.NAME,
                      params=IMP_ONLY)]


def measure(session, protocol_steps: list[Step]) -> dict:
    results, analysis = session.run_all(protocol_steps)
    return measurements(results, analysis)


def measurements(results: dict, analysis: dict) -> dict:
    rounds = [entry for entry in analysis["ticket"] if entry["round"] > 0]
    last = max(rounds, key=lambda entry: entry["round"]) if rounds else {}
    chance = 1.0 / datasets.DATASETS[results["spec"]["dataset"]].info.num_classes
    measured = {"round": last.get("round"), "remaining_fraction": last.get("remaining_fraction"),
                "supermask_accuracy": last.get("supermask_test_accuracy"), "chance": chance,
                "trained_ticket_accuracy": (last.get("early_stop") or last.get("final") or {}).get("test_accuracy")}
    chart = {"title": "Supermask: test accuracy of the IMP mask on θ0 without training",
             "x_label": "% of weights remaining", "y_label": "test accuracy", "log_x": True,
             "series": [{"name": "supermask (untrained)", "x": [100 * e["remaining_fraction"] for e in rounds],
                         "y": [e["supermask_test_accuracy"] for e in rounds]},
                        {"name": "chance", "x": [100.0, 100 * (last.get("remaining_fraction") or 1.0)],
                         "y": [chance, chance]}]}
    return {"measured": measured, "chart": chart}


def judge(measured: dict) -> Decision:
    score, chance = measured["supermask_accuracy"], measured["chance"]
    if score is None:
        return decide([missing("supermask accuracy")])
    return decide([far_above_chance(score, chance,
                                     f"supermask at {100 * measured['remaining_fraction']:.1f}% remaining")])


def summary(measured: dict) -> str:
    return (f"untrained masked θ0 at {100 * (measured['remaining_fraction'] or 0):.1f}% remaining: "
            f"{points(measured['supermask_accuracy'])}, chance {points(measured['chance'])} (claim: far above chance)")


CHECK = Check(
    name=NAME, title="Supermasks score far above chance",
    claim="The supermask: the masked network at θ0 without any training scores far above chance.",
    source="Zhou, Lan, Liu & Yosinski 2019 (NeurIPS), 'Deconstructing Lottery Tickets: Zeros, Signs, and the "
           "Supermask', Section 5 ('Supermasks')",
    tolerance="At the last IMP round: PASS when the untrained masked network's test accuracy >= 2 × chance; FAIL when "
              "< 1.5 × chance; INCONCLUSIVE in between.",
    steps=steps, measure=measure, judge=judge, match_fields=tickets_vs_dense.LENET_MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    notes="The IMP (large_final) mask rather than Zhou's best supermask criterion (large_final_same_sign, not "
          "implemented); 4,000 training iterations per round.")
