"""The model registry: the networks of the lottery ticket papers, in pure PyTorch.

Each model is an architecture (layers only) plus an initializer. `build_model`
creates the layers on the 'meta' device, so nothing is allocated or drawn from
torch's global RNG, then materializes them on the CPU and initializes every
parameter and buffer from a private generator seeded with `init_seed`. Same
arguments therefore give bit-identical models, and building one never shifts the
random stream of the caller (data order, dropout, ...).

Parameter names are stable and readable ('fc1.weight', 'conv3.weight',
'stage2.0.shortcut_conv.weight'): masks, checkpoints and the web UI refer to them.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer import lm_networks, rl

InputShape = tuple[int, ...]  # images (channels, height, width); tokens (max context,); observations (size,)


# ---- initializers -------------------------------------------------------------------------
def _initialize(model: nn.Module, generator: torch.Generator,
                init_weight: Callable[[torch.Tensor, torch.Generator], None]) -> None:
    """Set every parameter and buffer of `model`; refuse layer types we do not know how to set."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init_weight(module.weight, generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            module.reset_parameters()  # weight 1, bias 0 (batch norm: running mean 0, running var 1, count 0)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=EMBEDDING_INIT_STD, generator=generator)
        elif isinstance(module, nn.LSTM):
            bound = 1 / math.sqrt(module.hidden_size)  # PyTorch's own LSTM init, from our generator
            for parameter in module.parameters():
                nn.init.uniform_(parameter, -bound, bound, generator=generator)
        elif any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
            # after materializing from 'meta' such a module would hold uninitialized memory
            raise TypeError(f"no initializer for layer type {type(module).__name__}")


EMBEDDING_INIT_STD = 0.02  # GPT-2's token/position embedding init


def _glorot_normal(weight: torch.Tensor, generator: torch.Generator) -> None:
    nn.init.xavier_normal_(weight, generator=generator)


def _kaiming_normal(weight: torch.Tensor, generator: torch.Generator) -> None:
    nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu", generator=generator)


def scaled_units(units: int, width: float) -> int:
    """A layer's unit count times the width multiplier (rounded half up, at least one unit)."""
    return max(1, math.floor(units * width + 0.5))


def _pooled_size(size: int, pools: int, model_name: str) -> int:
    for _ in range(pools):
        size //= 2  # floor, as nn.MaxPool2d(2) does
    if size < 1:
        raise ValueError(f"{model_name} needs inputs of at least {2 ** pools} pixels per side")
    return size


