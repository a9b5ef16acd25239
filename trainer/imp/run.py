"""One IMP experiment on one device (`Run`: its data, plan, models θ0/θk, run directory and
results.json) and the entry points that run it.

`run_experiment` trains the ticket chain of every replicate (trainer.imp.rounds: IMP with
rewinding, Frankle & Carbin 2019), then the controls of the finished rounds (trainer.imp.controls),
in pieces (trainer.imp.pieces) that the web app spreads over its workers (`start_run`, `open_run`,
`write_results` and `announce_finished` are the steps around them);
`run_controls_on` adds controls to an existing run directory; `train_ticket` trains a loaded
ticket again. Replicates (trainer.imp.replicates) are independent copies of all this with their
own seeds; replicate 0 is the run itself.
"""
from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from trainer import events, models, tasks, verdict
from trainer.imp import pieces
from trainer.imp.controls import run_controls
from trainer.imp.replicates import Replicate, finished_records, replicate_results, replicates_of
from trainer.imp.round_training import train_round
from trainer.pruning import masks, rules, structured
from trainer.rundir import RunDir, save_tensor_dict_atomically, write_json_atomically
from trainer.spec import ExperimentSpec
from trainer.steps import Step
from trainer.training.loop import PreparedData, prepare_data, resolve_device
from trainer.training.stack_size import stack_size_for

RESULTS_SCHEMA_VERSION = 1


class Run:
    """One experiment on one device: the data, the plan (iterations, rewind point, round fractions),
    the models θ0/θk of each replicate, the run directory and results.json."""

    def __init__(self, spec: ExperimentSpec, run_dir: RunDir, data_dir=None,
                 callback: events.Callback = events.ignore, stop_requested: Callable[[], bool] = lambda: False):
        self.spec = spec
        self.run_dir = run_dir
        self.callback = callback
        self.stop_requested = stop_requested
        self.device = resolve_device(spec.device)
        _make_deterministic(self.device)
        self.data: PreparedData = prepare_data(spec, self.device, data_dir)
        per_epoch = self.data.iterations_per_epoch
        self.total_iterations = Step.parse(spec.training.training_steps).to_iterations(per_epoch)
        self.rewind_iteration = Step.parse(spec.rewind_step).to_iterations(per_epoch)
        self.prunable = spec.pruning.prunable_layers or models.prunable_parameter_names(
            spec.model, self.data.info.input_shape, self.data.info.num_classes)
        self.replicates = replicates_of(spec, run_dir)

    def replicate_or_first(self, replicate: Replicate | None) -> Replicate:
        """Analyses branch off replicate 0: it is the default everywhere."""
        return replicate if replicate is not None else self.replicates[0]

    # ---- models -----------------------------------------------------------------------
    def fresh_model(self, init_seed: int) -> torch.nn.Module:
        info = self.data.info
        return models.build_model(self.spec.model, info.input_shape, info.num_classes, init_seed).to(self.device)

    def model_with(self, state: dict) -> torch.nn.Module:
        model = self.fresh_model(self.spec.init_seed)
        model.load_state_dict(state)
        return model

    def theta_init(self, replicate: Replicate | None = None) -> dict:
        replicate = self.replicate_or_first(replicate)
        path = replicate.run_dir.theta_init_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_tensor_dict_atomically(self.fresh_model(replicate.init_seed).state_dict(), path)
        return self.run_dir.load_state(path)

    def theta_rewind(self, replicate: Replicate | None = None) -> dict:
        replicate = self.replicate_or_first(replicate)
        return replicate.run_dir.load_state(replicate.run_dir.theta_rewind_path)

    # ---- the plan -------------------------------------------------------------------
    def round_fractions(self) -> tuple[float, dict[str, float]]:
        """The fraction of survivors one round prunes, overall and per overridden layer."""
        spec = self.spec.pruning
        if spec.schedule == "one_shot":
            return (rules.one_shot_fraction(spec.fraction, spec.rounds),
                    {n: rules.one_shot_fraction(f, spec.rounds) for n, f in spec.layer_fractions.items()})
        return spec.fraction, dict(spec.layer_fractions)

    def sparsity(self, mask: masks.Mask) -> dict:
        """The mask's effective remaining fraction (a weight survives only between two live units),
        unmasked fraction, effective parameters, per-layer counts and costs (structured.sparsity)."""
        info = self.data.info
        if not tasks.of_data(self.data).traces_units:
            return structured.counted_sparsity(mask, self.prunable)
        return structured.sparsity(self.spec.model, info.input_shape, info.num_classes, mask)

    def stack_size(self) -> int:
        """How many networks train together in one stack: the spec's, else the one recorded in the run
        directory, else chosen by measurement on this machine (trainer.training.stack_size) and recorded."""
        if not tasks.of_data(self.data).stackable:
            return 1
        if self.spec.stack_size:
            return self.spec.stack_size
        recorded = self.run_dir.recorded_stack_size()
        if recorded is None:
            recorded = stack_size_for(self.spec, self.data)
            self.run_dir.record_stack_size(recorded)
        return recorded

    # ---- results ----------------------------------------------------------------------
    def results(self, status: str) -> dict:
        results = {
            "schema": RESULTS_SCHEMA_VERSION,
            "run_name": self.run_dir.path.name,
            "status": status,
            "spec": self.spec.to_dict(),
            "device": str(self.device),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "dataset": {"name": self.data.info.name, "train_size": len(self.data.train_inputs),
                        "validation_size": tasks.of_data(self.data).validation_size(self.data),
                        "test_size": len(self.data.test_inputs),
                        "iterations_per_epoch": self.data.iterations_per_epoch},
            "total_iterations": self.total_iterations,
            "rewind_iteration": self.rewind_iteration,
            "stack_size": self.spec.stack_size or self.run_dir.recorded_stack_size(),  # None: never stacked
            **finished_records(self.run_dir),  # replicate 0's "rounds" and "controls"
            # the other replicates follow in the same shape
            "replicates": [replicate_results(replicate) for replicate in self.replicates[1:]],
        }
        task = tasks.of_data(self.data)
        if task is not tasks.CLASSIFICATION:  # a results.json without "task" is classification
            results["task"] = task.describe()
        results["verdicts"] = verdict.of_results(results)  # winning-ticket verdict per round (trainer.verdict)
        return results


