"""The websocket consumer: state snapshot first (late join), then live events, through the real ASGI app."""
import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from frontend import progress
from frontend.consumers import CLOSE_NOT_FOUND
from frontend.live import live_state
from frontend.models import Experiment
from lotteryweb.asgi import application
from tests.conftest import TINY_SPEC
from tests.web.conftest import session_cookie_header
from trainer import events
from trainer.spec import ExperimentSpec

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = [(b"origin", b"http://localhost")]


def run(coroutine_function):
    return async_to_sync(coroutine_function)()


def running_experiment_with_points() -> Experiment:
    spec = ExperimentSpec.from_dict(TINY_SPEC).to_dict()
    experiment = Experiment.objects.create(spec=spec, model_name="lenet_300_100", dataset_name="synthetic")
    recorder = progress.ProgressRecorder(experiment.pk, send=lambda *_: None)
    recorder.handle(events.make_event(events.ROUND_STARTED, round=0, remaining_fraction=1.0, start_iteration=0,
                                      end_iteration=100))
    recorder.handle(events.make_event(events.EVAL, round=0, iteration=50, val_loss=1.0, val_accuracy=0.5,
                                      test_loss=1.0, test_accuracy=0.5))
    recorder.flush()
    return experiment


def test_late_join_gets_the_snapshot_first_then_live_events(client):
    experiment = running_experiment_with_points()

    async def scenario():
        communicator = WebsocketCommunicator(application, f"/ws/e/{experiment.pk}/",
                                             headers=ORIGIN + [session_cookie_header(client)])
        connected, _ = await communicator.connect()
        assert connected
        snapshot = await communicator.receive_json_from(timeout=5)
        assert snapshot["type"] == "snapshot" and snapshot["seq"] == 1
        assert snapshot["curves"][0]["evals"]["iteration"] == [50]  # what happened before joining
        accuracy = snapshot["figures"]["metric"]["data"]
        assert accuracy[0]["meta"] == "ticket:0:0" and accuracy[0]["y"] == [50.0]
        await get_channel_layer().group_send(progress.group_name(experiment.pk), {
            "type": progress.MESSAGE_TYPE, "seq": 2, "progress": {"status": "running"},
            "events": [{"type": "eval", "network": "ticket", "round": 0, "iteration": 100, "val_accuracy": 0.7}]})
        live = await communicator.receive_json_from(timeout=5)
        assert live["type"] == "events" and live["seq"] == 2 and live["events"][0]["iteration"] == 100
        await communicator.disconnect()

    run(scenario)


def test_snapshot_request_resends_the_state_and_bad_json_is_answered_not_fatal(client):
    experiment = running_experiment_with_points()

    async def scenario():
        communicator = WebsocketCommunicator(application, f"/ws/e/{experiment.pk}/",
                                             headers=ORIGIN + [session_cookie_header(client)])
        await communicator.connect()
        await communicator.receive_json_from(timeout=5)
        await communicator.send_to(text_data="this is not json")
        assert (await communicator.receive_json_from(timeout=5))["type"] == "error"
        await communicator.send_json_to({"type": "snapshot_request"})
        again = await communicator.receive_json_from(timeout=5)
        assert again["type"] == "snapshot" and again["seq"] == 1
        await communicator.disconnect()

    run(scenario)


def test_unknown_experiment_closes_with_not_found(client):
    async def scenario():
        communicator = WebsocketCommunicator(application, "/ws/e/424242/",
                                             headers=ORIGIN + [session_cookie_header(client)])
        connected, _ = await communicator.connect()
        assert connected
        assert (await communicator.receive_json_from(timeout=5))["type"] == "error"
        closed = await communicator.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": CLOSE_NOT_FOUND}

    run(scenario)


def test_foreign_origin_is_refused():
    experiment = running_experiment_with_points()

    async def scenario():
        communicator = WebsocketCommunicator(application, f"/ws/e/{experiment.pk}/",
                                             headers=[(b"origin", b"http://evil.example")])
        connected, _ = await communicator.connect()
        assert not connected

    run(scenario)


def test_snapshot_is_json_serializable_with_non_finite_values():
    experiment = running_experiment_with_points()
    recorder = progress.ProgressRecorder(experiment.pk, send=lambda *_: None)
    recorder.handle(events.make_event(events.METRICS, round=0, iteration=60, train_loss=float("nan"), lr=0.1))
    recorder.flush()
    json.dumps(live_state(experiment.pk), allow_nan=False)


def socket_outcome(path: str, headers: list) -> tuple[bool, dict | None, int | None]:
    """(accepted, first message, close code) of one websocket connection attempt."""
    async def scenario():
        communicator = WebsocketCommunicator(application, path, headers=ORIGIN + headers)
        connected, _ = await communicator.connect()
        if not connected:
            return False, None, None
        first = await communicator.receive_json_from(timeout=5)
        closed = None
        if first.get("type") == "error":
            closed = (await communicator.receive_output(timeout=5)).get("code")
        await communicator.disconnect()
        return True, first, closed

    return async_to_sync(scenario)()


def test_the_websocket_follows_the_sharing_rules(client, other_user):
    """A private experiment streams to its owner only; a share link streams to anyone while it is public."""
    experiment = running_experiment_with_points()
    experiment.owner = other_user
    experiment.save()
    mine = [session_cookie_header(client)]  # signed in as alice, the experiment is bob's
    _, first, code = socket_outcome(f"/ws/e/{experiment.pk}/", mine)
    assert first["type"] == "error" and code == CLOSE_NOT_FOUND, "bob's private experiment is invisible to alice"
    _, first, code = socket_outcome(f"/ws/e/{experiment.pk}/", [])
    assert code == CLOSE_NOT_FOUND, "and to nobody signed in"
    _, first, code = socket_outcome(f"/ws/s/{experiment.share_token}/", [])
    assert code == CLOSE_NOT_FOUND, "a private experiment's token opens nothing"

    Experiment.objects.filter(pk=experiment.pk).update(visibility="team")
    _, first, _ = socket_outcome(f"/ws/e/{experiment.pk}/", mine)
    assert first["type"] == "snapshot", "team-visible: every account follows it"
    Experiment.objects.filter(pk=experiment.pk).update(visibility="link")
    _, first, _ = socket_outcome(f"/ws/s/{experiment.share_token}/", [])
    assert first["type"] == "snapshot" and first["curves"], "public by link: no account needed"
    _, first, code = socket_outcome("/ws/s/not-the-token/", [])
    assert code == CLOSE_NOT_FOUND
