"""Crash recovery for real: a Celery worker killed with SIGKILL mid-round, and Redis restarted
mid-run and while no worker was up, with real redis-server and worker processes (their own, so
the session's live app is untouched). Prints how long recovery took and what was recomputed."""
import asyncio
import contextlib
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from channels_redis.core import RedisChannelLayer

from frontend.progress import MESSAGE_TYPE, group_name
from tests.live.conftest import REPO, app_environment, free_port, start_process, wait_until

pytestmark = [pytest.mark.live, pytest.mark.slow]

SPEC = ('{"model": "lenet_300_100", "dataset": "synthetic", "validation_size": 500, "device": "cpu", '
        '"training": {"training_steps": "%s", "eval_interval": "250it", "metrics_interval": 25}, '
        '"pruning": {"rounds": %d, "fraction": 0.3}}')


class Lab:
    """redis-server + workers on one SQLite database and runs directory."""

    def __init__(self, root: Path):
        self.root = root
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env = app_environment(
            LOTTERYWEB_DB_PATH=str(root / "db.sqlite3"), LOTTERYWEB_RUNS_DIR=str(root / "runs"), PYTHONUNBUFFERED="1",
            LOTTERYWEB_REDIS_URL=self.redis_url, LOTTERYWEB_TORCH_THREADS="1", LOTTERYWEB_HEARTBEAT_SECONDS="0.5",
            LOTTERYWEB_HEARTBEAT_TIMEOUT="3", LOTTERYWEB_RECOVERY_INTERVAL="0.5")
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

    def stop(self, managed) -> None:
        managed.stop()
        self.processes.remove(managed)

    def create_experiment(self, spec: str) -> int:
        code = ("import django; django.setup(); from frontend import services; "
                "from trainer.spec import ExperimentSpec; "
                f"print(services.create_experiment(ExperimentSpec.from_json({spec!r})).pk)")
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=self.env, check=True, capture_output=True,
                              text=True)
        return int(done.stdout.strip().splitlines()[-1])

    def query(self, sql: str, *args) -> list:
        with contextlib.closing(sqlite3.connect(self.root / "db.sqlite3", timeout=20)) as database:
            database.row_factory = sqlite3.Row
            return database.execute(sql, args).fetchall()

    def row(self, experiment_id: int) -> dict:
        found = self.query("SELECT * FROM frontend_experiment WHERE id = ?", experiment_id)[0]
        rounds = [r[0] for r in self.query("SELECT round_index FROM frontend_roundresult WHERE experiment_id = ? "
                                           "AND network = 'ticket' ORDER BY round_index", experiment_id)]
        return {**dict(found), "ticket_rounds": rounds}

    def live_points(self, experiment_id: int, round_index: int) -> int:
        """How many train-loss points the round's curve has: the live curve while it trains."""
        found = self.query("SELECT train_loss FROM frontend_curve WHERE experiment_id = ? AND network = 'ticket' "
                           "AND round_index = ?", experiment_id, round_index)
        return len(json.loads(found[0][0])["iteration"]) if found else 0

    def shutdown(self):
        for managed in reversed(self.processes):
            managed.stop()


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.shutdown()


