"""progress.py and the Celery task: events -> rows and throttled messages; the task end to end (eager)."""
import math

import pytest

from frontend import progress
from frontend.models import Curve, Experiment, RoundResult
from frontend.tasks import run_experiment_task
from tests.conftest import TINY_SPEC, single_torch_thread
from trainer import events
from trainer.spec import ExperimentSpec


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def new_experiment(spec=None) -> Experiment:
    spec = ExperimentSpec.from_dict(spec or TINY_SPEC).to_dict()
    return Experiment.objects.create(spec=spec, model_name=spec["model"], dataset_name=spec["dataset"])


def metrics(iteration, loss=1.0, round_index=0, network="ticket"):
    return events.make_event(events.METRICS, network, round=round_index, iteration=iteration, train_loss=loss, lr=0.1)


def evaluation(iteration, accuracy, round_index=0, network="ticket"):
    return events.make_event(events.EVAL, network, round=round_index, iteration=iteration, val_loss=1.0,
                             val_accuracy=accuracy, test_loss=1.0, test_accuracy=accuracy)


@pytest.mark.django_db
def test_messages_are_throttled_and_numbered_and_lose_nothing():
    experiment = new_experiment()
    sent = []
    clock = FakeClock()
    recorder = progress.ProgressRecorder(experiment.pk, send=lambda _id, message: sent.append(message),
                                         messages_per_second=10, clock=clock)
    recorder.handle(events.make_event(events.ROUND_STARTED, round=0, remaining_fraction=1.0,
                                      start_iteration=0, end_iteration=2000))
    # 2000 events over 2 simulated seconds, a flush attempt after each
    for iteration in range(1, 2001):
        clock.now = iteration / 1000
        recorder.handle(metrics(iteration))
        recorder.flush_if_due()
    recorder.flush()
    assert len(sent) <= 2 * 10 + 2
    assert [m["seq"] for m in sent] == list(range(1, len(sent) + 1))
    delivered = [e["iteration"] for m in sent for e in m["events"] if e["type"] == "metrics"]
    assert delivered == list(range(1, 2001))
    curve = Curve.objects.get(experiment=experiment, network="ticket", round_index=0)
    assert curve.train_loss["iteration"] == list(range(1, 2001))  # one row holding every point


@pytest.mark.django_db
def test_database_is_written_before_the_message_is_sent():
    experiment = new_experiment()
    seen = []

    def send(experiment_id, message):
        # a browser reading a snapshot now must already find this message's data
        stored = Experiment.objects.get(pk=experiment_id)
        curve = Curve.objects.get(experiment_id=experiment_id, network="ticket", round_index=0)
        seen.append((stored.last_seq, message["seq"], curve.evals["iteration"][-1]))

    recorder = progress.ProgressRecorder(experiment.pk, send=send)
    recorder.handle(evaluation(50, 0.5))
    recorder.flush()
    recorder.handle(evaluation(100, 0.7))
    recorder.flush()
    assert seen == [(1, 1, 50), (2, 2, 100)]


@pytest.mark.django_db
def test_non_finite_values_become_null():
    experiment = new_experiment()
    sent = []
    recorder = progress.ProgressRecorder(experiment.pk, send=lambda _id, m: sent.append(m))
    recorder.handle(metrics(10, loss=math.nan))
    recorder.handle(evaluation(10, math.inf))
    recorder.flush()
    curve = Curve.objects.get(experiment=experiment)
    assert curve.train_loss["loss"] == [None] and curve.evals["val_accuracy"] == [None]
    assert sent[0]["events"][0]["train_loss"] is None


@pytest.mark.django_db
def test_run_failed_sets_status_and_message():
    experiment = new_experiment()
    recorder = progress.ProgressRecorder(experiment.pk, send=lambda *_: None)
    recorder.handle(events.make_event(events.RUN_FAILED, message="DatasetError: files missing"))
    recorder.flush()
    experiment.refresh_from_db()
    assert experiment.status == "failed" and "files missing" in experiment.message
    assert progress.progress_of(experiment)["status"] == "failed"


@pytest.mark.django_db
def test_a_failing_channel_layer_does_not_stop_the_recording():
    experiment = new_experiment()

    def broken(*_):
        raise ConnectionError("redis went away")
    recorder = progress.ProgressRecorder(experiment.pk, send=broken)
    recorder.handle(evaluation(50, 0.5))
    assert recorder.flush()
    assert Curve.objects.get(experiment=experiment).evals["iteration"] == [50]


@pytest.mark.django_db
def test_a_channel_layer_that_stays_away_is_logged_once_and_its_return_once(caplog):
    experiment = new_experiment()
    redis_up = {"now": False}

    def send(*_):
        if not redis_up["now"]:
            raise ConnectionError("redis went away")
    recorder = progress.ProgressRecorder(experiment.pk, send=send)
    for iteration in (50, 100, 150):
        recorder.handle(evaluation(iteration, 0.5))
        assert recorder.flush()
    redis_up["now"] = True
    recorder.handle(evaluation(200, 0.5))
    recorder.flush()
    messages = [record.getMessage() for record in caplog.records if record.name == "frontend.progress"]
    assert len(messages) == 2 and messages[0].startswith(f"could not send progress of experiment {experiment.pk}")
    assert "again, after 3 messages that could not be sent" in messages[1]
    assert recorder.messages_sent == 1 and recorder.failed_sends == 0


def test_trainings_total_counts_ticket_rounds_and_controls():
    spec = ExperimentSpec.from_dict(TINY_SPEC).to_dict()
    assert progress.trainings_total({"rounds_total": 2, "spec": spec}) == 3 + 2
    spec["control_rounds"] = [2]
    spec["controls"] = ["random_reinit", "random_prune"]
    assert progress.trainings_total({"rounds_total": 2, "spec": spec}) == 3 + 2


