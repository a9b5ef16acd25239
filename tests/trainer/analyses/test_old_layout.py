"""A run directory written in the layout before the studies moved into trainer/analyses/ still opens,
resumes, and its study results are found (converted once into analyses/<name>/<hash>/)."""
import json
from pathlib import Path

from trainer import analyses
from trainer.imp import run_experiment
from trainer.rundir import RunDir


def test_an_old_run_directory_opens_and_its_imp_run_resumes_without_training(old_run):
    run_dir = RunDir.open(old_run)
    seen = []
    results = run_experiment(run_dir.spec, old_run.parent, callback=seen.append)
    assert results["status"] == "finished" and [r["round"] for r in results["rounds"]] == [0, 1]
    assert "round_started" not in [e["type"] for e in seen]


def test_old_study_results_are_found_after_one_conversion_and_nothing_is_lost(old_run):
    old_early_bird = json.loads((old_run / "early_bird" / "p0.5" / "results.json").read_text())
    found = {r["analysis"]: r for r in analyses.stored_results(old_run)}
    assert set(found) == {"early_bird", "pruning_at_init"}
    assert not (old_run / "early_bird").exists() and not (old_run / "pruning_at_init").exists()

    early_bird = found["early_bird"]
    assert early_bird["converted_from"] == "early_bird/p0.5"
    assert early_bird["params"] == {**analyses.validate("early_bird", None), "window": 2, "threshold": 1.0,
                                    "train_examples": 200}
    for key in ("epochs", "consecutive_distances", "early_bird_epoch", "ticket", "one_shot_imp"):
        assert early_bird[key] == old_early_bird[key]
    assert early_bird["imp"]["round"] == 1, "the old entry point had no IMP comparison; the conversion adds it"
    eb_dir = Path(early_bird["result_dir"])
    assert (eb_dir / "old_layout" / "early_bird" / "p0.5" / "results.json").is_file()

    pai = found["pruning_at_init"]
    [entry] = pai["methods"]["synflow"]
    assert pai["rounds"] == [1] and entry["imp_round"] == 1 and entry["target_remaining_fraction"] == 0.5
    assert pai["old_targets_without_imp_round"] == [{"method": "synflow", "target_remaining_fraction": 0.25}]
    old = Path(pai["result_dir"]) / "old_layout" / "pruning_at_init" / "synflow"
    assert {p.name for p in (old / "remaining_0.250000").iterdir()} == {"record.json", "mask.pt", "final_weights.pt"}

    assert analyses.stored_results(old_run) == list(found.values()), "converted once; the second listing reads it"


def test_an_old_early_bird_result_is_resumed_by_the_analysis_not_trained_again(old_run):
    seen = []
    params = {"window": 2, "threshold": 1.0, "train_examples": 200}
    result = analyses.run_analysis("early_bird", old_run, params, callback=seen.append)
    assert result["converted_from"] == "early_bird/p0.5"
    assert [e["type"] for e in seen] == ["unit_skipped", "analysis_finished"]
