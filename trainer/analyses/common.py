"""What every analysis shares: where it stores its work, how it trains, what a record holds.

    <run_dir>/analyses/<analysis>/<params hash>/
        params.json       the validated parameters
        units/<unit>/     record.json (+ final_weights.pt, mask.pt when later work needs them)
        result.json       assembled from the units, written last

A unit (one retrained round, one trained copy, one interpolation curve) counts as
done when its record.json exists; it is written last and atomically, so a crash
or a cancel leaves only the unit in flight to redo, as IMP rounds do.

Run directories written before every study lived here kept two studies elsewhere
(<run>/early_bird/..., <run>/pruning_at_init/...). Each study converts its own old
files once, the first time the run is opened for an analysis (`execute(..., old_layout=)`)
or its results are listed (trainer.analyses.stored_results); `adopt_old_result` stores the
converted result in this layout and moves the old files under <hash>/old_layout/.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import torch

from trainer import datasets, events, models
from trainer.analyses import events as aevents
from trainer.analyses.params import Param, params_hash, validate_params
from trainer.imp import Run
from trainer.pruning import masks
from trainer.pruning.channels import bn_producers
from trainer.rundir import RunDir, json_safe, save_tensor_dict_atomically, write_json_atomically
from trainer.spec import ExperimentSpec, SpecError, TrainingSpec
from trainer.steps import Step
from trainer.training.loop import PreparedData, train_segment
from trainer.training.record import SegmentResult
from trainer.training.stack_size import stack_size_for
from trainer.training.stacked_loop import train_segments

SCHEMA_VERSION = 1


class Cancelled(Exception):
    """Raised inside an analysis when stop_requested() cut a unit short."""


class AnalysisContext:
    """One analysis of one run directory: its parameters, its files, and (lazily) the loaded run."""

    def __init__(self, name: str, schema: tuple[Param, ...], run_path, params: dict, *,
                 callback: events.Callback, data_dir, stop_requested: Callable[[], bool], version: int = 1):
        self.name = name
        self.params = validate_params(schema, params)
        self.run_dir = RunDir.open(run_path)
        self.directory = self.run_dir.path / "analyses" / name / params_hash(name, schema, self.params, version)
        self.data_dir = data_dir
        self.stop_requested = stop_requested
        self.raw_callback = callback
        self.callback = aevents.tagged(callback, analysis=name)
        self.began = time.perf_counter()

    @cached_property
    def run(self) -> Run:
        """The run's spec, data and models; loaded only when some unit must be trained."""
        return Run(self.run_dir.spec, self.run_dir, self.data_dir, self.callback, self.stop_requested)

    # ---- files --------------------------------------------------------------------------
    @property
    def result_path(self) -> Path:
        return self.directory / "result.json"

    def finished_result(self) -> dict | None:
        return json.loads(self.result_path.read_text()) if self.result_path.is_file() else None

    def reuse_finished(self) -> dict | None:
        """The stored result when this exact analysis already finished (nothing is redone)."""
        result = self.finished_result()
        if result is not None:
            self.raw_callback(aevents.make_event(aevents.UNIT_SKIPPED, self.name, unit="result"))
            self.raw_callback(aevents.make_event(aevents.ANALYSIS_FINISHED, self.name, status="finished",
                                                 result_path=str(self.result_path)))
        return result

    def check_stop(self) -> None:
        if self.stop_requested():
            raise Cancelled()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.directory / "params.json", self.params)
        self.raw_callback(aevents.make_event(aevents.ANALYSIS_STARTED, self.name, run_dir=str(self.run_dir.path),
                                             result_dir=str(self.directory), params=self.params))

    def unit_dir(self, unit: str) -> Path:
        return self.directory / "units" / unit

    def unit_record(self, unit: str) -> dict | None:
        path = self.unit_dir(unit) / "record.json"
        if not path.is_file():
            return None
        self.raw_callback(aevents.make_event(aevents.UNIT_SKIPPED, self.name, unit=unit))
        return json.loads(path.read_text())

    def save_unit(self, unit: str, record: dict, state: dict | None = None, mask: masks.Mask | None = None) -> None:
        directory = self.unit_dir(unit)
        directory.mkdir(parents=True, exist_ok=True)
        if state is not None:
            save_tensor_dict_atomically(state, directory / "final_weights.pt")
        if mask is not None:
            masks.save_mask(mask, directory / "mask.pt")
        write_json_atomically(directory / "record.json", json_safe(record))

    def unit_state(self, unit: str) -> dict:
        return self.run_dir.load_state(self.unit_dir(unit) / "final_weights.pt")

    def unit_mask(self, unit: str) -> masks.Mask:
        return masks.load_mask(self.unit_dir(unit) / "mask.pt")

    def finish(self, result: dict) -> dict:
        result = {"schema": SCHEMA_VERSION, "analysis": self.name, "status": "finished",
                  "run_name": self.run_dir.path.name, "run_dir": str(self.run_dir.path),
                  "result_dir": str(self.directory), "params": self.params, **result,
                  "wall_seconds": round(time.perf_counter() - self.began, 3)}
        result = json_safe(result)
        write_json_atomically(self.result_path, result)
        self.raw_callback(aevents.make_event(aevents.ANALYSIS_FINISHED, self.name, status="finished",
                                             result_path=str(self.result_path)))
        return result

    def cancelled(self) -> dict:
        self.raw_callback(aevents.make_event(aevents.ANALYSIS_FINISHED, self.name, status="cancelled",
                                             result_path=None))
        return {"schema": SCHEMA_VERSION, "analysis": self.name, "status": "cancelled",
                "run_name": self.run_dir.path.name, "result_dir": str(self.directory), "params": self.params}

    def failed(self, error: Exception) -> None:
        self.raw_callback(aevents.make_event(aevents.ANALYSIS_FAILED, self.name, message=_message(error)))

    # ---- the run's finished work ----------------------------------------------------------
    def finished_rounds(self) -> list[int]:
        return [r["round"] for r in self.run_dir.records() if r["status"] == "finished"]

    def require_rounds(self, rounds: list[int], param: str, minimum: int = 0) -> list[int]:
        """`rounds` (empty = every finished round >= minimum), each checked to be finished in the run."""
        finished = self.finished_rounds()
        if not rounds:
            rounds = [r for r in finished if r >= minimum]
            if not rounds:
                raise SpecError(param, f"{self.run_dir.path} has no finished round >= {minimum}")
        for index, round_index in enumerate(rounds):
            if round_index < minimum:
                raise SpecError(f"{param}[{index}]", f"must be at least {minimum} (got {round_index})")
            if round_index not in finished:
                raise SpecError(f"{param}[{index}]", f"round {round_index} is not finished in {self.run_dir.path} "
                                                     f"(finished: {finished or 'none'})")
        return sorted(rounds)


