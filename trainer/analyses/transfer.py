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

Across optimizers (Morcos et al. 2019, Section 4.3): target_optimizer / target_lr / target_momentum
train the ticket (found with the run's optimizer) with another optimizer, keeping the run's other
training fields (batch size, length, schedule, weight decay); the target dataset is then the run's
own unless named. A new optimizer needs its own learning rate (target_lr is required with it).
Every optimizer transfer also trains the random ticket, the paper's control: a random mask with
exactly the ticket's per-layer survivor counts (trainer.pruning.rules.random_mask_like, as the run's
random_prune control) on a fresh random initialisation (as random_reinit), trained like the ticket.
A target_run (a finished run of the same model, with the target optimizer when one is named) puts
its own tickets beside each transferred one at the nearest % remaining.

Networks that share the segment k..T on the target (every transferred ticket and control) train
stacked (trainer.training.stacked_loop), in chunks of the run's stack size.
"""
from __future__ import annotations

import math
from dataclasses import asdict, replace

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
)
from trainer.analyses.params import Param
from trainer.pruning import masks, rules, structured
from trainer.rundir import RunDir, RunDirError, write_json_atomically
from trainer.seeds import derive_seed, generator
from trainer.spec import SpecError, TrainingSpec
from trainer.steps import Step
from trainer.training.loop import PreparedData, resolve_device
from trainer.training.stack_size import stack_size_for
from trainer.training.stacked import chunks
from trainer.training.stacked_loop import train_segments

NAME = "transfer"
RANDOM_TICKET = "random_ticket"
TRANSFERRED = "transfer"  # the result's list of transferred tickets (a record per round)
CONTROLS = ("random_reinit", RANDOM_TICKET)
RUN_OPTIMIZER = "run"  # target_optimizer's default: train with the run's own optimizer
OPTIMIZER_CHOICES = (RUN_OPTIMIZER, "sgd", "adam")

PARAMS = (
    Param("target_dataset", "str", None, "Dataset to train the ticket on; default: the target run's dataset, or the "
          "run's own when only the optimizer changes.", optional=True),
    Param("rounds", "int_list", (), "Rounds of the run whose tickets transfer (0 = the dense network at θk); "
          "empty = every finished round.", minimum=0, maximum=100, unordered=True),
    Param("output_layer", "str", "auto", "'auto': keep the ticket's output layer when the class counts match, "
          "re-initialise it otherwise; 'reinit': always re-initialise it.", choices=("auto", "reinit")),
    Param("output_mask", "str", "dense", "A re-initialised output layer is 'dense', or 'pruned' by a random mask "
          "at the ticket's output-layer rate.", choices=("dense", "pruned")),
    Param("controls", "str_list", (), "Also train on the target: 'random_reinit' (same mask, fresh weights), "
          "'random_ticket' (a random mask of the ticket's per-layer sparsity, fresh weights; always trained "
          "when the optimizer changes).", choices=CONTROLS, unordered=True),
    Param("validation_size", "int", None, "Target training examples held out for early stopping; "
          "default: 5000, or a sixth of a smaller training set (the run's own split when only the training changes).",
          minimum=0, maximum=1_000_000, optional=True),
    Param("target_run", "path", None, "A finished run of the same model on the target dataset (and with the target "
          "optimizer): its tickets are reported beside the transfer at the nearest % remaining.",
          optional=True, in_hash=False),
    Param("target_optimizer", "str", RUN_OPTIMIZER, "Optimizer the ticket trains with on the target: 'run' (the "
          "run's own), 'sgd' or 'adam' (Morcos et al.'s transfer across optimizers; needs target_lr).",
          choices=OPTIMIZER_CHOICES, labels=("the run's", "SGD", "Adam")),
    Param("target_lr", "float", None, "Peak learning rate on the target; default: the run's (required with "
          "target_optimizer).", minimum=1e-9, maximum=10.0, optional=True),
    Param("target_momentum", "float", None, "SGD momentum on the target; default: the run's (Adam has none).",
          minimum=0.0, maximum=0.999, optional=True),
)


def run_transfer(run_path, target_dataset=None, rounds=(), output_layer="auto", output_mask="dense", controls=(),
                 validation_size=None, target_run=None, target_optimizer=RUN_OPTIMIZER, target_lr=None,
                 target_momentum=None, *, callback: events.Callback = events.ignore, data_dir=None,
                 stop_requested=lambda: False,
                 extra_datasets: dict[str, datasets.DatasetTensors] | None = None) -> dict:
    """Train the run's tickets on `target_dataset` and/or with another optimizer; the result JSON (also in result.json).

    `extra_datasets` maps names to in-memory DatasetTensors usable as target_dataset besides
    the registered datasets (tests; a name must always mean the same tensors: it is the key
    of the stored work). Result: {"transfer": [entry per round], "controls": {kind: [...]},
    "source": {...}, "target_dataset": {...}, "output_layer": {...}, "target": {...} | null,
    "source_training": {...}, "target_training": {...}, "changes": [...]}; an entry is a round
    record on the target plus source_round, source_remaining_fraction and source_early_stop.
    """
    params = {"target_dataset": target_dataset, "rounds": list(rounds), "output_layer": output_layer,
              "output_mask": output_mask, "controls": list(controls), "validation_size": validation_size,
              "target_run": None if target_run is None else str(target_run), "target_optimizer": target_optimizer,
              "target_lr": target_lr, "target_momentum": target_momentum}
    return execute(NAME, PARAMS, run_path, params, lambda context: _body(context, extra_datasets or {}),
                   callback=callback, data_dir=data_dir, stop_requested=stop_requested,
                   prepare=lambda raw: _resolve_target(raw, run_path))


def changes_training(params: dict) -> bool:
    return params.get("target_optimizer", RUN_OPTIMIZER) != RUN_OPTIMIZER or params.get("target_lr") is not None \
        or params.get("target_momentum") is not None


def _resolve_target(params: dict, run_path) -> dict:
    """Completed before hashing (they name the work): target_dataset defaults to the target run's dataset,
    else to the run's own when only the training changes; an optimizer transfer always has the random ticket."""
    params = dict(params)
    if params.get("target_dataset") is None:
        if isinstance(params.get("target_run"), str):
            params["target_dataset"] = _open_target_run(params["target_run"]).spec.dataset
        elif changes_training(params):
            params["target_dataset"] = RunDir.open(run_path).spec.dataset
    if params.get("target_optimizer", RUN_OPTIMIZER) != RUN_OPTIMIZER and isinstance(params.get("controls"), list) \
            and RANDOM_TICKET not in params["controls"]:
        params["controls"] = [*params["controls"], RANDOM_TICKET]
    return params


