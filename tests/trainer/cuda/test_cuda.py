"""The engine on a GPU: data (uint8 images), models and masks on the device, stacked training with the stack size
taken from free memory, the optimizers' fused kernels, and runs that repeat exactly. Marked `cuda`: on a machine
without CUDA they are reported as skipped (tests/conftest.py); bench/gpu_check.py runs them on one."""
from __future__ import annotations

import copy

import pytest
import torch

from tests.trainer.conftest import assert_identical_runs, both_forms, tiny_spec
from tests.trainer.dataset_files import write_idx_dataset
from trainer import models
from trainer.imp import run_experiment
from trainer.imp.run import Run
from trainer.pruning.masks import MaskEnforcer, dense_mask
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec
from trainer.training.loop import DataOrder, FusedOptimizer, train_segment
from trainer.training.stack_size import CUDA_STACK_CAP, candidates_for
from trainer.training.stacked import (
    StackedOptimizer,
    estimate_training_bytes,
    stack_states,
    unstack_states,
)
from trainer.training.stacked_loop import train_segments

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")
MNIST_SHAPE = (1, 28, 28)
DATA_SEEDS, LR_MULTIPLIERS = [11, 12, 13], [1.0, 0.5, 2.0]


def make_spec(model_name: str, steps: int, batch_size: int, optimizer: str) -> ExperimentSpec:
    return ExperimentSpec.from_dict({"model": model_name, "dataset": "synthetic", "training": {
        "optimizer": optimizer, "lr": 0.02 if optimizer == "sgd" else 1e-3, "momentum": 0.9, "weight_decay": 1e-3,
        "batch_size": batch_size, "training_steps": f"{steps}it", "eval_interval": f"{steps // 2}it",
        "metrics_interval": 4}})


def networks_and_masks(model_name: str, shape, count: int = 3):
    """`count` float32 networks (seeds 0, 1, ...) and masks: the first dense, the others pruned differently."""
    names = models.prunable_parameter_names(model_name, shape, 10)
    built = [models.build_model(model_name, shape, 10, init_seed=seed) for seed in range(count)]
    g = torch.Generator().manual_seed(1)
    masks = [dense_mask(built[0], names)] + [{name: torch.rand(keep.shape, generator=g) >= 0.3 * index
                                              for name, keep in dense_mask(built[0], names).items()}
                                             for index in range(1, count)]
    return built, masks


@pytest.fixture
def mnist_files(tmp_path, monkeypatch):
    """A small MNIST in the data directory: image files, so the run keeps uint8 pixels on the GPU."""
    write_idx_dataset(tmp_path / "data" / "mnist", gz=True, train_count=300, test_count=40)
    monkeypatch.setenv("LOTTERYWEB_DATA_DIR", str(tmp_path / "data"))
    return tiny_spec(dataset="mnist", validation_size=50, device="cuda",
                     training={"batch_size": 25, "training_steps": "20it", "eval_interval": "10it",
                               "metrics_interval": 10})


def test_data_model_and_mask_live_on_the_gpu_and_batches_match_the_float_path(mnist_files, tmp_path):
    run = Run(mnist_files, RunDir.create(tmp_path / "runs", mnist_files))
    for inputs in (run.data.train_inputs, run.data.val_inputs, run.data.test_inputs):
        assert inputs.stored.is_cuda and inputs.stored.dtype == torch.uint8 and inputs.levels.is_cuda
    assert run.data.train_y.is_cuda and run.data.device.type == "cuda"
    model = run.fresh_model(0)
    assert all(parameter.is_cuda for parameter in model.parameters())
    mask = {name: keep.clone() for name, keep in dense_mask(model, run.prunable).items()}
    mask[run.prunable[0]].view(-1)[::2] = False
    enforcer = MaskEnforcer(model, mask)
    assert all(multiplier.is_cuda for multiplier in enforcer.multipliers)
    enforcer.mask_weights()
    assert torch.count_nonzero(model.get_parameter(run.prunable[0]).view(-1)[::2]) == 0

    for augment in (False, True):
        pixels, floats = both_forms(3, size=32, augment=augment)
        new, old = DataOrder(pixels.to(CUDA), 7), DataOrder(floats.to(CUDA), 7)
        for iteration in range(6):
            (x, y), (x_old, y_old) = new.batch(iteration), old.batch(iteration)
            assert x.is_cuda and x.dtype == torch.float32
            assert torch.equal(x, x_old) and torch.equal(y, y_old)


