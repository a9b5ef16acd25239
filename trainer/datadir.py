"""Where datasets live on disk, and the error every dataset loader raises (image sets in trainer.datasets,
text corpora in trainer.corpora): the bottom of the data layer, so both can use it."""
from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "LOTTERYWEB_DATA_DIR"
_REPO_ROOT = Path(__file__).resolve().parent.parent


class DatasetError(Exception):
    """A dataset that cannot be loaded; the message is a complete sentence for the user."""


def default_data_dir() -> Path:
    configured = os.environ.get(DATA_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return _REPO_ROOT / "data"


def resolve_data_dir(data_dir: Path | str | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
