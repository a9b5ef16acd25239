"""Crash recovery in-process: heartbeats, and which running experiments count as lost."""
import io
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from frontend import recovery, tasks
from frontend.models import AnalysisRun, Experiment, ReproductionRun

pytestmark = pytest.mark.django_db(transaction=True)


def running(heartbeat_age_seconds: float | None, current_round: int = 3) -> Experiment:
    now = timezone.now()
    return Experiment.objects.create(
        spec={}, model_name="lenet_300_100", dataset_name="synthetic", status="running", worker="celery@gpu-host-2",
        current_round=current_round, started_at=now - timedelta(hours=1),
        heartbeat_at=None if heartbeat_age_seconds is None else now - timedelta(seconds=heartbeat_age_seconds))


def test_only_runs_with_a_stale_heartbeat_are_requeued_with_a_message(settings, queued):
    settings.LOTTERYWEB_HEARTBEAT_TIMEOUT = 60
    lost, alive, never_beat = running(300), running(5), running(None)
    finished = running(300)
    Experiment.objects.filter(pk=finished.pk).update(status="finished")
    assert sorted(recovery.requeue_lost_runs()) == sorted([lost.pk, never_beat.pk])
    assert sorted(queued) == sorted([lost.pk, never_beat.pk])
    lost.refresh_from_db()
    assert lost.status == "queued"
    assert "worker celery@gpu-host-2 stopped answering during round 3" in lost.message
    assert "resume from round 3 (rounds 0-2 kept)" in lost.message
    assert Experiment.objects.get(pk=alive.pk).status == "running"
    assert recovery.requeue_lost_runs() == [], "a re-queued run is not queued twice"


def test_the_heartbeat_is_written_while_a_run_is_in_progress(settings):
    settings.LOTTERYWEB_HEARTBEAT_SECONDS = 0.05
    experiment = running(300)
    before = experiment.heartbeat_at
    with recovery.heartbeat(experiment.pk):
        time.sleep(0.3)
    experiment.refresh_from_db()
    assert experiment.heartbeat_at > before + timedelta(seconds=200)


def test_a_lost_run_whose_cancel_was_requested_is_cancelled_not_requeued(settings, queued):
    settings.LOTTERYWEB_HEARTBEAT_TIMEOUT = 60
    lost = running(300)
    Experiment.objects.filter(pk=lost.pk).update(cancel_requested=True)
    assert recovery.requeue_lost_runs() == [] and queued == []
    lost.refresh_from_db()
    assert lost.status == "cancelled" and lost.finished_at is not None
    assert lost.message.startswith("cancelled; worker celery@gpu-host-2 stopped answering during round 3")


def test_a_requeued_run_says_who_resumed_it(settings, queued, monkeypatch):
    settings.LOTTERYWEB_HEARTBEAT_TIMEOUT = 60
    lost = running(300)
    recovery.requeue_lost_runs()
    seen = {}

    def training(*_, **__):
        seen["message"] = Experiment.objects.get(pk=lost.pk).message
        raise RuntimeError("stop here")
    monkeypatch.setattr(tasks, "run_experiment", training)
    tasks.run_experiment_task(lost.pk)
    assert "to resume from round 3 (rounds 0-2 kept); resumed by " in seen["message"]


class FakeRedis:
    def __init__(self):
        self.keys = {}

    def set(self, key, value, nx=False):
        if nx and key in self.keys:
            return None
        self.keys[key] = value
        return True

    def delete(self, key):
        self.keys.pop(key, None)


