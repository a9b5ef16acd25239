"""The math of linear interpolation: exact endpoints, masks along the path, batch-norm recomputation, instability."""
import pytest
import torch
from torch import nn

from trainer import models
from trainer.pruning.masks import apply_mask
from trainer.seeds import generator
from trainer.training.interpolation import (
    evaluate_path,
    evenly_spaced,
    instability,
    interpolate_states,
    recompute_batch_norm,
    statistics_batches,
)
from trainer.training.loop import evaluate


def lenet(seed):
    return models.build_model("lenet_300_100", (1, 28, 28), 10, seed)


def test_evenly_spaced_points_have_exact_ends():
    alphas = evenly_spaced(25)
    assert len(alphas) == 25 and alphas[0] == 0.0 and alphas[-1] == 1.0 and alphas[12] == 0.5
    with pytest.raises(ValueError):
        evenly_spaced(1)


def test_interpolated_states_are_exact_at_the_ends_and_linear_between():
    a, b = lenet(0).state_dict(), lenet(1).state_dict()
    for name in a:
        assert torch.equal(interpolate_states(a, b, 0.0)[name], a[name])
        assert torch.equal(interpolate_states(a, b, 1.0)[name], b[name])
    middle = interpolate_states(a, b, 0.25)
    assert torch.allclose(middle["fc1.weight"], 0.75 * a["fc1.weight"] + 0.25 * b["fc1.weight"])
    bn_a = models.build_model("resnet20", (1, 28, 28), 10, 0).state_dict()
    bn_b = dict(bn_a, **{"bn1.num_batches_tracked": torch.tensor(7)})
    assert interpolate_states(bn_a, bn_b, 0.5)["bn1.num_batches_tracked"] == bn_a["bn1.num_batches_tracked"]
    with pytest.raises(ValueError):
        interpolate_states(a, {k: v for k, v in b.items() if k != "fc3.bias"}, 0.5)


def test_instability_is_max_error_minus_mean_of_the_end_errors():
    assert instability([0.10, 0.30, 0.12]) == pytest.approx(0.30 - 0.11)
    assert instability([0.10, 0.15, 0.20]) == pytest.approx(0.05)  # no barrier: the max is an end
    assert instability([0.2] * 25) == pytest.approx(0.0)
    errors = [0.1 + 0.2 * (1 - abs(2 * a - 1)) for a in evenly_spaced(25)]  # a tent, peak 0.3 in the middle
    assert instability(errors) == pytest.approx(0.2)


def test_path_endpoints_are_the_two_networks_own_errors_and_masked_weights_stay_zero():
    x, y = torch.randn(300, 1, 28, 28), torch.randint(0, 10, (300,))
    net_a, net_b = lenet(0), lenet(1)
    mask = {"fc1.weight": torch.rand(300, 784, generator=torch.Generator().manual_seed(0)) > 0.7}
    apply_mask(net_a, mask)
    apply_mask(net_b, mask)
    model = lenet(2)
    pruned_nonzero = []

    def on_point(alpha, loss, accuracy):
        pruned_nonzero.append(int(torch.count_nonzero(model.fc1.weight[~mask["fc1.weight"]])))

    curve = evaluate_path(model, net_a.state_dict(), net_b.state_dict(), evenly_spaced(25), x, y, mask=mask,
                          on_point=on_point)
    assert curve["error"][0] == 1 - evaluate(net_a, x, y)[1]
    assert curve["error"][-1] == 1 - evaluate(net_b, x, y)[1]
    assert curve["loss"][0] == evaluate(net_a, x, y)[0]
    assert pruned_nonzero == [0] * 25
    assert curve["batch_norm_recomputed"] is False
    assert curve["instability"] == instability(curve["error"])


def test_batch_norm_recomputation_matches_a_hand_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    model.eval()
    batches = [torch.randn(4, 1, 6, 6) + shift for shift in (0.0, 1.0, -2.0)]
    with torch.no_grad():
        features = [model[0](batch) for batch in batches]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in features])
    variances = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in features])
    assert recompute_batch_norm(model, batches) == 1
    bn = model[1]
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-6)
    assert int(bn.num_batches_tracked) == 3
    assert bn.momentum == 0.1 and not model.training, "momentum and mode are restored"
    assert recompute_batch_norm(nn.Linear(3, 3), batches) == 0


def test_batch_norm_statistics_are_recomputed_at_every_point_of_a_resnet_path():
    a = models.build_model("resnet20", (1, 28, 28), 10, 0)
    b = models.build_model("resnet20", (1, 28, 28), 10, 1)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    batches = statistics_batches(x, 16, 2, generator(0, "bn"))
    assert len(batches) == 2 and batches[0].shape == (16, 1, 28, 28)
    model = models.build_model("resnet20", (1, 28, 28), 10, 2)
    means = []
    curve = evaluate_path(model, a.state_dict(), b.state_dict(), evenly_spaced(3), x[:32], y[:32], bn_batches=batches,
                          on_point=lambda *_: means.append(model.bn1.running_mean.clone()))
    assert curve["batch_norm_recomputed"] is True
    # Both ends hold the init statistics (mean 0, var 1); recomputation replaces them with the data's.
    assert all(float(m.abs().max()) > 1e-3 for m in means)
    assert not torch.equal(means[0], means[1])
    # The last point's statistics are exactly those of a direct recomputation of θB.
    direct = models.build_model("resnet20", (1, 28, 28), 10, 3)
    direct.load_state_dict(b.state_dict())
    recompute_batch_norm(direct, batches)
    assert torch.allclose(direct.bn1.running_mean, means[-1])
    assert torch.allclose(direct.stage3[2].bn2.running_var, model.stage3[2].bn2.running_var)
