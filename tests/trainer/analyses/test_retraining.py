"""Retraining modes after pruning (Renda et al. 2020): own mask chains (the default) and the IMP-masks variant,
starting weights, learning rates, equal budgets, resume, bad parameters."""
import inspect
import json
import shutil

import pytest
import torch

from tests.trainer.conftest import collector, keeps_larger_half, tiny_run
from trainer import analyses, events
from trainer.analyses.params import params_hash
from trainer.analyses.retraining import MODES, NAME, PARAMS, TRAINED_MODES, run_retraining
from trainer.cli.main import main
from trainer.imp import Run
from trainer.pruning.masks import apply_mask, load_mask
from trainer.rundir import RunDir
from trainer.spec import SpecError
from trainer.training.loop import Schedule, evaluate


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def retrained(run_path):
    """The default: each mode's own chain (Renda et al.)."""
    seen, callback = collector()
    return run_retraining(run_path, callback=callback), seen


@pytest.fixture(scope="module")
def shared(run_path):
    """The IMP ticket's masks retrained by every mode."""
    return run_retraining(run_path, mask_chain="imp_masks")


def test_the_default_mask_chain_is_each_modes_own(retrained):
    result, _ = retrained
    assert analyses.validate("retraining", {})["mask_chain"] == "own"
    assert result["params"]["mask_chain"] == result["mask_chain"] == "own"
    assert all(e["masks"] == "own chain" for mode in TRAINED_MODES for e in result["modes"][mode])


def masked_accuracy(run: Run, state: dict, mask: dict) -> float:
    model = run.model_with(state)
    apply_mask(model, mask)
    return evaluate(model, run.data.test_x, run.data.test_y)[1]


def start_accuracy(run: Run, run_dir: RunDir, round_index: int) -> float:
    """Test accuracy of round r-1's final weights masked by round r's mask: where LR rewinding and fine-tuning start."""
    return masked_accuracy(run, run_dir.final_weights(round_index - 1), run_dir.mask(round_index))


def unit_dir(run_path, result, mode: str, round_index: int):
    return (run_path / "analyses" / "retraining" / result["result_dir"].rsplit("/", 1)[1] / "units" / mode
            / f"round_{round_index:03d}")


def test_each_mode_prunes_its_own_weights_round_after_round(run_path, retrained):
    result, _ = retrained
    run_dir = RunDir.open(run_path)
    run = Run(run_dir.spec, run_dir)
    records = {r["round"]: r for r in run_dir.records()}
    for entry in result["modes"]["weight_rewinding"]:
        assert entry["source"] == "imp_run", "weight rewinding's own chain is the IMP run"
        assert entry["curve"] == records[entry["round"]]["curve"]
    for mode in TRAINED_MODES:
        own_1, own_2 = (load_mask(unit_dir(run_path, result, mode, r) / "mask.pt") for r in (1, 2))
        final_1 = run_dir.load_state(unit_dir(run_path, result, mode, 1) / "final_weights.pt")
        assert all(torch.equal(own_1[n], m) for n, m in run_dir.mask(1).items()), "round 1 prunes the dense round"
        assert keeps_larger_half(own_2, own_1, {name: final_1[name].abs() for name in own_1}), \
            "round 2 prunes the mode's own round 1 weights by magnitude"
        changed = sum(int((own_2[n] != run_dir.mask(2)[n]).sum()) for n in own_2)
        assert changed > 0, f"{mode}: its own weights give masks other than the IMP run's"
        entries = {e["round"]: e for e in result["modes"][mode]}
        assert entries[1]["curve"]["test_accuracy"][0] == start_accuracy(run, run_dir, 1)
        assert entries[2]["curve"]["test_accuracy"][0] == masked_accuracy(run, final_1, own_2), \
            "round 2 starts from the chain's own round 1 weights under its own mask"
        # the same number of weights pruned; which units die with them depends on the chain's own mask
        assert entries[2]["unmasked_fraction"] == pytest.approx(records[2]["unmasked_fraction"])
        assert entries[2]["remaining_fraction"] <= entries[2]["unmasked_fraction"]
        assert entries[2]["start_weights"] == f"round 1 final weights ({mode} chain)"


