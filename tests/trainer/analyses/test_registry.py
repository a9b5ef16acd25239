"""The analysis registry carries everything a study needs besides its module (params, the pre-flight
check, the CLI's summary lines, the chart builder's name, whether it runs with a new experiment), and no
other trainer or web app module names a study."""
import ast
import re
import shutil
from pathlib import Path

import pytest

from tests.trainer.conftest import OLD_LAYOUT_RUN, TinyBN
from trainer import analyses, models
from trainer.analyses import ANALYSES, check_runs_with_experiment, get_analysis, run_info
from trainer.analyses.common import planned_run_info
from trainer.cli.analyze import summary_text
from trainer.cli.main import main as cli_main
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec, SpecError

ROOT = Path(__file__).resolve().parents[3]
TRAINER = ROOT / "trainer"
FRONTEND = ROOT / "frontend"
# where the web app may name a study: the chart builders (keyed by Analysis.chart) and migrations (history)
FRONTEND_ALLOWED = (FRONTEND / "charts" / "analyses.py", FRONTEND / "migrations")
LENET = {"model": "lenet_300_100", "dataset": "mnist", "has_batch_norm": False, "finished_rounds": [0, 1, 2],
         "rewind_step": "100it"}


def test_every_entry_has_its_params_check_summary_and_chart():
    for name, analysis in ANALYSES.items():
        assert analysis.name == name and analysis.params
        assert analysis.chart == f"{name}_figures"
        defaults = analysis.validate(None)
        if analysis.runs_with_experiment:  # its defaults on a finished run pass
            analysis.check(defaults, {**LENET, "has_batch_norm": True})
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


def test_a_chain_length_named_rounds_is_not_taken_for_rounds_of_the_run():
    chain = get_analysis("masking_criteria")
    chain.check(chain.validate({"rounds": 5}), LENET)  # an int: five new rounds, not round 5 of the run


def test_analyses_queued_with_a_new_experiment_are_checked_on_the_run_as_planned():
    spec = ExperimentSpec.from_dict({"model": "lenet_300_100", "dataset": "mnist", "pruning": {"rounds": 3}})
    assert planned_run_info(spec) == {"model": "lenet_300_100", "dataset": "mnist", "task": "classification",
                                      "has_batch_norm": False,
                                      "finished_rounds": [0, 1, 2, 3], "rewind_step": "0it"}
    check_runs_with_experiment(["retraining", "masking_criteria"], spec)
    with pytest.raises(SpecError, match="Early-bird tickets: lenet_300_100 has no batch norm") as error:
        check_runs_with_experiment(["retraining", "early_bird"], spec)
    assert error.value.field == "analyses"
    with pytest.raises(SpecError, match="'transfer' cannot run with its default parameters"):
        check_runs_with_experiment(["transfer"], spec)
    check_runs_with_experiment(["early_bird"], ExperimentSpec.from_dict({"model": "resnet20", "dataset": "cifar10"}))
    with pytest.raises(SpecError, match="Early phase: perturbed tickets at θk: the run rewinds to θ0"):
        check_runs_with_experiment(["early_phase"], spec)
    check_runs_with_experiment(["early_phase"], ExperimentSpec.from_dict({**spec.to_dict(), "rewind_step": "100it"}))


def test_run_info_describes_a_run_directory(tmp_path, monkeypatch):
    monkeypatch.setitem(models.MODELS, "tiny_bn", models.ModelEntry("tiny_bn", "test-only batch-norm convnet", TinyBN,
                                                                    models._kaiming_normal))
    path = tmp_path / OLD_LAYOUT_RUN.name
    shutil.copytree(OLD_LAYOUT_RUN, path)
    assert run_info(RunDir.open(path)) == {"model": "tiny_bn", "dataset": "synthetic", "task": "classification",
                                           "has_batch_norm": True,
                                           "finished_rounds": [0, 1], "rewind_step": "0it"}


def test_the_cli_prints_the_registrys_summary_lines():
    result = {"analysis": "connectivity", "status": "finished", "result_dir": "r", "round": 1,
              "remaining_fraction": 0.5,
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


def _study_names_in_python(source: str) -> set[str]:
    """Study names as strings (not docstrings) and study modules imported by name."""
    tree = ast.parse(source)
    named = _string_constants(tree) & set(ANALYSES)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "trainer.analyses":
            named |= {alias.name for alias in node.names} & set(ANALYSES)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            named |= {module.split(".")[2] for module in modules
                      if module.startswith("trainer.analyses.") and module.split(".")[2] in ANALYSES}
    return named


def _study_names_in_text(text: str) -> set[str]:
    return {name for name in ANALYSES if re.search(rf"\b{name}\b", text)}


def _web_app_offenders() -> list[str]:
    offenders = []
    for path in sorted(FRONTEND.rglob("*")) + sorted((ROOT / "lotteryweb").rglob("*")):
        if not path.is_file() or any(path == allowed or allowed in path.parents for allowed in FRONTEND_ALLOWED):
            continue
        if path.suffix == ".py":
            named = _study_names_in_python(path.read_text())
        elif path.suffix in (".html", ".js", ".css", ".txt"):
            named = _study_names_in_text(path.read_text())
        else:
            continue
        offenders += [f"{path.relative_to(ROOT)}: {name!r}" for name in sorted(named)]
    return offenders


def test_no_web_app_module_or_template_outside_the_chart_builders_names_a_study():
    """The web app asks the registry (checks, titles, runs_with_experiment, chart names); only the chart
    builders are keyed by study, and adding a study adds one there."""
    assert _web_app_offenders() == []
    assert sorted(FRONTEND.rglob("*.html")) and sorted((FRONTEND / "static").rglob("*.js")), "the scan sees templates"


def test_the_web_app_scan_finds_a_study_named_in_code_an_import_or_a_template():
    assert _study_names_in_python('if "early_bird" in chosen:\n    pass\n') == {"early_bird"}
    assert _study_names_in_python("from trainer.analyses import transfer\n") == {"transfer"}
    assert _study_names_in_python("from trainer.analyses.connectivity import check\n") == {"connectivity"}
    assert _study_names_in_python('def f():\n    "about early_bird"\n') == set()
    assert _study_names_in_text('{% if section.name == "early_bird" %}') == {"early_bird"}
    assert _study_names_in_text("early-bird tickets, retrained") == set()



@pytest.mark.parametrize("name", list(ANALYSES))
def test_every_study_prints_its_cli_help(name, capsys):
    """Help strings with '%' (e.g. "% remaining") once broke argparse's formatting of `analyze NAME --help`."""
    with pytest.raises(SystemExit) as exited:
        cli_main(["analyze", "/nonexistent", name, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert all(f"--{param.name.replace('_', '-')}" in out for param in ANALYSES[name].params)
    assert "%%" not in out
