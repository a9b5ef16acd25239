"""K networks trained stacked equal the same K networks trained one by one with train_segment.

The equivalence runs are in float64: float32 training of the conv nets is itself so sensitive
that a 1e-7 change of the initial weights moves some weights by 10% within 5 steps (measured),
so only float64 can separate "same computation, other summation order" from a real bug with a
tight tolerance. LeNet, which is well conditioned, is also checked in float32.
"""
import copy
import math

import pytest
import torch

from trainer import datasets, events, models
from trainer.pruning.masks import dense_mask
from trainer.seeds import generator
from trainer.spec import ExperimentSpec
from trainer.training.loop import PreparedData, train_segment
from trainer.training.stacked import (
    StackedOptimizer,
    chunks,
    estimate_training_bytes,
    per_network_cross_entropy,
    set_conv_mode,
    stack_masks,
    stack_states,
    unstack_mask,
    unstack_states,
)
from trainer.training.stacked_loop import train_segments, train_segments_stacked

MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)
DATA_SEEDS = [11, 12, 13]
LR_MULTIPLIERS = [1.0, 0.5, 2.0]
LABELS = ["ticket/r0", "random_reinit/r0", "random_prune/r0"]


def tiny_data(shape, batch_size, dtype=torch.float64, augment=False, train_size=48, eval_size=6) -> PreparedData:
    g = torch.Generator().manual_seed(0)
    info = datasets.DatasetInfo("tiny", "tiny", shape, 10, train_size, eval_size, augment, "random tensors")
    x = torch.randn(train_size + 2 * eval_size, *shape, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (train_size + 2 * eval_size,), generator=g)
    val, test = slice(train_size, train_size + eval_size), slice(train_size + eval_size, None)
    return PreparedData(info, x[:train_size], y[:train_size], x[val], y[val], x[test], y[test], batch_size)


def make_spec(model_name, steps, batch_size, optimizer="sgd", lr=None) -> ExperimentSpec:
    training = {"optimizer": optimizer, "batch_size": batch_size, "training_steps": f"{steps}it",
                "eval_interval": f"{max(1, steps // 2)}it", "metrics_interval": 4, "weight_decay": 1e-3}
    if optimizer == "sgd":
        training.update(lr=lr or 0.02, momentum=0.9)
    else:
        training.update(lr=lr or 1e-3)
    return ExperimentSpec.from_dict({"model": model_name, "dataset": "synthetic", "training": training})


def networks_and_masks(model_name, shape, dtype, count=3):
    names = models.prunable_parameter_names(model_name, shape, 10)
    built = [models.build_model(model_name, shape, 10, init_seed=seed).to(dtype) for seed in range(count)]
    masks = [dense_mask(built[0], names)]  # network 0 dense, the others pruned differently
    for index in range(1, count):
        g = generator("test mask", index)
        masks.append({name: torch.rand(keep.shape, generator=g) >= 0.3 * index for name, keep in masks[0].items()})
    return built, masks


def solo_runs(models_, masks, data, spec, steps, lr_multipliers=LR_MULTIPLIERS, data_seeds=DATA_SEEDS):
    runs = []
    for model, mask, seed, multiplier in zip(models_, masks, data_seeds, lr_multipliers):
        solo_spec = copy.deepcopy(spec)
        solo_spec.data_seed = seed
        solo_spec.training.lr = spec.training.lr * multiplier
        model = copy.deepcopy(model)
        result = train_segment(model, mask, data, solo_spec, 0, steps, round_index=1)
        runs.append((result, model.state_dict()))
    return runs


def assert_same_training(stacked_results, stacked_states, solo, masks, tolerance):
    for index, (result, state) in enumerate(zip(stacked_results, stacked_states)):
        solo_result, solo_state = solo[index]
        assert result.status == solo_result.status == "finished"
        assert state.keys() == solo_state.keys()
        scale = max(value.abs().max().item() for value in solo_state.values() if value.is_floating_point())
        for name, value in solo_state.items():
            if value.is_floating_point():
                error = (state[name] - value).abs().max().item()
                assert error <= tolerance * scale, f"network {index} {name}: {error:.3g} (scale {scale:.3g})"
            else:
                assert torch.equal(state[name], value), name
        for name, keep in masks[index].items():
            assert torch.count_nonzero(state[name][~keep]) == 0, f"pruned weights of {name} revived"
        assert result.curve["iteration"] == solo_result.curve["iteration"]
        assert result.train_loss["iteration"] == solo_result.train_loss["iteration"]
        for key in ("val_loss", "test_loss", "val_accuracy"):
            assert result.curve[key] == pytest.approx(solo_result.curve[key], rel=1e-5, abs=1e-6), key
        assert result.train_loss["loss"] == pytest.approx(solo_result.train_loss["loss"], rel=1e-5)


