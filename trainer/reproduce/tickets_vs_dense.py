"""Tickets vs dense vs random reinitialisation, and the early-stop speed-up.

Frankle & Carbin 2019 (ICLR), "The Lottery Ticket Hypothesis", Figures 3 and 4 (LeNet-300-100 on
MNIST, Adam 1.2e-3, batch 60, layerwise pruning 20% per round, output layer 10%): IMP tickets reach
at least the dense test accuracy down to roughly 10-20% of the weights and reach their early-stop
iteration (minimum validation loss) sooner; the same masks randomly re-initialised fall below dense
much earlier (already around 20-50% remaining).

Protocol (small): the paper's LeNet setting, scaled down to 4,000 iterations per round (the paper
trains 50,000), 12 rounds (to 7% remaining, shared with the iterative-vs-one-shot and supermask
checks), 3 replicates, the random_reinit control at the round nearest 20% remaining (k = 0, so it is
F&C's from-scratch control). Numbers are each training's test accuracy at its early stop.

Verdict at that round, from trainer.verdict's paired comparisons over replicates (tolerance = max(one
std of dense across replicates, 0.5 points)):
  ticket matches dense   holds when mean(ticket - dense) >= -tolerance; fails when the 95% CI of the
                         difference lies wholly below -tolerance
  ticket learns faster   holds when the ticket's mean early-stop iteration < dense's; fails when >
  reinit below dense     holds when mean(reinit - dense) < -tolerance and its 95% CI lies below 0;
                         fails when the CI lies wholly above -tolerance (reinit stays at dense level)
n < 3 paired replicates, or a missing measurement, leaves a sub-claim undecided.
"""
from __future__ import annotations

from trainer import replicate_stats, verdict
from trainer.events import TICKET
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

NAME = "tickets_vs_dense"
CONTROL = "random_reinit"
REFERENCE_REMAINING = 0.2  # "down to roughly 10-20%" and "already around 20-50%": the round nearest 20%

BUDGET_SETTINGS = {
    # training steps, eval interval, rounds, replicates
    "tiny": ("60it", "20it", 3, 3),
    "small": ("4000it", "250it", 12, 3),
    "large": ("15000it", "500it", 15, 5),
}
# The settings a claim about LeNet IMP depends on; budgets (steps, rounds, replicates) may differ.
LENET_MATCH_FIELDS = ("model", "training.optimizer", "training.lr", "training.batch_size", "training.lr_schedule",
                      "pruning.strategy", "pruning.scope", "pruning.fraction", "pruning.layer_fractions",
                      "pruning.criterion", "pruning.structure", "rewind_step")


def lenet_imp_spec(budget: str, data_dir) -> dict:
    """The shared LeNet-300-100 IMP spec of the LeNet checks (Frankle & Carbin's setting, scaled down)."""
    steps, eval_interval, rounds, replicates = BUDGET_SETTINGS[budget]
    return lenet_spec(
        budget, data_dir, {"optimizer": "adam", "lr": 0.0012, "batch_size": 60, "training_steps": steps,
                           "eval_interval": eval_interval},
        pruning={"strategy": "magnitude", "scope": "layerwise", "fraction": 0.2, "layer_fractions": {"fc3.weight": 0.1},
                 "rounds": rounds},
        rewind_step="0it", replicates=replicates, controls=[CONTROL], control_rounds=[reference_round(rounds)])


def reference_round(rounds: int) -> int:
    """The round whose hidden-layer remaining fraction 0.8^r is nearest REFERENCE_REMAINING."""
    return min(range(1, rounds + 1), key=lambda r: abs(0.8 ** r - REFERENCE_REMAINING))


def lenet_imp_step(budget: str, data_dir) -> Step:
    spec = lenet_imp_spec(budget, data_dir)
    return Step("LeNet-300-100 IMP (ticket chain, replicates, random reinit)", spec, experiment_trainings(spec))


def steps(budget: str, data_dir) -> list[Step]:
    return [lenet_imp_step(budget, data_dir)]


