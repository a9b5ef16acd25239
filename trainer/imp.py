"""Iterative magnitude pruning with rewinding, and its controls.

Round 0 trains the dense network from θ0 and captures θk at the rewind step.
Round r prunes round r-1's trained weights, resets the survivors to θk and
trains them from iteration k to the end. Every finished round is on disk, so
running the same spec again resumes after the last finished round; every
random choice has its own derived seed, so the resumed run is identical.

Controls branch off a finished run (open_lth semantics: they train the same
iterations k..T as the ticket they control):
  random_reinit  the round's mask on a fresh initialisation
  random_prune   a random mask with the round's per-layer sparsity, on θk
"""
from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Callable

import torch

from trainer import events, masks, models, pruning, structured
from trainer.rundir import RunDir, json_safe, save_tensor_dict_atomically, write_json_atomically
from trainer.seeds import derive_seed, generator
from trainer.spec import ExperimentSpec
from trainer.steps import Step
from trainer.stacked import choose_stack_size, chunks
from trainer.stacked_train import train_segments_stacked
from trainer.train import PreparedData, prepare_data, resolve_device, train_segment

RESULTS_SCHEMA_VERSION = 1


class Run:
    """One experiment on one device: the data, the run directory and the plan."""

    def __init__(self, spec: ExperimentSpec, run_dir: RunDir, data_dir=None,
                 callback: events.Callback = events.ignore, stop_requested: Callable[[], bool] = lambda: False):
        self.spec = spec
        self.run_dir = run_dir
        self.callback = callback
        self.stop_requested = stop_requested
        spec.check_dataset_fit()
        self.device = resolve_device(spec.device)
        _make_deterministic(self.device)
        self.data: PreparedData = prepare_data(spec, self.device, data_dir)
        per_epoch = self.data.iterations_per_epoch
        self.total_iterations = Step.parse(spec.training.training_steps).to_iterations(per_epoch)
        self.rewind_iteration = Step.parse(spec.rewind_step).to_iterations(per_epoch)
        self.prunable = spec.pruning.prunable_layers or models.prunable_parameter_names(
            spec.model, self.data.info.input_shape, self.data.info.num_classes)

    # ---- models -----------------------------------------------------------------------
    def fresh_model(self, init_seed: int) -> torch.nn.Module:
        info = self.data.info
        return models.build_model(self.spec.model, info.input_shape, info.num_classes, init_seed).to(self.device)

    def model_with(self, state: dict) -> torch.nn.Module:
        model = self.fresh_model(self.spec.init_seed)
        model.load_state_dict(state)
        return model

    def theta_init(self) -> dict:
        path = self.run_dir.theta_init_path
        if not path.exists():
            save_tensor_dict_atomically(self.fresh_model(self.spec.init_seed).state_dict(), path)
        return self.run_dir.load_state(path)

    # ---- one round --------------------------------------------------------------------
    def train_round(self, round_index: int, network: str, model: torch.nn.Module, mask: masks.Mask,
                    start_iteration: int, snapshot_at: int | None = None, frozen_values: dict | None = None):
        self.announce_round(round_index, network, mask, start_iteration)
        segment = train_segment(model, mask, self.data, self.spec, start_iteration, self.total_iterations,
                                round_index=round_index, network=network, callback=self.callback,
                                stop_requested=self.stop_requested, snapshot_at=snapshot_at,
                                frozen_values=frozen_values)
        return segment, self.round_record(round_index, network, mask, start_iteration, segment)

    def announce_round(self, round_index: int, network: str, mask: masks.Mask, start_iteration: int) -> None:
        self.callback(events.make_event(events.ROUND_STARTED, network, round=round_index,
                                        remaining_fraction=masks.remaining_fraction(mask),
                                        start_iteration=start_iteration, end_iteration=self.total_iterations))

    def round_record(self, round_index: int, network: str, mask: masks.Mask, start_iteration: int, segment) -> dict:
        return {
            "round": round_index, "network": network, "status": segment.status, "message": segment.message,
            "remaining_fraction": masks.remaining_fraction(mask), "layers": masks.layer_summary(mask),
            "start_iteration": start_iteration, "end_iteration": self.total_iterations,
            "curve": json_safe(segment.curve), "train_loss": json_safe(segment.train_loss),
            "early_stop": json_safe(segment.early_stop()), "final": json_safe(segment.final()),
            "wall_seconds": round(segment.wall_seconds, 3),
            "costs": self.costs(mask),
        }

    def costs(self, mask: masks.Mask) -> dict:
        """Parameters, weights and multiply-accumulates per example: dense, masked, and of the
        shrunk network a structured mask amounts to ('effective')."""
        info = self.data.info
        counts = structured.count_flops_and_parameters(self.spec.model, info.input_shape, info.num_classes, mask)
        return {view: counts[view] for view in ("dense", "masked", "effective")}

    def finish_round(self, round_index, network, mask, model, segment, record) -> None:
        if segment.status == "cancelled":
            return  # the round in flight is not kept: a rerun redoes it
        self.run_dir.save_round(round_index, network, mask, model.state_dict(), record)
        self.callback(events.make_event(events.ROUND_FINISHED, network, round=round_index, summary=_summary(record)))

    # ---- IMP --------------------------------------------------------------------------
    def round_mask(self, round_index: int) -> masks.Mask:
        """The mask of round r from round r-1's mask and trained weights."""
        return self.next_mask(self.run_dir.mask(round_index - 1), self.run_dir.final_weights(round_index - 1), round_index)

    def round_fractions(self) -> tuple[float, dict[str, float]]:
        """The fraction of survivors one round prunes, overall and per overridden layer."""
        spec = self.spec.pruning
        if spec.schedule == "one_shot":
            return (pruning.one_shot_fraction(spec.fraction, spec.rounds),
                    {n: pruning.one_shot_fraction(f, spec.rounds) for n, f in spec.layer_fractions.items()})
        return spec.fraction, dict(spec.layer_fractions)

    def next_mask(self, previous_mask: masks.Mask, trained: dict, round_index: int) -> masks.Mask:
        """Prune `previous_mask` by the run's rule (strategy, scope, fractions) on `trained` weights."""
        spec = self.spec.pruning
        fraction, layer_fractions = self.round_fractions()
        if spec.strategy == "magnitude" and (spec.criterion != "large_final" or spec.structure != "unstructured"):
            from trainer import imp_variants  # the variants build on this module's Run
            variant = imp_variants.Variant(criterion=spec.criterion, structure=spec.structure, norm=spec.unit_norm)
            theta_rewind = self.run_dir.load_state(self.run_dir.theta_rewind_path)
            return imp_variants.variant_mask(self, variant, previous_mask, trained, theta_rewind)
        if spec.strategy == "magnitude":
            scores = pruning.magnitude_scores({name: trained[name] for name in previous_mask})
        else:
            scores = pruning.random_scores(previous_mask, generator(self.spec.init_seed, "random_pruning", round_index))
        return pruning.prune_by_scores(previous_mask, scores, fraction, spec.scope, layer_fractions)

    def run_ticket_rounds(self) -> str:
        for round_index in range(0, self.spec.rounds_total() + 1):
            existing = self.run_dir.record(round_index)
            if existing is not None and (round_index > 0 or self.run_dir.theta_rewind_path.exists()):
                self.callback(events.make_event(events.ROUND_SKIPPED, round=round_index))
                if existing["status"] == "diverged":
                    return "diverged"
                continue
            if round_index == 0:
                model = self.model_with(self.theta_init())
                mask = masks.dense_mask(model, self.prunable)
                segment, record = self.train_round(0, events.TICKET, model, mask, 0, snapshot_at=self.rewind_iteration)
                if segment.snapshot is not None:
                    save_tensor_dict_atomically(segment.snapshot, self.run_dir.theta_rewind_path)
            else:
                mask = self.round_mask(round_index)
                model = self.model_with(self.run_dir.load_state(self.run_dir.theta_rewind_path))
                segment, record = self.train_round(round_index, events.TICKET, model, mask, self.rewind_iteration)
            self.finish_round(round_index, events.TICKET, mask, model, segment, record)
            if segment.status != "finished":
                return segment.status
        return "finished"

    # ---- controls ---------------------------------------------------------------------
    def control_network(self, kind: str, round_index: int) -> tuple[torch.nn.Module, masks.Mask]:
        """The starting network and mask of one control of a finished round."""
        ticket_mask = self.run_dir.mask(round_index)
        if kind == "random_reinit":
            return self.fresh_model(derive_seed(self.spec.init_seed, "random_reinit", round_index) % (2**31)), ticket_mask
        if kind == "random_prune":
            theta_rewind = self.run_dir.load_state(self.run_dir.theta_rewind_path)
            return (self.model_with(theta_rewind),
                    pruning.random_mask_like(ticket_mask, generator(self.spec.init_seed, "random_prune", round_index)))
        raise ValueError(f"unknown control {kind!r}")

    def run_controls(self, kinds: list[str], rounds: list[int]) -> str:
        """Train the missing controls of the chosen rounds, stacked: they all share the iterations k..T."""
        finished_rounds = [r["round"] for r in self.run_dir.records() if r["status"] == "finished" and r["round"] > 0]
        todo = []
        for round_index in rounds or finished_rounds:
            if round_index not in finished_rounds:
                continue
            for kind in kinds:
                if self.run_dir.record(round_index, kind) is not None:
                    self.callback(events.make_event(events.ROUND_SKIPPED, kind, round=round_index))
                else:
                    todo.append((round_index, kind))
        stack_size = self.spec.stack_size or choose_stack_size(
            self.spec.model, self.data.info.input_shape, self.data.batch_size, self.device,
            self.data.info.num_classes, self.spec.training.optimizer)
        for part in (chunks(len(todo), stack_size) if todo else []):
            # Events carry the round, so one stack may mix rounds.
            networks = [todo[index] for index in part]
            built = [self.control_network(kind, round_index) for round_index, kind in networks]
            for (round_index, kind), (_, mask) in zip(networks, built):
                self.announce_round(round_index, kind, mask, self.rewind_iteration)
            segments = self.train_stacked([model for model, _ in built], [mask for _, mask in built],
                                          rounds=[r for r, _ in networks], labels=[k for _, k in networks])
            for (round_index, kind), (model, mask), segment in zip(networks, built, segments):
                record = self.round_record(round_index, kind, mask, self.rewind_iteration, segment)
                self.finish_round(round_index, kind, mask, model, segment, record)
            if any(segment.status == "cancelled" for segment in segments):
                return "cancelled"
        return "finished"

    def train_stacked(self, models_to_train, masks_to_use, rounds: list[int], labels: list[str]):
        """Train networks that share start and end iterations in one stack (one per round label)."""
        if len(set(rounds)) == 1:
            segments, _ = train_segments_stacked(
                models_to_train, masks_to_use, self.data, self.spec, self.rewind_iteration, self.total_iterations,
                round_index=rounds[0], networks=labels, callback=self.callback, stop_requested=self.stop_requested)
            return segments
        # Mixed rounds: events must name each network's own round.
        by_label = {f"{label}@{r}": (label, r) for label, r in zip(labels, rounds)}

        def relabel(event: dict) -> None:
            label, round_index = by_label.get(event.get("network"), (event.get("network"), event.get("round")))
            self.callback({**event, "network": label, "round": round_index})

        segments, _ = train_segments_stacked(
            models_to_train, masks_to_use, self.data, self.spec, self.rewind_iteration, self.total_iterations,
            round_index=rounds[0], networks=list(by_label), callback=relabel, stop_requested=self.stop_requested)
        return segments

    # ---- results ----------------------------------------------------------------------
    def results(self, status: str) -> dict:
        return {
            "schema": RESULTS_SCHEMA_VERSION,
            "run_name": self.run_dir.path.name,
            "status": status,
            "spec": self.spec.to_dict(),
            "device": str(self.device),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "dataset": {"name": self.data.info.name, "train_size": int(self.data.train_x.shape[0]),
                        "validation_size": int(self.data.val_x.shape[0]), "test_size": int(self.data.test_x.shape[0]),
                        "iterations_per_epoch": self.data.iterations_per_epoch},
            "total_iterations": self.total_iterations,
            "rewind_iteration": self.rewind_iteration,
            "rounds": self.run_dir.records(),
            "controls": {kind: self.run_dir.records(kind) for kind in self.run_dir.control_kinds()},
        }


