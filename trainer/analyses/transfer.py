"""Ticket transfer (Morcos, Yu, Paganini & Tian 2019): a ticket found on one dataset, trained on another.

Round r's ticket of a finished run (its mask on θk) trains on the target dataset with the
run's training settings (lengths in epochs count the target's epochs), from iteration k to T
in target iterations, as a ticket found on the target with the same spec would.

Output layer: when the class counts differ (or output_layer='reinit'), the output layer's
weight and bias are re-initialised (the model's own init, a seed derived from the run's init
seed and the target's name). A re-initialised output layer is either kept dense
(output_mask='dense', the default: its source mask belongs to other classes) or pruned by a
random mask at the ticket's output-layer rate (output_mask='pruned'). Every other layer keeps
the ticket's mask and θk. Input shapes must match.

target_run (optional) is a finished run on the target dataset: its tickets are reported
beside the transferred ones (it does not change what is trained, so it is not in the hash).
The random_reinit control trains the same mask from a fresh initialisation on the target.
"""
from __future__ import annotations

import functools
import math

import torch

from trainer import datasets, events, models
from trainer.analyses.common import (
    AnalysisContext,
    Cancelled,
    check_rounds,
    execute,
    percent_text,
    round_finished,
    round_started,
    segment_record,
    summary,
    train_networks,
)
from trainer.analyses.params import Param
from trainer.pruning import masks, structured
from trainer.rundir import RunDir, RunDirError, write_json_atomically
from trainer.seeds import derive_seed, generator
from trainer.spec import SpecError
from trainer.steps import Step
from trainer.training.loop import PreparedData, resolve_device

NAME = "transfer"
CONTROLS = ("random_reinit",)

PARAMS = (
    Param("target_dataset", "str", None, "Dataset to train the ticket on; default: the target run's dataset.",
          optional=True),
    Param("rounds", "int_list", (), "Rounds of the run whose tickets transfer (0 = the dense network at θk); "
          "empty = every finished round.", minimum=0, maximum=100, unordered=True),
    Param("output_layer", "str", "auto", "'auto': keep the ticket's output layer when the class counts match, "
          "re-initialise it otherwise; 'reinit': always re-initialise it.", choices=("auto", "reinit")),
    Param("output_mask", "str", "dense", "A re-initialised output layer is 'dense', or 'pruned' by a random mask "
          "at the ticket's output-layer rate.", choices=("dense", "pruned")),
    Param("controls", "str_list", (), "Also train on the target: 'random_reinit' (same mask, fresh weights).",
          choices=CONTROLS, unordered=True),
    Param("validation_size", "int", None, "Target training examples held out for early stopping; "
          "default: 5000, or a sixth of a smaller training set.", minimum=0, maximum=1_000_000, optional=True),
    Param("target_run", "path", None, "A finished run on the target dataset, reported beside the transfer.",
          optional=True, in_hash=False),
)


def run_transfer(run_path, target_dataset=None, rounds=(), output_layer="auto", output_mask="dense", controls=(),
                 validation_size=None, target_run=None, *, callback: events.Callback = events.ignore, data_dir=None,
                 stop_requested=lambda: False,
                 extra_datasets: dict[str, datasets.DatasetTensors] | None = None) -> dict:
    """Train the run's tickets on `target_dataset`; the result JSON (also in result.json).

    `extra_datasets` maps names to in-memory DatasetTensors usable as target_dataset besides
    the registered datasets (tests; a name must always mean the same tensors: it is the key
    of the stored work). Result: {"transfer": [entry per round], "controls": {kind: [...]},
    "source": {...}, "target_dataset": {...}, "output_layer": {...}, "target": {...} | null};
    an entry is a round record on the target plus source_round, source_remaining_fraction and
    source_early_stop.
    """
    params = {"target_dataset": target_dataset, "rounds": list(rounds), "output_layer": output_layer,
              "output_mask": output_mask, "controls": list(controls), "validation_size": validation_size,
              "target_run": None if target_run is None else str(target_run)}
    return execute(NAME, PARAMS, run_path, params, lambda context: _body(context, extra_datasets or {}),
                   callback=callback, data_dir=data_dir, stop_requested=stop_requested, prepare=_resolve_target)


def _resolve_target(params: dict) -> dict:
    """target_dataset defaults to the target run's dataset (resolved before hashing: it names the work)."""
    if params.get("target_dataset") is None and isinstance(params.get("target_run"), str):
        params = {**params, "target_dataset": _open_target_run(params["target_run"]).spec.dataset}
    return params


def _open_target_run(path: str | None) -> RunDir | None:
    if path is None:
        return None
    try:
        return RunDir.open(path)
    except RunDirError as error:
        raise SpecError("target_run", str(error)) from None


def _target_section(target: RunDir | None, source_spec) -> dict | None:
    if target is None:
        return None
    return {"run_name": target.path.name, "run_dir": str(target.path), "dataset": target.spec.dataset,
            "same_training": target.spec.training == source_spec.training,
            "rounds": [summary(r) for r in target.records()],
            "controls": {kind: [summary(r) for r in target.records(kind)] for kind in target.control_kinds()}}