# model -> (steps, batch size, optimizer): float64 convolutions are slow on a CPU, so the conv
# nets see small batches and the largest ones fewer steps (the whole file stays under a minute)
CASES = {
    "lenet_300_100": (30, 8, "sgd"),
    "conv2": (12, 2, "adam"),
    "conv4": (16, 2, "sgd"),
    "conv6": (12, 2, "adam"),
    "vgg16": (4, 2, "sgd"),
    "resnet20": (12, 4, "adam"),
}


@pytest.mark.parametrize("model_name", CASES)
def test_stacked_training_equals_training_each_network_alone(model_name):
    steps, batch_size, optimizer = CASES[model_name]
    data = tiny_data(MNIST_SHAPE, batch_size)
    spec = make_spec(model_name, steps, batch_size, optimizer)
    built, masks = networks_and_masks(model_name, MNIST_SHAPE, torch.float64)
    seen = []
    results, states = train_segments_stacked(
        [copy.deepcopy(m) for m in built], masks, data, spec, 0, steps, round_index=1, networks=LABELS,
        data_seeds=DATA_SEEDS, lr_multipliers=LR_MULTIPLIERS, callback=seen.append)
    assert_same_training(results, states, solo_runs(built, masks, data, spec, steps), masks, tolerance=1e-9)
    # one identity per network in the event stream, with its own learning rate
    metrics = [event for event in seen if event["type"] == events.METRICS and event["iteration"] == 4]
    assert [event["network"] for event in metrics] == LABELS
    assert [event["lr"] for event in metrics] == pytest.approx([spec.training.lr * m for m in LR_MULTIPLIERS])


def test_cifar_shaped_training_with_augmentation_equals_training_alone():
    steps, batch_size = 8, 2
    data = tiny_data(CIFAR_SHAPE, batch_size, augment=True)
    spec = make_spec("conv2", steps, batch_size, "sgd")
    built, masks = networks_and_masks("conv2", CIFAR_SHAPE, torch.float64)
    results, states = train_segments_stacked([copy.deepcopy(m) for m in built], masks, data, spec, 0, steps,
                                             round_index=1, networks=LABELS, data_seeds=DATA_SEEDS,
                                             lr_multipliers=LR_MULTIPLIERS)
    assert_same_training(results, states, solo_runs(built, masks, data, spec, steps), masks, tolerance=1e-9)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lenet_in_float32_matches_within_float32_reordering(optimizer):
    steps, batch_size = 30, 16
    data = tiny_data(MNIST_SHAPE, batch_size, dtype=torch.float32)
    spec = make_spec("lenet_300_100", steps, batch_size, optimizer)
    built, masks = networks_and_masks("lenet_300_100", MNIST_SHAPE, torch.float32)
    results, states = train_segments_stacked([copy.deepcopy(m) for m in built], masks, data, spec, 0, steps,
                                             round_index=1, networks=LABELS, data_seeds=DATA_SEEDS,
                                             lr_multipliers=LR_MULTIPLIERS)
    assert_same_training(results, states, solo_runs(built, masks, data, spec, steps), masks, tolerance=1e-5)


@pytest.mark.parametrize("model_name", [name for name, entry in models.MODELS.items()
                                        if entry.task == "classification"])  # the stackable models
def test_unstack_of_stack_is_exact_and_masks_round_trip(model_name):
    built, masks = networks_and_masks(model_name, MNIST_SHAPE, torch.float32)
    stacked = stack_states(built)
    for model, state in zip(built, unstack_states(stacked)):
        original = model.state_dict()
        assert state.keys() == original.keys()
        for name, value in original.items():
            assert state[name].dtype == value.dtype and torch.equal(state[name], value), name
    stacked_mask = stack_masks(stacked, masks)
    for index, mask in enumerate(masks):
        back = unstack_mask(stacked_mask, stacked, index)
        assert all(torch.equal(back[name], mask[name]) for name in mask)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_stacked_optimizer_equals_torch_optim_per_network_with_its_own_lr(optimizer):
    g = torch.Generator().manual_seed(3)
    built = [torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)).double()
             for _ in range(3)]
    for model in built:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    stacked = stack_states(built)
    rates = torch.tensor([0.1, 0.03, 0.0], dtype=torch.float64)
    ours = StackedOptimizer(stacked, optimizer, momentum=0.9, weight_decay=0.01)
    theirs = [torch.optim.SGD(m.parameters(), lr=float(lr), momentum=0.9, weight_decay=0.01) if optimizer == "sgd"
              else torch.optim.Adam(m.parameters(), lr=float(lr), weight_decay=0.01) for m, lr in zip(built, rates)]
    for _ in range(5):
        grads = {name: torch.randn(p.shape, generator=g, dtype=torch.float64) for name, p in stacked.named_parameters()}
        ours.zero_grad()
        for name, p in stacked.named_parameters():
            p.grad = grads[name].clone()
        ours.step(rates)
        for index, (model, torch_optimizer) in enumerate(zip(built, theirs)):
            for name, p in model.named_parameters():
                p.grad = grads[name].view(3, *p.shape)[index].clone()
            torch_optimizer.step()
    for model, state in zip(built, unstack_states(stacked)):
        for name, value in model.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=1e-12, atol=1e-12)


