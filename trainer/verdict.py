"""Is this a winning ticket? A per-round statistical verdict over replicates.

The words are the papers' (see ../shared/SCIENCE.md, "Words"):
- Frankle & Carbin 2019 (ICLR), "The Lottery Ticket Hypothesis": a winning ticket, trained in
  isolation, reaches the dense network's test accuracy in at most as many iterations, and does
  better than the same sub-network randomly re-initialised (and than a random sparse mask).
- Frankle et al. 2020 (ICML), "Linear Mode Connectivity and the Lottery Ticket Hypothesis": a
  *matching* sub-network reaches the dense accuracy within a stated tolerance.

What we compute, per pruned round r (round 0 is the dense network), from the accuracy each
training reports (its early stop at minimum validation loss, or the end of training when the run
has no validation split: trainer.replicate_stats.reported):
- the ticket's mean over replicates with a 95% two-sided Student-t confidence interval
  (mean ± t(0.975, n−1) · s / √n);
- against dense: the paired differences d_i = ticket_i(r) − dense_i(0) of the same replicate i
  (same θ0 and data order), their mean, 95% CI and a two-sided paired t-test (t = mean / (s/√n),
  df = n − 1); likewise against each control of round r, paired by replicate. A replicate that
  lacks either side (not run, diverged) is left out of that comparison only.
- *matching*: mean d ≥ −tolerance, and the ticket's mean early-stop iteration over the paired
  replicates ≤ dense's (the iteration is counted from 0, so a ticket rewound to k is not credited
  with the k iterations it skipped: conservative). Tolerance = max(one sample std of the dense
  round-0 accuracies across replicates, 0.5 percentage points); the floor keeps two nearly equal
  dense replicates from making the tolerance vanish.
- *winning*: matching, and significantly better than every control of the round (the lower end of
  the 95% CI of ticket − control above 0, i.e. the paired t-test rejects "no better" at 5%,
  two-sided) where both control families were run: a random re-initialisation (random_reinit or
  random_reinit_from_scratch) and random_prune. A round without them is at most *matching*.
- n ≥ 3 paired replicates for every comparison a verdict rests on; with fewer, the verdict is
  "more replicates needed" (the numbers are still shown). Anything else is *not shown*.

Where we differ from the papers: they read matching from curves of a few trials by eye; we state
a test and a tolerance so the verdict is reproducible. The mean-difference rule for matching is a
point estimate (the tolerance is the allowance for noise); the "better than controls" rule is a
significance test, because that is the claim the controls exist to support.

The *best ticket* (best_ticket) is a simpler rule for one run, shown in lists and sweeps: the sparsest
finished round within one point of dense accuracy (1% of the dense value for other metrics).

Student-t quantiles are computed here (exact closed forms of the t CDF for integer degrees of
freedom, inverted by bisection) so the engine needs no scipy.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from trainer import replicate_stats, tasks
from trainer.events import TICKET
from trainer.tasks import ACCURACY, Metric

CONFIDENCE = 0.95
MINIMUM_REPLICATES = 3
TOLERANCE_FLOOR = 0.005  # 0.5 percentage points of accuracy
# Metrics that are not a fraction (perplexity, return): the floor is this share of the dense mean's magnitude.
RELATIVE_TOLERANCE_FLOOR = 0.01
REINIT_CONTROLS = ("random_reinit", "random_reinit_from_scratch")
PRUNE_CONTROLS = ("random_prune",)
# The two control families Frankle & Carbin compare a winning ticket with, by the name we print when missing.
CONTROL_FAMILIES = {"random_reinit": REINIT_CONTROLS, "random_prune": PRUNE_CONTROLS}

MATCHING, WINNING, NOT_SHOWN, MORE_REPLICATES = "matching", "winning", "not shown", "more replicates needed"
TEST_NAME = "paired t-test on per-replicate differences (two-sided), Student-t confidence intervals"


@dataclass(frozen=True)
class Point:
    """What one training (network, round, replicate) reports: the metric and the iteration it was read at."""
    value: float
    iteration: int | None


# network -> round -> replicate -> Point
Observations = dict[str, dict[int, dict[int, Point]]]


# ---- Student t ----------------------------------------------------------------------------

def student_t_central(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with integer df ≥ 1 (the closed-form finite series in θ = atan(t/√df))."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    if math.isinf(t):
        return 1.0
    theta = math.atan(abs(t) / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df == 1:
        return 2 * theta / math.pi
    term = total = 1.0
    first = 2 if df % 2 == 0 else 3
    for j in range(first, df, 2):
        term *= cos2 * (j - 1) / j
        total += term
    if df % 2 == 0:
        return sin * total
    return 2 / math.pi * (theta + sin * math.sqrt(cos2) * total)


def student_t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| ≤ t) = confidence: the half-width factor of a two-sided interval (12.706 for
    95% at df = 1, 4.303 at df = 2, 1.96 as df grows)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    low, high = 0.0, 1.0
    while student_t_central(high, df) < confidence:
        high *= 2
    for _ in range(100):  # bisection to far below float print precision
        middle = (low + high) / 2
        if student_t_central(middle, df) < confidence:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def two_sided_p_value(t: float, df: int) -> float:
    return max(0.0, 1.0 - student_t_central(t, df))


# ---- statistics over replicates -----------------------------------------------------------

def mean_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> dict:
    """n, mean, sample std and the two-sided Student-t interval of the mean (None for n < 2)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci": None}
    mean = sum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci": [mean - half, mean + half]}


