"""`python -m trainer ...`: run IMP experiments and controls from a terminal.

Flags are generated from the spec's fields, so every spec field is a flag
with its help string, and a flag given together with --spec overrides the file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import types
import typing
from pathlib import Path

from trainer import datasets, events, models, replicate_stats, verdict
from trainer.analyses.cli import add_analysis_commands, command_analyze
from trainer.reproduce.cli import add_reproduce_command, command_reproduce
from trainer.rundir import RunDirError
from trainer.spec import CONTROL_KINDS, ExperimentSpec, SpecError, spec_fields
from trainer.steps import StepFormatError
from trainer.tickets import TicketError

USER_ERRORS = (SpecError, datasets.DatasetError, RunDirError, StepFormatError, TicketError)


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2 (argparse's default prints usage too)
        raise UsageError(message)


def default_runs_dir() -> Path:
    return Path(os.environ.get("LOTTERYWEB_RUNS_DIR", "runs"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m trainer", description="Lottery-ticket experiments: IMP with rewinding and controls.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="Run (or resume) an IMP experiment.")
    run.add_argument("--spec", type=Path, help="Spec JSON file; flags below override its fields.")
    run.add_argument("--runs-dir", type=Path, default=None, help="Where run directories go (default: $LOTTERYWEB_RUNS_DIR or ./runs).")
    run.add_argument("--data-dir", type=Path, default=None, help="Dataset directory (default: $LOTTERYWEB_DATA_DIR or ./data).")
    run.add_argument("--quiet", action="store_true", help="Print only the summary table.")
    fields = run.add_argument_group("spec fields (override --spec; defaults in brackets)")
    defaults = ExperimentSpec().to_dict()
    for dotted, f, hint in spec_fields():
        leaf = dotted.split(".")[-1]
        default = defaults
        for part in dotted.split("."):
            default = default[part]
        fields.add_argument(f"--{leaf.replace('_', '-')}", dest=f"spec:{dotted}", default=None,
                            metavar=_metavar(hint), help=f"{f.metadata.get('help', '')} [{json.dumps(default)}]")

    controls = commands.add_parser("controls", help="Add control experiments to a finished run.")
    controls.add_argument("run_dir", type=Path)
    controls.add_argument("--kinds", default=",".join(CONTROL_KINDS), help=f"Comma-separated, from {', '.join(CONTROL_KINDS)}.")
    controls.add_argument("--rounds", default="", help="Comma-separated rounds (default: every finished pruned round).")
    controls.add_argument("--data-dir", type=Path, default=None)
    controls.add_argument("--quiet", action="store_true")

    show = commands.add_parser("show", help="Print the summary table of a run directory.")
    show.add_argument("run_dir", type=Path)

    commands.add_parser("list", help="List models and datasets (and which datasets are installed).")

    ticket = commands.add_parser("export-ticket", help="Write one round's ticket (mask + rewind weights) to a file.")
    ticket.add_argument("run_dir", type=Path)
    ticket.add_argument("round", type=int)
    ticket.add_argument("output", type=Path)
    ticket.add_argument("--replicate", type=int, default=0)

    retrain = commands.add_parser("retrain", help="Train a ticket file again (its mask on θk, iterations k..T).")
    retrain.add_argument("ticket", type=Path)
    retrain.add_argument("--data-dir", type=Path, default=None)
    retrain.add_argument("--quiet", action="store_true")
    add_analysis_commands(commands)
    add_reproduce_command(commands)
    return parser


def _unwrap_optional(hint):
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint


def _metavar(hint) -> str:
    hint = _unwrap_optional(hint)
    origin = typing.get_origin(hint)
    if origin is list:
        return "A,B,..."
    if origin is dict:
        return "NAME=X,..."
    return {int: "INT", float: "FLOAT", str: "TEXT"}.get(hint, "VALUE")


def _parse_flag(text: str, hint, dotted: str):
    """Turn a flag's text into the JSON value the spec expects (the spec validates it)."""
    hint = _unwrap_optional(hint)
    origin = typing.get_origin(hint)
    try:
        if origin is list:
            (item,) = typing.get_args(hint)
            return [_parse_flag(part.strip(), item, dotted) for part in text.split(",") if part.strip()]
        if origin is dict:
            pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError
            return {key.strip(): float(value) for key, value in pairs}
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError:
        raise SpecError(dotted, f"cannot read {text!r} as {_metavar(hint)}") from None
    return text


