"""Pruning at initialisation: SNIP, GraSP, SynFlow, random, magnitude; exact targets; layer collapse."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from trainer import models
from trainer.analyses import pruning_at_init as pai_analysis
from trainer.imp import run_experiment
from trainer.pruning.at_init import (
    METHODS,
    collapsed_layers,
    grasp_scores,
    pruning_at_init_mask,
    remaining_count,
    snip_scores,
    synflow_scores,
)
from trainer.pruning.masks import dense_mask
from trainer.spec import ExperimentSpec, SpecError


class TwoLayer(nn.Module):
    """logits = W2 W1 x: small enough to differentiate by hand."""

    def __init__(self, seed=0, inputs=3, hidden=4, classes=2):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(inputs, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, classes, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.randn(hidden, inputs, generator=g))
            self.fc2.weight.copy_(torch.randn(classes, hidden, generator=g))
        self.double()

    def forward(self, x):
        return self.fc2(self.fc1(x))


NAMES = ["fc1.weight", "fc2.weight"]


def hand_gradients(w1, w2, x, y, temperature=1.0):
    """Mean cross-entropy of (W2 W1 x) / T: dL/dz = (softmax(z) - onehot) / (N T)."""
    z = (x @ w1.T @ w2.T) / temperature
    p = torch.exp(z - z.max(dim=1, keepdim=True).values)
    p = p / p.sum(dim=1, keepdim=True)
    dz = (p - torch.eye(w2.shape[0], dtype=x.dtype)[y]) / (x.shape[0] * temperature)
    return w2.T @ dz.T @ x, dz.T @ (x @ w1.T)


def batch():
    g = torch.Generator().manual_seed(5)
    return torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (8,), generator=g)


def test_snip_is_abs_gradient_times_weight():
    net, (x, y) = TwoLayer(), batch()
    w1, w2 = net.fc1.weight.detach(), net.fc2.weight.detach()
    g1, g2 = hand_gradients(w1, w2, x, y)
    scores = snip_scores(net, NAMES, x, y)
    torch.testing.assert_close(scores["fc1.weight"], (g1 * w1).abs().float())
    torch.testing.assert_close(scores["fc2.weight"], (g2 * w2).abs().float())


def test_grasp_is_hessian_gradient_product_times_weight():
    net, (x, y) = TwoLayer(), batch()
    w1, w2 = net.fc1.weight.detach(), net.fc2.weight.detach()
    temperature = 3.0
    g1, g2 = hand_gradients(w1, w2, x, y, temperature)
    eps = 1e-6  # H g by central differences of the hand gradient, in float64
    plus = hand_gradients(w1 + eps * g1, w2 + eps * g2, x, y, temperature)
    minus = hand_gradients(w1 - eps * g1, w2 - eps * g2, x, y, temperature)
    hg1, hg2 = [(p - m) / (2 * eps) for p, m in zip(plus, minus)]
    scores = grasp_scores(net, NAMES, x, y, temperature=temperature)
    torch.testing.assert_close(scores["fc1.weight"], (hg1 * w1).float(), rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(scores["fc2.weight"], (hg2 * w2).float(), rtol=1e-4, atol=1e-9)


def test_synflow_matches_the_hand_computation_and_conserves_flow():
    net = TwoLayer(inputs=5, hidden=4, classes=3)
    a1, a2 = net.fc1.weight.detach().abs(), net.fc2.weight.detach().abs()
    scores = synflow_scores(net, NAMES, (5,))
    # R = 1ᵀ|W2||W1|1: dR/dW1[j, i] = Σ_k |W2[k, j]|, dR/dW2[k, j] = Σ_i |W1[j, i]|
    torch.testing.assert_close(scores["fc1.weight"], (a2.sum(0)[:, None] * a1).float())
    torch.testing.assert_close(scores["fc2.weight"], (a2 * a1.sum(1)[None, :]).float())
    # conservation: each hidden neuron's incoming scores sum to its outgoing scores, every layer sums to R
    torch.testing.assert_close(scores["fc1.weight"].sum(1), scores["fc2.weight"].sum(0))
    flow = float((a2 @ a1).sum())
    assert float(scores["fc1.weight"].sum()) == pytest.approx(flow, rel=1e-6)
    assert float(scores["fc2.weight"].sum()) == pytest.approx(flow, rel=1e-6)
    assert torch.equal(net.fc1.weight.detach().abs(), a1) and (net.fc1.weight < 0).any(), "the model is untouched"


def lenet():
    return models.build_model("lenet_300_100", (1, 28, 28), 10, 0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_every_method_hits_the_target_count_exactly(method, scope):
    model = lenet()
    mask = dense_mask(model, ["fc1.weight", "fc2.weight", "fc3.weight"])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
    target = 0.037
    pruned = pruning_at_init_mask(method, model, mask, target, inputs=x, targets=y, input_shape=(1, 28, 28),
                                  random_generator=torch.Generator().manual_seed(3), scope=scope,
                                  synflow_iterations=4)
    if scope == "global":
        assert sum(int(m.sum()) for m in pruned.values()) == remaining_count(target, 266200) == 9849
    else:
        for _name, m in pruned.items():
            assert int(m.sum()) == remaining_count(target, m.numel())


class Imbalanced(nn.Module):
    """A narrow first layer with tiny weights before a wide, large one: global magnitude empties it."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc1 = nn.Linear(4, 8, bias=False)  # no biases: SynFlow's no-collapse argument is about weight paths
        self.fc2 = nn.Linear(8, 200, bias=False)
        self.fc3 = nn.Linear(200, 10, bias=False)
        with torch.no_grad():
            for layer, scale in ((self.fc1, 0.01), (self.fc2, 1.0), (self.fc3, 1.0)):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * scale)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x.flatten(1))))))


