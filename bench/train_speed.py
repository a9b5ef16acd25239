"""Training-speed benchmarks of the trainer's real loop (not timed tests).

Prints, measured in one run on this machine:
  1. masked vs dense training: the same model trained through train_segment with a
     dense mask and with 80% of its weights pruned (target: <= 1.05x), and the masking's own work
     per step (the gradient multiply of MaskEnforcer) timed alone, as a share of a dense step: at
     conv2's 150 ms steps the whole-loop ratio swings by +-10% between repeats, this share does not;
  2. one epoch of lenet_300_100 on Fashion-MNIST-sized data vs the bare matrix
     multiplies of its forward and backward shapes (target: <= 1.3x).

    .venv/bin/python bench/train_speed.py [--repeats 5] [--models lenet_300_100,conv2] [--device cpu]

--device moves part 1 to another device (bench/gpu_check.py runs it on CUDA); part 2 stays on the CPU.

Each ratio is given of the medians of --repeats interleaved measurements (a passing background load hits
both sides alike) and of the fastest of each side (load only slows). Part 2 also times the step written
out by hand, without autograd: the floor any training loop in eager PyTorch has on this machine.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import machine  # noqa: E402
import torch  # noqa: E402

from trainer import datasets, events, models  # noqa: E402
from trainer.pruning.masks import MaskEnforcer, dense_mask  # noqa: E402
from trainer.pruning.rules import magnitude_scores, prune_by_scores  # noqa: E402
from trainer.spec import ExperimentSpec  # noqa: E402
from trainer.training.loop import PreparedData, resolve_device, train_segment  # noqa: E402


def random_data(input_shape, train_size: int, batch_size: int, device: torch.device | str = "cpu") -> PreparedData:
    """Data of a real dataset's shape; the numbers do not matter for speed."""
    g = torch.Generator().manual_seed(0)
    info = datasets.DatasetInfo(name="bench", title="bench", input_shape=tuple(input_shape), num_classes=10,
                                train_size=train_size, test_size=0, augment=False, description="random")
    x = torch.randn(train_size, *input_shape, generator=g)
    y = torch.randint(0, 10, (train_size,), generator=g)
    # Small held-out sets: their evals happen outside the timed span anyway.
    held_x, held_y = x[:100], y[:100]
    return PreparedData(info, x, y, held_x, held_y, held_x, held_y, batch_size).to(device)


def training_seconds(model_name: str, data: PreparedData, iterations: int, remaining: float, optimizer: str) -> float:
    """Seconds the real training loop spends on `iterations` steps (eval excluded)."""
    spec = ExperimentSpec.from_dict({"model": model_name, "dataset": "synthetic",
                                     "training": {"optimizer": optimizer, "lr": 0.001, "batch_size": data.batch_size,
                                                  "training_steps": f"{iterations}it",
                                                  "eval_interval": f"{iterations}it", "metrics_interval": iterations}})
    model = models.build_model(model_name, data.info.input_shape, 10, init_seed=0).to(data.device)
    names = models.prunable_parameter_names(model_name, data.info.input_shape, 10)
    mask = dense_mask(model, names)
    if remaining < 1:
        parameters = dict(model.named_parameters())
        mask = prune_by_scores(mask, magnitude_scores({n: parameters[n] for n in names}), 1 - remaining, "layerwise")
    marks = {}

    def clock(event):
        # The first eval (at the start) precedes the first step; the one metrics event follows the last.
        if event["type"] == events.EVAL and "start" not in marks:
            marks["start"] = time.perf_counter()
        elif event["type"] == events.METRICS:
            marks["end"] = time.perf_counter()

    train_segment(model, mask, data, spec, 0, iterations, round_index=0, callback=clock)
    return marks["end"] - marks["start"]


def mask_work_seconds(model_name: str, input_shape, device: torch.device | str, calls: int = 200) -> float:
    """Median seconds of one MaskEnforcer.mask_gradients() (what a masked step does beyond a dense one) with
    80% of the weights pruned; the gradients are random tensors of the parameters' shapes."""
    model = models.build_model(model_name, input_shape, 10, init_seed=0).to(device)
    names = models.prunable_parameter_names(model_name, input_shape, 10)
    parameters = dict(model.named_parameters())
    mask = prune_by_scores(dense_mask(model, names), magnitude_scores({n: parameters[n] for n in names}), 0.8,
                           "layerwise")
    enforcer = MaskEnforcer(model, mask)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    seconds = []
    for _ in range(calls):
        began = time.perf_counter()
        enforcer.mask_gradients()
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def bare_matmul_seconds(batch_size: int, layer_sizes: list[int], iterations: int) -> float:
    """The matrix multiplies one MLP step needs: forward, input grads (not for layer 1), weight grads."""
    g = torch.Generator().manual_seed(0)
    activations = [torch.randn(batch_size, n, generator=g) for n in layer_sizes]
    weights = [torch.randn(n_out, n_in, generator=g) for n_in, n_out in zip(layer_sizes, layer_sizes[1:])]
    began = time.perf_counter()
    for _ in range(iterations):
        for layer, weight in enumerate(weights):
            torch.mm(activations[layer], weight.t())                      # forward
            torch.mm(activations[layer + 1].t(), activations[layer])      # weight gradient
            if layer > 0:
                torch.mm(activations[layer + 1], weight)                  # input gradient
    return time.perf_counter() - began


def interleaved(repeats: int, *measure) -> list[list[float]]:
    """Each of `measure`'s seconds, `repeats` times, taking turns; every other round in reverse order, so that
    neither side always runs first (after the other's allocations and cache state)."""
    results = [[] for _ in measure]
    for repeat in range(repeats):
        turns = list(enumerate(measure))
        for index, fn in (turns if repeat % 2 == 0 else reversed(turns)):
            results[index].append(fn())
    return results