# ---- training ---------------------------------------------------------------------------

def train_networks(models: list[torch.nn.Module], mask_list: list[masks.Mask], data: PreparedData, spec,
                   start_iteration: int, end_iteration: int, *, round_index: int, networks: list[str],
                   data_seeds: list[int] | None = None, training: TrainingSpec | None = None,
                   callback: events.Callback = events.ignore,
                   stop_requested: Callable[[], bool] = lambda: False) -> list[tuple[SegmentResult, dict]]:
    """Train each (model, mask) from start to end iteration; (segment, final state) per network.

    All networks share `training` (default: the spec's) and differ in weights, mask and data
    order (`data_seeds`, default the spec's), so several of them (the two copies of a
    connectivity test) train stacked in one step (trainer.training.stacked_loop; the stack size is
    the spec's or chosen for the model on this machine). Stops after the first cancelled network.
    """
    data_seeds = data_seeds if data_seeds is not None else [spec.data_seed] * len(models)
    base = replace(spec, training=training) if training is not None else spec
    if len(models) > 1:
        segments, states = train_segments(models, mask_list, data, base, start_iteration, end_iteration,
                                          round_index=round_index, networks=networks, data_seeds=data_seeds,
                                          stack_size=stack_size_for(base, data), callback=callback,
                                          stop_requested=stop_requested)
        done = []
        for segment, state in zip(segments, states):
            done.append((segment, state))
            if segment.status == "cancelled":
                break
        return done
    done = []
    for model, mask, network, seed in zip(models, mask_list, networks, data_seeds):
        segment = train_segment(model, mask, data, replace(base, data_seed=seed), start_iteration, end_iteration,
                                round_index=round_index, network=network, callback=callback,
                                stop_requested=stop_requested)
        done.append((segment, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        if segment.status == "cancelled":
            break
    return done


def check_score_training(params: dict, lists: tuple[str, ...]) -> None:
    """The pre-flight check of a study that trains mask scores: each of `lists` names at least one value and
    `iterations` is at least one iteration."""
    for name in lists:
        if not params.get(name):
            raise SpecError(name, "choose at least one value")
    if Step.parse(params["iterations"]).amount < 1:
        raise SpecError("iterations", "must be at least one iteration")


def run_score_study(context: AnalysisContext, check: Callable[[dict, dict], None],
                    train_units: Callable[[PreparedData, int], dict]) -> dict:
    """The body of a study that trains mask scores (edge_popup, learned_supermask): its check, a finished
    result reused, the run's data (splits and data order) at the study's `batch_size`, its `iterations`
    (a Step such as '2ep') in iterations of that batch size; then train_units(data, iterations)'s result
    fields, finished with iterations, chance, model and dataset."""
    params = context.params
    check(params, {})
    if (done := context.reuse_finished()) is not None:
        return done
    data = context.run.data
    train_size = len(data.train_y)
    if params["batch_size"] > train_size:
        raise SpecError("batch_size", f"{params['batch_size']} is larger than the run's {train_size} training examples")
    data = replace(data, batch_size=params["batch_size"])
    iterations = Step.parse(params["iterations"]).to_iterations(data.iterations_per_epoch)
    context.start()
    fields = train_units(data, iterations)
    spec = context.run.spec
    return context.finish({**fields, "iterations": iterations, "chance": 1.0 / data.info.num_classes,
                           "model": spec.model, "dataset": spec.dataset})


def mask_sparsity(mask: masks.Mask, sparsity: dict | None) -> dict:
    """A record's sparsity fields: `sparsity` (structured.sparsity or Run.sparsity of the mask: effective
    counts, effective parameters, costs) when given; else only the unmasked counts, which overstate
    what survives of a structured mask."""
    if sparsity is not None:
        return sparsity
    return {"remaining_fraction": masks.remaining_fraction(mask), "layers": masks.layer_summary(mask)}


def segment_record(segment: SegmentResult, mask: masks.Mask, *, round_index: int, network: str,
                   start_iteration: int, end_iteration: int, sparsity: dict | None = None, **extra) -> dict:
    """A round record in the shape of the IMP run's records (results.json), plus `extra`; `sparsity`
    as for mask_sparsity."""
    return json_safe({
        "round": round_index, "network": network, "status": segment.status, "message": segment.message,
        **mask_sparsity(mask, sparsity),
        "start_iteration": start_iteration, "end_iteration": end_iteration,
        "curve": segment.curve, "train_loss": segment.train_loss,
        "early_stop": segment.early_stop(), "final": segment.final(),
        "wall_seconds": round(segment.wall_seconds, 3), **extra})


def summary(record: dict) -> dict:
    """A record without its curves: small enough for an event."""
    return {k: v for k, v in record.items() if k not in ("curve", "train_loss", "layers")}


def round_started(callback: events.Callback, network: str, round_index: int, mask: masks.Mask,
                  start_iteration: int, end_iteration: int, sparsity: dict | None = None, **fields) -> None:
    callback(events.make_event(events.ROUND_STARTED, network, round=round_index,
                               remaining_fraction=mask_sparsity(mask, sparsity)["remaining_fraction"],
                               start_iteration=start_iteration, end_iteration=end_iteration, **fields))


def round_finished(callback: events.Callback, record: dict, **fields) -> None:
    callback(events.make_event(events.ROUND_FINISHED, record["network"], round=record["round"],
                               summary=summary(record), **fields))


def execute(name: str, schema: tuple[Param, ...], run_path, params: dict, body: Callable[[AnalysisContext], dict], *,
            callback: events.Callback, data_dir, stop_requested: Callable[[], bool],
            prepare: Callable[[dict], dict] | None = None, version: int = 1,
            old_layout: Callable[[RunDir], list[Path]] | None = None) -> dict:
    """Open the analysis and run `body`: cancellation is a status, errors leave an analysis_failed event.

    `prepare` may complete the raw parameters before they are validated and hashed; `version`
    is the analysis's results version (trainer.analyses.params.params_hash); `old_layout`
    converts the study's files of an older layout of the run directory first.
    """
    try:
        if prepare is not None:
            params = prepare(params)
        context = AnalysisContext(name, schema, run_path, params, callback=callback, data_dir=data_dir,
                                  stop_requested=stop_requested, version=version)
        if old_layout is not None:
            old_layout(context.run_dir)
    except Exception as error:
        callback(aevents.make_event(aevents.ANALYSIS_FAILED, name, message=_message(error)))
        raise
    try:
        return body(context)
    except Cancelled:
        return context.cancelled()
    except Exception as error:
        context.failed(error)
        raise


def adopt_old_result(run_dir: RunDir, name: str, schema: tuple[Param, ...], params: dict, version: int,
                     result: dict | None, old_path: Path, move: bool = True) -> Path:
    """Store `result` (a study's result read from `old_path`, a file or directory of an older layout)
    as the finished result of `params` in this layout, unless one is already there, and move
    `old_path` under the result directory's old_layout/ (nothing stored is lost). `result` None
    (an unfinished old result): only the move; `move` False: no move (the old files hold several
    results and move with the last). Returns the result directory."""
    params = validate_params(schema, params)
    directory = run_dir.path / "analyses" / name / params_hash(name, schema, params, version)
    directory.mkdir(parents=True, exist_ok=True)
    result_path = directory / "result.json"
    if result is not None and not result_path.is_file():
        write_json_atomically(directory / "params.json", params)
        write_json_atomically(result_path, json_safe({
            "schema": SCHEMA_VERSION, "analysis": name, "status": "finished", "run_name": run_dir.path.name,
            "run_dir": str(run_dir.path), "result_dir": str(directory), "params": params, **result,
            "converted_from": str(old_path.relative_to(run_dir.path))}))
    if move:
        target = directory / "old_layout" / old_path.relative_to(run_dir.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(old_path), str(target))
    return directory


def _message(error: Exception) -> str:
    return str(error) if isinstance(error, (SpecError, ValueError)) else f"{type(error).__name__}: {error}"


# ---- pre-flight checks (the web form and the CLI) -------------------------------------------

def has_batch_norm(model_name: str, dataset_name: str) -> bool:
    """Whether the model has batch norms after convs (built on 'meta': no memory, no random numbers)."""
    info = datasets.DATASETS[dataset_name].info
    with torch.device("meta"):
        architecture = models.MODELS[model_name].architecture(info.input_shape, info.num_classes)
    return bool(bn_producers(architecture))


def make_run_info(model: str, dataset: str, finished_rounds, rewind_step: str) -> dict:
    """What a study's `check(params, run_info)` may look at: model, dataset, task, has_batch_norm,
    finished_rounds (the ticket's, replicate 0) and rewind_step (the spec's). Built from a run directory
    (run_info), a spec not run yet (planned_run_info) or the web app's rows of an experiment."""
    task = datasets.DATASETS[dataset].info.task if dataset in datasets.DATASETS else "classification"
    return {"model": model, "dataset": dataset, "task": task,
            "has_batch_norm": task == "classification" and has_batch_norm(model, dataset),
            "finished_rounds": sorted(finished_rounds), "rewind_step": rewind_step}


def run_info(run_dir: RunDir) -> dict:
    """The run_info of a run directory: the rounds it has finished."""
    spec = run_dir.spec
    return make_run_info(spec.model, spec.dataset, [r["round"] for r in run_dir.records() if r["status"] == "finished"],
                         spec.rewind_step)


def planned_run_info(spec: ExperimentSpec) -> dict:
    """The run_info of a run not made yet, as it will be when it has finished: every round of its spec."""
    return make_run_info(spec.model, spec.dataset, range(spec.rounds_total() + 1), spec.rewind_step)


def check_rounds(params: dict, info: dict) -> None:
    """Every round named in a `rounds` list is a finished round of the run (SpecError otherwise); a study
    whose `rounds` is an int means the length of a new pruning chain, not a round of the run."""
    rounds = params.get("rounds")
    finished = set(info["finished_rounds"])
    for index, round_index in enumerate(rounds if isinstance(rounds, list) else []):
        if round_index not in finished:
            raise SpecError(f"rounds[{index}]", f"round {round_index} is not a finished round of this run "
                                                f"(finished: {', '.join(map(str, sorted(finished))) or 'none'})")


def no_summary_lines(result: dict) -> list[str]:
    """For a study whose result has no table to print (its charts are on the result page)."""
    return []


def percent_text(value) -> str:
    """A fraction as a percentage with two decimals; '-' for no value."""
    return "-" if value is None else f"{100 * value:.2f}%"
