"""Iterative magnitude pruning with rewinding, and its controls.

Round 0 trains the dense network from θ0 and captures θk at the rewind step.
Round r prunes round r-1's trained weights, resets the survivors to θk and
trains them from iteration k to the end. Every finished round is on disk, so
running the same spec again resumes after the last finished round; every
random choice has its own derived seed, so the resumed run is identical.

Replicates are independent copies of all this with their own seeds (replicate 0 is the run
itself); the replicates of a round train stacked, as do the controls.

Controls branch off a finished run (open_lth semantics: they train the same
iterations k..T as the ticket they control), and one trains from scratch:
  random_reinit               the round's mask on a fresh initialisation, iterations k..T
  random_reinit_from_scratch  the same network, iterations 0..T (Frankle & Carbin 2019's control;
                              equal to random_reinit when k = 0)
  random_prune                a random mask with the round's per-layer sparsity, on θk
"""
from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from trainer import events, models, verdict
from trainer.imp import variants
from trainer.pruning import masks, rules, structured
from trainer.rundir import RunDir, json_safe, save_tensor_dict_atomically, write_json_atomically
from trainer.seeds import derive_seed, generator
from trainer.spec import ExperimentSpec
from trainer.steps import Step
from trainer.training.stacked import choose_stack_size, chunks
from trainer.training.stacked_loop import train_segments_stacked
from trainer.training.loop import PreparedData, prepare_data, resolve_device, train_segment

RESULTS_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Replicate:
    """One independent copy of the experiment: its own seeds and its own part of the run directory."""
    index: int
    init_seed: int
    data_seed: int
    run_dir: RunDir


def replicate_seeds(spec: ExperimentSpec, index: int) -> tuple[int, int]:
    """(init seed, data seed) of replicate `index`; replicate 0 is the spec's own seeds."""
    if index == 0:
        return spec.init_seed, spec.data_seed
    return (derive_seed(spec.init_seed, "replicate_init", index) % (2**31),
            derive_seed(spec.data_seed, "replicate_data", index) % (2**31))


