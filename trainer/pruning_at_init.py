"""Pruning at initialisation, the old entry point (removed in the next step)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from trainer import events
from trainer.analyses.pruning_at_init import prune_at_init_and_train
from trainer.imp import Run
from trainer.pruning import masks
from trainer.pruning.at_init import METHODS, SYNFLOW_ITERATIONS
from trainer.rundir import RunDir, save_tensor_dict_atomically, write_json_atomically
from trainer.spec import ExperimentSpec

# ---- entry point --------------------------------------------------------------------------
def _branch_dir(run_dir: RunDir, method: str, remaining_fraction: float) -> Path:
    return run_dir.path / "pruning_at_init" / method / f"remaining_{remaining_fraction:.6f}"


def collect_results(run_dir: RunDir) -> dict[str, list[dict]]:
    """method -> records on disk, densest first."""
    base = run_dir.path / "pruning_at_init"
    found: dict[str, list[dict]] = {}
    if base.is_dir():
        for method_dir in sorted(d for d in base.iterdir() if d.is_dir()):
            records = [json.loads((d / "record.json").read_text()) for d in method_dir.iterdir()
                       if (d / "record.json").is_file()]
            found[method_dir.name] = sorted(records, key=lambda r: -r["target_remaining_fraction"])
    return found


def run_pruning_at_init(spec: ExperimentSpec, method: str, target_fractions: list[float], runs_root: Path, *,
                        scope: str = "global", score_examples: int = 256,
                        synflow_iterations: int = SYNFLOW_ITERATIONS, data_dir=None,
                        callback: events.Callback = events.ignore,
                        stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """Prune θ0 of `spec`'s model with `method` to each target remaining fraction, train each
    mask from iteration 0 with the spec's training, and return the records per target.

    Results live in the spec's run directory (beside an IMP run of the same spec, sharing θ0)
    under pruning_at_init/<method>/remaining_<fraction>/; finished targets are skipped.
    SNIP and GraSP score on `score_examples` training examples drawn with a seed of data_seed.
    """
    if method not in METHODS:
        raise ValueError(f"unknown pruning-at-init method {method!r}; choose one of {', '.join(METHODS)}")
    for target in target_fractions:
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target remaining fraction must be in (0, 1], got {target}")
    spec.validate()
    run_dir = RunDir.create(runs_root, spec)
    run = Run(spec, run_dir, data_dir, callback, stop_requested)
    theta_init = run.theta_init()
    network = f"pruning_at_init_{method}"
    records = []
    for index, target in enumerate(target_fractions):
        directory = _branch_dir(run_dir, method, target)
        if (directory / "record.json").is_file():
            records.append(json.loads((directory / "record.json").read_text()))
            callback(events.make_event(events.ROUND_SKIPPED, network, round=index))
            continue
        segment, record, mask, model = prune_at_init_and_train(
            run, method, target, index, theta_init, scope=scope, score_examples=score_examples,
            synflow_iterations=synflow_iterations, network=network)
        if segment.status == "cancelled":
            break
        directory.mkdir(parents=True, exist_ok=True)
        masks.save_mask(mask, directory / "mask.pt")
        save_tensor_dict_atomically(model.state_dict(), directory / "final_weights.pt")
        write_json_atomically(directory / "record.json", record)
        callback(events.make_event(events.ROUND_FINISHED, network, round=index,
                                   summary={k: v for k, v in record.items() if k not in ("curve", "train_loss")}))
        records.append(record)
    summary = {"run_dir": str(run_dir.path), "method": method, "scope": scope, "records": records}
    write_json_atomically(run_dir.path / "pruning_at_init" / "results.json", collect_results(run_dir))
    return summary
