"""Workers that come back, for real: the app started as run.sh starts it (scripts/start_app.sh, WORKERS=1:
redis-server, the worker supervisor with its Celery worker, daphne), an experiment submitted through the
API, and its worker killed with SIGKILL mid-round. The web server stays up, the supervisor starts a new
worker and queues the run again at once, and the run resumes after its last finished round. Prints how
many seconds passed from the kill to training again."""
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.live.conftest import REPO, HttpSession, app_environment, free_port

pytestmark = [pytest.mark.live, pytest.mark.slow]

ROUNDS, STEPS = 3, 600
SPEC = {"model": "lenet_300_100", "dataset": "synthetic", "validation_size": 500, "device": "cpu",
        "training": {"training_steps": f"{STEPS}it", "eval_interval": "200it", "metrics_interval": 25},
        "pruning": {"rounds": ROUNDS, "fraction": 0.3}}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def descendants(pid: int) -> list[int]:
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class StartedApp:
    """scripts/start_app.sh on free ports with its own database, runs and log directories."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_dir = root / "logs"
        self.env = app_environment(
            PORT=str(self.port), HOST="127.0.0.1", WORKERS="1", LOTTERYWEB_REDIS_PORT=str(free_port()),
            LOTTERYWEB_DB_PATH=str(root / "db.sqlite3"), LOTTERYWEB_RUNS_DIR=str(root / "runs"),
            LOTTERYWEB_LOG_DIR=str(self.log_dir), LOTTERYWEB_ADMIN_PASSWORD_FILE=str(root / "admin-password"),
            LOTTERYWEB_TORCH_THREADS="1", PYTHONUNBUFFERED="1")
        self.output = open(root / "start_app.log", "wb")
        self.process = subprocess.Popen(["scripts/start_app.sh"], cwd=REPO, env=self.env, stdout=self.output,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.seen_pids: set[int] = set()

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.log_dir / name).read_text(errors="replace")
        return ""

    def check_alive(self) -> None:
        self.seen_pids.update(descendants(self.process.pid))
        if self.process.poll() is not None:
            pytest.fail(f"start_app.sh exited with {self.process.returncode}:\n"
                        f"{(self.root / 'start_app.log').read_text(errors='replace')[-3000:]}\n"
                        f"--- workers.log ---\n{self.log('workers.log')[-3000:]}")

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n"
                            f"--- workers.log ---\n{self.log('workers.log')[-3000:]}\n"
                            f"--- worker1.log ---\n{self.log('worker1.log')[-3000:]}")
            time.sleep(0.05)

    def manage(self, *arguments: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", *arguments], cwd=REPO, env=self.env, check=True,
                              capture_output=True, text=True)
        return done.stdout.strip().splitlines()[-1]

    def worker_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.log_dir / "worker1.pid").read_text())
        return None

    def query(self, sql: str, *args) -> list:
        with contextlib.closing(sqlite3.connect(self.root / "db.sqlite3", timeout=20)) as database:
            database.row_factory = sqlite3.Row
            return database.execute(sql, args).fetchall()

    def experiment(self, experiment_id: int) -> dict:
        return dict(self.query("SELECT * FROM frontend_experiment WHERE id = ?", experiment_id)[0])

    def live_points(self, experiment_id: int, round_index: int) -> int:
        found = self.query("SELECT train_loss FROM frontend_curve WHERE experiment_id = ? AND network = 'ticket' "
                           "AND round_index = ?", experiment_id, round_index)
        return len(json.loads(found[0][0])["iteration"]) if found else 0

    def ticket_results(self, experiment_id: int) -> list[tuple]:
        return [tuple(row) for row in self.query(
            "SELECT * FROM frontend_roundresult WHERE experiment_id = ? AND network = 'ticket' ORDER BY round_index",
            experiment_id)]

    def stop(self) -> None:
        """TERM to start_app.sh (it stops what it started), then SIGKILL whatever is left."""
        with contextlib.suppress(ProcessLookupError):
            self.seen_pids.update(descendants(self.process.pid))
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            self.process.kill()
        pid = self.worker_pid()
        for leftover in self.seen_pids | ({pid} if pid else set()):
            if alive(leftover):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leftover, signal.SIGKILL)
        self.output.close()


@pytest.fixture
def started_app(tmp_path):
    app = StartedApp(tmp_path)
    try:
        yield app
    finally:
        app.stop()


class Pinger(threading.Thread):
    """Asks the web server for /login/ every 0.2 s; counts the answers and the failures."""

    def __init__(self, base_url: str):
        super().__init__(daemon=True)
        self.session, self.answered, self.failed = HttpSession(base_url), 0, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            if self.session.answers():
                self.answered += 1
            else:
                self.failed.append(time.strftime("%H:%M:%S"))


def test_a_killed_worker_is_restarted_and_its_run_resumes_while_the_web_server_stays_up(started_app):
    app = started_app
    app.wait(lambda: b"lotteryweb is running at" in (app.root / "start_app.log").read_bytes(), 120,
             "start_app.sh to print its URL")
    app.wait(lambda: " ready." in app.log("worker1.log"), 90, "worker1 to be ready")
    first_pid = app.worker_pid()
    assert first_pid and alive(first_pid)
    assert "worker1@" in Path(f"/proc/{first_pid}/cmdline").read_text(), "the pid file names the Celery worker"
    app.manage("ensure_user", "tester", "--password", "tester-password-1")
    key = app.manage("api_token", "tester")
    request = urllib.request.Request(f"{app.base_url}/api/experiments/", data=json.dumps({"spec": SPEC}).encode(),
                                     headers={"Authorization": f"Token {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        experiment_id = json.loads(response.read())["id"]
    pinger = Pinger(app.base_url)
    pinger.start()

    def round_2_under_way():
        row = app.experiment(experiment_id)
        return row["current_round"] == 2 and row["current_iteration"] >= 150 and app.live_points(experiment_id, 2) >= 3

    app.wait(round_2_under_way, 120, "round 2 to be under way")
    kept_results = app.ticket_results(experiment_id)
    assert [row[0] for row in app.query("SELECT round_index FROM frontend_roundresult WHERE experiment_id = ? AND "
                                        "network = 'ticket' ORDER BY round_index", experiment_id)] == [0, 1]
    run_dir = Path(app.experiment(experiment_id)["run_dir"])
    kept_files = {r: (run_dir / "rounds" / f"round_{r:03d}" / "record.json").stat().st_mtime for r in (0, 1)}
    lost_points = app.live_points(experiment_id, 2)

    os.kill(first_pid, signal.SIGKILL)
    killed = time.monotonic()
    new_pid = back_after = requeued_after = training_after = None
    deadline = killed + 60
    while training_after is None:  # polled finely: these are the numbers the test reports
        app.check_alive()
        assert time.monotonic() < deadline, f"the run was not resumed: {app.experiment(experiment_id)}\n" \
                                            f"{app.log('workers.log')[-3000:]}"
        if new_pid is None and app.worker_pid() not in (None, first_pid) and alive(app.worker_pid()):
            new_pid = app.worker_pid()
        if back_after is None and app.log("worker1.log").count(" ready.") >= 2:
            back_after = time.monotonic() - killed
        row = app.experiment(experiment_id)
        if requeued_after is None and "died during round 2" in row["message"]:
            requeued_after = time.monotonic() - killed
        points = app.live_points(experiment_id, 2)
        if "resumed by worker1@" in row["message"] and row["current_round"] == 2 and 0 < points < lost_points:
            training_after = time.monotonic() - killed  # a fresh live curve of round 2: training again
        time.sleep(0.05)
    assert not alive(first_pid)
    app.wait(lambda: app.experiment(experiment_id)["status"] in ("finished", "failed"), 90, "the run to finish")
    finished_after = time.monotonic() - killed
    pinger.done.set()
    pinger.join()

    after = app.experiment(experiment_id)
    assert after["status"] == "finished", after["message"]
    message = after["message"]
    assert "died during round 2; re-queued at " in message and "to resume from round 2 (rounds 0-1 kept)" in message
    assert "; resumed by worker1@" in message and "stopped answering" not in message, \
        "the supervisor re-queued it, not the heartbeat timeout"
    assert [r[0] for r in app.query("SELECT round_index FROM frontend_roundresult WHERE experiment_id = ? AND "
                                    "network = 'ticket' ORDER BY round_index", experiment_id)] == [0, 1, 2, 3]
    assert app.ticket_results(experiment_id)[:2] == kept_results, "the rounds finished before the kill are kept"
    for round_index, mtime in kept_files.items():
        assert (run_dir / "rounds" / f"round_{round_index:03d}" / "record.json").stat().st_mtime == mtime, \
            f"round {round_index} was retrained"
    assert new_pid and alive(new_pid), "the new worker is up"
    assert pinger.failed == [] and pinger.answered > 0, f"the web server did not answer at {pinger.failed}"
    supervisor_log = app.log("workers.log")
    assert "was killed by SIGKILL" in supervisor_log and f"re-queued experiments [{experiment_id}]" in supervisor_log
    print(f"\nkill -9 of worker1 (pid {first_pid}) during round 2 of {ROUNDS} (after {lost_points} live points): "
          f"the supervisor re-queued the run {requeued_after:.1f} s after the kill; the new worker (pid {new_pid}) "
          f"was ready {back_after:.1f} s after it and trained round 2 again {training_after:.1f} s after it; the run "
          f"finished {finished_after:.1f} s after it, rounds 0-1 kept. The web server answered all "
          f"{pinger.answered} requests meanwhile.")
