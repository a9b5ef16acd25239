"""`python -m trainer analyze RUN_DIR NAME --param value`: analyses from a terminal.

One sub-command per registered analysis; its flags come from the analysis's parameter
schema (help strings and defaults shown in --help). Hooked into trainer/cli/main.py by
`add_analysis_commands(commands)` and the handler `command_analyze`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer import events
from trainer.analyses import ANALYSES, events as aevents, get_analysis, run_info
from trainer.analyses.params import parse_text
from trainer.cli.display import Progress
from trainer.rundir import RunDir


def add_analysis_commands(subparsers) -> argparse.ArgumentParser:
    """Add `analyze RUN_DIR NAME [--param value ...]` to an argparse sub-command set."""
    analyze = subparsers.add_parser("analyze", help="Run (or resume) an analysis on a finished run directory.",
                                    description="Analyses branch off a finished IMP run; results go to "
                                                "RUN_DIR/analyses/NAME/<hash>/result.json.")
    analyze.add_argument("run_dir", type=Path, help="A run directory (holding spec.json).")
    names = analyze.add_subparsers(dest="analysis", required=True, metavar="NAME",
                                   parser_class=getattr(subparsers, "_parser_class", argparse.ArgumentParser))
    for analysis in ANALYSES.values():
        parser = names.add_parser(analysis.name, help=_literal(analysis.description),
                                  description=analysis.description)
        for param in analysis.params:
            default = list(param.default) if isinstance(param.default, tuple) else param.default
            parser.add_argument(f"--{param.name.replace('_', '-')}", dest=f"param:{param.name}", default=None,
                                metavar=_metavar(param.kind),
                                help=_literal(f"{param.help} [{json.dumps(default)}]"))
        parser.add_argument("--data-dir", type=Path, default=None, help="Dataset directory.")
        parser.add_argument("--quiet", action="store_true", help="Print only the summary.")
    return analyze


def _literal(text: str) -> str:
    """Help text shown as written: argparse treats '%' as a format code (e.g. "k: % of weights")."""
    return text.replace("%", "%%")


def _metavar(kind: str) -> str:
    return {"int": "INT", "float": "FLOAT", "bool": "BOOL", "step": "STEP", "path": "DIR"}.get(
        kind, "A,B,..." if kind.endswith("_list") else "TEXT")


def params_from_args(args) -> dict:
    analysis = get_analysis(args.analysis)
    params = {}
    for param in analysis.params:
        text = getattr(args, f"param:{param.name}", None)
        if text is not None:
            params[param.name] = parse_text(param, text)
    return analysis.validate(params)


class AnalysisProgress:
    """The run's progress display, plus lines for the analysis's own events."""

    def __init__(self, stream=None, quiet: bool = False):
        self.inner = Progress(stream, quiet)
        self.stream, self.quiet = self.inner.stream, quiet

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        kind = event["type"]
        if kind in events.EVENT_TYPES:
            if "rewind_iteration" in event and event.get("network", "").startswith("copy"):
                event = {**event, "network": f"{event['network']} k={event['rewind_iteration']}"}
            self.inner(event)
        elif kind == aevents.ANALYSIS_STARTED:
            self._line(f"analysis {event['analysis']} of {event['run_dir']} -> {event['result_dir']}")
        elif kind == aevents.UNIT_SKIPPED:
            self._line(f"  {event['unit']}: already done, skipped")
        elif kind == aevents.ANALYSIS_FINISHED:
            self._line(f"analysis {event['status']}: {event['result_path']}")

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def command_analyze(args) -> int:
    analysis = get_analysis(args.analysis)
    params = params_from_args(args)
    analysis.preflight(params, run_info(RunDir.open(args.run_dir)))
    result = analysis.function(args.run_dir, **params, callback=AnalysisProgress(quiet=args.quiet),
                               data_dir=args.data_dir)
    print(summary_text(result))
    return 0 if result["status"] == "finished" else 1


def summary_text(result: dict) -> str:
    """The result file's path and the study's own summary lines."""
    if result["status"] != "finished":
        return f"{result['analysis']}: {result['status']} (run the same command again to resume)"
    lines = [f"{result['analysis']}: {result['result_dir']}/result.json"]
    return "\n".join(lines + get_analysis(result["analysis"]).summary_lines(result))