def test_layer_collapse_is_detected_and_synflow_avoids_it():
    model = Imbalanced()
    mask = dense_mask(model, ["fc1.weight", "fc2.weight", "fc3.weight"])
    magnitude = pruning_at_init_mask("magnitude", model, mask, 0.02, input_shape=(4,))
    assert collapsed_layers(magnitude) == ["fc1.weight"]
    synflow = pruning_at_init_mask("synflow", model, mask, 0.02, input_shape=(4,), synflow_iterations=20)
    assert collapsed_layers(synflow) == []
    assert sum(int(m.sum()) for m in synflow.values()) == remaining_count(0.02, 32 + 1600 + 2000)


def test_pruning_at_init_trains_each_target_from_iteration_0_and_resumes(tmp_path):
    spec = ExperimentSpec.from_dict({
        "dataset": "synthetic", "validation_size": 500, "device": "cpu",
        "training": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50,
                     "training_steps": "40it", "eval_interval": "20it", "metrics_interval": 20},
        "pruning": {"fraction": 0.9, "rounds": 1}})
    imp = run_experiment(spec, tmp_path)
    run_path, target = tmp_path / imp["run_name"], imp["rounds"][1]["remaining_fraction"]
    seen = []
    out = pai_analysis.run_pruning_at_init(run_path, methods=["synflow"], synflow_iterations=5, callback=seen.append)
    [first] = out["methods"]["synflow"]
    assert first["start_iteration"] == 0 and first["curve"]["iteration"] == [0, 20, 40]
    assert first["unmasked_fraction"] == pytest.approx(remaining_count(target, 266200) / 266200)
    # a weight whose unit SynFlow cut off is kept by the mask but does not survive
    assert 0.09 < first["remaining_fraction"] <= first["unmasked_fraction"]
    assert first["collapsed_layers"] == []
    assert {"fc1.weight", "fc2.weight", "fc3.weight"} <= set(first["layers"])
    assert first["final"]["test_accuracy"] > 0.3
    assert first["costs"]["masked"]["weights"] == round(first["remaining_fraction"] * 266200)
    stored = json.loads((Path(out["result_dir"]) / "result.json").read_text())
    assert [r["target_remaining_fraction"] for r in stored["methods"]["synflow"]] == [target]
    seen.clear()
    again = pai_analysis.run_pruning_at_init(run_path, methods=["synflow"], synflow_iterations=5, callback=seen.append)
    assert again["methods"]["synflow"][0]["curve"] == first["curve"]
    assert "round_started" not in [e["type"] for e in seen], "finished work is found, not redone"
    with pytest.raises(SpecError, match="snap"):
        pai_analysis.run_pruning_at_init(run_path, methods=["snap"])


def test_pruning_at_init_analysis_prunes_to_the_imp_rounds_sparsities(tmp_path):
    spec = ExperimentSpec.from_dict({
        "dataset": "synthetic", "validation_size": 500, "device": "cpu",
        "training": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50,
                     "training_steps": "30it", "eval_interval": "30it", "metrics_interval": 10},
        "pruning": {"fraction": 0.5, "rounds": 1, "layer_fractions": {"fc3.weight": 0.2}}})
    imp = run_experiment(spec, tmp_path)
    result = pai_analysis.run_pruning_at_init(tmp_path / imp["run_name"], methods=["magnitude", "snip"],
                                              synflow_iterations=3)
    assert result["rounds"] == [1] and set(result["methods"]) == {"magnitude", "snip"}
    target = imp["rounds"][1]["unmasked_fraction"]  # as many weights placed as IMP placed
    for _method, [entry] in result["methods"].items():
        assert entry["imp_round"] == 1 and entry["target_remaining_fraction"] == target
        kept = sum(layer["unmasked"] for layer in entry["layers"].values())
        assert kept == remaining_count(target, 266200)
        assert entry["start_iteration"] == 0 and entry["collapsed_layers"] == []
    assert [r["round"] for r in result["imp"]] == [0, 1]


def test_methods_keep_as_many_weights_as_imp_placed_not_only_its_live_ones():
    # at extreme sparsity IMP's effective fraction drops below its unmasked one (dead units):
    # the methods get IMP's weight budget, their own records say how much of it carries signal
    assert pai_analysis.target_fraction({"remaining_fraction": 0.0004, "unmasked_fraction": 0.0011}) == 0.0011
    assert pai_analysis.target_fraction({"remaining_fraction": 0.2}) == 0.2  # records written before the split