def test_stacked_training_on_the_gpu_sizes_its_stack_from_free_memory_and_matches_solo_training():
    size = max(candidates_for("lenet_300_100", MNIST_SHAPE, 60, torch.device(CUDA), 10, "sgd"))  # the largest timed
    free_bytes, _ = torch.cuda.mem_get_info(CUDA)
    assert 1 < size <= CUDA_STACK_CAP  # a LeNet needs a few MB: any GPU holds several
    assert size * estimate_training_bytes("lenet_300_100", MNIST_SHAPE, 60) <= free_bytes

    steps, batch_size = 20, 8
    for model_name, shape in (("lenet_300_100", MNIST_SHAPE), ("conv2", (3, 32, 32))):
        pixels, _ = both_forms(shape[0], size=shape[1], augment=shape[0] == 3, train=48, batch_size=batch_size)
        data = pixels.to(CUDA)
        spec = make_spec(model_name, steps, batch_size, "sgd")
        built, masks = networks_and_masks(model_name, shape)
        built = [model.to(CUDA) for model in built]
        results, states = train_segments([copy.deepcopy(m) for m in built], masks, data, spec, 0, steps,
                                         round_index=1, networks=["a", "b", "c"], data_seeds=DATA_SEEDS,
                                         lr_multipliers=LR_MULTIPLIERS, stack_size=size)
        for index, (model, mask) in enumerate(zip(built, masks)):
            solo_spec = copy.deepcopy(spec)
            solo_spec.data_seed, solo_spec.training.lr = DATA_SEEDS[index], spec.training.lr * LR_MULTIPLIERS[index]
            alone = copy.deepcopy(model)
            result = train_segment(alone, mask, data, solo_spec, 0, steps, round_index=1)
            assert results[index].status == result.status == "finished"
            for name, value in alone.state_dict().items():
                assert states[index][name].is_cuda
                torch.testing.assert_close(states[index][name], value, rtol=1e-4, atol=1e-5)
            assert results[index].curve["val_loss"] == pytest.approx(result.curve["val_loss"], rel=1e-4)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fused_optimizers_on_the_gpu_compute_what_they_compute_on_the_cpu(optimizer):
    spec = make_spec("lenet_300_100", 5, 8, optimizer)
    on_cpu = networks_and_masks("lenet_300_100", MNIST_SHAPE)[0]
    on_gpu = [copy.deepcopy(model).to(CUDA) for model in on_cpu]
    g = torch.Generator().manual_seed(0)
    optimizers = [FusedOptimizer(model, spec.training) for model in on_cpu + on_gpu]
    stacked = stack_states(on_gpu)
    stacked_optimizer = StackedOptimizer.from_training_spec(stacked, spec.training)
    for _ in range(5):
        grads = [{name: torch.randn(p.shape, generator=g) for name, p in model.named_parameters()}
                 for model in on_cpu]
        for model, optimizer_, grad in zip(on_cpu + on_gpu, optimizers, grads + grads):
            for name, parameter in model.named_parameters():
                parameter.grad = grad[name].to(parameter.device)
            optimizer_.step(spec.training.lr)
        stacked_optimizer.zero_grad()
        for name, parameter in stacked.named_parameters():
            parameter.grad = torch.stack([grad[name] for grad in grads]).view(parameter.shape).to(CUDA)
        stacked_optimizer.step([spec.training.lr] * 3)
    for cpu_model, gpu_model, stacked_state in zip(on_cpu, on_gpu, unstack_states(stacked)):
        for name, value in cpu_model.state_dict().items():
            assert gpu_model.state_dict()[name].is_cuda
            torch.testing.assert_close(gpu_model.state_dict()[name].cpu(), value, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(stacked_state[name].cpu(), value, rtol=1e-5, atol=1e-6)


def test_two_gpu_runs_of_one_spec_give_identical_masks_and_metrics(mnist_files, tmp_path):
    first = run_experiment(mnist_files, tmp_path / "a")
    second = run_experiment(mnist_files, tmp_path / "b")
    assert first["device"] == "cuda" and first["status"] == "finished"
    assert_identical_runs(first, tmp_path / "a", second, tmp_path / "b")
