"""The early-phase study: each perturbation's defining property on hand-made tensors, then the study on a
tiny rewound run (references, determinism, resume, cancel), its parameters, its pre-flight check and the CLI."""
import math

import pytest
import torch

from tests.trainer.conftest import collector, tiny_run
from trainer import analyses, events
from trainer.analyses import early_phase, events as aevents
from trainer.analyses.early_phase import run_early_phase
from trainer.cli.main import main
from trainer.imp import Run
from trainer.pruning import criteria, perturbations
from trainer.rundir import RunDir
from trainer.seeds import generator
from trainer.spec import SpecError

# ---- the perturbations on hand-made tensors ---------------------------------------------------

NAMES = ("conv.weight", "fc.weight")


def hand_made(seed: int = 0):
    """θk, θ0 and a mask of a 'conv' layer (4 filters of 3x2x2) and an 'fc' layer (5x6), plus a bias."""
    draws = torch.Generator().manual_seed(seed)
    theta_k = {"conv.weight": torch.randn(4, 3, 2, 2, generator=draws), "fc.weight": torch.randn(5, 6, generator=draws),
               "fc.bias": torch.randn(5, generator=draws)}
    theta_0 = {name: torch.randn(value.shape, generator=draws) for name, value in theta_k.items()}
    mask = {name: torch.rand(theta_k[name].shape, generator=draws) < 0.6 for name in NAMES}
    return theta_k, theta_0, mask


def assert_untouched_outside_survivors(state, theta_k, mask):
    assert torch.equal(state["fc.bias"], theta_k["fc.bias"])  # not a masked tensor: unchanged
    for name in NAMES:
        assert torch.count_nonzero(state[name][~mask[name]]) == 0  # pruned weights stay zero


def multiset(values: torch.Tensor) -> list[float]:
    return sorted(values.tolist())


@pytest.mark.parametrize("perturb, magnitudes_from, signs_from", [
    (perturbations.init_signs, "theta_k", "theta_0"), (perturbations.init_magnitudes, "theta_0", "theta_k")])
def test_init_signs_and_init_magnitudes_take_one_from_theta_0_and_the_other_from_theta_k(perturb, magnitudes_from,
                                                                                         signs_from):
    theta_k, theta_0, mask = hand_made()
    source = {"theta_k": theta_k, "theta_0": theta_0}
    state = perturb(theta_k, theta_0, mask)
    assert_untouched_outside_survivors(state, theta_k, mask)
    for name in NAMES:
        keep = mask[name]
        assert torch.equal(state[name][keep].abs(), source[magnitudes_from][name][keep].abs())
        assert torch.equal(torch.sign(state[name][keep]), torch.sign(source[signs_from][name][keep]))


def test_flip_signs_flips_every_survivor_or_an_exact_random_fraction_per_layer():
    theta_k, _, mask = hand_made()
    state = perturbations.flip_signs(theta_k, mask)
    assert_untouched_outside_survivors(state, theta_k, mask)
    for name in NAMES:
        assert torch.equal(state[name][mask[name]], -theta_k[name][mask[name]])
    some = perturbations.flip_signs(theta_k, mask, 0.25, generator(1))
    assert_untouched_outside_survivors(some, theta_k, mask)
    for name in NAMES:
        kept, start = some[name][mask[name]], theta_k[name][mask[name]]
        assert torch.equal(kept.abs(), start.abs())
        flipped = int((kept != start).sum())
        assert flipped == int(0.25 * int(mask[name].sum()) + 0.5)
    again = perturbations.flip_signs(theta_k, mask, 0.25, generator(1))
    other = perturbations.flip_signs(theta_k, mask, 0.25, generator(2))
    assert all(torch.equal(again[n], some[n]) for n in NAMES)
    assert any(not torch.equal(other[n], some[n]) for n in NAMES)
    with pytest.raises(ValueError, match="seeded generator"):
        perturbations.flip_signs(theta_k, mask, 0.5)


def groups_of(scope: str, name: str, mask) -> list[torch.Tensor]:
    """The boolean position sets a shuffle of `scope` permutes within (one layer's part of them)."""
    keep = mask[name]
    if scope in ("global", "layer"):
        return [keep]
    return [torch.zeros_like(keep).index_fill_(0, torch.tensor([unit]), True) & keep for unit in range(keep.shape[0])]


