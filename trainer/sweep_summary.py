"""A sweep's numbers per configuration, over its seeds: the dense metric, the best ticket (its sparsity
and metric: trainer.verdict.best_ticket), the winning-ticket verdict, and the ticket's curve (metric
against weights remaining, mean and std per round), each with the count it rests on.

It reads round rows (network, replicate, round, status, remaining_fraction, early_stop_iteration,
reported_test_metric), the web app's stored rows (frontend.queries.round_row) or a results.json's
(rows_of_results), so the CLI's table and the sweep page agree. The seeds of a configuration are
independent experiments, each with its own dense round 0: the verdict pairs every seed's (and every
replicate's) rounds with its own dense round, as it pairs replicates.
"""
from __future__ import annotations

from trainer import replicate_stats, tasks, verdict
from trainer.events import TICKET
from trainer.tasks import ACCURACY, Metric


def rows_of_results(results: dict) -> list[dict]:
    """The round rows of a results.json dict: every finished or diverged training of every replicate."""
    key = f"test_{tasks.of_results(results).metric.key}"
    rows = []
    for record in replicate_stats.all_records(results):
        early_stop = record.get("early_stop") or {}
        rows.append({"network": record.get("network", TICKET), "replicate": record["replicate"],
                     "round": record["round"], "status": record["status"],
                     "remaining_fraction": record["remaining_fraction"],
                     "early_stop_iteration": early_stop.get("iteration"),
                     "reported_test_metric": replicate_stats.metric(record, "reported", key)})
    return rows


def configuration_summary(experiments: list[dict], metric: Metric = ACCURACY) -> dict:
    """`experiments`: one per seed, {"seed_index", "rows": round rows, "total_iterations"}. Returns the
    configuration's bands (replicate_stats.band: mean, std, min, max, count, or None) of the dense metric,
    the best ticket's remaining fraction and metric (each seed's replicate 0), its verdict and its curve."""
    dense, best_remaining, best_metric = [], [], []
    combined = []
    for experiment in experiments:
        ticket = sorted((row for row in experiment["rows"] if row["network"] == TICKET and row["replicate"] == 0),
                        key=lambda row: row["round"])
        dense_row = next((row for row in ticket if row["round"] == 0 and row["status"] == "finished"), None)
        if dense_row is not None:
            dense.append(dense_row["reported_test_metric"])
        best = verdict.best_ticket(ticket, metric)
        if best is not None:
            best_remaining.append(best["remaining_fraction"])
            best_metric.append(best["reported_test_metric"])
        # each (seed, replicate) is one independent copy of the experiment, as replicates are
        combined += [{**row, "replicate": (experiment["seed_index"], row["replicate"])} for row in experiment["rows"]]
    total_iterations = next((e.get("total_iterations") for e in experiments if e.get("total_iterations")), None)
    return {"seeds": len(experiments), "dense": replicate_stats.band(dense),
            "best_remaining": replicate_stats.band(best_remaining), "best_metric": replicate_stats.band(best_metric),
            "verdict": strongest_verdict(verdict.of_rows(combined, total_iterations, unit=metric)),
            "curve": ticket_curve(combined)}


def ticket_curve(rows: list[dict]) -> list[dict]:
    """Per round: the band of the ticket's reported metric over every seed and replicate, and the mean
    remaining fraction."""
    by_round: dict[int, list[dict]] = {}
    for row in rows:
        if row["network"] == TICKET and row["status"] == "finished":
            by_round.setdefault(row["round"], []).append(row)
    curve = []
    for round_index, found in sorted(by_round.items()):
        stats = replicate_stats.band(row["reported_test_metric"] for row in found)
        if stats is not None:
            curve.append({"round": round_index, **stats,
                          "remaining_fraction": sum(row["remaining_fraction"] for row in found) / len(found)})
    return curve


def strongest_verdict(result: dict) -> dict:
    """The configuration's verdict in one line: the sparsest round that is winning (else matching), or why none is."""
    rounds = result["rounds"]
    for name in (verdict.WINNING, verdict.MATCHING):
        found = [row for row in rounds if row["verdict"] == name]
        if found:
            row = max(found, key=lambda row: row["round"])
            remaining = row.get("remaining_fraction")
            where = f"{100 * remaining:.3g}% of weights" if remaining is not None else f"round {row['round']}"
            return {"verdict": name, "round": row["round"], "remaining_fraction": remaining,
                    "n": row["vs_dense"]["n"], "text": f"{name} down to {where} (n={row['vs_dense']['n']})"}
    n = max((row["vs_dense"]["n"] for row in rounds), default=0)
    name = verdict.MORE_REPLICATES if any(row["verdict"] == verdict.MORE_REPLICATES for row in rounds) \
        else verdict.NOT_SHOWN
    if not rounds:
        return {"verdict": "", "round": None, "remaining_fraction": None, "n": 0, "text": "no pruned round yet"}
    return {"verdict": name, "round": None, "remaining_fraction": None, "n": n,
            "text": f"{name} (n={n}" + (f", needs {verdict.MINIMUM_REPLICATES})" if name == verdict.MORE_REPLICATES
                                        else ")")}


def band_text(band: dict | None, scale: float = 1.0, digits: int = 2) -> str:
    """'91.20 ± 0.35 (n=3)', or '–' without values."""
    if band is None:
        return "–"
    return f"{scale * band['mean']:.{digits}f} ± {scale * band['std']:.{digits}f} (n={band['count']})"
