"""Shared by the analysis tests: a tiny finished IMP run, and one torch thread while testing."""
from pathlib import Path

import pytest
import torch

from trainer.imp import run_experiment
from trainer.spec import ExperimentSpec

# 40 iterations per round, θk at 10, the LR drops tenfold at 30: LR rewinding and fine-tuning differ.
TINY_RUN = {
    "dataset": "synthetic", "validation_size": 500, "device": "cpu", "rewind_step": "10it",
    "training": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50, "training_steps": "40it",
                 "eval_interval": "20it", "metrics_interval": 10, "lr_schedule": "multistep",
                 "lr_milestones": ["30it"], "lr_gamma": 0.1},
    "pruning": {"fraction": 0.5, "rounds": 2, "layer_fractions": {}},  # uniform: every layer at 50%
}


def tiny_run(runs_root: Path, **overrides) -> Path:
    data = {**TINY_RUN, **overrides}
    results = run_experiment(ExperimentSpec.from_dict(data), runs_root)
    return Path(runs_root) / results["run_name"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a busy 2-core machine: one thread avoids OpenMP spinning against other processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def collector():
    seen = []
    return seen, seen.append



def keeps_larger_half(new_mask: dict, mask: dict, scores: dict) -> bool:
    """The tiny run's pruning rule, checked by hand: every layer of `new_mask` kept round(n/2) (halves
    down) of the n survivors of `mask`, none scoring below a weight it pruned (ties may go either way)."""
    for name, keep in mask.items():
        kept, pruned = new_mask[name] & keep, keep & ~new_mask[name]
        survivors = int(keep.sum())
        if not torch.equal(kept, new_mask[name]) or int(kept.sum()) != survivors - int(survivors * 0.5 + 0.5):
            return False
        if scores[name][kept].min() < scores[name][pruned].max():
            return False
    return True
