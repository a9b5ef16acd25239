"""Linear mode connectivity on a finished run: two copies, the path, instability vs k, θk retraining, resume."""
import json

import pytest
import torch

from tests.trainer.conftest import collector, tiny_run
from trainer import analyses, events
from trainer.analyses import events as aevents
from trainer.analyses.common import train_networks
from trainer.analyses.connectivity import STABILITY_THRESHOLD, run_connectivity
from trainer.imp import Run
from trainer.pruning.masks import dense_mask
from trainer.rundir import RunDir
from trainer.spec import SpecError


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"), pruning={"fraction": 0.5, "rounds": 1})


@pytest.fixture(scope="module")
def swept(run_path):
    seen, callback = collector()
    return run_connectivity(run_path, round=1, rewind_steps=["20it", "0it", "10it"], points=5, callback=callback), seen


def test_two_copies_per_k_give_a_path_whose_ends_are_their_own_errors(run_path, swept):
    result, seen = swept
    assert result["status"] == "finished" and result["round"] == 1 and result["remaining_fraction"] < 0.6
    assert [c["rewind_iteration"] for c in result["curves"]] == [0, 10, 20]
    assert result["instability_vs_k"]["rewind_iteration"] == [0, 10, 20]
    directory = run_path / "analyses" / "connectivity" / result["result_dir"].rsplit("/", 1)[1]
    mask = RunDir.open(run_path).mask(1)
    for curve in result["curves"]:
        k = curve["rewind_iteration"]
        assert curve["alpha"] == [0.0, 0.25, 0.5, 0.75, 1.0]
        a, b = curve["copies"]
        assert a["data_seed"] != b["data_seed"] and a["start_iteration"] == k and a["end_iteration"] == 40
        assert curve["endpoint_errors"] == [1 - a["final"]["test_accuracy"], 1 - b["final"]["test_accuracy"]]
        assert curve["test_error"][0] == curve["endpoint_errors"][0]
        assert curve["instability"] == pytest.approx(max(curve["test_error"]) - sum(curve["endpoint_errors"]) / 2)
        assert curve["stable"] == (curve["instability"] < STABILITY_THRESHOLD)
        assert curve["batch_norm_recomputed"] is False
        states = [torch.load(directory / "units" / f"k_{k:07d}" / c / "final_weights.pt") for c in ("copy_a", "copy_b")]
        assert not torch.equal(states[0]["fc1.weight"], states[1]["fc1.weight"]), "different data orders"
        for name, m in mask.items():
            assert torch.count_nonzero(states[0][name][~m]) == 0 and torch.count_nonzero(states[1][name][~m]) == 0
    points = [e for e in seen if e["type"] == aevents.INTERPOLATION_POINT]
    assert len(points) == 15 and {e["rewind_iteration"] for e in points} == {0, 10, 20}
    started = [e for e in seen if e["type"] == events.ROUND_STARTED]
    assert [e["network"] for e in started] == ["copy_a", "copy_b"] * 2 + ["rewind_point", "copy_a", "copy_b"]
    json.dumps(seen)


def test_theta_k_is_taken_from_disk_or_retrained_deterministically_and_cached(run_path, swept):
    run_dir = RunDir.open(run_path)
    cached = sorted(p.name for p in (run_path / "analyses" / "connectivity" / "rewind_points").iterdir())
    assert cached == ["theta_0000020.pt"], "θ0 and the run's θ10 come from the run directory"
    # Retraining round 0 from θ0 gives the run's own θk exactly: the cache is what the run would have stored.
    run = Run(run_dir.spec, run_dir)
    model = run.model_with(run.theta_init())
    [(segment, state)] = train_networks([model], [dense_mask(model, run.prunable)], run.data, run.spec, 0, 10,
                                        round_index=0, networks=["check"])
    theta_10 = run_dir.load_state(run_dir.theta_rewind_path)
    assert all(torch.equal(state[name], theta_10[name]) for name in theta_10)


def test_resume_skips_trained_copies_and_finished_results(run_path, swept):
    result, _ = swept
    seen, callback = collector()
    assert run_connectivity(run_path, round=1, rewind_steps=["0it", "10it", "20it"], points=5,
                            callback=callback) == result, "same parameters (in any order): same result"
    assert [e["unit"] for e in seen if e["type"] == aevents.UNIT_SKIPPED] == ["result"]
    directory = run_path / "analyses" / "connectivity" / result["result_dir"].rsplit("/", 1)[1]
    (directory / "result.json").unlink()
    (directory / "units" / "k_0000010" / "path" / "record.json").unlink()
    seen.clear()
    again = run_connectivity(run_path, round=1, rewind_steps=["0it", "10it", "20it"], points=5, callback=callback)
    assert not [e for e in seen if e["type"] == events.ROUND_STARTED], "copies are not retrained"
    assert again["curves"] == result["curves"]


def test_dense_round_zero_at_the_runs_own_k(run_path):
    result = analyses.run_analysis("connectivity", run_path, {"points": 3})
    (curve,) = result["curves"]
    assert result["round"] == 0 and result["remaining_fraction"] == 1.0 and curve["rewind_iteration"] == 10
    assert len(curve["test_error"]) == 3


@pytest.mark.parametrize("params, field", [
    ({"points": 2}, "points"), ({"round": 7}, "round"), ({"rewind_steps": ["40it"]}, "rewind_steps[0]"),
    ({"rewind_steps": ["0it", "soon"]}, "rewind_steps[1]"), ({"seed": -1}, "seed"), ({"bn_batches": 0}, "bn_batches"),
])
def test_bad_parameters_name_the_parameter(run_path, params, field):
    with pytest.raises(SpecError) as error:
        analyses.run_analysis("connectivity", run_path, params)
    assert error.value.field == field
