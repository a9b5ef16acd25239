"""Datasets: one registry, readers of the standard on-disk formats, and batch augmentation.

Each dataset is a `DatasetEntry` in `DATASETS`. An entry knows where its files
are expected, whether they are there, and how to load them into CPU tensors
(image files' pixels stay uint8, normalized per batch: `Inputs`). The files come
from the data directory (`LOTTERYWEB_DATA_DIR`, default `<repo>/data`) or from a
Debian package; loading never downloads (`python -m trainer download NAME`,
trainer.downloads, fetches the image sets of trainer.dataset_sources), and
`synthetic` is generated in memory.

Files in torchvision's layout of the data directory (what `download` and
torchvision's own `download=True` leave: MNIST/raw/, FashionMNIST/raw/,
cifar-10-batches-py/, cifar-100-python/, train_32x32.mat) are read by
torchvision.datasets; torchvision first checks CIFAR's and SVHN's files against
their MD5 (trainer.dataset_sources). The layouts this project read before
(gzipped IDX files, lower-case folders, the Debian package, CIFAR batches of
other checksums) are read by the readers below, which refuse anything but
numpy arrays in a pickle; both give the same tensors for the same files.

Every problem a user can fix (missing, truncated or wrong files) raises
`DatasetError` with a message that says which file and what to do.
"""
from __future__ import annotations

import gzip
import pickle
import threading
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from trainer import corpora, dataset_sources, rl
from trainer.datadir import (  # noqa: F401 (also known as trainer.datasets.*)
    DATA_DIR_ENV,
    DatasetError,
    default_data_dir,
    resolve_data_dir,
)

_resolve_data_dir = resolve_data_dir  # the name the loaders below use

# Fixed, so every run of every user holds out the same validation examples.
_VALIDATION_SPLIT_SEED = 0x5EED_0F_7A1
_AUGMENT_PADDING = 4


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    input_shape: tuple[int, int, int]  # (channels, height, width)
    num_classes: int
    train_size: int
    test_size: int
    augment: bool  # whether training uses `augment_batch`
    description: str
    task: str = "classification"  # trainer.tasks: what a network learns from this dataset


