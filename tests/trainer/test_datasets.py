"""Dataset readers, registry, validation split and augmentation, on tiny files written here."""
from __future__ import annotations

import gzip
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainer.dataset_files import (
    CIFAR_NAMES,
    IDX_IMAGES_TEST,
    IDX_IMAGES_TRAIN,
    IDX_LABELS_TEST,
    IDX_LABELS_TRAIN,
    IDX_NAMES,
    idx_bytes,
    write_cifar100_file,
    write_cifar_dataset,
    write_idx_dataset,
)
from trainer import datasets
from trainer.datasets import (
    DATASETS,
    DatasetError,
    DatasetInfo,
    DatasetTensors,
    augment_batch,
    default_data_dir,
    load_dataset,
    split_validation,
)

# ---- helpers that check what was read ---------------------------------------------------------

def expected_normalized(pixels: np.ndarray, mean, std) -> torch.Tensor:
    mean = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    return ((torch.from_numpy(pixels.astype(np.float64)) / 255.0 - mean) / std).float()


# ---- IDX datasets ---------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_idx_files_load_with_shapes_labels_and_normalization(tmp_path, gz):
    arrays = write_idx_dataset(tmp_path / "mnist", gz)
    entry = DATASETS["mnist"]
    assert entry.is_installed(tmp_path)
    assert entry.location_hint(tmp_path) == str(tmp_path / "mnist")

    tensors = entry.load(tmp_path)

    assert tensors.info.name == "mnist"
    assert tensors.train_x.shape == (12, 1, 28, 28) and tensors.test_x.shape == (5, 1, 28, 28)
    assert tensors.train_x.dtype == torch.float32 and tensors.train_y.dtype == torch.int64
    assert tensors.train_y.tolist() == arrays[IDX_LABELS_TRAIN].tolist()
    assert tensors.test_y.tolist() == arrays[IDX_LABELS_TEST].tolist()
    expected = expected_normalized(arrays[IDX_IMAGES_TRAIN][:, None], (0.1307,), (0.3081,))
    torch.testing.assert_close(tensors.train_x, expected)