# ---- architectures ------------------------------------------------------------------------
class LeNet300100(nn.Module):
    """Fully connected 300-100 network of Frankle & Carbin (2019)."""

    def __init__(self, input_shape: InputShape, num_classes: int, width: float = 1.0):
        super().__init__()
        hidden1, hidden2 = scaled_units(300, width), scaled_units(100, width)
        self.fc1 = nn.Linear(math.prod(input_shape), hidden1)
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.fc3 = nn.Linear(hidden2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe's MNIST example, the convnet of SNIP (Lee et al. 2019) and GraSP (Wang et al. 2020):
    5x5 convs of 20 and 50 channels (no padding), each followed by a 2x2 max pool, then FC 500-classes."""

    def __init__(self, input_shape: InputShape, num_classes: int, width: float = 1.0):
        super().__init__()
        channels, height, image_width = input_shape
        if min(height, image_width) < 16:
            raise ValueError("lenet5 needs inputs of at least 16 pixels per side")
        filters1, filters2, hidden = scaled_units(20, width), scaled_units(50, width), scaled_units(500, width)
        self.conv1 = nn.Conv2d(channels, filters1, 5)
        self.conv2 = nn.Conv2d(filters1, filters2, 5)
        def side(size: int) -> int:  # after conv 5x5, pool, conv 5x5, pool
            return ((size - 4) // 2 - 4) // 2

        self.fc1 = nn.Linear(filters2 * side(height) * side(image_width), hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


# 'M' is a 2x2 max pool; numbers are 3x3 conv widths.
_CONV_PLANS = {
    "conv2": (64, 64, "M"),
    "conv4": (64, 64, "M", 128, 128, "M"),
    "conv6": (64, 64, "M", 128, 128, "M", 256, 256, "M"),
}


class ConvNet(nn.Module):
    """The Conv-2/4/6 CIFAR networks of Frankle & Carbin (2019): convs, then FC 256-256-classes."""

    def __init__(self, plan: tuple, input_shape: InputShape, num_classes: int, model_name: str, width: float = 1.0):
        super().__init__()
        channels, height, image_width = input_shape
        # one flag per conv: pool after it? Layers live in attributes conv1..convN for readable names.
        self._pool_after: list[bool] = []
        for item in plan:
            if item == "M":
                self._pool_after[-1] = True
                continue
            filters = scaled_units(item, width)
            self.add_module(f"conv{len(self._pool_after) + 1}", nn.Conv2d(channels, filters, 3, padding=1))
            self._pool_after.append(False)
            channels = filters
        self._conv_names = tuple(f"conv{index + 1}" for index in range(len(self._pool_after)))
        pools = sum(self._pool_after)
        flat_size = channels * _pooled_size(height, pools, model_name) * _pooled_size(image_width, pools, model_name)
        hidden = scaled_units(256, width)
        self.fc1 = nn.Linear(flat_size, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, pool in zip(self._conv_names, self._pool_after):
            x = torch.relu(getattr(self, name)(x))
            if pool:
                x = F.max_pool2d(x, 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


_VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG16(nn.Module):
    """CIFAR VGG-16 with batch norm (as in open_lth): 13 conv+BN+ReLU, global average pool, one FC.

    Convs have no bias: the batch norm right after them would cancel it.
    """

    def __init__(self, input_shape: InputShape, num_classes: int, width: float = 1.0):
        super().__init__()
        channels, height, image_width = input_shape
        _pooled_size(min(height, image_width), _VGG16_PLAN.count("M"), "vgg16")
        self._pool_after: list[bool] = []
        for item in _VGG16_PLAN:
            if item == "M":
                self._pool_after[-1] = True
                continue
            index, filters = len(self._pool_after) + 1, scaled_units(item, width)
            self.add_module(f"conv{index}", nn.Conv2d(channels, filters, 3, padding=1, bias=False))
            self.add_module(f"bn{index}", nn.BatchNorm2d(filters))
            self._pool_after.append(False)
            channels = filters
        self._layer_names = tuple((f"conv{index + 1}", f"bn{index + 1}") for index in range(len(self._pool_after)))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for (conv_name, bn_name), pool in zip(self._layer_names, self._pool_after):
            x = torch.relu(getattr(self, bn_name)(getattr(self, conv_name)(x)))
            if pool:
                x = F.max_pool2d(x, 2)
        return self.fc(x.mean(dim=(2, 3)))


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN; the shortcut is a 1x1 conv+BN when the shape changes, else the identity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut_conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(out_channels)
        else:
            self.shortcut_conv = None
            self.shortcut_bn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.shortcut_conv is None else self.shortcut_bn(self.shortcut_conv(x))
        return torch.relu(out + shortcut)


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (He et al. 2016): stem, 3 stages x 3 blocks (16/32/64), global pool, FC."""

    def __init__(self, input_shape: InputShape, num_classes: int, widths: tuple[int, ...] = (16, 32, 64),
                 blocks_per_stage: int = 3, width: float = 1.0):
        super().__init__()
        widths = tuple(scaled_units(stage_width, width) for stage_width in widths)
        channels = input_shape[0]
        self.conv1 = nn.Conv2d(channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        channels = widths[0]
        for stage_index, width in enumerate(widths):
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
            self.add_module(f"stage{stage_index + 1}", nn.Sequential(*blocks))
        self._stage_names = tuple(f"stage{index + 1}" for index in range(len(widths)))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        for name in self._stage_names:
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))


