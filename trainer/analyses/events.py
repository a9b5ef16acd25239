"""Progress events of analyses (branches of a finished run), beside trainer.events.

Training inside an analysis reports through the ordinary events (round_started,
metrics, eval, round_finished) with the analysis's network label (e.g.
"lr_rewinding", "copy_a", "transfer") and an "analysis" key added; the types
below mark the analysis's own steps. All are JSON-serializable dicts with
"type", "network" (the analysis name) and "analysis".

  analysis_started    run_dir, result_dir, params
  unit_skipped        unit (a piece of work already finished on disk: resume)
  interpolation_point rewind_iteration, alpha, test_error, test_accuracy
  analysis_finished   status ("finished" | "cancelled"), result_path (null when cancelled)
  analysis_failed     message
"""
from __future__ import annotations

from typing import Any

from trainer.events import Callback

ANALYSIS_STARTED = "analysis_started"
UNIT_SKIPPED = "unit_skipped"
INTERPOLATION_POINT = "interpolation_point"
ANALYSIS_FINISHED = "analysis_finished"
ANALYSIS_FAILED = "analysis_failed"

EVENT_TYPES = (ANALYSIS_STARTED, UNIT_SKIPPED, INTERPOLATION_POINT, ANALYSIS_FINISHED, ANALYSIS_FAILED)


def make_event(event_type: str, analysis: str, **fields: Any) -> dict:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown analysis event type {event_type!r}")
    return {"type": event_type, "network": analysis, "analysis": analysis, **fields}


def tagged(callback: Callback, **fields: Any) -> Callback:
    """A callback that adds `fields` (e.g. analysis, rewind_iteration) to every event it passes on."""
    def forward(event: dict) -> None:
        callback({**event, **fields})
    return forward
