"""What every command of `python -m trainer` shares: the usage error and parser that raise it, the
runs directory, reading a JSON file, and the display (a progress line or bar per round, the summary table)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from trainer import events, replicate_stats, tasks, verdict
from trainer.analyses.common import percent_text
from trainer.spec import SpecError


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2 (argparse's default prints usage too)
        raise UsageError(message)


def default_runs_dir() -> Path:
    return Path(os.environ.get("LOTTERYWEB_RUNS_DIR", "runs"))


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


class Progress:
    """Consumes trainer events: a tqdm bar per round on a terminal, plain lines otherwise."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr  # the stderr of the call: pytest and others swap it
        self.quiet = quiet
        self.interactive = self.stream.isatty()
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
                self.bar = tqdm(total=total, desc=description, file=self.stream, leave=False, unit="it")
            else:
                self._line(f"{description}: training iterations {event['start_iteration']}..{event['end_iteration']}")
        elif kind == events.METRICS and self.bar is not None:
            self.bar.update(event["iteration"] - self.position)
            self.position = event["iteration"]
            if event["train_loss"] is not None:
                self.bar.set_postfix(loss=f"{event['train_loss']:.3f}", refresh=False)
        elif kind == events.EVAL and not self.interactive:
            metric = tasks.metric_of(event)
            name = "acc" if metric.key == "accuracy" else metric.label
            self._line(f"  round {event['round']}{label} it {event['iteration']}: "
                       f"val {name} {metric.text(event[f'val_{metric.key}'])} "
                       f"test {name} {metric.text(event[f'test_{metric.key}'])}")
        elif kind == events.ROUND_FINISHED:
            self._close_bar()
            self._line(f"round {event['round']}{label} {finished_text(event['summary'])}")
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


def finished_text(summary: dict) -> str:
    """One line for a finished network: a trained round (early stop or final accuracy), or a network whose
    mask scores trained (edge-popup, supermasks, Malach: its test accuracy, MSE and weights used)."""
    seconds = f"({summary.get('wall_seconds', 0):.1f} s)"
    if "early_stop" in summary:
        early_stop = summary["early_stop"]
        metric = tasks.metric_of(summary.get("final") or early_stop or {})
        name, key = ("acc" if metric.key == "accuracy" else metric.label), f"test_{metric.key}"
        if early_stop:
            accuracy = (f"early stop at it {early_stop.get('iteration')}, "
                        f"test {name} {metric.text(early_stop.get(key))} ")
        else:
            accuracy = f"no early stop, test {name} at the end {metric.text(summary['final'].get(key))} "
        return f"{summary['status']}: {100 * summary['remaining_fraction']:.1f}% left, " + accuracy + seconds
    sampled = summary.get("sampled") or {}
    counted = summary["weights_used"] / summary["weights_total"] if summary.get("weights_used") is not None else None
    fraction = next((value for value in (summary.get("remaining_fraction"), summary.get("used_fraction"),
                                         sampled.get("kept_fraction"), counted) if value is not None), None)
    accuracy = summary.get("test_accuracy", sampled.get("test_accuracy"))
    parts = [f"{summary['status']}:"]
    if fraction is not None:
        parts.append(f"{100 * fraction:.1f}% of weights used,")
    if summary.get("test_mse") is not None:
        parts.append(f"test MSE to the target {summary['test_mse']:.4g},")
    parts.append(f"test acc {percent_text(accuracy)} {seconds}")
    return " ".join(parts)


def summary_table(results: dict) -> str:
    """One row per round: the ticket's accuracy (mean and range when there are replicates) and its controls'."""
    kinds = sorted(results.get("controls", {}))
    replicates = 1 + len(results.get("replicates", []))
    metric = tasks.of_results(results).metric
    key, name, percent_text = f"test_{metric.key}", ("acc" if metric.key == "accuracy" else metric.label), metric.text
    bands = {network: replicate_stats.round_bands(results, network, name=key) for network in [events.TICKET, *kinds]}
    own = "replicate 0 " if replicates > 1 else ""
    header = ["round", "% remaining", "effective params", "early-stop it", f"{own}test {name} (early stop)",
              f"{own}test {name} (end)"]
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
               percent_text(record["early_stop"].get(key)),
               percent_text(record["final"].get(key))]
        ticket = bands[events.TICKET].get(round_index)
        if replicates > 1:
            row += [percent_text(ticket["mean"]) + f" (n={ticket['count']})" if ticket else "-",
                    f"{percent_text(ticket['min'])}-{percent_text(ticket['max'])}" if ticket else "-"]
        for kind in kinds:
            control = bands[kind].get(round_index)
            row.append(percent_text(control["mean"]) if control else "")
        row.append(record["status"])
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    if replicates > 1 and kinds:
        lines.append("(control columns: mean over the replicates)")
    if not early_stopping:
        lines.append(f"(no validation split: no early stop; every {metric.label} is at the end of training)")
    # a results.json written before the verdicts existed gets them computed from its rounds
    lines += verdict.summary_lines(results.get("verdicts") or verdict.of_results(results))
    return "\n".join(lines)
