"""Sweeps: a base spec, a grid (or an explicit list of points) over spec fields, and a number of seeds.

A sweep expands into points, one ExperimentSpec per (configuration, seed): the grid's cross product
(fields in the spec's own order, the last one varying fastest; values in the order given), or the
explicit configurations in their order, each run with `seeds` seeds. Seed 0 is the base spec's own
init and data seeds; seed s > 0 derives both from them (trainer.seeds), so the same sweep always
expands to the same specs and a finished run directory is found again. Every point is validated by
the spec (one error naming the configuration and the field), unknown fields are refused with the
list of sweepable ones, two points with the same spec are refused, and so is a sweep larger than
the caller's limit, before anything is expanded.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainer.seeds import derive_seed
from trainer.spec import ExperimentSpec, SpecError, field_metavar, parse_field_text, spec_fields, unwrap_optional

SEED_FIELDS = ("init_seed", "data_seed")
# A list field's own items are comma-separated, so several values of one are separated by this.
LIST_VALUE_SEPARATOR = ";"
FIELD_ORDER = {dotted: position for position, (dotted, _, _) in enumerate(spec_fields())}
_HINTS = {dotted: hint for dotted, _, hint in spec_fields()}


@dataclass(frozen=True)
class SweepDefinition:
    base_spec: dict
    grid: dict[str, list] = field(default_factory=dict)
    points: list[dict] = field(default_factory=list)
    seeds: int = 1

    @classmethod
    def from_dict(cls, data: Any) -> SweepDefinition:
        """{"base_spec": {...}, "grid": {field: [values]} | "points": [{field: value}], "seeds": n}, shapes
        checked (the values are checked by expand)."""
        if not isinstance(data, dict):
            raise SpecError("sweep", "expected an object with base_spec, grid or points, and seeds")
        unknown = sorted(set(data) - {"base_spec", "grid", "points", "seeds"})
        if unknown:
            raise SpecError(unknown[0], "unknown key; a sweep has base_spec, grid or points, and seeds")
        base_spec = data.get("base_spec", {})
        grid = {} if data.get("grid") is None else data["grid"]
        points = [] if data.get("points") is None else data["points"]
        seeds = data.get("seeds", 1)
        if not isinstance(base_spec, dict):
            raise SpecError("base_spec", "expected an object (a spec)")
        if not isinstance(grid, dict):
            raise SpecError("grid", "expected an object {field: [values]}")
        for name, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SpecError(f"grid.{name}", "expected a non-empty list of values")
        if not isinstance(points, list) or not all(isinstance(point, dict) for point in points):
            raise SpecError("points", "expected a list of objects {field: value}")
        if grid and points:
            raise SpecError("points", "give a grid or a list of points, not both")
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise SpecError("seeds", f"expected a whole number of at least 1, got {seeds!r}")
        return cls(base_spec=base_spec, grid=grid, points=points, seeds=seeds)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def configuration_count(self) -> int:
        if self.points:
            return len(self.points)
        count = 1
        for values in self.grid.values():
            count *= len(values)
        return count

    def size(self) -> int:
        """Experiments the sweep makes: configurations × seeds."""
        return self.configuration_count() * self.seeds

    def swept_fields(self) -> list[str]:
        """The fields that vary, in the spec's order."""
        names = set(self.grid) | {name for point in self.points for name in point}
        return sorted(names, key=lambda name: FIELD_ORDER.get(name, len(FIELD_ORDER)))


@dataclass(frozen=True)
class SweepPoint:
    index: int          # position in the sweep, 0-based
    configuration: int  # which configuration, 0-based
    config: dict        # {dotted field: value} of the configuration
    seed_index: int
    spec: ExperimentSpec


def sweepable_fields() -> dict[str, dict]:
    """{dotted field: {"kind": how its value is written, "help": ..., "choices": [...] or None}}."""
    found = {}
    for dotted, spec_field, hint in spec_fields():
        choices = spec_field.metadata.get("choices")
        kind = "one of " + ", ".join(choices) if choices and typing.get_origin(hint) is not list else \
            field_metavar(hint).replace("INT", "integer").replace("FLOAT", "number").replace("TEXT", "text")
        found[dotted] = {"kind": kind, "help": spec_field.metadata.get("help", ""), "choices": choices}
    return found


def parse_values(dotted: str, text: str) -> list:
    """'0.1, 0.01' -> [0.1, 0.01] typed for the field; a list or per-layer field's values are separated by
    ';' ('random_reinit; random_reinit, random_prune'). 'null' is None for a field that may be null."""
    _check_known(dotted, "grid")
    hint = _HINTS[dotted]
    inner = typing.get_origin(unwrap_optional(hint)) in (list, dict)
    separator = LIST_VALUE_SEPARATOR if inner else ","
    parts = [part.strip() for part in text.split(separator)]
    if not inner:
        parts = [part for part in parts if part]
    if not parts or parts == [""]:
        raise SpecError(f"grid.{dotted}", "no values given")
    try:
        return [parse_field_text(part, hint, dotted) for part in parts]
    except SpecError as error:
        raise SpecError(f"grid.{dotted}", error.message) from None