@pytest.mark.django_db(transaction=True)
def test_task_runs_the_trainer_and_stores_rounds_curves_and_messages(settings, tmp_path, monkeypatch):
    settings.LOTTERYWEB_RUNS_DIR = tmp_path
    sent = []
    monkeypatch.setattr(progress, "send_to_group", lambda experiment_id, message: sent.append(message))
    experiment = new_experiment({**TINY_SPEC, "init_seed": 11})
    with single_torch_thread():
        assert run_experiment_task(experiment.pk) == "finished"
    experiment.refresh_from_db()
    assert experiment.status == "finished" and experiment.finished_at and experiment.started_at
    assert experiment.trainings_done == experiment.trainings_total == 5
    rows = set(RoundResult.objects.filter(experiment=experiment).values_list("network", "round_index"))
    assert rows == {("ticket", 0), ("ticket", 1), ("ticket", 2), ("random_reinit", 1), ("random_reinit", 2)}
    assert Curve.objects.filter(experiment=experiment).count() == 5
    ticket_round_2 = RoundResult.objects.get(experiment=experiment, network="ticket", round_index=2)
    assert ticket_round_2.remaining_fraction == pytest.approx(0.64, abs=0.01)
    assert (tmp_path / experiment.run_name / "results.json").is_file()
    types = [e["type"] for m in sent for e in m["events"]]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("round_finished") == 5
    assert sent[-1]["progress"]["status"] == "finished"
    assert [m["seq"] for m in sent] == list(range(1, len(sent) + 1))


@pytest.mark.django_db(transaction=True)
def test_task_with_missing_experiment_or_cancel_before_start(settings, tmp_path):
    settings.LOTTERYWEB_RUNS_DIR = tmp_path
    assert run_experiment_task(987654) == "missing"
    experiment = new_experiment()
    Experiment.objects.filter(pk=experiment.pk).update(cancel_requested=True)
    assert run_experiment_task(experiment.pk) == "cancelled"
    assert run_experiment_task(experiment.pk) == "cancelled"  # a duplicate delivery does not rerun


@pytest.mark.django_db(transaction=True)
def test_task_reports_an_engine_error_as_failed(settings, tmp_path, monkeypatch):
    settings.LOTTERYWEB_RUNS_DIR = tmp_path
    monkeypatch.setattr(progress, "send_to_group", lambda *_: None)
    experiment = new_experiment()
    Experiment.objects.filter(pk=experiment.pk).update(spec={**experiment.spec, "dataset": "cifar10"})
    assert run_experiment_task(experiment.pk) == "failed"
    experiment.refresh_from_db()
    assert experiment.status == "failed" and "CIFAR" in experiment.message


@pytest.mark.django_db
def test_cancel_checker_asks_the_database_at_most_once_a_second():
    experiment = new_experiment()
    clock = FakeClock()
    stop_requested = progress.cancel_checker(experiment.pk, clock=clock)
    assert stop_requested() is False
    Experiment.objects.filter(pk=experiment.pk).update(cancel_requested=True)
    clock.now = 0.5
    assert stop_requested() is False  # not asked again yet
    clock.now = 1.0
    assert stop_requested() is True


@pytest.mark.django_db(transaction=True)
def test_cancel_during_the_run_ends_it_as_cancelled(settings, tmp_path, monkeypatch):
    settings.LOTTERYWEB_RUNS_DIR = tmp_path
    monkeypatch.setattr(progress, "send_to_group", lambda *_: None)
    monkeypatch.setattr(progress, "cancel_checker", lambda experiment_id: lambda: True)
    experiment = new_experiment({**TINY_SPEC, "init_seed": 12})
    with single_torch_thread():
        assert run_experiment_task(experiment.pk) == "cancelled"
    experiment.refresh_from_db()
    assert experiment.status == "cancelled" and experiment.finished_at


@pytest.mark.django_db(transaction=True)
def test_replicates_get_their_own_rows_curves_and_a_band_on_the_result_page(settings, tmp_path, monkeypatch, client):
    settings.LOTTERYWEB_RUNS_DIR = tmp_path
    sent = []
    monkeypatch.setattr(progress, "send_to_group", lambda experiment_id, message: sent.append(message))
    experiment = new_experiment({**TINY_SPEC, "init_seed": 12, "replicates": 2, "control_rounds": [2]})
    with single_torch_thread():
        assert run_experiment_task(experiment.pk) == "finished"
    experiment.refresh_from_db()
    assert experiment.trainings_done == experiment.trainings_total == 2 * (3 + 1)
    rows = set(RoundResult.objects.filter(experiment=experiment).values_list("network", "replicate", "round_index"))
    assert rows == {(network, replicate, round_index) for replicate in (0, 1)
                    for network, round_index in (("ticket", 0), ("ticket", 1), ("ticket", 2), ("random_reinit", 2))}
    assert set(Curve.objects.filter(experiment=experiment).values_list("network", "replicate", "round_index")) == rows
    live_keys = {(e["network"], e["replicate"], e["round"]) for m in sent for e in m["events"] if e["type"] == "eval"}
    assert live_keys == rows, "live events name the replicate of every point"
    accuracies = [r.early_stop_test_metric for r in RoundResult.objects.filter(
        experiment=experiment, network="ticket", round_index=2).order_by("replicate")]
    html = client.get(f"/e/{experiment.pk}/").content.decode()
    assert "mean ± std of 2 replicates" in html
    assert f"{100 * sum(accuracies) / 2:.2f} ±" in html
    assert '"meta":"band:ticket"' in html and '"meta":"band:random_reinit"' in html
