"""Tiny dataset files in the standard formats (IDX for MNIST/Fashion-MNIST, CIFAR-10's pickled batches, SVHN's
.mat files, the downloads' archives), written by the dataset, download and input-limit tests."""
from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import pickle
import tarfile
import threading
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


# ---- the files a download fetches (trainer.dataset_sources), in the real formats ------------------------------

class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the paths asked for, instead of a log line on stderr
        self.server.requested.append(self.path)


@contextlib.contextmanager
def serve_folder(root: Path):
    """(base URL, the list of paths requested) of an HTTP server on 127.0.0.1 serving `root`, in a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_RecordingHandler, directory=str(root)))
    server.requested = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.requested
    finally:
        server.shutdown()
        server.server_close()


def write_mirror(root: Path, seed: int = 0) -> tuple[dict, dict]:
    """A mirror folder <root>/<dataset>/<file> holding small files in the formats of the real downloads
    (gzipped IDX files, CIFAR's python tar.gz, SVHN's .mat), and a table like trainer.dataset_sources.SOURCES
    with their checksums. Returns (sources, expected): expected[dataset] = (train pixels NCHW uint8, train labels,
    test pixels, test labels)."""
    from dataclasses import replace

    from trainer.dataset_sources import SOURCES, RemoteFile, file_md5

    rng = np.random.default_rng(seed)
    sources, expected = {}, {}
    for name in ("mnist", "fashion_mnist"):
        train, test = (rng.integers(0, 256, (count, 28, 28), dtype=np.uint8) for count in (12, 5))
        train_labels, test_labels = (rng.integers(0, 10, count).astype(np.uint8) for count in (12, 5))
        for file_name, array in zip(IDX_NAMES, (train, train_labels, test, test_labels)):
            write_file(root / name / file_name, idx_bytes(array), gz=True)
        expected[name] = (train[:, None], train_labels, test[:, None], test_labels)
    for name, folder, train_names, test_name, label_key, classes, meta in (
            ("cifar10", "cifar-10-batches-py", CIFAR_NAMES[:-1], "test_batch", "labels", 10,
             ("batches.meta", "label_names")),
            ("cifar100", "cifar-100-python", ("train",), "test", "fine_labels", 100, ("meta", "fine_label_names"))):
        staging = root / "staging" / folder
        batches = [_write_py2_style_batch(staging / file_name, 3, label_key, classes, rng)
                   for file_name in train_names + (test_name,)]
        with open(staging / meta[0], "wb") as handle:
            pickle.dump({meta[1]: [f"class {i}" for i in range(classes)]}, handle)
        archive = root / name / SOURCES[name].files[0].name
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(staging, arcname=folder)
        train_pixels = np.concatenate([pixels for pixels, _ in batches[:-1]])
        expected[name] = (train_pixels, np.concatenate([labels for _, labels in batches[:-1]]), *batches[-1])
    svhn = []
    for file_name, count in (("train_32x32.mat", 7), ("test_32x32.mat", 4)):
        svhn.extend(write_svhn_mat(root / "svhn" / file_name, count, rng))
    expected["svhn"] = tuple(svhn)
    for name, source in SOURCES.items():
        files = tuple(RemoteFile(remote.name, file_md5(root / name / remote.name), remote.extracts_to)
                      for remote in source.files)
        verified = {path: file_md5(root / "staging" / path) for path in source.verified if "/" in path}
        verified.update({remote.name: remote.md5 for remote in files if remote.name in source.verified})
        sources[name] = replace(source, files=files, verified=verified)
    return sources, expected


def _write_py2_style_batch(path: Path, count: int, label_key: str, classes: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR python batch with str keys, as the real (Python 2) pickles load: what torchvision indexes."""
    data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
    labels = rng.integers(0, classes, count)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump({"batch_label": "batch", label_key: [int(label) for label in labels], "data": data}, handle,
                    protocol=2)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def write_svhn_mat(path: Path, count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """A .mat file as SVHN's: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0. Returns NCHW pixels and
    the labels 0-9."""
    from scipy.io import savemat

    pixels = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(count) % 10
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"X": pixels.transpose(2, 3, 1, 0), "y": np.where(labels == 0, 10, labels)[:, None].astype(np.uint8)})
    return pixels, labels.astype(np.int64)
