"""Crash recovery for real: a Celery worker killed with SIGKILL mid-round, and Redis restarted
mid-run, with real redis-server and worker processes (their own, so the session's live app is
untouched). Prints how long recovery took and what was recomputed."""
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.live_fixtures import REPO, free_port, start_process, wait_until

pytestmark = [pytest.mark.live, pytest.mark.slow]

SPEC = ('{"model": "lenet_300_100", "dataset": "synthetic", "validation_size": 500, "device": "cpu", '
        '"training": {"training_steps": "%s", "eval_interval": "250it", "metrics_interval": 25}, '
        '"pruning": {"rounds": %d, "fraction": 0.3}}')


class Lab:
    """redis-server + workers on one SQLite database and runs directory."""

    def __init__(self, root: Path):
        self.root = root
        self.redis_port = free_port()
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith(("DJANGO_", "LOTTERYWEB_")) and key != "DATABASE_URL"}
        self.env.update({"DJANGO_SETTINGS_MODULE": "lotteryweb.settings", "LOTTERYWEB_DB_PATH": str(root / "db.sqlite3"),
                         "LOTTERYWEB_RUNS_DIR": str(root / "runs"), "PYTHONUNBUFFERED": "1",
                         "LOTTERYWEB_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                         "LOTTERYWEB_TORCH_THREADS": "1", "LOTTERYWEB_HEARTBEAT_SECONDS": "0.5",
                         "LOTTERYWEB_HEARTBEAT_TIMEOUT": "3", "LOTTERYWEB_RECOVERY_INTERVAL": "0.5"})
        self.processes = []
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO, env=self.env, check=True,
                       capture_output=True)

    def start_redis(self, name: str = "redis"):
        managed = start_process(name, ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no"], self.root)
        self.processes.append(managed)
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(self.redis_port), "ping"], capture_output=True,
                                          text=True).stdout.strip() == "PONG", 20, "redis", [managed])
        return managed

    def start_worker(self, name: str):
        managed = start_process(name, [sys.executable, "-m", "celery", "-A", "lotteryweb", "worker", "--pool=solo",
                                       "-n", f"{name}@%h", "--loglevel=INFO", "--without-gossip", "--without-mingle"],
                                self.root, self.env)
        self.processes.append(managed)
        wait_until(lambda: b" ready." in managed.log_path.read_bytes(), 90, f"{name} to be ready", [managed])
        return managed

    def create_experiment(self, spec: str) -> int:
        code = ("import django; django.setup(); from frontend import services; "
                "from trainer.spec import ExperimentSpec; "
                f"print(services.create_experiment(ExperimentSpec.from_json({spec!r})).pk)")
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=self.env, check=True, capture_output=True,
                              text=True)
        return int(done.stdout.strip().splitlines()[-1])

    def row(self, experiment_id: int) -> dict:
        with sqlite3.connect(self.root / "db.sqlite3", timeout=20) as database:
            database.row_factory = sqlite3.Row
            found = database.execute("SELECT * FROM frontend_experiment WHERE id = ?", (experiment_id,)).fetchone()
            rounds = [r[0] for r in database.execute(
                "SELECT round_index FROM frontend_roundresult WHERE experiment_id = ? AND network = 'ticket' "
                "ORDER BY round_index", (experiment_id,))]
        return {**dict(found), "ticket_rounds": rounds}

    def stop(self):
        for managed in reversed(self.processes):
            managed.stop()


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.stop()


def test_a_worker_killed_mid_round_loses_only_that_round(lab):
    lab.start_redis()
    first = lab.start_worker("worker_a")
    experiment_id = lab.create_experiment(SPEC % ("1500it", 4))
    wait_until(lambda: lab.row(experiment_id)["current_round"] == 2 and lab.row(experiment_id)["current_iteration"] > 300,
               120, "round 2 to be under way", lab.processes)
    before = lab.row(experiment_id)
    run_dir = Path(before["run_dir"])
    kept = {r: (run_dir / "rounds" / f"round_{r:03d}" / "record.json").stat().st_mtime for r in (0, 1)}
    lost_iterations = before["current_iteration"]
    first.process.kill()  # SIGKILL: no cleanup, the task's message is gone with the worker
    first.process.wait(timeout=10)
    killed_at = time.time()
    lab.processes.remove(first)
    assert lab.row(experiment_id)["status"] == "running", "nobody knows yet"

    lab.start_worker("worker_b")
    wait_until(lambda: lab.row(experiment_id)["worker"].startswith("worker_b"), 60, "the run to be resumed", lab.processes)
    resumed_after = time.time() - killed_at
    wait_until(lambda: lab.row(experiment_id)["status"] in ("finished", "failed"), 120, "the run to finish", lab.processes)
    after = lab.row(experiment_id)
    assert after["status"] == "finished", after["message"]
    assert after["ticket_rounds"] == [0, 1, 2, 3, 4]
    assert "stopped answering during round 2" in after["message"] and "resume from round 2 (rounds 0-1 kept)" in after["message"]
    for round_index, mtime in kept.items():
        assert (run_dir / "rounds" / f"round_{round_index:03d}" / "record.json").stat().st_mtime == mtime, \
            f"round {round_index} was recomputed"
    assert (run_dir / "rounds" / "round_002" / "record.json").stat().st_mtime > killed_at
    print(f"\nkill -9 during round 2 at iteration {lost_iterations} of 1500: the second worker had the run again "
          f"{resumed_after:.1f} s after the kill (heartbeat timeout 3 s); rounds 0-1 kept, round 2 retrained from "
          f"its start ({lost_iterations} iterations redone), rounds 3-4 trained; message: {after['message']!r}")


def test_a_redis_restart_mid_run_loses_no_experiment(lab):
    redis = lab.start_redis()
    lab.start_worker("worker")
    experiment_id = lab.create_experiment(SPEC % ("1500it", 3))
    queued_id = lab.create_experiment(SPEC % ("250it", 1))  # waits behind it in Redis
    wait_until(lambda: lab.row(experiment_id)["current_round"] == 1, 120, "round 1 to be under way", lab.processes)
    redis.stop()
    lab.processes.remove(redis)
    time.sleep(2)
    restarted_at = time.time()
    lab.start_redis("redis_again")
    wait_until(lambda: lab.row(experiment_id)["status"] in ("finished", "failed"), 120, "the run to finish",
               lab.processes)
    after = lab.row(experiment_id)
    assert after["status"] == "finished" and after["ticket_rounds"] == [0, 1, 2, 3]
    finished_after = time.time() - restarted_at
    # This Redis has no persistence, so the queued task was forgotten; the workers notice the restart
    # and send the queued experiments' tasks again.
    wait_until(lambda: lab.row(queued_id)["status"] == "finished", 60, "the queued experiment to run", lab.processes)
    print(f"\nRedis stopped for 2 s during round 1: the run went on and finished {finished_after:.1f} s after the "
          f"restart with all 4 rounds; the experiment queued behind it (its task lost with Redis) was sent again "
          f"and finished {time.time() - restarted_at:.1f} s after the restart")
