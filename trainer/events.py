"""Progress events: the one stream the CLI and the web app both consume.

Every event is a plain JSON-serializable dict with a "type" key. The trainer
calls `callback(event)` synchronously; a slow consumer should throttle on its
side (the web app does, the CLI only redraws a bar).

Every event carries "network": which network produced it: "ticket" (the IMP
run itself), "random_reinit" or "random_prune" (controls, which may train stacked
in one step: each still reports under its own network and round). The IMP run's
events also carry "replicate" (0 = the run's own seeds; spec.replicates > 1 adds
1, 2, ...), so (network, replicate, round) names one training. Analyses
(trainer/analyses/) add their own labels, e.g. "lr_rewinding", "fine_tuning",
"copy_a"/"copy_b", "transfer", "variant_<criterion>…", "pruning_at_init_<method>",
"early_bird_search", plus an "analysis" key; their own event types are in
trainer/analyses/events.py.

Types and their keys (besides "type", "network", "round" where it applies):
  run_started     run_name, run_dir, spec, rounds_total, replicates, iterations_per_round, resumed_rounds
  round_started   round, remaining_fraction, start_iteration, end_iteration
  metrics         round, iteration, train_loss, lr
  eval            round, iteration, val_loss, val_accuracy, test_loss, test_accuracy
  round_finished  round, summary (the round's record from results.json)
  round_skipped   round (already finished on disk: resume)
  run_finished    status ("finished" | "diverged" | "cancelled"), results_path
  run_failed      message
  piece_started   phase ("chains" | "controls"), index, networks, run_dir: one piece of the run (trainer.imp.pieces)
                  starts; a run spread over several workers sends one run_started, each piece its own of these
  piece_finished  phase, index, status
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

RUN_STARTED = "run_started"
ROUND_STARTED = "round_started"
METRICS = "metrics"
EVAL = "eval"
ROUND_FINISHED = "round_finished"
ROUND_SKIPPED = "round_skipped"
RUN_FINISHED = "run_finished"
RUN_FAILED = "run_failed"
PIECE_STARTED = "piece_started"
PIECE_FINISHED = "piece_finished"

EVENT_TYPES = (RUN_STARTED, ROUND_STARTED, METRICS, EVAL, ROUND_FINISHED, ROUND_SKIPPED, RUN_FINISHED, RUN_FAILED,
               PIECE_STARTED, PIECE_FINISHED)

TICKET = "ticket"

Callback = Callable[[dict], None]


def make_event(event_type: str, network: str = TICKET, **fields: Any) -> dict:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    return {"type": event_type, "network": network, **fields}


def ignore(event: dict) -> None:
    """The default callback."""
