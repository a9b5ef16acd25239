"""Statistics across replicates: per round, the mean, standard deviation and range of a metric.

Reads results.json dicts (trainer.imp.Run.results): replicate 0's records are "rounds" and
"controls", the others are under "replicates". A diverged or missing round of one replicate
leaves that replicate out of the round's statistics (the count says how many are in).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from trainer.events import TICKET


def records_by_replicate(results: dict, network: str = TICKET) -> list[list[dict]]:
    """Each replicate's records of `network` (the ticket or a control kind), replicate 0 first."""
    def pick(entry: dict) -> list[dict]:
        return entry["rounds"] if network == TICKET else entry.get("controls", {}).get(network, [])
    return [pick(results)] + [pick(entry) for entry in results.get("replicates", [])]


def band(values: Iterable[float]) -> dict | None:
    """mean, sample std (0 for one value), min, max and count of the finite values; None if none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(finite), "max": max(finite), "count": len(finite)}


def reported(record: dict) -> dict:
    """The point of a record whose numbers are reported: its early stop (minimum validation loss),
    or the end of training when the run has no validation split (never a point picked on test data)."""
    return record.get("early_stop") or record.get("final") or {}


def metric(record: dict, point: str = "reported", name: str = "test_accuracy") -> float | None:
    """A record's metric at 'reported' (early stop, else end of training), 'early_stop' or 'final'
    (None for a diverged round)."""
    if record.get("status") != "finished":
        return None
    values = reported(record) if point == "reported" else (record.get(point) or {})
    return values.get(name)


def round_bands(results: dict, network: str = TICKET, point: str = "reported",
                name: str = "test_accuracy") -> dict[int, dict]:
    """{round: band of the metric across replicates, plus the mean remaining fraction}."""
    by_round: dict[int, list[dict]] = {}
    for records in records_by_replicate(results, network):
        for record in records:
            by_round.setdefault(record["round"], []).append(record)
    bands = {}
    for round_index, records in sorted(by_round.items()):
        stats = band(metric(record, point, name) for record in records)
        if stats is not None:
            stats["remaining_fraction"] = sum(r["remaining_fraction"] for r in records) / len(records)
            bands[round_index] = stats
    return bands


def all_records(results: dict) -> list[dict]:
    """Every round record of every replicate, ticket and controls, each with its "replicate"."""
    entries = [{"replicate": 0, "rounds": results["rounds"], "controls": results.get("controls", {})}]
    entries += results.get("replicates", [])
    found = []
    for entry in entries:
        for record in entry["rounds"] + [r for records in entry.get("controls", {}).values() for r in records]:
            found.append({**record, "replicate": record.get("replicate", entry["replicate"])})
    return found