def paired_comparison(ticket: dict[int, Point], other: dict[int, Point], confidence: float = CONFIDENCE) -> dict:
    """ticket − other over the replicates both have: mean difference, its CI, the paired t-test and
    both sides' mean iterations."""
    replicates = sorted(set(ticket) & set(other))
    differences = [ticket[i].value - other[i].value for i in replicates]
    stats = mean_interval(differences, confidence)
    t = p = None
    if stats["n"] >= 2:
        standard_error = stats["std"] / math.sqrt(stats["n"])
        if standard_error > 0:
            t = stats["mean"] / standard_error
            p = two_sided_p_value(t, stats["n"] - 1)
        else:  # identical differences: no noise to test against
            p = 1.0 if stats["mean"] == 0 else 0.0
    return {"n": stats["n"], "replicates": replicates, "mean_difference": stats["mean"], "std": stats["std"],
            "ci": stats["ci"], "t": t, "p_value": p,
            "ticket_mean_iteration": _mean_iteration(ticket, replicates),
            "other_mean_iteration": _mean_iteration(other, replicates)}


def _mean_iteration(points: dict[int, Point], replicates: list[int]) -> float | None:
    iterations = [points[i].iteration for i in replicates]
    if not iterations or any(i is None for i in iterations):
        return None
    return sum(iterations) / len(iterations)


def tolerance_of(dense: dict[int, Point], unit: Metric = ACCURACY) -> float:
    """max(one sample std of the dense values across replicates, the floor): TOLERANCE_FLOOR for accuracy,
    RELATIVE_TOLERANCE_FLOOR × |dense mean| for a metric that is not a fraction."""
    stats = mean_interval(point.value for point in dense.values())
    floor = TOLERANCE_FLOOR if unit.percent else RELATIVE_TOLERANCE_FLOOR * abs(stats["mean"] or 0.0)
    return max(stats["std"] or 0.0, floor)


def _tolerance_rule(unit: Metric) -> str:
    if unit.percent:
        return f"max(one sample std of dense (round 0) across replicates, {TOLERANCE_FLOOR:g} = 0.5 points)"
    return (f"max(one sample std of dense (round 0) across replicates, {RELATIVE_TOLERANCE_FLOOR:g} × the dense "
            f"mean {unit.label})")


# ---- the verdict --------------------------------------------------------------------------

