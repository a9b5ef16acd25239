"""Effective sparsity: a weight survives only if it is unmasked and both its units are alive.

Hand-made masks on tiny networks whose effective weights are known by hand (an MLP, a conv net
with batch norm and a flatten, a residual block), and training that keeps dead units at exactly 0.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer import models
from trainer.imp import run_experiment
from trainer.pruning.masks import MaskEnforcer
from trainer.pruning.structured import effective_mask, training_mask
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec

T, F_ = True, False


def bools(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def zero_ineffective(model: nn.Module, effective: dict) -> nn.Module:
    """The effective network: `model` with every parameter that is not effective set to 0."""
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in zeroed.named_parameters():
            parameter.mul_(effective[name].to(parameter.dtype))
    return zeroed


# ---- a tiny MLP ------------------------------------------------------------------------------
class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 3)
        self.fc3 = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x.flatten(1))))))


MLP_MASK = {
    # hidden unit 0 gets no input; hidden unit 3 sends nothing on (fc2's column 3 is pruned)
    "fc1.weight": bools([[F_, F_, F_], [T, F_, F_], [T, T, T], [T, T, T]]),
    # fc2's unit 2 reads only hidden unit 0, which is dead: it is dead too
    "fc2.weight": bools([[T, T, T, F_], [T, T, T, F_], [T, F_, F_, F_]]),
    "fc3.weight": bools([[T, T, T], [T, T, T]]),
}


def test_mlp_effective_mask_by_hand():
    effective = effective_mask(TinyMLP(), MLP_MASK, (1, 1, 3))
    assert effective["fc1.weight"].tolist() == [[F_, F_, F_], [T, F_, F_], [T, T, T], [F_, F_, F_]]
    assert effective["fc2.weight"].tolist() == [[F_, T, T, F_], [F_, T, T, F_], [F_, F_, F_, F_]]
    assert effective["fc3.weight"].tolist() == [[T, T, F_], [T, T, F_]]
    assert effective["fc1.bias"].tolist() == [F_, T, T, F_]
    assert effective["fc2.bias"].tolist() == [T, T, F_]
    assert effective["fc3.bias"].tolist() == [T, T]
    assert sum(int(m.sum()) for m in effective.values()) == 4 + 4 + 4 + 2 + 2 + 2  # weights + live biases


def test_a_dense_mask_is_fully_effective_and_training_mask_leaves_it_alone():
    model = TinyMLP()
    dense = {name: torch.ones_like(p, dtype=torch.bool) for name, p in model.named_parameters() if "weight" in name}
    assert all(bool(m.all()) for m in effective_mask(model, dense, (1, 1, 3)).values())
    assert training_mask(model, dense, (1, 1, 3)) is dense


def test_training_mask_adds_the_biases_of_dead_units_only():
    enforced = training_mask(TinyMLP(), MLP_MASK, (1, 1, 3))
    for name in MLP_MASK:
        assert torch.equal(enforced[name], MLP_MASK[name]), "weights keep their own mask (IMP ranks them)"
    assert enforced["fc1.bias"].tolist() == [F_, T, T, F_]
    assert enforced["fc2.bias"].tolist() == [T, T, F_]
    assert "fc3.bias" not in enforced, "no dead output unit: nothing to add"


# ---- a tiny conv net with batch norm and a flatten -------------------------------------------
class TinyConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * 2 * 2, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(F.max_pool2d(x, 2).flatten(1))


def conv_mask() -> dict:
    """Half of conv1's filters pruned (channels 0, 1); bn2's channel 1 pruned by its γ/β mask (early bird)."""
    conv1 = torch.ones(4, 1, 3, 3, dtype=torch.bool)
    conv1[:2] = False
    return {"conv1.weight": conv1, "conv2.weight": torch.ones(2, 4, 3, 3, dtype=torch.bool),
            "fc.weight": torch.ones(3, 8, dtype=torch.bool),
            "bn2.weight": bools([T, F_]), "bn2.bias": bools([T, F_])}


def test_pruning_half_the_channels_removes_the_next_layers_weights_reading_them():
    effective = effective_mask(TinyConvBN(), conv_mask(), (1, 4, 4))
    assert effective["conv1.weight"][2:].all() and not effective["conv1.weight"][:2].any()
    conv2 = effective["conv2.weight"]
    assert conv2[0, 2:].all() and not conv2[0, :2].any(), "conv2 reads only conv1's live channels"
    assert not conv2[1].any(), "bn2's channel 1 is pruned: the filter feeding it carries nothing"
    flat = effective["fc.weight"]
    assert flat[:, :4].all() and not flat[:, 4:].any(), "flattened features of channel 1 (indices 4..7) are dead"
    assert effective["bn1.weight"].tolist() == effective["bn1.bias"].tolist() == [F_, F_, T, T]
    assert effective["bn2.weight"].tolist() == effective["bn2.bias"].tolist() == [T, F_]
    unmasked = 18 + 72 + 24
    surviving = 18 + 2 * 9 + 3 * 4
    assert (unmasked, surviving) == (114, 48)  # of 132 prunable weights: 86% unmasked, 36% surviving
    assert sum(int(effective[n].sum()) for n in ("conv1.weight", "conv2.weight", "fc.weight")) == surviving


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-4),
], ids=["sgd", "adam"])
def test_dead_units_stay_exactly_zero_in_training_and_the_network_is_its_effective_network(make_optimizer):
    torch.manual_seed(0)
    model = TinyConvBN()
    with torch.no_grad():  # as after some training: nonzero shifts everywhere, which pruning must silence
        for module in (model.bn1, model.bn2):
            module.bias.uniform_(0.5, 1.0)
        model.fc.bias.uniform_(-1.0, 1.0)
    mask = conv_mask()
    enforcer = MaskEnforcer(model, training_mask(model, mask, (1, 4, 4)))
    enforcer.mask_weights()
    optimizer = make_optimizer(model.parameters())
    x, y = torch.randn(16, 1, 4, 4), torch.randint(0, 3, (16,))
    model.train()
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        enforcer.mask_gradients()
        optimizer.step()
        enforcer.after_step()
    for name in ("bn1.weight", "bn1.bias"):
        assert (getattr(model.bn1, name.split(".")[1])[:2] == 0).all(), f"{name} of dead channels moved"
    assert (model.bn2.weight[1] == 0) and (model.bn2.bias[1] == 0)
    assert (model.bn1.bias[2:] != 0).all(), "live channels train"
    effective = effective_mask(model, mask, (1, 4, 4))
    shrunk = zero_ineffective(model, effective)
    model.eval(), shrunk.eval()
    test = torch.randn(8, 1, 4, 4)
    assert torch.equal(model(test), shrunk(test))
    # the running statistics of a dead channel cannot leak: with γ = β = 0 it outputs 0 whatever they are
    with torch.no_grad():
        model.bn1.running_mean[:2] = 123.0
        model.bn1.running_var[:2] = 1e-6
    assert torch.equal(model(test), shrunk(test))


# ---- a residual block ------------------------------------------------------------------------
class TinyResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.block = models.BasicBlock(2, 2, 1)  # identity shortcut
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.block(torch.relu(self.bn(self.conv(x)))).mean(dim=(2, 3)))


def residual_mask(pruned_filter: str) -> dict:
    mask = {name: torch.ones_like(p, dtype=torch.bool) for name, p in TinyResidual().named_parameters()
            if name.endswith("weight") and p.dim() > 1}
    mask[pruned_filter][1] = False
    return mask


def test_a_pruned_residual_filter_leaves_its_channel_alive_through_the_shortcut():
    effective = effective_mask(TinyResidual(), residual_mask("block.conv2.weight"), (1, 4, 4))
    assert not effective["block.bn2.weight"][1] and not effective["block.bn2.bias"][1], "the branch's channel is dead"
    assert effective["fc.weight"].all(), "the residual channel 1 still carries the stem's signal"
    assert effective["block.conv1.weight"].all() and effective["conv.weight"].all()
    assert effective["block.conv2.weight"][0].all() and not effective["block.conv2.weight"][1].any()


def test_a_pruned_stem_channel_is_revived_by_the_residual_branch():
    effective = effective_mask(TinyResidual(), residual_mask("conv.weight"), (1, 4, 4))
    assert not effective["conv.weight"][1].any() and effective["bn.weight"].tolist() == [T, F_]
    assert effective["block.conv1.weight"][:, 0].all() and not effective["block.conv1.weight"][:, 1].any(), \
        "block.conv1 reads a dead stem channel 1"
    assert effective["block.conv2.weight"].all() and effective["fc.weight"].all(), \
        "after the addition channel 1 carries the branch's signal"


# ---- the engine: records and training of a structured IMP run --------------------------------
def test_structured_run_reports_effective_counts_and_trains_dead_units_at_zero(tmp_path):
    spec = ExperimentSpec.from_dict({
        # late rewinding: θk's biases are trained, so a pruned neuron starts round 1 with a nonzero one
        "dataset": "synthetic", "validation_size": 100, "device": "cpu", "replicates": 2, "rewind_step": "10it",
        "training": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50,
                     "training_steps": "20it", "eval_interval": "20it", "metrics_interval": 10},
        "pruning": {"structure": "units", "fraction": 0.5, "rounds": 1}})
    results = run_experiment(spec, tmp_path)
    record = results["rounds"][1]
    surviving = 150 * 784 + 50 * 150 + 10 * 50  # fc2 keeps 50 rows, fc3 all rows: their dead columns go
    total = 784 * 300 + 300 * 100 + 100 * 10
    assert record["remaining_fraction"] == surviving / total
    assert record["unmasked_fraction"] == (150 * 784 + 50 * 300 + 1000) / total
    assert record["effective_parameters"] == surviving + 150 + 50 + 10
    run_dir = RunDir.open(tmp_path / results["run_name"])
    for replicate in (0, 1):  # the two replicates train stacked
        state = run_dir.replicate(replicate).final_weights(1)
        mask = run_dir.replicate(replicate).mask(1)
        dead = ~mask["fc1.weight"].any(dim=1)
        assert int(dead.sum()) == 150
        assert (state["fc1.bias"][dead] == 0).all(), "a pruned neuron's bias stays 0"
        assert (state["fc1.bias"][~dead] != 0).any()
        assert (state["fc2.bias"][~mask["fc2.weight"].any(dim=1)] == 0).all()
        model = models.build_model("lenet_300_100", (1, 28, 28), 10, 0)
        model.load_state_dict(state)
        shrunk = zero_ineffective(model, effective_mask(model, mask, (1, 28, 28)))
        x = torch.rand(16, 1, 28, 28)
        assert torch.equal(model(x), shrunk(x))
