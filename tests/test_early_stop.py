"""Early stopping selects on validation loss only (issue 10 item 3): without a validation split the
run reports its end-of-training results and says there is no early stop; nothing is picked by test loss."""
import math

import pytest

from tests.test_imp import tiny_spec
from trainer import replicate_stats
from trainer.cli.main import summary_table
from trainer.imp import run_experiment
from trainer.training.loop import SegmentResult


def segment_with(val_loss, test_loss, test_accuracy):
    segment = SegmentResult(status="finished")
    segment.curve = {"iteration": [0, 10, 20], "val_loss": val_loss, "val_accuracy": [0.1, 0.5, 0.4],
                     "test_loss": test_loss, "test_accuracy": test_accuracy}
    return segment


def test_early_stop_is_the_minimum_validation_loss_not_test_loss():
    segment = segment_with([2.0, 0.5, 0.9], [2.0, 0.9, 0.1], [0.1, 0.6, 0.9])
    assert segment.early_stop()["iteration"] == 10
    assert segment.early_stop()["test_accuracy"] == 0.6


def test_without_validation_there_is_no_early_stop_even_if_test_loss_has_a_minimum():
    nan = math.nan
    segment = segment_with([nan, nan, nan], [2.0, 0.1, 0.9], [0.1, 0.95, 0.7])
    assert segment.early_stop() == {}
    assert segment.final()["test_accuracy"] == 0.7


def test_run_without_validation_reports_end_of_training(tmp_path):
    results = run_experiment(tiny_spec(validation_size=0, pruning={"rounds": 1}), tmp_path)
    assert results["dataset"]["validation_size"] == 0
    for record in results["rounds"]:
        assert record["early_stop"] == {}
        assert replicate_stats.metric(record) == record["final"]["test_accuracy"]
        assert record["final"]["iteration"] == record["end_iteration"]
    table = summary_table(results)
    assert "no validation split: no early stop" in table


def test_run_with_validation_reports_early_stop(tmp_path):
    results = run_experiment(tiny_spec(pruning={"rounds": 1}), tmp_path)
    for record in results["rounds"]:
        assert record["early_stop"]["iteration"] in record["curve"]["iteration"]
        assert replicate_stats.metric(record) == record["early_stop"]["test_accuracy"]
    assert "no early stop" not in summary_table(results)


@pytest.mark.django_db
def test_result_page_of_a_run_without_validation_reports_the_end_of_training(client, user, tmp_path):
    """The page says there is no early stop; the best ticket and the chart use end-of-training accuracy."""
    from frontend import queries, records
    from frontend.models import Experiment

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
    assert all(row["early_stop_test_accuracy"] is None for row in rows)
    assert [row["reported_test_accuracy"] for row in rows] == [r["final"]["test_accuracy"] for r in results["rounds"]]
    assert queries.best_ticket(rows) is not None