@dataclass(frozen=True)
class Inputs:
    """One split's network inputs as stored on its device: image files' uint8 pixels (N, C, H, W) with `levels`,
    the float32 input value of each (channel, pixel level), or (levels None) tensors that are inputs already.
    Pixels are a quarter of the floats' bytes; a batch is normalized when drawn, by a gather through `levels`
    (the same float32 values a whole-set normalization gives, bit for bit). A split of a loaded set keeps
    `row_index`, its rows of the set's `stored`, instead of a copy of them: the set is held once however
    many runs a worker trains from it."""
    stored: torch.Tensor
    levels: torch.Tensor | None = None
    row_index: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.stored.shape[0] if self.row_index is None else self.row_index.shape[0]

    @property
    def device(self) -> torch.device:
        return self.stored.device

    def _stored_rows(self, index: torch.Tensor | slice | None) -> torch.Tensor | slice | None:
        """`index` (rows of this split) as rows of `stored`."""
        if self.row_index is None:
            return index
        if index is None:
            return self.row_index
        if isinstance(index, torch.Tensor) and index.dim() == 1:
            return self.row_index.index_select(0, index)
        return self.row_index[index]

    def rows(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """The inputs of the rows `index` (a slice or index tensor, any shape; all rows when None), as floats."""
        index = self._stored_rows(index)
        if index is None:
            chosen = self.stored
        elif isinstance(index, torch.Tensor) and index.dim() == 1:
            chosen = self.stored.index_select(0, index)  # gathers rows ~3x faster than advanced indexing on CPU
        else:
            chosen = self.stored[index]
        return chosen if self.levels is None else normalize_pixels(chosen, self.levels)

    def select(self, index: torch.Tensor | slice) -> Inputs:
        """The rows `index`, still as stored (sharing the stored tensor when this split indexes one)."""
        if self.row_index is None:
            return Inputs(self.stored[index], self.levels)
        return Inputs(self.stored, self.levels, self.row_index[index])

    def own_rows(self) -> Inputs:
        """These inputs with `stored` holding exactly this split's rows, in order (a copy when it indexes a set)."""
        if self.row_index is None:
            return self
        return Inputs(self.stored.index_select(0, self.row_index), self.levels)

    def to(self, device: torch.device | str) -> Inputs:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Inputs(self.stored.to(device), move(self.levels), move(self.row_index))


def as_inputs(x: Inputs | torch.Tensor) -> Inputs:
    """`x` as Inputs: a tensor is taken as inputs already (floats, token ids)."""
    return x if isinstance(x, Inputs) else Inputs(x)


def level_table(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(C, 256) float32: ((level / 255) - mean[c]) / std[c], computed in float64 and rounded once."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    return torch.from_numpy(((levels[None, :] - np.asarray(mean)[:, None]) / np.asarray(std)[:, None])
                            .astype(np.float32))


def normalize_pixels(pixels: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., C, H, W) -> their float32 inputs: one gather through the (C, 256) table `levels`."""
    channels = levels.shape[0]
    channel_offsets = torch.arange(0, channels * 256, 256, device=pixels.device).view(channels, 1, 1)
    return levels.view(-1)[pixels.long() + channel_offsets]


@dataclass
class DatasetTensors:
    """A dataset's splits: Inputs (see there; a float tensor given is taken as inputs) and int64 labels.
    Shared when cached, so never modify in place. `train_x` and `test_x` are whole splits as floats."""
    info: DatasetInfo
    train_inputs: Inputs
    train_y: torch.Tensor
    test_inputs: Inputs
    test_y: torch.Tensor

    def __post_init__(self):
        self.train_inputs, self.test_inputs = as_inputs(self.train_inputs), as_inputs(self.test_inputs)

    @property
    def train_x(self) -> torch.Tensor:
        return self.train_inputs.rows()

    @property
    def test_x(self) -> torch.Tensor:
        return self.test_inputs.rows()

    def to(self, device: torch.device | str) -> DatasetTensors:
        return replace(self, train_inputs=self.train_inputs.to(device), train_y=self.train_y.to(device),
                       test_inputs=self.test_inputs.to(device), test_y=self.test_y.to(device))


def _images(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> Inputs:
    """uint8 (N, C, H, W) pixels kept as they are, normalized per batch by the table of `mean` and `std`."""
    stored = np.require(pixels, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])  # copies only read-only or strided arrays
    return Inputs(torch.from_numpy(stored), level_table(mean, std))


def _torchvision_datasets():
    """torchvision.datasets, imported when an image file is first read: importing torchvision takes seconds
    (it loads its model zoo), which the CLI's list, the web pages and synthetic runs need not pay."""
    import torchvision.datasets
    return torchvision.datasets


def _verified_class(source: dataset_sources.DatasetSource, overrides: dict):
    """torchvision's dataset class of `source`, checking the table's MD5s (the same as torchvision's own
    for the real table; a test's table names its own small files). Keeps the name: MNIST's folder is it."""
    base = getattr(_torchvision_datasets(), source.torchvision_class)
    return type(base.__name__, (base,), overrides)


def _check_labels(labels: np.ndarray, num_classes: int, path: Path) -> torch.Tensor:
    if labels.size and int(labels.max()) >= num_classes:
        raise DatasetError(f"The label file {path} contains the label {int(labels.max())}, "
                           f"but this dataset has only the classes 0 to {num_classes - 1}; "
                           "the file is not the right one.")
    return torch.from_numpy(labels.astype(np.int64))


class DatasetEntry:
    """One dataset of the registry: its description, where its files live and how to load them."""

    info: DatasetInfo

    def is_installed(self, data_dir: Path | str | None = None) -> bool:
        raise NotImplementedError

    def location_hint(self, data_dir: Path | str | None = None) -> str:
        """The directory in use when installed, else the directories searched for the files."""
        raise NotImplementedError

    def load(self, data_dir: Path | str | None = None) -> DatasetTensors:
        raise NotImplementedError


class _FileDatasetEntry(DatasetEntry):
    """A dataset read from a fixed set of files, found in the first candidate directory that holds them all."""

    def __init__(self, info: DatasetInfo, file_names: tuple[str, ...], subdirs: tuple[str, ...],
                 system_dirs: tuple[Path, ...] = (), install_advice: str = ""):
        self.info = info
        self.file_names = file_names
        self.subdirs = subdirs  # relative to the data directory, in search order
        self.system_dirs = system_dirs  # absolute, searched after the data directory
        self.install_advice = install_advice

    def candidate_dirs(self, data_dir: Path | str | None = None) -> list[Path]:
        root = _resolve_data_dir(data_dir)
        return [root / subdir for subdir in self.subdirs] + list(self.system_dirs)

    def _find_file(self, directory: Path, name: str) -> Path | None:
        """The file `name` in `directory`, or None."""
        path = directory / name
        return path if path.is_file() else None

    def _find_files(self, data_dir) -> dict[str, Path] | None:
        for directory in self.candidate_dirs(data_dir):
            found = {name: self._find_file(directory, name) for name in self.file_names}
            if all(found.values()):
                return found
        return None

    def is_installed(self, data_dir=None) -> bool:
        return self._find_files(data_dir) is not None

    def location_hint(self, data_dir=None) -> str:
        found = self._find_files(data_dir)
        if found is not None:
            return str(next(iter(found.values())).parent)
        return _join_alternatives([str(directory) for directory in self.candidate_dirs(data_dir)])

    def _file_list(self) -> str:
        return ", ".join(self.file_names)

    def install_instructions(self, data_dir=None) -> str:
        """Where to put which files by hand (and how a server with internet access fetches them)."""
        candidates = self.candidate_dirs(data_dir)
        searched = "" if len(candidates) == 1 else f" (also searched: {', '.join(str(d) for d in candidates[1:])})"
        advice = f" {self.install_advice}" if self.install_advice else ""
        return f"put the files {self._file_list()} in {candidates[0]}{searched}.{advice}"

    def download_hint(self) -> str:
        if self.info.name not in dataset_sources.SOURCES:
            return ""
        return (f" On a server with internet access (or a mirror), `python -m trainer download {self.info.name}` "
                "fetches and verifies them.")

    def _torchvision_dir(self, data_dir) -> Path | None:
        """The folder torchvision reads this dataset from in the data directory (None: no torchvision source)."""
        source = dataset_sources.SOURCES.get(self.info.name)
        if source is None:
            return None
        inner = Path(next(iter(source.verified))).parent if source.verified else Path(".")
        return source.path_of(_resolve_data_dir(data_dir), str(inner))

    def _missing_error(self, data_dir) -> DatasetError:
        candidates = self.candidate_dirs(data_dir)
        partial = ""
        for directory in candidates:
            present = [name for name in self.file_names if self._find_file(directory, name)]
            if present:
                missing = [name for name in self.file_names if name not in present]
                verb = "is" if len(missing) == 1 else "are"
                partial = f" {directory} has only some of them: {', '.join(missing)} {verb} missing."
                break
        return DatasetError(
            f"The dataset '{self.info.name}' ({self.info.title}) is not installed: "
            f"{self.install_instructions(data_dir)}{partial}{self.download_hint()} To use another data directory, "
            f"set the environment variable {DATA_DIR_ENV}.")

    def load(self, data_dir=None) -> DatasetTensors:
        found = self._find_files(data_dir)
        if found is None:
            raise self._missing_error(data_dir)
        directory = next(iter(found.values())).parent
        if directory == self._torchvision_dir(data_dir) and self._torchvision_reads(found):
            try:
                return self._load_with_torchvision(_resolve_data_dir(data_dir), found)
            except (DatasetError, RuntimeError, OSError, ValueError, TypeError, AssertionError):
                pass  # files torchvision refuses (unverified, damaged): the reader below says what is wrong
        return self._load_files(found)

    def _torchvision_reads(self, files: dict[str, Path]) -> bool:
        """Whether torchvision can read these files of its layout (e.g. not gzipped ones)."""
        return True

    def _load_with_torchvision(self, root: Path, files: dict[str, Path]) -> DatasetTensors:
        raise DatasetError("no torchvision reader")

    def _load_files(self, files: dict[str, Path]) -> DatasetTensors:
        raise NotImplementedError


def _join_alternatives(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


# ---- IDX (MNIST, Fashion-MNIST) -----------------------------------------------------------

_IDX_UNSIGNED_BYTE = 0x08


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in .gz."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"Cannot read the file {path}: {error.strerror or error}.") from error
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as error:
        raise DatasetError(f"The file {path} is truncated: the gzip data ends early. "
                           f"Replace it with a complete copy.") from error
    except (OSError, zlib.error) as error:
        raise DatasetError(f"The file {path} is not valid gzip data ({error}). "
                           "Replace it with a complete copy.") from error


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format) as a uint8 array of its declared shape."""
    data = _read_bytes(path)
    expected_magic = (_IDX_UNSIGNED_BYTE << 8) | expected_dims
    if len(data) < 4:
        raise DatasetError(f"The file {path} is too short ({len(data)} bytes) to be an IDX file.")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DatasetError(f"The file {path} has the magic number 0x{magic:08X}, but an IDX file of unsigned bytes "
                           f"with {expected_dims} dimension{'s' if expected_dims > 1 else ''} starts with "
                           f"0x{expected_magic:08X}; it is not the expected file.")
    header_size = 4 + 4 * expected_dims
    if len(data) < header_size:
        raise DatasetError(f"The file {path} is truncated: its {len(data)} bytes do not hold "
                           f"the {header_size}-byte IDX header.")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(expected_dims))
    expected_size = header_size + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected_size:
        problem = "is truncated" if len(data) < expected_size else "has extra data at the end"
        raise DatasetError(f"The file {path} {problem}: its header declares shape {shape} ({expected_size} bytes) "
                           f"but it holds {len(data)} bytes.")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


class IdxDatasetEntry(_FileDatasetEntry):
    """MNIST-format datasets: four IDX files, each either raw or gzipped (name + '.gz')."""

    IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

    def __init__(self, info: DatasetInfo, mean: float, std: float, subdirs: tuple[str, ...],
                 system_dirs: tuple[Path, ...] = (), install_advice: str = ""):
        super().__init__(info, self.IDX_FILES, subdirs, system_dirs, install_advice)
        self.mean = mean
        self.std = std

    def _find_file(self, directory: Path, name: str) -> Path | None:
        for candidate in (directory / name, directory / f"{name}.gz"):  # uncompressed first: faster to read
            if candidate.is_file():
                return candidate
        return None

    def _file_list(self) -> str:
        return ", ".join(f"{name}.gz" for name in self.file_names) + " (or the same names uncompressed, without .gz)"

    def _torchvision_reads(self, files: dict[str, Path]) -> bool:
        return not any(path.suffix == ".gz" for path in files.values())  # torchvision reads them uncompressed

    def _load_with_torchvision(self, root: Path, files: dict[str, Path]) -> DatasetTensors:
        source = dataset_sources.SOURCES[self.info.name]
        reader = _verified_class(source, {})  # torchvision checks the .gz files' MD5 only when it downloads
        splits = []
        for train, prefix in ((True, "train"), (False, "t10k")):
            loaded = reader(str(root), train=train)
            splits.append(self._tensors(loaded.data.numpy(), loaded.targets.numpy(),
                                        files[f"{prefix}-images-idx3-ubyte"], files[f"{prefix}-labels-idx1-ubyte"],
                                        "training" if train else "test"))
        (train_x, train_y), (test_x, test_y) = splits
        return DatasetTensors(self.info, train_x, train_y, test_x, test_y)

    def _load_split(self, images_path: Path, labels_path: Path, split: str) -> tuple[Inputs, torch.Tensor]:
        return self._tensors(read_idx(images_path, 3), read_idx(labels_path, 1), images_path, labels_path, split)

    def _tensors(self, images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path,
                 split: str) -> tuple[Inputs, torch.Tensor]:
        _, height, width = self.info.input_shape
        if images.shape[1:] != (height, width):
            raise DatasetError(f"The file {images_path} holds images of {images.shape[1]}x{images.shape[2]} pixels, "
                               f"but {self.info.title} images are {height}x{width}; it is not the right file.")
        if len(labels) != len(images):
            raise DatasetError(f"The label file {labels_path} holds {len(labels)} labels but the image file "
                               f"{images_path} holds {len(images)} images; the {split} files do not belong together.")
        x = _images(images[:, None], (self.mean,), (self.std,))
        return x, _check_labels(labels, self.info.num_classes, labels_path)

    def _load_files(self, files: dict[str, Path]) -> DatasetTensors:
        train_x, train_y = self._load_split(files["train-images-idx3-ubyte"], files["train-labels-idx1-ubyte"],
                                            "training")
        test_x, test_y = self._load_split(files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"], "test")
        return DatasetTensors(self.info, train_x, train_y, test_x, test_y)


# ---- CIFAR-10 (python pickle batches) -----------------------------------------------------

# The only globals a CIFAR batch pickle refers to (numpy arrays, from Python 2 or 3);
# anything else is refused, so a planted pickle cannot run code.
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR batch never contains")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, label_key: str = "labels",
                     kind: str = "CIFAR-10 batch") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch file -> (uint8 images (N, 3, 32, 32), int64 labels (N,)). CIFAR-10's batches
    keep their labels under 'labels', CIFAR-100's files under 'fine_labels' (and 'coarse_labels')."""
    try:
        with open(path, "rb") as handle:
            batch = _CifarUnpickler(handle, encoding="latin1").load()  # latin1: batches pickled by Python 2
    except OSError as error:
        raise DatasetError(f"Cannot read the file {path}: {error.strerror or error}.") from error
    except Exception as error:  # pickle raises many types on garbage
        raise DatasetError(f"The file {path} is not a readable {kind}: unpickling failed "
                           f"({type(error).__name__}: {error}). Replace it with a complete copy.") from error
    if not isinstance(batch, dict):
        raise DatasetError(f"The file {path} is not a {kind}: it holds a {type(batch).__name__}, not a dict.")
    # Python 2 pickles load with str keys under latin1, Python 3 ones keep bytes keys.
    fields = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in batch.items()}
    missing = [key for key in ("data", label_key) if key not in fields]
    if missing:
        raise DatasetError(f"The file {path} is not a {kind}: it lacks the key{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(repr(key.encode()) for key in missing)}.")
    try:
        data = np.asarray(fields["data"])
        labels = np.asarray(fields[label_key])
    except Exception as error:
        raise DatasetError(f"The file {path} has unreadable 'data' or '{label_key}' ({error}).") from error
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"The file {path} has 'data' of shape {data.shape} and type {data.dtype}, "
                           f"but a {kind} holds uint8 rows of 3072 values (N, 3072).")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise DatasetError(f"The file {path} has '{label_key}' that are not a list of non-negative integers.")
    if len(labels) != len(data):
        raise DatasetError(f"The file {path} holds {len(labels)} labels for {len(data)} images.")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


