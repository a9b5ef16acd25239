"""The result page of a run without a validation split: no early stop, end-of-training accuracy
(issue 10 item 3; the engine side is tests/trainer/training/test_early_stop.py)."""
import pytest

from frontend import queries, records
from frontend.models import Experiment
from tests.trainer.conftest import tiny_spec
from trainer.imp import run_experiment


@pytest.mark.django_db
def test_result_page_of_a_run_without_validation_reports_the_end_of_training(client, user, tmp_path):
    """The page says there is no early stop; the best ticket and the chart use end-of-training accuracy."""
    results = run_experiment(tiny_spec(validation_size=0, pruning={"rounds": 1}), tmp_path)
    spec = results["spec"]
    experiment = Experiment.objects.create(
        spec=spec, model_name=spec["model"], dataset_name=spec["dataset"], status=Experiment.Status.FINISHED,
        owner=user, run_name=results["run_name"], rounds_total=1, iterations_per_round=results["total_iterations"])
    for record in results["rounds"]:
        records.store_record(experiment.pk, record)
    page = client.get(f"/e/{experiment.pk}/").content.decode()
    assert 'id="no-early-stop"' in page and "Nothing is selected on the test set" in page
    assert "end of training, no early stop" in page
    rows = queries.rounds_by_network(experiment)["ticket"]
    assert all(row["early_stop_test_metric"] is None for row in rows)
    assert [row["reported_test_metric"] for row in rows] == [r["final"]["test_accuracy"] for r in results["rounds"]]
    assert queries.best_ticket(rows) is not None