@pytest.mark.parametrize("scope", perturbations.SHUFFLE_SCOPES)
@pytest.mark.parametrize("same_sign", [False, True])
def test_a_shuffle_permutes_survivors_within_its_groups_only(scope, same_sign):
    theta_k, _, mask = hand_made()
    state = perturbations.shuffle(theta_k, mask, scope, same_sign, generator(3))
    assert_untouched_outside_survivors(state, theta_k, mask)
    if scope == "global":  # one multiset across both layers
        def everything(weights):
            return torch.cat([weights[name][mask[name]] for name in NAMES])

        assert multiset(everything(state)) == multiset(everything(theta_k))
        moved_between_layers = multiset(state["fc.weight"][mask["fc.weight"]]) != \
            multiset(theta_k["fc.weight"][mask["fc.weight"]])
        assert moved_between_layers
    else:
        for name in NAMES:
            for group in groups_of(scope, name, mask):
                assert multiset(state[name][group]) == multiset(theta_k[name][group])
    if same_sign:  # every survivor keeps its sign, so positives and negatives are shuffled separately
        for name in NAMES:
            assert torch.equal(torch.sign(state[name][mask[name]]), torch.sign(theta_k[name][mask[name]]))
    else:
        changed_signs = sum(int((torch.sign(state[n][mask[n]]) != torch.sign(theta_k[n][mask[n]])).sum())
                            for n in NAMES)
        assert changed_signs > 0
    assert any(not torch.equal(state[n], theta_k[n] * mask[n]) for n in NAMES)  # it did move something
    again = perturbations.shuffle(theta_k, mask, scope, same_sign, generator(3))
    assert all(torch.equal(again[n], state[n]) for n in NAMES)


def test_permute_within_groups_is_a_uniform_permutation_of_each_group():
    values = torch.arange(6, dtype=torch.float32)
    groups = torch.tensor([0, 1, 0, 1, 0, 1])
    seen = set()
    for seed in range(200):
        permuted = perturbations.permute_within_groups(values, groups, generator(seed))
        assert sorted(permuted[groups == 0].tolist()) == [0.0, 2.0, 4.0]
        assert sorted(permuted[groups == 1].tolist()) == [1.0, 3.0, 5.0]
        seen.add(tuple(permuted.tolist()))
    assert len(seen) == 36  # every pair of the 3! x 3! permutations turns up


def test_noise_has_std_alpha_times_each_layers_init_std_on_survivors_only():
    theta_k = {"big.weight": torch.zeros(300, 400), "small.weight": torch.zeros(400, 100)}
    mask = {"big.weight": torch.ones(300, 400, dtype=torch.bool), "small.weight": torch.rand(400, 100) < 0.5}
    stds = {"big.weight": 0.2, "small.weight": 0.05}
    state = perturbations.add_noise(theta_k, mask, 2.0, stds, generator(4))
    for name in mask:
        measured = float(state[name][mask[name]].std())
        assert measured == pytest.approx(2.0 * stds[name], rel=0.02)
        assert torch.count_nonzero(state[name][~mask[name]]) == 0
    shifted = {name: value + 1.0 for name, value in theta_k.items()}  # noise is added to θk's values
    moved = perturbations.add_noise(shifted, mask, 2.0, stds, generator(4))
    assert torch.allclose(moved["big.weight"] - 1.0, state["big.weight"], atol=1e-6)


def test_the_layer_init_std_is_the_initializers():
    theta_0 = {"fc1.weight": torch.zeros(300, 784)}
    stds = criteria.layer_init_stds("lenet_300_100", theta_0, ["fc1.weight"])
    assert stds["fc1.weight"] == pytest.approx(math.sqrt(2.0 / (784 + 300)))  # Glorot normal


def test_an_unknown_perturbation_is_refused():
    theta_k, theta_0, mask = hand_made()
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturbations.perturb("scramble", theta_k, theta_0, mask, generator=generator(0), flip_fraction=0.5)


# ---- the study on a tiny rewound run ------------------------------------------------------------

SMALL = {"perturbations": ["init_signs", "flip_signs", "shuffle_layer_same_sign"], "noise_alphas": [1.0, 3.0]}


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"))  # θk at 10 of 40 iterations, 2 pruned rounds


