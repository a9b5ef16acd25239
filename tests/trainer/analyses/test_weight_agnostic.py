"""Weight-agnostic scores (Gaier & Ha 2019): the shared-weight network (|w| × scale on every survivor with
θ0's sign, zero biases), the random-mask control, the mean score, determinism, resume, bad parameters and the CLI."""
import shutil

import pytest
import torch

from tests.trainer.analyses.test_strong_tickets import without_times
from tests.trainer.conftest import collector, tiny_run
from trainer import analyses, models
from trainer.analyses import events as aevents
from trainer.analyses.weight_agnostic import run_weight_agnostic, shared_weight_state
from trainer.cli.main import main
from trainer.imp import Run
from trainer.rundir import RunDir
from trainer.spec import SpecError
from trainer.training.loop import evaluate

PARAMS = {"weight_values": [-1.0, 0.5, 1.0, 2.0]}
NAMES = ["fc1.weight", "fc2.weight", "fc3.weight"]


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"), pruning={"fraction": 0.5, "rounds": 2})


def test_every_survivor_holds_the_shared_value_with_the_sign_of_theta_0_and_biases_are_zero():
    draws = torch.Generator().manual_seed(0)
    theta = {"fc1.weight": torch.randn(4, 6, generator=draws), "fc1.bias": torch.randn(4, generator=draws),
             "fc2.weight": torch.randn(3, 4, generator=draws) * 5, "fc2.bias": torch.randn(3, generator=draws)}
    mask = {"fc1.weight": torch.rand(4, 6, generator=draws) > 0.5}  # fc2 not masked: kept whole
    for scale in ("absolute", "init_std"):
        state = shared_weight_state(theta, mask, ["fc1.weight", "fc2.weight"], -0.5, scale)
        for name, keep in (("fc1.weight", mask["fc1.weight"]), ("fc2.weight", torch.ones(3, 4, dtype=torch.bool))):
            magnitude = 0.5 * (theta[name].std() if scale == "init_std" else 1.0)
            assert torch.allclose(state[name][keep].abs(), torch.full((int(keep.sum()),), float(magnitude)))
            assert torch.equal(torch.sign(state[name][keep]), -torch.sign(theta[name][keep]))  # w < 0 flips
            assert bool((state[name][~keep] == 0).all())
        assert not state["fc1.bias"].any() and not state["fc2.bias"].any()
    assert torch.equal(theta["fc1.weight"], theta["fc1.weight"].clone())  # θ0 itself is not changed


def test_scores_the_tickets_and_random_masks_of_the_same_sparsity(run_path):
    result = run_weight_agnostic(run_path, **PARAMS)
    run_dir = RunDir.open(run_path)
    assert result["rounds"] == [0, 1, 2] and result["weight_values"] == [-1.0, 0.5, 1.0, 2.0]
    random = {entry["round"]: entry for entry in result["random"]}
    for entry in result["ticket"]:
        assert entry["remaining_fraction"] == pytest.approx(run_dir.record(entry["round"])["remaining_fraction"])
        assert random[entry["round"]]["remaining_fraction"] == pytest.approx(entry["remaining_fraction"], abs=0.01)
        assert entry["mean_accuracy"] == pytest.approx(sum(entry["test_accuracy"]) / 4)
        assert entry["best_accuracy"] == max(entry["test_accuracy"])
        # zero biases, no skip connections: the ReLU network is positively homogeneous, so every w > 0 predicts alike
        assert entry["test_accuracy"][1] == entry["test_accuracy"][2] == entry["test_accuracy"][3]
        assert len(set(entry["test_loss"][1:])) == 3  # ... while the loss does depend on |w|
    # the numbers are the evaluated network's: rebuild round 2's ticket at w = 2 by hand
    run = Run(run_dir.spec, run_dir)
    theta_0, mask = run.theta_init(), run_dir.mask(2)
    state = {k: v.clone() for k, v in theta_0.items()}
    for name in NAMES:
        state[name] = 2.0 * theta_0[name].std() * torch.sign(theta_0[name]) * mask[name]
        state[name.replace("weight", "bias")] = torch.zeros_like(theta_0[name.replace("weight", "bias")])
    model = models.build_model("lenet_300_100", (1, 28, 28), 10, 0)
    model.load_state_dict(state)
    loss, accuracy = evaluate(model, run.data.test_x, run.data.test_y)
    assert result["ticket"][2]["test_accuracy"][3] == accuracy and result["ticket"][2]["test_loss"][3] == loss
    ticket, control = result["ticket"][2], random[2]
    assert ticket["mean_accuracy"] != control["mean_accuracy"]
    assert ticket["best_accuracy"] > 1.5 * result["chance"], "the trained-on-θ0 ticket beats chance untrained"
    lines = analyses.ANALYSES["weight_agnostic"].summary_lines(result)
    assert lines[4].split()[:2] == ["2", f"{100 * ticket['remaining_fraction']:.2f}"]


def test_is_deterministic_resumes_after_a_cancel_and_can_leave_out_the_control(run_path, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_path, copy, ignore=shutil.ignore_patterns("analyses"))
    seen, callback = collector()
    calls = []

    def stop_after_two_units():
        calls.append(1)
        return len(calls) > 2
    cancelled = run_weight_agnostic(copy, callback=callback, stop_requested=stop_after_two_units, **PARAMS)
    assert cancelled["status"] == "cancelled"
    seen.clear()
    resumed = run_weight_agnostic(copy, callback=callback, **PARAMS)
    assert [e["unit"] for e in seen if e["type"] == aevents.UNIT_SKIPPED] == ["ticket/round_0", "ticket/round_1"]
    assert without_times(resumed) == without_times(run_weight_agnostic(run_path, **PARAMS))
    alone = run_weight_agnostic(copy, rounds=[2], random_control=False, **PARAMS)
    assert alone["random"] == [] and [e["round"] for e in alone["ticket"]] == [2]
    assert without_times(alone["ticket"][0]) == without_times(resumed["ticket"][2])


@pytest.mark.parametrize("params, field", [
    ({"weight_values": []}, "weight_values"),
    ({"weight_values": [1.0, 0.0]}, "weight_values"),
    ({"weight_values": [1.0, 1.0]}, "weight_values"),
    ({"weight_values": [500.0]}, "weight_values[0]"),
    ({"scale": "he"}, "scale"),
    ({"rounds": [7]}, "rounds[0]"),
    ({"random_control": "yes"}, "random_control"),
])
def test_bad_parameters_name_the_parameter(run_path, params, field):
    with pytest.raises(SpecError) as error:
        analyses.run_analysis("weight_agnostic", run_path, params)
    assert error.value.field == field


def test_the_cli_exits_2_on_bad_parameters_and_prints_the_summary(run_path, capsys):
    assert main(["analyze", str(run_path), "weight_agnostic", "--weight-values", "0,1"]) == 2
    assert "weight_values: must not contain 0" in capsys.readouterr().err
    assert main(["analyze", str(run_path), "weight_agnostic", "--rounds", "9"]) == 2
    assert "rounds[0]" in capsys.readouterr().err
    assert main(["analyze", str(run_path), "weight_agnostic", "--weight-values=-1,0.5,1,2", "--quiet"]) == 0
    assert "weight-agnostic scores" in capsys.readouterr().out
