"""Pruned weights are exactly zero after every optimizer step, under every optimizer."""
import pytest
import torch

from trainer.pruning.masks import MaskEnforcer, dense_mask
from trainer.pruning.rules import magnitude_scores, prune_by_scores
from trainer.spec import ExperimentSpec
from trainer.training.loop import FusedOptimizer

OPTIMIZERS = {
    "sgd": {"optimizer": "sgd", "lr": 0.1},
    "sgd_momentum_weight_decay": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
    "adam": {"optimizer": "adam", "lr": 0.01},
    "adam_weight_decay": {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.01},
}


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_pruned_weights_stay_exactly_zero_and_their_optimizer_state_stays_zero(name):
    model = _model()
    names = ["0.weight", "2.weight"]
    parameters = dict(model.named_parameters())
    scores = magnitude_scores({n: parameters[n] for n in names})
    mask = prune_by_scores(dense_mask(model, names), scores, 0.6, "layerwise")
    spec = ExperimentSpec.from_dict({"training": OPTIMIZERS[name]})
    optimizer = FusedOptimizer(model, spec.training)
    enforcer = MaskEnforcer(model, mask)
    enforcer.mask_weights()
    generator = torch.Generator().manual_seed(1)
    for _ in range(25):
        x = torch.randn(32, 20, generator=generator)
        y = torch.randint(0, 4, (32,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        enforcer.mask_gradients()
        optimizer.step(spec.training.lr)
        for n in names:
            dead = ~mask[n]
            assert torch.count_nonzero(parameters[n].detach()[dead]) == 0
            assert torch.count_nonzero(parameters[n].detach()[mask[n]]) == int(mask[n].sum())
    for n in names:
        for state in (optimizer.momentum_buffers, optimizer.exp_avg, optimizer.exp_avg_sq):
            if parameters[n] in state:
                assert torch.count_nonzero(state[parameters[n]][~mask[n]]) == 0


def test_without_the_enforcer_weight_decay_and_momentum_would_revive_weights():
    """The enforcer is what keeps them dead: the same loop without it moves pruned weights."""
    model = _model()
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        parameters["0.weight"][:, :5] = 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(32, 20), torch.randint(0, 4, (32,))
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert torch.count_nonzero(parameters["0.weight"][:, :5]) > 0
