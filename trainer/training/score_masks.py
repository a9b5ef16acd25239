"""Learning a mask over frozen weights: a score per weight decides whether the weight is used, and
only the scores train (strong tickets and learned supermasks; the studies that use this are
trainer.analyses.edge_popup and trainer.analyses.learned_supermask).

Two ways a score becomes a mask, each with a straight-through gradient to the scores:

  top-k (Ramanujan et al. 2020, "What's Hidden in a Randomly Weighted Neural Network?", Alg. 1):
      the mask keeps exactly kept_count(n, k) weights of each layer, those with the largest |score|;
      backward passes the mask's gradient to the scores unchanged.
  Bernoulli (Zhou et al. 2019, "Deconstructing Lottery Tickets", Section 5.1): the mask is a sample
      of Bernoulli(sigmoid(score)) drawn at every forward pass; backward passes the sample's
      gradient to the probability unchanged, and on through the sigmoid.

The network's weights stay the tensors they were given: the forward pass computes with
weight × mask through torch.func.functional_call, and the optimizer only holds the scores.

Several networks of one architecture that train their scores over the same iterations on the same
batches (the k values of one edge-popup width, the weight choices of a learned supermask, the three
two-layer models of one Malach width) train stacked: `train_scores_stacked` runs them as one module
(trainer.training.stacked), each with its own scores, mask rule and objective; SGD acts elementwise
and the loss is the sum of the networks' losses, so each network's scores get the gradient and the
update they would get alone (equal up to float reordering of the stacked matmuls).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from trainer import events
from trainer.datasets import Inputs
from trainer.training.loop import DataOrder, PreparedData, evaluate
from trainer.training.stacked import repeat_inputs, stack_states, unstack_state

MaskMaker = Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]]  # (scores, iteration) -> masks
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, inputs, targets) -> loss


def classification_loss(outputs: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The default objective: cross-entropy of the outputs (logits) against the labels."""
    return F.cross_entropy(outputs, targets)


def kept_count(total: int, kept_fraction: float) -> int:
    """Weights a top-k mask keeps of a layer of `total`: k·n rounded half up, at least one."""
    return min(total, max(1, math.floor(kept_fraction * total + 0.5)))


def top_k_mask(scores: torch.Tensor, kept_fraction: float) -> torch.Tensor:
    """A boolean mask of the kept_count weights with the largest |score| (exactly that many)."""
    flat = scores.detach().abs().flatten()
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=scores.device)
    mask[torch.topk(flat, kept_count(flat.numel(), kept_fraction), sorted=False).indices] = True
    return mask.view(scores.shape)


