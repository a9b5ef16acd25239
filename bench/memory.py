"""Peak memory of a LeNet-300-100 Fashion-MNIST IMP run (a benchmark, not a timed test).

Each measurement runs in a fresh subprocess, so its peak resident set (VmHWM) is that run's alone:
  1. `import torch` alone, then the trainer's imports, then those plus the trainer's optimizer and one
     step (torch.optim's first use would import torch._dynamo, sympy and inductor; the trainer's
     FusedOptimizer calls the fused kernels directly): the floor no run goes below;
  2. the IMP run: --rounds short rounds of LeNet-300-100 on Fashion-MNIST (target: peak <= 700 MB),
     with the bytes the loaded dataset and the run's prepared splits hold (the splits index the loaded set).

    .venv/bin/python bench/memory.py [--rounds 2] [--iterations 300]

Fashion-MNIST must be installed (`apt-get install dataset-fashion-mnist` or `python -m trainer download
fashion_mnist`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_PEAK_MB = 700


def peak_resident_mb() -> float:
    """This process's peak resident set so far (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # not Linux: ru_maxrss is in kB there too on Linux, bytes on macOS; close enough for a bench
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def storages(tensors) -> dict:
    """The storages held by the tensors among `tensors`' attributes (Inputs' stored tensors and row indices
    included), by address: a storage two attributes share is counted once."""
    import torch
    values = list(vars(tensors).values())
    held = [value for value in values if isinstance(value, torch.Tensor)]
    for value in values:
        if hasattr(value, "stored"):
            held += [t for t in (value.stored, value.row_index) if t is not None]
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}


def child(stage: str, rounds: int, iterations: int) -> dict:
    """Measure one stage in this (fresh) process."""
    import torch
    measured = {"import_torch_mb": peak_resident_mb()}
    if stage == "torch":
        return measured
    from trainer import datasets
    from trainer.imp.run import Run, run_experiment  # noqa: F401
    from trainer.spec import ExperimentSpec
    measured["imports_mb"] = peak_resident_mb()
    if stage == "imports":
        return measured
    if stage == "optimizer":
        from trainer.training.loop import FusedOptimizer
        layer = torch.nn.Linear(2, 2)
        optimizer = FusedOptimizer(layer, ExperimentSpec().training)  # the trainer's optimizer, one real step
        layer(torch.ones(1, 2)).sum().backward()
        optimizer.step(0.1)
        measured["optimizer_mb"] = peak_resident_mb()
        return measured
    spec = ExperimentSpec.from_dict({
        "model": "lenet_300_100", "dataset": "fashion_mnist", "device": "cpu",
        "training": {"training_steps": f"{iterations}it", "eval_interval": f"{iterations}it",
                     "metrics_interval": iterations},
        "pruning": {"rounds": rounds - 1}})
    captured = {}
    original_init = Run.__init__

    def keep_run(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        captured["run"] = self

    Run.__init__ = keep_run
    with tempfile.TemporaryDirectory() as runs_root:
        results = run_experiment(spec, Path(runs_root), data_dir=None)
    Run.__init__ = original_init
    measured["run_mb"] = peak_resident_mb()
    measured["status"] = results["status"]
    loaded, prepared = storages(datasets.load_dataset("fashion_mnist")), storages(captured["run"].data)
    measured["dataset_mb"] = sum(loaded.values()) / 2**20
    measured["prepared_mb"] = sum(prepared.values()) / 2**20
    measured["prepared_own_mb"] = sum(n for address, n in prepared.items() if address not in loaded) / 2**20
    return measured


def measure(stage: str, rounds: int, iterations: int) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--child", stage, "--rounds", str(rounds),
                                "--iterations", str(iterations)], capture_output=True, text=True, cwd=REPO)
    if completed.returncode != 0:
        sys.exit(f"the {stage} measurement failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="IMP rounds (the dense round 0 included)")
    parser.add_argument("--iterations", type=int, default=300, help="training iterations per round")
    parser.add_argument("--child", choices=("torch", "imports", "optimizer", "run"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 2 or args.iterations < 1:
        parser.error("--rounds must be at least 2 and --iterations at least 1")
    if args.child:
        sys.path.insert(0, str(REPO))
        print(json.dumps(child(args.child, args.rounds, args.iterations)))
        return
    from trainer import datasets
    if not datasets.get_entry("fashion_mnist").is_installed():
        sys.exit("Fashion-MNIST is not installed: " + datasets.get_entry("fashion_mnist").install_instructions())
    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    torch_only = measure("torch", args.rounds, args.iterations)
    imports = measure("imports", args.rounds, args.iterations)
    optimizer = measure("optimizer", args.rounds, args.iterations)
    run = measure("run", args.rounds, args.iterations)
    print(f"import torch alone:              peak {torch_only['import_torch_mb']:7.1f} MB")
    print(f"torch + the trainer's imports:   peak {imports['imports_mb']:7.1f} MB")
    print(f"... + the trainer's optimizer:    peak {optimizer['optimizer_mb']:7.1f} MB (the floor of any run)")
    print(f"Fashion-MNIST as loaded (cache): {run['dataset_mb']:7.1f} MB of tensors")
    print(f"the run's prepared splits:       {run['prepared_mb']:7.1f} MB of tensors, "
          f"{run['prepared_own_mb']:.1f} MB of them its own (the rest is the loaded set's)")
    verdict = "meets" if run["run_mb"] <= TARGET_PEAK_MB else "misses"
    print(f"LeNet-300-100 IMP run ({args.rounds} rounds x {args.iterations} it, {run['status']}): "
          f"peak {run['run_mb']:7.1f} MB  ({verdict} the target <= {TARGET_PEAK_MB} MB)")


if __name__ == "__main__":
    main()
