"""What a network learns, as the engine sees it: a task owns its data, its training loss, its metric
(name, unit, which direction is better) and its evaluation. The training loops, the records, the
verdict and the displays ask the task instead of assuming image classification.

Every task reports two numbers per split at each eval point: a loss (lower is better; the
early-stop point is the eval point with the lowest validation loss, for every task) and the
task's metric (accuracy, perplexity, mean return), stored in records as `val_<key>` / `test_<key>`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from trainer import datasets
from trainer.steps import full_batches


@dataclass(frozen=True)
class Metric:
    key: str  # records hold val_<key> and test_<key>
    label: str  # "accuracy", "perplexity", "mean return"
    higher_is_better: bool
    percent: bool  # shown as a percentage (a fraction in [0, 1] stored)

    def better(self, value: float, other: float) -> bool:
        """Whether `value` is strictly better than `other`."""
        return value > other if self.higher_is_better else value < other

    def best(self, values):
        """The best of `values` (ignoring None and NaN); None when there is none."""
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if not finite:
            return None
        return max(finite) if self.higher_is_better else min(finite)

    def text(self, value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "-"
        return f"{100 * value:.2f}%" if self.percent else f"{value:.2f}"

    def to_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "higher_is_better": self.higher_is_better,
                "percent": self.percent}


ACCURACY = Metric("accuracy", "accuracy", higher_is_better=True, percent=True)


class BatchStream(Protocol):
    """The training loss of each iteration of a segment, for tasks whose data is not a fixed tensor set
    (reinforcement learning: rollouts of the current policy)."""

    def loss(self, model: torch.nn.Module, iteration: int) -> torch.Tensor: ...

    def close(self) -> None: ...


@dataclass
class PreparedData:
    """A run's data on its device: each split's inputs (datasets.Inputs: images as uint8 pixels normalized per
    batch, or token windows; a tensor given is taken as inputs) and targets, the batch size, and the task that
    reads them (None = image classification). `inputs(split, rows)` is how inputs are read; `train_x`, `val_x`
    and `test_x` are whole splits (new float tensors for images: for batches, read rows)."""
    info: datasets.DatasetInfo
    train_inputs: datasets.Inputs
    train_y: torch.Tensor
    val_inputs: datasets.Inputs
    val_y: torch.Tensor
    test_inputs: datasets.Inputs
    test_y: torch.Tensor
    batch_size: int
    task: Task | None = None

    def __post_init__(self):
        self.train_inputs = datasets.as_inputs(self.train_inputs)
        self.val_inputs = datasets.as_inputs(self.val_inputs)
        self.test_inputs = datasets.as_inputs(self.test_inputs)

    def inputs(self, split: str, rows: torch.Tensor | slice | None = None) -> torch.Tensor:
        """The network inputs of `split` ('train', 'val' or 'test'): the rows `rows` (all when None)."""
        return {"train": self.train_inputs, "val": self.val_inputs, "test": self.test_inputs}[split].rows(rows)

    @property
    def train_x(self) -> torch.Tensor:
        return self.inputs("train")

    @property
    def val_x(self) -> torch.Tensor:
        return self.inputs("val")

    @property
    def test_x(self) -> torch.Tensor:
        return self.inputs("test")

    @property
    def device(self) -> torch.device:
        return self.train_inputs.device

    def to(self, device: torch.device | str) -> PreparedData:
        """The same data on `device` (images stay uint8 there)."""
        return replace(self, train_inputs=self.train_inputs.to(device), train_y=self.train_y.to(device),
                       val_inputs=self.val_inputs.to(device), val_y=self.val_y.to(device),
                       test_inputs=self.test_inputs.to(device), test_y=self.test_y.to(device))

    @property
    def iterations_per_epoch(self) -> int:
        if self.task is not None:
            return self.task.iterations_per_epoch(self)
        return full_batches(len(self.train_y), self.batch_size)


class Task:
    """A learning problem: the base class holds what every task shares."""
    name = ""
    title = ""
    metric: Metric = ACCURACY
    stackable = False  # whether K networks may train stacked (trainer.training.stacked)
    traces_units = False  # whether dead units are traced through the layers (trainer.pruning.structured)

    def prepare(self, spec, device: torch.device, data_dir=None):
        """The run's PreparedData (trainer.training.loop) on `device`."""
        raise NotImplementedError

    def iterations_per_epoch(self, data) -> int:
        """Full batches of the training tensors (tasks without a fixed training set override it)."""
        return full_batches(len(data.train_y), data.batch_size)

    def batch_loss(self, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean training loss of one batch of the run's tensors."""
        raise NotImplementedError

    def stream(self, data, data_seed: int, start_iteration: int) -> BatchStream | None:
        """A stream of training losses for a segment from `start_iteration`; None = batches of the data's tensors."""
        return None

    def evaluate(self, model: torch.nn.Module, data, split: str) -> tuple[float, float]:
        """(loss, metric) of the model on the data's 'val' or 'test' split; NaNs for an empty split."""
        raise NotImplementedError

    def has_validation(self, data) -> bool:
        return len(data.val_y) > 0

    def validation_size(self, data) -> int:
        """What results.json reports as the validation split's size (examples, sequences or episodes)."""
        return len(data.val_y)

    def describe(self) -> dict:
        return {"name": self.name, "metric": self.metric.to_dict()}


Evaluator = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], tuple[float, float]]