def test_the_study_trains_every_perturbation_beside_the_ticket_and_rewinding_to_zero(run_path):
    seen, callback = collector()
    result = analyses.run_analysis(early_phase.NAME, run_path, SMALL, callback=callback)
    run_dir = RunDir.open(run_path)
    assert result["status"] == "finished" and result["rounds"] == [1, 2]
    assert result["rewind_iteration"] == 10 and result["total_iterations"] == 40
    assert list(result["perturbations"]) == ["init_signs", "flip_signs", "shuffle_layer_same_sign", "noise_1",
                                             "noise_3"]
    for network, entries in result["perturbations"].items():
        assert [e["round"] for e in entries] == [1, 2]
        for entry, round_index in zip(entries, (1, 2)):
            assert entry["status"] == "finished" and entry["network"] == network
            assert (entry["start_iteration"], entry["end_iteration"]) == (10, 40)
            assert entry["remaining_fraction"] == run_dir.record(round_index)["remaining_fraction"]
            assert entry["early_stop"]["test_accuracy"] is not None and entry["final"]["test_accuracy"] is not None
    assert result["perturbations"]["noise_3"][0]["alpha"] == 3.0
    assert result["perturbations"]["flip_signs"][0]["perturbation"] == "flip_signs"
    # the unperturbed ticket is the run's own round, reused; rewinding to 0 trains the mask on θ0 from 0
    assert [t["early_stop"] for t in result["ticket"]] == [run_dir.record(r)["early_stop"] for r in (1, 2)]
    assert [(e["start_iteration"], e["end_iteration"]) for e in result["rewind_to_zero"]] == [(0, 40), (0, 40)]
    trained = [e for e in seen if e["type"] == events.ROUND_FINISHED]
    assert sorted((e["network"], e["round"]) for e in trained) == sorted(
        [(n, r) for n in list(result["perturbations"]) + ["rewind_to_zero"] for r in (1, 2)])
    lines = early_phase.summary_lines(result)
    assert len(lines) == 2 + 2 * (2 + 5) and lines[2].split()[:3] == ["ticket", "(unperturbed)", "1"]


def test_the_perturbed_start_is_the_ticket_perturbed_and_rewinding_to_zero_starts_at_theta_0(run_path):
    result = analyses.run_analysis(early_phase.NAME, run_path, SMALL)
    run_dir = RunDir.open(run_path)
    context = early_phase_context(run_path, SMALL)
    theta_k, theta_0, mask = context.run.theta_rewind(), context.run.theta_init(), run_dir.mask(2)
    flipped = early_phase.start_state(context, "flip_signs", None, 2)
    assert torch.equal(flipped["fc1.weight"], -theta_k["fc1.weight"] * mask["fc1.weight"])
    noisy = early_phase.start_state(context, "noise", 3.0, 2)
    std = criteria.init_std("lenet_300_100", theta_0["fc1.weight"].shape)
    difference = (noisy["fc1.weight"] - theta_k["fc1.weight"])[mask["fc1.weight"]]
    assert float(difference.std()) == pytest.approx(3.0 * std, rel=0.05)
    assert torch.equal(early_phase.start_state(context, "rewind_to_zero", None, 2)["fc1.weight"], theta_0["fc1.weight"])
    assert result["status"] == "finished"


def early_phase_context(run_path, params):
    return analyses.common.AnalysisContext(early_phase.NAME, early_phase.PARAMS, run_path, params,
                                           callback=events.ignore, data_dir=None, stop_requested=lambda: False)


def test_two_runs_give_the_same_numbers_and_another_seed_another_draw(run_path, tmp_path):
    params = {"perturbations": ["shuffle_unit", "flip_signs_random"], "noise_alphas": [2.0], "rounds": [2]}
    first = run_early_phase(run_path, **params)
    copy = tiny_run(tmp_path)  # the same spec trained again elsewhere
    second = run_early_phase(copy, **params)

    def numbers(result):
        return {name: [(e["early_stop"], e["final"]) for e in entries]
                for name, entries in result["perturbations"].items()}

    assert numbers(first) == numbers(second)
    reseeded = run_early_phase(run_path, **params, seed=1)
    assert reseeded["result_dir"] != first["result_dir"]
    assert numbers(reseeded)["shuffle_unit"] != numbers(first)["shuffle_unit"]