class CifarDatasetEntry(_FileDatasetEntry):
    """CIFAR-10 or CIFAR-100, python version: training files and one test file of pickled dicts."""

    def __init__(self, info: DatasetInfo, mean: tuple[float, float, float], std: tuple[float, float, float],
                 subdirs: tuple[str, ...], train_files: tuple[str, ...], test_file: str, label_key: str,
                 archive: str):
        super().__init__(info, train_files + (test_file,), subdirs,
                         install_advice=f"They are the contents of {archive}, extracted.")
        self.mean = mean
        self.std = std
        self.train_files = train_files
        self.test_file = test_file
        self.label_key = label_key

    def _load_batches(self, paths: list[Path]) -> tuple[Inputs, torch.Tensor]:
        kind = f"{self.info.title} {'batch' if len(self.train_files) > 1 else 'file'}"
        batches = [read_cifar_batch(path, self.label_key, kind) for path in paths]
        for (_, labels), path in zip(batches, paths):
            _check_labels(labels, self.info.num_classes, path)
        images = np.concatenate([images for images, _ in batches])
        labels = np.concatenate([labels for _, labels in batches])
        return _images(images, self.mean, self.std), torch.from_numpy(labels)

    def _load_with_torchvision(self, root: Path, files: dict[str, Path]) -> DatasetTensors:
        """torchvision unpickles the files only once each has the table's MD5 (else it raises, and the
        restricted reader above reads them)."""
        source = dataset_sources.SOURCES[self.info.name]
        md5 = {Path(name).name: value for name, value in source.verified.items()}
        meta = dict(getattr(_torchvision_datasets(), source.torchvision_class).meta)  # the class names' file
        reader = _verified_class(source, {
            "train_list": [[name, md5.get(name, "")] for name in self.train_files],
            "test_list": [[self.test_file, md5.get(self.test_file, "")]],
            "meta": {**meta, "md5": md5.get(meta["filename"], "")}})
        splits = []
        for train, path in ((True, files[self.train_files[-1]]), (False, files[self.test_file])):
            loaded = reader(str(root), train=train)
            labels = np.asarray(loaded.targets, dtype=np.int64)
            _check_labels(labels, self.info.num_classes, path)
            pixels = np.ascontiguousarray(loaded.data.transpose(0, 3, 1, 2))  # torchvision's HWC back to CHW
            splits.append((_images(pixels, self.mean, self.std), torch.from_numpy(labels)))
        (train_x, train_y), (test_x, test_y) = splits
        return DatasetTensors(self.info, train_x, train_y, test_x, test_y)

    def _load_files(self, files: dict[str, Path]) -> DatasetTensors:
        train_x, train_y = self._load_batches([files[name] for name in self.train_files])
        test_x, test_y = self._load_batches([files[self.test_file]])
        return DatasetTensors(self.info, train_x, train_y, test_x, test_y)


