"""Fixtures of the web tests: accounts and signed-in clients, the session's finished run as an
Experiment, the new-experiment form's POST data, queued tasks recorded instead of sent, the API's
key, and a snapshot of what is stored (hostile input must leave it unchanged)."""
import json

import pytest
from django.conf import settings
from django.test import Client

from frontend import records, tasks
from frontend.forms import widget_values
from frontend.models import ApiToken, Experiment, RoundResult
from tests.conftest import TINY_SPEC
from trainer.spec import ExperimentSpec


@pytest.fixture
def finished_experiment(db, finished_run, user):
    """An Experiment row of `user` (the signed-in test client's) for the session's finished run,
    with its rounds and curves stored."""
    results, run_path = finished_run
    spec = results["spec"]
    experiment = Experiment.objects.create(
        spec=spec, model_name=spec["model"], dataset_name=spec["dataset"], status=Experiment.Status.FINISHED,
        owner=user, run_name=results["run_name"], run_dir=str(run_path), results_path=str(run_path / "results.json"),
        rounds_total=spec["pruning"]["rounds"], iterations_per_round=results["total_iterations"])
    for record in results["rounds"] + [r for chain in results["controls"].values() for r in chain]:
        records.store_record(experiment.pk, record)
    return experiment


def form_data(spec_overrides: dict | None = None, **field_values) -> dict:
    """POST data of the new-experiment form for TINY_SPEC (plus overrides), as a browser would send it."""
    spec = ExperimentSpec.from_dict({**TINY_SPEC, **(spec_overrides or {})}).to_dict()
    data = widget_values(spec)
    data.update(field_values)
    return data


@pytest.fixture
def queued(monkeypatch):
    """Record queued task ids instead of running them."""
    calls = []
    monkeypatch.setattr(tasks.run_experiment_task, "delay", lambda experiment_id: calls.append(experiment_id))
    return calls


@pytest.fixture
def stored(finished_experiment):
    """A snapshot of what is stored, to compare after the attack."""
    def snapshot():
        return (list(Experiment.objects.order_by("pk").values()),
                list(RoundResult.objects.order_by("pk").values_list("pk", "early_stop_test_metric")))
    before = snapshot()
    yield
    assert snapshot() == before, "hostile input changed stored experiments"


@pytest.fixture
def api(client, user):
    """(call, key): call(method, path, body=None) with alice's API key."""
    _, key = ApiToken.issue(user, "tests")

    def call(method: str, path: str, body=None, raw: bytes | None = None, key_override: str | None = None):
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        headers = {"HTTP_AUTHORIZATION": f"Token {key_override or key}"}
        if method == "GET":
            return client.get(path, **headers)
        return client.generic(method, path, data=data or b"", content_type="application/json", **headers)
    return call


# ---- accounts: the web tests run signed in unless they ask otherwise ---------------------------

@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("bob", password="bob-password-1")


@pytest.fixture
def client(client, user):
    """pytest-django's test client, signed in as `user`."""
    client.force_login(user)
    return client


@pytest.fixture
def anonymous_client():
    return Client()


def session_cookie_header(client) -> tuple[bytes, bytes]:
    """The (name, value) header that carries `client`'s session to a websocket communicator."""
    return b"cookie", f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()