def _make_deterministic(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def open_run(spec: ExperimentSpec, runs_root: Path, *, callback: events.Callback = events.ignore, data_dir=None,
             stop_requested: Callable[[], bool] = lambda: False) -> Run:
    """The Run of `spec` in its run directory under `runs_root` (created when new), announcing nothing:
    how a worker that trains one piece of a run opens it."""
    spec.validate()
    return Run(spec, RunDir.create(runs_root, spec), data_dir, callback, stop_requested)


def start_run(spec: ExperimentSpec, runs_root: Path, *, callback: events.Callback = events.ignore, data_dir=None,
              stop_requested: Callable[[], bool] = lambda: False) -> Run:
    """Open the run and announce it (run_started, with the rounds already on disk); errors in the spec or
    the data are raised after a run_failed event."""
    try:
        run = open_run(spec, runs_root, callback=callback, data_dir=data_dir, stop_requested=stop_requested)
    except Exception as error:
        callback(events.make_event(events.RUN_FAILED, message=str(error)))
        raise
    run_dir = run.run_dir
    callback(events.make_event(events.RUN_STARTED, run_name=run_dir.path.name, run_dir=str(run_dir.path),
                               spec=spec.to_dict(), rounds_total=spec.rounds_total(), replicates=spec.replicates,
                               iterations_per_round=run.total_iterations,
                               resumed_rounds=[r["round"] for r in run_dir.records()]))
    return run


def write_results(run: Run, status: str, wall_seconds: float | None = None) -> dict:
    """Write results.json from what is on disk; the results."""
    results = run.results(status)
    if wall_seconds is not None:
        results["wall_seconds"] = round(wall_seconds, 3)
    write_json_atomically(run.run_dir.results_path, results)
    return results


def announce_finished(run: Run, status: str) -> None:
    run.callback(events.make_event(events.RUN_FINISHED, status=status, results_path=str(run.run_dir.results_path)))


def train_in_order(run: Run, planned: list[pieces.Piece]) -> str:
    """Train a phase's pieces one after another: "cancelled" at the first that is, else "finished"."""
    for piece in planned:
        if pieces.run_piece(run, piece) == "cancelled":
            return "cancelled"
    return "finished"


def run_experiment(spec: ExperimentSpec, runs_root: Path, *, callback: events.Callback = events.ignore,
                   data_dir=None, stop_requested: Callable[[], bool] = lambda: False, max_pieces: int = 1,
                   train_phase: Callable[[Run, list[pieces.Piece]], str] = train_in_order) -> dict:
    """Run (or resume) the IMP experiment `spec` under `runs_root`, then its controls: each phase planned
    in pieces for `max_pieces` (trainer.imp.pieces) and trained by `train_phase` (by default here, in
    order; the web app spreads them over its workers).

    Returns the results dict that is also written to results.json. Errors in the spec or
    the data are raised after a run_failed event; a diverging or cancelled run is a status.
    """
    began = time.perf_counter()
    run = start_run(spec, runs_root, callback=callback, data_dir=data_dir, stop_requested=stop_requested)
    try:
        status = train_phase(run, pieces.plan_chain_pieces(run, max_pieces))
        if status == "finished":
            status = pieces.chains_status(run)
        if status == "finished" and spec.controls:
            status = train_phase(run, pieces.plan_control_pieces(run, max_pieces))
        results = write_results(run, status, time.perf_counter() - began)
    except Exception as error:
        callback(events.make_event(events.RUN_FAILED, message=f"{type(error).__name__}: {error}"))
        raise
    announce_finished(run, status)
    return results


def run_controls_on(run_path: Path, kinds: list[str], rounds: list[int], *, callback: events.Callback = events.ignore,
                    data_dir=None, stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """Add controls to a finished (or partly finished) run directory."""
    run_dir = RunDir.open(run_path)
    spec = run_dir.spec
    spec.controls = sorted(set(spec.controls) | set(kinds))
    run = Run(spec, run_dir, data_dir, callback, stop_requested)
    status = run_controls(run, kinds, rounds)
    results = write_results(run, status)
    announce_finished(run, status)
    return results


def train_ticket(payload: dict, *, data_dir=None, callback: events.Callback = events.ignore) -> dict:
    """Train a loaded ticket again: its mask on θk, iterations k..T of its spec; the round record."""
    spec = ExperimentSpec.from_dict(payload["spec"])
    with tempfile.TemporaryDirectory() as scratch:
        run = Run(spec, RunDir(Path(scratch), spec), data_dir, callback)  # no run directory of its own
        model = run.model_with(payload["theta_rewind"])
        mask = {name: tensor.to(run.device) for name, tensor in payload["mask"].items()}
        start = run.rewind_iteration if payload["round"] else 0
        _, record = train_round(run, payload["round"], events.TICKET, model, mask, start)
    return record
