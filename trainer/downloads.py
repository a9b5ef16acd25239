"""Fetching the image datasets of trainer.dataset_sources into torchvision's layout of the data directory:
`python -m trainer download NAME` and the web app's Download button.

Each file comes from torchvision's URL, or from a mirror (`mirror`, or LOTTERYWEB_DATASET_MIRROR), which
serves it as <mirror>/<dataset>/<file name> (MNIST and Fashion-MNIST share file names). A file is
written to a temporary file beside its place, its MD5 checked, and only then renamed into place; an
archive is extracted into a temporary folder, then renamed into place. So nothing half-written or
unverified is ever where a loader looks. A file already in place with the right checksum is not
fetched again.

Every problem (no such dataset, no network, an HTTP error, a checksum mismatch, an unwritable data
directory) raises DownloadError, a DatasetError whose message says what failed and what to do. The
state of a dataset's latest download is kept in <data dir>/.downloads/<name>.json (read by the web app).
"""
from __future__ import annotations

import gzip
import http.client
import json
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

from trainer import dataset_sources, datasets
from trainer.datadir import DatasetError, resolve_data_dir
from trainer.dataset_sources import DatasetSource, RemoteFile, file_md5
from trainer.rundir import write_json_atomically

MIRROR_ENV = "LOTTERYWEB_DATASET_MIRROR"
STATUS_FOLDER = ".downloads"
QUEUED, RUNNING, FINISHED, FAILED = "queued", "running", "finished", "failed"
_CHUNK_BYTES = 1 << 20
_STATUS_INTERVAL_SECONDS = 1.0  # at most one progress write per second

Callback = Callable[[dict], None]


class DownloadError(DatasetError):
    """A download that failed; the message is a complete sentence for the user."""


def default_mirror() -> str | None:
    return os.environ.get(MIRROR_ENV, "").strip() or None


def downloadable(sources: Mapping[str, DatasetSource] | None = None) -> list[str]:
    return list(dataset_sources.SOURCES if sources is None else sources)


def file_url(source: DatasetSource, remote: RemoteFile, mirror: str | None) -> str:
    if mirror:
        return f"{mirror.rstrip('/')}/{source.dataset}/{remote.name}"
    return source.base_url + remote.name


# ---- the status file the web app shows --------------------------------------------------------

def status_path(name: str, data_dir: Path | str | None = None) -> Path:
    return resolve_data_dir(data_dir) / STATUS_FOLDER / f"{name}.json"


def write_status(name: str, data_dir: Path | str | None, state: str, message: str = "", **details) -> None:
    path = status_path(name, data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, {"dataset": name, "state": state, "message": message, "updated": time.time(),
                                 **details})


def read_status(name: str, data_dir: Path | str | None = None) -> dict | None:
    """The latest download's state of `name` ({"state", "message", "file", "bytes", "total", "updated"}), or None."""
    try:
        status = json.loads(status_path(name, data_dir).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) and status.get("state") in (QUEUED, RUNNING, FINISHED, FAILED) \
        else None


# ---- downloading ------------------------------------------------------------------------------

def download(name: str, data_dir: Path | str | None = None, mirror: str | None = None,
             callback: Callback = lambda event: None, sources: Mapping[str, DatasetSource] | None = None,
             timeout_seconds: float = 60.0) -> list[dict]:
    """Fetch, verify and extract dataset `name`'s files; one dict per file: {"file", "path", "url", "fetched"
    (False: already there and verified), "bytes", "md5"}. Events to `callback`: {"type": "fetching" | "progress"
    | "fetched" | "present" | "extracted", "file", ...}."""
    sources = dataset_sources.SOURCES if sources is None else sources
    entry = datasets.get_entry(name)  # an unknown name: the registry's message
    if name not in sources:
        raise DownloadError(f"{entry.info.title} cannot be downloaded: the datasets that can are "
                            f"{', '.join(sources)}.")
    source = sources[name]
    root = resolve_data_dir(data_dir)
    status = _StatusWriter(name, root)
    try:
        status.write(RUNNING, "starting")
        done = [_fetch_and_extract(source, remote, root, mirror, timeout_seconds, entry, callback, status)
                for remote in source.files]
    except DownloadError as error:
        status.write(FAILED, str(error))
        raise
    except OSError as error:  # the data directory itself: not writable, disk full
        problem = DownloadError(f"Cannot write {name}'s files in {root}: {error.strerror or error}. Check that "
                                f"the data directory exists and is writable ({datasets.DATA_DIR_ENV}).")
        status.write(FAILED, str(problem))
        raise problem from error
    status.write(FINISHED, f"{len(done)} file{'s' if len(done) != 1 else ''} verified")
    return done


