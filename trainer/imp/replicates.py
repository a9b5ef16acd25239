"""Replicates: independent copies of the whole experiment (ticket chain and controls), each with
its own init and data-order seeds and its own part of the run directory. Replicate 0 is the run
itself (the spec's seeds, the run directory's top level); the others live under replicates/.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainer.rundir import RunDir
from trainer.seeds import derive_seed
from trainer.spec import ExperimentSpec


@dataclass(frozen=True)
class Replicate:
    """One independent copy of the experiment: its own seeds and its own part of the run directory."""
    index: int
    init_seed: int
    data_seed: int
    run_dir: RunDir


def replicate_seeds(spec: ExperimentSpec, index: int) -> tuple[int, int]:
    """(init seed, data seed) of replicate `index`; replicate 0 is the spec's own seeds."""
    if index == 0:
        return spec.init_seed, spec.data_seed
    return (derive_seed(spec.init_seed, "replicate_init", index) % (2**31),
            derive_seed(spec.data_seed, "replicate_data", index) % (2**31))


def replicates_of(spec: ExperimentSpec, run_dir: RunDir) -> list[Replicate]:
    """The spec's replicates, replicate 0 first."""
    return [Replicate(index, *replicate_seeds(spec, index), run_dir.replicate(index))
            for index in range(spec.replicates)]


def finished_records(run_dir: RunDir) -> dict:
    """The records one replicate's part of the run directory holds: its ticket rounds and its controls."""
    return {"rounds": run_dir.records(), "controls": {kind: run_dir.records(kind) for kind in run_dir.control_kinds()}}


def replicate_results(replicate: Replicate) -> dict:
    """A replicate's entry in results.json: its seeds, rounds and controls."""
    return {"replicate": replicate.index, "init_seed": replicate.init_seed, "data_seed": replicate.data_seed,
            **finished_records(replicate.run_dir)}
