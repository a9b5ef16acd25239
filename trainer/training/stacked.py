"""K networks of one architecture trained as one module: replicates and controls in one step.

`stack_states` turns K models of one architecture into one module by swapping its layers,
never its forward(): activations carry the K networks side by side, (B, K*C, H, W) for
conv features and (B, K*F) for flat features. In that layout flatten(1), ReLU, pooling,
residual adds and the global average pool act per network by themselves, and only three
layer types need a stacked version:

  nn.Conv2d       a grouped convolution (groups = K * groups) on CUDA, K convolutions on channel
                  slices on the CPU; weight (K*out, in/groups, kh, kw) either way
  nn.Linear       a batched matmul: (B, K*in) -> (K, B, in) @ (K, in, out) -> (B, K*out)
  nn.BatchNorm2d  one batch norm over K*C channels (per-network statistics and affine)

Every stacked tensor holds the K networks' tensors back to back, so `tensor.view(K, *shape)`
gives them one per row: stacking, unstacking (exact), masks, per-network learning rates and
optimizer state all use that one rule. Parameter names are the model's own ('fc1.weight').
The loss is the sum over networks of each network's mean cross-entropy, so each network's
gradient is the gradient it would get alone.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from trainer import datasets, models
from trainer.pruning.masks import Mask


# ---- stacked layers -----------------------------------------------------------------------
class _StackedLinearFunction(torch.autograd.Function):
    """y_k = x_k W_k^T + b_k for every network k, in the (B, K*F) layout.

    Hand-written backward so that the weight gradient comes out as a contiguous (K, out, in)
    tensor and the input gradient is skipped for the first layer: autograd's generic bmm
    backward gave transposed gradients whose accumulation cost as much as the matmuls.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        size, out_features, in_features = weight.shape
        batch = x.shape[0]
        per_network = x.reshape(batch, size, in_features).transpose(0, 1)  # (K, B, in), a view
        if bias is None:
            out = torch.bmm(per_network, weight.transpose(1, 2))
        else:
            out = torch.baddbmm(bias.unsqueeze(1), per_network, weight.transpose(1, 2))
        ctx.save_for_backward(per_network, weight)
        ctx.has_bias = bias is not None
        return out.transpose(0, 1).reshape(batch, size * out_features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        per_network, weight = ctx.saved_tensors
        size, out_features, in_features = weight.shape
        batch = grad.shape[0]
        grad_per_network = grad.reshape(batch, size, out_features).transpose(0, 1)  # (K, B, out)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad_per_network, weight).transpose(0, 1).reshape(batch, size * in_features)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(grad_per_network.transpose(1, 2), per_network)  # (K, out, in), contiguous
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_per_network.sum(1)
        return grad_x, grad_weight, grad_bias


class StackedLinear(nn.Module):
    """K linear layers as one batched matmul; weight (K, out, in), bias (K, out)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.stack_size, self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _StackedLinearFunction.apply(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"stack_size={self.stack_size}, in_features={self.in_features}, out_features={self.out_features}"


class StackedConv2d(nn.Module):
    """K convolutions over K*in input channels, weight (K*out, in/groups, kh, kw).

    Two equivalent ways to run them, chosen per call by `mode`:
      'grouped'  one grouped convolution (groups = K * groups): for CUDA;
      'loop'     one convolution per network on its channel slice, then one concat: for the CPU,
                 where oneDNN's grouped convolution measured 0.6x the per-network speed of K plain ones;
      'auto'     (default) 'grouped' on CUDA, 'loop' elsewhere.
    """

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, stack_size: int):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise TypeError(f"stacking supports zero-padded convolutions only, not {conv.padding_mode!r}")
        self.stack_size = stack_size
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.network_groups = conv.groups
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.mode = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.mode if self.mode != "auto" else ("grouped" if x.is_cuda else "loop")
        if mode == "grouped" or self.stack_size == 1:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                            self.network_groups * self.stack_size)
        weights = self.weight.view(self.stack_size, -1, *self.weight.shape[1:]).unbind(0)  # backward: one stack
        biases = self.bias.view(self.stack_size, -1).unbind(0) if self.bias is not None else [None] * self.stack_size
        inputs = x.chunk(self.stack_size, dim=1)
        return torch.cat([F.conv2d(part, weight, bias, self.stride, self.padding, self.dilation, self.network_groups)
                          for part, weight, bias in zip(inputs, weights, biases)], dim=1)

    def extra_repr(self) -> str:
        return f"stack_size={self.stack_size}, weight={tuple(self.weight.shape)}, mode={self.mode}"


def set_conv_mode(stacked: nn.Module, mode: str) -> None:
    """Run every stacked convolution as 'grouped', 'loop' or 'auto' (see StackedConv2d)."""
    if mode not in ("auto", "grouped", "loop"):
        raise ValueError(f"unknown convolution mode {mode!r}")
    for module in stacked.modules():
        if isinstance(module, StackedConv2d):
            module.mode = mode


class StackedBatchNorm2d(nn.Module):
    """K batch norms as one over K*C channels; each network keeps its own batch counter."""

    def __init__(self, norm: nn.BatchNorm2d, tensors: dict[str, torch.Tensor], stack_size: int):
        super().__init__()
        if not (norm.affine and norm.track_running_stats):
            raise TypeError("stacking supports BatchNorm2d with affine=True and track_running_stats=True")
        self.stack_size, self.eps, self.momentum = stack_size, norm.eps, norm.momentum
        self.weight = nn.Parameter(tensors["weight"])
        self.bias = nn.Parameter(tensors["bias"])
        self.register_buffer("running_mean", tensors["running_mean"])
        self.register_buffer("running_var", tensors["running_var"])
        self.register_buffer("num_batches_tracked", tensors["num_batches_tracked"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average: needs one count for all networks
                counts = self.num_batches_tracked
                if bool((counts != counts[0]).any()):
                    raise ValueError("BatchNorm with momentum=None needs equal batch counts in all stacked networks")
                factor = 1.0 / float(counts[0])
            else:
                factor = self.momentum
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, factor, self.eps)


# ---- stack / unstack ----------------------------------------------------------------------
def _stacked_layer(module: nn.Module, states: list[dict], prefix: str, stack_size: int) -> nn.Module | None:
    """The stacked replacement of one layer, its tensors taken from the K state dicts."""
    def stacked(name: str) -> torch.Tensor | None:
        key = prefix + name
        if states[0].get(key) is None:
            return None
        return torch.stack([state[key].detach() for state in states])  # (K, *shape), a fresh copy

    if isinstance(module, nn.Linear):
        return StackedLinear(stacked("weight"), stacked("bias"))
    if isinstance(module, nn.Conv2d):
        weight, bias = stacked("weight"), stacked("bias")
        return StackedConv2d(module, weight.flatten(0, 1), None if bias is None else bias.flatten(), stack_size)
    if isinstance(module, nn.BatchNorm2d):
        names = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        return StackedBatchNorm2d(module, {name: stacked(name).flatten() for name in names}, stack_size)
    has_own_tensors = (any(True for _ in module.parameters(recurse=False))
                       or any(True for _ in module.buffers(recurse=False)))
    if has_own_tensors:
        raise TypeError(f"cannot stack layer type {type(module).__name__} ({prefix.rstrip('.') or 'the model'})")
    return None


def stack_states(models: list[nn.Module]) -> nn.Module:
    """One module that trains the K given models (same architecture) side by side.

    The result runs the first model's own forward() on stacked layers; it lives on the
    models' device and copies their tensors (the models are not changed). Feed it inputs of
    shape (B, K*C, H, W) built by `stack_inputs`; its output is (B, K*classes).
    """
    if not models:
        raise ValueError("stack_states needs at least one model")
    states = [model.state_dict() for model in models]
    shapes = {name: tuple(tensor.shape) for name, tensor in states[0].items()}
    for index, state in enumerate(states[1:], start=1):
        if {name: tuple(tensor.shape) for name, tensor in state.items()} != shapes:
            raise ValueError(f"model {index} does not have the architecture of model 0")
    if any(type(model) is not type(models[0]) for model in models):
        raise ValueError("all stacked models must be of one class")
    stack_size = len(models)
    stacked = _skeleton(models[0])
    for name, module in list(stacked.named_modules()):
        replacement = _stacked_layer(module, states, f"{name}." if name else "", stack_size)
        if replacement is None:
            continue
        if not name:
            raise TypeError("the model itself is a single layer; wrap it in a module to stack it")
        parent_name, _, child_name = name.rpartition(".")
        setattr(stacked.get_submodule(parent_name), child_name, replacement)
    stacked.stack_size = stack_size
    stacked.stack_shapes = shapes
    stacked.train(models[0].training)
    return stacked


def _skeleton(model: nn.Module) -> nn.Module:
    """A copy of the model's structure whose tensors are on 'meta' (no copy of the values)."""
    memo = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        replacement = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(replacement, tensor.requires_grad) if isinstance(tensor, nn.Parameter) \
            else replacement
    return copy.deepcopy(model, memo)


def unstack_states(stacked: nn.Module) -> list[dict[str, torch.Tensor]]:
    """The K networks' state dicts, in the models' own names and shapes (an exact copy)."""
    return [unstack_state(stacked, index) for index in range(stacked.stack_size)]


def unstack_state(stacked: nn.Module, index: int) -> dict[str, torch.Tensor]:
    size, shapes = stacked.stack_size, stacked.stack_shapes
    state = stacked.state_dict()
    return {name: state[name].detach().view(size, *shape)[index].clone() for name, shape in shapes.items()}


def load_network_state(stacked: nn.Module, index: int, state: dict[str, torch.Tensor]) -> None:
    """Overwrite network `index` of the stack with one model's state dict."""
    size, shapes = stacked.stack_size, stacked.stack_shapes
    current = stacked.state_dict()
    with torch.no_grad():
        for name, shape in shapes.items():
            current[name].view(size, *shape)[index].copy_(state[name])


def stack_masks(stacked: nn.Module, masks: list[Mask]) -> Mask:
    """The K masks as one mask of the stacked parameters (a layer missing from a mask is unpruned)."""
    size, shapes = stacked.stack_size, stacked.stack_shapes
    if len(masks) != size:
        raise ValueError(f"{len(masks)} masks for {size} stacked networks")
    parameters = dict(stacked.named_parameters())
    names = sorted({name for mask in masks for name in mask}, key=list(shapes).index)
    stacked_mask = {}
    for name in names:
        if name not in parameters:
            raise ValueError(f"mask names {name!r}, which is not a parameter of the model")
        rows = [mask[name].to(dtype=torch.bool, device="cpu") if name in mask
                else torch.ones(shapes[name], dtype=torch.bool) for mask in masks]
        stacked_mask[name] = torch.stack(rows).view(parameters[name].shape)
    return stacked_mask


def unstack_mask(stacked_mask: Mask, stacked: nn.Module, index: int) -> Mask:
    size, shapes = stacked.stack_size, stacked.stack_shapes
    return {name: mask.view(size, *shapes[name])[index].clone() for name, mask in stacked_mask.items()}


# ---- inputs and loss ----------------------------------------------------------------------
def stack_inputs(x: datasets.Inputs | torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Network k's batch x[indices[k]] for every k, in one index op, as (B, K*C, H, W) (or (B, K*F))."""
    size, batch = indices.shape
    gathered = datasets.as_inputs(x).rows(indices.t())  # (B, K, ...): already the stacked layout, no transpose copy
    return gathered.reshape(batch, size * gathered.shape[2], *gathered.shape[3:])


def repeat_inputs(x: torch.Tensor, size: int) -> torch.Tensor:
    """The same batch for all K networks (evaluation)."""
    batch = x.shape[0]
    return x.unsqueeze(1).expand(batch, size, *x.shape[1:]).reshape(batch, size * x.shape[1], *x.shape[2:])


def per_network_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """(K,) cross-entropy of each network ('mean' or 'sum' over its batch); logits (B, K*classes), targets (B, K)."""
    batch, size = targets.shape
    losses = F.cross_entropy(logits.reshape(batch * size, -1), targets.reshape(-1), reduction="none").view(batch, size)
    return losses.mean(0) if reduction == "mean" else losses.sum(0)


# ---- optimizer ----------------------------------------------------------------------------
class StackedOptimizer:
    """SGD (momentum, weight decay) or Adam over stacked parameters with one learning rate per network.

    Computes what torch.optim.SGD / torch.optim.Adam (defaults otherwise) compute for each
    network alone, up to floating-point reordering; the rate is a (K,) tensor per step.
    """

    def __init__(self, stacked: nn.Module, optimizer: str, momentum: float = 0.0, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {optimizer!r}")
        self.kind, self.momentum, self.weight_decay = optimizer, momentum, weight_decay
        self.betas, self.eps = betas, eps
        self.stack_size = stacked.stack_size
        self.parameters = [p for p in stacked.parameters() if p.requires_grad]
        self.steps = 0
        zeros = lambda: [torch.zeros_like(p) for p in self.parameters]  # noqa: E731
        self.momentum_buffers = zeros() if optimizer == "sgd" and momentum else []
        self.exp_avg = zeros() if optimizer == "adam" else []
        self.exp_avg_sq = zeros() if optimizer == "adam" else []

    @classmethod
    def from_training_spec(cls, stacked: nn.Module, training) -> StackedOptimizer:
        return cls(stacked, training.optimizer, momentum=training.momentum, weight_decay=training.weight_decay)

    def zero_grad(self) -> None:
        # None, not zeros: backward then stores each gradient instead of adding it to a zeroed one
        for p in self.parameters:
            p.grad = None

    def _rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view(self.stack_size, -1)

    @torch.no_grad()
    def step(self, lrs) -> None:
        """One step; `lrs` holds the K learning rates (floats, or a host tensor)."""
        lrs = tuple(float(lr) for lr in lrs)
        self.steps += 1
        if self.kind == "sgd":
            self._sgd(self._lr_column(lrs))
        else:
            self._adam(lrs)

    def _lr_column(self, lrs: tuple[float, ...]) -> torch.Tensor:
        """The (K, 1) rates on the parameters' device; copied to the device only when they change."""
        if getattr(self, "_column_key", None) != lrs:
            first = self.parameters[0]
            self._column = torch.tensor(lrs, dtype=first.dtype, device=first.device).view(self.stack_size, 1)
            self._column_key = lrs
        return self._column

    def _sgd(self, lr_column: torch.Tensor) -> None:
        negative_lr = -lr_column
        for index, p in enumerate(self.parameters):
            if p.grad is None:
                continue
            grad = p.grad if not self.weight_decay else p.grad.add(p, alpha=self.weight_decay)
            if self.momentum:
                buffer = self.momentum_buffers[index]
                buffer.mul_(self.momentum).add_(grad)
                grad = buffer
            self._rows(p).addcmul_(self._rows(grad), negative_lr)

    def _adam(self, lrs: tuple[float, ...]) -> None:
        """torch's fused Adam kernel (one pass over each tensor, as the single-network loop uses),
        once per distinct rate: on the whole stack when all networks share it, else on row slices.
        A network at rate 0 (taken out of training) is skipped."""
        first = self.parameters[0]
        if getattr(self, "_step_tensor", None) is None:
            self._step_tensor = torch.zeros((), dtype=torch.float32, device=first.device)
        self._step_tensor.fill_(float(self.steps))  # the kernel reads the step for its bias corrections
        # per parameter: (weights, gradient, first moment, second moment)
        tensors = [(p, p.grad, self.exp_avg[i], self.exp_avg_sq[i])
                   for i, p in enumerate(self.parameters) if p.grad is not None]
        groups: dict[float, list[int]] = {}
        for network, lr in enumerate(lrs):
            if lr != 0.0:
                groups.setdefault(lr, []).append(network)
        for lr, networks in groups.items():
            if len(networks) == self.stack_size:
                lists = [list(column) for column in zip(*tensors)]
            else:
                lists = [[self._rows(tensor)[k] for tensor in column for k in networks] for column in zip(*tensors)]
            torch._fused_adam_(*lists, [], [self._step_tensor] * len(lists[0]), lr=lr, beta1=self.betas[0],
                               beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps, amsgrad=False,
                               maximize=False)

    @torch.no_grad()
    def reset_network(self, index: int) -> None:
        """Zero network `index`'s optimizer state (used when it is taken out of training)."""
        for state in (self.momentum_buffers, self.exp_avg, self.exp_avg_sq):
            for tensor in state:
                self._rows(tensor)[index].zero_()


# ---- memory and chunks ------------------------------------------------------------------
def estimate_training_bytes(model_name: str, input_shape, batch_size: int, num_classes: int = 10,
                            optimizer: str = "sgd") -> int:
    """Rough bytes one network needs in a stacked training step (traced on 'meta': no memory, no compute)."""
    entry = models._entry(model_name)  # raises the registry's error for an unknown name
    with torch.device("meta"):
        model = entry.architecture(tuple(input_shape), num_classes)
        activation_elements = [0]

        def count(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                activation_elements[0] += output.numel()

        handles = [module.register_forward_hook(count) for module in model.modules() if not list(module.children())]
        model(torch.empty(batch_size, *input_shape))
        for handle in handles:
            handle.remove()
    parameter_elements = sum(p.numel() for p in model.parameters())
    state_copies = {"sgd": 2, "adam": 3}.get(optimizer, 3)  # momentum / moments, plus the mask multiplier
    bytes_per = 4
    # weight + grad + optimizer state; each layer output is kept for backward, plus a ReLU output and its grad
    return bytes_per * (parameter_elements * (2 + state_copies) + 3 * activation_elements[0]
                        + batch_size * math.prod(input_shape))


def chunks(count: int, size: int) -> list[range]:
    """Index ranges of at most `size` networks, as even as possible (7 by 4 -> 4 + 3)."""
    size = max(1, size)
    parts = max(1, math.ceil(count / size))
    base, extra = divmod(count, parts)
    ranges, start = [], 0
    for part in range(parts):
        length = base + (1 if part < extra else 0)
        ranges.append(range(start, start + length))
        start += length
    return ranges
