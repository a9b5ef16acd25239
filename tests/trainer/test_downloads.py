"""Downloads (trainer.downloads) from a local HTTP server on 127.0.0.1 serving small files in the real formats,
and loading what was fetched through torchvision (trainer.datasets): a mirror, checksum failures, offline, 404,
files already there, the CLI's exit codes."""
from __future__ import annotations

import shutil
import socket

import numpy as np
import pytest
import torch
import torchvision.datasets

from tests.trainer.dataset_files import IDX_NAMES, serve_folder, write_mirror
from trainer import dataset_sources, datasets, downloads
from trainer.cli.main import main
from trainer.datasets import DATASETS, DatasetError
from trainer.downloads import DownloadError, download, read_status

NORMALIZATION = {name: (DATASETS[name].mean, DATASETS[name].std) for name in dataset_sources.SOURCES}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """(base URL, sources table of the served files, expected arrays, served folder, requested paths)."""
    root = tmp_path_factory.mktemp("mirror")
    sources, expected = write_mirror(root)
    with serve_folder(root) as (base, requested):
        yield base, sources, expected, root, requested


@pytest.fixture
def served_table(mirror, monkeypatch):
    """The served files' checksums as the table trainer.datasets hands to torchvision, too."""
    monkeypatch.setattr(dataset_sources, "SOURCES", mirror[1])
    return mirror


def expected_normalized(pixels: np.ndarray, name: str) -> torch.Tensor:
    mean, std = NORMALIZATION[name]
    mean = torch.tensor(np.atleast_1d(mean), dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(np.atleast_1d(std), dtype=torch.float64).view(1, -1, 1, 1)
    return ((torch.from_numpy(pixels.astype(np.float64)) / 255.0 - mean) / std).float()


def read_through_torchvision(monkeypatch) -> list[str]:
    """The torchvision classes the loaders go through, recorded."""
    used = []
    real = datasets._verified_class
    monkeypatch.setattr(datasets, "_verified_class",
                        lambda source, overrides: used.append(source.torchvision_class) or real(source, overrides))
    return used


def test_the_table_holds_torchvisions_own_urls_and_checksums():
    vision = torchvision.datasets
    for name, cls in (("mnist", vision.MNIST), ("fashion_mnist", vision.FashionMNIST)):
        source = dataset_sources.SOURCES[name]
        assert [(f.name, f.md5) for f in source.files] == [tuple(resource) for resource in cls.resources]
        assert source.base_url in cls.mirrors and source.folder == f"{cls.__name__}/raw"
    for name, cls in (("cifar10", vision.CIFAR10), ("cifar100", vision.CIFAR100)):
        source = dataset_sources.SOURCES[name]
        assert [(f.name, f.md5, f.extracts_to) for f in source.files] == [(cls.filename, cls.tgz_md5, cls.base_folder)]
        assert source.base_url + cls.filename == cls.url
        assert source.verified == {f"{cls.base_folder}/{file}": md5 for file, md5 in
                                   cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]}
    svhn = dataset_sources.SOURCES["svhn"]
    for remote, split in zip(svhn.files, ("train", "test")):
        url, file_name, md5 = vision.SVHN.split_list[split]
        assert (svhn.base_url + remote.name, remote.name, remote.md5) == (url, file_name, md5)
        assert svhn.verified[remote.name] == md5


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_download_through_the_mirror_loads_through_torchvision(served_table, tmp_path, monkeypatch, name):
    base, _, expected, _, _ = served_table
    seen = []

    done = download(name, tmp_path, mirror=base, callback=seen.append)

    raw = tmp_path / dataset_sources.SOURCES[name].folder
    assert [entry["file"] for entry in done] == [f"{file}.gz" for file in IDX_NAMES]
    assert all(entry["fetched"] and entry["url"] == f"{base}/{name}/{entry['file']}" for entry in done)
    assert sorted(path.name for path in raw.iterdir()) == sorted(IDX_NAMES + tuple(f"{f}.gz" for f in IDX_NAMES))
    assert [e["type"] for e in seen if e["type"] != "progress"] == ["fetching", "fetched", "extracted"] * 4
    assert read_status(name, tmp_path)["state"] == downloads.FINISHED
    used = read_through_torchvision(monkeypatch)
    monkeypatch.setattr(DATASETS[name], "system_dirs", ())

    tensors = DATASETS[name].load(tmp_path)

    assert used == [dataset_sources.SOURCES[name].torchvision_class]
    train_pixels, train_labels, test_pixels, test_labels = expected[name]
    assert tensors.train_x.shape == (12, 1, 28, 28) and tensors.test_x.shape == (5, 1, 28, 28)
    assert tensors.train_y.tolist() == train_labels.tolist() and tensors.test_y.tolist() == test_labels.tolist()
    torch.testing.assert_close(tensors.train_x, expected_normalized(train_pixels, name))
    # Bit for bit what the project's own reader makes of the same (gzipped) files in the old layout.
    old_layout = tmp_path / "old"
    shutil.copytree(raw, old_layout / name, ignore=shutil.ignore_patterns("*-ubyte"))
    own = DATASETS[name].load(old_layout)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(tensors, field), getattr(own, field)), field
    assert used == [dataset_sources.SOURCES[name].torchvision_class]  # the gzipped files were not torchvision's


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_download_extracts_the_archive_and_torchvision_reads_the_verified_batches(served_table, tmp_path,
                                                                                        monkeypatch, name, classes):
    base, sources, expected, _, _ = served_table
    download(name, tmp_path, mirror=base)
    folder = tmp_path / sources[name].files[0].extracts_to
    assert folder.is_dir() and not list(tmp_path.glob(".*extract*")) and not list(tmp_path.glob("*.part"))
    used = read_through_torchvision(monkeypatch)

    tensors = DATASETS[name].load(tmp_path)

    assert used == [sources[name].torchvision_class] and tensors.info.num_classes == classes
    train_pixels, train_labels, test_pixels, test_labels = expected[name]
    assert tensors.train_x.shape == train_pixels.shape and tensors.train_x.dtype == torch.float32
    assert tensors.train_y.tolist() == train_labels.tolist() and tensors.test_y.tolist() == test_labels.tolist()
    torch.testing.assert_close(tensors.test_x, expected_normalized(test_pixels, name))
    # With the real table these batches are not torchvision's files: the restricted reader reads them, identically.
    monkeypatch.setattr(dataset_sources, "SOURCES", {**sources, name: dataset_sources.DatasetSource(
        **{**sources[name].__dict__, "verified": {}})})
    own = DATASETS[name].load(tmp_path)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(tensors, field), getattr(own, field)), field


