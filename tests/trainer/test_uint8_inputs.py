"""Image sets kept as uint8 pixels and normalized per batch give exactly what the whole-set float tensors gave:
the same training batches (augmented or not, one network or stacked), the same evaluations, the same runs."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from tests.trainer.conftest import MEAN, STD, assert_identical_runs, both_forms, floats_as_before, tiny_spec
from tests.trainer.dataset_files import write_idx_dataset
from trainer import datasets, models
from trainer.datasets import DATASETS, Inputs, level_table
from trainer.imp import run_experiment
from trainer.tasks.classification import evaluate
from trainer.training.interpolation import statistics_batches
from trainer.training.loop import DataOrder
from trainer.training.stacked import stack_states
from trainer.training.stacked_loop import _batch, evaluate_stacked


def test_normalizing_pixels_per_batch_is_bit_identical_to_the_whole_set_floats():
    pixels = np.random.default_rng(0).integers(0, 256, (20, 3, 5, 5), dtype=np.uint8)
    pixels[0] = 0
    pixels[1] = 255  # both ends of the table
    inputs = Inputs(torch.from_numpy(pixels), level_table(MEAN, STD))
    before = floats_as_before(pixels, MEAN, STD)
    rows = torch.tensor([3, 0, 19, 1, 3])
    assert inputs.stored.dtype == torch.uint8 and inputs.rows().dtype == torch.float32
    assert torch.equal(inputs.rows(), before)
    assert torch.equal(inputs.rows(rows), before[rows])
    assert torch.equal(inputs.rows(slice(4, 9)), before[4:9])
    assert torch.equal(inputs.rows(rows.view(1, 5)), before[rows.view(1, 5)])  # stacked (K, B) indices
    assert torch.equal(inputs.select(rows).rows(), before[rows])


def test_training_batches_are_identical_to_the_float_path_with_and_without_augmentation():
    for channels, augment in ((1, False), (3, False), (3, True)):
        pixels, floats = both_forms(channels, augment=augment)
        new, old = DataOrder(pixels, data_seed=3), DataOrder(floats, data_seed=3)
        for iteration in range(2 * pixels.iterations_per_epoch + 1):  # two epochs' permutations
            (x, y), (x_old, y_old) = new.batch(iteration), old.batch(iteration)
            assert torch.equal(x, x_old) and torch.equal(y, y_old), (channels, augment, iteration)


def test_stacked_batches_are_identical_to_the_float_path():
    for augment in (False, True):
        pixels, floats = both_forms(3, augment=augment)
        permutations = torch.stack([torch.randperm(40, generator=torch.Generator().manual_seed(seed))
                                    for seed in (1, 2)])
        for offset in range(3):
            new = _batch(pixels, permutations, offset, [1, 2], offset)
            old = _batch(floats, permutations, offset, [1, 2], offset)
            assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1]), (augment, offset)


def test_evaluation_statistics_batches_and_whole_splits_are_identical_to_the_float_path():
    pixels, floats = both_forms(1, size=28)
    model = models.build_model("lenet_300_100", (1, 28, 28), 10, init_seed=0)
    for split in ("val", "test"):
        inputs, labels = getattr(pixels, f"{split}_inputs"), getattr(pixels, f"{split}_y")
        assert inputs.stored.dtype == torch.uint8
        assert evaluate(model, inputs, labels) == evaluate(model, getattr(floats, f"{split}_x"), labels)
        assert torch.equal(getattr(pixels, f"{split}_x"), getattr(floats, f"{split}_x"))
    stacked = stack_states([model, models.build_model("lenet_300_100", (1, 28, 28), 10, init_seed=1)])
    assert evaluate_stacked(stacked, pixels.test_inputs, pixels.test_y) == \
        evaluate_stacked(stacked, floats.test_x, floats.test_y)
    new = statistics_batches(pixels.train_inputs, 8, 3, torch.Generator().manual_seed(4))
    old = statistics_batches(floats.train_x, 8, 3, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(new, old, strict=True))


def test_idx_files_load_as_uint8_and_an_imp_run_on_them_matches_the_float_path(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "mnist", gz=True, train_count=300, test_count=40)
    monkeypatch.setenv("LOTTERYWEB_DATA_DIR", str(tmp_path))
    datasets.clear_cache()
    loaded = DATASETS["mnist"].load(tmp_path)
    assert loaded.train_inputs.stored.dtype == torch.uint8 and loaded.train_inputs.stored.shape == (300, 1, 28, 28)
    assert loaded.train_x.dtype == torch.float32  # the accessor gives normalized floats
    spec = tiny_spec(dataset="mnist", validation_size=50, training={"batch_size": 25, "training_steps": "20it",
                                                                     "eval_interval": "10it", "metrics_interval": 10})
    uint8_run = run_experiment(spec, tmp_path / "uint8")

    as_floats = replace(loaded, train_inputs=Inputs(loaded.train_x), test_inputs=Inputs(loaded.test_x))
    monkeypatch.setattr(DATASETS["mnist"], "load", lambda data_dir=None: as_floats)
    datasets.clear_cache()
    float_run = run_experiment(spec, tmp_path / "float")
    datasets.clear_cache()

    assert len(uint8_run["rounds"]) == 3
    assert_identical_runs(uint8_run, tmp_path / "uint8", float_run, tmp_path / "float")