def test_the_queued_tasks_are_sent_again_when_redis_has_lost_its_data(queued, monkeypatch):
    analyses = []
    monkeypatch.setattr(tasks.run_analysis_task, "delay", lambda analysis_run_id: analyses.append(analysis_run_id))
    waiting = Experiment.objects.create(spec={}, model_name="lenet_300_100", dataset_name="synthetic")
    running(5)
    finished = running(5)
    Experiment.objects.filter(pk=finished.pk).update(status="finished")
    analysis = AnalysisRun.objects.create(experiment=finished, name="retraining", params={})
    watch = recovery.BrokerRestartWatch()
    watch._client = redis = FakeRedis()
    assert watch.check() == {"experiments": [waiting.pk], "analyses": [analysis.pk], "reproductions": []}, \
        "a new Redis: send them"
    assert watch.check() == {} and queued == [waiting.pk], "the marker is there: the queue is too"
    redis.keys.clear()  # Redis restarted without persistence
    reproduction = ReproductionRun.objects.create(check_name="tickets_vs_dense", budget="small")
    reproductions = []
    monkeypatch.setattr(tasks.run_reproduction_task, "delay", lambda run_id: reproductions.append(run_id))
    assert watch.check() == {"experiments": [waiting.pk], "analyses": [analysis.pk], "reproductions": [reproduction.pk]}
    assert reproductions == [reproduction.pk]
    assert queued == [waiting.pk, waiting.pk] and analyses == [analysis.pk, analysis.pk]


def test_the_runs_of_a_worker_that_died_are_requeued_at_once(queued, monkeypatch):
    """The worker supervisor saw worker celery@gpu-host-2 exit: its runs are queued again although
    their heartbeats are fresh; other workers' runs and its finished ones are left alone."""
    reproductions = []
    monkeypatch.setattr(tasks.run_reproduction_task, "delay", lambda run_id: reproductions.append(run_id))
    mine, cancelled, finished, elsewhere = running(1), running(1, current_round=0), running(1), running(1)
    Experiment.objects.filter(pk=cancelled.pk).update(cancel_requested=True)
    Experiment.objects.filter(pk=finished.pk).update(status="finished")
    Experiment.objects.filter(pk=elsewhere.pk).update(worker="celery@gpu-host-3")
    check = ReproductionRun.objects.create(check_name="tickets_vs_dense", budget="small", status="running",
                                           worker="celery@gpu-host-2", progress_done=3, progress_total=7,
                                           started_at=timezone.now(), heartbeat_at=timezone.now())
    assert recovery.requeue_runs_of_worker("celery@gpu-host-2") == {"experiments": [mine.pk],
                                                                     "reproductions": [check.pk]}
    assert queued == [mine.pk] and reproductions == [check.pk]
    mine.refresh_from_db()
    assert mine.status == "queued"
    assert mine.message.startswith("worker celery@gpu-host-2 died during round 3; re-queued at ")
    assert mine.message.endswith("to resume from round 3 (rounds 0-2 kept)")
    cancelled.refresh_from_db()
    assert cancelled.status == "cancelled"
    assert cancelled.message == "cancelled; worker celery@gpu-host-2 died during round 0 (nothing finished yet)"
    check.refresh_from_db()
    assert check.status == "queued" and check.message.startswith("worker celery@gpu-host-2 died after 3 of 7 steps")
    assert {Experiment.objects.get(pk=pk).status for pk in (finished.pk, elsewhere.pk)} == {"finished", "running"}
    assert recovery.requeue_runs_of_worker("celery@gpu-host-2") == {"experiments": [], "reproductions": []}


def test_the_requeue_command_leaves_alone_what_a_new_worker_of_that_name_started(queued):
    """manage.py requeue_worker_runs, as the worker supervisor runs it: runs started after the death are
    the restarted worker's own."""
    lost, restarted = running(1), running(1)
    Experiment.objects.filter(pk=restarted.pk).update(started_at=timezone.now() + timedelta(seconds=5))
    died_at = (timezone.now() + timedelta(seconds=1)).isoformat()
    output = io.StringIO()
    call_command("requeue_worker_runs", "celery@gpu-host-2", "--died-at", died_at, stdout=output)
    said = output.getvalue().strip()
    assert said == (f"celery@gpu-host-2: re-queued experiments [{lost.pk}], reproduction checks none, "
                    "pieces of experiments none")
    assert queued == [lost.pk] and Experiment.objects.get(pk=restarted.pk).status == "running"
    for bad in ("yesterday", "2025-13-45T10:00:00"):
        with pytest.raises(CommandError, match="--died-at must be an ISO time") as raised:
            call_command("requeue_worker_runs", "celery@gpu-host-2", "--died-at", bad)
        assert raised.value.returncode == 2
