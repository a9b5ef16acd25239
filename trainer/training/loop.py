"""The training loop: one segment of iterations of one (masked) network.

Data lives in tensors on the device (images as uint8 pixels, normalized when a batch is drawn); a batch
is one index op into them with a permutation seeded by (data seed, epoch), so training from iteration k
gives exactly the batches an uninterrupted run would see from k on. What the loop keeps
of the network (curves, events, status, θk snapshot: the round's record) is its
trainer.training.record.NetworkRecord, as in the stacked loop.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainer import datasets, events, tasks
from trainer.pruning import structured
from trainer.pruning.masks import FrozenAtInitEnforcer, Mask, MaskEnforcer
from trainer.seeds import generator
from trainer.spec import ExperimentSpec, TrainingSpec
from trainer.steps import Step
from trainer.tasks import PreparedData
from trainer.tasks.classification import EVAL_BATCH_SIZE, evaluate
from trainer.training.record import NetworkRecord, RunningLoss, SegmentResult

__all__ = ["EVAL_BATCH_SIZE", "DataOrder", "PreparedData", "Schedule", "evaluate", "FusedOptimizer", "prepare_data",
           "train_segment"]


def apply_thread_setting() -> None:
    """Honour LOTTERYWEB_TORCH_THREADS: several trainer processes on few cores run far faster
    with fewer threads each than with OpenMP threads spinning against each other."""
    threads = os.environ.get("LOTTERYWEB_TORCH_THREADS", "").strip()
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise datasets.DatasetError(f"device {name!r} was requested but CUDA is not available on this machine")
    return torch.device(name)


def prepare_data(spec: ExperimentSpec, device: torch.device, data_dir=None) -> PreparedData:
    """The run's data on `device`, prepared by the task of its dataset (trainer.tasks)."""
    return tasks.get(datasets.get_entry(spec.dataset).info.task).prepare(spec, device, data_dir)


class DataOrder:
    """The training batch of each iteration: epoch e's order is a permutation seeded by (data seed,
    "order", e) and iteration i's augmentation is seeded by (data seed, "augment", i), so any
    iteration's batch is the same whatever was trained before it."""

    def __init__(self, data: PreparedData, data_seed: int):
        self.data, self.data_seed = data, data_seed
        self.permutation, self.permutation_epoch = None, -1

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        data, device = self.data, self.data.device
        epoch, offset = divmod(iteration, data.iterations_per_epoch)
        if epoch != self.permutation_epoch:
            self.permutation = torch.randperm(len(data.train_y), device=device,
                                              generator=generator(self.data_seed, "order", epoch, device=device))
            self.permutation_epoch = epoch
        indices = self.permutation[offset * data.batch_size:(offset + 1) * data.batch_size]
        # index_select gathers rows ~3x faster than advanced indexing on CPU.
        inputs, targets = data.inputs("train", indices), data.train_y.index_select(0, indices)
        if data.info.augment:
            inputs = datasets.augment_batch(inputs, generator(self.data_seed, "augment", iteration, device=device))
        return inputs, targets


@dataclass
class Schedule:
    """A round's iteration plan and learning rate, all in iterations."""
    total_iterations: int
    eval_interval: int
    metrics_interval: int
    base_lr: float
    warmup_iterations: int
    milestones: list[int]
    gamma: float

    @classmethod
    def from_spec(cls, training: TrainingSpec, iterations_per_epoch: int) -> Schedule:
        to_it = lambda text: Step.parse(text).to_iterations(iterations_per_epoch)  # noqa: E731
        milestones = [to_it(m) for m in training.lr_milestones] if training.lr_schedule == "multistep" else []
        return cls(total_iterations=to_it(training.training_steps), eval_interval=to_it(training.eval_interval),
                   metrics_interval=training.metrics_interval, base_lr=training.lr,
                   warmup_iterations=to_it(training.warmup_steps), milestones=milestones, gamma=training.lr_gamma)

    def lr_at(self, iteration: int) -> float:
        lr = self.base_lr * self.gamma ** sum(1 for m in self.milestones if iteration >= m)
        if iteration < self.warmup_iterations:
            lr *= (iteration + 1) / self.warmup_iterations
        return lr

    def is_eval_point(self, iteration: int, start: int, end: int) -> bool:
        """Whether a segment from `start` to `end` evaluates after `iteration` iterations."""
        return (iteration == start or iteration % self.eval_interval == 0 or iteration == self.total_iterations
                or iteration == end)

    def is_metrics_point(self, done: int, end: int) -> bool:
        """Whether a segment ending at `end` reports its running training loss after `done` iterations."""
        return done % self.metrics_interval == 0 or done == end


