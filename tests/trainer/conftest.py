"""Fixtures and helpers of the trainer tests: tiny specs and finished runs, event collectors, the
pruning rule of the tiny runs checked by hand, a tiny batch-norm network, the run directory written in
the old layout, `python -m trainer` in a subprocess, and random images as uint8 pixels and as floats."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trainer import datasets, models
from trainer.imp import run_experiment
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec
from trainer.tasks.base import PreparedData

REPO = Path(__file__).resolve().parents[2]
# A run directory written before the studies moved into trainer/analyses/ (a tiny_bn model, see TinyBN).
OLD_LAYOUT_RUN = Path(__file__).parent / "analyses" / "fixtures" / "old_layout" / "tiny_bn_synthetic_308eb9a11344c4e8"

# 40 iterations per round, θk at 10, the LR drops tenfold at 30: LR rewinding and fine-tuning differ.
TINY_RUN = {
    "dataset": "synthetic", "validation_size": 500, "device": "cpu", "rewind_step": "10it",
    "training": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50, "training_steps": "40it",
                 "eval_interval": "20it", "metrics_interval": 10, "lr_schedule": "multistep",
                 "lr_milestones": ["30it"], "lr_gamma": 0.1},
    "pruning": {"fraction": 0.5, "rounds": 2, "layer_fractions": {}},  # uniform: every layer at 50%
}
# Well-typed but absurd: refused by the spec, the CLI, the API and the form (tests/*/test_input_limits.py).
ABSURD_WORKLOAD = {"dataset": "synthetic", "training": {"training_steps": "99999999999999999999it"}}


def tiny_run(runs_root: Path, **overrides) -> Path:
    data = {**TINY_RUN, **overrides}
    results = run_experiment(ExperimentSpec.from_dict(data), runs_root)
    return Path(runs_root) / results["run_name"]


def assert_identical_runs(first: dict, first_root: Path, second: dict, second_root: Path) -> None:
    """Two runs' round records (wall times aside) and the masks of their pruned rounds are identical."""
    strip = lambda rounds: [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rounds]  # noqa: E731
    assert strip(first["rounds"]) == strip(second["rounds"])
    a, b = RunDir.open(Path(first_root) / first["run_name"]), RunDir.open(Path(second_root) / second["run_name"])
    for round_index in range(1, len(first["rounds"])):
        mask_a, mask_b = a.mask(round_index), b.mask(round_index)
        assert all(torch.equal(mask_a[name], mask_b[name]) for name in mask_a), round_index


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


def tiny_spec(**overrides) -> ExperimentSpec:
    data = {"dataset": "synthetic", "validation_size": 500, "device": "cpu",
            "training": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50,
                         "training_steps": "120it", "eval_interval": "40it", "metrics_interval": 20},
            "pruning": {"fraction": 0.3, "rounds": 2, "layer_fractions": {"fc3.weight": 0.15}}}
    for key, value in overrides.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return ExperimentSpec.from_dict(data)


class TinyBN(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 4, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def trainer(*args, cwd=None, env_extra=None):
    """`python -m trainer *args` of this repository in a subprocess (one torch thread)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOTTERYWEB_TORCH_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=300)


@pytest.fixture
def old_run(tmp_path, monkeypatch):
    """A copy of OLD_LAYOUT_RUN, its tiny_bn model registered (the web's import_run test uses it too)."""
    monkeypatch.setitem(models.MODELS, "tiny_bn", models.ModelEntry("tiny_bn", "test-only batch-norm convnet", TinyBN,
                                                                    models._kaiming_normal))
    path = tmp_path / OLD_LAYOUT_RUN.name
    shutil.copytree(OLD_LAYOUT_RUN, path)
    return path


MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def floats_as_before(pixels: np.ndarray, mean, std) -> torch.Tensor:
    """The whole-set normalization the loaders did before: one float32 table per channel, looked up in numpy."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    table = ((levels[None, :] - np.asarray(mean)[:, None]) / np.asarray(std)[:, None]).astype(np.float32)
    return torch.from_numpy(table[np.arange(pixels.shape[1]).reshape(1, -1, 1, 1), pixels])


def both_forms(channels=3, size=8, augment=False, train=40, held=7, batch_size=8):
    """The same random images as uint8 Inputs and as the float tensors of before, in PreparedData each."""
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (train + 2 * held, channels, size, size), dtype=np.uint8)
    labels = torch.from_numpy(rng.integers(0, 10, train + 2 * held))
    mean, std = MEAN[:channels], STD[:channels]
    stored = datasets.Inputs(torch.from_numpy(pixels), datasets.level_table(mean, std))
    floats = floats_as_before(pixels, mean, std)
    info = datasets.DatasetInfo("pixels", "pixels", (channels, size, size), 10, train, held, augment, "")
    parts = (slice(0, train), slice(train, train + held), slice(train + held, None))

    def prepared(split_inputs):
        return PreparedData(info, *[value for part in parts for value in (split_inputs(part), labels[part])],
                            batch_size)
    return prepared(stored.select), prepared(lambda part: floats[part])