def verdicts(observations: Observations, *, higher_is_better: bool = True, confidence: float = CONFIDENCE,
             metric: str = "test_accuracy", point: str = "early stop",
             remaining_fractions: dict[int, float] | None = None, unit: Metric = ACCURACY) -> dict:
    """The verdict of every pruned round of the ticket (see the module docstring for the rules).

    `observations`: network -> round -> replicate -> Point (the ticket under trainer.events.TICKET,
    controls under their kinds). `higher_is_better=False` for a metric like loss: "better" and
    "within tolerance" then look the other way (differences are still reported as ticket − other).
    """
    ticket = observations.get(TICKET, {})
    dense = ticket.get(0, {})
    tolerance = tolerance_of(dense, unit)
    # a round whose every replicate diverged has no observation but still gets its row ("not shown")
    round_indices = sorted(set(ticket) | set(remaining_fractions or {}))
    rounds = [_round_verdict(round_index, observations, dense, tolerance, higher_is_better, confidence, unit)
              for round_index in round_indices if round_index > 0]
    for row in rounds:
        row["remaining_fraction"] = (remaining_fractions or {}).get(row["round"])
    result = {"metric": metric, "point": point, "higher_is_better": higher_is_better, "confidence": confidence,
              "test": TEST_NAME, "minimum_replicates": MINIMUM_REPLICATES,
              "tolerance": tolerance, "tolerance_rule": _tolerance_rule(unit),
              "dense": mean_interval((p.value for p in dense.values()), confidence),
              "rounds": rounds}
    if unit != ACCURACY:
        result["unit"] = unit.to_dict()  # accuracy's verdicts keep their old shape
    return result


def _round_verdict(round_index: int, observations: Observations, dense: dict[int, Point], tolerance: float,
                   higher_is_better: bool, confidence: float, unit: Metric = ACCURACY) -> dict:
    sign = 1.0 if higher_is_better else -1.0
    ticket = observations.get(TICKET, {}).get(round_index, {})
    vs_dense = paired_comparison(ticket, dense, confidence)
    control_kinds = sorted(kind for kind in observations if kind != TICKET)
    vs_controls = {kind: paired_comparison(ticket, observations[kind][round_index], confidence)
                   for kind in control_kinds if observations[kind].get(round_index)}
    notes = [f"not compared with {family} (not run)" for family, kinds in CONTROL_FAMILIES.items()
             if not any(kind in vs_controls for kind in kinds)]
    row = {"round": round_index, "ticket": mean_interval((p.value for p in ticket.values()), confidence),
           "vs_dense": vs_dense, "vs_controls": vs_controls, "notes": notes}

    def decide(verdict: str, reason: str) -> dict:
        return {**row, "verdict": verdict, "reason": reason}

    if vs_dense["n"] == 0:
        return decide(NOT_SHOWN, "no replicate has both this round and dense round 0 finished")
    if vs_dense["n"] < MINIMUM_REPLICATES:
        return decide(MORE_REPLICATES, f"{vs_dense['n']} paired replicate{'s' if vs_dense['n'] > 1 else ''}; "
                                       f"a verdict needs at least {MINIMUM_REPLICATES}")
    shortfall = sign * vs_dense["mean_difference"]
    if shortfall < -tolerance:
        return decide(NOT_SHOWN, f"{_points(abs(vs_dense['mean_difference']), unit)} "
                                 f"{'below' if higher_is_better else 'above'} dense on average, more than the "
                                 f"tolerance of {_points(tolerance, unit)}")
    ticket_iteration, dense_iteration = vs_dense["ticket_mean_iteration"], vs_dense["other_mean_iteration"]
    if ticket_iteration is not None and dense_iteration is not None and ticket_iteration > dense_iteration:
        return decide(NOT_SHOWN, f"within tolerance of dense but at more iterations "
                                 f"(mean {ticket_iteration:g} vs dense's {dense_iteration:g})")
    matching_reason = f"within {_points(tolerance, unit)} of dense at no more iterations"
    if notes:
        return decide(MATCHING, f"{matching_reason}; cannot be winning: " + ", ".join(notes))
    shortcomings = []
    for kind, comparison in vs_controls.items():
        if comparison["n"] < MINIMUM_REPLICATES:
            shortcomings.append(f"{kind}: {comparison['n']} paired replicates (needs {MINIMUM_REPLICATES})")
        elif comparison["ci"] is None or min(sign * bound for bound in comparison["ci"]) <= 0:
            # the whole interval of the improvement (sign · difference) must lie above 0
            shortcomings.append(f"not significantly better than {kind} ({round(100 * confidence)}% CI of the "
                                f"difference reaches {'0 or below' if higher_is_better else '0 or above'})")
    if shortcomings:
        return decide(MATCHING, f"{matching_reason}; not winning: " + "; ".join(shortcomings))
    return decide(WINNING, f"{matching_reason}, and significantly better than "
                           + " and ".join(vs_controls) + f" (paired t-test, {round(100 * confidence)}% CI above 0)")