def test_a_cancelled_study_resumes_and_skips_the_finished_units(run_path, monkeypatch):
    params = {"perturbations": ["init_magnitudes", "shuffle_global"], "noise_alphas": [], "rounds": [1]}
    monkeypatch.setattr(Run, "stack_size", lambda self: 1)  # one network per stack: a stop between stacks
    seen, callback = collector()

    def stop_after_first_network():
        return any(e["type"] == events.ROUND_FINISHED for e in seen)

    first = run_early_phase(run_path, **params, callback=callback, stop_requested=stop_after_first_network)
    assert first["status"] == "cancelled"
    assert [e["status"] for e in seen if e["type"] == aevents.ANALYSIS_FINISHED] == ["cancelled"]
    seen, callback = collector()
    second = run_early_phase(run_path, **params, callback=callback)
    assert second["status"] == "finished"
    skipped = [e["unit"] for e in seen if e["type"] == aevents.UNIT_SKIPPED]
    trained = [(e["network"], e["round"]) for e in seen if e["type"] == events.ROUND_FINISHED]
    assert skipped == ["init_magnitudes/round_001"]
    assert sorted(trained) == [("rewind_to_zero", 1), ("shuffle_global", 1)]
    seen, callback = collector()
    assert run_early_phase(run_path, **params, callback=callback) == second  # finished: nothing trains
    assert not [e for e in seen if e["type"] == events.ROUND_STARTED]


# ---- parameters, the pre-flight check, the CLI ---------------------------------------------------

@pytest.mark.parametrize("params, field, message", [
    ({"noise_alphas": [0.0]}, "noise_alphas[0]", "must be at least 0.01"),
    ({"noise_alphas": [1.0, 1]}, "noise_alphas", "repeated entries"),
    ({"noise_alphas": ["loud"]}, "noise_alphas[0]", "expected a number"),
    ({"flip_fraction": 0.0}, "flip_fraction", "must be at least 0.01"),
    ({"flip_fraction": 1.5}, "flip_fraction", "must be at most 1.0"),
    ({"perturbations": ["scramble"]}, "perturbations[0]", "unknown choice"),
    ({"rounds": [0]}, "rounds[0]", "must be at least 1"),
    ({"seed": -1}, "seed", "must be at least 0"),
    ({"sigma": 2}, "sigma", "unknown parameter"),
])
def test_bad_parameters_are_spec_errors_naming_the_parameter(params, field, message):
    with pytest.raises(SpecError, match=message) as error:
        analyses.validate(early_phase.NAME, params)
    assert error.value.field == field


def test_the_check_refuses_a_run_without_rewinding_and_an_empty_study():
    check = analyses.get_analysis(early_phase.NAME).check
    info = {"model": "lenet_300_100", "dataset": "mnist", "has_batch_norm": False, "finished_rounds": [0, 1, 2],
            "rewind_step": "0ep"}
    defaults = analyses.validate(early_phase.NAME, None)
    with pytest.raises(SpecError, match="rewinds to θ0") as error:
        check(defaults, info)
    assert error.value.field == "analysis"
    check(defaults, {**info, "rewind_step": "2ep"})
    with pytest.raises(SpecError, match="round 3 is not a finished round"):
        check(analyses.validate(early_phase.NAME, {"rounds": [3]}), {**info, "rewind_step": "2ep"})
    with pytest.raises(SpecError, match="at least one perturbation") as error:
        check(analyses.validate(early_phase.NAME, {"perturbations": [], "noise_alphas": []}),
              {**info, "rewind_step": "2ep"})
    assert error.value.field == "perturbations"


def test_the_engine_and_the_cli_refuse_a_run_without_rewinding(tmp_path, capsys):
    path = tiny_run(tmp_path, rewind_step="0it", pruning={"fraction": 0.5, "rounds": 1})
    with pytest.raises(SpecError, match="rewinds to θ0"):
        run_early_phase(path)
    assert main(["analyze", str(path), "early_phase"]) == 2
    assert "rewinds to θ0 (rewind_step 0it)" in capsys.readouterr().err


def test_cli_runs_the_study_and_exits_2_on_bad_parameters(run_path, capsys):
    assert main(["analyze", str(run_path), "early_phase", "--perturbations", "flip_signs", "--noise-alphas", "",
                 "--rounds", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "flip_signs" in out and "rewind_to_zero" in out and "ticket (unperturbed)" in out
    assert main(["analyze", str(run_path), "early_phase", "--noise-alphas", "0.5,-1"]) == 2
    assert "noise_alphas[1]: must be at least 0.01" in capsys.readouterr().err
    assert main(["analyze", str(run_path), "early_phase", "--flip-fraction", "half"]) == 2
    assert "cannot read 'half' as float" in capsys.readouterr().err
