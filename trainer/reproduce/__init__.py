"""Reproduction checks: each claim of SCIENCE.md as a runnable check with a verdict.

A check (one module per claim, registered in CHECKS) states the claim, its source, a tolerance
and a protocol per budget; `run_check` runs the protocol with the real engine (trainer.imp and
trainer.analyses; finished runs under <runs_root>/reproduce/runs/ are reused) and returns

    {"name", "title", "claim", "source", "tolerance", "budget", "status", "verdict", "reason",
     "measured", "summary", "chart", "protocol", "run_paths", "wall_seconds", "details"}

also written to <runs_root>/reproduce/<name>/<budget>/result.json. Verdicts: PASS (the claim holds
within tolerance), FAIL (it clearly does not), INCONCLUSIVE (the measurement cannot decide; always
for the "tiny" smoke-test budget, and for a cancelled or failed check).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from trainer import events
from trainer.reproduce import (
    agent_tickets,
    early_bird_convergence,
    early_phase_signs,
    edge_popup_subnetworks,
    iterative_vs_one_shot,
    language_model_tickets,
    learned_supermask_accuracy,
    lenet_stability,
    malach_width,
    optimizer_transfer,
    pretraining_random_labels,
    retraining_modes,
    shared_weight_tickets,
    supermask,
    synflow_collapse,
    tickets_vs_dense,
)
from trainer.reproduce.base import (
    BUDGETS,
    CHECK_PROGRESS,
    FAIL,
    INCONCLUSIVE,
    PASS,
    Check,
    CheckCancelled,
    Session,
    check_budget,
)
from trainer.rundir import json_safe, write_json_atomically
from trainer.spec import SpecError

# Display order; the LeNet IMP run of tickets_vs_dense is shared by the next three checks and the dense run of
# edge_popup_subnetworks by the next two, so running them in this order trains each once.
CHECKS: dict[str, Check] = {check.name: check for check in (
    tickets_vs_dense.CHECK, iterative_vs_one_shot.CHECK, supermask.CHECK, shared_weight_tickets.CHECK,
    lenet_stability.CHECK, retraining_modes.CHECK, synflow_collapse.CHECK, early_bird_convergence.CHECK,
    edge_popup_subnetworks.CHECK,
    learned_supermask_accuracy.CHECK, early_phase_signs.CHECK, malach_width.CHECK, optimizer_transfer.CHECK,
    pretraining_random_labels.CHECK, language_model_tickets.CHECK, agent_tickets.CHECK)}
EMPTY_CHART = {"title": "", "x_label": "", "y_label": "", "log_x": False, "series": []}


def get_check(name: str) -> Check:
    if name not in CHECKS:
        raise SpecError("check", f"unknown check {name!r}; choose one of {', '.join(CHECKS)} (or 'all')")
    return CHECKS[name]


def result_path(runs_root: Path, name: str, budget: str) -> Path:
    return Path(runs_root) / "reproduce" / name / budget / "result.json"


def run_check(name: str, runs_root: Path, *, budget: str = "small", data_dir=None,
              callback: events.Callback = events.ignore, stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """Run (or resume) check `name` at `budget`; its result dict (see the module docstring).
    Unknown name or budget: SpecError. Errors while running are a "failed" status, not an exception."""
    check = get_check(name)
    check_budget(budget)
    began = time.perf_counter()
    protocol_steps = check.steps(budget, data_dir)
    session = Session(name, runs_root, protocol_steps, data_dir=data_dir, callback=callback,
                      stop_requested=stop_requested)
    result = {"name": check.name, "title": check.title, "claim": check.claim, "source": check.source,
              "tolerance": check.tolerance, "budget": budget, "protocol": check.protocol(budget, data_dir)}
    try:
        measurement = check.measure(session, protocol_steps)
    except CheckCancelled:
        result.update(status="cancelled", verdict=INCONCLUSIVE, reason="cancelled before the measurement finished.",
                      measured={}, summary="cancelled", chart=EMPTY_CHART, details={})
    except Exception as error:  # a failed check is a result the table shows, like a diverged run
        message = str(error) if isinstance(error, (SpecError, ValueError)) else f"{type(error).__name__}: {error}"
        result.update(status="failed", verdict=INCONCLUSIVE, reason=f"the check failed: {message}", measured={},
                      summary="failed", chart=EMPTY_CHART, details={})
    else:
        decision = check.judge(measurement["measured"])
        verdict, reason = decision.verdict, decision.reason
        if budget == "tiny":
            verdict = INCONCLUSIVE
            reason = f"tiny is a smoke-test budget (the rule would say {decision.verdict}: {reason})"
        measured = {key: value for key, value in measurement["measured"].items() if not isinstance(value, (dict, list))}
        details = {key: value for key, value in measurement["measured"].items() if isinstance(value, (dict, list))}
        result.update(status="finished", verdict=verdict, reason=reason, measured=measured,
                      summary=check.summary(measurement["measured"]), chart=measurement["chart"], details=details)
    result.update(run_paths=[str(Path(path).resolve()) for path in session.run_paths],
                  wall_seconds=round(time.perf_counter() - began, 3))
    result = json_safe(result)
    path = result_path(runs_root, name, budget)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, result)
    return result


def matching_checks(spec: dict) -> list[str]:
    """Names of the checks whose protocol the experiment spec matches (model, dataset, pruning style and
    the settings the claim depends on; budgets may differ)."""
    return [name for name, check in CHECKS.items() if check.matches(spec)]


__all__ = ["BUDGETS", "CHECKS", "CHECK_PROGRESS", "Check", "FAIL", "INCONCLUSIVE", "PASS", "get_check",
           "matching_checks", "result_path", "run_check"]
