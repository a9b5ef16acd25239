"""The read side of the reproduction checks (trainer.reproduce): one card per check for the
Reproductions page, the polled state of their runs, and the badges on an experiment whose spec
matches a check's protocol. Plain dicts out; the charts come from frontend.charts.

A card shows the verdict of the check's latest *finished* run (a cancelled or failed run has no
verdict worth showing: its INCONCLUSIVE only says that it stopped), and beside it the state of
the latest run when that is another one (queued, running, cancelled, failed).
"""
from __future__ import annotations

from frontend import access, charts
from frontend.models import ReproductionRun
from trainer import reproduce

VERDICT_CLASSES = {"PASS": "pass", "FAIL": "fail", "INCONCLUSIVE": "inconclusive"}
BUDGET_NOTES = {
    "tiny": "seconds; a smoke test on synthetic data, its verdict is not evidence",
    "small": "the default: CPU-sized protocols (minutes per check)",
    "large": "bigger budgets, closer to the papers (long)",
}
DEFAULT_BUDGET = "small"


def budget_choices() -> list[tuple[str, str]]:
    """(budget, "budget: what it means") in trainer.reproduce.BUDGETS order."""
    return [(budget, f"{budget}: {BUDGET_NOTES[budget]}" if budget in BUDGET_NOTES else budget)
            for budget in reproduce.BUDGETS]


def _latest_per_check(rows) -> dict[str, ReproductionRun]:
    latest: dict[str, ReproductionRun] = {}
    for run in rows.order_by("-created_at", "-id"):
        latest.setdefault(run.check_name, run)
    return latest


def latest_runs() -> dict[str, ReproductionRun]:
    """check name -> its most recent run, whatever its state (without the result, which is big)."""
    return _latest_per_check(ReproductionRun.objects.defer("result").select_related("requested_by"))


def latest_verdicts() -> dict[str, ReproductionRun]:
    """check name -> its most recent finished run with a result."""
    rows = ReproductionRun.objects.filter(status=ReproductionRun.Status.FINISHED, result__isnull=False)
    chosen = [run.pk for run in _latest_per_check(rows.only("pk", "check_name", "created_at")).values()]
    return {run.check_name: run for run in ReproductionRun.objects.filter(pk__in=chosen).select_related("requested_by")}


def verdict_class(verdict: str | None) -> str:
    return VERDICT_CLASSES.get(verdict or "", "inconclusive")


def _number(value) -> str:
    return "–" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def result_view(result: dict) -> dict:
    """What a card shows of a result: verdict, its CSS class, summary, reason, measured numbers, chart."""
    chart = result.get("chart")
    return {"verdict": result.get("verdict", "INCONCLUSIVE"), "verdict_class": verdict_class(result.get("verdict")),
            "summary": result.get("summary", ""), "reason": result.get("reason", ""),
            "measured": [(str(label).replace("_", " "), _number(value))
                         for label, value in (result.get("measured") or {}).items()],
            "wall_seconds": result.get("wall_seconds"),
            "figure_json": (charts.figure_json(charts.reproduction_chart(chart))
                            if chart and chart.get("series") else "")}


def cards(user) -> list[dict]:
    """One card per check, in trainer.reproduce.CHECKS order."""
    latest, verdicts = latest_runs(), latest_verdicts()
    found = []
    for name, check in reproduce.CHECKS.items():
        shown = verdicts.get(name)
        current = latest.get(name)
        if current is not None and shown is not None and current.pk == shown.pk:
            current = None  # the latest run is the one whose verdict is shown
        found.append({"check": check, "name": name, "shown": shown,
                      "result": result_view(shown.result) if shown else None, "current": current,
                      "can_cancel": bool(current and not current.is_done
                                         and access.can_cancel_reproduction(user, current)),
                      "run_id": (current or shown).pk if (current or shown) else None,
                      "status": (current or shown).status if (current or shown) else ""})
    return found


def run_row(run: ReproductionRun) -> dict:
    """What the polling endpoint sends of a run (no result: that comes with the page)."""
    return {"id": run.pk, "check": run.check_name, "budget": run.budget, "status": run.status, "message": run.message,
            "progress_text": run.progress_text, "progress_fraction": run.progress_fraction,
            "done": run.is_done}


def state() -> dict:
    """The latest run of each check (the ones the page shows) and whether any is still to finish."""
    runs = [run for name, run in latest_runs().items() if name in reproduce.CHECKS]
    return {"runs": [run_row(run) for run in runs], "active": any(not run.is_done for run in runs)}


def badges(spec: dict) -> list[dict]:
    """The checks whose protocol `spec` matches, each with its latest verdict (None if never finished).
    One query, whatever the number of runs: only the verdict is read of each result."""
    names = [name for name in reproduce.matching_checks(spec or {}) if name in reproduce.CHECKS]
    if not names:
        return []
    latest: dict[str, tuple[str, str]] = {}
    finished = ReproductionRun.objects.filter(check_name__in=names, result__isnull=False,
                                              status=ReproductionRun.Status.FINISHED)
    for name, budget, verdict in (finished.order_by("-created_at", "-id")
                                  .values_list("check_name", "budget", "result__verdict")):
        latest.setdefault(name, (budget, verdict))
    found = []
    for name in names:
        budget, verdict = latest.get(name, ("", None))
        found.append({"name": name, "title": reproduce.CHECKS[name].title, "verdict": verdict,
                      "verdict_class": verdict_class(verdict), "budget": budget})
    return found
