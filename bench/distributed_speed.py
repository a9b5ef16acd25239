"""Wall time of one 4-replicate experiment on 1 vs 2 real Celery workers (not a timed test).

Starts, for each worker count, a fresh lab like the live tests do (redis-server, N workers with
--pool=solo and one torch thread each, a SQLite database and runs directory: tests/live), queues the
same experiment (LeNet-300-100 on the in-memory synthetic dataset, a few rounds, a random-reinit
control) and times it from its owner's start to its end (the database's times). Both use the same
LOTTERYWEB_MAX_WORKERS_PER_EXPERIMENT, so they train the same pieces; the bench checks that their
results are equal. Prints both times and their ratio, measured in this one run, and the seconds each
worker spent in pieces.

    .venv/bin/python bench/distributed_speed.py [--replicates 4] [--rounds 3] [--steps 600it] [--cap 4]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotteryweb.settings")  # the live tests' lab imports the app

import django  # noqa: E402

django.setup()

from tests.live.test_crash_recovery import Lab  # noqa: E402
from tests.live.test_distributed import run_to_end, start_workers  # noqa: E402
from trainer.replicate_stats import all_records  # noqa: E402


def timed_run(root: Path, workers: int, spec: dict, cap: int) -> tuple[float, dict, list]:
    """(seconds from queued to finished, results.json, pieces (phase, index, worker, seconds)) on a fresh lab."""
    root.mkdir(parents=True)
    lab = Lab(root)
    lab.env["LOTTERYWEB_MAX_WORKERS_PER_EXPERIMENT"] = str(cap)
    try:
        lab.start_redis()
        start_workers(lab, [f"worker{index}" for index in range(workers)])
        experiment_id, _, row = run_to_end(lab, spec, 1800)
        if row["status"] != "finished":
            raise SystemExit(f"the experiment ended {row['status']}: {row['message']}")
        # from the owner's start to the end, as the database recorded them
        seconds = lab.query("SELECT (julianday(finished_at) - julianday(started_at)) * 86400 FROM frontend_experiment "
                            "WHERE id = ?", experiment_id)[0][0]
        results = json.loads((Path(row["run_dir"]) / "results.json").read_text())
        pieces = [tuple(piece) for piece in lab.query(
            'SELECT phase, "index", worker, (julianday(finished_at) - julianday(started_at)) * 86400 '
            'FROM frontend_experimentpiece WHERE experiment_id = ? ORDER BY phase, "index"', experiment_id)]
        return seconds, results, pieces
    finally:
        lab.shutdown()


def metrics(results: dict) -> list:
    """Every record's curve and final metrics, replicate by replicate."""
    return [(record["network"], record["replicate"], record["round"], record["curve"], record["final"])
            for record in all_records(results)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", default="600it")
    parser.add_argument("--cap", type=int, default=4, help="LOTTERYWEB_MAX_WORKERS_PER_EXPERIMENT of both runs")
    args = parser.parse_args()
    spec = {"model": "lenet_300_100", "dataset": "synthetic", "device": "cpu", "replicates": args.replicates,
            "controls": ["random_reinit"],
            "training": {"training_steps": args.steps, "eval_interval": "100it", "metrics_interval": 50},
            "pruning": {"rounds": args.rounds, "fraction": 0.3}}
    trainings = args.replicates * (2 * args.rounds + 1)
    print(f"one experiment: {args.replicates} replicates x ({args.rounds} + 1 rounds + {args.rounds} controls) = "
          f"{trainings} trainings of {args.steps}; cap {args.cap}; one torch thread per worker")
    timings, outcomes = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for workers in (1, 2):
            seconds, results, pieces = timed_run(Path(scratch) / f"workers_{workers}", workers, spec, args.cap)
            timings[workers], outcomes[workers] = seconds, results
            busy: dict[str, float] = {}
            for _, _, worker, piece_seconds in pieces:
                busy[worker.split("@")[0]] = busy.get(worker.split("@")[0], 0.0) + piece_seconds
            print(f"{workers} worker{'s' if workers > 1 else ''}: {seconds:6.1f} s ({len(pieces)} pieces; seconds "
                  f"spent in pieces: {', '.join(f'{name} {total:.1f}' for name, total in sorted(busy.items()))})")
    print(f"ratio 1 worker / 2 workers: {timings[1] / timings[2]:.2f}x")
    same = metrics(outcomes[1]) == metrics(outcomes[2])
    print(f"results of the two runs are {'equal' if same else 'DIFFERENT'} (every curve and final metric)")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