# ---- SVHN (MATLAB .mat files, read by torchvision with scipy) ------------------------------

class SvhnDatasetEntry(_FileDatasetEntry):
    """The Street View House Numbers' cropped digits: train_32x32.mat and test_32x32.mat, read by
    torchvision once they have the table's MD5 (label 10 stands for the digit 0; torchvision maps it)."""

    SPLITS = {"train": "train_32x32.mat", "test": "test_32x32.mat"}

    def __init__(self, info: DatasetInfo, mean: tuple[float, float, float], std: tuple[float, float, float],
                 subdirs: tuple[str, ...]):
        super().__init__(info, tuple(self.SPLITS.values()), subdirs)
        self.mean = mean
        self.std = std

    def load(self, data_dir=None) -> DatasetTensors:
        found = self._find_files(data_dir)
        if found is None:
            raise self._missing_error(data_dir)
        return self._load_files(found)

    def _load_files(self, files: dict[str, Path]) -> DatasetTensors:
        source = dataset_sources.SOURCES[self.info.name]
        split_list = {split: [source.base_url + name, name, source.verified.get(name, "")]
                      for split, name in self.SPLITS.items()}
        reader = _verified_class(source, {"split_list": split_list})
        splits = []
        for split, name in self.SPLITS.items():
            path = files[name]
            try:
                loaded = reader(str(path.parent), split=split)
            except Exception as error:  # torchvision's "corrupted" (MD5), or scipy's many types on a damaged file
                expected, got = split_list[split][2], dataset_sources.file_md5(path)
                if got != expected:
                    raise DatasetError(f"The file {path} has the MD5 checksum {got}, but SVHN's {name} has "
                                       f"{expected}: it is damaged or not the right file. Replace it with a complete "
                                       f"copy (`python -m trainer download {self.info.name}` fetches one).") from None
                raise DatasetError(f"The file {path} is not readable as SVHN's {name} "
                                   f"({type(error).__name__}: {error}). Replace it with a complete copy.") from error
            if loaded.data.shape[1:] != (3, 32, 32):
                raise DatasetError(f"The file {path} holds images of shape {loaded.data.shape[1:]}, "
                                   "but SVHN's are 3x32x32; it is not the right file.")
            labels = _check_labels(np.asarray(loaded.labels, dtype=np.int64), self.info.num_classes, path)
            splits.append((_images(loaded.data, self.mean, self.std), labels))
        (train_x, train_y), (test_x, test_y) = splits
        return DatasetTensors(self.info, train_x, train_y, test_x, test_y)


