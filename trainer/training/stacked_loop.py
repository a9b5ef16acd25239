"""The training loop for K stacked networks: trainer.training.loop.train_segment, K networks per step.

Each network keeps what it would have alone: its own data order and augmentation (seeded by
its own data seed), its own mask, optimizer state and learning-rate multiplier, its own
events (labelled by its network name), curves, early-stop point and status: its
trainer.training.record.NetworkRecord, the bookkeeping the single-network loop uses. A network that
diverges is recorded as diverged at the iteration where it would have stopped alone, and
from then on is held at zero with a zero learning rate: the others train on unaffected.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

import torch

from trainer import datasets, events
from trainer.pruning import structured
from trainer.pruning.masks import Mask, MaskEnforcer
from trainer.seeds import generator
from trainer.spec import ExperimentSpec
from trainer.training.loop import EVAL_BATCH_SIZE, PreparedData, Schedule, train_segment
from trainer.training.record import NetworkRecord, RunningLoss, SegmentResult
from trainer.training.stacked import (
    StackedOptimizer,
    chunks,
    load_network_state,
    per_network_cross_entropy,
    repeat_inputs,
    stack_inputs,
    stack_masks,
    stack_states,
    unstack_state,
    unstack_states,
)


@torch.no_grad()
def evaluate_stacked(stacked: torch.nn.Module, x: datasets.Inputs | torch.Tensor, y: torch.Tensor
                     ) -> tuple[list[float], list[float]]:
    """Each network's mean cross-entropy and accuracy on one shared split, in stacked forwards."""
    size = stacked.stack_size
    count = len(y)
    if count == 0:
        return [float("nan")] * size, [float("nan")] * size
    split = datasets.as_inputs(x)
    was_training = stacked.training
    stacked.eval()
    loss_sum = torch.zeros(size, device=y.device)
    correct = torch.zeros(size, device=y.device, dtype=torch.long)
    chunk = max(1, EVAL_BATCH_SIZE // size)  # the activation memory of one solo eval batch
    for start in range(0, count, chunk):
        inputs, target = split.rows(slice(start, start + chunk)), y[start:start + chunk]
        batch = target.shape[0]
        logits = stacked(repeat_inputs(inputs, size))
        targets = target.unsqueeze(1).expand(batch, size)
        loss_sum += per_network_cross_entropy(logits, targets, reduction="sum")
        correct += (logits.view(batch, size, -1).argmax(dim=2) == targets).sum(0)
    stacked.train(was_training)
    return [value / count for value in loss_sum.tolist()], [value / count for value in correct.tolist()]


def _batch(data: PreparedData, permutations: torch.Tensor, offset: int, data_seeds: Sequence[int], iteration: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K*C, H, W) inputs and (B, K) targets: network k's batch of its own permutation."""
    batch_size = data.batch_size
    indices = permutations[:, offset * batch_size:(offset + 1) * batch_size]  # (K, B)
    targets = data.train_y[indices.t()]
    if not data.info.augment:
        return stack_inputs(data.train_inputs, indices), targets
    device = data.device
    gathered = data.inputs("train", indices)  # (K, B, C, H, W): one index op
    augmented = [datasets.augment_batch(images, generator(seed, "augment", iteration, device=device))
                 for images, seed in zip(gathered, data_seeds)]
    inputs = torch.stack(augmented, dim=1)  # (B, K, C, H, W)
    return inputs.view(batch_size, -1, *inputs.shape[3:]), targets


def train_segments_stacked(models: Sequence[torch.nn.Module], masks: Sequence[Mask], data: PreparedData,
                           spec: ExperimentSpec, start_iteration: int, end_iteration: int, *, round_index: int,
                           networks: Sequence[str], data_seeds: Sequence[int] | None = None,
                           lr_multipliers: Sequence[float] | None = None,
                           callback: events.Callback = events.ignore,
                           stop_requested: Callable[[], bool] = lambda: False,
                           snapshot_at: int | None = None) -> tuple[list[SegmentResult], list[dict]]:
    """Train the K `models` (same architecture, holding their starting weights) together.

    Network k uses masks[k], data_seeds[k] (default: spec.data_seed) for its data order and
    augmentation, lr_multipliers[k] (default 1) times the schedule's rate, and networks[k] as
    its name in events. Returns the K SegmentResults and the K trained state dicts, which are
    also loaded back into the given models (train_segment trains its model in place too).
    One network at the schedule's own rate trains in the single-network loop: K=1 is that path.
    """
    size = len(models)
    data_seeds = list(data_seeds) if data_seeds is not None else [spec.data_seed] * size
    lr_multipliers = list(lr_multipliers) if lr_multipliers is not None else [1.0] * size
    if not (len(masks) == len(networks) == len(data_seeds) == len(lr_multipliers) == size):
        raise ValueError("models, masks, networks, data_seeds and lr_multipliers need one entry per network")
    if size == 1 and lr_multipliers[0] == 1.0:
        result = train_segment(models[0], masks[0], data, replace(spec, data_seed=data_seeds[0]), start_iteration,
                               end_iteration, round_index=round_index, network=networks[0], callback=callback,
                               stop_requested=stop_requested, snapshot_at=snapshot_at)
        return [result], [{name: value.detach().clone() for name, value in models[0].state_dict().items()}]
    schedule = Schedule.from_spec(spec.training, data.iterations_per_epoch)
    device = data.device
    stacked = stack_states(models).to(device)
    enforced = [structured.training_mask(model, mask, data.info.input_shape) for model, mask in zip(models, masks)]
    enforcer = MaskEnforcer(stacked, stack_masks(stacked, enforced))
    enforcer.mask_weights()
    optimizer = StackedOptimizer.from_training_spec(stacked, spec.training)
    multipliers = torch.tensor(lr_multipliers, dtype=torch.float64)
    has_validation = len(data.val_y) > 0
    records = [NetworkRecord(network, round_index, callback, has_validation=has_validation, snapshot_at=snapshot_at)
               for network in networks]
    finals: list[dict | None] = [None] * size  # state dicts of networks that stopped early

    def take_out(index: int) -> None:
        """Network `index` stopped: keep its state as it is now, hold it at zero from here on."""
        finals[index] = unstack_state(stacked, index)
        multipliers[index] = 0.0
        zero_state = {name: torch.zeros(shape) for name, shape in stacked.stack_shapes.items()}
        for name, value in finals[index].items():
            if name.endswith("running_var"):
                zero_state[name] = torch.ones_like(value)  # a neutral batch norm, no NaN from 0/0
        load_network_state(stacked, index, zero_state)
        optimizer.reset_network(index)

    def training() -> tuple[bool, ...]:
        return tuple(record.training for record in records)

    def evaluate_all(iteration: int) -> None:
        val_losses, val_accuracies = evaluate_stacked(stacked, data.val_inputs, data.val_y)
        test_losses, test_accuracies = evaluate_stacked(stacked, data.test_inputs, data.test_y)
        for index, record in enumerate(records):
            if record.training and not record.evaluated(iteration, val_losses[index], val_accuracies[index],
                                                        test_losses[index], test_accuracies[index]):
                take_out(index)

    def snapshot(iteration: int) -> None:
        for index, record in enumerate(records):
            record.snapshot(iteration, partial(unstack_state, stacked, index))

    def finish() -> tuple[list[SegmentResult], list[dict]]:
        for record in records:
            record.finish()
        states = unstack_states(stacked)
        for index in range(size):
            if finals[index] is not None:
                states[index] = finals[index]
            models[index].load_state_dict(states[index])
        return [record.result for record in records], states

    snapshot(start_iteration)
    stacked.train()
    evaluate_all(start_iteration)

    per_epoch = data.iterations_per_epoch
    permutations, permutation_epoch = None, -1
    running_loss = RunningLoss(size, device)
    rates, rates_key = None, None
    for iteration in range(start_iteration, end_iteration):
        if not any(training()):
            break
        epoch, offset = divmod(iteration, per_epoch)
        if epoch != permutation_epoch:
            permutations = torch.stack([
                torch.randperm(len(data.train_y), device=device,
                               generator=generator(seed, "order", epoch, device=device)) for seed in data_seeds])
            permutation_epoch = epoch
        inputs, targets = _batch(data, permutations, offset, data_seeds, iteration)
        lr = schedule.lr_at(iteration)
        losses = per_network_cross_entropy(stacked(inputs), targets)
        optimizer.zero_grad()
        losses.sum().backward()  # the sum of per-network means: each network gets its solo gradient
        enforcer.mask_gradients()
        if rates_key != (lr, training()):
            rates, rates_key = (multipliers * lr).tolist(), (lr, training())
        optimizer.step(rates)
        running_loss.add(losses.detach())
        done = iteration + 1

        if schedule.is_metrics_point(done, end_iteration):
            mean_losses = running_loss.take_means()
            for index, record in enumerate(records):
                if record.training and not record.trained(done, mean_losses[index], lr * lr_multipliers[index]):
                    take_out(index)
            if any(training()) and stop_requested():
                for index, record in enumerate(records):
                    if record.training:
                        record.stop("cancelled")
                        take_out(index)
                return finish()
        snapshot(done)
        if schedule.is_eval_point(done, start_iteration, end_iteration) and any(training()):
            evaluate_all(done)
    return finish()


def train_segments(models: Sequence[torch.nn.Module], masks: Sequence[Mask], data: PreparedData, spec: ExperimentSpec,
                   start_iteration: int, end_iteration: int, *, round_index: int, networks: Sequence[str],
                   stack_size: int, data_seeds: Sequence[int] | None = None,
                   lr_multipliers: Sequence[float] | None = None, callback: events.Callback = events.ignore,
                   stop_requested: Callable[[], bool] = lambda: False,
                   snapshot_at: int | None = None) -> tuple[list[SegmentResult], list[dict]]:
    """train_segments_stacked over any number of networks, in chunks of at most `stack_size`
    (trainer.training.stack_size chooses one for a machine). After a cancellation the networks of
    later chunks are returned as cancelled, untrained."""
    count = len(models)
    data_seeds = list(data_seeds) if data_seeds is not None else [spec.data_seed] * count
    lr_multipliers = list(lr_multipliers) if lr_multipliers is not None else [1.0] * count
    results: list[SegmentResult] = []
    states: list[dict] = []
    for part in chunks(count, stack_size):
        if results and any(result.status == "cancelled" for result in results):
            for index in part:
                results.append(SegmentResult(status="cancelled"))
                states.append({name: value.detach().clone() for name, value in models[index].state_dict().items()})
            continue
        def pick(values, part=part):
            return [values[index] for index in part]

        part_results, part_states = train_segments_stacked(
            pick(models), pick(masks), data, spec, start_iteration, end_iteration, round_index=round_index,
            networks=pick(networks), data_seeds=pick(data_seeds), lr_multipliers=pick(lr_multipliers),
            callback=callback, stop_requested=stop_requested, snapshot_at=snapshot_at)
        results.extend(part_results)
        states.extend(part_states)
    return results, states