def _open_target_run(path: str | None) -> RunDir | None:
    if path is None:
        return None
    try:
        return RunDir.open(path)
    except RunDirError as error:
        raise SpecError("target_run", str(error)) from None


def check_training_params(params: dict) -> None:
    """What can be refused without the run: a new optimizer without its learning rate, momentum for Adam."""
    optimizer = params.get("target_optimizer", RUN_OPTIMIZER)
    if optimizer != RUN_OPTIMIZER and params.get("target_lr") is None:
        raise SpecError("target_lr", f"give the learning rate to train with {optimizer} (the run's was tuned for its "
                                     "own optimizer)")
    if optimizer == "adam" and params.get("target_momentum") is not None:
        raise SpecError("target_momentum", "Adam has no momentum; leave it empty")


def target_training(source: TrainingSpec, params: dict) -> TrainingSpec:
    """The run's training with the target's optimizer, learning rate and momentum."""
    check_training_params(params)
    optimizer = source.optimizer if params["target_optimizer"] == RUN_OPTIMIZER else params["target_optimizer"]
    if optimizer == "adam" and params["target_momentum"] is not None:
        raise SpecError("target_momentum", "the run trains with Adam, which has no momentum; leave it empty")
    return replace(source, optimizer=optimizer,
                   lr=params["target_lr"] if params["target_lr"] is not None else source.lr,
                   momentum=params["target_momentum"] if params["target_momentum"] is not None else source.momentum)


