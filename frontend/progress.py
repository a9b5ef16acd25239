"""Trainer events -> database rows + throttled channel-group messages, for one experiment.

The trainer calls `handle(event)` from its training loop; that only queues the event. `flush()`
writes everything queued to the database, in one transaction that also advances the experiment's
`last_seq`, and only then sends one channel message with the same events and that sequence number.
Because the database is written before the message is sent, a browser that subscribes and then
reads a snapshot misses nothing: every event is either in the snapshot (seq <= snapshot's seq) or
arrives afterwards as a live message. A background thread flushes at most `messages_per_second`
times a second, which is the throttle.

An experiment spread over several workers (frontend.distributed) has one recorder per piece in training,
each on its own worker; the row lock of `flush` orders their writes. Only the owner's run_started resets the
progress; trainings done are counted from the stored rounds, so a piece resumed elsewhere counts nothing twice.
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from frontend.models import AnalysisRun, Curve, Experiment, ExperimentPiece, ReproductionRun
from frontend.records import empty_evals, empty_train_loss, eval_keys, store_record
from trainer import events as trainer_events, tasks
from trainer.analyses import events as analysis_events
from trainer.imp.pieces import CHAINS
from trainer.reproduce import CHECK_PROGRESS
from trainer.rundir import RunDir, json_safe

log = logging.getLogger(__name__)

MESSAGE_TYPE = "experiment.events"  # handled by ExperimentConsumer.experiment_events

# Held while this process writes an experiment's progress or claims its pieces (frontend.distributed). The
# database orders these writes anyway (both lock the experiment row); between the threads of one process,
# waiting here beats a database that refuses at once (SQLite's shared cache answers "table is locked").
experiment_writes = threading.Lock()


def group_name(experiment_id: int) -> str:
    return f"experiment-{experiment_id}"


def send_to_group(experiment_id: int, message: dict) -> None:
    async_to_sync(get_channel_layer().group_send)(group_name(experiment_id), message)


def trainings_total(run_started: dict) -> int:
    """Per replicate: ticket rounds 0..n plus one training per control and controlled round."""
    spec = run_started.get("spec") or {}
    rounds_total = int(run_started.get("rounds_total", 0))
    controlled_rounds = len(spec.get("control_rounds") or []) or rounds_total
    replicates = int(spec.get("replicates") or 1)
    return replicates * (rounds_total + 1 + len(spec.get("controls") or []) * controlled_rounds)


def slim_event(event: dict) -> dict:
    """What the browser needs of an event (run_started's spec is already on the page)."""
    return json_safe({key: value for key, value in event.items() if key not in ("spec", "run_dir", "results_path")})


class ProgressRecorder:
    def __init__(self, experiment_id: int, *, send: Callable[[int, dict], None] | None = None,
                 messages_per_second: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.experiment_id = experiment_id
        self.send = send or send_to_group
        rate = messages_per_second or settings.LOTTERYWEB_PROGRESS_MESSAGES_PER_SECOND
        self.min_interval = 1.0 / rate
        self.clock = clock
        self.last_flush = -math.inf
        self._pending: list[dict] = []
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # live curves of trainings in flight, by (network, replicate, round)
        self._curves: dict[tuple[str, int, int], dict] = {}
        self._dirty: set[tuple[str, int, int]] = set()
        self._run_dir: RunDir | None = None
        self.messages_sent = 0
        self.failed_sends = 0  # in a row: the channel layer (Redis) is away

    # ---- called by the trainer ----------------------------------------------------------
    def handle(self, event: dict) -> None:
        with self._pending_lock:
            self._pending.append(event)

    # ---- called by the flusher thread and at the end --------------------------------------
    def flush_if_due(self) -> bool:
        if self.clock() - self.last_flush < self.min_interval:
            return False
        return self.flush()

    def flush(self) -> bool:
        """Write queued events to the database, then send them as one message. False if none were queued."""
        with self._flush_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if not batch:
                return False
            self.last_flush = self.clock()
            with experiment_writes, transaction.atomic():
                experiment = Experiment.objects.select_for_update().get(pk=self.experiment_id)
                for event in batch:
                    self._apply(experiment, event)
                self._write_dirty_curves()
                experiment.last_seq += 1
                experiment.save()
                pieces = piece_rows(self.experiment_id)
            message = {"type": MESSAGE_TYPE, "seq": experiment.last_seq,
                       "events": [slim_event(event) for event in batch], "progress": progress_of(experiment),
                       "pieces": pieces}
            try:
                self.send(self.experiment_id, message)
            except Exception:  # a live view is a convenience; the run and its database rows go on without it
                self.failed_sends += 1
                if self.failed_sends == 1:  # once, not ten times a second for as long as Redis is away
                    log.exception("could not send progress of experiment %s to its channel group; the run goes on, "
                                  "and its live view catches up from the database", self.experiment_id)
            else:
                self.messages_sent += 1
                if self.failed_sends:
                    log.warning("progress of experiment %s reaches its channel group again, after %d messages that "
                                "could not be sent", self.experiment_id, self.failed_sends)
                    self.failed_sends = 0
            return True

    # ---- event -> rows ----------------------------------------------------------------------
    def _apply(self, experiment: Experiment, event: dict) -> None:
        kind = event.get("type")
        network = event.get("network", trainer_events.TICKET)
        replicate = event.get("replicate", 0)
        if kind == trainer_events.RUN_STARTED:
            self._run_dir = RunDir.open(Path(event["run_dir"]))
            experiment.status = Experiment.Status.RUNNING
            experiment.run_name = event.get("run_name", "")
            experiment.run_dir = event["run_dir"]
            experiment.rounds_total = event.get("rounds_total", 0)
            experiment.iterations_per_round = event.get("iterations_per_round", 0)
            experiment.trainings_total = trainings_total(event)
            experiment.trainings_done = experiment.round_results.count()
        elif kind == trainer_events.PIECE_STARTED:
            if self._run_dir is None:
                self._run_dir = RunDir.open(Path(event["run_dir"]))
        elif kind == trainer_events.ROUND_STARTED:
            key = (network, replicate, event["round"])
            self._curves[key] = {"evals": empty_evals(), "train_loss": empty_train_loss()}
            self._dirty.add(key)
            experiment.current_network = network
            experiment.current_replicate = replicate
            experiment.current_round = event["round"]
            experiment.current_start_iteration = event.get("start_iteration", 0)
            experiment.current_iteration = event.get("start_iteration", 0)
            experiment.current_remaining_fraction = event.get("remaining_fraction")
        elif kind == trainer_events.METRICS:
            curve = self._curve((network, replicate, event["round"]))
            curve["train_loss"]["iteration"].append(event["iteration"])
            curve["train_loss"]["loss"].append(json_safe(event.get("train_loss")))
            self._advance(experiment, event)
        elif kind == trainer_events.EVAL:
            curve = self._curve((network, replicate, event["round"]))
            keys = eval_keys(tasks.metric_of(event))
            if not curve["evals"]["iteration"] and list(curve["evals"]) != keys:
                curve["evals"] = empty_evals(tasks.metric_of(event))  # the first point names the task's metric
            for key in keys:
                curve["evals"].setdefault(key, []).append(json_safe(event.get(key)))
            self._advance(experiment, event)
        elif kind in (trainer_events.ROUND_FINISHED, trainer_events.ROUND_SKIPPED):
            record = self._run_dir.replicate(replicate).record(event["round"], network) if self._run_dir else None
            if record is not None:
                # authoritative: replaces the live curve
                store_record(self.experiment_id, {**record, "replicate": replicate})
            self._curves.pop((network, replicate, event["round"]), None)
            self._dirty.discard((network, replicate, event["round"]))
            experiment.trainings_done = experiment.round_results.count()
        elif kind == trainer_events.RUN_FINISHED:
            experiment.status = event.get("status", Experiment.Status.FINISHED)
            experiment.results_path = event.get("results_path", "")
            experiment.finished_at = timezone.now()
            if experiment.status == Experiment.Status.DIVERGED:
                diverged = experiment.round_results.filter(status="diverged").first()
                experiment.message = diverged.message if diverged and diverged.message else "a round diverged"
        elif kind == trainer_events.RUN_FAILED:
            experiment.status = Experiment.Status.FAILED
            experiment.message = event.get("message", "")
            experiment.finished_at = timezone.now()

    @staticmethod
    def _advance(experiment: Experiment, event: dict) -> None:
        """The iteration of the training the progress bar shows (the one started last): other pieces'
        trainings in flight have their curves, but do not move it."""
        shown = (experiment.current_network, experiment.current_replicate, experiment.current_round)
        if experiment.current_round is None or shown == (event.get("network", trainer_events.TICKET),
                                                         event.get("replicate", 0), event["round"]):
            experiment.current_iteration = max(experiment.current_iteration, event["iteration"])

    def _curve(self, key: tuple[str, int, int]) -> dict:
        self._dirty.add(key)
        return self._curves.setdefault(key, {"evals": empty_evals(), "train_loss": empty_train_loss()})

    def _write_dirty_curves(self) -> None:
        for network, replicate, round_index in self._dirty:
            curve = self._curves[(network, replicate, round_index)]
            Curve.objects.update_or_create(experiment_id=self.experiment_id, network=network, replicate=replicate,
                                           round_index=round_index,
                                           defaults={"evals": curve["evals"], "train_loss": curve["train_loss"]})
        self._dirty.clear()


def progress_of(experiment: Experiment) -> dict:
    """The progress bar's numbers: which training, which iteration, and the overall fraction done."""
    span = max(1, experiment.iterations_per_round - experiment.current_start_iteration)
    within = min(1.0, max(0.0, (experiment.current_iteration - experiment.current_start_iteration) / span))
    if experiment.is_done:
        overall = 1.0 if experiment.status == Experiment.Status.FINISHED else None
    elif experiment.trainings_total:
        overall = min(1.0, (experiment.trainings_done + within) / experiment.trainings_total)
    else:
        overall = 0.0
    return {
        "status": experiment.status, "message": experiment.message,
        "rounds_total": experiment.rounds_total, "iterations_per_round": experiment.iterations_per_round,
        "network": experiment.current_network, "replicate": experiment.current_replicate,
        "round": experiment.current_round,
        "iteration": experiment.current_iteration, "remaining_fraction": experiment.current_remaining_fraction,
        "trainings_done": experiment.trainings_done, "trainings_total": experiment.trainings_total,
        "overall_fraction": overall,
    }


def piece_rows(experiment_id: int) -> list[dict]:
    """The pieces of an experiment spread over workers (frontend.distributed): what each trains, where and when."""
    rows = ExperimentPiece.objects.filter(experiment_id=experiment_id).order_by("phase", "index")
    return [{"phase": row.phase, "index": row.index, "trains": piece_text(row.phase, row.networks),
             "status": row.status, "worker": row.worker, "message": row.message,
             "started_at": row.started_at.isoformat() if row.started_at else None,
             "finished_at": row.finished_at.isoformat() if row.finished_at else None} for row in rows]


def piece_text(phase: str, networks: list) -> str:
    """What a piece trains, in words: "replicates 0, 1", or "random prune round 1 (replicate 0), ..."."""
    if phase == CHAINS:
        return ("replicate " if len(networks) == 1 else "replicates ") + ", ".join(str(r) for r in networks)
    return ", ".join(f"{kind.replace('_', ' ')} round {round_index} (replicate {replicate})"
                     for kind, round_index, replicate in networks)


class PeriodicFlusher:
    """A daemon thread that flushes a recorder every `min_interval` seconds until stopped."""

    def __init__(self, recorder: ProgressRecorder):
        self.recorder = recorder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{recorder.experiment_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.recorder.min_interval):
                try:
                    self.recorder.flush_if_due()
                except Exception:  # keep flushing later events; the end of the run reconciles from disk
                    log.exception("progress flush of experiment %s failed", self.recorder.experiment_id)
        finally:
            connection.close()  # this thread's own database connection

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def recording(experiment_id: int, **recorder_options):
    """A recorder whose events are flushed in the background while the block runs, and once more at its end."""
    recorder = ProgressRecorder(experiment_id, **recorder_options)
    flusher = PeriodicFlusher(recorder)
    flusher.start()
    try:
        yield recorder
    finally:
        flusher.stop()
        close_old_connections()
        try:
            recorder.flush()
        except Exception:  # never hide the run's own outcome; the task reconciles from results.json
            log.exception("final progress flush of experiment %s failed", experiment_id)


def cancel_checker(experiment_id: int, every_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic):
    """A stop_requested() for the trainer that asks the database at most once per `every_seconds`."""
    return _throttled_cancel_flag(Experiment.objects.filter(pk=experiment_id, cancel_requested=True),
                                  every_seconds, clock)


def experiment_stop_checker(experiment_id: int, every_seconds: float = 1.0,
                            clock: Callable[[], float] = time.monotonic):
    """stop_requested() of a piece trained on another worker than its experiment's owner: cancelled, or the
    experiment ended meanwhile (another piece failed). Asks the database at most once per `every_seconds`."""
    ended = Q(cancel_requested=True) | Q(status__in=Experiment.DONE_STATUSES)
    return _throttled_cancel_flag(Experiment.objects.filter(ended, pk=experiment_id), every_seconds, clock)


def _throttled_cancel_flag(cancelled_rows, every_seconds: float, clock: Callable[[], float]) -> Callable[[], bool]:
    """True once `cancelled_rows` exists; the database is asked at most once per `every_seconds`."""
    state = {"checked_at": -math.inf, "cancel": False}

    def stop_requested() -> bool:
        if not state["cancel"] and clock() - state["checked_at"] >= every_seconds:
            state["checked_at"] = clock()
            state["cancel"] = cancelled_rows.exists()
        return state["cancel"]

    return stop_requested


# ---- analyses ---------------------------------------------------------------------------------

class AnalysisProgressRecorder:
    """Analysis events -> one short progress text (and the fraction of the training in flight) on the
    AnalysisRun row, written at most `messages_per_second` times a second; the result page polls it.

    The events arrive on the training thread; the write is a single-row UPDATE, so it happens inline.
    """

    def __init__(self, analysis_run_id: int, *, messages_per_second: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.analysis_run_id = analysis_run_id
        self.min_interval = 1.0 / (messages_per_second or settings.LOTTERYWEB_PROGRESS_MESSAGES_PER_SECOND)
        self.clock = clock
        self.last_write = -math.inf
        self.text = ""
        self.fraction: float | None = None
        self.trainings_done = 0
        self.reused = 0
        self._training: dict | None = None
        self.writes = 0

    def handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == trainer_events.ROUND_STARTED:
            self._training = {"network": event.get("network", ""), "round": event.get("round"),
                              "remaining": event.get("remaining_fraction"),
                              "start": event.get("start_iteration", 0), "end": event.get("end_iteration")}
            self._describe(event.get("start_iteration", 0))
        elif kind in (trainer_events.METRICS, trainer_events.EVAL) and self._training is not None:
            self._describe(event.get("iteration", 0))
        elif kind in (trainer_events.ROUND_FINISHED, trainer_events.ROUND_SKIPPED):
            self.trainings_done += 1
            self._training = None
            self.fraction = None
            self.text = f"{self.trainings_done} trainings done"
        elif kind == analysis_events.UNIT_SKIPPED:
            self.reused += 1
            self.text = f"reused finished work: {event.get('unit', '')}"
        elif kind == analysis_events.INTERPOLATION_POINT:
            self.text = (f"interpolating from k={event.get('rewind_iteration')}: α={event.get('alpha', 0):.2f}, "
                         f"test error {100 * (event.get('test_error') or 0):.1f}%")
            self.fraction = event.get("alpha")
        elif kind == analysis_events.ANALYSIS_STARTED:
            self.text = "started"
        else:
            return
        self.write_if_due()

    def _describe(self, iteration: int) -> None:
        training = self._training
        end, start = training["end"], training["start"]
        where = f"{training['network'].replace('_', ' ')}, round {training['round']}"
        if training["remaining"] is not None:
            where += f" ({100 * training['remaining']:.3g}% of weights)"
        self.text = f"{where}: iteration {iteration}" + (f" of {end}" if end else "")
        if self.trainings_done:
            self.text += f" · {self.trainings_done} trainings done"
        self.fraction = min(1.0, max(0.0, (iteration - start) / (end - start))) if end and end > start else None

    def write_if_due(self) -> bool:
        if self.clock() - self.last_write < self.min_interval:
            return False
        self.write()
        return True

    def write(self) -> None:
        self.last_write = self.clock()
        try:
            AnalysisRun.objects.filter(pk=self.analysis_run_id).update(progress_text=self.text[:300],
                                                                        progress_fraction=self.fraction)
            self.writes += 1
        except Exception:  # progress is a convenience; the analysis goes on without it
            log.exception("could not write the progress of analysis run %s", self.analysis_run_id)


def analysis_cancel_checker(analysis_run_id: int, every_seconds: float = 1.0,
                            clock: Callable[[], float] = time.monotonic):
    """stop_requested() for an analysis: asks the database at most once per `every_seconds`."""
    return _throttled_cancel_flag(AnalysisRun.objects.filter(pk=analysis_run_id, cancel_requested=True),
                                  every_seconds, clock)


# ---- reproduction checks ----------------------------------------------------------------------

class ReproductionProgressRecorder:
    """A check's events -> steps done / total and a short text on its ReproductionRun row, written at
    most `messages_per_second` times a second (always when a step ends); the Reproductions page polls it."""

    def __init__(self, reproduction_run_id: int, *, messages_per_second: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.reproduction_run_id = reproduction_run_id
        self.min_interval = 1.0 / (messages_per_second or settings.LOTTERYWEB_PROGRESS_MESSAGES_PER_SECOND)
        self.clock = clock
        self.last_write = -math.inf
        self.done = 0
        self.total = 0
        self.step_text = ""
        self.training = ""
        self.text = ""

    def handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == CHECK_PROGRESS:  # {"done", "total", "message"} as a step of the check starts or ends
            self.done, self.total = int(event.get("done") or 0), int(event.get("total") or 0)
            self.step_text = str(event.get("message") or "")
            self.training = ""
            self.text = self._steps()
            self.write()
            return
        if kind == trainer_events.ROUND_STARTED:
            self.training = f"{str(event.get('network', '')).replace('_', ' ')} round {event.get('round')}"
            self.text = f"{self._steps()} · {self.training}"
        elif kind in (trainer_events.METRICS, trainer_events.EVAL) and "iteration" in event:
            where = f"{self.training}, iteration" if self.training else "iteration"
            self.text = f"{self._steps()} · {where} {event['iteration']}"
        else:
            return
        if self.clock() - self.last_write >= self.min_interval:
            self.write()

    def _steps(self) -> str:
        return f"{self.done} of {self.total or '?'} steps done" + (f": {self.step_text}" if self.step_text else "")

    def write(self) -> None:
        self.last_write = self.clock()
        try:
            ReproductionRun.objects.filter(pk=self.reproduction_run_id).update(
                progress_done=self.done, progress_total=self.total, progress_text=self.text[:300])
        except Exception:  # progress is a convenience; the check goes on without it
            log.exception("could not write the progress of reproduction run %s", self.reproduction_run_id)


def reproduction_cancel_checker(reproduction_run_id: int, every_seconds: float = 1.0,
                                clock: Callable[[], float] = time.monotonic):
    """stop_requested() for a reproduction check: asks the database at most once per `every_seconds`."""
    return _throttled_cancel_flag(ReproductionRun.objects.filter(pk=reproduction_run_id, cancel_requested=True),
                                  every_seconds, clock)
