"""Early stopping selects on validation loss only (issue 10 item 3): without a validation split the
run reports its end-of-training results and says there is no early stop; nothing is picked by test loss."""
import math

from tests.trainer.conftest import tiny_spec
from trainer import replicate_stats
from trainer.cli.main import summary_table
from trainer.imp import run_experiment
from trainer.training.record import SegmentResult


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
