"""Load check (not a timed test): 200 queued experiments and 20 websocket viewers on one server;
how fast do the list page and a result page answer?

Starts its own redis-server and daphne (no worker, so the 200 experiments stay queued) on a
fresh SQLite database, trains one small run with the CLI and imports it as the finished
experiment whose result page is timed, connects 20 websocket viewers to it and 20 to queued
experiments, then times GET / and GET /e/<id>/ (50 each, signed in) and prints p50/p95.
The times are measured by the client on localhost, so they bound the server time from above.

    .venv/bin/python bench/load_check.py [--experiments 200] [--viewers 20] [--requests 50]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.live.conftest import HttpSession, app_environment, free_port, start_process, wait_until  # noqa: E402


def manage(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    from websockets.sync.client import connect

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        redis_port, web_port = free_port(), free_port()
        env = app_environment(LOTTERYWEB_DB_PATH=str(root / "db.sqlite3"), LOTTERYWEB_RUNS_DIR=str(root / "runs"),
                              LOTTERYWEB_LOG_LEVEL="WARNING", LOTTERYWEB_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                              LOTTERYWEB_TORCH_THREADS="1")
        redis = start_process("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                        "--save", "", "--appendonly", "no"], root)
        processes = [redis]
        try:
            manage(env, "migrate", "--noinput")
            manage(env, "ensure_user", "bench", "--password", "bench-password-1")
            subprocess.run([sys.executable, "-m", "trainer", "run", "--dataset", "synthetic", "--rounds", "8",
                            "--training-steps", "60it", "--eval-interval", "20it", "--controls", "random_reinit",
                            "--runs-dir", str(root / "runs"), "--quiet"], cwd=REPO, env=env, check=True,
                           capture_output=True)
            run_dir = next((root / "runs").iterdir())
            manage(env, "import_run", str(run_dir))
            manage(env, "shell", "-c", (
                "from django.contrib.auth import get_user_model; from frontend.models import Experiment; "
                "user = get_user_model().objects.get(username='bench'); "
                "Experiment.objects.update(owner=user, visibility='team'); "
                f"Experiment.objects.bulk_create([Experiment(spec={{'device': 'cpu', 'model': 'lenet_300_100'}}, "
                f"model_name='lenet_300_100', dataset_name='synthetic', owner=user, visibility='team') "
                f"for _ in range({args.experiments})])"))
            server = start_process("daphne", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port),
                                              "lotteryweb.asgi:application"], root, env)
            processes.append(server)
            base = f"http://127.0.0.1:{web_port}"
            session = HttpSession(base)
            wait_until(session.answers, 60, "daphne", processes)
            session.login("bench", "bench-password-1")
            finished_id = 1
            sockets, stop = [], threading.Event()

            def viewer(path: str) -> None:
                with connect(base.replace("http", "ws") + path, origin=base, open_timeout=20,
                             additional_headers=session.session_cookie_header()) as socket:
                    socket.recv(timeout=20)  # the snapshot
                    sockets.append(path)
                    stop.wait()

            threads = [threading.Thread(target=viewer, args=(f"/ws/e/{finished_id if i % 2 == 0 else i + 2}/",),
                                        daemon=True) for i in range(2 * args.viewers)]
            for thread in threads:
                thread.start()
            wait_until(lambda: len(sockets) == len(threads), 60, "the websocket viewers", processes)
            timings = {}
            for label, path in (("list page /", "/"), (f"result page /e/{finished_id}/", f"/e/{finished_id}/")):
                durations = []
                for _ in range(args.requests):
                    began = time.perf_counter()
                    status, _, body = session.request(path)
                    durations.append(1000 * (time.perf_counter() - began))
                    assert status == 200, (path, status)
                timings[label] = durations
            stop.set()
            print(f"{args.experiments} queued experiments + 1 finished (8 rounds + controls), "
                  f"{len(sockets)} websocket viewers connected; {args.requests} requests each, signed in:")
            for label, durations in timings.items():
                median, p95 = statistics.median(durations), percentile(durations, 0.95)
                print(f"  {label:<22} p50 {median:6.1f} ms   p95 {p95:6.1f} ms"
                      f"   (target < 150 ms)")
        finally:
            for managed in reversed(processes):
                managed.stop()



if __name__ == "__main__":
    main()