# ---- registry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PaperPruning:
    """The pruning rates a model's paper used; a spec that leaves a pruning field out gets them."""
    source: str
    scope: str = "layerwise"
    fraction: float = 0.2  # hidden fully connected layers (and every layer under global scope)
    conv_fraction: float | None = None  # every conv layer, when it differs
    output_fraction: float | None = None  # the output layer, when it differs
    prune_output: bool = True


# Frankle & Carbin 2019, Figure 2 / Appendix: fc 20%, output 10%; Conv-2/4 conv 10%, Conv-6 conv 15%.
_FRANKLE_CARBIN = "Frankle & Carbin 2019 (ICLR), Figure 2 and Appendix"
# Frankle et al. 2020 (linear mode connectivity) and open_lth's CIFAR defaults: global 20%, output layer not pruned.
_FRANKLE_2020 = "Frankle et al. 2020 (ICML), Table 1; open_lth CIFAR defaults (output layer not pruned)"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str  # one line, shown in the CLI help and the web form
    # layers only, values come from init_weight; (input_shape, num_classes[, width=multiplier of every hidden layer])
    architecture: Callable[..., nn.Module]
    init_weight: Callable[[torch.Tensor, torch.Generator], None]  # for Conv2d/Linear weights; biases are 0
    paper_pruning: PaperPruning = PaperPruning(_FRANKLE_CARBIN)
    task: str = "classification"  # trainer.tasks: what the model learns (its datasets must have this task)
    # the weights IMP prunes, in forward order, when they are not simply every Conv2d/Linear weight (language models
    # prune embeddings and LSTM gates too): (model on 'meta') -> names
    prunable: Callable[[nn.Module], list[str]] | None = None
    output: str | None = None  # the output layer's weight when it is not the last Linear (an agent's action layer)

    def layers(self, input_shape: InputShape, num_classes: int, width: float = 1.0) -> nn.Module:
        """The architecture at `width` (on the current default device; values unset)."""
        if width == 1:  # a registered architecture need not take a width to be the paper's network
            return self.architecture(input_shape, num_classes)
        return self.architecture(input_shape, num_classes, width=width)

    def build(self, input_shape: InputShape, num_classes: int, init_seed: int, width: float = 1.0) -> nn.Module:
        """The initialized model on the CPU; see build_model."""
        input_shape, num_classes = _check_shape(input_shape, num_classes)
        if not width > 0:
            raise ValueError(f"width must be a positive multiplier, got {width!r}")
        with torch.device("meta"):  # no allocation and no draws from the global RNG
            model = self.layers(input_shape, num_classes, width)
        model = model.to_empty(device="cpu")
        generator = torch.Generator(device="cpu").manual_seed(init_seed)
        with torch.no_grad():
            _initialize(model, generator, self.init_weight)
        return model


MODELS: dict[str, ModelEntry] = {}


def _register(entry: ModelEntry) -> None:
    MODELS[entry.name] = entry


_register(ModelEntry(
    "lenet_300_100", "LeNet-300-100: fully connected 300-100 (Frankle & Carbin 2019), Glorot init",
    LeNet300100, _glorot_normal, PaperPruning(_FRANKLE_CARBIN, output_fraction=0.1)))
_register(ModelEntry(
    "lenet5", "LeNet-5 (Caffe): 5x5 convs 20-50 with max pools, FC 500 (SNIP's and GraSP's convnet), Glorot init",
    LeNet5, _glorot_normal, PaperPruning(_FRANKLE_CARBIN, conv_fraction=0.1, output_fraction=0.1)))
