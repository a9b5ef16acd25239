"""Analysis parameters: a typed schema with a help string per parameter.

The CLI flags, the web form and the stored params.json come from one schema per
analysis, so they cannot drift apart. Validation fills in defaults and raises
SpecError naming the offending parameter. The directory of an analysis's result
is named by a hash of its non-default parameters (as run directories are), so
the same request finds the same finished work, and a new parameter with a no-op
default keeps old results valid.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from trainer.spec import SpecError
from trainer.steps import Step, StepFormatError

KINDS = ("int", "float", "str", "step", "bool", "int_list", "float_list", "str_list", "step_list", "path")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # one of KINDS; *_list kinds are lists of the item kind
    default: Any
    help: str
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False  # None is allowed (and is then the default)
    in_hash: bool = True  # False: the parameter only adds to the report, it does not change what is trained
    unordered: bool = False  # a list whose order means nothing: stored sorted, so any order finds the same work
    labels: tuple = ()  # what the web form shows for each choice; default: the choice itself

    def choice_labels(self) -> list[tuple]:
        """(choice, label) pairs for a form."""
        labels = self.labels or tuple(str(choice).replace("_", " ") for choice in self.choices)
        return list(zip(self.choices, labels))

    @property
    def item_kind(self) -> str:
        return self.kind[:-5] if self.kind.endswith("_list") else self.kind


def validate_params(schema: tuple[Param, ...], values: dict | None) -> dict:
    """Defaults filled in, every value checked; unknown names and bad values raise SpecError."""
    values = dict(values or {})
    known = {param.name: param for param in schema}
    for name in values:
        if name not in known:
            raise SpecError(name, f"unknown parameter; known parameters are {', '.join(known)}")
    checked = {}
    for param in schema:
        value = values.get(param.name, param.default)
        checked[param.name] = _check(param, value)
    return checked


def _check(param: Param, value: Any) -> Any:
    if value is None:
        if param.optional or param.default is None:
            return None
        raise SpecError(param.name, "must not be null")
    if param.kind.endswith("_list"):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise SpecError(param.name, f"expected a list, got {type(value).__name__}")
        items = [_check_item(param, item, f"{param.name}[{index}]") for index, item in enumerate(value)]
        if len(set(map(str, items))) != len(items):
            raise SpecError(param.name, "has repeated entries")
        return sorted(items, key=lambda item: _order_key(param, item)) if param.unordered else items
    return _check_item(param, value, param.name)


def _check_item(param: Param, value: Any, path: str) -> Any:
    kind = param.item_kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise SpecError(path, f"expected true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(path, f"expected an integer, got {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise SpecError(path, f"expected a number, got {value!r}")
        value = float(value)
    elif kind in ("str", "path"):
        if not isinstance(value, str) or not value:
            raise SpecError(path, f"expected a non-empty string, got {value!r}")
    elif kind == "step":
        try:
            value = str(Step.parse(value))
        except StepFormatError as error:
            raise SpecError(path, str(error)) from None
    if param.choices and value not in param.choices:
        raise SpecError(path, f"unknown choice {value!r}; choose one of {', '.join(map(str, param.choices))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if param.minimum is not None and value < param.minimum:
            raise SpecError(path, f"must be at least {param.minimum} (got {value})")
        if param.maximum is not None and value > param.maximum:
            raise SpecError(path, f"must be at most {param.maximum} (got {value})")
    return value


def _order_key(param: Param, item):
    if param.choices:
        return param.choices.index(item)
    if param.item_kind == "step":
        step = Step.parse(item)
        return (step.unit, step.amount)
    return item


def params_hash(analysis: str, schema: tuple[Param, ...], params: dict, version: int = 1) -> str:
    """12 hex digits from the non-default parameters that change what is trained. An analysis whose
    results or defaults change meaning raises its `version`, so stored work of the old meaning is not
    found again (version 1 adds nothing: existing hashes stay valid)."""
    changed = {p.name: params[p.name] for p in schema if p.in_hash and params[p.name] != _normal_default(p)}
    if version != 1:
        changed["version"] = version
    canonical = json.dumps({"analysis": analysis, **changed}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _normal_default(param: Param):
    return list(param.default) if isinstance(param.default, tuple) else param.default


def parse_text(param: Param, text: str) -> Any:
    """A command-line value as the JSON value the schema expects (validation comes after)."""
    def one(item: str):
        kind = param.item_kind
        try:
            if kind == "int":
                return int(item)
            if kind == "float":
                return float(item)
        except ValueError:
            raise SpecError(param.name, f"cannot read {item!r} as {kind}") from None
        if kind == "bool":
            lowered = item.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise SpecError(param.name, f"expected true or false, got {item!r}")
            return lowered in ("true", "1", "yes")
        return item
    if param.kind.endswith("_list"):
        return [one(part.strip()) for part in text.split(",") if part.strip()]
    if param.optional and text.lower() in ("", "none", "null"):
        return None
    return one(text.strip())


def describe(schema: tuple[Param, ...]) -> list[dict]:
    """The schema as JSON (for the web form and `--help`)."""
    return [{"name": p.name, "kind": p.kind, "default": _normal_default(p), "help": p.help,
             "choices": list(p.choices), "choice_labels": [label for _, label in p.choice_labels()],
             "minimum": p.minimum, "maximum": p.maximum, "optional": p.optional}
            for p in schema]
