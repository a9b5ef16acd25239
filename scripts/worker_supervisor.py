"""Keeps WORKERS Celery workers running on this machine (scripts/start_app.sh starts it).

    WORKERS=2 .venv/bin/python scripts/worker_supervisor.py --log-dir /tmp/lotteryweb-8000

Worker i is `celery -A lotteryweb worker --pool=solo -n worker<i>@<host>`, logging to worker<i>.log
with its process id in worker<i>.pid in the log directory. A worker that exits is started again (after
0.5 s; one that keeps dying within a minute of its start waits longer each time, up to a minute), and
what it was running is queued again at once (`manage.py requeue_worker_runs`, beside the restart), so
the new worker resumes the run after its last finished round within seconds instead of after the
heartbeat timeout (frontend.recovery). TERM or INT stops the workers (Celery's warm shutdown, then
SIGKILL after --stop-seconds) and then the supervisor. WORKERS: 1 to MAX_WORKERS (default 1); anything
else exits with code 2 (`--check` only checks it).

The supervisor itself stays small (no Django, no torch): a worker's death is rare, and the requeue
command runs in its own process.
"""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_WORKERS = 32
QUICK_RESTART_SECONDS = 0.5
CRASH_LOOP_SECONDS = 60  # a worker dying sooner than this after its start is crash-looping
LONGEST_BACKOFF_SECONDS = 60
POLL_SECONDS = 0.2

log = logging.getLogger("worker_supervisor")


def workers_from_environment(value: str | None) -> int:
    """WORKERS as a number; ValueError with the message the user sees."""
    text = (value or "1").strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise ValueError(f"WORKERS must be a whole number from 1 to {MAX_WORKERS} (Celery workers on this machine, "
                         f"each running one experiment at a time); got {value!r}")
    return int(text)


def restart_delay(quick_deaths: int) -> float:
    """Seconds before a dead worker starts again, given how many times in a row it died soon after its start."""
    if quick_deaths <= 1:
        return QUICK_RESTART_SECONDS
    return min(LONGEST_BACKOFF_SECONDS, 2.0 ** (quick_deaths - 1))  # crash-looping: slowed, not spun


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGTERM if the supervisor dies (even by SIGKILL)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Worker:
    index: int
    hostname: str
    log_dir: Path
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_deaths: int = 0  # deaths in a row, each within CRASH_LOOP_SECONDS of its start
    restart_at: float | None = None

    @property
    def name(self) -> str:
        return f"worker{self.index}@{self.hostname}"

    @property
    def pid_path(self) -> Path:
        return self.log_dir / f"worker{self.index}.pid"

    def start(self) -> None:
        command = [sys.executable, "-m", "celery", "-A", "lotteryweb", "worker", "--pool=solo", "--loglevel=INFO",
                   "-n", self.name,
                   # no gossip or mingle: workers share nothing through them here, and a restart is ready sooner
                   "--without-gossip", "--without-mingle"]
        with open(self.log_dir / f"worker{self.index}.log", "ab") as log_file:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL,
                                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self.started_at, self.restart_at = time.monotonic(), None
        self.pid_path.write_text(f"{self.process.pid}\n")
        log.info("%s started (pid %d)", self.name, self.process.pid)


class Supervisor:
    def __init__(self, count: int, log_dir: Path, stop_seconds: float):
        hostname = socket.gethostname()
        self.workers = [Worker(index, hostname, log_dir) for index in range(1, count + 1)]
        self.stop_seconds = stop_seconds
        self.stopping = False
        self.requeues: list[subprocess.Popen] = []

    def request_stop(self, signum, _frame) -> None:
        if not self.stopping:
            log.info("%s: stopping the workers", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        for worker in self.workers:
            worker.start()
        while not self.stopping:
            for worker in self.workers:
                self.look_after(worker)
            self.requeues = [command for command in self.requeues if command.poll() is None]
            time.sleep(POLL_SECONDS)
        self.stop_workers()
        return 0

    def look_after(self, worker: Worker) -> None:
        if worker.restart_at is not None:
            if time.monotonic() >= worker.restart_at:
                worker.start()
            return
        code = worker.process.poll()
        if code is None:
            return
        died_at = datetime.now(UTC)
        lived = time.monotonic() - worker.started_at
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        worker.quick_deaths = worker.quick_deaths + 1 if lived < CRASH_LOOP_SECONDS else 0
        delay = restart_delay(worker.quick_deaths)
        if worker.quick_deaths > 1:
            log.error("%s keeps dying within %d s of its start (%d times in a row); see worker%d.log",
                      worker.name, CRASH_LOOP_SECONDS, worker.quick_deaths, worker.index)
        log.warning("%s %s after %.0f s; its runs are queued again, restarting it in %.1f s", worker.name, how,
                    lived, delay)
        worker.restart_at = time.monotonic() + delay
        self.requeue_runs_of(worker, died_at)

    def requeue_runs_of(self, worker: Worker, died_at: datetime) -> None:
        """Queue again what the dead worker was running, in a process of its own (it loads Django and the
        trainer, which the supervisor does not keep in memory); its output goes to the supervisor's log."""
        command = [sys.executable, "manage.py", "requeue_worker_runs", worker.name, "--died-at", died_at.isoformat()]
        self.requeues.append(subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL))

    def stop_workers(self) -> None:
        running = [w for w in self.workers if w.restart_at is None and w.process.poll() is None]
        for worker in running:
            worker.process.send_signal(signal.SIGTERM)  # Celery's warm shutdown
        deadline = time.monotonic() + self.stop_seconds
        for worker in running:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s: killing it (its run resumes from its last finished "
                            "round after the heartbeat timeout)", worker.name, self.stop_seconds)
                worker.process.kill()
                worker.process.wait()
        for worker in self.workers:
            worker.pid_path.unlink(missing_ok=True)
        for command in self.requeues:
            try:
                command.wait(timeout=10)
            except subprocess.TimeoutExpired:
                command.kill()
        log.info("all workers stopped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", type=Path, default=Path(os.environ.get("LOTTERYWEB_LOG_DIR", "/tmp/lotteryweb")),
                        help="where worker<i>.log and .pid go (default: LOTTERYWEB_LOG_DIR or /tmp/lotteryweb)")
    parser.add_argument("--stop-seconds", type=float, default=20.0,
                        help="how long stopping workers may finish their current task before they are killed")
    parser.add_argument("--check", action="store_true", help="only check WORKERS and exit")
    args = parser.parse_args()
    try:
        count = workers_from_environment(os.environ.get("WORKERS"))
    except ValueError as problem:
        print(f"worker_supervisor: {problem}", file=sys.stderr)
        return 2
    if args.check:
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(count, args.log_dir, args.stop_seconds)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