def _body(context: AnalysisContext, extra_datasets: dict) -> dict:
    params = context.params
    spec = context.run_dir.spec
    target_run = _open_target_run(params["target_run"])
    name = params["target_dataset"]
    if name is None:
        raise SpecError("target_dataset", "name the dataset to train on (or give a target_run)")
    if target_run is not None and target_run.spec.dataset != name:
        raise SpecError("target_dataset", f"{name!r} differs from the target run's dataset {target_run.spec.dataset!r}")
    if name not in extra_datasets and name not in datasets.DATASETS:
        raise SpecError("target_dataset", f"unknown dataset {name!r}; choose one of {', '.join(datasets.DATASETS)}")
    rounds = context.require_rounds(params["rounds"], "rounds", minimum=0)
    if (done := context.reuse_finished()) is not None:
        refreshed = {**done, "target": _target_section(target_run, spec)}
        if refreshed != done:
            write_json_atomically(context.result_path, refreshed)
        return refreshed

    source_info = datasets.DATASETS[spec.dataset].info
    tensors = extra_datasets[name] if name in extra_datasets else datasets.load_dataset(name, context.data_dir)
    info = tensors.info
    if tuple(info.input_shape) != tuple(source_info.input_shape):
        raise SpecError("target_dataset", f"{name} has inputs of shape {tuple(info.input_shape)}, the ticket "
                                          f"({spec.dataset}) takes {tuple(source_info.input_shape)}")
    data = _prepare(tensors, params["validation_size"], spec)
    per_epoch = data.iterations_per_epoch
    total = Step.parse(spec.training.training_steps).to_iterations(per_epoch)
    start = Step.parse(spec.rewind_step).to_iterations(per_epoch)
    if start >= total:
        raise SpecError("target_dataset", f"on {name} the rewind step {spec.rewind_step} ({start} iterations) is not "
                                          f"before the end of training ({total} iterations)")
    context.start()
    output_weight = models.output_parameter_name(spec.model, source_info.input_shape, source_info.num_classes)
    output_bias = output_weight.rsplit(".", 1)[0] + ".bias"
    reinit = params["output_layer"] == "reinit" or info.num_classes != source_info.num_classes
    theta_k = context.run_dir.load_state(context.run_dir.theta_rewind_path)
    plan = TransferPlan(spec, name, info, output_weight, output_bias, reinit, params["output_mask"])

    transfer, control_entries = [], {kind: [] for kind in params["controls"]}
    for round_index in rounds:
        source = context.run_dir.record(round_index)
        mask = plan.target_mask(context.run_dir.mask(round_index), round_index)
        extra = {"source_round": round_index, "source_remaining_fraction": source["remaining_fraction"],
                 "source_early_stop": source["early_stop"], "source_final": source["final"]}
        transfer.append(_train(context, f"transfer/round_{round_index:03d}", "transfer", round_index,
                               lambda: plan.transferred_model(theta_k), mask, data, start, total, extra))
        for kind in params["controls"]:
            control_entries[kind].append(_train(context, f"{kind}/round_{round_index:03d}", f"transfer_{kind}",
                                                round_index, functools.partial(plan.fresh_model, round_index), mask,
                                                data, start, total, extra))
    return context.finish({
        "source": {"run_name": context.run_dir.path.name, "dataset": spec.dataset,
                   "num_classes": source_info.num_classes, "model": spec.model},
        "target_dataset": {"name": name, "num_classes": info.num_classes, "train_size": int(data.train_x.shape[0]),
                           "validation_size": int(data.val_x.shape[0]), "test_size": int(data.test_x.shape[0]),
                           "iterations_per_epoch": per_epoch},
        "start_iteration": start, "total_iterations": total, "rounds": rounds,
        "output_layer": {"weight": output_weight, "bias": output_bias, "reinitialised": reinit,
                         "mask": ("pruned" if params["output_mask"] == "pruned" else "dense") if reinit else "ticket"},
        "transfer": transfer, "controls": control_entries, "target": _target_section(target_run, spec),
    })


