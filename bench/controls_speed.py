"""Wall time of a run's controls trained stacked vs one network at a time (not a timed test).

Trains one small IMP run of lenet_300_100, copies its directory, then adds both controls
for every round to each copy: once with stack_size=1, once with the automatic stack size.
Prints both wall times and their ratio, measured in this one run.

    .venv/bin/python bench/controls_speed.py [--dataset fashion_mnist] [--rounds 3] [--steps 1ep]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.imp import run_controls_on, run_experiment  # noqa: E402
from trainer.spec import ExperimentSpec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", default="1ep")
    args = parser.parse_args()
    spec = ExperimentSpec.from_dict({"dataset": args.dataset, "device": "cpu",
                                     "training": {"optimizer": "adam", "lr": 0.0012, "training_steps": args.steps,
                                                  "eval_interval": args.steps},
                                     "pruning": {"rounds": args.rounds, "layer_fractions": {"fc3.weight": 0.1}}})
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        results = run_experiment(spec, root / "base")
        timings = {}
        for label, stack_size in (("one at a time", 1), ("stacked", None)):
            copy = root / label.replace(" ", "_") / results["run_name"]
            shutil.copytree(root / "base" / results["run_name"], copy)
            stored = json.loads((copy / "spec.json").read_text())
            stored["stack_size"] = stack_size
            (copy / "spec.json").write_text(json.dumps(stored))
            began = time.perf_counter()
            run_controls_on(copy, ["random_reinit", "random_prune"], [])
            timings[label] = time.perf_counter() - began
    networks = 2 * args.rounds
    print(f"{networks} control networks of lenet_300_100 on {args.dataset}, {args.steps} each:")
    for label, seconds in timings.items():
        print(f"  {label:<14} {seconds:7.1f} s")
    print(f"  stacked is {timings['one at a time'] / timings['stacked']:.2f}x faster")


if __name__ == "__main__":
    main()