class Run:
    """One experiment on one device: the data, the run directory and the plan."""

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
        self.replicates = [Replicate(index, *replicate_seeds(spec, index), run_dir.replicate(index))
                           for index in range(spec.replicates)]

    def _replicate(self, replicate: Replicate | None) -> Replicate:
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
        replicate = self._replicate(replicate)
        path = replicate.run_dir.theta_init_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_tensor_dict_atomically(self.fresh_model(replicate.init_seed).state_dict(), path)
        return self.run_dir.load_state(path)

    def theta_rewind(self, replicate: Replicate | None = None) -> dict:
        replicate = self._replicate(replicate)
        return replicate.run_dir.load_state(replicate.run_dir.theta_rewind_path)

    # ---- one round --------------------------------------------------------------------
    def train_round(self, round_index: int, network: str, model: torch.nn.Module, mask: masks.Mask,
                    start_iteration: int, snapshot_at: int | None = None, frozen_values: dict | None = None):
        """One network alone (the analyses' variants: frozen pruned weights need the solo loop)."""
        self.announce_round(round_index, network, mask, start_iteration)
        segment = train_segment(model, mask, self.data, self.spec, start_iteration, self.total_iterations,
                                round_index=round_index, network=network, callback=self.callback,
                                stop_requested=self.stop_requested, snapshot_at=snapshot_at,
                                frozen_values=frozen_values)
        return segment, self.round_record(round_index, network, mask, start_iteration, segment)

    def announce_round(self, round_index: int, network: str, mask: masks.Mask, start_iteration: int,
                       replicate: int = 0) -> None:
        self.callback(events.make_event(events.ROUND_STARTED, network, round=round_index, replicate=replicate,
                                        remaining_fraction=self.sparsity(mask)["remaining_fraction"],
                                        start_iteration=start_iteration, end_iteration=self.total_iterations))

    def round_record(self, round_index: int, network: str, mask: masks.Mask, start_iteration: int, segment,
                     replicate: int = 0) -> dict:
        return {
            "round": round_index, "network": network, "replicate": replicate,
            "status": segment.status, "message": segment.message,
            **self.sparsity(mask),  # remaining_fraction (effective), unmasked_fraction, effective_parameters, layers, costs
            "start_iteration": start_iteration, "end_iteration": self.total_iterations,
            "curve": json_safe(segment.curve), "train_loss": json_safe(segment.train_loss),
            "early_stop": json_safe(segment.early_stop()), "final": json_safe(segment.final()),
            "wall_seconds": round(segment.wall_seconds, 3),
        }

    def sparsity(self, mask: masks.Mask) -> dict:
        """The mask's effective remaining fraction (a weight survives only between two live units),
        unmasked fraction, effective parameters, per-layer counts and costs (structured.sparsity)."""
        info = self.data.info
        return structured.sparsity(self.spec.model, info.input_shape, info.num_classes, mask)

    def finish_round(self, round_index, network, mask, model, segment, record, replicate: Replicate | None = None) -> None:
        if segment.status == "cancelled":
            return  # the round in flight is not kept: a rerun redoes it
        replicate = self._replicate(replicate)
        replicate.run_dir.save_round(round_index, network, mask, model.state_dict(), record)
        self.callback(events.make_event(events.ROUND_FINISHED, network, round=round_index, replicate=replicate.index,
                                        summary=_summary(record)))

    # ---- IMP --------------------------------------------------------------------------
    def round_mask(self, round_index: int, replicate: Replicate | None = None) -> masks.Mask:
        """The mask of round r from round r-1's mask and trained weights."""
        run_dir = self._replicate(replicate).run_dir
        return self.next_mask(run_dir.mask(round_index - 1), run_dir.final_weights(round_index - 1), round_index,
                              replicate)

    def round_fractions(self) -> tuple[float, dict[str, float]]:
        """The fraction of survivors one round prunes, overall and per overridden layer."""
        spec = self.spec.pruning
        if spec.schedule == "one_shot":
            return (rules.one_shot_fraction(spec.fraction, spec.rounds),
                    {n: rules.one_shot_fraction(f, spec.rounds) for n, f in spec.layer_fractions.items()})
        return spec.fraction, dict(spec.layer_fractions)

    def next_mask(self, previous_mask: masks.Mask, trained: dict, round_index: int,
                  replicate: Replicate | None = None, started_from: dict | None = None) -> masks.Mask:
        """Prune `previous_mask` by the run's rule (strategy, scope, fractions) on `trained` weights.

        `started_from`: the weights the training that produced `trained` started from, which
        criteria other than large_final compare with; default the ticket chain's (θ0 when
        `trained` is the dense round 0, θk after)."""
        spec = self.spec.pruning
        replicate = self._replicate(replicate)
        fraction, layer_fractions = self.round_fractions()
        if spec.strategy == "magnitude" and (spec.criterion != "large_final" or spec.structure != "unstructured"):
            variant = variants.Variant(criterion=spec.criterion, structure=spec.structure, norm=spec.unit_norm)
            if started_from is None:
                started_from = self.theta_init(replicate) if round_index == 1 else self.theta_rewind(replicate)
            return variants.variant_mask(self, variant, previous_mask, trained, started_from)
        if spec.strategy == "magnitude":
            scores = rules.magnitude_scores({name: trained[name] for name in previous_mask})
        else:
            scores = rules.random_scores(previous_mask, generator(replicate.init_seed, "random_pruning", round_index))
        return rules.prune_by_scores(previous_mask, scores, fraction, spec.scope, layer_fractions)

    def stack_size(self) -> int:
        return self.spec.stack_size or choose_stack_size(
            self.spec.model, self.data.info.input_shape, self.data.batch_size, self.device,
            self.data.info.num_classes, self.spec.training.optimizer)

    def run_ticket_rounds(self) -> str:
        """Every replicate's IMP chain, round by round; the replicates of a round train stacked.
        A diverged replicate ends its own chain only; the run diverges when all have."""
        alive = list(self.replicates)
        for round_index in range(0, self.spec.rounds_total() + 1):
            todo = []
            for replicate in alive:
                existing = replicate.run_dir.record(round_index)
                if existing is not None and (round_index > 0 or replicate.run_dir.theta_rewind_path.exists()):
                    self.callback(events.make_event(events.ROUND_SKIPPED, round=round_index, replicate=replicate.index))
                    if existing["status"] == "diverged":
                        alive = [other for other in alive if other is not replicate]
                else:
                    todo.append(replicate)
            for part in chunks(len(todo), self.stack_size()) if todo else []:
                statuses = self.train_ticket_round(round_index, [todo[index] for index in part])
                if "cancelled" in statuses.values():
                    return "cancelled"
                alive = [replicate for replicate in alive if statuses.get(replicate.index) != "diverged"]
            if not alive:
                return "diverged"
        return "finished"

    def train_ticket_round(self, round_index: int, replicates: list[Replicate]) -> dict[int, str]:
        """Round r of the given replicates, stacked; their statuses by replicate index."""
        built = []
        for replicate in replicates:
            if round_index == 0:
                model = self.model_with(self.theta_init(replicate))
                built.append((model, masks.dense_mask(model, self.prunable)))
            else:
                mask = self.round_mask(round_index, replicate)
                built.append((self.model_with(self.theta_rewind(replicate)), mask))
        start = 0 if round_index == 0 else self.rewind_iteration
        for replicate, (_, mask) in zip(replicates, built):
            self.announce_round(round_index, events.TICKET, mask, start, replicate.index)
        segments = self.train_networks(
            [model for model, _ in built], [mask for _, mask in built], start,
            [(events.TICKET, round_index, replicate) for replicate in replicates],
            snapshot_at=self.rewind_iteration if round_index == 0 else None)
        for replicate, (model, mask), segment in zip(replicates, built, segments):
            if round_index == 0 and segment.snapshot is not None:
                save_tensor_dict_atomically(segment.snapshot, replicate.run_dir.theta_rewind_path)
            record = self.round_record(round_index, events.TICKET, mask, start, segment, replicate.index)
            self.finish_round(round_index, events.TICKET, mask, model, segment, record, replicate)
        return {replicate.index: segment.status for replicate, segment in zip(replicates, segments)}

    # ---- controls ---------------------------------------------------------------------
    def control_network(self, kind: str, round_index: int,
                        replicate: Replicate | None = None) -> tuple[torch.nn.Module, masks.Mask]:
        """The starting network and mask of one control of a finished round."""
        replicate = self._replicate(replicate)
        ticket_mask = replicate.run_dir.mask(round_index)
        if kind in ("random_reinit", "random_reinit_from_scratch"):  # the same fresh init; they differ in start
            return self.fresh_model(derive_seed(replicate.init_seed, "random_reinit", round_index) % (2**31)), ticket_mask
        if kind == "random_prune":
            return (self.model_with(self.theta_rewind(replicate)),
                    rules.random_mask_like(ticket_mask, generator(replicate.init_seed, "random_prune", round_index)))
        raise ValueError(f"unknown control {kind!r}")

    def run_controls(self, kinds: list[str], rounds: list[int]) -> str:
        """Train the missing controls of the chosen rounds of every replicate, stacked: they all
        share the iterations k..T."""
        todo = []
        for replicate in self.replicates:
            finished_rounds = [r["round"] for r in replicate.run_dir.records()
                               if r["status"] == "finished" and r["round"] > 0]
            for round_index in rounds or finished_rounds:
                if round_index not in finished_rounds:
                    continue
                for kind in kinds:
                    if replicate.run_dir.record(round_index, kind) is not None:
                        self.callback(events.make_event(events.ROUND_SKIPPED, kind, round=round_index,
                                                        replicate=replicate.index))
                    else:
                        todo.append((kind, round_index, replicate))
        # Networks that share their start iteration train in one stack.
        by_start: dict[int, list] = {}
        for network in todo:
            by_start.setdefault(self.control_start(network[0]), []).append(network)
        for start, group in sorted(by_start.items()):
            for part in chunks(len(group), self.stack_size()):
                networks = [group[index] for index in part]
                built = [self.control_network(kind, round_index, replicate) for kind, round_index, replicate in networks]
                for (kind, round_index, replicate), (_, mask) in zip(networks, built):
                    self.announce_round(round_index, kind, mask, start, replicate.index)
                segments = self.train_networks([model for model, _ in built], [mask for _, mask in built], start, networks)
                for (kind, round_index, replicate), (model, mask), segment in zip(networks, built, segments):
                    record = self.round_record(round_index, kind, mask, start, segment, replicate.index)
                    self.finish_round(round_index, kind, mask, model, segment, record, replicate)
                if any(segment.status == "cancelled" for segment in segments):
                    return "cancelled"
        return "finished"

    def control_start(self, kind: str) -> int:
        """The iteration a control starts training at: the ticket's k, or 0 for the from-scratch reinit."""
        return 0 if kind == "random_reinit_from_scratch" else self.rewind_iteration

    def train_networks(self, models_to_train, masks_to_use, start_iteration: int,
                       identities: list[tuple[str, int, Replicate]], snapshot_at: int | None = None):
        """Train networks that share start and end iterations in one stack. `identities` names
        each one (network, round, replicate); events go out under that identity, whatever the mix."""
        labels = {f"{network}@{round_index}#{replicate.index}": (network, round_index, replicate.index)
                  for network, round_index, replicate in identities}

        def relabel(event: dict) -> None:
            network, round_index, replicate = labels[event["network"]]
            self.callback({**event, "network": network, "round": round_index, "replicate": replicate})

        segments, _ = train_segments_stacked(
            models_to_train, masks_to_use, self.data, self.spec, start_iteration, self.total_iterations,
            round_index=identities[0][1], networks=list(labels), callback=relabel,
            data_seeds=[replicate.data_seed for _, _, replicate in identities],
            stop_requested=self.stop_requested, snapshot_at=snapshot_at)
        return segments

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
            "dataset": {"name": self.data.info.name, "train_size": int(self.data.train_x.shape[0]),
                        "validation_size": int(self.data.val_x.shape[0]), "test_size": int(self.data.test_x.shape[0]),
                        "iterations_per_epoch": self.data.iterations_per_epoch},
            "total_iterations": self.total_iterations,
            "rewind_iteration": self.rewind_iteration,
            "rounds": self.run_dir.records(),
            "controls": {kind: self.run_dir.records(kind) for kind in self.run_dir.control_kinds()},
            # replicate 0 is "rounds" and "controls" above; the others follow in the same shape
            "replicates": [{"replicate": replicate.index, "init_seed": replicate.init_seed,
                            "data_seed": replicate.data_seed, "rounds": replicate.run_dir.records(),
                            "controls": {kind: replicate.run_dir.records(kind)
                                         for kind in replicate.run_dir.control_kinds()}}
                           for replicate in self.replicates[1:]],
        }
        results["verdicts"] = verdict.of_results(results)  # winning-ticket verdict per round (trainer.verdict)
        return results


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
                               spec=spec.to_dict(), rounds_total=spec.rounds_total(), replicates=spec.replicates,
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


def train_ticket(payload: dict, *, data_dir=None, callback: events.Callback = events.ignore) -> dict:
    """Train a loaded ticket again: its mask on θk, iterations k..T of its spec; the round record."""
    spec = ExperimentSpec.from_dict(payload["spec"])
    with tempfile.TemporaryDirectory() as scratch:
        run = Run(spec, RunDir(Path(scratch), spec), data_dir, callback)  # no run directory of its own
        model = run.model_with(payload["theta_rewind"])
        mask = {name: tensor.to(run.device) for name, tensor in payload["mask"].items()}
        start = run.rewind_iteration if payload["round"] else 0
        _, record = run.train_round(payload["round"], events.TICKET, model, mask, start)
    return record