def _prepare(tensors: datasets.DatasetTensors, validation_size: int | None, spec) -> PreparedData:
    train_size = int(tensors.train_y.shape[0])
    size = validation_size if validation_size is not None else min(5000, train_size // 6)
    if size >= train_size:
        raise SpecError("validation_size", f"must be smaller than the {train_size} training examples")
    if spec.training.batch_size > train_size - size:
        raise SpecError("target_dataset", f"the batch size {spec.training.batch_size} is larger than the "
                                          f"{train_size - size} training examples")
    device = resolve_device(spec.device)
    train_x, train_y, val_x, val_y = datasets.split_validation(tensors, size)
    move = lambda t: t.to(device)  # noqa: E731
    return PreparedData(tensors.info, move(train_x), move(train_y), move(val_x), move(val_y),
                        move(tensors.test_x), move(tensors.test_y), spec.training.batch_size)


class TransferPlan:
    """How a source ticket becomes a network for the target: weights, output layer, mask."""

    def __init__(self, spec, target_name: str, info: datasets.DatasetInfo, output_weight: str, output_bias: str,
                 reinit: bool, output_mask: str):
        self.spec, self.target_name, self.info = spec, target_name, info
        self.output_weight, self.output_bias = output_weight, output_bias
        self.reinit, self.output_mask = reinit, output_mask

    def fresh_model(self, round_index: int | None = None) -> torch.nn.Module:
        """The architecture for the target; seed = the output layer's (round None) or a control's."""
        parts = ("transfer_output", self.target_name) if round_index is None else \
            ("transfer_random_reinit", self.target_name, round_index)
        seed = derive_seed(self.spec.init_seed, *parts) % (2**31)
        return models.build_model(self.spec.model, self.info.input_shape, self.info.num_classes, seed)

    def transferred_model(self, theta_k: dict) -> torch.nn.Module:
        model = self.fresh_model()
        state = dict(theta_k)
        if self.reinit:
            fresh = model.state_dict()
            state[self.output_weight] = fresh[self.output_weight].clone()
            state[self.output_bias] = fresh[self.output_bias].clone()
        model.load_state_dict(state)
        return model

    def target_mask(self, source_mask: masks.Mask, round_index: int) -> masks.Mask:
        mask = {name: m.clone() for name, m in source_mask.items()}
        if not self.reinit or self.output_weight not in mask:
            return mask
        shape = (self.info.num_classes, source_mask[self.output_weight].shape[1])
        if self.output_mask == "dense":
            mask[self.output_weight] = torch.ones(shape, dtype=torch.bool)
        else:
            kept = source_mask[self.output_weight].float().mean().item()
            count = math.floor(kept * shape[0] * shape[1] + 0.5)
            flat = torch.zeros(shape[0] * shape[1], dtype=torch.bool)
            order = torch.randperm(flat.numel(), generator=generator(self.spec.init_seed, "transfer_output_mask",
                                                                     self.target_name, round_index))
            flat[order[:count]] = True
            mask[self.output_weight] = flat.reshape(shape)
        return mask


def _train(context: AnalysisContext, unit: str, network: str, round_index: int, build, mask: masks.Mask,
           data: PreparedData, start: int, end: int, extra: dict) -> dict:
    stored = context.unit_record(unit)
    if stored is not None:
        return stored
    context.check_stop()
    model = build().to(data.train_x.device)
    sparsity = structured.sparsity(context.run_dir.spec.model, data.info.input_shape, data.info.num_classes, mask)
    round_started(context.callback, network, round_index, mask, start, end, sparsity=sparsity)
    [(segment, _)] = train_networks([model], [mask], data, context.run_dir.spec, start, end, round_index=round_index,
                                    networks=[network], callback=context.callback,
                                    stop_requested=context.stop_requested)
    if segment.status == "cancelled":
        raise Cancelled()
    record = segment_record(segment, mask, round_index=round_index, network=network, start_iteration=start,
                            end_iteration=end, sparsity=sparsity, **extra)
    context.save_unit(unit, record)
    round_finished(context.callback, record)
    return record


def check(params: dict, info: dict) -> None:
    check_rounds(params, info)
    target = params.get("target_dataset")
    if target is None and params.get("target_run") is None:
        raise SpecError("target_dataset", "choose the dataset to train the ticket on (or a target run)")
    if target is not None:
        if target not in datasets.DATASETS:
            raise SpecError("target_dataset", f"unknown dataset {target!r}")
        source_shape = tuple(datasets.DATASETS[info["dataset"]].info.input_shape)
        target_shape = tuple(datasets.DATASETS[target].info.input_shape)
        if target_shape != source_shape:
            raise SpecError("target_dataset", f"{target} inputs are {target_shape}, the ticket's are {source_shape}")


def summary_lines(result: dict) -> list[str]:
    target = {r["round"]: r for r in (result["target"] or {}).get("rounds", [])}
    layer = result["output_layer"]
    lines = [f"{result['source']['dataset']} -> {result['target_dataset']['name']}; output layer "
             f"{'re-initialised (' + layer['mask'] + ')' if layer['reinitialised'] else 'kept'}",
             f"{'round':>5} {'% remaining':>11} {'source acc':>10} {'transfer acc':>12} "
             + " ".join(f"{kind:>14}" for kind in result["controls"]) + f" {'target ticket':>13}"]
    controls = {kind: {e["round"]: e for e in entries} for kind, entries in result["controls"].items()}
    for entry in result["transfer"]:
        found = target.get(entry["round"])
        lines.append(f"{entry['round']:>5} {100 * entry['remaining_fraction']:>11.1f} "
                     f"{percent_text(entry['source_early_stop'].get('test_accuracy')):>10} "
                     f"{percent_text(entry['early_stop'].get('test_accuracy')):>12} "
                     + " ".join(f"{percent_text(controls[k][entry['round']]['early_stop'].get('test_accuracy')):>14}"
                                for k in controls)
                     + f" {percent_text(found['early_stop'].get('test_accuracy')) if found else '':>13}")
    return lines
