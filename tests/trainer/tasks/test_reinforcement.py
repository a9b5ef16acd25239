"""The reinforcement-learning task end to end on CartPole-v1: the mean return as the metric (higher is better,
early stop at the highest validation return), replicates and a control, masks that stay zero, determinism,
and the spec's checks for environments."""
import pytest
import torch

from trainer.cli.display import summary_table
from trainer.imp import run_experiment
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec, SpecError

TINY_RL = {"model": "actor_critic", "dataset": "cartpole", "device": "cpu", "rewind_step": "2it",
           "training": {"optimizer": "adam", "lr": 0.003, "training_steps": "8it", "eval_interval": "4it",
                        "metrics_interval": 2},
           "reinforcement": {"envs": 4, "rollout_steps": 8, "eval_episodes": 3},
           "pruning": {"fraction": 0.5, "rounds": 1}, "replicates": 2, "controls": ["random_reinit"]}


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl_runs")
    results = run_experiment(ExperimentSpec.from_dict(TINY_RL), root)
    return results, root / results["run_name"]


def test_an_agent_run_reports_the_mean_return_with_replicates_and_a_control(rl_run):
    results, _ = rl_run
    assert results["status"] == "finished"
    assert results["task"]["metric"] == {"key": "return", "label": "mean return", "higher_is_better": True,
                                         "percent": False}
    assert results["dataset"]["validation_size"] == 3  # episodes
    for record in results["rounds"] + [r for entry in results["replicates"] for r in entry["rounds"]]:
        curve = record["curve"]
        assert set(curve) == {"iteration", "val_loss", "val_return", "test_loss", "test_return"}
        assert curve["val_loss"] == [-value for value in curve["val_return"]]
        assert all(1 <= value <= 500 for value in curve["test_return"])  # CartPole: 1..500 steps of reward 1
        best = max(range(len(curve["val_return"])), key=lambda i: (curve["val_return"][i], -i))
        assert record["early_stop"]["iteration"] == curve["iteration"][best]
    assert len(results["replicates"]) == 1 and len(results["replicates"][0]["rounds"]) == 2
    assert [r["round"] for r in results["controls"]["random_reinit"]] == [1]
    assert results["verdicts"]["metric"] == "test_return" and results["verdicts"]["higher_is_better"] is True
    assert "test mean return (early stop)" in summary_table(results)


def test_pruned_agent_weights_stay_zero(rl_run):
    _, path = rl_run
    run_dir = RunDir.open(path)
    mask, state = run_dir.mask(1), run_dir.final_weights(1)
    assert set(mask) == {f"{head}.{layer}.weight" for head in ("policy", "value") for layer in ("fc1", "fc2", "out")}
    for name, keep in mask.items():
        assert torch.all(state[name][~keep] == 0), name
        assert keep.float().mean() == pytest.approx(0.5, abs=0.02)


def test_same_spec_and_seed_give_the_same_returns(rl_run, tmp_path):
    first, _ = rl_run
    again = run_experiment(ExperimentSpec.from_dict({**TINY_RL, "replicates": 1, "controls": []}), tmp_path)
    for a, b in zip(first["rounds"], again["rounds"]):
        assert a["curve"] == b["curve"] and a["train_loss"] == b["train_loss"]


@pytest.mark.parametrize("change, field", [
    ({"training": {**TINY_RL["training"], "training_steps": "2ep"}}, "training.training_steps"),
    ({"model": "lenet_300_100"}, "model"),
    ({"stack_size": 2}, "stack_size"),
    ({"validation_size": 10}, "validation_size"),
])
def test_the_spec_refuses_epochs_and_settings_of_other_tasks(change, field):
    with pytest.raises(SpecError) as error:
        ExperimentSpec.from_dict({**TINY_RL, **change}).validate()
    assert error.value.field == field


def test_reinforcement_settings_are_refused_for_classification():
    with pytest.raises(SpecError) as error:
        ExperimentSpec.from_dict({"reinforcement": {"envs": 2}}).validate()
    assert error.value.field == "reinforcement"