def read_json_object(path: Path, what: str) -> dict:
    """A JSON object from a file; SpecError(what, ...) says what is wrong with the file."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise SpecError(what, f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise SpecError(what, f"{path} is not UTF-8 text (byte {error.start}); it must be a JSON file") from None
    except json.JSONDecodeError as error:
        raise SpecError(what, f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict):
        raise SpecError(what, f"{path} must hold a JSON object")
    return data


def spec_from_args(args) -> ExperimentSpec:
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
        target[leaf] = _parse_flag(text, hint, dotted)
    return ExperimentSpec.from_dict(data)


# ---- progress display -------------------------------------------------------------------

class Progress:
    """Consumes trainer events: a tqdm bar per round on a terminal, plain lines otherwise."""

    def __init__(self, stream=sys.stderr, quiet: bool = False):
        self.stream = stream
        self.quiet = quiet
        self.interactive = stream.isatty()
        self.bar = None
        self.position = 0

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        kind, network = event["type"], event.get("network", events.TICKET)
        names = ([] if network == events.TICKET else [network]) + ([f"replicate {event['replicate']}"]
                                                                  if event.get("replicate") else [])
        label = f" [{', '.join(names)}]" if names else ""
        if kind == events.RUN_STARTED:
            resumed = event["resumed_rounds"]
            self._line(f"run {event['run_name']} in {event['run_dir']}"
                       + (f" (resuming: rounds {resumed} done)" if resumed else ""))
        elif kind == events.ROUND_STARTED:
            total = event["end_iteration"] - event["start_iteration"]
            self.position = event["start_iteration"]
            description = f"round {event['round']}{label} {100 * event['remaining_fraction']:.1f}% left"
            if self.interactive:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=description, file=self.stream, leave=False, unit="it")
            else:
                self._line(f"{description}: training iterations {event['start_iteration']}..{event['end_iteration']}")
        elif kind == events.METRICS and self.bar is not None:
            self.bar.update(event["iteration"] - self.position)
            self.position = event["iteration"]
            if event["train_loss"] is not None:
                self.bar.set_postfix(loss=f"{event['train_loss']:.3f}", refresh=False)
        elif kind == events.EVAL and not self.interactive:
            self._line(f"  round {event['round']}{label} it {event['iteration']}: "
                       f"val acc {_pct(event['val_accuracy'])} test acc {_pct(event['test_accuracy'])}")
        elif kind == events.ROUND_FINISHED:
            self._close_bar()
            summary = event["summary"]
            self._line(f"round {event['round']}{label} {summary['status']}: {100 * summary['remaining_fraction']:.1f}% left, "
                       + (f"early stop at it {summary['early_stop'].get('iteration')}, "
                          f"test acc {_pct(summary['early_stop'].get('test_accuracy'))} " if summary["early_stop"] else
                          f"no early stop, test acc at the end {_pct(summary['final'].get('test_accuracy'))} ")
                       + f"({summary['wall_seconds']:.1f} s)")
        elif kind == events.ROUND_SKIPPED:
            self._line(f"round {event['round']}{label}: already done, skipped")
        elif kind == events.RUN_FINISHED:
            self._close_bar()
            self._line(f"run {event['status']}: {event['results_path']}")

    def _close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def summary_table(results: dict) -> str:
    """One row per round: the ticket's accuracy (mean and range when there are replicates) and its controls'."""
    kinds = sorted(results.get("controls", {}))
    replicates = 1 + len(results.get("replicates", []))
    bands = {network: replicate_stats.round_bands(results, network) for network in [events.TICKET, *kinds]}
    own = "replicate 0 " if replicates > 1 else ""
    header = ["round", "% remaining", "effective params", "early-stop it", f"{own}test acc (early stop)", f"{own}test acc (end)"]
    if replicates > 1:
        header += [f"mean of {replicates} replicates", "min-max"]
    early_stopping = results.get("dataset", {}).get("validation_size", 1) > 0
    point = "early stop" if early_stopping else "end"
    header += [f"{kind} ({point})" for kind in kinds] + ["status"]
    rows = []
    for record in results["rounds"]:
        round_index = record["round"]
        effective = record.get("effective_parameters")  # absent from results made before it existed
        row = [str(round_index), f"{100 * record['remaining_fraction']:.1f}",
               "-" if effective is None else f"{effective:,}",
               str(record["early_stop"].get("iteration", "-")),
               _pct(record["early_stop"].get("test_accuracy")), _pct(record["final"].get("test_accuracy"))]
        ticket = bands[events.TICKET].get(round_index)
        if replicates > 1:
            row += [_pct(ticket["mean"]) + f" (n={ticket['count']})" if ticket else "-",
                    f"{_pct(ticket['min'])}-{_pct(ticket['max'])}" if ticket else "-"]
        for kind in kinds:
            control = bands[kind].get(round_index)
            row.append(_pct(control["mean"]) if control else "")
        row.append(record["status"])
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    if replicates > 1 and kinds:
        lines.append("(control columns: mean over the replicates)")
    if not early_stopping:
        lines.append("(no validation split: no early stop; every accuracy is at the end of training)")
    # a results.json written before the verdicts existed gets them computed from its rounds
    lines += verdict.summary_lines(results.get("verdicts") or verdict.of_results(results))
    return "\n".join(lines)


# ---- commands ---------------------------------------------------------------------------

def command_run(args) -> int:
    from trainer.imp import run_experiment
    spec = spec_from_args(args)
    results = run_experiment(spec, args.runs_dir or default_runs_dir(), callback=Progress(quiet=args.quiet),
                             data_dir=args.data_dir)
    print(summary_table(results))
    return 0 if results["status"] == "finished" else 1


def command_controls(args) -> int:
    from trainer.imp import run_controls_on
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    for kind in kinds:
        if kind not in CONTROL_KINDS:
            raise SpecError("--kinds", f"unknown control {kind!r}; choose from {', '.join(CONTROL_KINDS)}")
    try:
        rounds = [int(r) for r in args.rounds.split(",") if r.strip()]
    except ValueError:
        raise SpecError("--rounds", f"expected comma-separated round numbers, got {args.rounds!r}") from None
    results = run_controls_on(args.run_dir, kinds, rounds, callback=Progress(quiet=args.quiet), data_dir=args.data_dir)
    print(summary_table(results))
    return 0 if results["status"] == "finished" else 1


def command_show(args) -> int:
    path = args.run_dir / "results.json"
    if not path.is_file():
        raise RunDirError(f"{args.run_dir} has no results.json (not a run directory, or the run never finished a round)")
    results = read_json_object(path, "results.json")
    try:
        table = summary_table(results)
    except (KeyError, TypeError, AttributeError) as error:
        raise RunDirError(f"{path} is not a results file of this tool (missing or wrong field {error})") from None
    print(table)
    return 0


def command_list(args) -> int:
    print("models:")
    for entry in models.MODELS.values():
        print(f"  {entry.name:<16} {entry.description}")
    print("datasets:")
    for entry in datasets.DATASETS.values():
        info = entry.info
        state = "installed" if entry.is_installed() else f"not installed: {entry.location_hint()}"
        print(f"  {info.name:<16} {info.input_shape} {info.num_classes} classes, {info.train_size}/{info.test_size}  [{state}]")
    return 0


def command_export_ticket(args) -> int:
    from trainer.rundir import RunDir
    from trainer.tickets import save_ticket, ticket_payload
    payload = ticket_payload(RunDir.open(args.run_dir), args.round, args.replicate)
    save_ticket(payload, args.output)
    print(f"wrote {args.output}: round {args.round} of replicate {args.replicate}, "
          f"{100 * payload['remaining_fraction']:.3g}% of weights, rewinds to iteration {payload['rewind_iteration']}")
    return 0


def command_retrain(args) -> int:
    from trainer.tickets import load_ticket, train_ticket
    payload = load_ticket(args.ticket)
    record = train_ticket(payload, data_dir=args.data_dir, callback=Progress(quiet=args.quiet))
    before = payload.get("test_accuracy")
    print(f"ticket of round {payload['round']} ({100 * record['remaining_fraction']:.3g}% of weights): "
          f"test accuracy {_pct(record['early_stop'].get('test_accuracy'))} at early stop "
          f"(iteration {record['early_stop'].get('iteration')}); in its run: {_pct(before)}")
    return 0 if record["status"] == "finished" else 1


COMMANDS = {"run": command_run, "controls": command_controls, "show": command_show, "list": command_list,
            "analyze": command_analyze, "export-ticket": command_export_ticket, "retrain": command_retrain,
            "reproduce": command_reproduce}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from trainer.train import apply_thread_setting
        apply_thread_setting()
        return COMMANDS[args.command](args)
    except UsageError as error:
        print(f"error: {error} (see python -m trainer --help)", file=sys.stderr)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume after the last finished round", file=sys.stderr)
        return 130
    return 2
