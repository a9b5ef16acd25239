"""The spec's fields as command-line flags (`run` and `sweep` share them): one flag per field, named after
its leaf (--lr, --rounds), with its help string and default; flags override a --spec file's fields."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer.cli.display import read_json_object
from trainer.spec import ExperimentSpec, SpecError, field_metavar, parse_field_text, spec_fields


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """--spec FILE and one flag per spec field."""
    parser.add_argument("--spec", type=Path, help="Spec JSON file; flags below override its fields.")
    fields = parser.add_argument_group("spec fields (override --spec; defaults in brackets)")
    defaults = ExperimentSpec().to_dict()
    for dotted, f, hint in spec_fields():
        leaf = dotted.split(".")[-1]
        default = defaults
        for part in dotted.split("."):
            default = default[part]
        fields.add_argument(f"--{leaf.replace('_', '-')}", dest=f"spec:{dotted}", default=None,
                            metavar=field_metavar(hint), help=f"{f.metadata.get('help', '')} [{json.dumps(default)}]")


def spec_data_from_args(args) -> dict:
    """The spec as a (not yet validated) dict: the --spec file's fields, then the flags given."""
    data: dict = {}
    if args.spec is not None:
        data = read_json_object(args.spec, "--spec")
    for dotted, _, hint in spec_fields():
        text = getattr(args, f"spec:{dotted}")
        if text is None:
            continue
        target = data
        *sections, leaf = dotted.split(".")
        for section in sections:
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise SpecError(section, "expected an object")
        target[leaf] = parse_field_text(text, hint, dotted)
    return data


def spec_from_args(args) -> ExperimentSpec:
    return ExperimentSpec.from_dict(spec_data_from_args(args))
