"""Retraining modes after pruning: starting weights, learning rates, own mask chains, resume, bad parameters."""
import json

import pytest
import torch

from tests.analysis_helpers import collector, one_torch_thread, tiny_run  # noqa: F401  (autouse fixture)
from trainer import analyses, events
from trainer.analyses.retraining import prune_next, run_retraining
from trainer.imp import Run
from trainer.masks import apply_mask
from trainer.rundir import RunDir
from trainer.spec import SpecError
from trainer.train import Schedule, evaluate


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def retrained(run_path):
    seen, callback = collector()
    return run_retraining(run_path, callback=callback), seen


def start_accuracy(run: Run, run_dir: RunDir, round_index: int) -> float:
    """Test accuracy of round r-1's final weights masked by round r's mask: where LR rewinding and fine-tuning start."""
    model = run.model_with(run_dir.final_weights(round_index - 1))
    apply_mask(model, run_dir.mask(round_index))
    return evaluate(model, run.data.test_x, run.data.test_y)[1]


def test_weight_rewinding_is_the_imp_run_and_the_other_modes_start_from_the_previous_final_weights(run_path, retrained):
    result, _ = retrained
    run_dir = RunDir.open(run_path)
    run = Run(run_dir.spec, run_dir)
    assert result["status"] == "finished" and result["rounds"] == [1, 2]
    assert result["rewind_iteration"] == 10 and result["total_iterations"] == 40
    records = {r["round"]: r for r in run_dir.records()}
    for entry in result["modes"]["weight_rewinding"]:
        assert entry["source"] == "imp_run"
        assert entry["curve"] == records[entry["round"]]["curve"]
    for mode in ("lr_rewinding", "fine_tuning"):
        for entry in result["modes"][mode]:
            r = entry["round"]
            assert entry["source"] == "retrained" and entry["status"] == "finished"
            assert entry["remaining_fraction"] == records[r]["remaining_fraction"]
            assert entry["start_iteration"] == 10 and entry["curve"]["iteration"] == [10, 20, 40]
            assert entry["curve"]["test_accuracy"][0] == start_accuracy(run, run_dir, r)
            assert 0 <= entry["early_stop"]["test_accuracy"] <= 1
    json.dumps(result, allow_nan=False)
    on_disk = json.loads((run_path / "analyses" / "retraining").glob("*/result.json").__next__().read_text())
    assert on_disk == result


def test_lr_rewinding_replays_the_schedule_from_k_and_fine_tuning_uses_the_final_lr(run_path, retrained):
    result, seen = retrained
    run_dir = RunDir.open(run_path)
    schedule = Schedule.from_spec(run_dir.spec.training, 50)
    assert result["final_lr"] == pytest.approx(0.005) == schedule.lr_at(39)
    metrics = lambda network: [e for e in seen if e["type"] == events.METRICS and e["network"] == network]  # noqa: E731
    rewound = metrics("lr_rewinding")
    assert [e["iteration"] for e in rewound] == [20, 30, 40] * 2
    assert [e["lr"] for e in rewound] == [schedule.lr_at(it - 1) for it in (20, 30, 40)] * 2
    assert [e["lr"] for e in rewound] == pytest.approx([0.05, 0.05, 0.005] * 2)
    assert {e["lr"] for e in metrics("fine_tuning")} == {result["final_lr"]}
    assert all(e["analysis"] == "retraining" for e in seen)
    assert [e["type"] for e in seen][0] == "analysis_started" and seen[-1]["type"] == "analysis_finished"


def test_own_mask_chain_prunes_the_modes_own_weights(run_path):
    result = run_retraining(run_path, rounds=[2], modes=["fine_tuning"], mask_chain="own")
    assert [e["round"] for e in result["modes"]["fine_tuning"]] == [2]
    units = run_path / "analyses" / "retraining" / result["result_dir"].rsplit("/", 1)[1] / "units" / "fine_tuning"
    assert sorted(p.name for p in units.iterdir()) == ["round_001", "round_002"]
    run_dir = RunDir.open(run_path)
    run = Run(run_dir.spec, run_dir)
    from trainer.masks import load_mask
    own_1, own_2 = load_mask(units / "round_001" / "mask.pt"), load_mask(units / "round_002" / "mask.pt")
    for name, m in run_dir.mask(1).items():
        assert torch.equal(own_1[name], m), "round 1 prunes the run's dense round: the IMP mask"
    expected = prune_next(run, own_1, run_dir.load_state(units / "round_001" / "final_weights.pt"), 2)
    assert all(torch.equal(expected[n], own_2[n]) for n in own_2)
    assert any(not torch.equal(own_2[n], run_dir.mask(2)[n]) for n in own_2), "its own weights give its own mask"
    assert result["modes"]["fine_tuning"][0]["remaining_fraction"] == pytest.approx(run_dir.record(2)["remaining_fraction"])


def test_a_second_call_trains_nothing_and_a_cancelled_one_resumes(run_path, retrained):
    result, _ = retrained
    seen, callback = collector()
    assert run_retraining(run_path, callback=callback) == result
    assert not [e for e in seen if e["type"] == events.ROUND_STARTED]
    # Cancel after the first unit's first metrics: no result, the unit in flight is not kept.
    stops = iter([False, True])
    cancelled = run_retraining(run_path, rounds=[1], modes=["fine_tuning"],
                               stop_requested=lambda: next(stops, True))
    assert cancelled["status"] == "cancelled"
    directory = run_path / "analyses" / "retraining" / cancelled["result_dir"].rsplit("/", 1)[1]
    assert not (directory / "result.json").exists() and not (directory / "units" / "fine_tuning").exists()
    done = run_retraining(run_path, rounds=[1], modes=["fine_tuning"])
    assert done["modes"]["fine_tuning"][0]["curve"] == result["modes"]["fine_tuning"][0]["curve"], "deterministic"


@pytest.mark.parametrize("params, field", [
    ({"modes": ["nope"]}, "modes[0]"), ({"modes": []}, "modes"), ({"rounds": [0]}, "rounds[0]"),
    ({"rounds": [1, 5]}, "rounds[1]"), ({"mask_chain": "x"}, "mask_chain"), ({"rounds": "1"}, "rounds"),
    ({"colour": 1}, "colour"),
])
def test_bad_parameters_name_the_parameter(run_path, params, field):
    with pytest.raises(SpecError) as error:
        analyses.run_analysis("retraining", run_path, params)
    assert error.value.field == field


def test_the_cli_runs_an_analysis_and_prints_its_table(run_path, capsys):
    from trainer.cli import main
    assert main(["analyze", str(run_path), "retraining", "--rounds", "1", "--modes", "weight_rewinding", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "weight_rewinding       1        50.0" in out
    assert main(["analyze", str(run_path), "retraining", "--modes", "bogus"]) == 2
    assert "modes[0]" in capsys.readouterr().err


def test_every_registered_analysis_has_a_described_schema_with_help():
    import inspect
    for name, analysis in analyses.ANALYSES.items():
        schema = analysis.schema()
        json.dumps(schema)
        assert schema and all(entry["help"] for entry in schema), name
        signature = inspect.signature(analysis.function)
        assert [p["name"] for p in schema] == list(signature.parameters)[1:1 + len(schema)], name
        assert {"callback", "data_dir", "stop_requested"} <= set(signature.parameters), name
        assert analysis.validate({}) == {p["name"]: p["default"] for p in schema}
    with pytest.raises(SpecError) as error:
        analyses.validate("nothing", {})
    assert error.value.field == "analysis"