def test_svhn_download_loads_digits_with_zero_for_label_ten(served_table, tmp_path):
    base, _, expected, _, _ = served_table
    assert not DATASETS["svhn"].is_installed(tmp_path)
    download("svhn", tmp_path, mirror=base)
    assert (tmp_path / "train_32x32.mat").is_file() and (tmp_path / "test_32x32.mat").is_file()

    tensors = DATASETS["svhn"].load(tmp_path)

    train_pixels, train_labels, test_pixels, test_labels = expected["svhn"]
    assert tensors.info.input_shape == (3, 32, 32) and tensors.info.num_classes == 10
    assert tensors.train_x.shape == (7, 3, 32, 32) and tensors.test_x.shape == (4, 3, 32, 32)
    assert tensors.train_y.tolist() == train_labels.tolist() and 0 in tensors.train_y.tolist()
    torch.testing.assert_close(tensors.train_x, expected_normalized(train_pixels, "svhn"))
    torch.testing.assert_close(tensors.test_x, expected_normalized(test_pixels, "svhn"))


def test_a_svhn_file_without_the_known_checksum_is_refused_with_both_checksums(mirror, tmp_path):
    _, sources, _, root, _ = mirror
    shutil.copy(root / "svhn" / "train_32x32.mat", tmp_path)
    shutil.copy(root / "svhn" / "test_32x32.mat", tmp_path)
    with pytest.raises(DatasetError) as caught:
        DATASETS["svhn"].load(tmp_path)  # the real table: these are not SVHN's files
    message = str(caught.value)
    assert str(tmp_path / "train_32x32.mat") in message
    assert dataset_sources.SOURCES["svhn"].files[0].md5 in message and sources["svhn"].files[0].md5 in message
    assert "python -m trainer download svhn" in message


