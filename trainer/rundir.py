"""Run directories: where one spec's weights, masks and records live.

    <runs_root>/<model>_<dataset>_<spec hash>/
        spec.json
        theta_init.pt            θ0
        theta_rewind.pt          θk (the weights survivors are reset to)
        rounds/round_003/        mask.pt (bit-packed), final_weights.pt, record.json
        controls/random_reinit/round_003/ ...
        replicates/replicate_01/ the same layout (theta_*.pt, rounds/, controls/) for replicate 1, ...
        stack_size.json          the stack size chosen when the run first trained (kept on resume)
        results.json             assembled from the records

Replicate 0 is the run itself, so a run with one replicate has the layout it always had.

A round counts as done when its record.json exists; it is written last and
atomically, so a crash mid-round leaves that round to be redone and nothing else.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from trainer.events import TICKET
from trainer.pruning import masks
from trainer.spec import ExperimentSpec, SpecError


class RunDirError(ValueError):
    pass


def json_safe(value):
    """NaN and infinities (a diverging round) become null: JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json_atomically(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False))
    os.replace(tmp, path)


def save_tensor_dict_atomically(state: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: Path, spec: ExperimentSpec):
        self.path = Path(path)
        self.spec = spec

    @classmethod
    def create(cls, runs_root: Path, spec: ExperimentSpec) -> RunDir:
        path = Path(runs_root) / spec.run_name()
        path.mkdir(parents=True, exist_ok=True)
        spec_path = path / "spec.json"
        if spec_path.exists():
            stored = ExperimentSpec.from_json(spec_path.read_text())
            if stored.run_hash() != spec.run_hash():
                raise RunDirError(f"{path} holds a different spec; refusing to mix runs")
            # Same run: the new request's branch fields (controls, stack size) replace the stored ones.
        text = spec.to_json()
        if not spec_path.exists() or spec_path.read_text() != text:  # the workers of one run's pieces only read it
            spec_path.write_text(text)
        return cls(path, spec)

    @classmethod
    def open(cls, path: Path) -> RunDir:
        path = Path(path)
        spec_path = path / "spec.json"
        if not spec_path.is_file():
            raise RunDirError(f"{path} is not a run directory (no spec.json in it)")
        try:
            spec = ExperimentSpec.from_json(spec_path.read_text())
        except SpecError as error:
            raise RunDirError(f"{spec_path} is not a valid spec: {error}") from None
        return cls(path, spec)

    def replicate(self, index: int) -> RunDir:
        """The run directory view of replicate `index` (0 is this directory itself)."""
        if index == 0:
            return self
        return RunDir(self.path / "replicates" / f"replicate_{index:02d}", self.spec)

    # ---- paths ------------------------------------------------------------------------
    @property
    def theta_init_path(self) -> Path:
        return self.path / "theta_init.pt"

    @property
    def theta_rewind_path(self) -> Path:
        return self.path / "theta_rewind.pt"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def stack_size_path(self) -> Path:
        return self.path / "stack_size.json"

    def round_path(self, round_index: int, network: str = TICKET) -> Path:
        base = self.path / "rounds" if network == TICKET else self.path / "controls" / network
        return base / f"round_{round_index:03d}"

    # ---- reading and writing ----------------------------------------------------------
    def load_state(self, path: Path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=True)

    def record(self, round_index: int, network: str = TICKET) -> dict | None:
        path = self.round_path(round_index, network) / "record.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def mask(self, round_index: int, network: str = TICKET) -> masks.Mask:
        return masks.load_mask(self.round_path(round_index, network) / "mask.pt")

    def final_weights(self, round_index: int, network: str = TICKET) -> dict:
        return self.load_state(self.round_path(round_index, network) / "final_weights.pt")

    def save_round(self, round_index: int, network: str, mask: masks.Mask, final_state: dict | None,
                   record: dict) -> None:
        directory = self.round_path(round_index, network)
        directory.mkdir(parents=True, exist_ok=True)
        masks.save_mask(mask, directory / "mask.pt")
        if final_state is not None:
            save_tensor_dict_atomically(final_state, directory / "final_weights.pt")
        write_json_atomically(directory / "record.json", record)

    def records(self, network: str = TICKET) -> list[dict]:
        base = self.path / "rounds" if network == TICKET else self.path / "controls" / network
        if not base.is_dir():
            return []
        found = [json.loads((d / "record.json").read_text()) for d in sorted(base.iterdir())
                 if (d / "record.json").is_file()]
        return sorted(found, key=lambda r: r["round"])

    def recorded_stack_size(self) -> int | None:
        """The stack size chosen when the run first trained (stacked and solo training agree only to
        rounding, so a resumed run keeps it); None before that."""
        try:
            size = json.loads(self.stack_size_path.read_text()).get("stack_size")
        except (OSError, ValueError, AttributeError):
            return None
        return size if isinstance(size, int) and size >= 1 else None

    def record_stack_size(self, size: int) -> None:
        write_json_atomically(self.stack_size_path, {"stack_size": size, "torch_version": torch.__version__})

    def control_kinds(self) -> list[str]:
        base = self.path / "controls"
        return sorted(d.name for d in base.iterdir() if d.is_dir()) if base.is_dir() else []
