"""One experiment over many workers, in-process (frontend.distributed): claims, the cap, lost pieces, the
owner training everything alone, a piece task on another worker, failures, cancel, and several recorders."""
import io
import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.utils import timezone

from frontend import distributed, progress, queues
from frontend.models import Experiment, ExperimentPiece, RoundResult
from frontend.tasks import run_experiment_task
from tests.conftest import TINY_SPEC
from trainer import events
from trainer.imp import pieces, run_experiment
from trainer.replicate_stats import all_records
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec

pytestmark = pytest.mark.django_db(transaction=True)

THREE_REPLICATES = {**TINY_SPEC, "replicates": 3, "stack_size": 1, "control_rounds": [2],
                    "controls": ["random_reinit", "random_prune"],
                    "training": {**TINY_SPEC["training"], "training_steps": "40it", "eval_interval": "20it"}}


@pytest.fixture(autouse=True)
def one_writing_thread(settings):
    """No heartbeat or flusher thread writes during these short runs (the recorders flush once, at the end):
    the in-memory test database refuses at once ("table is locked") a query that meets another thread's
    write, where a real one waits. Heartbeats and throttled flushes have their tests (test_recovery, test_progress)."""
    settings.LOTTERYWEB_HEARTBEAT_SECONDS = 600
    settings.LOTTERYWEB_PROGRESS_MESSAGES_PER_SECOND = 0.001


@pytest.fixture
def sent(monkeypatch):
    """Piece tasks recorded instead of sent: their ids."""
    ids = []
    monkeypatch.setattr(queues, "enqueue_pieces", lambda piece_ids: ids.extend(piece_ids))
    monkeypatch.setattr(progress, "send_to_group", lambda *_: None)
    return ids


def experiment_with_pieces(count: int, status: str = "running", spec: dict | None = None) -> Experiment:
    spec = ExperimentSpec.from_dict(spec or THREE_REPLICATES).to_dict()
    experiment = Experiment.objects.create(spec=spec, model_name=spec["model"], dataset_name=spec["dataset"],
                                           status=status, worker="owner@a")
    distributed.store_plan(experiment.pk, [pieces.Piece(pieces.CHAINS, index, (index,)) for index in range(count)])
    return experiment


def piece(experiment: Experiment, index: int) -> ExperimentPiece:
    return ExperimentPiece.objects.get(experiment=experiment, phase=pieces.CHAINS, index=index)


def test_of_two_claims_of_one_piece_one_wins():
    experiment = experiment_with_pieces(1)
    first = distributed.claim(experiment.pk, pieces.CHAINS, "w1@a", prefer=piece(experiment, 0).pk)
    second = distributed.claim(experiment.pk, pieces.CHAINS, "w2@b", prefer=piece(experiment, 0).pk)
    assert first is not None and second is None
    taken = piece(experiment, 0)
    assert taken.status == "running" and taken.worker == "w1@a" and taken.started_at and taken.heartbeat_at


def test_a_claim_takes_its_piece_or_another_queued_one_and_the_owner_takes_from_the_end():
    experiment = experiment_with_pieces(4)
    assert distributed.claim(experiment.pk, pieces.CHAINS, "w1@a", prefer=piece(experiment, 1).pk).index == 1
    assert distributed.claim(experiment.pk, pieces.CHAINS, "w2@a", prefer=piece(experiment, 1).pk).index == 0
    assert distributed.claim(experiment.pk, pieces.CHAINS, "owner@a", from_end=True).index == 3
    assert distributed.claim(experiment.pk, pieces.CONTROLS, "w3@a") is None, "no piece of that phase"


def test_no_claim_beyond_the_cap_nor_of_an_experiment_that_is_not_running(settings):
    settings.LOTTERYWEB_MAX_WORKERS_PER_EXPERIMENT = 2
    experiment = experiment_with_pieces(3)
    assert distributed.claim(experiment.pk, pieces.CHAINS, "w1@a") is not None
    assert distributed.claim(experiment.pk, pieces.CHAINS, "w2@a") is not None
    assert distributed.claim(experiment.pk, pieces.CHAINS, "w3@a") is None, "two pieces train already"
    ExperimentPiece.objects.filter(experiment=experiment, index=0).update(status="finished")
    assert distributed.claim(experiment.pk, pieces.CHAINS, "w3@a").index == 2
    queued = experiment_with_pieces(1, status="queued")  # its owner was lost: the next owner decides
    assert distributed.claim(queued.pk, pieces.CHAINS, "w1@a") is None
    cancelled = experiment_with_pieces(1)
    Experiment.objects.filter(pk=cancelled.pk).update(cancel_requested=True)
    assert distributed.claim(cancelled.pk, pieces.CHAINS, "w1@a") is None


