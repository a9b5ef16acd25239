"""Ticket vs dense vs random reinitialisation for any task's metric: what the language-model and agent
checks (Yu, Edunov, Tian & Morcos 2020) share.

From one IMP run with replicates and a random_reinit control at its reference round (its only
control round), paired by replicate with trainer.verdict:
  ticket matches dense   holds when the ticket's mean improvement over dense (ticket − dense, sign-flipped
                         when lower is better) >= −tolerance; fails when the 95% CI of that improvement
                         lies wholly below −tolerance
  ticket beats reinit    holds when the 95% CI of the ticket's improvement over the random reinit lies wholly
                         above 0 (the paired t-test rejects "no better"); fails when it lies wholly below
                         +tolerance (any lead is smaller than the tolerance, or the reinit is better)
tolerance = trainer.verdict.tolerance_of(dense, metric): max(one std of dense across replicates, 1% of the
dense mean) for perplexity and return. n < 3 paired replicates, or a missing measurement, leaves a
sub-claim undecided. Differences are reported as ticket − other in the metric's own units.
"""
from __future__ import annotations

from trainer import replicate_stats, verdict
from trainer.events import TICKET
from trainer.reproduce.base import (
    FAILS,
    HOLDS,
    UNDECIDED,
    Decision,
    Finding,
    Step,
    decide,
    experiment_trainings,
    full_spec,
    missing,
)
from trainer.reproduce.tickets_vs_dense import ci_end, percent, round_series
from trainer.steps import Step as Length
from trainer.tasks import Metric

CONTROL = "random_reinit"
REFERENCE_REMAINING = 1 / 3  # Yu et al.: about two thirds of the weights can go
# The settings a claim about IMP on these tasks depends on; budgets (steps, rounds, replicates, k) may differ.
MATCH_FIELDS = ("model", "training.optimizer", "training.lr", "training.batch_size", "training.lr_schedule",
                "training.context_length", "pruning.strategy", "pruning.scope", "pruning.fraction",
                "pruning.layer_fractions", "pruning.criterion", "pruning.structure", "pruning.schedule")


def reference_round(rounds: int, fraction: float = 0.2) -> int:
    """The round whose remaining fraction (1 − fraction)^r is nearest REFERENCE_REMAINING (5 at 20% per round)."""
    return min(range(1, rounds + 1), key=lambda r: abs((1 - fraction) ** r - REFERENCE_REMAINING))


def imp_spec(fields: dict, rounds: int, replicates: int) -> dict:
    """An IMP spec (layerwise 20% per round) with replicates and the random reinit at the reference round."""
    return full_spec({**fields, "device": "cpu", "replicates": replicates, "controls": [CONTROL],
                      "control_rounds": [reference_round(rounds)],
                      "pruning": {"strategy": "magnitude", "scope": "layerwise", "fraction": 0.2, "rounds": rounds}})


def imp_step(label: str, spec: dict) -> Step:
    return Step(label, spec, experiment_trainings(spec))


def requires_late_rewinding_and_reinit(spec: dict) -> bool:
    """What a matching spec needs beyond the match fields: k > 0 (late rewinding, which Yu et al. find key; k
    itself scales with the budget) and the random_reinit control the second sub-claim compares with."""
    return Length.parse(spec["rewind_step"]).amount > 0 and CONTROL in spec["controls"]


def measure(session, protocol_steps: list[Step], unit: Metric) -> dict:
    [results] = session.run_all(protocol_steps)
    return measurements(results, unit)


def measurements(results: dict, unit: Metric) -> dict:
    """The check's numbers from a results.json dict, read from each record's `test_<unit.key>` at its early stop."""
    name, key = f"test_{unit.key}", unit.key
    reference = results["spec"]["control_rounds"][0]
    observations = verdict.observations_from_results(results, name)
    ticket, controls = observations.get(TICKET, {}), observations.get(CONTROL, {})
    dense = ticket.get(0, {})
    vs_dense = verdict.paired_comparison(ticket.get(reference, {}), dense)
    vs_reinit = verdict.paired_comparison(ticket.get(reference, {}), controls.get(reference, {}))
    bands = {network: replicate_stats.round_bands(results, network, name=name) for network in (TICKET, CONTROL)}
    reference_band = bands[TICKET].get(reference, {})
    measured = {
        "reference_round": reference,
        "remaining_fraction": reference_band.get("remaining_fraction"),
        "tolerance": verdict.tolerance_of(dense, unit) if dense else None,
        "replicates": vs_dense["n"],
        f"dense_{key}": verdict.mean_interval(point.value for point in dense.values())["mean"],
        f"ticket_{key}": reference_band.get("mean"),
        f"reinit_{key}": bands[CONTROL].get(reference, {}).get("mean"),
        "ticket_minus_dense": vs_dense["mean_difference"],
        "ticket_minus_dense_ci_low": ci_end(vs_dense, 0), "ticket_minus_dense_ci_high": ci_end(vs_dense, 1),
        "reinit_replicates": vs_reinit["n"],
        "ticket_minus_reinit": vs_reinit["mean_difference"],
        "ticket_minus_reinit_ci_low": ci_end(vs_reinit, 0), "ticket_minus_reinit_ci_high": ci_end(vs_reinit, 1),
    }
    remaining = percent(reference_band.get("remaining_fraction"))
    chart = {"title": f"Test {unit.label} at early stop vs weights remaining (mean over replicates)",
             "x_label": "% of weights remaining", "y_label": f"test {unit.label}", "log_x": True,
             "series": [round_series("IMP ticket", bands[TICKET]), round_series("random reinit", bands[CONTROL]),
                        {"name": "dense (round 0)", "x": [100.0, remaining if remaining is not None else 100.0],
                         "y": [measured[f"dense_{key}"]] * 2}]}
    return {"measured": measured, "chart": chart}


