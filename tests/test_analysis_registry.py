"""The analysis registry carries everything a study needs besides its module (params, the pre-flight
check, the CLI's summary lines, the chart builder's name), and no other trainer module names a study."""
import ast
import shutil
from pathlib import Path

import pytest

from test_old_layout import FIXTURE
from test_early_bird import TinyBN
from trainer import analyses, models
from trainer.analyses import ANALYSES, get_analysis, run_info
from trainer.cli.analyze import summary_text
from trainer.rundir import RunDir
from trainer.spec import SpecError

TRAINER = Path(__file__).resolve().parent.parent / "trainer"
LENET = {"model": "lenet_300_100", "dataset": "mnist", "has_batch_norm": False, "finished_rounds": [0, 1, 2],
         "rewind_step": "100it"}


def test_every_entry_has_its_params_check_summary_and_chart():
    for name, analysis in ANALYSES.items():
        assert analysis.name == name and analysis.params
        assert analysis.chart == f"{name}_figures"
        defaults = analysis.validate(None)
        if name != "transfer":  # transfer has no default target
            analysis.check(defaults, {**LENET, "has_batch_norm": True})  # defaults on a finished run pass
        assert analysis.summary_lines is not None and callable(analysis.check)


def test_the_checks_refuse_what_the_worker_would_refuse():
    with pytest.raises(SpecError, match="no batch norm") as error:
        get_analysis("early_bird").check(analyses.validate("early_bird", None), LENET)
    assert error.value.field == "analysis"
    get_analysis("early_bird").check(analyses.validate("early_bird", None), {**LENET, "has_batch_norm": True})
    with pytest.raises(SpecError, match="round 3 is not a finished round") as error:
        get_analysis("retraining").check(analyses.validate("retraining", {"rounds": [1, 3]}), LENET)
    assert error.value.field == "rounds[1]"
    with pytest.raises(SpecError, match="round 5") as error:
        get_analysis("connectivity").check(analyses.validate("connectivity", {"round": 5}), LENET)
    assert error.value.field == "round"
    transfer = get_analysis("transfer")
    with pytest.raises(SpecError, match="choose the dataset"):
        transfer.check(transfer.validate(None), LENET)
    with pytest.raises(SpecError, match=r"inputs are \(3, 32, 32\)") as error:
        transfer.check(transfer.validate({"target_dataset": "cifar10"}), LENET)
    assert error.value.field == "target_dataset"
    transfer.check(transfer.validate({"target_dataset": "fashion_mnist"}), LENET)


def test_run_info_describes_a_run_directory(tmp_path, monkeypatch):
    monkeypatch.setitem(models.MODELS, "tiny_bn", models.ModelEntry("tiny_bn", "test-only batch-norm convnet", TinyBN,
                                                                    models._kaiming_normal))
    path = tmp_path / FIXTURE.name
    shutil.copytree(FIXTURE, path)
    assert run_info(RunDir.open(path)) == {"model": "tiny_bn", "dataset": "synthetic", "has_batch_norm": True,
                                           "finished_rounds": [0, 1], "rewind_step": "0it"}


def test_the_cli_prints_the_registrys_summary_lines():
    result = {"analysis": "connectivity", "status": "finished", "result_dir": "r", "round": 1, "remaining_fraction": 0.5,
              "curves": [{"rewind_iteration": 0, "status": "finished", "endpoint_errors": [0.1, 0.12],
                          "test_error": [0.1, 0.3, 0.12], "instability": 0.19, "stable": False}]}
    lines = summary_text(result).splitlines()
    assert lines[0] == "connectivity: r/result.json" and lines[1] == "round 1 (50.0% remaining)"
    assert lines[3].split() == ["0", "10.00%", "/", "12.00%", "30.00%", "19.00%", "no"]
    assert summary_text({**result, "analysis": "structured_pruning"}) == "structured_pruning: r/result.json"
    assert summary_text({**result, "status": "cancelled"}).endswith("cancelled (run the same command again to resume)")


def _string_constants(tree: ast.AST) -> set[str]:
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


def test_no_trainer_module_outside_the_analyses_names_a_study():
    """A study is named in its module (NAME) and in the registry only: code elsewhere refers to
    `<study module>.NAME` or goes through ANALYSES, so adding a study touches no if-chain."""
    offenders = []
    for path in sorted(TRAINER.rglob("*.py")):
        if (TRAINER / "analyses") in path.parents:
            continue
        named = _string_constants(ast.parse(path.read_text())) & set(ANALYSES)
        offenders += [f"{path.relative_to(TRAINER.parent)}: {name!r}" for name in sorted(named)]
    assert offenders == []
    # the scan does see a study named as a string
    assert _string_constants(ast.parse('x = "early_bird"\ndef f():\n    "doc"\n')) == {"early_bird"}