def test_a_piece_whose_heartbeat_went_stale_is_queued_again_and_sent(settings, sent):
    settings.LOTTERYWEB_HEARTBEAT_TIMEOUT = 60
    experiment = experiment_with_pieces(3)
    for index, worker in enumerate(("dead@a", "alive@b")):
        distributed.claim(experiment.pk, pieces.CHAINS, worker, prefer=piece(experiment, index).pk)
    ExperimentPiece.objects.filter(pk=piece(experiment, 0).pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=300))
    assert distributed.requeue_stale_pieces(experiment.pk) == [piece(experiment, 0).pk]
    assert sent == [piece(experiment, 0).pk]
    lost = piece(experiment, 0)
    assert lost.status == "queued" and lost.message.startswith("worker dead@a stopped answering")
    assert "resumes after its last finished round" in lost.message
    assert piece(experiment, 1).status == "running", "a fresh heartbeat is left alone"
    assert distributed.claim(experiment.pk, pieces.CHAINS, "owner@a", prefer=lost.pk).pk == lost.pk


def test_the_pieces_of_a_lost_worker_are_released_at_once(sent):
    experiment = experiment_with_pieces(3)
    for index, worker in enumerate(("lost@a", "lost@a", "alive@b")):
        distributed.claim(experiment.pk, pieces.CHAINS, worker, prefer=piece(experiment, index).pk)
    ExperimentPiece.objects.filter(pk=piece(experiment, 1).pk).update(status="finished")
    assert distributed.release_pieces_of_worker("lost@a") == [piece(experiment, 0).pk]
    assert [piece(experiment, i).status for i in range(3)] == ["queued", "finished", "running"]
    assert "worker lost@a was lost" in piece(experiment, 0).message and sent == [piece(experiment, 0).pk]


def test_the_supervisors_requeue_command_releases_the_dead_workers_pieces_not_a_new_namesakes(sent):
    experiment = experiment_with_pieces(2)
    for index in range(2):
        distributed.claim(experiment.pk, pieces.CHAINS, "worker1@lab", prefer=piece(experiment, index).pk)
    died_at = timezone.now() - timedelta(seconds=30)
    ExperimentPiece.objects.filter(pk=piece(experiment, 0).pk).update(started_at=died_at - timedelta(seconds=60))
    output = io.StringIO()  # piece 1 was started by the restarted worker1@lab after the death
    call_command("requeue_worker_runs", "worker1@lab", "--died-at", died_at.isoformat(), stdout=output)
    assert output.getvalue().strip().endswith(f"pieces of experiments [{piece(experiment, 0).pk}]")
    assert [piece(experiment, i).status for i in range(2)] == ["queued", "running"]


def test_the_owner_trains_every_piece_when_no_other_worker_comes_and_gets_the_one_worker_results(
        settings, tmp_path, sent):
    settings.LOTTERYWEB_RUNS_DIR = tmp_path / "web"
    settings.LOTTERYWEB_MAX_WORKERS_PER_EXPERIMENT = 2
    experiment = Experiment.objects.create(spec=ExperimentSpec.from_dict(THREE_REPLICATES).to_dict(),
                                           model_name="lenet_300_100", dataset_name="synthetic")
    assert run_experiment_task(experiment.pk) == "finished"
    experiment.refresh_from_db()
    rows = list(ExperimentPiece.objects.filter(experiment=experiment))
    # stack size 1: one piece per chain; 3 replicates x round 2 x 2 kinds = 6 controls, ceil(6 / 2) > 1 each
    assert [(row.phase, row.networks) for row in rows] == [("chains", [0]), ("chains", [1]), ("chains", [2])] + [
        ("controls", [[kind, 2, replicate]]) for replicate in range(3) for kind in ("random_reinit", "random_prune")]
    assert {(row.status, row.worker) for row in rows} == {("finished", experiment.worker)}
    assert sorted(sent) == sorted(row.pk for row in rows), "every piece was offered to the other workers"
    assert experiment.trainings_done == experiment.trainings_total == 3 * 3 + 6
    assert RoundResult.objects.filter(experiment=experiment).count() == 15
    web = json.loads(Path(experiment.results_path).read_text())
    alone = run_experiment(ExperimentSpec.from_dict(THREE_REPLICATES), tmp_path / "alone", max_pieces=2)
    for results in (web, alone):
        results.pop("wall_seconds")
    assert _metrics(web) == _metrics(alone)