def median_of(repeats: int, *measure):
    return [statistics.median(r) for r in interleaved(repeats, *measure)]


def ratios(top: list[float], bottom: list[float]) -> str:
    """top/bottom of the medians and of the fastest runs: this machine's load comes and goes in phases (a
    whole repeat can run at half speed), which the medians of few repeats can catch on one side only;
    load only ever slows, so the fastest runs are the machine's own speed."""
    return (f"{statistics.median(top) / statistics.median(bottom):.3f}x of medians, "
            f"{min(top) / min(bottom):.3f}x of the fastest")


def hand_written_step_seconds(data: PreparedData, layer_sizes: list[int], iterations: int) -> float:
    """The floor of an eager PyTorch step on this machine: the MLP's forward, cross-entropy and backward written
    out as the tensor ops they are (no autograd, no modules, no loop bookkeeping), the batch gathered, and the
    SGD update through the fused kernel. Its ratio to the bare matmuls bounds what any loop can reach here."""
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(n_out, n_in, generator=g) * 0.05 for n_in, n_out in zip(layer_sizes, layer_sizes[1:])]
    biases = [torch.zeros(n_out) for n_out in layer_sizes[1:]]
    batch, last = data.batch_size, len(weights) - 1
    order = torch.randperm(len(data.train_y), generator=g)
    began = time.perf_counter()
    for iteration in range(iterations):
        offset = iteration % data.iterations_per_epoch
        rows = order[offset * batch:(offset + 1) * batch]
        h, targets = data.inputs("train", rows).flatten(1), data.train_y.index_select(0, rows)
        activations = [h]
        for layer, (weight, bias) in enumerate(zip(weights, biases)):
            h = torch.addmm(bias, h, weight.t())
            activations.append(h.relu_() if layer < last else h)
        log_probabilities = torch.log_softmax(h, 1)
        torch.nn.functional.nll_loss(log_probabilities, targets)
        grad = log_probabilities.exp_()
        grad[torch.arange(batch), targets] -= 1
        grad.div_(batch)
        grads = [None] * len(weights)
        for layer in range(last, -1, -1):
            grads[layer] = (grad.t().mm(activations[layer]), grad.sum(0))
            if layer > 0:
                grad = grad.mm(weights[layer]).mul_(activations[layer] > 0)
        torch._fused_sgd_(weights + biases, [w for w, _ in grads] + [b for _, b in grads], [], weight_decay=0.0,
                          momentum=0.0, lr=0.001, dampening=0.0, nesterov=False, maximize=False, is_first_step=False)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="lenet_300_100,conv2")
    parser.add_argument("--device", default="cpu", help="device of part 1 ('cpu', 'cuda', 'auto')")
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except (datasets.DatasetError, RuntimeError) as error:
        parser.error(str(error))
    torch.set_num_threads(torch.get_num_threads())
    print(f"{machine.describe(device)} (part 2: cpu)")

    print("\n1. masked (20% of weights left) vs dense, same loop, same steps")
    print(f"{'model':<15} {'optimizer':<9} {'dense s':>8} {'masked s':>9} {'masked/dense':>13}")
    shapes = {"lenet_300_100": ((1, 28, 28), 55000, 60, 400), "conv2": ((3, 32, 32), 5000, 60, 20)}
    for model_name in args.models.split(","):
        input_shape, train_size, batch_size, iterations = shapes[model_name]
        data = random_data(input_shape, train_size, batch_size, device)
        dense_steps = []
        for optimizer in ("sgd", "adam"):
            dense, masked = interleaved(
                args.repeats,
                functools.partial(training_seconds, model_name, data, iterations, 1.0, optimizer),
                functools.partial(training_seconds, model_name, data, iterations, 0.2, optimizer))
            print(f"{model_name:<15} {optimizer:<9} {statistics.median(dense):8.3f} {statistics.median(masked):9.3f} "
                  f"{ratios(masked, dense)} (target <= 1.05x)", flush=True)
            dense_steps.append(statistics.median(dense) / iterations)
        dense_step = min(dense_steps)  # the faster optimizer's step: the larger share
        mask_work = mask_work_seconds(model_name, input_shape, device)
        print(f"{model_name:<15} the mask's own work per step: {1000 * mask_work:.3f} ms of a "
              f"{1000 * dense_step:.2f} ms dense step ({100 * mask_work / dense_step:.1f}%)", flush=True)

    print("\n2. one epoch of lenet_300_100 (55000 examples, batch 60, SGD) vs its bare matmuls; 3. the floor: the same")
    print("   step written out without autograd or modules (what eager PyTorch can reach on this machine)")
    data = random_data((1, 28, 28), 55000, 60)
    epoch = data.iterations_per_epoch
    layer_sizes = [784, 300, 100, 10]
    loop, floor, matmuls = interleaved(
        max(5, args.repeats),
        lambda: training_seconds("lenet_300_100", data, epoch, 1.0, "sgd"),
        lambda: hand_written_step_seconds(data, layer_sizes, epoch),
        lambda: bare_matmul_seconds(60, layer_sizes, epoch))
    per_step = lambda seconds: f"{1000 * min(seconds) / epoch:.3f}"  # noqa: E731
    print(f"epoch ({epoch} steps) / bare matmuls: {ratios(loop, matmuls)} (target <= 1.3x)")
    print(f"hand-written step / bare matmuls: {ratios(floor, matmuls)}")
    print(f"fastest ms/step: loop {per_step(loop)}, hand-written {per_step(floor)}, bare matmuls {per_step(matmuls)}; "
          f"load average {machine.load():.1f}")

if __name__ == "__main__":
    main()