def measure(session, protocol_steps: list[Step]) -> dict:
    [results] = session.run_all(protocol_steps)
    return measurements(results)


def measurements(results: dict) -> dict:
    """The check's numbers from a results.json dict (trainer.imp.Run.results)."""
    spec = results["spec"]
    reference = spec["control_rounds"][0]
    observations = verdict.observations_from_results(results)
    ticket, controls = observations.get(TICKET, {}), observations.get(CONTROL, {})
    dense = ticket.get(0, {})
    vs_dense = verdict.paired_comparison(ticket.get(reference, {}), dense)
    reinit_vs_dense = verdict.paired_comparison(controls.get(reference, {}), dense)
    ticket_vs_reinit = verdict.paired_comparison(ticket.get(reference, {}), controls.get(reference, {}))
    bands = {network: replicate_stats.round_bands(results, network) for network in (TICKET, CONTROL)}
    reference_band = bands[TICKET].get(reference, {})
    measured = {
        "reference_round": reference,
        "remaining_fraction": reference_band.get("remaining_fraction"),
        "tolerance": verdict.tolerance_of(dense),
        "replicates": vs_dense["n"],
        "dense_accuracy": verdict.mean_interval(p.value for p in dense.values())["mean"],
        "ticket_accuracy": reference_band.get("mean"),
        "reinit_accuracy": bands[CONTROL].get(reference, {}).get("mean"),
        "ticket_minus_dense": vs_dense["mean_difference"],
        "ticket_minus_dense_ci_low": ci_end(vs_dense, 0), "ticket_minus_dense_ci_high": ci_end(vs_dense, 1),
        "dense_early_stop_iteration": vs_dense["other_mean_iteration"],
        "ticket_early_stop_iteration": vs_dense["ticket_mean_iteration"],
        "reinit_minus_dense": reinit_vs_dense["mean_difference"],
        "reinit_minus_dense_ci_low": ci_end(reinit_vs_dense, 0),
        "reinit_minus_dense_ci_high": ci_end(reinit_vs_dense, 1),
        "reinit_replicates": reinit_vs_dense["n"],
        "ticket_minus_reinit": ticket_vs_reinit["mean_difference"],
    }
    chart = {"title": "Test accuracy at early stop vs weights remaining (mean over replicates)",
             "x_label": "% of weights remaining", "y_label": "test accuracy", "log_x": True,
             "series": [round_series("IMP ticket", bands[TICKET]), round_series("random reinit", bands[CONTROL]),
                        {"name": "dense (round 0)", "x": [100.0, percent(reference_band.get("remaining_fraction"))],
                         "y": [measured["dense_accuracy"]] * 2}]}
    return {"measured": measured, "chart": chart}


def ci_end(comparison: dict, end: int) -> float | None:
    """One end (0 low, 1 high) of a paired comparison's confidence interval, None without one."""
    return comparison["ci"][end] if comparison["ci"] else None


def percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


def round_series(name: str, bands: dict) -> dict:
    """A chart series of round bands: % of weights remaining -> mean over replicates."""
    rounds = sorted(bands)
    return {"name": name, "x": [100 * bands[r]["remaining_fraction"] for r in rounds],
            "y": [bands[r]["mean"] for r in rounds]}


def judge(measured: dict) -> Decision:
    tolerance = measured["tolerance"]
    return decide([_ticket_matches(measured, tolerance), _ticket_faster(measured), _reinit_below(measured, tolerance)])


def _enough(count: int | None) -> bool:
    return (count or 0) >= verdict.MINIMUM_REPLICATES


