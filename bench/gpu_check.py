"""GPU check: the `cuda` tests and the masked/stacked training benchmarks on the GPU (not a timed test).

    .venv/bin/python bench/gpu_check.py [--repeats 3] [--sizes 1,2,4,8,16] [--models lenet_300_100,conv2]

Prints, on the first CUDA device:
  1. `pytest -m cuda` (tests/trainer/cuda/, tests/web/test_gpu_queue.py): device placement, stacked training
     sized from free memory, fused optimizers, determinism, a cuda experiment through the gpu queue's task;
  2. masked (20% of weights left) vs dense training, one network (target: <= 1.05x);
  3. K stacked networks vs one: per-network throughput (K * solo seconds / stacked seconds), goal >= 0.8 * K
     for K up to 16.
On a machine without CUDA it says so and exits 0. Exits 1 when a cuda test fails.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import stacked_speed  # noqa: E402
import torch  # noqa: E402
import train_speed  # noqa: E402

MASKED_TARGET = 1.05
STACKED_GOAL = 0.8  # per-network throughput of K stacked >= this * K times one network's
# model -> (input shape, training examples, batch size, timed iterations): enough steps to time a GPU
SHAPES = {"lenet_300_100": ((1, 28, 28), 12000, 60, 400), "conv2": ((3, 32, 32), 6000, 60, 200)}


def run_cuda_tests() -> int:
    print("1. pytest -m cuda", flush=True)
    completed = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
                                "tests/trainer/cuda", "tests/web/test_gpu_queue.py"], cwd=REPO)
    return completed.returncode


def masked_vs_dense(models: list[str], repeats: int, device: torch.device) -> None:
    print(f"\n2. masked (20% of weights left) vs dense, one network (target <= {MASKED_TARGET}x)")
    print(f"{'model':<15} {'optimizer':<9} {'dense s':>8} {'masked s':>9} {'masked/dense':>13}")
    for model_name in models:
        input_shape, train_size, batch_size, iterations = SHAPES[model_name]
        data = train_speed.random_data(input_shape, train_size, batch_size, device)
        train_speed.training_seconds(model_name, data, 5, 1.0, "sgd")  # warm-up: kernel selection, allocations
        for optimizer in ("sgd", "adam"):
            dense, masked = train_speed.median_of(
                repeats,
                functools.partial(train_speed.training_seconds, model_name, data, iterations, 1.0, optimizer),
                functools.partial(train_speed.training_seconds, model_name, data, iterations, 0.2, optimizer))
            print(f"{model_name:<15} {optimizer:<9} {dense:8.3f} {masked:9.3f} {masked / dense:12.3f}x", flush=True)


def stacked_vs_solo(models: list[str], sizes: list[int], repeats: int, device: torch.device) -> list[str]:
    """Prints the table; returns the (model, K) rows that miss the goal."""
    print(f"\n3. K stacked vs one network: per-network throughput (goal >= {STACKED_GOAL} * K)")
    print(f"{'model':<15} {'K':>3} {'solo ms/step':>13} {'stacked ms/step':>16} {'throughput':>11} {'goal':>7}")
    misses = []
    for model_name in models:
        input_shape, train_size, batch_size, iterations = SHAPES[model_name]
        data = stacked_speed.random_data(input_shape, train_size, batch_size, device)
        stacked_speed.solo_seconds(model_name, data, 2)  # warm-up
        solo, stacked = [], {size: [] for size in sizes}
        for _ in range(repeats):
            solo.append(stacked_speed.solo_seconds(model_name, data, iterations))
            for size in sizes:
                stacked[size].append(stacked_speed.stacked_seconds(model_name, data, iterations, size))
        solo_median = statistics.median(solo)
        for size in sizes:
            stacked_median = statistics.median(stacked[size])
            throughput = size * solo_median / stacked_median
            met = throughput >= STACKED_GOAL * size
            if not met:
                misses.append(f"{model_name} K={size}")
            print(f"{model_name:<15} {size:>3} {1000 * solo_median / iterations:>13.2f} "
                  f"{1000 * stacked_median / iterations:>16.2f} {throughput:>10.2f}x "
                  f"{'met' if met else 'missed':>7}", flush=True)
    return misses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="1,2,4,8,16", help="stack sizes K")
    parser.add_argument("--models", default="lenet_300_100,conv2", help=f"of {', '.join(SHAPES)}")
    args = parser.parse_args()
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be whole numbers separated by commas, not {args.sizes!r}")
    models = args.models.split(",")
    unknown = [name for name in models if name not in SHAPES]
    if unknown or args.repeats < 1 or min(sizes) < 1:
        parser.error(f"--models must be of {', '.join(SHAPES)}; --repeats and --sizes at least 1")
    if not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        print(f"CUDA is not available on this machine (torch {torch.__version__}, {build}, finds no GPU): "
              "the cuda tests are skipped and there is nothing to benchmark.")
        return 0
    device = torch.device("cuda")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(device)}; medians of {args.repeats} repeats\n")
    tests_failed = run_cuda_tests() != 0
    masked_vs_dense(models, args.repeats, device)
    misses = stacked_vs_solo(models, sizes, args.repeats, device)
    print(f"\ncuda tests: {'FAILED' if tests_failed else 'passed'}; stacking goal "
          f"{'missed for ' + ', '.join(misses) if misses else 'met for every K'}")
    return 1 if tests_failed else 0


if __name__ == "__main__":
    sys.exit(main())
