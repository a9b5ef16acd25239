"""The model registry: shapes, parameter counts, deterministic init, layer names."""
import math

import pytest
import torch
from torch import nn

from trainer import models
from trainer.models import MODELS, build_model, output_parameter_name, prunable_parameter_names

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
SHAPES = [MNIST, CIFAR]
MODEL_NAMES = list(MODELS)
# the image classifiers: the tests below feed them images (language models and agents: tests/trainer/tasks/)
IMAGE_MODELS = [name for name, entry in MODELS.items() if entry.task == "classification"]
# an input shape each task's models take: images, token sequences (max context), observations
TASK_SHAPES = {"classification": (3, 32, 32), "language_modeling": (16,), "reinforcement_learning": (4,)}


def shape_for(name: str) -> tuple[int, ...]:
    return TASK_SHAPES[MODELS[name].task]


def linear_count(inputs, outputs):
    return inputs * outputs + outputs


def conv_count(in_channels, out_channels, kernel=3, bias=True):
    return in_channels * out_channels * kernel * kernel + (out_channels if bias else 0)


def count(model):
    return sum(parameter.numel() for parameter in model.parameters())


def test_registry_lists_the_paper_models_in_display_order():
    assert MODEL_NAMES == ["lenet_300_100", "lenet5", "conv2", "conv4", "conv6", "vgg16", "resnet20",
                           "transformer_lm", "transformer_lm_untied", "lstm_lm", "actor_critic"]
    assert {entry.task for entry in MODELS.values()} == {"classification", "language_modeling",
                                                         "reinforcement_learning"}
    for name, entry in MODELS.items():
        assert entry.name == name
        assert entry.description and "\n" not in entry.description
        assert callable(entry.build)


@pytest.mark.parametrize("input_shape", SHAPES, ids=["mnist", "cifar"])
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_model_gives_logits_for_both_input_shapes(name, input_shape):
    model = build_model(name, input_shape, 10, init_seed=0)
    logits = model(torch.randn(2, *input_shape))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_num_classes_sets_the_output_width():
    model = build_model("resnet20", CIFAR, 100, init_seed=0)
    assert model(torch.randn(3, *CIFAR)).shape == (3, 100)


def test_lenet_300_100_parameter_count():
    expected = linear_count(28 * 28, 300) + linear_count(300, 100) + linear_count(100, 10)
    assert expected == 266_610
    assert count(build_model("lenet_300_100", MNIST, 10, init_seed=0)) == expected


def test_lenet5_parameter_count_is_the_caffe_networks():
    # 28 -> conv 24 -> pool 12 -> conv 8 -> pool 4: 50 * 4 * 4 = 800 inputs to fc1 (431k parameters, as in SNIP)
    expected = (conv_count(1, 20, kernel=5) + conv_count(20, 50, kernel=5)
                + linear_count(800, 500) + linear_count(500, 10))
    assert expected == 431_080
    assert count(build_model("lenet5", MNIST, 10, init_seed=0)) == expected
    # 32 -> 28 -> 14 -> 10 -> 5 on CIFAR
    cifar = conv_count(3, 20, kernel=5) + conv_count(20, 50, kernel=5) + linear_count(1250, 500) + linear_count(500, 10)
    assert count(build_model("lenet5", CIFAR, 10, init_seed=0)) == cifar


def test_conv2_parameter_count_on_cifar():
    flat = 64 * 16 * 16  # one 2x2 pool: 32x32 -> 16x16
    expected = (conv_count(3, 64) + conv_count(64, 64)
                + linear_count(flat, 256) + linear_count(256, 256) + linear_count(256, 10))
    assert count(build_model("conv2", CIFAR, 10, init_seed=0)) == expected


def test_conv6_flatten_size_uses_floor_pooling_on_28x28():
    model = build_model("conv6", MNIST, 10, init_seed=0)
    assert model.fc1.in_features == 256 * 3 * 3  # 28 -> 14 -> 7 -> 3


def test_resnet20_parameter_count_on_cifar():
    def bn(channels):
        return 2 * channels

    def block(in_channels, out_channels):
        total = conv_count(in_channels, out_channels, bias=False) + bn(out_channels)
        total += conv_count(out_channels, out_channels, bias=False) + bn(out_channels)
        if in_channels != out_channels:
            total += conv_count(in_channels, out_channels, kernel=1, bias=False) + bn(out_channels)
        return total

    expected = conv_count(3, 16, bias=False) + bn(16)
    for in_channels, width in ((16, 16), (16, 32), (32, 64)):
        expected += block(in_channels, width) + 2 * block(width, width)
    expected += linear_count(64, 10)
    assert count(build_model("resnet20", CIFAR, 10, init_seed=0)) == expected


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_gives_bit_identical_parameters_and_buffers(name):
    first = build_model(name, shape_for(name), 10, init_seed=7).state_dict()
    second = build_model(name, shape_for(name), 10, init_seed=7).state_dict()
    assert list(first) == list(second)
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_different_seed_gives_different_weights(name):
    first = build_model(name, shape_for(name), 10, init_seed=1)
    second = build_model(name, shape_for(name), 10, init_seed=2)
    first_parameters = dict(first.named_parameters())
    for key, parameter in second.named_parameters():
        if key in prunable_parameter_names(name, CIFAR, 10):
            assert not torch.equal(parameter, first_parameters[key]), key