def _ticket_matches(m: dict, tolerance: float) -> Finding:
    if m["ticket_minus_dense"] is None:
        return missing("ticket vs dense")
    text = (f"ticket at {percent(m['remaining_fraction']):.1f}% remaining {points(m['ticket_accuracy'])} vs dense "
            f"{points(m['dense_accuracy'])}: {signed_points(m['ticket_minus_dense'])} (tolerance "
            f"{100 * tolerance:.2f} points, n={m['replicates']})")
    if not _enough(m["replicates"]):
        return Finding(UNDECIDED, text + f", fewer than {verdict.MINIMUM_REPLICATES} replicates")
    if m["ticket_minus_dense"] >= -tolerance:
        return Finding(HOLDS, text)
    if m["ticket_minus_dense_ci_high"] is not None and m["ticket_minus_dense_ci_high"] < -tolerance:
        return Finding(FAILS, text)
    return Finding(UNDECIDED, text)


def _ticket_faster(m: dict) -> Finding:
    ticket, dense = m["ticket_early_stop_iteration"], m["dense_early_stop_iteration"]
    if ticket is None or dense is None:
        return missing("early-stop iterations")
    text = f"early stop at iteration {ticket:.0f} (ticket) vs {dense:.0f} (dense), mean over replicates"
    if not _enough(m["replicates"]):
        return Finding(UNDECIDED, text)
    return Finding(HOLDS if ticket < dense else FAILS if ticket > dense else UNDECIDED, text)


def _reinit_below(m: dict, tolerance: float) -> Finding:
    if m["reinit_minus_dense"] is None:
        return missing("random reinit vs dense")
    text = f"random reinit {points(m['reinit_accuracy'])}: {signed_points(m['reinit_minus_dense'])} vs dense"
    low, high = m["reinit_minus_dense_ci_low"], m["reinit_minus_dense_ci_high"]
    if not _enough(m["reinit_replicates"]) or low is None:
        return Finding(UNDECIDED, text + f", fewer than {verdict.MINIMUM_REPLICATES} replicates")
    text += f" (95% CI {100 * low:+.2f} to {100 * high:+.2f})"
    if m["reinit_minus_dense"] < -tolerance and high < 0:
        return Finding(HOLDS, text)
    if low > -tolerance:
        return Finding(FAILS, text)
    return Finding(UNDECIDED, text)


def summary(measured: dict) -> str:
    return (f"at {percent(measured['remaining_fraction'] or 0):.1f}% remaining: "
            f"ticket {points(measured['ticket_accuracy'])}, dense {points(measured['dense_accuracy'])}, "
            f"random reinit {points(measured['reinit_accuracy'])}; early stop "
            f"{_iteration(measured['ticket_early_stop_iteration'])} "
            f"vs dense {_iteration(measured['dense_early_stop_iteration'])} "
            f"(claim: ticket >= dense and earlier, reinit below dense)")


def _iteration(value: float | None) -> str:
    return "-" if value is None else f"it {value:.0f}"


CHECK = Check(
    name=NAME, title="Winning tickets vs dense vs random reinitialisation",
    claim="Tickets reach >= dense accuracy down to roughly 10-20% of weights and learn faster (earlier early-stop "
          "iteration = minimum validation loss); random reinit falls below dense much earlier (already around "
          "20-50% remaining).",
    source="Frankle & Carbin 2019 (ICLR), 'The Lottery Ticket Hypothesis', Figures 3 and 4 (LeNet-300-100)",
    tolerance="At the round nearest 20% remaining, over >= 3 replicates: ticket mean within max(1 std of dense, "
              "0.5 points) of dense; ticket mean early-stop iteration below dense's; random reinit below dense by "
              "more than that tolerance with its 95% CI below 0. FAIL when the ticket's CI lies wholly below "
              "-tolerance, the ticket stops later, or the reinit's CI lies wholly above -tolerance.",
    steps=steps, measure=measure, judge=judge, match_fields=LENET_MATCH_FIELDS, summary=summary,
    datasets=("mnist", "fashion_mnist"),
    requires=lambda spec: bool(set(spec["controls"]) & set(verdict.REINIT_CONTROLS)),
    notes="4,000 iterations per round instead of 50,000 (CPU budget); Fashion-MNIST when MNIST is not installed; "
          "the reinit control only at the round nearest 20% remaining.")
