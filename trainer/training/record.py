"""What a training loop keeps of one network's segment, whether it trains alone
(trainer.training.loop) or in a stack (trainer.training.stacked_loop): its curves, its events,
its divergence and cancellation, its θk snapshot, and the SegmentResult built from them.

The early-stop point is the eval point with the lowest validation loss (Frankle & Carbin 2019
report "early-stopping iteration" by validation loss); it is read off the curve.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from trainer import events


def curve_keys(metric: str = "accuracy") -> tuple[str, ...]:
    """The columns of an eval curve for a task whose metric is `metric` (trainer.tasks.Metric.key)."""
    return ("iteration", "val_loss", f"val_{metric}", "test_loss", f"test_{metric}")


@dataclass
class SegmentResult:
    status: str  # "finished" | "diverged" | "cancelled"
    curve: dict = field(default_factory=lambda: {key: [] for key in curve_keys()})
    train_loss: dict = field(default_factory=lambda: {"iteration": [], "loss": []})
    wall_seconds: float = 0.0
    message: str = ""
    snapshot: dict | None = None  # state dict captured at `snapshot_at` (θk)

    def early_stop(self) -> dict:
        """The eval point with the lowest validation loss; {} without a validation split.

        Never selected on the test set (that would report a test accuracy chosen by test loss):
        a run without validation examples reports its end-of-training results instead (`reported`).
        """
        curve = self.curve
        finite = [(value, i) for i, value in enumerate(curve["val_loss"]) if math.isfinite(value)]
        if not finite:
            return {}
        _, best = min(finite)
        _, _, val_metric, _, test_metric = self._keys()
        return {"iteration": curve["iteration"][best], "val_loss": curve["val_loss"][best],
                val_metric: curve[val_metric][best], test_metric: curve[test_metric][best]}

    def final(self) -> dict:
        curve = self.curve
        if not curve["iteration"]:
            return {}
        return {key: curve[key][-1] for key in self._keys()}

    def _keys(self) -> tuple[str, ...]:
        return tuple(self.curve)  # curve_keys of the task's metric, in that order


def _clean(value: float) -> float | None:
    # JSON has no NaN: a missing or diverged value is stored as null.
    return value if math.isfinite(value) else None


class NetworkRecord:
    """One network of a segment: it records eval points and training losses, sends their events
    under its name, and stops (diverged or cancelled) on its own; `result` is its SegmentResult."""

    def __init__(self, network: str, round_index: int, callback: events.Callback, *, has_validation: bool,
                 snapshot_at: int | None, metric: str = "accuracy"):
        self.network = network
        self.round_index = round_index
        self.callback = callback
        self.has_validation = has_validation
        self.snapshot_at = snapshot_at
        self.result = SegmentResult(status="finished", curve={key: [] for key in curve_keys(metric)})
        self.keys = curve_keys(metric)
        self.training = True  # until it diverges or is cancelled
        self.began = time.perf_counter()

    def evaluated(self, iteration: int, val_loss: float, val_metric: float, test_loss: float,
                  test_metric: float) -> bool:
        """Add an eval point to the curve and send it; False (and diverged) when a loss is NaN/inf."""
        values = dict(zip(self.keys, (iteration, val_loss, val_metric, test_loss, test_metric)))
        for key, value in values.items():
            self.result.curve[key].append(value)
        self.callback(events.make_event(events.EVAL, self.network, round=self.round_index, iteration=iteration,
                                        **{key: _clean(value) for key, value in values.items() if key != "iteration"}))
        if math.isfinite(test_loss) and (math.isfinite(val_loss) or not self.has_validation):
            return True
        self.diverge(iteration, "the evaluation loss")
        return False

    def trained(self, iteration: int, mean_loss: float, lr: float) -> bool:
        """Add the mean training loss since the last metrics point and send it; False (and
        diverged) when it is NaN/inf."""
        if not math.isfinite(mean_loss):
            self.callback(events.make_event(events.METRICS, self.network, round=self.round_index, iteration=iteration,
                                            train_loss=None, lr=lr))
            self.diverge(iteration, "the training loss")
            return False
        self.result.train_loss["iteration"].append(iteration)
        self.result.train_loss["loss"].append(mean_loss)
        self.callback(events.make_event(events.METRICS, self.network, round=self.round_index, iteration=iteration,
                                        train_loss=mean_loss, lr=lr))
        return True

    def snapshot(self, iteration: int, state: Callable[[], dict]) -> None:
        """Keep the network's weights (`state()`) when `iteration` is the snapshot point (θk)."""
        if self.training and self.snapshot_at == iteration:
            self.result.snapshot = state()

    def diverge(self, iteration: int, what: str) -> None:
        self.stop("diverged", f"{what} became NaN/inf at iteration {iteration} of round {self.round_index}")

    def stop(self, status: str, message: str = "") -> None:
        """The network trains no further: `status` is final, the wall time counts up to now."""
        self.result.status, self.result.message = status, message
        self.result.wall_seconds = time.perf_counter() - self.began
        self.training = False

    def finish(self) -> None:
        """The segment's end: the wall time of a network still training counts up to now."""
        if self.training:
            self.result.wall_seconds = time.perf_counter() - self.began


class RunningLoss:
    """The training loss of each of `size` networks summed on the device since the last metrics
    point (one host sync per metrics point, not per step)."""

    def __init__(self, size: int, device: torch.device):
        self.total = torch.zeros(size, device=device)
        self.count = 0

    def add(self, losses: torch.Tensor) -> None:
        self.total += losses
        self.count += 1

    def take_means(self) -> list[float]:
        """Each network's mean loss since the last call; the sums start again from zero."""
        means = [value / self.count for value in self.total.tolist()]
        self.total.zero_()
        self.count = 0
        return means