def child_processes(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def first_live_message(redis_url: str, experiment_id: int, timeout: float) -> dict:
    """The next progress message sent to the experiment's channel group, as a browser's socket gets it."""
    async def listen() -> dict:
        layer = RedisChannelLayer(hosts=[redis_url])
        channel = await layer.new_channel()
        await layer.group_add(group_name(experiment_id), channel)
        try:
            return await asyncio.wait_for(layer.receive(channel), timeout)
        finally:
            await layer.group_discard(group_name(experiment_id), channel)
            await layer.close_pools()

    return asyncio.run(listen())


def test_a_worker_killed_mid_round_loses_only_that_round(lab):
    lab.start_redis()
    first = lab.start_worker("worker_a")
    experiment_id = lab.create_experiment(SPEC % ("1500it", 4))

    def round_2_under_way():
        row = lab.row(experiment_id)
        return row["current_round"] == 2 and row["current_iteration"] > 300

    wait_until(round_2_under_way, 120, "round 2 to be under way", lab.processes)
    assert child_processes(first.process.pid) == [], "--pool=solo: the worker's own process runs the task"
    before = lab.row(experiment_id)
    run_dir = Path(before["run_dir"])
    kept = {r: (run_dir / "rounds" / f"round_{r:03d}" / "record.json").stat().st_mtime for r in (0, 1)}
    first.process.kill()  # SIGKILL: no cleanup, the worker cannot tell anyone
    killed_wall, killed = time.time(), time.monotonic()
    first.process.wait(timeout=10)
    lab.processes.remove(first)
    lost = lab.row(experiment_id)
    lost_iterations, lost_points = lost["current_iteration"], lab.live_points(experiment_id, 2)
    assert lost["status"] == "running", "nobody knows yet"

    lab.start_worker("worker_b")
    ready_after = time.monotonic() - killed
    claimed_after = training_after = None
    deadline = time.monotonic() + 60
    while training_after is None:  # polled finely: these are the numbers the test reports
        assert time.monotonic() < deadline, f"the run was not resumed: {lab.row(experiment_id)}"
        row = lab.row(experiment_id)
        if claimed_after is None and row["worker"].startswith("worker_b"):
            claimed_after = time.monotonic() - killed
        points = lab.live_points(experiment_id, 2)
        if claimed_after is not None and row["current_round"] == 2 and 0 < points < lost_points:
            training_after = time.monotonic() - killed  # a fresh live curve of round 2: training again
        time.sleep(0.05)
    wait_until(lambda: lab.row(experiment_id)["status"] in ("finished", "failed"), 120, "the run to finish",
               lab.processes)
    finished_after = time.monotonic() - killed
    after = lab.row(experiment_id)
    assert after["status"] == "finished", after["message"]
    assert after["ticket_rounds"] == [0, 1, 2, 3, 4]
    message = after["message"]
    assert "worker worker_a@" in message and "stopped answering during round 2" in message
    assert "resume from round 2 (rounds 0-1 kept)" in message and "; resumed by worker_b@" in message, message
    for round_index, mtime in kept.items():
        assert (run_dir / "rounds" / f"round_{round_index:03d}" / "record.json").stat().st_mtime == mtime, \
            f"round {round_index} was recomputed"
    assert (run_dir / "rounds" / "round_002" / "record.json").stat().st_mtime > killed_wall
    results = json.loads((run_dir / "results.json").read_text())
    assert [r["round"] for r in results["rounds"]] == [0, 1, 2, 3, 4]
    evaluations = len(results["rounds"][0]["curve"]["iteration"])
    assert {len(r["curve"]["iteration"]) for r in results["rounds"]} == {evaluations}
    assert set(results["rounds"][2]) == set(results["rounds"][0]), "the resumed rounds are recorded like the kept ones"
    print(f"\nkill -9 of worker_a during round 2 at iteration {lost_iterations} of 1500 (heartbeat every 0.5 s, "
          f"timeout 3 s): worker_b ready {ready_after:.1f} s after the kill, had the run {claimed_after:.1f} s after, "
          f"trained round 2 again {training_after:.1f} s after, finished {finished_after:.1f} s after. "
          f"Recomputed: round 2 from iteration 0 ({lost_iterations} iterations lost); rounds 0-1 kept (record.json "
          f"untouched); rounds 3-4 trained as planned. Message: {message!r}")


def test_a_redis_restart_loses_no_experiment(lab):
    redis = lab.start_redis()
    worker = lab.start_worker("worker")
    experiment_id = lab.create_experiment(SPEC % ("1500it", 3))
    queued_id = lab.create_experiment(SPEC % ("250it", 1))  # waits behind it in Redis
    wait_until(lambda: lab.row(experiment_id)["current_round"] == 1, 120, "round 1 to be under way", lab.processes)

    # 1. Redis stops for 2 s in the middle of a run, with another experiment queued.
    lab.stop(redis)
    time.sleep(2)
    lab.start_redis("redis_again")
    restarted = time.monotonic()
    live = first_live_message(lab.redis_url, experiment_id, timeout=20)
    live_after = time.monotonic() - restarted
    assert live["type"] == MESSAGE_TYPE and live["progress"]["status"] == "running", live
    wait_until(lambda: lab.row(experiment_id)["status"] in ("finished", "failed"), 120, "the run to finish",
               lab.processes)
    after = lab.row(experiment_id)
    assert after["status"] == "finished" and after["ticket_rounds"] == [0, 1, 2, 3], after["message"]
    finished_after = time.monotonic() - restarted
    # This Redis has no persistence, so the queued task was forgotten; the worker notices that Redis
    # lost its data and sends the queued experiments' tasks again.
    wait_until(lambda: lab.row(queued_id)["status"] == "finished", 60, "the queued experiment to run", lab.processes)
    queued_after = time.monotonic() - restarted
    log = worker.log_path.read_text(errors="replace")
    assert log.count(f"could not send progress of experiment {experiment_id}") == 1, "said once, not per message"
    back = re.search(rf"progress of experiment {experiment_id} reaches its channel group again, after (\d+) messages",
                     log)
    assert back, "the worker says when the live messages go through again"
    failed_sends = int(back.group(1))

    # 2. Redis restarts while no worker is up (a machine reboot): the queued experiment's task is
    # gone with Redis; the next worker to start sends it again.
    lab.stop(worker)
    waiting_id = lab.create_experiment(SPEC % ("250it", 1))
    lab.stop(lab.processes[-1])  # redis_again
    lab.start_redis("redis_third")
    assert lab.row(waiting_id)["status"] == "queued"
    started = time.monotonic()
    lab.start_worker("worker_again")
    wait_until(lambda: lab.row(waiting_id)["status"] == "finished", 60, "the waiting experiment to run", lab.processes)
    waiting_after = time.monotonic() - started
    statuses = [r[0] for r in lab.query("SELECT status FROM frontend_experiment ORDER BY id")]
    assert statuses == ["finished"] * 3, "no experiment lost"
    print(f"\nRedis stopped for 2 s during round 1: the run went on ({failed_sends} live messages could not be sent, "
          f"logged once), its live messages reached the channel group again {live_after:.1f} s after the restart, "
          f"and it finished {finished_after:.1f} s after it with all 4 rounds; the experiment queued behind it (its "
          f"task lost with Redis) was sent again and finished {queued_after:.1f} s after the restart. Redis restarted "
          f"with no worker up: the next worker sent the waiting experiment's task again; it finished "
          f"{waiting_after:.1f} s after that worker started.")
