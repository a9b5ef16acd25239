"""Where each downloadable image dataset comes from: torchvision's URLs, file names, layout and MD5 checksums.

The one table of checksums. trainer.downloads fetches and verifies `files` against it; trainer.datasets
hands the `verified` checksums to torchvision, which checks them before it reads a file (CIFAR's pickles,
SVHN's .mat files). Tests pass or patch in a table of their own small files; this one holds the real ones
(tests/trainer/test_downloads.py checks it against torchvision's own class attributes).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RemoteFile:
    name: str  # on the server and on disk
    md5: str
    extracts_to: str | None = None  # a .gz file: the file beside it; a .tar.gz: its top folder beside it


@dataclass(frozen=True)
class DatasetSource:
    dataset: str  # the registry's name (trainer.datasets.DATASETS)
    torchvision_class: str  # in torchvision.datasets
    base_url: str  # torchvision's; a mirror replaces it (trainer.downloads.file_url)
    folder: str  # where torchvision keeps the files, relative to the data directory ("" = the directory itself)
    files: tuple[RemoteFile, ...]
    # Files that torchvision checks before reading them (relative to `folder`) -> their MD5.
    verified: dict[str, str] = field(default_factory=dict)

    def path_of(self, data_dir: Path, name: str) -> Path:
        return data_dir / self.folder / name


def file_md5(path: Path) -> str:
    """The file's MD5 as hex, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)  # a checksum against damage, not a security measure
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _idx_files(*md5s: str) -> tuple[RemoteFile, ...]:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return tuple(RemoteFile(f"{name}.gz", md5, extracts_to=name) for name, md5 in zip(names, md5s))


def _cifar_verified(folder: str, md5s: dict[str, str]) -> dict[str, str]:
    return {f"{folder}/{name}": md5 for name, md5 in md5s.items()}


SOURCES: dict[str, DatasetSource] = {source.dataset: source for source in (
    DatasetSource("mnist", "MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/", "MNIST/raw", _idx_files(
        "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")),
    DatasetSource("fashion_mnist", "FashionMNIST", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                  "FashionMNIST/raw", _idx_files(
                      "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                      "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")),
    DatasetSource("cifar10", "CIFAR10", "https://www.cs.toronto.edu/~kriz/", "",
                  (RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),),
                  _cifar_verified("cifar-10-batches-py", {
                      "data_batch_1": "c99cafc152244af753f735de768cd75f",
                      "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                      "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                      "data_batch_4": "634d18415352ddfa80567beed471001a",
                      "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
                      "test_batch": "40351d587109b95175f43aff81a1287e",
                      "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"})),
    DatasetSource("cifar100", "CIFAR100", "https://www.cs.toronto.edu/~kriz/", "",
                  (RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),),
                  _cifar_verified("cifar-100-python", {
                      "train": "16019d7e3df5f24257cddd939b257f8d",
                      "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                      "meta": "7973b15100ade9c7d40fb424638fde48"})),
    DatasetSource("svhn", "SVHN", "http://ufldl.stanford.edu/housenumbers/", "",
                  (RemoteFile("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
                   RemoteFile("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")),
                  {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
                   "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}),
)}
