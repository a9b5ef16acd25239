"""Zhou et al. (2019): masking criteria, survivor re-initialisations, frozen pruned weights, supermasks."""
import math

import pytest
import torch

from trainer import criteria, models
from trainer.criteria import FrozenAtInitEnforcer, criterion_scores, reinit_survivors, supermask_score
from trainer.analyses.masking_criteria import run_masking_criteria
from trainer.imp import run_experiment
from trainer.masks import apply_mask, load_mask
from trainer.pruning import prune_by_scores
from trainer.rundir import RunDir
from trainer.seeds import generator
from trainer.spec import ExperimentSpec
from trainer.train import evaluate

W0 = {"w": torch.tensor([1.0, -2.0, 0.5, 3.0])}
WT = {"w": torch.tensor([2.0, -1.0, -3.0, 3.5])}
DENSE = {"w": torch.ones(4, dtype=torch.bool)}


@pytest.mark.parametrize("criterion, expected_scores, expected_keep", [
    ("large_final", [2.0, 1.0, 3.0, 3.5], [False, False, True, True]),
    ("large_init", [1.0, 2.0, 0.5, 3.0], [False, True, False, True]),
    ("magnitude_increase", [1.0, -1.0, 2.5, 0.5], [True, False, True, False]),
    # |wT - w0| = 1, 1, 3.5, 0.5: the tie between the first two goes to position (the first is pruned)
    ("movement", [1.0, 1.0, 3.5, 0.5], [False, True, True, False]),
])
def test_each_criterion_scores_and_masks_exactly(criterion, expected_scores, expected_keep):
    scores = criterion_scores(criterion, W0, WT, ["w"])
    assert scores["w"].tolist() == expected_scores
    assert prune_by_scores(DENSE, scores, 0.5, "layerwise")["w"].tolist() == expected_keep


def test_unknown_criterion_is_refused():
    with pytest.raises(ValueError, match="unknown masking criterion"):
        criterion_scores("largest", W0, WT, ["w"])


def lenet_state_and_mask(seed=0):
    model = models.build_model("lenet_300_100", (1, 28, 28), 10, seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    mask = {name: torch.rand(state[name].shape, generator=g) < 0.3 for name in ("fc1.weight", "fc2.weight", "fc3.weight")}
    return model, state, mask


def test_sign_kept_constant_sets_survivors_to_sign_times_the_layers_init_std():
    _, state, mask = lenet_state_and_mask()
    new = reinit_survivors("sign_kept_constant", state, mask, model_name="lenet_300_100")
    for name, (fan_in, fan_out) in {"fc1.weight": (784, 300), "fc2.weight": (300, 100), "fc3.weight": (100, 10)}.items():
        std = math.sqrt(2.0 / (fan_in + fan_out))  # Glorot normal
        keep = mask[name]
        expected = torch.sign(state[name][keep]) * std
        assert torch.equal(new[name][keep], expected)
        assert torch.equal(new[name][~keep], state[name][~keep]), "pruned weights keep their start values"
        assert abs(float(state[name].std()) - std) / std < 0.1, "the formula is the distribution θ0 was drawn from"
    assert torch.equal(new["fc1.bias"], state["fc1.bias"])
    assert criteria.init_std("resnet20", (16, 8, 3, 3)) == pytest.approx(math.sqrt(2.0 / 72))  # Kaiming fan-in


def test_reshuffle_permutes_survivors_within_each_layer_and_is_seeded():
    _, state, mask = lenet_state_and_mask()
    first = reinit_survivors("reshuffled", state, mask, generator=generator(0, "reinit"))
    again = reinit_survivors("reshuffled", state, mask, generator=generator(0, "reinit"))
    for name, keep in mask.items():
        before, after = state[name][keep], first[name][keep]
        assert torch.equal(before.sort().values, after.sort().values), "a permutation of the survivors' values"
        assert not torch.equal(before, after)
        assert torch.equal(first[name][~keep], state[name][~keep])
        assert torch.equal(first[name], again[name])


def test_rewind_is_a_copy_of_the_start():
    _, state, mask = lenet_state_and_mask()
    new = reinit_survivors("rewind", state, mask)
    assert all(torch.equal(new[k], state[k]) for k in state)
    new["fc1.weight"].zero_()
    assert state["fc1.weight"].abs().sum() > 0


@pytest.mark.parametrize("weight_decay", [0.0, 5e-2])
def test_frozen_at_init_keeps_pruned_weights_at_init_under_sgd_momentum(weight_decay):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    mask = {"0.weight": torch.rand(5, 6) < 0.5, "2.weight": torch.rand(3, 5) < 0.5}
    enforcer = FrozenAtInitEnforcer(model, mask, init)
    enforcer.mask_weights()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=weight_decay)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        enforcer.mask_gradients()
        optimizer.step()
        enforcer.after_step()
    state = model.state_dict()
    for name, keep in mask.items():
        assert torch.equal(state[name][~keep], init[name][~keep]), "pruned weights are frozen at their init values"
        assert (state[name][~keep] != 0).all()
        assert not torch.equal(state[name][keep], init[name][keep]), "survivors train"