def test_torchvision_layout_and_env_data_dir(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "MNIST" / "raw", gz=True)
    monkeypatch.setenv("LOTTERYWEB_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert DATASETS["mnist"].is_installed()

    tensors = load_dataset("mnist")

    assert tensors.train_x.shape == (12, 1, 28, 28)
    assert load_dataset("mnist") is tensors  # cached in-process
    assert load_dataset("mnist", data_dir=tmp_path) is tensors  # same resolved directory, same entry


def test_default_data_dir_is_repo_data_without_env(monkeypatch):
    monkeypatch.delenv("LOTTERYWEB_DATA_DIR", raising=False)
    assert default_data_dir() == Path(datasets.__file__).resolve().parent.parent / "data"


def test_cache_is_per_data_dir(tmp_path):
    write_idx_dataset(tmp_path / "a" / "mnist", gz=False, train_count=3, seed=1)
    write_idx_dataset(tmp_path / "b" / "mnist", gz=False, train_count=4, seed=2)
    assert len(load_dataset("mnist", tmp_path / "a").train_y) == 3
    assert len(load_dataset("mnist", tmp_path / "b").train_y) == 4


def test_missing_idx_files_name_files_directory_and_env_var(tmp_path):
    entry = DATASETS["mnist"]
    assert not entry.is_installed(tmp_path)
    assert str(tmp_path / "mnist") in entry.location_hint(tmp_path)

    with pytest.raises(DatasetError) as caught:
        load_dataset("mnist", tmp_path)

    message = str(caught.value)
    for name in IDX_NAMES:
        assert name in message
    assert str(tmp_path / "mnist") in message
    assert "LOTTERYWEB_DATA_DIR" in message


def test_partly_installed_idx_names_the_missing_file(tmp_path):
    write_idx_dataset(tmp_path / "mnist", gz=True)
    (tmp_path / "mnist" / f"{IDX_LABELS_TEST}.gz").unlink()
    with pytest.raises(DatasetError, match=f"{IDX_LABELS_TEST} is missing"):
        DATASETS["mnist"].load(tmp_path)


def test_missing_fashion_mnist_suggests_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(DATASETS["fashion_mnist"], "system_dirs", (tmp_path / "not-installed",))
    assert not DATASETS["fashion_mnist"].is_installed(tmp_path)
    with pytest.raises(DatasetError) as caught:
        DATASETS["fashion_mnist"].load(tmp_path)
    message = str(caught.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "fashion_mnist") in message
    assert IDX_IMAGES_TRAIN in message and "LOTTERYWEB_DATA_DIR" in message


def _truncate_gz(path: Path):
    gz_path = path.with_name(path.name + ".gz")
    gz_path.write_bytes(gzip.compress(path.read_bytes())[:-40])
    path.unlink()
    return gz_path


def _not_gzip(path: Path):
    gz_path = path.with_name(path.name + ".gz")
    gz_path.write_bytes(b"this is not gzip data at all")
    path.unlink()
    return gz_path


def _wrong_magic(path: Path):
    path.write_bytes(idx_bytes(np.zeros(12, np.uint8)))  # a label file where images belong
    return path


def _truncated_raw(path: Path):
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _too_few_labels(path: Path):
    path.write_bytes(idx_bytes(np.zeros(11, np.uint8)))
    return path


def _label_out_of_range(path: Path):
    path.write_bytes(idx_bytes(np.full(12, 10, np.uint8)))
    return path


def _wrong_image_size(path: Path):
    path.write_bytes(idx_bytes(np.zeros((12, 32, 32), np.uint8)))
    return path


@pytest.mark.parametrize("damage, target, problem", [
    (_truncate_gz, IDX_IMAGES_TRAIN, "truncated"),
    (_not_gzip, IDX_LABELS_TEST, "not valid gzip"),
    (_wrong_magic, IDX_IMAGES_TRAIN, "magic number 0x00000801"),
    (_truncated_raw, IDX_IMAGES_TEST, "truncated"),
    (_too_few_labels, IDX_LABELS_TRAIN, "11 labels"),
    (_label_out_of_range, IDX_LABELS_TRAIN, "label 10"),
    (_wrong_image_size, IDX_IMAGES_TRAIN, "32x32 pixels"),
])
def test_damaged_idx_file_is_named_in_the_error(tmp_path, damage, target, problem):
    write_idx_dataset(tmp_path / "mnist", gz=False)
    damaged_path = damage(tmp_path / "mnist" / target)
    with pytest.raises(DatasetError) as caught:
        DATASETS["mnist"].load(tmp_path)
    assert str(damaged_path) in str(caught.value)
    assert problem in str(caught.value)


# ---- CIFAR-10 -------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol, bytes_keys", [(pickle.HIGHEST_PROTOCOL, True), (2, False)])
def test_cifar_batches_load(tmp_path, protocol, bytes_keys):
    batches = write_cifar_dataset(tmp_path / "cifar10" / "cifar-10-batches-py", protocol=protocol,
                                  bytes_keys=bytes_keys)
    entry = DATASETS["cifar10"]
    assert entry.info.augment and entry.info.input_shape == (3, 32, 32)
    assert entry.is_installed(tmp_path)

    tensors = entry.load(tmp_path)

    assert tensors.train_x.shape == (20, 3, 32, 32) and tensors.test_x.shape == (4, 3, 32, 32)
    assert tensors.train_x.dtype == torch.float32 and tensors.test_y.dtype == torch.int64
    train_labels = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert tensors.train_y.tolist() == train_labels
    assert tensors.test_y.tolist() == batches["test_batch"][1]
    # Rows are 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    test_pixels = batches["test_batch"][0].reshape(-1, 3, 32, 32)
    expected = expected_normalized(test_pixels, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    torch.testing.assert_close(tensors.test_x, expected)


def test_cifar_flat_layout_is_found(tmp_path):
    write_cifar_dataset(tmp_path / "cifar-10-batches-py", per_batch=2)
    assert DATASETS["cifar10"].location_hint(tmp_path) == str(tmp_path / "cifar-10-batches-py")
    assert DATASETS["cifar10"].load(tmp_path).train_x.shape == (10, 3, 32, 32)


def test_missing_cifar_names_files_and_directory(tmp_path):
    with pytest.raises(DatasetError) as caught:
        DATASETS["cifar10"].load(tmp_path)
    message = str(caught.value)
    for name in CIFAR_NAMES:
        assert name in message
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in message
    assert "LOTTERYWEB_DATA_DIR" in message


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def _garbage(path: Path):
    path.write_bytes(np.random.default_rng(0).bytes(300))  # fixed bytes: random ones might unpickle by chance


def _truncated_pickle(path: Path):
    path.write_bytes(path.read_bytes()[:-500])


def _missing_labels(path: Path):
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8)}))