def _metrics(results: dict) -> list:
    """Every record's curve, final metrics and layer counts, replicate by replicate."""
    return [(record["network"], record["replicate"], record["round"], record["curve"], record["final"],
             record["layers"]) for record in all_records(results)]


def test_a_piece_task_on_another_worker_trains_a_queued_piece_and_returns_at_once_otherwise(
        settings, tmp_path, sent):
    settings.LOTTERYWEB_RUNS_DIR = tmp_path
    sent_messages = []
    experiment = experiment_with_pieces(2)
    recorder = progress.ProgressRecorder(experiment.pk, send=lambda _id, message: sent_messages.append(message))
    other = distributed.help_with_piece(piece(experiment, 1).pk, "helper@b")
    assert other == "finished"
    helped = piece(experiment, 1)
    assert helped.status == "finished" and helped.worker == "helper@b" and helped.finished_at >= helped.started_at
    assert set(RoundResult.objects.filter(experiment=experiment).values_list("replicate", "round_index")) == {
        (1, 0), (1, 1), (1, 2)}, "the piece's recorder stored its rounds"
    distributed.claim(experiment.pk, pieces.CHAINS, "owner@a")
    assert distributed.help_with_piece(piece(experiment, 1).pk, "helper@b") == "nothing to claim"
    assert distributed.help_with_piece(10**9, "helper@b") == "missing"
    recorder.handle(events.make_event(events.ROUND_SKIPPED, round=0, replicate=1))
    recorder.flush()
    rows = sent_messages[-1]["pieces"]
    assert [(row["index"], row["trains"], row["status"], row["worker"]) for row in rows] == [
        (0, "replicate 0", "running", "owner@a"), (1, "replicate 1", "finished", "helper@b")]


def test_a_failed_piece_fails_the_experiment_with_its_message(settings, tmp_path, sent, monkeypatch):
    settings.LOTTERYWEB_RUNS_DIR = tmp_path
    real = pieces.run_piece

    def failing(run, planned):
        if planned.phase == pieces.CHAINS and planned.index == 1:
            raise RuntimeError("out of memory")
        return real(run, planned)
    monkeypatch.setattr(pieces, "run_piece", failing)
    experiment = Experiment.objects.create(spec=ExperimentSpec.from_dict(THREE_REPLICATES).to_dict(),
                                           model_name="lenet_300_100", dataset_name="synthetic")
    assert run_experiment_task(experiment.pk) == "failed"
    experiment.refresh_from_db()
    assert experiment.status == "failed" and "piece 1 of the chains" in experiment.message
    assert "RuntimeError: out of memory" in experiment.message
    assert piece(experiment, 1).status == "failed"
    assert piece(experiment, 2).status == "finished", "the owner trains from the end"
    assert piece(experiment, 0).status == "cancelled", "the owner stopped at the failure"
    assert piece(experiment, 0).message == "not started: piece 1 failed"


def test_cancel_stops_the_pieces_and_cancels_those_not_started(settings, tmp_path, sent, monkeypatch):
    settings.LOTTERYWEB_RUNS_DIR = tmp_path

    def cancel_after_the_first_piece(experiment_id):
        return lambda: ExperimentPiece.objects.filter(experiment_id=experiment_id, status="finished").exists()
    monkeypatch.setattr(progress, "cancel_checker", cancel_after_the_first_piece)
    experiment = Experiment.objects.create(spec=ExperimentSpec.from_dict(THREE_REPLICATES).to_dict(),
                                           model_name="lenet_300_100", dataset_name="synthetic")
    assert run_experiment_task(experiment.pk) == "cancelled"
    statuses = [row.status for row in ExperimentPiece.objects.filter(experiment=experiment)]
    assert statuses == ["cancelled", "cancelled", "finished"], "the owner took the last piece first"