class FusedOptimizer:
    """What torch.optim.SGD / torch.optim.Adam (fused=True) compute, by calling the same fused kernels
    directly: torch.optim's step() spends ~0.2 ms in Python per call, a sixth of a LeNet-300-100
    step on a CPU (measured; bench/train_speed.py). Gradients are set to None, not zeroed, so
    backward stores them instead of adding them to zeros. Momentum starts from a zero buffer,
    which gives torch's first step exactly (0 * momentum + gradient)."""

    def __init__(self, model: torch.nn.Module, training: TrainingSpec):
        self.training = training
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        zeros = lambda: {p: torch.zeros_like(p) for p in self.parameters}  # noqa: E731
        self.momentum_buffers = zeros() if training.optimizer == "sgd" and training.momentum else {}
        self.exp_avg = zeros() if training.optimizer == "adam" else {}
        self.exp_avg_sq = zeros() if training.optimizer == "adam" else {}
        self.steps = {p: torch.zeros((), dtype=torch.float32, device=p.device) for p in self.exp_avg}

    def zero_grad(self) -> None:
        for p in self.parameters:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        stepped = [p for p in self.parameters if p.grad is not None]  # as torch.optim: no gradient, no step
        grads = [p.grad for p in stepped]
        training = self.training
        if training.optimizer == "sgd":
            torch._fused_sgd_(stepped, grads, [self.momentum_buffers[p] for p in stepped] if self.momentum_buffers
                              else [], weight_decay=training.weight_decay, momentum=training.momentum, lr=lr,
                              dampening=0.0, nesterov=False, maximize=False, is_first_step=False)
            return
        steps = [self.steps[p] for p in stepped]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(stepped, grads, [self.exp_avg[p] for p in stepped], [self.exp_avg_sq[p] for p in stepped],
                           [], steps, amsgrad=False, lr=lr, beta1=0.9, beta2=0.999,
                           weight_decay=training.weight_decay, eps=1e-8, maximize=False)


def train_segment(model: torch.nn.Module, mask: Mask, data: PreparedData, spec: ExperimentSpec,
                  start_iteration: int, end_iteration: int, *, round_index: int, network: str = events.TICKET,
                  callback: events.Callback = events.ignore, stop_requested: Callable[[], bool] = lambda: False,
                  snapshot_at: int | None = None, frozen_values: dict | None = None) -> SegmentResult:
    """Train `model` (already holding its starting weights) from start to end iteration.

    Pruned weights are zero, and so are the biases and batch-norm γ/β of dead units
    (structured.training_mask), or pruned weights are held at `frozen_values` when given
    (Zhou et al.'s variant).
    """
    schedule = Schedule.from_spec(spec.training, data.iterations_per_epoch)
    task = tasks.of_data(data)
    if frozen_values is None and task.traces_units:  # frozen pruned weights carry signal: no unit is dead then
        enforcer = MaskEnforcer(model, structured.training_mask(model, mask, data.info.input_shape))
    elif frozen_values is None:
        enforcer = MaskEnforcer(model, mask)
    else:
        enforcer = FrozenAtInitEnforcer(model, mask, frozen_values)
    enforcer.mask_weights()
    optimizer = FusedOptimizer(model, spec.training)
    record = NetworkRecord(network, round_index, callback, has_validation=task.has_validation(data),
                           snapshot_at=snapshot_at, metric=task.metric.key)

    def evaluated(iteration: int) -> bool:
        val_loss, val_metric = task.evaluate(model, data, "val")
        test_loss, test_metric = task.evaluate(model, data, "test")
        return record.evaluated(iteration, val_loss, val_metric, test_loss, test_metric)

    def state() -> dict:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    record.snapshot(start_iteration, state)
    model.train()
    if not evaluated(start_iteration):
        return record.result

    stream = task.stream(data, spec.data_seed, start_iteration)
    order = DataOrder(data, spec.data_seed) if stream is None else None

    def batch_loss(iteration: int) -> torch.Tensor:
        if stream is not None:
            return stream.loss(model, iteration)
        inputs, targets = order.batch(iteration)
        return task.batch_loss(model, inputs, targets)

    running_loss = RunningLoss(1, data.device)
    try:
        for iteration in range(start_iteration, end_iteration):
            lr = schedule.lr_at(iteration)
            loss = batch_loss(iteration)
            optimizer.zero_grad()
            loss.backward()
            enforcer.mask_gradients()
            optimizer.step(lr)
            enforcer.after_step()
            running_loss.add(loss.detach())
            done = iteration + 1

            if schedule.is_metrics_point(done, end_iteration):
                [mean_loss] = running_loss.take_means()
                if not record.trained(done, mean_loss, lr):
                    return record.result
                if stop_requested():
                    record.stop("cancelled")
                    return record.result
            record.snapshot(done, state)
            if schedule.is_eval_point(done, start_iteration, end_iteration) and not evaluated(done):
                return record.result
        record.finish()
        return record.result
    finally:
        if stream is not None:
            stream.close()