# ---- synthetic (in memory) ----------------------------------------------------------------

class SyntheticDatasetEntry(DatasetEntry):
    """MNIST-shaped images of ten stroke-drawn class prototypes, shifted, blended with a
    distractor class and noised: an MLP learns it to ~90% in a few hundred steps. Generated as
    floats and kept as floats (12 MB; no pixel levels to store)."""

    PROTOTYPE_SEED = 1234
    TRAIN_SEED = 1
    TEST_SEED = 2
    SIZE = 28
    MAX_SHIFT = 3  # pixels, each direction
    DISTRACTOR_MAX_WEIGHT = 0.5
    NOISE_STD = 0.35

    def __init__(self, info: DatasetInfo):
        self.info = info

    def is_installed(self, data_dir=None) -> bool:
        return True

    def location_hint(self, data_dir=None) -> str:
        return "generated in memory (no files needed)"

    def _prototypes(self) -> np.ndarray:
        """One 28x28 image per class: the union of three soft line strokes."""
        rng = np.random.default_rng(self.PROTOTYPE_SEED)
        yy, xx = np.mgrid[0:self.SIZE, 0:self.SIZE].astype(np.float32)
        prototypes = np.zeros((self.info.num_classes, self.SIZE, self.SIZE), np.float32)
        for label in range(self.info.num_classes):
            for _ in range(3):
                start, end = rng.uniform(6, 22, 2), rng.uniform(6, 22, 2)
                direction = end - start
                projection = (yy - start[0]) * direction[0] + (xx - start[1]) * direction[1]
                along = projection / max(direction @ direction, 1e-6)
                along = np.clip(along, 0.0, 1.0)
                distance2 = (yy - start[0] - along * direction[0]) ** 2 + (xx - start[1] - along * direction[1]) ** 2
                prototypes[label] = np.maximum(prototypes[label], np.exp(-distance2 / (2 * 1.5 ** 2)))
        return prototypes

    def _generate(self, prototypes: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` images in [0, 1] with exactly balanced labels."""
        rng = np.random.default_rng(seed)
        classes = self.info.num_classes
        labels = rng.permutation(np.arange(count) % classes)
        distractors = (labels + rng.integers(1, classes, count)) % classes
        distractor_weight = rng.uniform(0.0, self.DISTRACTOR_MAX_WEIGHT, count).astype(np.float32)
        amplitude = rng.uniform(0.7, 1.0, count).astype(np.float32)
        images = (amplitude[:, None, None] * prototypes[labels]
                  + distractor_weight[:, None, None] * prototypes[distractors])
        shift = self.MAX_SHIFT
        padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift)))
        rows = rng.integers(0, 2 * shift + 1, count)[:, None] + np.arange(self.SIZE)
        cols = rng.integers(0, 2 * shift + 1, count)[:, None] + np.arange(self.SIZE)
        images = padded[np.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]
        images += rng.normal(0.0, self.NOISE_STD, images.shape).astype(np.float32)
        return np.clip(images, 0.0, 1.0)[:, None], labels.astype(np.int64)

    def load(self, data_dir=None) -> DatasetTensors:
        prototypes = self._prototypes()
        train_images, train_labels = self._generate(prototypes, self.info.train_size, self.TRAIN_SEED)
        test_images, test_labels = self._generate(prototypes, self.info.test_size, self.TEST_SEED)
        mean, std = float(train_images.mean()), float(train_images.std())
        return DatasetTensors(self.info,
                              torch.from_numpy((train_images - mean) / std), torch.from_numpy(train_labels),
                              torch.from_numpy((test_images - mean) / std), torch.from_numpy(test_labels))


# ---- registry -----------------------------------------------------------------------------

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

DATASETS: dict[str, DatasetEntry] = {
    "fashion_mnist": IdxDatasetEntry(
        DatasetInfo("fashion_mnist", "Fashion-MNIST", (1, 28, 28), 10, 60000, 10000, False,
                    "Zalando's 28x28 grayscale photos of clothing in 10 classes; harder than MNIST, same format."),
        mean=0.2860, std=0.3530, subdirs=("FashionMNIST/raw", "fashion_mnist"),
        system_dirs=(FASHION_MNIST_SYSTEM_DIR,),
        install_advice="On Debian or Ubuntu, `apt-get install dataset-fashion-mnist` installs them in "
                       f"{FASHION_MNIST_SYSTEM_DIR}."),
    "mnist": IdxDatasetEntry(
        DatasetInfo("mnist", "MNIST", (1, 28, 28), 10, 60000, 10000, False,
                    "28x28 grayscale handwritten digits 0-9; the dataset of the original LeNet lottery tickets."),
        mean=0.1307, std=0.3081, subdirs=("MNIST/raw", "mnist")),
    "cifar10": CifarDatasetEntry(
        DatasetInfo("cifar10", "CIFAR-10", (3, 32, 32), 10, 50000, 10000, True,
                    "32x32 colour photos in 10 classes; trained with random crops and flips."),
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        subdirs=("cifar-10-batches-py", "cifar10/cifar-10-batches-py"),
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_file="test_batch", label_key="labels",
        archive="cifar-10-python.tar.gz"),
    "cifar100": CifarDatasetEntry(
        DatasetInfo("cifar100", "CIFAR-100", (3, 32, 32), 100, 50000, 10000, True,
                    "32x32 colour photos in 100 fine classes (CIFAR-10's size and format); crops and flips."),
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        subdirs=("cifar-100-python", "cifar100/cifar-100-python"),
        train_files=("train",), test_file="test", label_key="fine_labels", archive="cifar-100-python.tar.gz"),
    "svhn": SvhnDatasetEntry(
        DatasetInfo("svhn", "SVHN", (3, 32, 32), 10, 73257, 26032, False,
                    "Street View House Numbers: 32x32 colour crops of digits 0-9 (no flips: they change digits)."),
        # Per-channel mean and std of SVHN's training set, as published in DeepCore's SVHN loader
        # (Guo, Zhao & Bai 2022, github.com/PatrickZH/DeepCore, deepcore/datasets/svhn.py).
        mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), subdirs=("", "svhn")),
    "synthetic": SyntheticDatasetEntry(
        DatasetInfo("synthetic", "Synthetic strokes", (1, 28, 28), 10, 3000, 1000, False,
                    "Small generated MNIST-shaped set of noisy, shifted stroke patterns; "
                    "always available, for quick tries and tests.")),
}


# ---- text corpora (language modelling; trainer.corpora) --------------------------------------
LM_MAX_CONTEXT = 256  # tokens a language model of the registry reads at most (its position table's size)
# What the registry says of a corpus that is not installed (its vocabulary is read from the files when it is):
# the published sizes of the WikiText releases (Merity et al. 2017, Table 1).
_PUBLISHED_CORPUS_SIZES = {"wikitext2": (33278, 2088628, 245569), "wikitext103": (267735, 103227021, 245569)}


class CorpusDatasetEntry(DatasetEntry):
    """A text corpus as a dataset: input_shape (LM_MAX_CONTEXT,), num_classes = its vocabulary size, sizes in
    tokens. The numbers come from the corpus itself, read on first use (the embedded one always)."""

    def __init__(self, corpus: corpora.CorpusEntry):
        self.corpus = corpus
        self._info: DatasetInfo | None = None

    @property
    def info(self) -> DatasetInfo:
        if self._info is not None:
            return self._info
        if self.is_installed():
            loaded = corpora.load_corpus(self.corpus.name)
            vocabulary, train, test = len(loaded.vocabulary), loaded.train.numel(), loaded.test.numel()
        else:
            vocabulary, train, test = _PUBLISHED_CORPUS_SIZES[self.corpus.name]
        info = DatasetInfo(self.corpus.name, self.corpus.title, (LM_MAX_CONTEXT,), vocabulary, train, test, False,
                           f"Word-level text ({vocabulary:,} words, {train:,} training tokens); "
                           f"{self.corpus.licence}.", task="language_modeling")
        if self.is_installed():
            self._info = info  # a corpus installed later is read then
        return info

    def is_installed(self, data_dir=None) -> bool:
        return corpora.is_installed(self.corpus.name, data_dir)

    def location_hint(self, data_dir=None) -> str:
        if self.corpus.embedded:
            return "shipped with Python (no files needed)"
        return ", ".join(str(_resolve_data_dir(data_dir) / name) for name in self.corpus.files)

    def load(self, data_dir=None):
        raise DatasetError(f"{self.corpus.title} is a text corpus: trainer.corpora.load_corpus reads it")


for _corpus in corpora.CORPORA.values():
    DATASETS[_corpus.name] = CorpusDatasetEntry(_corpus)


# ---- environments (reinforcement learning; trainer.rl) ---------------------------------------
class EnvironmentDatasetEntry(DatasetEntry):
    """A gymnasium environment as a dataset: input_shape (observation size,), num_classes = its actions; no
    files (gymnasium's classic control is pure Python), no fixed training set."""

    def __init__(self, environment: rl.EnvironmentEntry):
        self.environment = environment
        self.info = DatasetInfo(environment.name, environment.title, (environment.observation_size,),
                                environment.action_count, 0, 0, False,
                                f"gymnasium {environment.gym_id}: {environment.observation_size} observations, "
                                f"{environment.action_count} actions, episodes of at most "
                                f"{environment.max_episode_steps} steps", task="reinforcement_learning")

    def is_installed(self, data_dir=None) -> bool:
        return True

    def location_hint(self, data_dir=None) -> str:
        return "simulated by gymnasium (no files needed)"

    def load(self, data_dir=None):
        raise DatasetError(f"{self.info.title} is an environment: trainer.rl simulates it")


for _environment in rl.ENVIRONMENTS.values():
    DATASETS[_environment.name] = EnvironmentDatasetEntry(_environment)


def get_entry(name: str) -> DatasetEntry:
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise DatasetError(f"There is no dataset named {name!r}; choose one of {', '.join(DATASETS)}.") from None


_cache: dict[tuple[str, str | None, str], DatasetTensors] = {}
_cache_lock = threading.Lock()


def load_dataset(name: str, data_dir: Path | str | None = None, device: torch.device | str = "cpu") -> DatasetTensors:
    """The dataset's tensors on `device`, loaded once per process for each (name, data directory, device)."""
    entry = get_entry(name)
    directory = None if isinstance(entry, SyntheticDatasetEntry) else str(_resolve_data_dir(data_dir).resolve())
    device_name = str(torch.device(device))
    with _cache_lock:  # one lock: concurrent requests for one dataset load it once
        key = (name, directory, device_name)
        if key not in _cache:
            cpu_key = (name, directory, "cpu")
            if cpu_key not in _cache:
                _cache[cpu_key] = entry.load(data_dir)
            if key != cpu_key:
                _cache[key] = _cache[cpu_key].to(device_name)
        return _cache[key]


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def validation_split_rows(total: int, validation_size: int, device: torch.device | str = "cpu",
                          title: str = "the dataset") -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, validation rows) of a training set of `total` examples: a hold-out fixed by the
    training-set size alone, shared by all runs; each in ascending order."""
    if not 0 <= validation_size < total:
        raise DatasetError(f"The validation size {validation_size} must be at least 0 and smaller than the "
                           f"{total} training examples of {title}.")
    order = torch.from_numpy(np.random.default_rng(_VALIDATION_SPLIT_SEED).permutation(total))
    return order[validation_size:].sort().values.to(device), order[:validation_size].sort().values.to(device)


def split_validation(tensors: DatasetTensors, validation_size: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, val_x, val_y) as stored (uint8 pixels of image files), copied out of the set:
    validation_split_rows' hold-out."""
    train_index, validation_index = validation_split_rows(len(tensors.train_y), validation_size,
                                                          tensors.train_y.device, tensors.info.title)
    stored = tensors.train_inputs.stored
    labels = tensors.train_y
    return stored[train_index], labels[train_index], stored[validation_index], labels[validation_index]


def run_splits(tensors: DatasetTensors, validation_size: int, device: torch.device
               ) -> tuple[Inputs, torch.Tensor, Inputs, torch.Tensor, Inputs, torch.Tensor]:
    """(train, train_y, val, val_y, test, test_y) on `device`: validation_split_rows' hold-out. The inputs index
    the loaded set's stored tensor (on `device`, no copy of it); the labels are the split's own."""
    train_index, validation_index = validation_split_rows(len(tensors.train_y), validation_size,
                                                          tensors.train_y.device, tensors.info.title)
    whole = tensors.train_inputs
    labels = tensors.train_y
    train = Inputs(whole.stored, whole.levels, whole._stored_rows(train_index)).to(device)
    validation = Inputs(whole.stored, whole.levels, whole._stored_rows(validation_index)).to(device)
    return (train, labels[train_index].to(device), validation, labels[validation_index].to(device),
            tensors.test_inputs.to(device), tensors.test_y.to(device))


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crop + random horizontal flip of each image of (N, C, H, W) `x`.

    Padding is 0 in the (normalized) input space. The randomness comes from `generator`, which
    must live on x's device: crop offsets first, then flips. All images are cropped and flipped
    by one gather over the flattened padded images, no per-image loop.
    """
    count, channels, height, width = x.shape
    pad = _AUGMENT_PADDING
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad)).reshape(count, channels, -1)
    offset_y = torch.randint(0, 2 * pad + 1, (count, 1), generator=generator, device=x.device)
    offset_x = torch.randint(0, 2 * pad + 1, (count, 1), generator=generator, device=x.device)
    flip = torch.randint(0, 2, (count, 1), generator=generator, device=x.device).bool()
    rows = offset_y + torch.arange(height, device=x.device)  # (N, H)
    columns = torch.arange(width, device=x.device).expand(count, width)
    columns = offset_x + torch.where(flip, columns.flip(1), columns)  # (N, W), reversed for flipped images
    source = rows[:, :, None] * (width + 2 * pad) + columns[:, None, :]  # (N, H, W) positions in the padded image
    source = source.view(count, 1, height * width).expand(count, channels, height * width)
    return padded.gather(2, source).view(count, channels, height, width)
