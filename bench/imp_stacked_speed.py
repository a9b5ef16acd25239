"""Wall time of a whole IMP run with replicates and both controls: stacked vs one network at a time
(not a timed test).

Runs the same spec twice in fresh directories: once with stack_size=1 (every network alone,
the single-network loop), once with the automatic stack size (the replicates of a round train
together, then all controls), which trainer.training.stack_size measures afresh (a private
cache: the measurement's cost is part of that run's time). Prints both wall times and their ratio,
measured in this one run, the chosen stack size, and how far the two runs' masks differ.

    .venv/bin/python bench/imp_stacked_speed.py [--dataset fashion_mnist] [--replicates 3] [--rounds 3] [--steps 1ep]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import machine  # noqa: E402

from trainer.imp import run_experiment  # noqa: E402
from trainer.rundir import RunDir  # noqa: E402
from trainer.spec import ExperimentSpec  # noqa: E402
from trainer.training.loop import apply_thread_setting  # noqa: E402
from trainer.training.stack_size import CACHE_ENV  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--replicates", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", default="1ep")
    args = parser.parse_args()
    apply_thread_setting()
    base = {"dataset": args.dataset, "device": "cpu", "replicates": args.replicates,
            "controls": ["random_reinit", "random_prune"],
            "training": {"optimizer": "adam", "lr": 0.0012, "training_steps": args.steps, "eval_interval": args.steps},
            "pruning": {"rounds": args.rounds, "layer_fractions": {"fc3.weight": 0.1}}}
    timings, runs, chosen = {}, {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        os.environ[CACHE_ENV] = str(Path(scratch) / "stack_sizes.json")
        for label, stack_size in (("one at a time", 1), ("stacked", None)):
            spec = ExperimentSpec.from_dict({**base, "stack_size": stack_size})
            began = time.perf_counter()
            results = run_experiment(spec, Path(scratch) / label.replace(" ", "_"))
            timings[label] = time.perf_counter() - began
            runs[label] = RunDir.open(Path(scratch) / label.replace(" ", "_") / results["run_name"])
            chosen[label] = results["stack_size"]
        decision = json.loads(Path(os.environ[CACHE_ENV]).read_text())
        # Float reordering can swap two weights of near-equal magnitude at a pruning threshold.
        differing = total = 0
        for r in range(args.replicates):
            for k in range(args.rounds + 1):
                mine, theirs = runs["stacked"].replicate(r).mask(k), runs["one at a time"].replicate(r).mask(k)
                differing += sum(int((mine[name] != theirs[name]).sum()) for name in mine)
                total += sum(mine[name].numel() for name in mine)
    tickets = args.replicates * (args.rounds + 1)
    controls = args.replicates * args.rounds * 2
    print(machine.describe())
    print(f"lenet_300_100 on {args.dataset}, {args.steps} per round: "
          f"{args.replicates} replicates x {args.rounds + 1} rounds = {tickets} ticket networks + {controls} controls")
    for label, seconds in timings.items():
        print(f"  {label:<14} {seconds:7.1f} s  (stack size {chosen[label]})")
    for key, entry in decision.items():
        print(f"  stack size chosen by measurement: {entry['stack_size']} (seconds per step by K: "
              f"{ {int(k): round(v, 5) for k, v in entry['seconds_per_step'].items()} }; "
              f"the measurement took {entry['measure_seconds']:.2f} s)  [{key}]")
    print(f"  stacked is {timings['one at a time'] / timings['stacked']:.2f}x faster; "
          f"ticket mask entries that differ between the two: {differing} of {total} ({100 * differing / total:.4f}%)")


if __name__ == "__main__":
    main()
