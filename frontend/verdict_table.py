"""The result page's "Winning-ticket verdict" table: trainer.verdict on the experiment's stored
round rows (every network and replicate), in the task's metric (percent for accuracy, perplexity and mean
return as plain numbers; a lower perplexity is the better one).

It is computed from the database rows, not read from results.json, so an experiment whose
results.json predates the verdicts (or was imported) shows it too.
"""
from __future__ import annotations

from trainer import verdict
from trainer.tasks import ACCURACY, Metric

VERDICT_CLASSES = {verdict.WINNING: "winning", verdict.MATCHING: "matching", verdict.NOT_SHOWN: "not-shown",
                   verdict.MORE_REPLICATES: "more-replicates"}


def verdict_section(rows: list[dict], total_iterations: int | None, metric: Metric = ACCURACY) -> dict:
    """{"rows": [...], "controls": [...], the test and tolerance}; no rows when nothing was pruned."""
    result = verdict.of_rows(rows, total_iterations, unit=metric)
    controls = sorted({kind for row in result["rounds"] for kind in row["vs_controls"]})
    scale = 100 if metric.percent else 1
    return {
        "rows": [_table_row(row, controls, scale) for row in result["rounds"]], "controls": controls,
        "test": result["test"], "confidence_percent": round(100 * result["confidence"]),
        "tolerance_points": scale * result["tolerance"], "tolerance_rule": result["tolerance_rule"],
        "point": result["point"], "minimum_replicates": result["minimum_replicates"],
    }


def _table_row(row: dict, controls: list[str], scale: float) -> dict:
    ticket, dense = row["ticket"], row["vs_dense"]
    remaining = row.get("remaining_fraction")
    return {
        "round": row["round"], "remaining_percent": None if remaining is None else 100 * remaining,
        "ticket": _interval(ticket["mean"], ticket["ci"], signed=False, scale=scale),
        "vs_dense": _comparison(dense, dense["n"], scale),
        "vs_controls": [_comparison(row["vs_controls"][kind], dense["n"], scale) if kind in row["vs_controls"]
                        else "not run"
                        for kind in controls],
        "n": dense["n"], "test": f"paired t, df={dense['n'] - 1}" if dense["n"] >= 2 else "none (n < 2)",
        "verdict": row["verdict"], "verdict_class": VERDICT_CLASSES[row["verdict"]], "reason": row["reason"],
    }


def _comparison(comparison: dict, ticket_n: int, scale: float) -> str:
    text = _interval(comparison["mean_difference"], comparison["ci"], signed=True, scale=scale)
    if comparison["p_value"] is not None:
        text += f", p={comparison['p_value']:.3g}"
    if comparison["n"] != ticket_n:  # a replicate is missing on the other side: say how many pairs are left
        text += f" (n={comparison['n']})"
    return text


def _interval(mean: float | None, ci: list[float] | None, signed: bool, scale: float) -> str:
    """'91.20 [90.10, 92.30]' (values × scale: 100 for a fraction shown in points)."""
    if mean is None:
        return "–"
    number = "{:+.2f}" if signed else "{:.2f}"
    text = number.format(scale * mean)
    if ci:
        text += " [" + ", ".join(number.format(scale * bound) for bound in ci) + "]"
    return text