def _make_deterministic(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def run_experiment(spec: ExperimentSpec, runs_root: Path, *, callback: events.Callback = events.ignore,
                   data_dir=None, stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """Run (or resume) the IMP experiment `spec` under `runs_root`, then its controls.

    Returns the results dict that is also written to results.json. Errors in the spec or
    the data are raised after a run_failed event; a diverging or cancelled run is a status.
    """
    began = time.perf_counter()
    try:
        spec.validate()
        run_dir = RunDir.create(runs_root, spec)
        run = Run(spec, run_dir, data_dir, callback, stop_requested)
    except Exception as error:
        callback(events.make_event(events.RUN_FAILED, message=str(error)))
        raise
    done_before = [r["round"] for r in run_dir.records()]
    callback(events.make_event(events.RUN_STARTED, run_name=run_dir.path.name, run_dir=str(run_dir.path),
                               spec=spec.to_dict(), rounds_total=spec.rounds_total(),
                               iterations_per_round=run.total_iterations, resumed_rounds=done_before))
    try:
        status = run.run_ticket_rounds()
        if status == "finished" and spec.controls:
            status = run.run_controls(spec.controls, spec.control_rounds)
        results = run.results(status)
        results["wall_seconds"] = round(time.perf_counter() - began, 3)
        write_json_atomically(run_dir.results_path, results)
    except Exception as error:
        callback(events.make_event(events.RUN_FAILED, message=f"{type(error).__name__}: {error}"))
        raise
    callback(events.make_event(events.RUN_FINISHED, status=status, results_path=str(run_dir.results_path)))
    return results


def run_controls_on(run_path: Path, kinds: list[str], rounds: list[int], *, callback: events.Callback = events.ignore,
                    data_dir=None, stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """Add controls to a finished (or partly finished) run directory."""
    run_dir = RunDir.open(run_path)
    spec = run_dir.spec
    spec.controls = sorted(set(spec.controls) | set(kinds))
    run = Run(spec, run_dir, data_dir, callback, stop_requested)
    status = run.run_controls(kinds, rounds)
    results = run.results(status)
    write_json_atomically(run_dir.results_path, results)
    callback(events.make_event(events.RUN_FINISHED, status=status, results_path=str(run_dir.results_path)))
    return results


def _summary(record: dict) -> dict:
    """A round record without its curves: small enough for an event."""
    return {k: v for k, v in record.items() if k not in ("curve", "train_loss")}