def configurations(definition: SweepDefinition) -> list[dict]:
    """The configurations in the sweep's order: the grid's cross product or the explicit points."""
    if definition.points:
        for index, point in enumerate(definition.points):
            for name in point:
                _check_known(name, f"points[{index}]")
        return [dict(sorted(point.items(), key=lambda item: FIELD_ORDER[item[0]])) for point in definition.points]
    for name in definition.grid:
        _check_known(name, "grid")
    names = definition.swept_fields()
    return [dict(zip(names, values)) for values in itertools.product(*(definition.grid[name] for name in names))]


def expand(definition: SweepDefinition, max_points: int | None = None,
           check: Callable[[ExperimentSpec], None] | None = None) -> list[SweepPoint]:
    """Every point's validated spec, configuration by configuration, seeds inside.

    `check` is run on every configuration's spec too (the web app: is the dataset installed here?);
    a SpecError it raises is named like the spec's own."""
    size = definition.size()
    if max_points is not None and size > max_points:
        raise SpecError("seeds" if definition.configuration_count() <= max_points else
                        ("points" if definition.points else "grid"),
                        f"the sweep has {size} experiments ({definition.configuration_count()} configurations × "
                        f"{definition.seeds} seed{'s' if definition.seeds != 1 else ''}), above the limit of "
                        f"{max_points}")
    where = "points" if definition.points else "grid"
    points: list[SweepPoint] = []
    seen: dict[str, int] = {}
    for number, config in enumerate(configurations(definition)):
        spec = _configuration_spec(definition.base_spec, config, number, where, check)
        for seed_index in range(definition.seeds):
            seeded = with_seed(spec, seed_index)
            key = seeded.to_json(indent=None)
            if key in seen:
                raise SpecError(where, f"{_point_name(points[seen[key]])} and "
                                       f"{_point_name(SweepPoint(len(points), number, config, seed_index, seeded))} "
                                       "have the same spec; each point of a "
                                       "sweep must differ")
            seen[key] = len(points)
            points.append(SweepPoint(len(points), number, config, seed_index, seeded))
    return points


def with_seed(spec: ExperimentSpec, seed_index: int) -> ExperimentSpec:
    """Seed 0: the spec itself; seed s > 0: init and data seeds derived from the spec's (valid by construction)."""
    if seed_index == 0:
        return spec
    return dataclasses.replace(spec, init_seed=derive_seed(spec.init_seed, "sweep_init", seed_index) % 2**31,
                               data_seed=derive_seed(spec.data_seed, "sweep_data", seed_index) % 2**31)


def config_label(config: dict) -> str:
    """'lr=0.1, rounds=3' (leaf names; the whole dotted name when two leaves share a name)."""
    leaves = [name.rsplit(".", 1)[-1] for name in config]
    return ", ".join(f"{name if leaves.count(leaf) > 1 else leaf}={value_text(value)}"
                     for (name, value), leaf in zip(config.items(), leaves)) or "base spec"


def value_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value)


# ---- helpers ---------------------------------------------------------------------------------

def _check_known(name: str, where: str) -> None:
    if name not in FIELD_ORDER:
        raise SpecError(f"{where}.{name}", f"unknown spec field {name!r}; sweepable fields are "
                                          + ", ".join(FIELD_ORDER))


def _configuration_spec(base_spec: dict, config: dict, number: int, where: str,
                        check: Callable[[ExperimentSpec], None] | None) -> ExperimentSpec:
    data = copy.deepcopy(base_spec)
    for dotted, value in config.items():
        target = data
        *sections, leaf = dotted.split(".")
        for section in sections:
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise SpecError(f"base_spec.{section}", "expected an object")
        target[leaf] = value
    try:
        spec = ExperimentSpec.from_dict(data)
        if check is not None:
            check(spec)
    except SpecError as error:
        swept = next((name for name in config if error.field == name or error.field.startswith(name + ".")
                      or error.field.startswith(name + "[")), None)
        path = (f"{where}[{number}].{error.field}" if where == "points" else f"grid.{error.field}") if swept \
            else f"base_spec.{error.field}"
        raise SpecError(path, f"configuration {number + 1} ({config_label(config)}): {error.field}: "
                              f"{error.message}") from None
    return spec


def _point_name(point: SweepPoint) -> str:
    return f"configuration {point.configuration + 1} ({config_label(point.config)}) seed {point.seed_index}"