def test_a_corrupt_download_keeps_nothing_and_names_file_url_and_checksums(mirror, tmp_path):
    base, sources, _, root, _ = mirror
    corrupt = root / "corrupt" / "mnist"
    corrupt.mkdir(parents=True, exist_ok=True)
    for remote in sources["mnist"].files:
        data = (root / "mnist" / remote.name).read_bytes()
        (corrupt / remote.name).write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))

    with pytest.raises(DownloadError) as caught:
        download("mnist", tmp_path, mirror=f"{base}/corrupt", sources=sources)

    first = sources["mnist"].files[0]
    message = str(caught.value)
    assert first.name in message and first.md5 in message and f"{base}/corrupt/mnist/{first.name}" in message
    assert dataset_sources.file_md5(corrupt / first.name) in message and "Nothing was kept" in message
    raw = tmp_path / "MNIST" / "raw"
    assert list(raw.iterdir()) == [], "neither the file nor its temporary copy is left"
    assert not DATASETS["mnist"].is_installed(tmp_path)
    status = read_status("mnist", tmp_path)
    assert status["state"] == downloads.FAILED and first.md5 in status["message"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_offline_says_which_url_failed_and_how_to_do_without_internet(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(DownloadError) as caught:
        download("cifar10", tmp_path, mirror=url)
    message = str(caught.value)
    assert f"{url}/cifar10/cifar-10-python.tar.gz" in message and "refused" in message
    assert "internet access" in message and "LOTTERYWEB_DATASET_MIRROR" in message
    assert "copy the files by hand" in message and str(tmp_path / "cifar-10-batches-py") in message
    assert list(tmp_path.glob("*.part")) == [] and not DATASETS["cifar10"].is_installed(tmp_path)


def test_http_404_names_the_status_and_the_url(mirror, tmp_path):
    base, sources, _, _, _ = mirror
    with pytest.raises(DownloadError) as caught:
        download("svhn", tmp_path, mirror=f"{base}/elsewhere", sources=sources)
    assert f"{base}/elsewhere/svhn/train_32x32.mat" in str(caught.value) and "HTTP 404" in str(caught.value)
    assert [path.name for path in tmp_path.iterdir()] == [".downloads"]


def test_verified_files_already_there_are_not_fetched_again(mirror, tmp_path):
    base, sources, _, _, requested = mirror
    download("cifar100", tmp_path, mirror=base, sources=sources)
    extracted = tmp_path / "cifar-100-python"
    shutil.rmtree(extracted)
    before = len(requested)

    again = download("cifar100", tmp_path, mirror=base, sources=sources)

    assert len(requested) == before, "nothing was asked of the server"
    assert [entry["fetched"] for entry in again] == [False]
    assert (extracted / "train").is_file(), "the verified archive was extracted again"
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"damaged")
    assert [entry["fetched"] for entry in download("cifar100", tmp_path, mirror=base, sources=sources)] == [True]


def test_missing_dataset_messages_name_the_download_command(tmp_path):
    for name in dataset_sources.SOURCES:
        entry = DATASETS[name]
        if name == "fashion_mnist":
            continue  # may be installed from the Debian package
        with pytest.raises(DatasetError) as caught:
            entry.load(tmp_path)
        assert f"python -m trainer download {name}" in str(caught.value)
        assert "LOTTERYWEB_DATA_DIR" in str(caught.value)
    with pytest.raises(DatasetError) as caught:
        DATASETS["svhn"].load(tmp_path)
    assert "train_32x32.mat, test_32x32.mat" in str(caught.value) and str(tmp_path) in str(caught.value)


def test_cli_download_exit_codes(served_table, tmp_path, capsys):
    base = served_table[0]
    assert main(["download", "mnist", "--data-dir", str(tmp_path), "--mirror", base]) == 0
    out = capsys.readouterr().out
    assert f"fetched {base}/mnist/train-images-idx3-ubyte.gz" in out and "verified" in out
    assert f"MNIST is installed in {tmp_path / 'MNIST' / 'raw'}" in out
    assert main(["download", "mnist", "--data-dir", str(tmp_path), "--mirror", base]) == 0
    assert "already there" in capsys.readouterr().out

    for argv, words in ((["download", "imagenet"], "There is no dataset named 'imagenet'"),
                        (["download", "synthetic"], "cannot be downloaded"),
                        (["download", "svhn", "--mirror", f"http://127.0.0.1:{_closed_port()}"], "internet access"),
                        (["download", "svhn", "--mirror", f"{base}/corrupt-svhn"], "HTTP 404")):
        assert main([*argv, "--data-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and "Traceback" not in err


def test_cli_checksum_failure_exits_2(mirror, tmp_path, monkeypatch, capsys):
    base, sources, _, _, _ = mirror
    wrong = dataset_sources.RemoteFile("train_32x32.mat", "0" * 32)
    monkeypatch.setattr(dataset_sources, "SOURCES", {**sources, "svhn": dataset_sources.DatasetSource(
        **{**sources["svhn"].__dict__, "files": (wrong,)})})
    assert main(["download", "svhn", "--data-dir", str(tmp_path), "--mirror", base]) == 2
    assert "MD5 checksum" in capsys.readouterr().err and not (tmp_path / "train_32x32.mat").exists()