def nearest_round(records: list[dict], remaining_fraction: float) -> dict | None:
    """The finished record whose % remaining is nearest `remaining_fraction` (ties: the earlier round)."""
    finished = [r for r in records
                if r.get("status", "finished") == "finished" and r.get("remaining_fraction") is not None]
    if not finished:
        return None
    return min(finished, key=lambda r: (abs(r["remaining_fraction"] - remaining_fraction), r["round"]))


def _target_section(target: RunDir | None, training: TrainingSpec, transfer: list[dict]) -> dict | None:
    if target is None:
        return None
    rounds = [summary(r) for r in target.records()]
    matches = []
    for entry in transfer:
        found = nearest_round(rounds, entry["remaining_fraction"])
        matches.append({"round": entry["round"], "remaining_fraction": entry["remaining_fraction"],
                        "target_round": found["round"] if found else None,
                        "target_remaining_fraction": found["remaining_fraction"] if found else None})
    return {"run_name": target.path.name, "run_dir": str(target.path), "dataset": target.spec.dataset,
            "model": target.spec.model, "optimizer": target.spec.training.optimizer, "lr": target.spec.training.lr,
            "same_training": target.spec.training == training, "rounds": rounds, "matches": matches,
            "controls": {kind: [summary(r) for r in target.records(kind)] for kind in target.control_kinds()}}


def _check_target_run(target: RunDir | None, spec, params: dict, dataset: str) -> None:
    if target is None:
        return
    if target.spec.dataset != dataset:
        raise SpecError("target_dataset", f"{dataset!r} differs from the target run's dataset {target.spec.dataset!r}")
    if target.spec.model != spec.model:
        raise SpecError("target_run", f"the target run trains {target.spec.model}, the ticket is a {spec.model}")
    optimizer = params["target_optimizer"]
    if optimizer != RUN_OPTIMIZER and target.spec.training.optimizer != optimizer:
        raise SpecError("target_run", f"the target run trains with {target.spec.training.optimizer}, "
                                      f"the target optimizer is {optimizer}")


def _changes(spec, dataset: str, training: TrainingSpec) -> list[str]:
    """What differs between where the ticket was found and where it trains now."""
    changed = ["dataset"] if dataset != spec.dataset else []
    return changed + [name for name in ("optimizer", "lr", "momentum")
                      if getattr(training, name) != getattr(spec.training, name)]