def _improvement_interval(measured: dict, prefix: str, unit: Metric) -> tuple[float, float] | None:
    """The 95% CI of the improvement (ticket − other, negated when lower is better), low end first."""
    low, high = measured[f"{prefix}_ci_low"], measured[f"{prefix}_ci_high"]
    if low is None or high is None:
        return None
    return (low, high) if unit.higher_is_better else (-high, -low)


def _sign(unit: Metric) -> float:
    return 1.0 if unit.higher_is_better else -1.0


def _enough(count: int | None) -> bool:
    return (count or 0) >= verdict.MINIMUM_REPLICATES


def findings(measured: dict, unit: Metric) -> list[Finding]:
    """The two sub-claims: [ticket matches dense, ticket beats the random reinit]."""
    return [ticket_matches_dense(measured, unit), ticket_beats_reinit(measured, unit)]


def judge(measured: dict, unit: Metric) -> Decision:
    return decide(findings(measured, unit))


def _direction(unit: Metric) -> str:
    return "higher" if unit.higher_is_better else "lower"


def ticket_matches_dense(m: dict, unit: Metric) -> Finding:
    if m["ticket_minus_dense"] is None or m["tolerance"] is None:
        return missing("ticket vs dense")
    tolerance = m["tolerance"]
    text = (f"ticket at {percent(m['remaining_fraction'] or 0):.1f}% remaining {unit.label} "
            f"{unit.text(m[f'ticket_{unit.key}'])} vs dense {unit.text(m[f'dense_{unit.key}'])}: "
            f"{m['ticket_minus_dense']:+.2f} ({_direction(unit)} is better; tolerance {tolerance:.2f}, "
            f"n={m['replicates']})")
    if not _enough(m["replicates"]):
        return Finding(UNDECIDED, text + f", fewer than {verdict.MINIMUM_REPLICATES} replicates")
    if _sign(unit) * m["ticket_minus_dense"] >= -tolerance:
        return Finding(HOLDS, text)
    interval = _improvement_interval(m, "ticket_minus_dense", unit)
    if interval is not None and interval[1] < -tolerance:
        return Finding(FAILS, text)
    return Finding(UNDECIDED, text)


def ticket_beats_reinit(m: dict, unit: Metric) -> Finding:
    if m["ticket_minus_reinit"] is None or m["tolerance"] is None:
        return missing("ticket vs random reinit")
    text = (f"random reinit {unit.text(m[f'reinit_{unit.key}'])}: ticket − reinit {m['ticket_minus_reinit']:+.2f}")
    interval = _improvement_interval(m, "ticket_minus_reinit", unit)
    if not _enough(m["reinit_replicates"]) or interval is None:
        return Finding(UNDECIDED, text + f", fewer than {verdict.MINIMUM_REPLICATES} replicates")
    text += (f" (95% CI {m['ticket_minus_reinit_ci_low']:+.2f} to {m['ticket_minus_reinit_ci_high']:+.2f}, "
             f"{_direction(unit)} is better)")
    if interval[0] > 0:
        return Finding(HOLDS, text)
    if interval[1] < m["tolerance"]:
        return Finding(FAILS, text)
    return Finding(UNDECIDED, text)


def summary(measured: dict, unit: Metric) -> str:
    key = unit.key
    return (f"at {percent(measured['remaining_fraction'] or 0):.1f}% remaining: ticket {unit.label} "
            f"{unit.text(measured[f'ticket_{key}'])}, dense {unit.text(measured[f'dense_{key}'])}, random reinit "
            f"{unit.text(measured[f'reinit_{key}'])} ({_direction(unit)} is better; claim: ticket within tolerance "
            f"of dense and better than the reinit)")
