"""`python -m trainer reproduce --list | NAME | all`: the reproduction checks from a terminal.

Hooked into trainer/cli/main.py by `add_reproduce_command(commands)` and the handler
`command_reproduce`. Progress: a tqdm bar per check on a terminal (check_progress events), a
plain line per finished training otherwise; then the verdict table. Exit code 0 when every
check ran to a verdict (PASS, FAIL or INCONCLUSIVE alike), 1 when one failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from trainer.cli.display import UsageError, default_runs_dir
from trainer.reproduce import BUDGETS, CHECK_PROGRESS, CHECKS, get_check, run_check


def add_reproduce_command(subparsers) -> argparse.ArgumentParser:
    reproduce = subparsers.add_parser(
        "reproduce", help="Run the papers' claims as checks with a PASS / FAIL / INCONCLUSIVE verdict.",
        description="Each check runs a scaled-down protocol of its paper with the real engine and compares the "
                    "measured numbers with the claim, within the tolerance the check states. Runs go to "
                    "RUNS_ROOT/reproduce/runs/ (finished work is reused), results to "
                    "RUNS_ROOT/reproduce/NAME/BUDGET/result.json. Exit code 0 when every check reached a verdict.")
    reproduce.add_argument("name", nargs="?", metavar="NAME", help=f"A check ({', '.join(CHECKS)}) or 'all'.")
    reproduce.add_argument("--list", action="store_true", help="List the checks: name, title, claim, source.")
    reproduce.add_argument("--budget", choices=BUDGETS, default="small",
                           help="tiny = seconds (smoke test, always INCONCLUSIVE), small = CPU-sized default, "
                                "large = closer to the papers. [small]")
    reproduce.add_argument("--runs-root", "--runs-dir", dest="runs_root", type=Path, default=None,
                           help="Root of the run directories (default: $LOTTERYWEB_RUNS_DIR or ./runs).")
    reproduce.add_argument("--data-dir", type=Path, default=None, help="Dataset directory.")
    reproduce.add_argument("--quiet", action="store_true", help="Print only the verdict table.")
    return reproduce


def command_reproduce(args) -> int:
    if args.list:
        print_list()
        return 0
    if not args.name:
        raise UsageError("reproduce needs a check name, 'all' or --list")
    names = list(CHECKS) if args.name == "all" else [get_check(args.name).name]
    runs_root = args.runs_root or default_runs_dir()
    results = []
    for name in names:
        display = CheckProgress(name, quiet=args.quiet)
        try:
            result = run_check(name, runs_root, budget=args.budget, data_dir=args.data_dir, callback=display)
        finally:
            display.close()
        display.line(f"{name}: {result['verdict']} ({result['wall_seconds']:.0f} s)")
        results.append(result)
    print(verdict_table(results))
    return 0 if all(result["status"] == "finished" for result in results) else 1


def print_list() -> None:
    for check in CHECKS.values():
        print(f"{check.name}: {check.title}")
        print(f"  claim:     {check.claim}")
        print(f"  source:    {check.source}")
        print(f"  tolerance: {check.tolerance}")


def verdict_table(results: list[dict]) -> str:
    header = ["check", "verdict", "measured vs claim", "wall time"]
    rows = [[r["name"], r["verdict"] + ("" if r["status"] == "finished" else f" ({r['status']})"),
             r["summary"], f"{r['wall_seconds']:.0f} s"] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    budgets = sorted({r["budget"] for r in results})
    lines.append(f"(budget {', '.join(budgets)}; the reasons are in RUNS_ROOT/reproduce/<check>/<budget>/result.json)")
    for result in results:
        if result["verdict"] != "PASS":
            lines.append(f"{result['name']}: {result['reason']}")
    return "\n".join(lines)


class CheckProgress:
    """check_progress events: a tqdm bar on a terminal, a plain line per finished training otherwise."""

    def __init__(self, name: str, stream=None, quiet: bool = False):
        self.name = name
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interactive = self.stream.isatty()
        self.bar = None

    def __call__(self, event: dict) -> None:
        if self.quiet or event["type"] != CHECK_PROGRESS:
            return
        if self.interactive:
            if self.bar is None:
                self.bar = tqdm(total=event["total"], desc=self.name, file=self.stream, leave=False, unit="training")
            self.bar.n = event["done"]
            self.bar.set_postfix_str(event["message"][:40], refresh=True)
        else:
            self.line(f"{self.name} [{event['done']}/{event['total']}] {event['message']}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)