def test_every_mode_retrains_the_same_budget(run_path, retrained):
    result, seen = retrained
    assert result["rewind_iteration"] == 10 and result["total_iterations"] == 40
    assert result["retraining_iterations"] == 30
    for mode in MODES:
        assert {(e["start_iteration"], e["end_iteration"]) for e in result["modes"][mode]} == {(10, 40)}, mode
    for mode in TRAINED_MODES:
        steps = [e["iteration"] for e in seen if e["type"] == events.METRICS and e["network"] == mode]
        assert steps == [20, 30, 40] * 2, "30 iterations per round, like the IMP run's k..T"


def test_the_imp_masks_variant_retrains_the_tickets_masks_from_the_runs_weights(run_path, shared):
    result = shared
    run_dir = RunDir.open(run_path)
    run = Run(run_dir.spec, run_dir)
    assert result["status"] == "finished" and result["rounds"] == [1, 2] and result["mask_chain"] == "imp_masks"
    records = {r["round"]: r for r in run_dir.records()}
    for entry in result["modes"]["weight_rewinding"]:
        assert entry["source"] == "imp_run"
        assert entry["curve"] == records[entry["round"]]["curve"]
    for mode in TRAINED_MODES:
        for entry in result["modes"][mode]:
            r = entry["round"]
            assert entry["source"] == "retrained" and entry["status"] == "finished" and entry["masks"] == "imp run"
            assert entry["remaining_fraction"] == records[r]["remaining_fraction"]
            assert entry["start_iteration"] == 10 and entry["curve"]["iteration"] == [10, 20, 40]
            assert entry["curve"]["test_accuracy"][0] == start_accuracy(run, run_dir, r)
            assert 0 <= entry["early_stop"]["test_accuracy"] <= 1
    json.dumps(result, allow_nan=False)
    on_disk = json.loads((run_path / "analyses" / "retraining" / result["result_dir"].rsplit("/", 1)[1]
                          / "result.json").read_text())
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


def test_an_own_chain_cancelled_in_round_2_resumes_to_the_same_result(run_path, retrained, tmp_path):
    result, _ = retrained
    copy = tmp_path / run_path.name
    shutil.copytree(run_path, copy, ignore=shutil.ignore_patterns("analyses"))
    stop = {"now": False}

    def callback(event):
        if event["type"] == events.ROUND_STARTED and event.get("network") == "lr_rewinding" and event["round"] == 2:
            stop["now"] = True
    cancelled = run_retraining(copy, callback=callback, stop_requested=lambda: stop["now"])
    assert cancelled["status"] == "cancelled"
    assert unit_dir(copy, cancelled, "lr_rewinding", 1).is_dir()
    assert not unit_dir(copy, cancelled, "lr_rewinding", 2).exists(), "the round in flight is not kept"
    seen, callback = collector()
    resumed = run_retraining(copy, callback=callback)
    skipped = [e["unit"] for e in seen if e["type"] == "unit_skipped"]
    assert skipped == ["lr_rewinding/round_001"]
    timeless = lambda modes: {mode: [{k: v for k, v in e.items() if k != "wall_seconds"} for e in entries]  # noqa: E731
                              for mode, entries in modes.items()}
    assert timeless(resumed["modes"]) == timeless(result["modes"]), "identical to the uninterrupted chain"


def test_a_result_stored_under_the_old_default_is_not_returned_for_the_new_one(run_path, retrained):
    result, _ = retrained
    old_default = params_hash(NAME, PARAMS, analyses.validate("retraining", {}), version=1)
    assert result["result_dir"].rsplit("/", 1)[1] != old_default


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
    ({"rounds": [1, 5]}, "rounds[1]"), ({"mask_chain": "x"}, "mask_chain"), ({"mask_chain": "imp"}, "mask_chain"),
    ({"rounds": "1"}, "rounds"),
    ({"colour": 1}, "colour"),
])
def test_bad_parameters_name_the_parameter(run_path, params, field):
    with pytest.raises(SpecError) as error:
        analyses.run_analysis("retraining", run_path, params)
    assert error.value.field == field


def test_the_cli_runs_an_analysis_and_prints_its_table(run_path, capsys):
    args = ["analyze", str(run_path), "retraining", "--rounds", "1", "--modes", "weight_rewinding", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "weight_rewinding       1        50.0" in out
    assert main(["analyze", str(run_path), "retraining", "--modes", "bogus"]) == 2
    assert "modes[0]" in capsys.readouterr().err


def test_every_registered_analysis_has_a_described_schema_with_help():
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