class _StatusWriter:
    """The status file of one download; progress writes throttled, a status write that fails is not the
    download's failure (a read-only status folder must not stop the CLI)."""

    def __init__(self, name: str, root: Path):
        self.name, self.root, self.last_write = name, root, 0.0

    def write(self, state: str, message: str = "", **details) -> None:
        try:
            write_status(self.name, self.root, state, message, **details)
        except OSError:
            pass
        self.last_write = time.monotonic()

    def progress(self, file: str, size: int, total: int | None) -> None:
        if time.monotonic() - self.last_write >= _STATUS_INTERVAL_SECONDS:
            self.write(RUNNING, f"fetching {file}", file=file, bytes=size, total=total)


def _fetch_and_extract(source: DatasetSource, remote: RemoteFile, root: Path, mirror: str | None,
                       timeout_seconds: float, entry, callback: Callback, status: _StatusWriter) -> dict:
    target = source.path_of(root, remote.name)
    url = file_url(source, remote, mirror)
    fetched = not (target.is_file() and file_md5(target) == remote.md5)
    if fetched:
        callback({"type": "fetching", "file": remote.name, "url": url})
        size = _fetch(url, target, remote.md5, timeout_seconds, entry, root,
                      lambda done, total: (callback({"type": "progress", "file": remote.name, "bytes": done,
                                                     "total": total}),
                                           status.progress(remote.name, done, total)))
        callback({"type": "fetched", "file": remote.name, "url": url, "path": str(target), "bytes": size,
                  "md5": remote.md5})
    else:
        size = target.stat().st_size
        callback({"type": "present", "file": remote.name, "path": str(target), "md5": remote.md5})
    if remote.extracts_to is not None:
        output = target.parent / remote.extracts_to
        if fetched or not output.exists():
            _extract(target, output)
            callback({"type": "extracted", "file": remote.name, "path": str(output)})
    return {"file": remote.name, "path": str(target), "url": url, "fetched": fetched, "bytes": size,
            "md5": remote.md5}


def _fetch(url: str, target: Path, expected_md5: str, timeout_seconds: float, entry, root: Path,
           progress: Callable[[int, int | None], None]) -> int:
    """Stream `url` into a temporary file beside `target`; rename it into place once its MD5 is right."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False)
    temporary = Path(handle.name)
    try:
        try:
            with handle, urllib.request.urlopen(url, timeout=timeout_seconds) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                size = 0
                while chunk := response.read(_CHUNK_BYTES):
                    handle.write(chunk)
                    size += len(chunk)
                    progress(size, total)
        except urllib.error.HTTPError as error:
            raise _network_error(url, f"the server answered HTTP {error.code} ({error.reason})", entry, root) from None
        except urllib.error.URLError as error:
            raise _network_error(url, str(error.reason), entry, root) from None
        except (http.client.HTTPException, TimeoutError, ConnectionError) as error:
            raise _network_error(url, f"the transfer broke off ({type(error).__name__}: {error})", entry,
                                 root) from None
        got = file_md5(temporary)
        if got != expected_md5:
            raise DownloadError(f"The file {target.name} fetched from {url} has the MD5 checksum {got}, but "
                                f"{expected_md5} was expected: the download is damaged or the server sent another "
                                "file. Nothing was kept; try again, or check the mirror's copy.")
        os.replace(temporary, target)
        return size
    finally:
        temporary.unlink(missing_ok=True)


def _network_error(url: str, reason: str, entry, root: Path) -> DownloadError:
    return DownloadError(
        f"Could not fetch {url}: {reason}. Downloading needs a server with internet access, or a mirror that "
        f"holds the files as <mirror>/{entry.info.name}/<file> (--mirror URL, or the setting {MIRROR_ENV}). "
        f"Or copy the files by hand: {entry.install_instructions(root)}")


def _extract(archive: Path, output: Path) -> None:
    """A .gz file into the file `output`, a .tar.gz into the folder `output` (its top folder), each through
    a temporary name beside it, renamed into place at the end."""
    staging = Path(tempfile.mkdtemp(dir=archive.parent, prefix=f".{archive.name}.extract-"))
    try:
        try:
            if tarfile.is_tarfile(archive):
                with tarfile.open(archive) as tar:
                    tar.extractall(staging, filter="data")  # no absolute paths, links out or devices
                extracted = staging / output.name
            else:
                extracted = staging / output.name
                with gzip.open(archive) as packed, open(extracted, "wb") as unpacked:
                    shutil.copyfileobj(packed, unpacked, _CHUNK_BYTES)
        except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as error:  # a disk error is an OSError
            raise DownloadError(f"The archive {archive} could not be extracted ({error}); delete it and "
                                "download again.") from error
        if not extracted.exists():
            raise DownloadError(f"The archive {archive} does not hold {output.name}; it is not the expected file.")
        if output.is_dir():
            shutil.rmtree(output)
        os.replace(extracted, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
