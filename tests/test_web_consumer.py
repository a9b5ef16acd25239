"""The websocket consumer: state snapshot first (late join), then live events, through the real ASGI app."""
import json

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from frontend import progress
from frontend.consumers import CLOSE_NOT_FOUND
from frontend.models import Experiment
from lotteryweb.asgi import application
from tests.conftest import TINY_SPEC
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


def test_late_join_gets_the_snapshot_first_then_live_events():
    experiment = running_experiment_with_points()

    async def scenario():
        communicator = WebsocketCommunicator(application, f"/ws/e/{experiment.pk}/", headers=ORIGIN)
        connected, _ = await communicator.connect()
        assert connected
        snapshot = await communicator.receive_json_from(timeout=5)
        assert snapshot["type"] == "snapshot" and snapshot["seq"] == 1
        assert snapshot["curves"][0]["evals"]["iteration"] == [50]  # what happened before joining
        accuracy = snapshot["figures"]["accuracy"]["data"]
        assert accuracy[0]["meta"] == "ticket:0:0" and accuracy[0]["y"] == [50.0]
        await get_channel_layer().group_send(progress.group_name(experiment.pk), {
            "type": progress.MESSAGE_TYPE, "seq": 2, "progress": {"status": "running"},
            "events": [{"type": "eval", "network": "ticket", "round": 0, "iteration": 100, "val_accuracy": 0.7}]})
        live = await communicator.receive_json_from(timeout=5)
        assert live["type"] == "events" and live["seq"] == 2 and live["events"][0]["iteration"] == 100
        await communicator.disconnect()

    run(scenario)


def test_snapshot_request_resends_the_state_and_bad_json_is_answered_not_fatal():
    experiment = running_experiment_with_points()

    async def scenario():
        communicator = WebsocketCommunicator(application, f"/ws/e/{experiment.pk}/", headers=ORIGIN)
        await communicator.connect()
        await communicator.receive_json_from(timeout=5)
        await communicator.send_to(text_data="this is not json")
        assert (await communicator.receive_json_from(timeout=5))["type"] == "error"
        await communicator.send_json_to({"type": "snapshot_request"})
        again = await communicator.receive_json_from(timeout=5)
        assert again["type"] == "snapshot" and again["seq"] == 1
        await communicator.disconnect()

    run(scenario)


def test_unknown_experiment_closes_with_not_found():
    async def scenario():
        communicator = WebsocketCommunicator(application, "/ws/e/424242/", headers=ORIGIN)
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
    from frontend.live import live_state
    json.dumps(live_state(experiment.pk), allow_nan=False)