def _wrong_shape(path: Path):
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0, 1, 2, 3]}))


def _label_count_mismatch(path: Path):
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}))


def _code_execution(path: Path):
    path.write_bytes(pickle.dumps({b"data": _RunsCode(), b"labels": [0]}))


@pytest.mark.parametrize("damage, problem", [
    (_garbage, "unpickling failed"),
    (_truncated_pickle, "unpickling failed"),
    (_missing_labels, "b'labels'"),
    (_wrong_shape, "(4, 1024)"),
    (_label_count_mismatch, "3 labels for 4 images"),
    (_code_execution, "getcwd, which a CIFAR batch never contains"),
])
def test_damaged_cifar_batch_is_named_in_the_error(tmp_path, damage, problem):
    directory = tmp_path / "cifar-10-batches-py"
    write_cifar_dataset(directory)
    damage(directory / "data_batch_3")
    with pytest.raises(DatasetError) as caught:
        DATASETS["cifar10"].load(tmp_path)
    assert str(directory / "data_batch_3") in str(caught.value)
    assert problem in str(caught.value)


# ---- CIFAR-100 ------------------------------------------------------------------------------

def test_cifar100_reads_the_fine_labels(tmp_path):
    directory = tmp_path / "cifar100" / "cifar-100-python"
    train_pixels, train_labels = write_cifar100_file(directory / "train", 12, seed=1)
    test_pixels, test_labels = write_cifar100_file(directory / "test", 5, seed=2)
    entry = DATASETS["cifar100"]
    assert entry.info.num_classes == 100 and entry.info.augment and entry.is_installed(tmp_path)

    tensors = entry.load(tmp_path)

    assert tensors.train_x.shape == (12, 3, 32, 32) and tensors.test_x.shape == (5, 3, 32, 32)
    assert tensors.train_y.tolist() == train_labels and tensors.test_y.tolist() == test_labels
    assert max(train_labels + test_labels) >= 20  # fine, not coarse, labels were read
    expected = expected_normalized(test_pixels.reshape(-1, 3, 32, 32), (0.5071, 0.4865, 0.4409),
                                   (0.2673, 0.2564, 0.2762))
    torch.testing.assert_close(tensors.test_x, expected)


def test_cifar100_missing_and_damaged_files_are_named(tmp_path):
    with pytest.raises(DatasetError) as caught:
        DATASETS["cifar100"].load(tmp_path)
    message = str(caught.value)
    assert "train, test" in message and str(tmp_path / "cifar100" / "cifar-100-python") in message
    assert "cifar-100-python.tar.gz" in message

    directory = tmp_path / "cifar-100-python"
    write_cifar100_file(directory / "train", 4, seed=1)
    (directory / "test").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetError) as caught:
        DATASETS["cifar100"].load(tmp_path)
    assert str(directory / "test") in str(caught.value)
    assert "not a CIFAR-100 file: it lacks the key b'fine_labels'" in str(caught.value)


# ---- registry and synthetic -----------------------------------------------------------------

def test_registry_lists_the_datasets():
    assert set(DATASETS) == {"fashion_mnist", "mnist", "cifar10", "cifar100", "svhn", "synthetic",  # images
                             "python_docs", "wikitext2", "wikitext103",  # text corpora
                             "cartpole", "acrobot"}  # environments
    for name, entry in DATASETS.items():
        assert isinstance(entry.info, DatasetInfo) and entry.info.name == name


def test_unknown_dataset_lists_the_names():
    with pytest.raises(DatasetError) as caught:
        load_dataset("imagenet")
    assert "imagenet" in str(caught.value)
    for name in DATASETS:
        assert name in str(caught.value)


def test_synthetic_is_deterministic_balanced_normalized_and_fast(tmp_path):
    entry = DATASETS["synthetic"]
    assert entry.is_installed(tmp_path / "empty")
    started = time.perf_counter()
    first = entry.load()
    generation_seconds = time.perf_counter() - started
    second = entry.load()

    assert generation_seconds < 1.0
    assert first.train_x.shape == (entry.info.train_size, 1, 28, 28) == (3000, 1, 28, 28)
    assert first.test_x.shape == (entry.info.test_size, 1, 28, 28) == (1000, 1, 28, 28)
    assert first.train_x.dtype == torch.float32 and first.train_y.dtype == torch.int64
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    assert first.train_y.bincount().tolist() == [300] * 10
    assert first.test_y.bincount().tolist() == [100] * 10
    assert abs(first.train_x.mean().item()) < 1e-3 and abs(first.train_x.std().item() - 1) < 1e-3
    assert not torch.equal(first.train_x[:1000], first.test_x)


