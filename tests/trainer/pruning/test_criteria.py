"""Zhou et al. (2019): masking criteria, survivor re-initialisations, frozen pruned weights, supermasks."""
import math
from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import TINY_RUN, keeps_larger_half, tiny_run
from trainer import models
from trainer.analyses.masking_criteria import run_masking_criteria
from trainer.imp import Run, run_experiment
from trainer.pruning import criteria
from trainer.pruning.criteria import FrozenAtInitEnforcer, criterion_scores, reinit_survivors, supermask_score
from trainer.pruning.masks import apply_mask, load_mask
from trainer.pruning.rules import prune_by_scores
from trainer.rundir import RunDir
from trainer.seeds import generator
from trainer.spec import ExperimentSpec
from trainer.training.loop import evaluate

W0 = {"w": torch.tensor([1.0, -2.0, 0.5, 3.0])}
WT = {"w": torch.tensor([2.0, -1.0, -3.0, 3.5])}
DENSE = {"w": torch.ones(4, dtype=torch.bool)}


@pytest.mark.parametrize("criterion, expected_scores, expected_keep", [
    ("large_final", [2.0, 1.0, 3.0, 3.5], [False, False, True, True]),
    ("large_init", [1.0, 2.0, 0.5, 3.0], [False, True, False, True]),
    ("magnitude_increase", [1.0, -1.0, 2.5, 0.5], [True, False, True, False]),
    # |wT - w0| = 1, 1, 3.5, 0.5: the tie between the first two goes to position (the first is pruned)
    ("movement", [1.0, 1.0, 3.5, 0.5], [False, True, True, False]),
    # the third flipped sign (0.5 -> -3): pruned first despite the second-largest |wT|
    ("large_final_same_sign", [2.0, 1.0, -1.0, 3.5], [True, False, False, True]),
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
    mask = {name: torch.rand(state[name].shape, generator=g) < 0.3
            for name in ("fc1.weight", "fc2.weight", "fc3.weight")}
    return model, state, mask


def test_sign_kept_constant_sets_survivors_to_sign_times_the_layers_init_std():
    _, state, mask = lenet_state_and_mask()
    new = reinit_survivors("sign_kept_constant", state, mask, model_name="lenet_300_100")
    fans = {"fc1.weight": (784, 300), "fc2.weight": (300, 100), "fc3.weight": (100, 10)}
    for name, (fan_in, fan_out) in fans.items():
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


def test_a_frozen_supermask_keeps_the_pruned_weights_at_their_frozen_values():
    model, state, mask = lenet_state_and_mask()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(300, 1, 28, 28, generator=g), torch.randint(0, 10, (300,), generator=g)
    frozen = {name: torch.full_like(value, 0.01) for name, value in state.items()}
    by_hand = models.build_model("lenet_300_100", (1, 28, 28), 10, 0)
    by_hand.load_state_dict({name: torch.where(mask[name], value, frozen[name]) if name in mask else value
                             for name, value in state.items()})
    assert supermask_score(model, mask, x, y, frozen_values=frozen) == evaluate(by_hand, x, y)[1]
    assert supermask_score(model, mask, x, y, frozen_values=state) == evaluate(model, x, y)[1], \
        "frozen at their own values, nothing is masked"


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
    assert all(torch.equal(theta[k], v) for k, v in run_dir.load_state(run_dir.theta_init_path).items()), "k = 0"
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


# ---- late rewinding: each round's start weights, supermasks at θ0 ------------------------------------
def glorot_std(weight: torch.Tensor) -> float:
    fan_out, fan_in = weight.shape
    return math.sqrt(2.0 / (fan_in + fan_out))


def masked_theta(state: dict, mask: dict, survivors=lambda name, value: value, pruned=lambda name, value: 0 * value):
    """`state` with survivors and pruned weights of `mask` replaced as told (unmasked tensors kept)."""
    return {name: torch.where(mask[name], survivors(name, value), pruned(name, value)) if name in mask else value
            for name, value in state.items()}


def test_the_tickets_criterion_compares_with_the_weights_each_round_started_from(tmp_path):
    path = tiny_run(tmp_path, pruning={**TINY_RUN["pruning"], "criterion": "movement"})
    run_dir = RunDir.open(path)
    theta_0, theta_k = run_dir.load_state(run_dir.theta_init_path), run_dir.load_state(run_dir.theta_rewind_path)
    final_0, final_1 = run_dir.final_weights(0), run_dir.final_weights(1)
    mask_0, mask_1, mask_2 = run_dir.mask(0), run_dir.mask(1), run_dir.mask(2)
    movement = lambda final, start: {n: (final[n] - start[n]).abs() for n in mask_0}  # noqa: E731
    # round 0 trained from θ0 (not θk); round 1 from θk
    assert keeps_larger_half(mask_1, mask_0, movement(final_0, theta_0))
    assert not keeps_larger_half(mask_1, mask_0, movement(final_0, theta_k)), "against θk the mask would differ"
    assert keeps_larger_half(mask_2, mask_1, movement(final_1, theta_k))


@pytest.fixture(scope="module")
def late_rewinding(tmp_path_factory):
    """A run rewinding to θk, k = 10 of 40, and masking-criteria chains off it."""
    path = tiny_run(tmp_path_factory.mktemp("late"))
    criteria_result = run_masking_criteria(path,
                                           criteria=["large_final", "magnitude_increase", "large_final_same_sign"],
                                           reinits=["rewind", "sign_kept_constant"])
    frozen_result = run_masking_criteria(path, criteria=["large_final"], masked_weights=["frozen_init"])
    return path, criteria_result, frozen_result


def unit(result, name, round_index):
    return Path(result["result_dir"]) / "units" / name / f"round_{round_index:03d}"


def accuracy_at(run, state) -> float:
    return evaluate(run.model_with(state), run.data.test_x, run.data.test_y)[1]


def test_variant_criteria_compare_with_the_start_of_the_round_they_prune(late_rewinding):
    path, result, _ = late_rewinding
    run_dir = RunDir.open(path)
    theta_0, theta_k = run_dir.load_state(run_dir.theta_init_path), run_dir.load_state(run_dir.theta_rewind_path)
    final_0, mask_0 = run_dir.final_weights(0), run_dir.mask(0)
    increase = lambda final, start: {n: final[n].abs() - start[n].abs() for n in mask_0}  # noqa: E731
    same_sign = lambda final, start: {n: torch.where(torch.sign(final[n]) == torch.sign(start[n]),  # noqa: E731
                                                     final[n].abs(), torch.tensor(-1.0)) for n in mask_0}
    sign_kept = lambda name, value: torch.sign(value) * glorot_std(value)  # noqa: E731
    for name, score, reinit in (("variant_magnitude_increase", increase, lambda n, v: v),
                                ("variant_large_final_same_sign-sign_kept_constant", same_sign, sign_kept)):
        mask_1 = load_mask(unit(result, name, 1) / "mask.pt")
        mask_2 = load_mask(unit(result, name, 2) / "mask.pt")
        final_1 = run_dir.load_state(unit(result, name, 1) / "final_weights.pt")
        start_1 = masked_theta(theta_k, mask_1, survivors=reinit, pruned=lambda n, v: v)
        assert keeps_larger_half(mask_1, mask_0, score(final_0, theta_0)), name
        assert keeps_larger_half(mask_2, mask_1, score(final_1, start_1)), name
        if name == "variant_magnitude_increase":
            assert not keeps_larger_half(mask_1, mask_0, score(final_0, theta_k)), "against θk the mask would differ"


def test_supermask_scores_are_the_masked_theta_0_untrained(late_rewinding):
    path, result, frozen = late_rewinding
    run_dir = RunDir.open(path)
    run = Run(run_dir.spec, run_dir)
    theta_0 = run_dir.load_state(run_dir.theta_init_path)
    for entry in result["ticket"]:
        assert entry["supermask_test_accuracy"] == accuracy_at(run, masked_theta(theta_0, run_dir.mask(entry["round"])))
    chain = result["variants"]["variant_large_final_same_sign-sign_kept_constant"]["rounds"]
    for record in chain:
        mask = load_mask(unit(result, "variant_large_final_same_sign-sign_kept_constant", record["round"]) / "mask.pt")
        signed_constant = masked_theta(theta_0, mask, survivors=lambda n, v: torch.sign(v) * glorot_std(v))
        assert record["supermask_test_accuracy"] == accuracy_at(run, signed_constant)
    dense_theta_0 = accuracy_at(run, theta_0)
    for record in frozen["variants"]["variant_large_final-frozen_init"]["rounds"]:
        assert record["supermask_test_accuracy"] == dense_theta_0, "pruned weights frozen at θ0: the whole θ0"
