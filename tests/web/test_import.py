"""`manage.py import_run`: a CLI run directory (rounds, replicates, analyses) shown in the web app."""
import json

import pytest
from django.core.management import CommandError, call_command

from frontend.models import AnalysisRun, Experiment, RoundResult
from tests.trainer.conftest import old_run  # noqa: F401  (fixture)


@pytest.mark.django_db
def test_import_run_brings_rounds_controls_and_analyses_and_is_idempotent(finished_run, analysis_results, client,
                                                                         capsys):
    results, run_path = finished_run
    call_command("import_run", str(run_path))
    experiment = Experiment.objects.get()
    assert "imported" in capsys.readouterr().out
    assert experiment.status == "finished" and experiment.run_dir == str(run_path.resolve())
    stored = set(RoundResult.objects.filter(experiment=experiment).values_list("network", "round_index"))
    expected = {("ticket", r["round"]) for r in results["rounds"]}
    expected |= {(kind, r["round"]) for kind, records in results["controls"].items() for r in records}
    assert stored == expected
    names = set(AnalysisRun.objects.filter(experiment=experiment, status="finished").values_list("name", flat=True))
    lenet_analyses = {name for name, (_, path) in analysis_results.items() if path == run_path}
    assert lenet_analyses <= names
    page = client.get(f"/e/{experiment.pk}/").content.decode()
    assert 'id="chart-sparsity-accuracy"' in page and 'id="round-table"' in page

    analyses_before = AnalysisRun.objects.filter(experiment=experiment).count()
    call_command("import_run", str(run_path))  # again: refreshed, not duplicated
    assert "refreshed" in capsys.readouterr().out
    assert Experiment.objects.count() == 1
    assert AnalysisRun.objects.filter(experiment=experiment).count() == analyses_before


@pytest.mark.django_db
def test_import_run_refuses_what_is_not_a_finished_run_with_a_message(tmp_path, finished_run):
    with pytest.raises(CommandError, match="not a run directory"):
        call_command("import_run", str(tmp_path))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "spec.json").write_text((finished_run[1] / "spec.json").read_text())
    with pytest.raises(CommandError, match="no results.json yet"):
        call_command("import_run", str(unfinished))
    (unfinished / "results.json").write_text(json.dumps({"rounds": "garbage"}))
    with pytest.raises(CommandError, match="not a trainer results file"):
        call_command("import_run", str(unfinished))
    assert Experiment.objects.count() == 0


@pytest.mark.django_db
def test_a_run_directory_of_the_old_layout_imports_with_its_study_results_converted(old_run, client):  # noqa: F811
    call_command("import_run", str(old_run))
    experiment = Experiment.objects.get()
    runs = {run.name: run for run in experiment.analysis_runs.filter(status="finished")}
    assert set(runs) == {"early_bird", "pruning_at_init"}
    assert runs["early_bird"].result["converted_from"] == "early_bird/p0.5"
    assert not (old_run / "early_bird").exists(), "converted in place, once"
    page = client.get(f"/e/{experiment.pk}/").content.decode()
    assert f'id="analysis-{runs["early_bird"].pk}-distances"' in page
    assert f'id="analysis-{runs["pruning_at_init"].pk}-accuracy"' in page