def test_synthetic_is_learnable_but_not_trivial():
    tensors = DATASETS["synthetic"].load()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead on a busy machine
    try:
        accuracy = _train_small_mlp(tensors, steps=200)
    finally:
        torch.set_num_threads(threads)
    assert 0.6 < accuracy < 0.99


def _train_small_mlp(tensors: DatasetTensors, steps: int) -> float:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 100), torch.nn.ReLU(),
                                torch.nn.Linear(100, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    order = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(0, len(tensors.train_y), (60,), generator=order)
        loss = torch.nn.functional.cross_entropy(model(tensors.train_x[batch]), tensors.train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (model(tensors.test_x).argmax(1) == tensors.test_y).float().mean().item()


def test_tensors_to_device_keeps_everything():
    tensors = DATASETS["synthetic"].load()
    moved = tensors.to("cpu")
    assert moved.info == tensors.info and torch.equal(moved.test_x, tensors.test_x)


# ---- validation split -----------------------------------------------------------------------

def _indexed_tensors(count: int) -> DatasetTensors:
    info = DatasetInfo("indexed", "Indexed", (1, 1, 1), 10, count, 0, False, "")
    train_x = torch.arange(count, dtype=torch.float32).view(count, 1, 1, 1)
    return DatasetTensors(info, train_x, torch.arange(count) % 10, torch.zeros(0, 1, 1, 1),
                          torch.zeros(0, dtype=torch.int64))


def test_split_validation_is_fixed_disjoint_and_complete():
    tensors = _indexed_tensors(1000)
    torch.manual_seed(1)
    np.random.seed(1)
    train_x, train_y, val_x, val_y = split_validation(tensors, 100)
    torch.manual_seed(2)
    np.random.seed(2)
    again = split_validation(tensors, 100)

    assert train_x.shape == (900, 1, 1, 1) and val_x.shape == (100, 1, 1, 1)
    assert len(train_y) == 900 and len(val_y) == 100
    for mine, theirs in zip((train_x, train_y, val_x, val_y), again):
        assert torch.equal(mine, theirs)
    train_ids = set(train_x.flatten().long().tolist())
    val_ids = set(val_x.flatten().long().tolist())
    assert not train_ids & val_ids and train_ids | val_ids == set(range(1000))
    assert val_ids != set(range(100))  # a random hold-out, not the first examples
    assert torch.equal(val_y, val_x.flatten().long() % 10)  # labels travel with their images


def test_split_validation_bounds():
    tensors = _indexed_tensors(50)
    train_x, _, val_x, _ = split_validation(tensors, 0)
    assert len(train_x) == 50 and len(val_x) == 0
    with pytest.raises(DatasetError, match="50 training examples"):
        split_validation(tensors, 50)


def test_run_splits_index_the_loaded_set_and_read_what_the_copied_splits_hold():
    count = 1000
    info = DatasetInfo("indexed", "Indexed", (1, 2, 2), 10, count, 20, False, "")
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (count, 1, 2, 2), dtype=np.uint8))
    levels = datasets.level_table((0.5,), (0.25,))
    tensors = DatasetTensors(info, datasets.Inputs(pixels, levels), torch.arange(count) % 10,
                             datasets.Inputs(pixels[:20].clone(), levels), torch.zeros(20, dtype=torch.int64))
    train, train_y, val, val_y, _, _ = datasets.run_splits(tensors, 100, torch.device("cpu"))
    copied_train_x, copied_train_y, copied_val_x, copied_val_y = split_validation(tensors, 100)

    # No copy of the set: both splits read the loaded set's own storage.
    assert train.stored.data_ptr() == val.stored.data_ptr() == pixels.data_ptr()
    assert len(train) == 900 and len(val) == 100
    assert torch.equal(train_y, copied_train_y) and torch.equal(val_y, copied_val_y)
    as_copied = datasets.Inputs(copied_train_x, levels)
    assert torch.equal(train.rows(), as_copied.rows())
    assert torch.equal(val.rows(), datasets.Inputs(copied_val_x, levels).rows())
    batch = torch.tensor([5, 0, 899, 17])
    assert torch.equal(train.rows(batch), as_copied.rows(batch))
    assert torch.equal(train.rows(batch.view(2, 2)), as_copied.rows(batch.view(2, 2)))  # stacked (K, B) rows
    assert torch.equal(train.rows(slice(10, 30)), as_copied.rows(slice(10, 30)))
    assert torch.equal(train.select(slice(10, 30)).rows(batch[:2]), as_copied.select(slice(10, 30)).rows(batch[:2]))
    own = train.own_rows()
    assert own.row_index is None and torch.equal(own.stored, copied_train_x)


