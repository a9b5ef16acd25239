"""The single-network loop's FusedOptimizer computes exactly what torch.optim's fused SGD and Adam compute."""
import pytest
import torch

from tests.trainer.pruning.test_masks import OPTIMIZERS as SETTINGS, _model
from trainer.spec import ExperimentSpec
from trainer.training.loop import FusedOptimizer


def _torch_optimizer(model, training):
    if training.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=training.lr, momentum=training.momentum,
                               weight_decay=training.weight_decay, fused=True)
    return torch.optim.Adam(model.parameters(), lr=training.lr, weight_decay=training.weight_decay, fused=True)


@pytest.mark.parametrize("name", SETTINGS)
def test_fused_optimizer_equals_torch_optim_bit_for_bit_with_a_changing_rate(name):
    training = ExperimentSpec.from_dict({"training": SETTINGS[name]}).training
    ours, theirs = _model(), _model()
    optimizer, reference = FusedOptimizer(ours, training), _torch_optimizer(theirs, training)
    generator = torch.Generator().manual_seed(1)
    for step in range(12):
        lr = training.lr * (0.5 if step >= 6 else 1.0)
        for group in reference.param_groups:
            group["lr"] = lr
        x, y = torch.randn(32, 20, generator=generator), torch.randint(0, 4, (32,), generator=generator)
        for model, stepper in ((ours, optimizer), (theirs, reference)):
            stepper.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step(lr)
        reference.step()
    for (name_ours, mine), (_, theirs_tensor) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert torch.equal(mine, theirs_tensor), name_ours


def test_a_parameter_without_a_gradient_is_not_stepped():
    training = ExperimentSpec.from_dict({"training": SETTINGS["adam_weight_decay"]}).training
    model = _model()
    before = model[2].bias.detach().clone()
    optimizer = FusedOptimizer(model, training)
    model(torch.randn(4, 20)).sum().backward()
    model[2].bias.grad = None  # as if the bias took no part in the loss
    optimizer.step(training.lr)
    assert torch.equal(model[2].bias.detach(), before)
    assert int(optimizer.steps[model[2].bias]) == 0 and int(optimizer.steps[model[0].weight]) == 1