def _points(value: float, unit: Metric = ACCURACY) -> str:
    return f"{100 * value:.2f} points" if unit.percent else f"{value:.2f} ({unit.label})"


def unit_of(result: dict) -> Metric:
    """The metric a verdicts dict speaks of (accuracy when it names none)."""
    stored = result.get("unit")
    return Metric(**stored) if stored else ACCURACY


# ---- inputs -------------------------------------------------------------------------------

def observations_from_results(results: dict, name: str = "test_accuracy") -> Observations:
    """Observations of a results.json dict (trainer.imp.Run.results): every finished training's
    reported metric (early stop, else end of training) and the iteration it was read at."""
    networks = [TICKET] + sorted(results.get("controls", {}))
    for entry in results.get("replicates", []):
        networks += [kind for kind in entry.get("controls", {}) if kind not in networks]
    observations: Observations = {}
    for network in networks:
        by_round = observations.setdefault(network, {})
        for replicate, records in enumerate(replicate_stats.records_by_replicate(results, network)):
            for record in records:
                value = replicate_stats.metric(record, "reported", name)
                if value is None or not math.isfinite(value):
                    continue
                iteration = replicate_stats.reported(record).get("iteration")
                by_round.setdefault(record["round"], {})[record.get("replicate", replicate)] = Point(value, iteration)
    return observations


def of_results(results: dict) -> dict:
    """The "verdicts" entry of results.json."""
    early_stopping = results.get("dataset", {}).get("validation_size", 1) > 0
    ticket_records = [record for records in replicate_stats.records_by_replicate(results) for record in records]
    unit = tasks.of_results(results).metric
    return verdicts(observations_from_results(results, f"test_{unit.key}"),
                    point="early stop" if early_stopping else "end of training",
                    remaining_fractions=_mean_remaining(ticket_records), higher_is_better=unit.higher_is_better,
                    metric=f"test_{unit.key}", unit=unit)


def observations_from_rows(rows: Iterable[dict], total_iterations: int | None) -> Observations:
    """Observations of the web app's round rows (frontend.queries.round_row): a row without an
    early stop was read at the end of training, `total_iterations`."""
    observations: Observations = {}
    for row in rows:
        value = row["reported_test_metric"]
        if row["status"] != "finished" or value is None or not math.isfinite(value):
            continue
        iteration = row["early_stop_iteration"] if row["early_stop_iteration"] is not None else total_iterations
        by_replicate = observations.setdefault(row["network"], {}).setdefault(row["round"], {})
        by_replicate[row["replicate"]] = Point(value, iteration)
    return observations


def of_rows(rows: list[dict], total_iterations: int | None, unit: Metric = ACCURACY) -> dict:
    """The verdicts of the web app's round rows (every network and replicate of one experiment), whose
    `reported_test_metric` is the task's metric `unit`."""
    ticket_rows = [row for row in rows if row["network"] == TICKET]
    finished = [row for row in ticket_rows if row["status"] == "finished"]
    early_stopping = not finished or all(row["early_stop_iteration"] is not None for row in finished)
    return verdicts(observations_from_rows(rows, total_iterations),
                    point="early stop" if early_stopping else "end of training",
                    remaining_fractions=_mean_remaining(ticket_rows), higher_is_better=unit.higher_is_better,
                    metric=f"test_{unit.key}", unit=unit)


def _mean_remaining(ticket_records: list[dict]) -> dict[int, float]:
    """round -> the mean remaining fraction of the ticket across replicates (records or rows)."""
    by_round: dict[int, list[float]] = {}
    for record in ticket_records:
        by_round.setdefault(record["round"], []).append(record["remaining_fraction"])
    return {round_index: sum(values) / len(values) for round_index, values in by_round.items()}


# ---- the best ticket: one run's simpler rule ---------------------------------------------

# "Within one point of dense": the ticket may lose at most this much test accuracy (a fraction).
BEST_TICKET_TOLERANCE = 0.01
# A metric that is not a fraction (perplexity, mean return) has no "points": the ticket may be at most 1% of
# the dense value worse (above dense for perplexity, below it for return).
BEST_TICKET_RELATIVE_TOLERANCE = 0.01