def test_a_piece_recorder_does_not_reset_another_pieces_progress(tmp_path):
    experiment = experiment_with_pieces(2)
    run_dir = RunDir.create(tmp_path, ExperimentSpec.from_dict(experiment.spec))
    owner = progress.ProgressRecorder(experiment.pk, send=lambda *_: None)
    helper = progress.ProgressRecorder(experiment.pk, send=lambda *_: None)
    helper.handle(events.make_event(events.PIECE_STARTED, phase="chains", index=1, networks=[2],
                                    run_dir=str(run_dir.path)))
    owner.handle(events.make_event(events.RUN_STARTED, run_name="r", run_dir=str(run_dir.path), spec=experiment.spec,
                                   rounds_total=2, replicates=3, iterations_per_round=40, resumed_rounds=[]))
    owner.flush()
    owner.handle(events.make_event(events.ROUND_STARTED, round=1, replicate=0, remaining_fraction=0.8,
                                   start_iteration=0, end_iteration=40))
    owner.handle(events.make_event(events.METRICS, round=1, replicate=0, iteration=10, train_loss=1.0, lr=0.1))
    owner.flush()
    helper.handle(events.make_event(events.METRICS, round=0, replicate=2, iteration=35, train_loss=1.0, lr=0.1))
    helper.flush()
    experiment.refresh_from_db()
    assert (experiment.current_replicate, experiment.current_round, experiment.current_iteration) == (0, 1, 10)
    assert experiment.trainings_total == 3 * (2 + 1 + 2 * 1) and experiment.status == "running"


def test_the_experiment_page_shows_which_worker_trains_which_piece(finished_experiment, client):
    Experiment.objects.filter(pk=finished_experiment.pk).update(status="running")
    distributed.store_plan(finished_experiment.pk, [pieces.Piece(pieces.CHAINS, 0, (0,))])
    distributed.store_plan(finished_experiment.pk, [pieces.Piece(pieces.CONTROLS, 0, (("random_reinit", 1, 0),)),
                                                    pieces.Piece(pieces.CONTROLS, 1, (("random_reinit", 2, 0),))])
    ExperimentPiece.objects.filter(phase="chains").update(status="finished", worker="celery@left")
    ExperimentPiece.objects.filter(phase="controls", index=1).update(status="running", worker="celery@right")
    state = client.get(f"/e/{finished_experiment.pk}/state.json").json()
    assert [(p["phase"], p["index"], p["trains"], p["status"], p["worker"]) for p in state["pieces"]] == [
        ("chains", 0, "replicate 0", "finished", "celery@left"),
        ("controls", 0, "random reinit round 1 (replicate 0)", "queued", ""),
        ("controls", 1, "random reinit round 2 (replicate 0)", "running", "celery@right")]
    live_page = client.get(f"/e/{finished_experiment.pk}/").content.decode()
    table = live_page[live_page.index('id="pieces-table"'):live_page.index("</table>", live_page.index('id="pieces"'))]
    assert "celery@right" in table and "random reinit round 2 (replicate 0)" in table
    Experiment.objects.filter(pk=finished_experiment.pk).update(status="finished")
    result_page = client.get(f"/e/{finished_experiment.pk}/").content.decode()
    assert 'id="pieces" hidden' not in result_page and "celery@left" in result_page


def test_a_new_owner_keeps_the_plan_waits_for_live_pieces_and_retrains_stale_ones(settings, sent, monkeypatch):
    settings.LOTTERYWEB_HEARTBEAT_TIMEOUT = 60
    experiment = experiment_with_pieces(3)  # the plan of the lost owner: one replicate per piece
    for index, worker in enumerate(("alive@b", "dead@c")):
        distributed.claim(experiment.pk, pieces.CHAINS, worker, prefer=piece(experiment, index).pk)
    ExperimentPiece.objects.filter(worker="dead@c").update(heartbeat_at=timezone.now() - timedelta(seconds=300))
    trained = []
    monkeypatch.setattr(pieces, "run_piece", lambda run, planned: trained.append(planned.networks) or "finished")

    def meanwhile_the_live_worker_finishes(_seconds):
        ExperimentPiece.objects.filter(worker="alive@b").update(status="finished", finished_at=timezone.now())
    monkeypatch.setattr(distributed.time, "sleep", meanwhile_the_live_worker_finishes)
    train_phase = distributed.phase_trainer(experiment.pk, "owner@a")
    another_plan = [pieces.Piece(pieces.CHAINS, 0, (0, 1, 2))]  # what this owner's cap would give
    assert train_phase(SimpleNamespace(stop_requested=lambda: False), another_plan) == "finished"
    assert trained == [(2,), (1,)], "its queued piece, then the stale one; never the one beating elsewhere"
    assert [(row.networks, row.status, row.worker) for row in ExperimentPiece.objects.filter(experiment=experiment)] \
        == [([0], "finished", "alive@b"), ([1], "finished", "owner@a"), ([2], "finished", "owner@a")]