def test_a_diverging_network_does_not_stop_or_poison_the_others():
    steps, batch_size = 24, 8
    data = tiny_data(MNIST_SHAPE, batch_size, dtype=torch.float32)
    spec = make_spec("lenet_300_100", steps, batch_size, "sgd", lr=0.05)
    built, masks = networks_and_masks("lenet_300_100", MNIST_SHAPE, torch.float32)
    multipliers = [1.0, 1e8, 0.5]  # network 1 blows up within the first metrics interval
    results, states = train_segments_stacked([copy.deepcopy(m) for m in built], masks, data, spec, 0, steps,
                                             round_index=1, networks=LABELS, data_seeds=DATA_SEEDS,
                                             lr_multipliers=multipliers)
    solo = solo_runs(built, masks, data, spec, steps, lr_multipliers=multipliers)
    assert solo[1][0].status == results[1].status == "diverged"
    assert results[1].message == solo[1][0].message
    assert results[1].curve["iteration"] == solo[1][0].curve["iteration"]
    keep = [0, 2]
    assert_same_training([results[i] for i in keep], [states[i] for i in keep], [solo[i] for i in keep],
                         [masks[i] for i in keep], tolerance=1e-5)


def test_cancel_stops_every_network_at_the_metrics_point():
    data = tiny_data(MNIST_SHAPE, 8, dtype=torch.float32)
    spec = make_spec("lenet_300_100", 20, 8)
    built, masks = networks_and_masks("lenet_300_100", MNIST_SHAPE, torch.float32)
    results, _ = train_segments_stacked(built, masks, data, spec, 0, 20, round_index=1, networks=LABELS,
                                        stop_requested=lambda: True)
    assert [r.status for r in results] == ["cancelled"] * 3
    assert all(r.train_loss["iteration"] == [4] for r in results)


def test_chunks_of_networks_give_the_same_result_as_one_stack():
    steps = 12
    data = tiny_data(MNIST_SHAPE, 8)
    spec = make_spec("lenet_300_100", steps, 8)
    built, masks = networks_and_masks("lenet_300_100", MNIST_SHAPE, torch.float64)
    one, states_one = train_segments_stacked([copy.deepcopy(m) for m in built], masks, data, spec, 0, steps,
                                             round_index=1, networks=LABELS, data_seeds=DATA_SEEDS)
    parts, states_parts = train_segments([copy.deepcopy(m) for m in built], masks, data, spec, 0, steps,
                                         round_index=1, networks=LABELS, data_seeds=DATA_SEEDS, stack_size=2)
    for a, b in zip(states_one, states_parts):
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-12, atol=1e-12)
    assert [r.status for r in parts] == ["finished"] * 3
    assert [len(part) for part in chunks(7, 4)] == [4, 3] and [len(part) for part in chunks(8, 8)] == [8]


def test_the_memory_estimate_grows_with_the_batch():
    small = estimate_training_bytes("conv2", CIFAR_SHAPE, 16)
    large = estimate_training_bytes("conv2", CIFAR_SHAPE, 64)
    assert 0 < small < large
    assert math.isfinite(estimate_training_bytes("resnet20", CIFAR_SHAPE, 128))


def test_grouped_and_looped_convolutions_compute_the_same_step():
    """CUDA runs stacked convs as one grouped conv, the CPU as one conv per network: same numbers."""
    built, _ = networks_and_masks("resnet20", MNIST_SHAPE, torch.float64)
    x = torch.randn(4, 3, *MNIST_SHAPE[1:], dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    targets = torch.randint(0, 10, (4, 3), generator=torch.Generator().manual_seed(6))
    outputs = {}
    for mode in ("grouped", "loop"):
        stacked = stack_states(built)
        set_conv_mode(stacked, mode)
        loss = per_network_cross_entropy(stacked(x), targets).sum()
        loss.backward()
        outputs[mode] = [p.grad for p in stacked.parameters()]
    for grouped, looped in zip(outputs["grouped"], outputs["loop"]):
        torch.testing.assert_close(grouped, looped, rtol=1e-10, atol=1e-12)
