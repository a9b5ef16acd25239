"""`python -m trainer`: runs, tables, and one-line errors with exit code 2."""
import json
import shutil

import pytest

from tests.trainer.conftest import trainer
from trainer.cli.main import main as cli_main

TINY = ["--dataset", "synthetic", "--validation-size", "500", "--training-steps", "60it", "--eval-interval", "30it",
        "--batch-size", "50", "--lr", "0.05", "--rounds", "2"]


def test_run_writes_results_and_prints_the_summary_table_then_controls_extend_it(tmp_path):
    done = trainer("run", *TINY, "--runs-dir", str(tmp_path), "--layer-fractions", "fc3.weight=0.1")
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0]
    assert "round" in header and "% remaining" in header and "early-stop it" in header
    table, verdicts = done.stdout.split("\n\n")  # the table, then the winning-ticket verdicts (trainer.verdict)
    rows = table.splitlines()[2:]
    assert [row.split("|")[0].strip() for row in rows] == ["0", "1", "2"]
    assert verdicts.count("-> more replicates needed") == 2  # one replicate, rounds 1 and 2
    assert rows[1].split("|")[1].strip() == "80.0"
    assert rows[0].split("|")[2].strip() == "266,610", "effective parameters: LeNet's weights and biases"
    assert 0.75 * 266_610 < int(rows[1].split("|")[2].strip().replace(",", "")) < 0.85 * 266_610
    # Not a TTY: plain progress lines, no bar characters.
    assert "round 1 finished" in done.stderr and "\r" not in done.stderr
    (run_dir,) = tmp_path.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["spec"]["pruning"]["layer_fractions"] == {"fc3.weight": 0.1}

    controls = trainer("controls", str(run_dir), "--kinds", "random_reinit", "--rounds", "2", "--quiet")
    assert controls.returncode == 0, controls.stderr
    assert "random_reinit (early stop)" in controls.stdout.splitlines()[0]
    shown = trainer("show", str(run_dir))
    assert shown.stdout == controls.stdout


def test_spec_file_with_flag_override(tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"dataset": "synthetic", "validation_size": 500,
                                     "training": {"training_steps": "40it", "eval_interval": "20it", "lr": 0.05},
                                     "pruning": {"rounds": 3}}))
    done = trainer("run", "--spec", str(spec_path), "--rounds", "1", "--runs-dir", str(tmp_path / "runs"), "--quiet")
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "spec.json").read_text())["pruning"]["rounds"] == 1


def test_list_shows_models_and_which_datasets_are_installed(tmp_path):
    listed = trainer("list", env_extra={"LOTTERYWEB_DATA_DIR": str(tmp_path)})
    assert listed.returncode == 0
    for name in ("lenet_300_100", "conv2", "conv4", "conv6", "vgg16", "resnet20",
                 "fashion_mnist", "cifar10", "synthetic"):
        assert name in listed.stdout
    cifar_line = next(line for line in listed.stdout.splitlines() if line.strip().startswith("cifar10"))
    assert "not installed" in cifar_line and str(tmp_path) in cifar_line
    lines = {line.split()[0]: line for line in listed.stdout.splitlines() if line.startswith("  ")}
    assert "[language modeling]" in lines["transformer_lm"] and "[reinforcement learning]" in lines["actor_critic"]
    assert "words" in lines["python_docs"] and "[installed]" in lines["python_docs"]  # embedded: always there
    assert "not installed" in lines["wikitext2"] and str(tmp_path / "wikitext-2" / "wiki.train.tokens") in lines[
        "wikitext2"]
    assert "2 actions" in lines["cartpole"] and "[installed]" in lines["cartpole"]


BAD_INVOCATIONS = [
    (["run", "--fraction", "1.5"], "pruning.fraction"),
    (["run", "--fraction", "lots"], "pruning.fraction"),
    (["run", "--model", "alexnet"], "unknown model"),
    (["run", "--rounds", "0"], "pruning.rounds"),
    (["run", "--spec", "/nonexistent/spec.json"], "cannot read"),
    (["run", "--no-such-flag"], "unrecognized arguments"),
    (["run", "--dataset", "cifar10"], "cifar-10-batches-py"),
    (["controls", "/nonexistent/run"], "not a run directory"),
    (["controls", "/tmp", "--kinds", "random_everything"], "unknown control"),
    (["show", "/nonexistent/run"], "not a run directory"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
]


@pytest.mark.parametrize("args, words", BAD_INVOCATIONS, ids=[" ".join(a) or "nothing" for a, _ in BAD_INVOCATIONS])
def test_bad_input_is_one_line_on_stderr_with_exit_code_2(args, words, tmp_path):
    done = trainer(*args, env_extra={"LOTTERYWEB_DATA_DIR": str(tmp_path),
                                     "LOTTERYWEB_RUNS_DIR": str(tmp_path / "runs")})
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert words in done.stderr


def test_bad_spec_file_content(tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text("{not json")
    done = trainer("run", "--spec", str(spec_path))
    assert done.returncode == 2 and "not valid JSON" in done.stderr and "Traceback" not in done.stderr


def test_show_of_an_interrupted_run_says_how_to_resume_it(finished_run, tmp_path, capsys):
    run_path = tmp_path / finished_run[1].name
    shutil.copytree(finished_run[1], run_path)
    (run_path / "results.json").unlink()  # as after a kill in the middle of a round
    assert cli_main(["show", str(run_path)]) == 2
    message = capsys.readouterr().err
    assert "interrupted after 3 finished rounds" in message
    assert f"--spec {run_path / 'spec.json'} --runs-dir {tmp_path}" in message