class TopKStraightThrough(torch.autograd.Function):
    """Forward: the top-k mask of non-negative `magnitudes` as 0/1 values; backward: the mask's gradient,
    unchanged, to the magnitudes."""

    @staticmethod
    def forward(ctx, magnitudes: torch.Tensor, kept_fraction: float) -> torch.Tensor:
        return top_k_mask(magnitudes, kept_fraction).to(magnitudes.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def top_k_masks(scores: dict[str, torch.Tensor], kept_fraction: float) -> dict[str, torch.Tensor]:
    """The top-k mask of each layer by |score|, with the straight-through gradient to |score| (and so,
    through the absolute value, to the score: the paper's code ranks scores.abs() the same way)."""
    return {name: TopKStraightThrough.apply(score.abs(), kept_fraction) for name, score in scores.items()}


class BernoulliStraightThrough(torch.autograd.Function):
    """Forward: a 0/1 sample of Bernoulli(probabilities); backward: the sample's gradient to the probabilities."""

    @staticmethod
    def forward(ctx, probabilities: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.bernoulli(probabilities.detach(), generator=generator)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def sampled_masks(scores: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One Bernoulli(sigmoid(score)) mask per layer, in the order of `scores`, with straight-through gradients."""
    return {name: BernoulliStraightThrough.apply(torch.sigmoid(score), generator) for name, score in scores.items()}


class MaskedNetwork(nn.Module):
    """`model` computing with weight × mask for the masked weights (fixed masks): what evaluate() runs."""

    def __init__(self, model: nn.Module, frozen: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]):
        super().__init__()
        self.model = model
        self.weights = {name: frozen[name] * masks[name].to(frozen[name].dtype) for name in masks}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, self.weights, (x,))


@dataclass
class ScoreTraining:
    """How the scores train: SGD with momentum and weight decay, a cosine learning rate from `lr` to 0
    over `iterations` (per iteration), on the batches of DataOrder(data, data_seed)."""
    iterations: int
    lr: float
    momentum: float
    weight_decay: float
    data_seed: int
    metrics_interval: int = 100


@dataclass
class ScoreResult:
    status: str  # "finished" | "diverged" | "cancelled"
    train_loss: dict = field(default_factory=lambda: {"iteration": [], "loss": []})
    message: str = ""
    wall_seconds: float = 0.0


def cosine_lr(base_lr: float, iteration: int, iterations: int) -> float:
    return 0.5 * base_lr * (1 + math.cos(math.pi * iteration / iterations))


def train_scores(model: nn.Module, frozen: dict[str, torch.Tensor], scores: dict[str, torch.Tensor],
                 make_masks: MaskMaker, data: PreparedData, plan: ScoreTraining, *, network: str,
                 callback: events.Callback = events.ignore, stop_requested: Callable[[], bool] = lambda: False,
                 objective: Objective = classification_loss) -> ScoreResult:
    """Train `scores` (leaf tensors, updated in place) so that `model` with weight × make_masks(scores)
    for the weights in `frozen` minimises `objective` on the data (default: cross-entropy on the labels);
    `frozen` and the model's parameters are never changed. Batch-norm running statistics do update (they
    are statistics, not trained weights)."""
    for score in scores.values():
        score.requires_grad_(True)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.SGD(list(scores.values()), lr=plan.lr, momentum=plan.momentum,
                                weight_decay=plan.weight_decay)
    order = DataOrder(data, plan.data_seed)
    result = ScoreResult(status="finished")
    began = time.perf_counter()
    running, count = 0.0, 0
    model.train()
    for iteration in range(plan.iterations):
        inputs, targets = order.batch(iteration)
        lr = cosine_lr(plan.lr, iteration, plan.iterations)
        for group in optimizer.param_groups:
            group["lr"] = lr
        masks = make_masks(scores, iteration)
        weights = {name: frozen[name] * masks[name] for name in masks}
        loss = objective(functional_call(model, weights, (inputs,)), inputs, targets)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
        running += loss.item()
        count += 1
        done = iteration + 1
        if done % plan.metrics_interval == 0 or done == plan.iterations:
            mean_loss = running / count
            running, count = 0.0, 0
            if not math.isfinite(mean_loss):
                result.status, result.message = "diverged", f"the training loss became NaN/inf at iteration {done}"
                break
            result.train_loss["iteration"].append(done)
            result.train_loss["loss"].append(mean_loss)
            callback(events.make_event(events.METRICS, network, round=0, iteration=done, train_loss=mean_loss, lr=lr))
            if stop_requested():
                result.status = "cancelled"
                break
    for score in scores.values():
        score.requires_grad_(False)
    result.wall_seconds = time.perf_counter() - began
    return result


@dataclass
class ScoreJob:
    """One network of a stacked score training: `model` with weight × make_masks(scores) for the weights in
    `frozen` (a weight the masks leave out keeps the model's value); `weight_decay` overrides the plan's."""
    network: str
    model: nn.Module
    frozen: dict[str, torch.Tensor]
    scores: dict[str, torch.Tensor]
    make_masks: MaskMaker
    objective: Objective = classification_loss
    weight_decay: float | None = None


def train_scores_stacked(jobs: list[ScoreJob], data: PreparedData, plan: ScoreTraining, *,
                         callback: events.Callback = events.ignore,
                         stop_requested: Callable[[], bool] = lambda: False) -> list[ScoreResult]:
    """train_scores for every job at once, the jobs' models (one architecture) stacked into one module;
    one ScoreResult per job. All jobs see the same batches (DataOrder(data, plan.data_seed)) and learning
    rate; a job that diverges is reported so and the others go on; a stop request cancels them all. The
    jobs' models get their updated batch-norm statistics back, as train_scores leaves them."""
    if len(jobs) == 1:
        job = jobs[0]
        decay = plan.weight_decay if job.weight_decay is None else job.weight_decay
        return [train_scores(job.model, job.frozen, job.scores, job.make_masks, data,
                             ScoreTraining(plan.iterations, plan.lr, plan.momentum, decay, plan.data_seed,
                                           plan.metrics_interval),
                             network=job.network, callback=callback, stop_requested=stop_requested,
                             objective=job.objective)]
    size = len(jobs)
    stacked = stack_states([job.model for job in jobs])
    for parameter in stacked.parameters():
        parameter.requires_grad_(False)
    fixed = {name: tensor.detach().view(size, *stacked.stack_shapes[name])
             for name, tensor in stacked.named_parameters()}
    groups = []
    for job in jobs:
        for score in job.scores.values():
            score.requires_grad_(True)
        groups.append({"params": list(job.scores.values()),
                       "weight_decay": plan.weight_decay if job.weight_decay is None else job.weight_decay})
    optimizer = torch.optim.SGD(groups, lr=plan.lr, momentum=plan.momentum)
    order = DataOrder(data, plan.data_seed)
    results = [ScoreResult(status="finished") for _ in jobs]
    training = [True] * size
    began = time.perf_counter()
    running, count = torch.zeros(size, dtype=torch.float64), 0
    stacked.train()
    for iteration in range(plan.iterations):
        inputs, targets = order.batch(iteration)
        lr = cosine_lr(plan.lr, iteration, plan.iterations)
        for group in optimizer.param_groups:
            group["lr"] = lr
        masks = [job.make_masks(job.scores, iteration) for job in jobs]
        weights = {}
        for name in {name for job_masks in masks for name in job_masks}:
            rows = [job.frozen[name] * job_masks[name] if name in job_masks else fixed[name][index]
                    for index, (job, job_masks) in enumerate(zip(jobs, masks))]
            weights[name] = torch.stack(rows).view(stacked.get_parameter(name).shape)
        outputs = functional_call(stacked, weights, (repeat_inputs(inputs, size),))
        per_network = outputs.view(outputs.shape[0], size, -1)
        losses = torch.stack([job.objective(per_network[:, index], inputs, targets) for index, job in enumerate(jobs)])
        optimizer.zero_grad(set_to_none=False)
        losses.sum().backward()
        optimizer.step()
        running += losses.detach().to(running.dtype).cpu()
        count += 1
        done = iteration + 1
        if done % plan.metrics_interval == 0 or done == plan.iterations:
            for index, job in enumerate(jobs):
                if not training[index]:
                    continue
                mean_loss = running[index].item() / count
                if not math.isfinite(mean_loss):
                    results[index].status = "diverged"
                    results[index].message = f"the training loss became NaN/inf at iteration {done}"
                    training[index] = False
                    continue
                results[index].train_loss["iteration"].append(done)
                results[index].train_loss["loss"].append(mean_loss)
                callback(events.make_event(events.METRICS, job.network, round=0, iteration=done, train_loss=mean_loss,
                                           lr=lr))
            running.zero_()
            count = 0
            if stop_requested():
                for index in range(size):
                    if training[index]:
                        results[index].status = "cancelled"
                break
            if not any(training):
                break
    wall = time.perf_counter() - began
    for index, job in enumerate(jobs):
        for score in job.scores.values():
            score.requires_grad_(False)
        state = unstack_state(stacked, index)
        with torch.no_grad():
            for name, buffer in job.model.named_buffers():
                buffer.copy_(state[name])
        results[index].wall_seconds = wall / size  # the stack's time, shared evenly
    return results


def identity_masks(values: dict[str, torch.Tensor], iteration: int) -> dict[str, torch.Tensor]:
    """A MaskMaker whose masks are the trained tensors themselves: on `frozen` tensors of ones, train_scores
    then trains those weights directly (ordinary training of the chosen layers with the same loop)."""
    return values


def train_weights(model: nn.Module, weights: dict[str, torch.Tensor], data: PreparedData, plan: ScoreTraining, *,
                  network: str, callback: events.Callback = events.ignore,
                  stop_requested: Callable[[], bool] = lambda: False) -> ScoreResult:
    """Train the tensors `weights` (leaf tensors, updated in place) as the named weights of `model` on the labels
    with `plan` (the score-training loop on real-valued 'masks' of ones); every other parameter stays fixed."""
    ones = {name: torch.ones_like(weight) for name, weight in weights.items()}
    return train_scores(model, ones, weights, identity_masks, data, plan, network=network, callback=callback,
                        stop_requested=stop_requested)


def accuracy_with(model: nn.Module, frozen: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                  x: Inputs | torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` with weight × mask, in eval mode."""
    with torch.no_grad():
        return evaluate(MaskedNetwork(model, frozen, masks), x, y)