def _body(context: AnalysisContext, extra_datasets: dict) -> dict:
    params = context.params
    spec = context.run_dir.spec
    training = target_training(spec.training, params)
    target_run = _open_target_run(params["target_run"])
    name = params["target_dataset"]
    if name is None:
        raise SpecError("target_dataset", "name the dataset to train on (or give a target_run or target optimizer)")
    _check_target_run(target_run, spec, params, name)
    if name not in extra_datasets and name not in datasets.DATASETS:
        raise SpecError("target_dataset", f"unknown dataset {name!r}; choose one of {', '.join(datasets.DATASETS)}")
    rounds = context.require_rounds(params["rounds"], "rounds", minimum=0)
    if (done := context.reuse_finished()) is not None:
        refreshed = {**done, "target": _target_section(target_run, training, done["transfer"])}
        if refreshed != done:
            write_json_atomically(context.result_path, refreshed)
        return refreshed

    source_info = datasets.DATASETS[spec.dataset].info
    tensors = extra_datasets[name] if name in extra_datasets else datasets.load_dataset(name, context.data_dir)
    info = tensors.info
    if tuple(info.input_shape) != tuple(source_info.input_shape):
        raise SpecError("target_dataset", f"{name} has inputs of shape {tuple(info.input_shape)}, the ticket "
                                          f"({spec.dataset}) takes {tuple(source_info.input_shape)}")
    validation_size = params["validation_size"]
    if validation_size is None and name == spec.dataset and training != spec.training:
        validation_size = spec.validation_size  # the run's own split: only the training differs
    data = _prepare(tensors, validation_size, spec)
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

    networks = []  # (unit, network, round, extra, build) of every network on the target
    for round_index in rounds:
        source = context.run_dir.record(round_index)
        mask = plan.target_mask(context.run_dir.mask(round_index), round_index)
        extra = {"source_round": round_index, "source_remaining_fraction": source["remaining_fraction"],
                 "source_early_stop": source["early_stop"], "source_final": source["final"]}
        networks.append((f"transfer/round_{round_index:03d}", "transfer", round_index, extra,
                         lambda mask=mask: (plan.transferred_model(theta_k), mask)))
        for kind in params["controls"]:
            networks.append((f"{kind}/round_{round_index:03d}", f"transfer_{kind}", round_index, extra,
                             lambda kind=kind, mask=mask, r=round_index: plan.control_network(kind, mask, r)))
    records = _train_missing(context, networks, data, replace(spec, training=training), start, total)
    by_unit = dict(zip([network[0] for network in networks], records))
    transfer = [by_unit[f"transfer/round_{r:03d}"] for r in rounds]
    return context.finish({
        "source": {"run_name": context.run_dir.path.name, "dataset": spec.dataset,
                   "num_classes": source_info.num_classes, "model": spec.model},
        "target_dataset": {"name": name, "num_classes": info.num_classes, "train_size": len(data.train_y),
                           "validation_size": len(data.val_y), "test_size": len(data.test_y),
                           "iterations_per_epoch": per_epoch},
        "source_training": asdict(spec.training), "target_training": asdict(training),
        "changes": _changes(spec, name, training),
        "start_iteration": start, "total_iterations": total, "rounds": rounds,
        "output_layer": {"weight": output_weight, "bias": output_bias, "reinitialised": reinit,
                         "mask": ("pruned" if params["output_mask"] == "pruned" else "dense") if reinit else "ticket"},
        TRANSFERRED: transfer,
        "controls": {kind: [by_unit[f"{kind}/round_{r:03d}"] for r in rounds] for kind in params["controls"]},
        "target": _target_section(target_run, training, transfer),
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
    return PreparedData(tensors.info, *datasets.run_splits(tensors, size, device), spec.training.batch_size)


class TransferPlan:
    """How a source ticket becomes a network for the target: weights, output layer, mask; and the controls."""

    def __init__(self, spec, target_name: str, info: datasets.DatasetInfo, output_weight: str, output_bias: str,
                 reinit: bool, output_mask: str):
        self.spec, self.target_name, self.info = spec, target_name, info
        self.output_weight, self.output_bias = output_weight, output_bias
        self.reinit, self.output_mask = reinit, output_mask

    def fresh_model(self, round_index: int | None = None, kind: str = "random_reinit") -> torch.nn.Module:
        """The architecture for the target; seed = the output layer's (round None) or control `kind`'s."""
        parts = ("transfer_output", self.target_name) if round_index is None else \
            (f"transfer_{kind}", self.target_name, round_index)
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

    def random_ticket_mask(self, mask: masks.Mask, round_index: int) -> masks.Mask:
        """Morcos et al.'s random ticket's mask: random, with exactly `mask`'s survivors per layer."""
        return rules.random_mask_like(mask, generator(self.spec.init_seed, "transfer_random_ticket_mask",
                                                      self.target_name, round_index))

    def control_network(self, kind: str, mask: masks.Mask, round_index: int) -> tuple[torch.nn.Module, masks.Mask]:
        """(model, mask) of a control of the ticket whose target mask is `mask`: both start from a fresh init."""
        if kind == RANDOM_TICKET:
            return self.fresh_model(round_index, kind), self.random_ticket_mask(mask, round_index)
        if kind == "random_reinit":
            return self.fresh_model(round_index, kind), mask
        raise ValueError(f"unknown control {kind!r}")

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


def _train_missing(context: AnalysisContext, networks: list[tuple], data: PreparedData, spec, start: int,
                   end: int) -> list[dict]:
    """The record of every network (unit, network, round, extra, build): stored ones as they are, the others
    trained stacked (they all share k..T on the target) and stored as each stack finishes."""
    records: dict[str, dict] = {}
    missing = []
    for network in networks:
        stored = context.unit_record(network[0])
        if stored is not None:
            records[network[0]] = stored
        else:
            missing.append(network)
    if missing:
        for part in chunks(len(missing), stack_size_for(spec, data)):
            context.check_stop()
            for record in _train_stack(context, [missing[index] for index in part], data, spec, start, end):
                records[record["unit"]] = record["record"]
    return [records[network[0]] for network in networks]


def _train_stack(context: AnalysisContext, batch: list[tuple], data: PreparedData, spec, start: int,
                 end: int) -> list[dict]:
    labels, built = {}, []
    for _, network, round_index, _, build in batch:
        model, mask = build()
        sparsity = structured.sparsity(spec.model, data.info.input_shape, data.info.num_classes, mask)
        labels[f"{network}@{round_index}"] = (network, round_index)
        built.append((model.to(data.device), mask, sparsity))
        round_started(context.callback, network, round_index, mask, start, end, sparsity=sparsity)

    def relabel(event: dict) -> None:
        network, round_index = labels.get(event.get("network"), (event.get("network"), event.get("round")))
        context.callback({**event, "network": network, "round": round_index})

    segments, _ = train_segments([model for model, _, _ in built], [mask for _, mask, _ in built], data, spec,
                                 start, end, round_index=batch[0][2], networks=list(labels), stack_size=len(batch),
                                 callback=relabel, stop_requested=context.stop_requested)
    done = []
    for (unit, network, round_index, extra, _), (_, mask, sparsity), segment in zip(batch, built, segments):
        if segment.status == "cancelled":
            raise Cancelled()
        record = segment_record(segment, mask, round_index=round_index, network=network, start_iteration=start,
                                end_iteration=end, sparsity=sparsity, **extra)
        context.save_unit(unit, record)
        round_finished(context.callback, record)
        done.append({"unit": unit, "record": record})
    return done


def check(params: dict, info: dict) -> None:
    check_rounds(params, info)
    check_training_params(params)
    target = params.get("target_dataset")
    if target is None and params.get("target_run") is None and not changes_training(params):
        raise SpecError("target_dataset", "choose the dataset to train the ticket on (or a target run, or a target "
                                          "optimizer)")
    if target is not None:
        if target not in datasets.DATASETS:
            raise SpecError("target_dataset", f"unknown dataset {target!r}")
        source_shape = tuple(datasets.DATASETS[info["dataset"]].info.input_shape)
        target_shape = tuple(datasets.DATASETS[target].info.input_shape)
        if target_shape != source_shape:
            raise SpecError("target_dataset", f"{target} inputs are {target_shape}, the ticket's are {source_shape}")


def training_label(training: dict | None) -> str:
    """'adam lr 0.0012' / 'sgd lr 0.1 momentum 0.9' from a training spec dict ('' for none)."""
    if not training:
        return ""
    momentum = training.get("momentum") or 0.0
    return f"{training['optimizer']} lr {training['lr']:g}" + \
        (f" momentum {momentum:g}" if training["optimizer"] == "sgd" and momentum else "")


def summary_lines(result: dict) -> list[str]:
    target_rounds = (result["target"] or {}).get("rounds", [])
    layer = result["output_layer"]
    lines = [(f"{result['source']['dataset']} -> {result['target_dataset']['name']}; output layer "
              f"{'re-initialised (' + layer['mask'] + ')' if layer['reinitialised'] else 'kept'}")]
    if result.get("target_training") and result.get("target_training") != result.get("source_training"):
        lines.append(f"training: {training_label(result['source_training'])} -> "
                     f"{training_label(result['target_training'])}")
    lines.append(f"{'round':>5} {'% remaining':>11} {'source acc':>10} {'transfer acc':>12} "
                 + " ".join(f"{kind:>14}" for kind in result["controls"]) + f" {'target ticket':>13}")
    controls = {kind: {e["round"]: e for e in entries} for kind, entries in result["controls"].items()}
    for entry in result["transfer"]:
        found = nearest_round(target_rounds, entry["remaining_fraction"])
        lines.append(f"{entry['round']:>5} {100 * entry['remaining_fraction']:>11.1f} "
                     f"{percent_text(entry['source_early_stop'].get('test_accuracy')):>10} "
                     f"{percent_text(entry['early_stop'].get('test_accuracy')):>12} "
                     + " ".join(f"{percent_text(controls[k][entry['round']]['early_stop'].get('test_accuracy')):>14}"
                                for k in controls)
                     + f" {percent_text(found['early_stop'].get('test_accuracy')) if found else '':>13}")
    return lines
