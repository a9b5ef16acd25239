"""Queues: GPU experiments route to the gpu queue, the list shows queue positions, re-queueing; the tasks
are imported by queues on first send in the web process and by Celery's autodiscovery in a worker."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from frontend import listeners
from frontend.fair_share import queue_positions
from frontend.models import Experiment
from frontend.queues import DEFAULT_QUEUE, route_task

pytestmark = pytest.mark.django_db


def queued_experiment(device: str, owner=None) -> Experiment:
    return Experiment.objects.create(spec={"device": device, "model": "lenet_300_100"}, model_name="lenet_300_100",
                                     dataset_name="synthetic", owner=owner, visibility="team")


def test_experiments_and_their_analyses_route_by_device():
    gpu, cpu, auto = queued_experiment("cuda:1"), queued_experiment("cpu"), queued_experiment("auto")
    assert route_task("frontend.run_experiment", [gpu.pk], {}, {}) == {"queue": "gpu"}
    assert route_task("frontend.run_experiment", [cpu.pk], {}, {}) == {"queue": DEFAULT_QUEUE}
    assert route_task("frontend.run_experiment", [auto.pk], {}, {}) == {"queue": DEFAULT_QUEUE}
    run = gpu.analysis_runs.create(name="retraining", params={})
    assert route_task("frontend.run_analysis", [run.pk], {}, {}) == {"queue": "gpu"}
    assert route_task("something.else", [1], {}, {}) is None


def test_queue_positions_count_per_queue_oldest_first(client):
    first_cpu, first_gpu, second_cpu = queued_experiment("cpu"), queued_experiment("cuda"), queued_experiment("auto")
    running = queued_experiment("cpu")
    Experiment.objects.filter(pk=running.pk).update(status="running")
    positions = queue_positions([first_cpu, first_gpu, second_cpu, running])
    assert positions == {first_cpu.pk: 1, first_gpu.pk: 1, second_cpu.pk: 2}
    assert "#2 in the celery queue" in client.get("/").content.decode()


def test_a_failed_experiment_is_requeued_by_its_owner_only(client, user, other_user, queued):
    mine = queued_experiment("cpu", owner=user)
    Experiment.objects.filter(pk=mine.pk).update(status="failed", message="boom")
    assert 'id="requeue-form"' in client.get(f"/e/{mine.pk}/").content.decode()
    assert client.post(f"/e/{mine.pk}/requeue/").status_code == 302
    mine.refresh_from_db()
    assert mine.status == "queued" and "re-queued after it was failed" in mine.message and queued == [mine.pk]
    assert client.post(f"/e/{mine.pk}/requeue/").status_code == 409, "a queued one is not queued twice"
    theirs = queued_experiment("cpu", owner=other_user)
    Experiment.objects.filter(pk=theirs.pk).update(status="cancelled")
    assert client.post(f"/e/{theirs.pk}/requeue/").status_code == 403
    assert Experiment.objects.get(pk=theirs.pk).status == "cancelled" and queued == [mine.pk]


@pytest.mark.live
def test_pages_say_when_no_worker_listens_on_an_experiments_queue(client, settings, redis_server):
    """Workers announce their queues in Redis (frontend.listeners): a cuda experiment is accepted
    with no GPU worker up, and the list and experiment pages say that nothing listens on 'gpu'."""
    settings.REDIS_URL = redis_server
    client_redis = redis.Redis.from_url(redis_server)
    client_redis.flushdb()
    gpu, cpu = queued_experiment("cuda"), queued_experiment("cpu")
    listeners.announce(client_redis, "worker_a@host", ["celery"], ttl_seconds=30)
    assert listeners.listening_queues() == {"celery"}
    page = client.get("/").content.decode()
    assert page.count("no worker is listening on the &#x27;gpu&#x27; queue") == 1
    assert "listening on the &#x27;celery&#x27;" not in page
    assert "no worker is listening on the &#x27;gpu&#x27; queue" in client.get(f"/e/{gpu.pk}/").content.decode()
    assert 'id="queue-notice"' not in client.get(f"/e/{cpu.pk}/").content.decode()
    listeners.announce(client_redis, "gpu0@host", ["gpu"], ttl_seconds=30)
    assert "no worker is listening" not in client.get("/").content.decode()
    client_redis.flushdb()  # every worker gone (their keys expire): the default queue is unserved too
    assert listeners.listening_queues() == set()
    assert "no worker is listening on the &#x27;celery&#x27; queue" in client.get(f"/e/{cpu.pk}/").content.decode()


def test_pages_say_nothing_about_listeners_when_redis_cannot_be_asked(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing answers there
    gpu = queued_experiment("cuda")
    assert listeners.listening_queues() is None
    assert 'id="queue-notice"' not in client.get(f"/e/{gpu.pk}/").content.decode()
    assert client.get("/").status_code == 200


def _fresh_process(script: str) -> subprocess.CompletedProcess:
    """`script` after django.setup() with the test settings, in a new interpreter (nothing imported yet)."""
    root = Path(__file__).resolve().parents[2]
    setup = ("import os, sys\nos.environ['DJANGO_SETTINGS_MODULE'] = 'lotteryweb.settings_test'\n"
             "import django\ndjango.setup()\n")
    return subprocess.run([sys.executable, "-c", setup + textwrap.dedent(script)], cwd=root, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(root)})


def test_the_web_process_imports_the_tasks_on_its_first_send_only():
    done = _fresh_process("""
        from frontend import queues
        from lotteryweb.celery import app
        assert "frontend.tasks" not in sys.modules, "loading the apps no longer imports the tasks"
        app.conf.task_always_eager = False  # publish to the in-memory broker instead of running
        queues.enqueue_reproduction(1)
        assert "frontend.tasks" in sys.modules and queues.REPRODUCTION_TASK in app.tasks
        print("sent")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "sent", done.stderr[-2000:]


def test_a_worker_finds_the_tasks_and_its_start_hook_by_autodiscovery():
    done = _fresh_process("""
        from celery.signals import worker_ready
        from frontend import recovery
        from lotteryweb.celery import app
        assert "frontend.tasks" not in sys.modules
        app.loader.import_default_modules()  # what a worker does before it is ready
        assert "frontend.tasks" in sys.modules
        assert {"frontend.run_experiment", "frontend.run_analysis", "frontend.run_reproduction"} <= set(app.tasks)
        started = []
        recovery.start_watchdog = lambda: started.append("watchdog")
        worker_ready.send(sender=None)
        assert started == ["watchdog"], "the worker's threads start when it is ready"
        print("found")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "found", done.stderr[-2000:]
