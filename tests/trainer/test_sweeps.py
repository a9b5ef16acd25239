"""Sweep definitions (trainer.sweeps): grid expansion order, explicit points, seeds, refusals; the summary
over seeds (trainer.sweep_summary); and `python -m trainer sweep` (exit 2 on bad input, a tiny real sweep
that reuses its finished run directories when run again)."""
import json

import pytest

from tests.trainer.conftest import trainer
from trainer.cli.main import main as cli_main
from trainer.spec import SpecError
from trainer.sweep_summary import configuration_summary
from trainer.sweeps import SweepDefinition, expand, parse_values

BASE = {"dataset": "synthetic", "training": {"training_steps": "60it"}, "pruning": {"rounds": 1}}


def sweep(**fields) -> SweepDefinition:
    return SweepDefinition.from_dict({"base_spec": BASE, **fields})


def test_grid_expands_in_spec_field_order_last_field_fastest_seeds_innermost():
    # given out of the spec's order: pruning.rounds comes after training.lr in the spec
    points = expand(sweep(grid={"pruning.rounds": [1, 3], "training.lr": [0.1, 0.01, 0.001]}, seeds=2))
    assert len(points) == 12 and [p.index for p in points] == list(range(12))
    assert [(p.config["training.lr"], p.config["pruning.rounds"], p.seed_index) for p in points[:5]] == [
        (0.1, 1, 0), (0.1, 1, 1), (0.1, 3, 0), (0.1, 3, 1), (0.01, 1, 0)]
    assert list(points[0].config) == ["training.lr", "pruning.rounds"]
    assert points[2].spec.training.lr == 0.1 and points[2].spec.pruning.rounds == 3
    assert [p.configuration for p in points[:4]] == [0, 0, 1, 1]
    # the same sweep expands to the same specs: finished run directories are found again
    assert [p.spec.run_name() for p in points] == [p.spec.run_name() for p in expand(
        sweep(grid={"training.lr": [0.1, 0.01, 0.001], "pruning.rounds": [1, 3]}, seeds=2))]


def test_seed_zero_is_the_base_specs_own_and_others_are_derived():
    points = expand(sweep(base_spec={**BASE, "init_seed": 7, "data_seed": 9}, seeds=3))
    assert [(p.spec.init_seed, p.spec.data_seed) for p in points][0] == (7, 9)
    seeds = {(p.spec.init_seed, p.spec.data_seed) for p in points}
    assert len(seeds) == 3 and all(0 <= s < 2**31 for pair in seeds for s in pair)
    again = expand(sweep(base_spec={**BASE, "init_seed": 7, "data_seed": 9}, seeds=3))
    assert [p.spec for p in again] == [p.spec for p in points]


def test_explicit_points_keep_their_order_and_may_differ_in_fields():
    points = expand(sweep(points=[{"pruning.rounds": 2}, {"training.lr": 0.5, "pruning.fraction": 0.5}]))
    assert [p.config for p in points] == [{"pruning.rounds": 2}, {"training.lr": 0.5, "pruning.fraction": 0.5}]
    assert points[1].spec.pruning.fraction == 0.5 and points[1].spec.pruning.rounds == 1


@pytest.mark.parametrize("fields, field, words", [
    ({"grid": {"lr": [0.1]}}, "grid.lr", "unknown spec field 'lr'; sweepable fields are model, dataset, "),
    ({"grid": {"pruning": [{}]}}, "grid.pruning", "unknown spec field"),
    ({"points": [{"training.lr": 0.1}, {"training.momentum": 2.0}]}, "points[1].training.momentum",
     "configuration 2 (momentum=2): training.momentum: must be less than 1.0"),
    ({"grid": {"training.lr": [0.1, 0.1]}}, "grid", "configuration 1 (lr=0.1) seed 0 and configuration 2 (lr=0.1) "
                                                    "seed 0 have the same spec"),
    ({"grid": {"pruning.rounds": [1, 1.5]}}, "grid.pruning.rounds", "configuration 2 (rounds=1.5)"),
    ({"base_spec": {**BASE, "training": {"lr": -1}}, "grid": {"pruning.rounds": [1]}}, "base_spec.training.lr",
     "configuration 1 (rounds=1): training.lr: must be greater than 0"),
    ({"grid": {"training.lr": [0.1]}, "points": [{}]}, "points", "not both"),
    ({"seeds": 0}, "seeds", "at least 1"),
    ({"grid": []}, "grid", "expected an object"),
    ({"extra": 1}, "extra", "unknown key"),
])
def test_bad_sweeps_are_refused_naming_the_point_and_field(fields, field, words):
    with pytest.raises(SpecError) as refused:
        expand(sweep(**fields))
    assert refused.value.field == field and words in refused.value.message


def test_the_size_limit_counts_configurations_times_seeds_before_expanding():
    definition = sweep(grid={"training.lr": [0.1, 0.2, 0.3], "pruning.rounds": [1, 2]}, seeds=5)
    assert definition.size() == 30
    assert len(expand(definition, max_points=30)) == 30
    with pytest.raises(SpecError) as refused:
        expand(definition, max_points=29)
    assert refused.value.field == "seeds"
    assert refused.value.message == "the sweep has 30 experiments (6 configurations × 5 seeds), above the limit of 29"
    with pytest.raises(SpecError) as refused:
        expand(definition, max_points=5)
    assert refused.value.field == "grid"  # the configurations alone are too many


