"""Issue 10 items 6 and 7: the validation split comes from the data actually loaded; a spec file
that is not UTF-8 is a one-line error; an absurd but well-typed workload is refused, naming the field."""
import json

import pytest

from tests.trainer.conftest import ABSURD_WORKLOAD, trainer
from tests.trainer.dataset_files import write_idx_dataset
from trainer.imp import run_experiment
from trainer.spec import MAX_TOTAL_ITERATIONS, ExperimentSpec, SpecError


def test_validation_size_comes_from_the_loaded_data_not_the_registry(tmp_path):
    """A data directory with a 4,000-example MNIST runs with the default validation size (a sixth)."""
    write_idx_dataset(tmp_path / "mnist", gz=True, train_count=4000, test_count=50)
    spec = ExperimentSpec.from_dict({"dataset": "mnist", "device": "cpu",
                                     "training": {"training_steps": "20it", "eval_interval": "10it"},
                                     "pruning": {"rounds": 1}})
    assert spec.resolved_validation_size() == 5000  # the registry's 60,000 would hold out 5,000
    results = run_experiment(spec, tmp_path / "runs", data_dir=tmp_path)
    assert results["status"] == "finished"
    assert results["dataset"]["validation_size"] == 4000 // 6
    assert results["dataset"]["train_size"] == 4000 - 4000 // 6


def test_an_explicit_validation_size_too_big_for_the_loaded_data_names_the_field(tmp_path):
    write_idx_dataset(tmp_path / "mnist", gz=False, train_count=300, test_count=20)
    spec = ExperimentSpec.from_dict({"dataset": "mnist", "validation_size": 300, "device": "cpu",
                                     "training": {"training_steps": "5it"}, "pruning": {"rounds": 1}})
    with pytest.raises(SpecError) as error:
        run_experiment(spec, tmp_path / "runs", data_dir=tmp_path)
    assert error.value.field == "validation_size" and "300 training examples" in error.value.message


@pytest.mark.parametrize("steps", ["99999999999999999999it", "99999999ep"])
def test_absurd_workload_is_refused_naming_the_field(steps):
    with pytest.raises(SpecError) as error:
        ExperimentSpec.from_dict({"dataset": "synthetic", "training": {"training_steps": steps}})
    assert error.value.field == "training.training_steps"
    assert f"{MAX_TOTAL_ITERATIONS:,}" in error.value.message


def test_the_bound_counts_every_training_replicates_rounds_and_controls():
    per_round = 10_000_000
    fine = {"dataset": "synthetic", "training": {"training_steps": f"{per_round}it"}, "pruning": {"rounds": 9}}
    assert ExperimentSpec.from_dict(fine).trainings() == 10
    too_many = {**fine, "replicates": 4, "controls": ["random_reinit", "random_prune"]}
    spec_trainings = 4 * (10 + 2 * 9)
    assert per_round * spec_trainings > MAX_TOTAL_ITERATIONS
    with pytest.raises(SpecError, match="112 trainings"):
        ExperimentSpec.from_dict(too_many)


def test_cli_refuses_a_spec_file_that_is_not_utf8(tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_bytes(b'{"model": "lenet_300_100", "dataset": "\xff\xfe synthetic"}')
    done = trainer("run", "--spec", str(spec_path))
    assert done.returncode == 2, done.stderr
    assert "not UTF-8" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_cli_show_of_a_broken_results_file_is_one_line(tmp_path):
    (tmp_path / "results.json").write_bytes(b"\x89PNG\r\n")
    done = trainer("show", str(tmp_path))
    assert done.returncode == 2 and "not UTF-8" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "results.json").write_text(json.dumps({"rounds": "nope"}))
    done = trainer("show", str(tmp_path))
    assert done.returncode == 2 and "not a results file" in done.stderr and "Traceback" not in done.stderr


def test_cli_refuses_an_absurd_workload_with_exit_2(tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(ABSURD_WORKLOAD))
    done = trainer("run", "--spec", str(spec_path), env_extra={"LOTTERYWEB_RUNS_DIR": str(tmp_path / "runs")})
    assert done.returncode == 2 and "training.training_steps" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