for _name, _depth, _conv_fraction in (("conv2", 2, 0.1), ("conv4", 4, 0.1), ("conv6", 6, 0.15)):
    _register(ModelEntry(
        _name,
        f"Conv-{_depth}: {_depth} 3x3 convs with max pools, then FC 256-256 (Frankle & Carbin 2019), Glorot init",
        functools.partial(ConvNet, _CONV_PLANS[_name], model_name=_name), _glorot_normal,
        PaperPruning(_FRANKLE_CARBIN, conv_fraction=_conv_fraction, output_fraction=0.1)))
_register(ModelEntry(
    "vgg16", "VGG-16 for CIFAR: 13 conv+batch-norm layers, global average pool, one FC; Kaiming init",
    VGG16, _kaiming_normal, PaperPruning(_FRANKLE_2020, scope="global", prune_output=False)))
_register(ModelEntry(
    "resnet20", "ResNet-20 for CIFAR (He et al. 2016): 3 stages x 3 residual blocks, widths 16-32-64; Kaiming init",
    ResNet20, _kaiming_normal, PaperPruning(_FRANKLE_2020, scope="global", prune_output=False)))


# Language models (Yu et al. 2020): input_shape = (max context,), num_classes = the vocabulary size.
_YU_2020 = "Yu et al. 2020 (ICLR), 'Playing the lottery with rewards and multiple languages': 20% per round"


def _small_normal(weight: torch.Tensor, generator: torch.Generator) -> None:
    nn.init.normal_(weight, std=EMBEDDING_INIT_STD, generator=generator)  # GPT-2's init of every projection


