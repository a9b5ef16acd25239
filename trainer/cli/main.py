"""`python -m trainer ...`: run IMP experiments and controls from a terminal.

Flags are generated from the spec's fields, so every spec field is a flag
with its help string, and a flag given together with --spec overrides the file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer import datasets, downloads, models
from trainer.cli.analyze import add_analysis_commands, command_analyze
from trainer.cli.display import (
    Parser,
    Progress,
    UsageError,
    default_runs_dir,
    percent_text,
    read_json_object,
    summary_table,
)
from trainer.cli.reproduce import add_reproduce_command, command_reproduce
from trainer.cli.spec_flags import add_spec_arguments, spec_from_args
from trainer.cli.sweep import add_sweep_command, command_sweep
from trainer.imp import run_controls_on, run_experiment, train_ticket
from trainer.rundir import RunDir, RunDirError
from trainer.spec import CONTROL_KINDS, SpecError
from trainer.steps import StepFormatError
from trainer.tickets import TicketError, load_ticket, save_ticket, ticket_payload
from trainer.training.loop import apply_thread_setting

USER_ERRORS = (SpecError, datasets.DatasetError, RunDirError, StepFormatError, TicketError)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m trainer",
                    description="Lottery-ticket experiments: IMP with rewinding and controls.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = commands.add_parser("run", help="Run (or resume) an IMP experiment.")
    run.add_argument("--runs-dir", type=Path, default=None,
                     help="Where run directories go (default: $LOTTERYWEB_RUNS_DIR or ./runs).")
    run.add_argument("--data-dir", type=Path, default=None,
                     help="Dataset directory (default: $LOTTERYWEB_DATA_DIR or ./data).")
    run.add_argument("--quiet", action="store_true", help="Print only the summary table.")
    add_spec_arguments(run)

    controls = commands.add_parser("controls", help="Add control experiments to a finished run.")
    controls.add_argument("run_dir", type=Path)
    controls.add_argument("--kinds", default=",".join(CONTROL_KINDS),
                          help=f"Comma-separated, from {', '.join(CONTROL_KINDS)}.")
    controls.add_argument("--rounds", default="", help="Comma-separated rounds (default: every finished pruned round).")
    controls.add_argument("--data-dir", type=Path, default=None)
    controls.add_argument("--quiet", action="store_true")

    show = commands.add_parser("show", help="Print the summary table of a run directory.")
    show.add_argument("run_dir", type=Path)

    commands.add_parser("list", help="List models and datasets (and which datasets are installed).")

    download = commands.add_parser("download", help="Fetch an image dataset and verify its checksums "
                                                    f"({', '.join(downloads.downloadable())}).")
    download.add_argument("name", help="The dataset's name, as in `list`.")
    download.add_argument("--data-dir", type=Path, default=None,
                          help="Dataset directory (default: $LOTTERYWEB_DATA_DIR or ./data).")
    download.add_argument("--mirror", default=None,
                          help=f"Base URL serving <mirror>/<dataset>/<file> (default: ${downloads.MIRROR_ENV}, "
                               "else torchvision's own URLs).")

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
    add_sweep_command(commands)
    return parser


# ---- commands ---------------------------------------------------------------------------

def command_run(args) -> int:
    spec = spec_from_args(args)
    results = run_experiment(spec, args.runs_dir or default_runs_dir(), callback=Progress(quiet=args.quiet),
                             data_dir=args.data_dir)
    print(summary_table(results))
    return 0 if results["status"] == "finished" else 1


def command_controls(args) -> int:
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
        run_dir = RunDir.open(args.run_dir)  # not a run directory at all: says so
        finished = [r for r in run_dir.records() if r["status"] == "finished"]
        raise RunDirError(f"{args.run_dir} has no results.json yet: its run was interrupted after {len(finished)} "
                          f"finished round{'' if len(finished) == 1 else 's'}. Running its spec again resumes after "
                          f"the last one and writes results.json: python -m trainer run --spec "
                          f"{args.run_dir / 'spec.json'} --runs-dir {args.run_dir.parent}")
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
        print(f"  {entry.name:<21} {entry.description} [{entry.task.replace('_', ' ')}]")
    print("datasets:")
    for entry in datasets.DATASETS.values():
        info = entry.info
        state = "installed" if entry.is_installed() else f"not installed: {entry.location_hint()}"
        if info.task == "language_modeling":
            size = f"text, {info.num_classes:,} words, {info.train_size:,}/{info.test_size:,} tokens"
        elif info.task == "reinforcement_learning":
            size = f"environment, {info.input_shape[0]} observations, {info.num_classes} actions"
        else:
            size = f"{info.input_shape} {info.num_classes} classes, {info.train_size}/{info.test_size}"
        print(f"  {info.name:<16} {size}  [{state}]")
    return 0


def command_download(args) -> int:
    def report(event: dict) -> None:
        if event["type"] == "fetched":
            print(f"fetched {event['url']}: {event['bytes']:,} bytes, MD5 {event['md5']} verified -> {event['path']}")
        elif event["type"] == "present":
            print(f"already there, MD5 {event['md5']} verified: {event['path']}")
        elif event["type"] == "extracted":
            print(f"extracted {event['file']} -> {event['path']}")

    mirror = args.mirror if args.mirror is not None else downloads.default_mirror()
    downloads.download(args.name, args.data_dir, mirror=mirror, callback=report)
    entry = datasets.get_entry(args.name)
    print(f"{entry.info.title} is installed in {entry.location_hint(args.data_dir)}")
    return 0


def command_export_ticket(args) -> int:
    payload = ticket_payload(RunDir.open(args.run_dir), args.round, args.replicate)
    save_ticket(payload, args.output)
    print(f"wrote {args.output}: round {args.round} of replicate {args.replicate}, "
          f"{100 * payload['remaining_fraction']:.3g}% of weights, rewinds to iteration {payload['rewind_iteration']}")
    return 0


def command_retrain(args) -> int:
    payload = load_ticket(args.ticket)
    record = train_ticket(payload, data_dir=args.data_dir, callback=Progress(quiet=args.quiet))
    before = payload.get("test_accuracy")
    print(f"ticket of round {payload['round']} ({100 * record['remaining_fraction']:.3g}% of weights): "
          f"test accuracy {percent_text(record['early_stop'].get('test_accuracy'))} at early stop "
          f"(iteration {record['early_stop'].get('iteration')}); in its run: {percent_text(before)}")
    return 0 if record["status"] == "finished" else 1


COMMANDS = {"run": command_run, "controls": command_controls, "show": command_show, "list": command_list,
            "download": command_download,
            "analyze": command_analyze, "export-ticket": command_export_ticket, "retrain": command_retrain,
            "reproduce": command_reproduce, "sweep": command_sweep}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
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