def test_supermask_score_equals_evaluate_of_the_masked_start_network():
    model, state, mask = lenet_state_and_mask()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(300, 1, 28, 28, generator=g), torch.randint(0, 10, (300,), generator=g)
    score = supermask_score(model, mask, x, y)
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state), "the model is not changed"
    apply_mask(model, mask)
    assert score == evaluate(model, x, y)[1]


def tiny_spec() -> ExperimentSpec:
    return ExperimentSpec.from_dict({
        "dataset": "synthetic", "validation_size": 500, "device": "cpu",
        "training": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50,
                     "training_steps": "40it", "eval_interval": "20it", "metrics_interval": 20},
        "pruning": {"fraction": 0.5, "rounds": 2, "layer_fractions": {"fc3.weight": 0.25}}})


def test_masking_criteria_analysis_branches_chains_off_a_finished_run(tmp_path):
    results = run_experiment(tiny_spec(), tmp_path)
    path = tmp_path / results["run_name"]
    seen = []
    result = run_masking_criteria(path, criteria=["large_final", "large_init"], masked_weights=["zero", "frozen_init"],
                                  rounds=1, callback=seen.append)
    assert result["status"] == "finished" and result["rounds"] == [1]
    chains = result["variants"]
    assert set(chains) == {"variant_large_final", "variant_large_init", "variant_large_final-frozen_init",
                           "variant_large_init-frozen_init"}
    imp = chains["variant_large_final"]
    assert imp["source"] == "imp_run" and imp["rounds"][0]["curve"] == results["rounds"][1]["curve"]
    ticket = {entry["round"]: entry for entry in result["ticket"]}
    assert ticket[1]["supermask_test_accuracy"] == imp["rounds"][0]["supermask_test_accuracy"]
    assert ticket[0]["costs"]["dense"]["macs"] == 266200

    run_dir = RunDir.open(path)
    theta = run_dir.load_state(run_dir.theta_rewind_path)
    units = path / "analyses" / "masking_criteria"
    [unit_root] = [d for d in units.iterdir() if d.is_dir()]
    frozen = unit_root / "units" / "variant_large_init-frozen_init" / "round_001"
    mask = load_mask(frozen / "mask.pt")
    final = torch.load(frozen / "final_weights.pt", weights_only=True)
    scores = criterion_scores("large_init", theta, theta, ["fc1.weight"])["fc1.weight"]
    assert scores[mask["fc1.weight"]].min() >= scores[~mask["fc1.weight"]].max(), "kept the largest |w0|"
    for name, keep in mask.items():
        assert torch.equal(final[name][~keep], theta[name][~keep]), "pruned weights stayed at θk"
    record = chains["variant_large_init-frozen_init"]["rounds"][0]
    assert record["layers"]["fc3.weight"]["remaining"] == 750 and 0 <= record["supermask_test_accuracy"] <= 1
    assert "variant_large_init" in {e.get("network") for e in seen if e["type"] == "round_finished"}

    seen.clear()
    again = run_masking_criteria(path, criteria=["large_init", "large_final"], masked_weights=["frozen_init", "zero"],
                                 rounds=1, callback=seen.append)
    assert again["variants"] == result["variants"], "the same request finds the finished work"
    assert not any(e["type"] == "round_started" for e in seen)
