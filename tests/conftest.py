"""Shared fixtures: a finished tiny run on disk (made once per session) and web helpers.

The fixtures that start real processes (redis-server, Celery worker, ASGI server) are in
tests/live_fixtures.py and imported here so every test module can use them.
"""
import contextlib

import pytest

from tests.live_fixtures import live_app, live_database, redis_server  # noqa: F401  (fixtures)
from tests.web_analysis_fixtures import analysis_results, finished_bn_run, finished_rewound_run  # noqa: F401  (fixtures)

# Small enough for seconds on two cores, big enough for two pruned rounds and a control.
TINY_SPEC = {
    "model": "lenet_300_100", "dataset": "synthetic",
    "training": {"optimizer": "adam", "lr": 0.0012, "training_steps": "100it", "eval_interval": "50it",
                 "metrics_interval": 10},
    "pruning": {"rounds": 2, "fraction": 0.2, "layer_fractions": {"fc3.weight": 0.1}},
    "controls": ["random_reinit"],
}


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread_for_the_session():
    """Every test model is tiny: one thread each, so the suite does not spin against itself
    or the worker processes it starts (see single_torch_thread)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """(results dict, run directory path) of TINY_SPEC, trained once for the whole session."""
    return train_spec_once(tmp_path_factory, TINY_SPEC, "runs")


def train_spec_once(tmp_path_factory, spec: dict, directory: str):
    """Train `spec` in a fresh session directory on one thread: (results dict, run directory path)."""
    from pathlib import Path

    from trainer.imp import run_experiment
    from trainer.spec import ExperimentSpec

    runs_root = tmp_path_factory.mktemp(directory)
    with single_torch_thread():
        results = run_experiment(ExperimentSpec.from_dict(spec), runs_root)
    return results, Path(runs_root) / results["run_name"]


@contextlib.contextmanager
def single_torch_thread():
    """Tiny models on a busy 2-core machine: one thread avoids OpenMP spinning against other processes
    (measured: a 100-iteration round took 13 s with 2 threads under load, 0.25 s with 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def finished_experiment(db, finished_run, user):
    """An Experiment row of `user` (the signed-in test client's) for the session's finished run,
    with its rounds and curves stored."""
    from frontend import records
    from frontend.models import Experiment

    results, run_path = finished_run
    spec = results["spec"]
    experiment = Experiment.objects.create(
        spec=spec, model_name=spec["model"], dataset_name=spec["dataset"], status=Experiment.Status.FINISHED, owner=user,
        run_name=results["run_name"], run_dir=str(run_path), results_path=str(run_path / "results.json"),
        rounds_total=spec["pruning"]["rounds"], iterations_per_round=results["total_iterations"])
    for record in results["rounds"] + [r for records in results["controls"].values() for r in records]:
        records.store_record(experiment.pk, record)
    return experiment


def form_data(spec_overrides: dict | None = None, **field_values) -> dict:
    """POST data of the new-experiment form for TINY_SPEC (plus overrides), as a browser would send it."""
    from frontend.forms import widget_values
    from trainer.spec import ExperimentSpec

    spec = ExperimentSpec.from_dict({**TINY_SPEC, **(spec_overrides or {})}).to_dict()
    data = widget_values(spec)
    data.update(field_values)
    return data


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
    from django.test import Client
    return Client()


def session_cookie_header(client) -> tuple[bytes, bytes]:
    """The (name, value) header that carries `client`'s session to a websocket communicator."""
    from django.conf import settings
    return b"cookie", f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()