def test_values_as_text_are_typed_per_field():
    assert parse_values("training.lr", "0.1, 0.01") == [0.1, 0.01]
    assert parse_values("pruning.rounds", "1,2,3") == [1, 2, 3]
    assert parse_values("controls", "random_reinit; random_reinit, random_prune") == [
        ["random_reinit"], ["random_reinit", "random_prune"]]
    assert parse_values("validation_size", "null, 100") == [None, 100]
    with pytest.raises(SpecError, match="cannot read 'x' as INT"):
        parse_values("pruning.rounds", "1, x")
    with pytest.raises(SpecError, match="no values"):
        parse_values("pruning.rounds", " , ")


def rows(dense: float, pruned: list[tuple[float, float]], replicate: int = 0) -> list[dict]:
    found = [{"network": "ticket", "replicate": replicate, "round": 0, "status": "finished", "remaining_fraction": 1.0,
              "early_stop_iteration": 50, "reported_test_metric": dense}]
    for index, (remaining, value) in enumerate(pruned, start=1):
        found.append({"network": "ticket", "replicate": replicate, "round": index, "status": "finished",
                      "remaining_fraction": remaining, "early_stop_iteration": 40, "reported_test_metric": value})
    return found


def test_the_summary_over_seeds_pairs_each_seed_with_its_own_dense_round():
    seeds = [{"seed_index": index, "rows": rows(dense, [(0.5, dense + 0.002), (0.25, dense - 0.05)]),
              "total_iterations": 50} for index, dense in enumerate([0.90, 0.92, 0.88])]
    summary = configuration_summary(seeds)
    assert summary["seeds"] == 3 and summary["dense"]["mean"] == pytest.approx(0.90)
    assert summary["dense"]["std"] == pytest.approx(0.02) and summary["dense"]["count"] == 3
    assert summary["best_remaining"] == {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5, "count": 3}
    # round 1 is matching in every seed (+0.2 points), without controls it cannot be winning
    assert summary["verdict"]["verdict"] == "matching" and summary["verdict"]["round"] == 1
    assert summary["verdict"]["text"] == "matching down to 50% of weights (n=3)"
    assert [point["round"] for point in summary["curve"]] == [0, 1, 2]
    assert summary["curve"][2]["mean"] == pytest.approx(0.85) and summary["curve"][2]["count"] == 3


# ---- python -m trainer sweep ------------------------------------------------------------------------

TINY = ["--dataset", "synthetic", "--validation-size", "500", "--training-steps", "40it", "--eval-interval", "20it",
        "--batch-size", "50", "--lr", "0.05", "--rounds", "1"]


@pytest.mark.parametrize("args, words", [
    (["--grid", "lrr=0.1"], "unknown spec field 'lrr'"),
    (["--grid", "lr"], "expected FIELD=V1,V2"),
    (["--grid", "lr=0.1,abc"], "cannot read 'abc' as FLOAT"),
    (["--grid", "lr=0.1,20"], "grid.training.lr: configuration 2 (lr=20): training.lr: must be at most 10.0"),
    (["--grid", "lr=0.1,0.1"], "have the same spec"),
    (["--grid", "lr=0.1,0.2", "--seeds", "3", "--max-points", "5"], "6 experiments (2 configurations × 3 seeds), "
                                                                     "above the limit of 5"),
    (["--seeds", "0"], "at least 1"),
    (["--points", "/nonexistent/points.json"], "cannot read"),
    (["--grid", "lr=0.1", "--dataset", "cifar10"], "cifar10 is not installed"),
])
def test_bad_sweep_commands_exit_2_with_one_line(args, words, tmp_path, capsys):
    assert cli_main(["sweep", *TINY, "--dry-run", "--data-dir", str(tmp_path), *args]) == 2
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1 and words in stderr


def test_points_file_must_be_a_list_of_configurations(tmp_path, capsys):
    path = tmp_path / "points.json"
    path.write_text(json.dumps({"points": "nope"}))
    assert cli_main(["sweep", *TINY, "--points", str(path)]) == 2
    assert "non-empty JSON list" in capsys.readouterr().err
    path.write_text(json.dumps([{"fraction": 0.3}, {"training.lr": 0.02}]))
    assert cli_main(["sweep", *TINY, "--points", str(path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "2 experiments: 2 configurations × 1 seed" in printed and "1. fraction=0.3, seed 0" in printed


def test_a_tiny_sweep_runs_every_point_prints_its_table_and_reuses_finished_runs(tmp_path):
    args = ["sweep", *TINY, "--grid", "fraction=0.2,0.5", "--seeds", "2", "--runs-dir", str(tmp_path), "--quiet"]
    done = trainer(*args)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.iterdir())) == 4  # one run directory per point
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("fraction"))
    assert "dense test acc" in header and "best ticket % remaining" in header and "verdict" in header
    table = lines[lines.index(header) + 2:lines.index(header) + 4]
    assert [row.split("|")[0].strip() for row in table] == ["0.2", "0.5"]
    assert all(row.split("|")[1].strip() == "2" and "(n=2)" in row for row in table)
    again = trainer(*args[:-1])  # not quiet: the progress says what was skipped
    assert again.returncode == 0 and again.stderr.count("already done, skipped") == 8  # 4 points × 2 rounds
    assert again.stdout.splitlines()[-4:] == done.stdout.splitlines()[-4:]