def test_building_leaves_the_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    for name in MODEL_NAMES:
        build_model(name, MNIST, 10, init_seed=99)
        prunable_parameter_names(name, (3, 30, 30), 7)  # uncached shape: builds on 'meta'
        output_parameter_name(name, (3, 30, 30), 7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(5), expected)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_prunable_names_are_conv_and_linear_weights_in_forward_order(name):
    model = build_model(name, CIFAR, 10, init_seed=0)
    called = []
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_pre_hook(lambda _module, _inputs, module_name=module_name:
                                             called.append(f"{module_name}.weight"))
    model(torch.randn(1, *CIFAR))

    names = prunable_parameter_names(name, CIFAR, 10)
    assert names == called
    parameters = dict(model.named_parameters())
    assert all(name in parameters for name in names)
    assert not any(name.endswith(".bias") for name in names)
    batch_norm_parameters = {f"{module_name}.{kind}" for module_name, module in model.named_modules()
                             if isinstance(module, nn.BatchNorm2d) for kind in ("weight", "bias")}
    assert not batch_norm_parameters & set(names)


def test_prunable_names_of_lenet_and_conv2_are_stable():
    assert prunable_parameter_names("lenet_300_100", MNIST, 10) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert prunable_parameter_names("conv2", CIFAR, 10) == [
        "conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"]


def test_prunable_names_returns_a_fresh_list():
    names = prunable_parameter_names("conv4", CIFAR, 10)
    names.clear()
    assert prunable_parameter_names("conv4", CIFAR, 10)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_output_parameter_is_the_last_linear_weight(name):
    model = build_model(name, MNIST, 10, init_seed=0)
    last_linear = [module_name for module_name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]
    output = output_parameter_name(name, MNIST, 10)
    assert output == f"{last_linear}.weight"
    assert output == prunable_parameter_names(name, MNIST, 10)[-1]
    assert dict(model.named_parameters())[output].shape[0] == 10


def test_output_parameter_names_of_lenet_and_resnet():
    assert output_parameter_name("lenet_300_100", MNIST, 10) == "fc3.weight"
    assert output_parameter_name("resnet20", CIFAR, 10) == "fc.weight"


@pytest.mark.parametrize("call", [
    lambda: build_model("resnet18", CIFAR, 10, init_seed=0),
    lambda: prunable_parameter_names("resnet18", CIFAR, 10),
    lambda: output_parameter_name("resnet18", CIFAR, 10),
], ids=["build_model", "prunable_parameter_names", "output_parameter_name"])
def test_unknown_model_raises_value_error_listing_known_names(call):
    with pytest.raises(ValueError) as error:
        call()
    assert not isinstance(error.value, KeyError)
    assert "resnet18" in str(error.value)
    for name in MODEL_NAMES:
        assert name in str(error.value)


def test_too_small_input_raises_value_error():
    with pytest.raises(ValueError, match="conv6"):
        build_model("conv6", (3, 4, 4), 10, init_seed=0)


def test_lenet_fc1_has_glorot_normal_std():
    weight = build_model("lenet_300_100", MNIST, 10, init_seed=3).fc1.weight
    fan_out, fan_in = weight.shape
    assert weight.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.05)
    assert abs(weight.mean().item()) < 0.05 * weight.std().item()


def test_resnet20_conv_has_kaiming_normal_std():
    weight = build_model("resnet20", CIFAR, 10, init_seed=3).stage3[1].conv1.weight
    fan_in = weight[0].numel()
    assert weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_biases_are_zero_and_batch_norm_starts_as_identity(name):
    model = build_model(name, CIFAR, 10, init_seed=0)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            assert torch.count_nonzero(module.bias) == 0
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.count_nonzero(module.bias) == 0
            assert torch.count_nonzero(module.running_mean) == 0
            assert torch.equal(module.running_var, torch.ones_like(module.running_var))
            assert module.num_batches_tracked.item() == 0


def test_model_is_on_cpu_and_trainable():
    model = build_model("conv2", CIFAR, 10, init_seed=0)
    assert all(p.device.type == "cpu" and p.requires_grad for p in model.parameters())
    model(torch.randn(2, *CIFAR)).sum().backward()
    assert model.conv1.weight.grad is not None


def test_initializer_refuses_unknown_layer_types():
    class WithGRU(nn.Module):  # embeddings, layer norms and LSTMs are known (language models); a GRU is not
        def __init__(self, input_shape, num_classes):
            super().__init__()
            self.gru = nn.GRU(4, 2)

    entry = models.ModelEntry("toy", "toy", WithGRU, models._glorot_normal)
    with pytest.raises(TypeError, match="GRU"):
        entry.build(CIFAR, 10, init_seed=0)
