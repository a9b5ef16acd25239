"""scripts/worker_supervisor.py without Celery: WORKERS is checked (exit 2 with a message, also through
start_app.sh before anything starts), a dead worker's runs are re-queued and it is restarted, and a
crash loop is slowed down. tests/live/test_supervisor.py kills a real worker under the real supervisor."""
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "worker_supervisor.py"


def load_supervisor():
    spec = importlib.util.spec_from_file_location("worker_supervisor", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


supervisor_module = load_supervisor()


def check(workers: str | None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "WORKERS"}
    if workers is not None:
        env["WORKERS"] = workers
    return subprocess.run([sys.executable, str(SCRIPT), "--check"], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("workers", ["0", "-1", "two", "1.5", "33", "99999999999999999999"])
def test_a_bad_workers_value_exits_2_with_a_message(workers):
    done = check(workers)
    assert done.returncode == 2
    assert "WORKERS must be a whole number from 1 to 32" in done.stderr and repr(workers) in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("workers", [None, "", "1", " 4 ", "32"])
def test_good_workers_values_pass(workers):
    assert check(workers).returncode == 0


def test_start_app_refuses_a_bad_workers_value_before_starting_anything(tmp_path):
    env = {**os.environ, "WORKERS": "lots", "LOTTERYWEB_LOG_DIR": str(tmp_path), "PORT": "1"}
    done = subprocess.run([str(REPO / "scripts" / "start_app.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "WORKERS must be a whole number" in done.stderr
    assert list(tmp_path.iterdir()) == [], "nothing was started (no migrate, no log)"


def test_a_crash_loop_is_slowed_down_not_spun():
    delays = [supervisor_module.restart_delay(deaths) for deaths in range(0, 10)]
    assert delays[:2] == [0.5, 0.5], "a worker that died once (or after a long life) is back at once"
    assert delays[2:6] == [2.0, 4.0, 8.0, 16.0] and delays[-1] == 60.0


def exited_process(code: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    process.wait()
    return process


def test_a_dead_worker_has_its_runs_requeued_and_is_restarted(tmp_path, monkeypatch):
    supervisor = supervisor_module.Supervisor(2, tmp_path, stop_seconds=1)
    requeued, started = [], []
    monkeypatch.setattr(supervisor, "requeue_runs_of", lambda worker, died_at: requeued.append((worker.name, died_at)))
    monkeypatch.setattr(supervisor_module.Worker, "start", lambda worker: started.append(worker.name))
    first, second = supervisor.workers
    first.process, first.started_at = exited_process(3), time.monotonic() - 3600
    second.process, second.started_at = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]), 0
    try:
        supervisor.look_after(first)
        supervisor.look_after(second)
        assert [name for name, _ in requeued] == [first.name] and first.name.startswith("worker1@")
        assert requeued[0][1].tzinfo is not None, "the time of death goes to manage.py with its zone"
        assert started == [] and first.restart_at - time.monotonic() <= 0.5
        time.sleep(0.6)
        supervisor.look_after(first)
        assert started == [first.name]
        # It keeps dying right after its start: the restarts are spaced out.
        for expected_delay in (0.5, 2.0, 4.0):
            first.process, first.started_at, first.restart_at = exited_process(1), time.monotonic(), None
            supervisor.look_after(first)
            assert first.restart_at - time.monotonic() == pytest.approx(expected_delay, abs=0.2)
        assert first.quick_deaths == 3
    finally:
        second.process.kill()
        second.process.wait()
