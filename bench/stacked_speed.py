"""Per-network training throughput: K networks stacked in one step vs one at a time (not a timed test).

Both sides run the real loops: trainer.training.stacked_loop.train_segments_stacked with K networks
and trainer.training.loop.train_segment with one. The ratio printed is

    (K * iterations / stacked seconds) / (iterations / solo seconds)

i.e. how many more network-steps per second stacking gives (K=1 should be ~1.0x; whether K>1 pays
depends on the torch build and the machine). Evaluation is outside the timed span. Then, per model,
the stack size trainer.training.stack_size chooses on this machine, timed afresh (a private cache),
with what it measured and what the measurement cost.

    .venv/bin/python bench/stacked_speed.py [--repeats 5] [--models lenet_300_100,conv2] [--sizes 1,4,8]

Every repeat measures solo and each K in turn and the medians are reported, so background load
hits all columns alike.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import machine  # noqa: E402
import torch  # noqa: E402

from trainer import datasets, events, models  # noqa: E402
from trainer.pruning.masks import dense_mask  # noqa: E402
from trainer.spec import ExperimentSpec  # noqa: E402
from trainer.training.loop import PreparedData, resolve_device, train_segment  # noqa: E402
from trainer.training.stack_size import stack_size_decision  # noqa: E402
from trainer.training.stacked_loop import train_segments_stacked  # noqa: E402

# model -> (input shape, training examples, batch size, timed iterations)
SHAPES = {"lenet_300_100": ((1, 28, 28), 12000, 60, 200), "conv2": ((3, 32, 32), 3000, 60, 8)}


def random_data(input_shape, train_size: int, batch_size: int, device: torch.device) -> PreparedData:
    g = torch.Generator().manual_seed(0)
    info = datasets.DatasetInfo(name="bench", title="bench", input_shape=tuple(input_shape), num_classes=10,
                                train_size=train_size, test_size=0, augment=False, description="random")
    x = torch.randn(train_size, *input_shape, generator=g).to(device)
    y = torch.randint(0, 10, (train_size,), generator=g).to(device)
    held_x, held_y = x[:60], y[:60]  # evals happen outside the timed span anyway
    return PreparedData(info, x, y, held_x, held_y, held_x, held_y, batch_size)


OPTIMIZER = {"name": "sgd"}  # set from --optimizer


def make_spec(model_name: str, data: PreparedData, iterations: int) -> ExperimentSpec:
    adam = OPTIMIZER["name"] == "adam"
    return ExperimentSpec.from_dict({"model": model_name, "dataset": "synthetic",
                                     "training": {"optimizer": OPTIMIZER["name"], "lr": 0.0012 if adam else 0.01,
                                                  "momentum": 0.0 if adam else 0.9,
                                                  "batch_size": data.batch_size, "training_steps": f"{iterations}it",
                                                  "eval_interval": f"{iterations}it", "metrics_interval": iterations}})


class Clock:
    """Start at the first eval event (the start eval precedes step 1), stop at the last metrics event."""

    def __init__(self):
        self.start = self.end = None

    def __call__(self, event: dict) -> None:
        if event["type"] == events.EVAL and self.start is None:
            self.start = time.perf_counter()
        elif event["type"] == events.METRICS:
            self.end = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.end - self.start


def networks(model_name: str, data: PreparedData, count: int):
    built = [models.build_model(model_name, data.info.input_shape, 10, init_seed=seed).to(data.device)
             for seed in range(count)]
    names = models.prunable_parameter_names(model_name, data.info.input_shape, 10)
    return built, [dense_mask(model, names) for model in built]


def solo_seconds(model_name: str, data: PreparedData, iterations: int) -> float:
    (model,), (mask,) = networks(model_name, data, 1)
    clock = Clock()
    train_segment(model, mask, data, make_spec(model_name, data, iterations), 0, iterations,
                  round_index=0, callback=clock)
    return clock.seconds


def stacked_seconds(model_name: str, data: PreparedData, iterations: int, count: int) -> float:
    built, masks = networks(model_name, data, count)
    clock = Clock()
    train_segments_stacked(built, masks, data, make_spec(model_name, data, iterations), 0, iterations,
                           round_index=0, networks=[f"r{index}" for index in range(count)],
                           data_seeds=list(range(count)), callback=clock)
    return clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="lenet_300_100,conv2")
    parser.add_argument("--sizes", default="1,4,8")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    args = parser.parse_args()
    OPTIMIZER["name"] = args.optimizer
    device = resolve_device(args.device)
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"{machine.describe(device)}; medians of {args.repeats} interleaved repeats; {args.optimizer}, dense masks")
    print(f"{'model':<15} {'batch':>5} {'K':>3} {'solo ms/step':>13} {'stacked ms/step':>16} "
          f"{'per-network speed-up':>21}")
    for model_name in args.models.split(","):
        input_shape, train_size, batch_size, iterations = SHAPES[model_name]
        data = random_data(input_shape, train_size, batch_size, device)
        solo_seconds(model_name, data, 2)  # warm-up: first-call allocations and kernel selection
        solo, stacked = [], {size: [] for size in sizes}
        for _ in range(args.repeats):
            solo.append(solo_seconds(model_name, data, iterations))
            for size in sizes:
                stacked[size].append(stacked_seconds(model_name, data, iterations, size))
        solo_median = statistics.median(solo)
        for size in sizes:
            stacked_median = statistics.median(stacked[size])
            speedup = size * solo_median / stacked_median
            print(f"{model_name:<15} {batch_size:>5} {size:>3} {1000 * solo_median / iterations:>13.2f} "
                  f"{1000 * stacked_median / iterations:>16.2f} {speedup:>20.2f}x", flush=True)
    print("\nthe stack size chosen by measurement (trainer.training.stack_size), timed now:")
    for model_name in args.models.split(","):
        input_shape, _, batch_size, _ = SHAPES[model_name]
        with tempfile.TemporaryDirectory() as scratch:
            decision = stack_size_decision(model_name, input_shape, batch_size, device, 10, args.optimizer,
                                           cache_file=Path(scratch) / "stack_sizes.json")
        measured = ", ".join(f"K={k} {speedup:.2f}x" for k, speedup in decision.speedups().items())
        print(f"{model_name:<15} chose K={decision.stack_size} (per-network speed-up measured: {measured}); "
              f"the measurement took {decision.measure_seconds:.2f} s; load average {machine.load():.1f}", flush=True)


if __name__ == "__main__":
    main()