def _transformer_lm(input_shape: InputShape, num_classes: int, tied: bool = True, width: float = 1.0) -> nn.Module:
    heads = 4
    d_model = heads * scaled_units(128 // heads, width)  # a whole number of dimensions per head
    return lm_networks.TransformerLM(num_classes, input_shape[0], d_model=d_model, heads=heads,
                                     ff_size=scaled_units(512, width), tied=tied)


def _lstm_lm(input_shape: InputShape, num_classes: int, width: float = 1.0) -> nn.Module:
    size = scaled_units(200, width)
    return lm_networks.LSTMLM(num_classes, input_shape[0], embedding_size=size, hidden_size=size)


_register(ModelEntry(
    "transformer_lm", "Transformer LM: 2 pre-LN decoder layers, d=128, 4 heads, tied embeddings; N(0, 0.02) init",
    _transformer_lm, _small_normal, PaperPruning(_YU_2020), task="language_modeling",
    prunable=lm_networks.prunable_lm_weights))
_register(ModelEntry(
    "transformer_lm_untied", "Transformer LM as transformer_lm with its own output layer (untied embeddings)",
    functools.partial(_transformer_lm, tied=False), _small_normal, PaperPruning(_YU_2020), task="language_modeling",
    prunable=lm_networks.prunable_lm_weights))
_register(ModelEntry(
    "lstm_lm", "LSTM LM: 2 layers of 200 units, embeddings 200, untied output (Zaremba et al.'s small model)",
    _lstm_lm, _small_normal,
    PaperPruning(_YU_2020), task="language_modeling", prunable=lm_networks.prunable_lm_weights))


# Agents (Yu et al. 2020): input_shape = (observation size,), num_classes = the number of actions.
def _actor_critic(input_shape: InputShape, num_classes: int, width: float = 1.0) -> nn.Module:
    return rl.ActorCritic(input_shape[0], num_classes, hidden=(scaled_units(64, width),) * 2)


_register(ModelEntry(
    "actor_critic", "Actor-critic agent: policy and value MLPs 64-64 with tanh (A2C); Glorot init",
    _actor_critic, _glorot_normal, PaperPruning(_YU_2020), task="reinforcement_learning",
    output="policy.out.weight"))


# ---- public functions ---------------------------------------------------------------------
def _entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        pass
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def _check_shape(input_shape, num_classes) -> tuple[InputShape, int]:
    shape = tuple(int(size) for size in input_shape)
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ValueError("input_shape must be (channels, height, width) or (size,) of positive sizes, "
                         f"got {input_shape!r}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes!r}")
    return shape, int(num_classes)


def build_model(name: str, input_shape: InputShape, num_classes: int, init_seed: int, width: float = 1.0) -> nn.Module:
    """A freshly initialized model on the CPU; `width` multiplies every hidden layer's units or
    channels (the output layer keeps num_classes; 1 is the paper's network).

    Deterministic (same arguments -> bit-identical parameters and buffers) and leaves
    torch's global RNG untouched. Unknown names raise ValueError listing the known ones.
    """
    return _entry(name).build(input_shape, num_classes, init_seed, width)


def parameter_count(name: str, input_shape: InputShape, num_classes: int, width: float = 1.0) -> int:
    """Parameters (weights, biases, batch-norm γ/β) of the model at `width`, counted on 'meta' (no memory)."""
    shape, classes = _check_shape(input_shape, num_classes)
    entry = _entry(name)
    with torch.device("meta"):
        model = entry.layers(shape, classes, width)
    return sum(parameter.numel() for parameter in model.parameters())


@functools.cache
def _layer_names(name: str, input_shape: InputShape, num_classes: int) -> tuple[tuple[str, ...], str]:
    entry = _entry(name)
    with torch.device("meta"):  # shapes only: no memory, no RNG
        model = entry.architecture(input_shape, num_classes)
    if entry.prunable is not None:
        prunable = tuple(entry.prunable(model))
        # a language model's output layer is `output`, or the embedding it is tied to
        return prunable, entry.output or ("output.weight" if "output.weight" in prunable else prunable[0])
    # module registration order is forward order in every architecture above (tested)
    weighted = [(module_name, module) for module_name, module in model.named_modules()
                if isinstance(module, (nn.Conv2d, nn.Linear))]
    prunable = tuple(f"{module_name}.weight" for module_name, _ in weighted)
    output = entry.output or next(f"{module_name}.weight" for module_name, module in reversed(weighted)
                                  if isinstance(module, nn.Linear))
    return prunable, output


def prunable_parameter_names(name: str, input_shape: InputShape, num_classes: int) -> list[str]:
    """The weights pruned by default: every Conv2d and Linear weight in forward order (no biases, no BN)."""
    _entry(name)
    shape, classes = _check_shape(input_shape, num_classes)
    return list(_layer_names(name, shape, classes)[0])


def output_parameter_name(name: str, input_shape: InputShape, num_classes: int) -> str:
    """The weight of the output (last) Linear layer, e.g. 'fc3.weight'."""
    _entry(name)
    shape, classes = _check_shape(input_shape, num_classes)
    return _layer_names(name, shape, classes)[1]


def paper_pruning_fields(name: str, input_shape: InputShape, num_classes: int) -> dict:
    """The PruningSpec fields of the model's paper rates: scope, fraction, layer_fractions, prunable_layers
    (empty = every conv/linear weight)."""
    paper = _entry(name).paper_pruning
    names = prunable_parameter_names(name, input_shape, num_classes)
    output = output_parameter_name(name, input_shape, num_classes)
    with torch.device("meta"):
        modules = dict(_entry(name).architecture(*_check_shape(input_shape, num_classes)).named_modules())
    layer_fractions = {}
    for weight_name in names:
        module = modules[weight_name.rsplit(".", 1)[0]]
        if weight_name == output and paper.output_fraction is not None:
            layer_fractions[weight_name] = paper.output_fraction
        elif isinstance(module, nn.Conv2d) and paper.conv_fraction is not None:
            layer_fractions[weight_name] = paper.conv_fraction
    prunable = [] if paper.prune_output else [weight_name for weight_name in names if weight_name != output]
    return {"scope": paper.scope, "fraction": paper.fraction, "layer_fractions": layer_fractions,
            "prunable_layers": prunable}