# ---- augmentation ---------------------------------------------------------------------------

def _reference_augment(image: torch.Tensor, shift_y: int, shift_x: int, flip: bool) -> torch.Tensor:
    """Crop of the 4-padded image at offset (4 + shift_y, 4 + shift_x), then maybe a mirror."""
    _, height, width = image.shape
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    crop = padded[:, 4 + shift_y: 4 + shift_y + height, 4 + shift_x: 4 + shift_x + width]
    return crop.flip(2) if flip else crop


def test_augment_is_crop_and_flip_with_zero_padding():
    height, width = 12, 10
    image = torch.arange(1, 3 * height * width + 1, dtype=torch.float32).view(3, height, width)  # no zeros
    batch = image.expand(400, 3, height, width).contiguous()

    out = augment_batch(batch, torch.Generator().manual_seed(0))

    assert out.shape == batch.shape
    choices = [(shift_y, shift_x, flip)
               for shift_y in range(-4, 5) for shift_x in range(-4, 5) for flip in (False, True)]
    references = torch.stack([_reference_augment(image, *choice) for choice in choices])
    seen = []
    for sample in out:
        matches = [choices[i] for i in range(len(choices)) if torch.equal(sample, references[i])]
        assert len(matches) == 1  # every output is exactly one crop (+ flip) of the input
        shift_y, shift_x, flip = matches[0]
        # Content moves by at most 4 pixels; everything outside the image is zero.
        assert (sample != 0).sum().item() == 3 * (height - abs(shift_y)) * (width - abs(shift_x))
        seen.append(matches[0])
    flips = sum(flip for _, _, flip in seen)
    assert 0.35 * len(seen) < flips < 0.65 * len(seen)
    assert {shift_y for shift_y, _, _ in seen} == set(range(-4, 5))
    assert {shift_x for _, shift_x, _ in seen} == set(range(-4, 5))


def test_augment_flip_alone_mirrors_columns():
    image = torch.arange(1, 33, dtype=torch.float32).view(1, 1, 32).expand(1, 32, 32).contiguous()
    out = augment_batch(image.expand(200, 1, 32, 32).contiguous(), torch.Generator().manual_seed(5))
    # Every output row is a shifted run of consecutive column values, ascending or (mirrored) descending.
    middle_rows = out[:, 0, 16]
    steps = middle_rows[:, 1:] - middle_rows[:, :-1]
    inside = (middle_rows[:, 1:] != 0) & (middle_rows[:, :-1] != 0)
    ascending = ((steps == 1) | ~inside).all(1)
    descending = ((steps == -1) | ~inside).all(1)
    assert (ascending ^ descending).all()
    assert ascending.any() and descending.any()


def test_augment_depends_only_on_the_generator_state():
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    first = augment_batch(x, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # global state is irrelevant
    same = augment_batch(x, torch.Generator().manual_seed(7))
    other = augment_batch(x, torch.Generator().manual_seed(8))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, same)
    assert not torch.equal(first, other)


def test_augment_of_a_cifar_batch_is_fast():
    x = torch.randn(512, 3, 32, 32)
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine a thread barrier can stall ~30 ms; time the work itself
    try:
        augment_batch(x, generator)
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            augment_batch(x, generator)
            best = min(best, time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    assert best < 0.05


# ---- the real Fashion-MNIST -----------------------------------------------------------------

@pytest.mark.skipif(not datasets.FASHION_MNIST_SYSTEM_DIR.is_dir(),
                    reason="the Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_the_debian_package(tmp_path):
    entry = DATASETS["fashion_mnist"]
    assert entry.location_hint(tmp_path) == str(datasets.FASHION_MNIST_SYSTEM_DIR)

    tensors = entry.load(tmp_path)  # empty data dir: falls through to the system package

    assert tensors.train_x.shape == (60000, 1, 28, 28) and tensors.test_x.shape == (10000, 1, 28, 28)
    assert tensors.train_y.bincount().tolist() == [6000] * 10
    assert tensors.test_y.bincount().tolist() == [1000] * 10
    assert abs(tensors.train_x.mean().item()) < 0.01 and abs(tensors.train_x.std().item() - 1) < 0.01
