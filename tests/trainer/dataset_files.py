"""Tiny dataset files in the standard formats (IDX for MNIST/Fashion-MNIST, CIFAR-10's pickled batches),
written by the dataset and input-limit tests."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

IDX_IMAGES_TRAIN = "train-images-idx3-ubyte"
IDX_LABELS_TRAIN = "train-labels-idx1-ubyte"
IDX_IMAGES_TEST = "t10k-images-idx3-ubyte"
IDX_LABELS_TEST = "t10k-labels-idx1-ubyte"
IDX_NAMES = (IDX_IMAGES_TRAIN, IDX_LABELS_TRAIN, IDX_IMAGES_TEST, IDX_LABELS_TEST)
CIFAR_NAMES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + array.tobytes()


def write_file(path: Path, data: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_idx_dataset(directory: Path, gz: bool, train_count: int = 12, test_count: int = 5,
                      seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_IMAGES_TRAIN: rng.integers(0, 256, (train_count, 28, 28), dtype=np.uint8),
        IDX_LABELS_TRAIN: np.arange(train_count, dtype=np.uint8) % 10,
        IDX_IMAGES_TEST: rng.integers(0, 256, (test_count, 28, 28), dtype=np.uint8),
        IDX_LABELS_TEST: (np.arange(test_count, dtype=np.uint8) * 3) % 10,
    }
    for name, array in arrays.items():
        write_file(directory / name, idx_bytes(array), gz)
    return arrays


def write_cifar_batch(path: Path, count: int, seed: int, protocol: int = pickle.HIGHEST_PROTOCOL,
                      bytes_keys: bool = True) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
    labels = [int(label) for label in rng.integers(0, 10, count)]
    keys = (b"data", b"labels", b"batch_label") if bytes_keys else ("data", "labels", "batch_label")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump({keys[0]: data, keys[1]: labels, keys[2]: b"batch"}, handle, protocol=protocol)
    return data, labels


def write_cifar100_file(path: Path, count: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """A file of cifar-100-python: fine labels 0-99 beside coarse ones 0-19, as the real files hold them."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
    fine = [int(label) for label in rng.integers(0, 100, count)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump({b"filenames": [b"x.png"] * count, b"batch_label": b"training batch 1 of 1", b"fine_labels": fine,
                     b"coarse_labels": [label // 5 for label in fine], b"data": data}, handle)
    return data, fine


def write_cifar_dataset(directory: Path, per_batch: int = 4, **options) -> dict[str, tuple[np.ndarray, list[int]]]:
    return {name: write_cifar_batch(directory / name, per_batch, seed, **options)
            for seed, name in enumerate(CIFAR_NAMES)}