def best_ticket_tolerance(dense_value: float, metric: Metric = ACCURACY) -> float:
    return BEST_TICKET_TOLERANCE if metric.percent else BEST_TICKET_RELATIVE_TOLERANCE * abs(dense_value)


def mean_over_replicates(ticket_rows: list[dict], replicates: int) -> list[dict]:
    """The ticket's rounds as the mean over its replicates, for best_ticket: one row per round that every one of
    the `replicates` has finished (reported test metric and remaining fraction averaged; `replicates` set), so the
    best ticket is judged on the numbers the sparsity chart draws. One replicate: its rows as they are."""
    if replicates <= 1:
        return [row for row in ticket_rows if row.get("replicate", 0) == 0]
    by_round: dict[int, list[dict]] = {}
    for row in ticket_rows:
        by_round.setdefault(row["round"], []).append(row)
    means = []
    for round_index, rows in sorted(by_round.items()):
        finished = [row for row in rows if row["status"] == "finished" and row["reported_test_metric"] is not None]
        if len({row.get("replicate", 0) for row in finished}) < replicates:
            continue  # a replicate still training (or lost) this round: no mean yet
        means.append({"round": round_index, "status": "finished", "replicates": len(finished),
                      "reported_test_metric": sum(row["reported_test_metric"] for row in finished) / len(finished),
                      "remaining_fraction": sum(row["remaining_fraction"] for row in finished) / len(finished)})
    return means


def best_ticket(ticket_rounds: list[dict], metric: Metric = ACCURACY) -> dict | None:
    """The sparsest finished ticket round whose reported test metric is at most the tolerance worse than
    round 0's (one point of accuracy; 1% of the dense value for perplexity or return, in its direction).
    With replicates, pass mean_over_replicates' rows."""
    finished = [r for r in ticket_rounds if r["status"] == "finished" and r["reported_test_metric"] is not None]
    dense = next((r for r in finished if r["round"] == 0), None)
    if dense is None:
        return None
    dense_value = dense["reported_test_metric"]
    tolerance = best_ticket_tolerance(dense_value, metric)
    if metric.higher_is_better:
        good = [r for r in finished if r["reported_test_metric"] >= dense_value - tolerance]
    else:
        good = [r for r in finished if r["reported_test_metric"] <= dense_value + tolerance]
    return min(good, key=lambda r: r["remaining_fraction"])


# ---- text ---------------------------------------------------------------------------------

def summary_lines(result: dict) -> list[str]:
    """The CLI's lines: a blank line, a header that states the test and tolerance, one line per pruned round."""
    if not result["rounds"]:
        return []
    unit = unit_of(result)
    lines = ["", f"Winning-ticket verdict ({result['test']}; {round(100 * result['confidence'])}% CI; "
                 "matching = within "
             f"{_points(result['tolerance'], unit)} of dense [{result['tolerance_rule']}] at no more iterations; "
             f"n >= {result['minimum_replicates']}; {unit.label} at {result['point']}):"]
    for row in result["rounds"]:
        ticket, dense = row["ticket"], row["vs_dense"]
        parts = [f"  round {row['round']}"]
        if row.get("remaining_fraction") is not None:
            parts.append(f"{100 * row['remaining_fraction']:.1f}% remaining")
        parts.append(f"ticket {_percent_interval(ticket['mean'], ticket['ci'], unit)}")
        parts.append(f"vs dense {_signed_interval(dense['mean_difference'], dense['ci'], unit)}")
        parts += [f"vs {kind} {_signed_interval(c['mean_difference'], c['ci'], unit)}"
                  for kind, c in row["vs_controls"].items()]
        parts.append(f"n={dense['n']}")
        lines.append(": ".join(parts[:1]) + ": " + ", ".join(parts[1:]) + f" -> {row['verdict']} ({row['reason']})")
    return lines


def _percent_interval(mean: float | None, ci: list[float] | None, unit: Metric = ACCURACY) -> str:
    if mean is None:
        return "-"
    if not unit.percent:
        return f"{mean:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    return f"{100 * mean:.2f}%" + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")


def _signed_interval(mean: float | None, ci: list[float] | None, unit: Metric = ACCURACY) -> str:
    if mean is None:
        return "-"
    if not unit.percent:
        return f"{mean:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
    return f"{100 * mean:+.2f}" + (f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else "") + " points"
