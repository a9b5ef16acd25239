"""What every reproduction check shares: the Check record, budgets, the verdict arithmetic and
the session that runs a check's experiments and analyses with the real engine.

A check measures with trainer.imp.run_experiment and trainer.analyses.run_analysis only, so
every number it reports is one the ordinary runs would report. Its run directories are
hash-named by spec under <runs_root>/reproduce/runs/ (the same spec finds the same finished
work: a second run of a check trains nothing; checks sharing a spec share its runs), and its
analyses live inside those run directories as usual.

A verdict is assembled from sub-claims, each of which holds, fails or is undecided
(`Finding`): PASS when all hold, FAIL when any clearly fails, INCONCLUSIVE otherwise. The
"tiny" budget is a smoke test: its verdict is always INCONCLUSIVE (the reason says what
the rule would have said).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainer import datasets, events
from trainer.analyses import run_analysis
from trainer.imp import run_experiment
from trainer.rundir import RunDir
from trainer.spec import ExperimentSpec, SpecError

BUDGETS = ("tiny", "small", "large")
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"
CHECK_PROGRESS = "check_progress"
RUNS_SUBDIRECTORY = Path("reproduce") / "runs"


class CheckCancelled(Exception):
    """stop_requested() cut a step of the check short."""


@dataclass(frozen=True)
class Finding:
    """One sub-claim's outcome: HOLDS, FAILS or UNDECIDED, with the numbers in words."""
    outcome: str
    text: str


@dataclass(frozen=True)
class Decision:
    verdict: str
    reason: str


def decide(findings: list[Finding]) -> Decision:
    """PASS when every sub-claim holds, FAIL when one clearly fails, INCONCLUSIVE otherwise."""
    outcomes = {finding.outcome for finding in findings}
    verdict = FAIL if FAILS in outcomes else PASS if outcomes == {HOLDS} else INCONCLUSIVE
    return Decision(verdict, "; ".join(f"{finding.text} ({finding.outcome})" for finding in findings) + ".")


def missing(*labels: str) -> Finding:
    return Finding(UNDECIDED, f"no measurement of {', '.join(labels)} (a run diverged or did not finish)")


# "far above chance", as the supermask and strong-ticket checks judge it: >= 2 × chance holds, < 1.5 × fails
PASS_MULTIPLE_OF_CHANCE, FAIL_MULTIPLE_OF_CHANCE = 2.0, 1.5


def far_above_chance(accuracy: float, chance: float, label: str) -> Finding:
    """Whether `accuracy` is far above chance: holds at >= 2 × chance, fails below 1.5 × chance."""
    outcome = (HOLDS if accuracy >= PASS_MULTIPLE_OF_CHANCE * chance
               else FAILS if accuracy < FAIL_MULTIPLE_OF_CHANCE * chance else UNDECIDED)
    return Finding(outcome, f"{label} {points(accuracy)} = {accuracy / chance:.1f} × chance ({points(chance)})")


def points(fraction: float | None) -> str:
    """An accuracy (fraction) as percent, or a difference as points."""
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


def signed_points(difference: float | None) -> str:
    return "-" if difference is None else f"{100 * difference:+.2f} points"


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Step:
    """One unit of a protocol: an experiment spec, or an analysis of the run of a spec."""
    label: str
    spec: dict  # trainer.spec JSON, complete (ExperimentSpec.to_dict)
    trainings: int  # networks this step trains when nothing is on disk (progress total)
    analysis: str | None = None
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        entry = {"label": self.label, "spec": self.spec, "trainings": self.trainings}
        if self.analysis is not None:
            entry.update(analysis=self.analysis, params=self.params)
        return entry


@dataclass(frozen=True)
class Check:
    """One claim of SCIENCE.md as a runnable check (see trainer/reproduce/__init__.py)."""
    name: str
    title: str
    claim: str  # as SCIENCE.md states it
    source: str  # paper, venue, year, figure/section
    tolerance: str  # the stated tolerance and verdict rule, in words
    steps: Callable[[str, object], list[Step]]  # (budget, data_dir) -> the protocol's steps
    measure: Callable[[Session, list[Step]], dict]  # -> {"measured", "chart", "details"}
    judge: Callable[[dict], Decision]  # measured -> verdict (budget-independent; tiny is overridden)
    match_fields: tuple[str, ...]  # dotted spec fields a matching experiment must share with a protocol spec
    summary: Callable[[dict], str]  # measured -> one line: the numbers next to the claim
    datasets: tuple[str, ...] = ()  # datasets a matching experiment may use (the protocol's, any budget)
    requires: Callable[[dict], bool] = lambda spec: True  # what else a matching spec needs (e.g. a control)
    notes: str = ""  # where the protocol differs from the paper, and why

    def protocol(self, budget: str, data_dir=None) -> dict:
        """The JSON description of what runs at `budget`: the steps' specs and analysis params."""
        check_budget(budget)
        return {"budget": budget, "steps": [step.to_dict() for step in self.steps(budget, data_dir)],
                "notes": self.notes}

    def matches(self, spec: dict) -> bool:
        """Whether an experiment spec has this check's protocol settings (any budget's)."""
        try:
            given = ExperimentSpec.from_dict(spec).to_dict()
        except (SpecError, TypeError, ValueError):
            return False
        if given["dataset"] not in self.datasets or not self.requires(given):
            return False
        for budget in ("small", "large"):
            for step in self.steps(budget, None):
                if all(_dotted(given, name) == _dotted(step.spec, name) for name in self.match_fields):
                    return True
        return False


def _dotted(data: dict, name: str):
    for part in name.split("."):
        data = data[part]
    return data


def check_budget(budget: str) -> None:
    if budget not in BUDGETS:
        raise SpecError("budget", f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")


def image_dataset(budget: str, paper_dataset: str, data_dir) -> str:
    """synthetic for tiny; else the paper's dataset when installed, Fashion-MNIST (always installed) otherwise."""
    if budget == "tiny":
        return "synthetic"
    return paper_dataset if datasets.DATASETS[paper_dataset].is_installed(data_dir) else "fashion_mnist"


def full_spec(data: dict) -> dict:
    """A spec dict with every field (validated): what the protocol shows and the runs are named by."""
    return ExperimentSpec.from_dict(data).to_dict()


def lenet_spec(budget: str, data_dir, training: dict, **fields) -> dict:
    """A LeNet-300-100 spec of a check (MNIST when installed, else Fashion-MNIST; synthetic for tiny), on the CPU."""
    return full_spec({"model": "lenet_300_100", "dataset": image_dataset(budget, "mnist", data_dir), "device": "cpu",
                      "training": {"metrics_interval": 100, **training}, **fields})


def experiment_trainings(spec: dict) -> int:
    return ExperimentSpec.from_dict(spec).trainings()


# ---- running a check ----------------------------------------------------------------------

class Session:
    """Runs a check's steps with the real engine; forwards events tagged with the check and
    counts finished trainings as check_progress events."""

    def __init__(self, check_name: str, runs_root: Path, steps: list[Step], *, data_dir,
                 callback: events.Callback, stop_requested: Callable[[], bool]):
        self.check_name = check_name
        self.runs_root = Path(runs_root) / RUNS_SUBDIRECTORY
        self.data_dir = data_dir
        self.callback = callback
        self.stop_requested = stop_requested
        self.total = sum(step.trainings for step in steps)
        self.done = 0
        self.run_paths: list[str] = []

    def forward(self, event: dict) -> None:
        self.callback({**event, "check": self.check_name})
        network, round_index = event.get("network", events.TICKET), event.get("round")
        if event["type"] in (events.ROUND_FINISHED, events.ROUND_SKIPPED):
            self.advance(self.done + 1, f"{network} round {round_index} "
                                        f"{'done' if event['type'] == events.ROUND_FINISHED else 'already done'}")
        elif event["type"] == events.ROUND_STARTED:  # long trainings: say what is training now
            self.advance(self.done, f"training {network} round {round_index}")

    def advance(self, done: int, message: str) -> None:
        self.done = min(max(done, self.done), self.total)
        self.callback({"type": CHECK_PROGRESS, "check": self.check_name, "done": self.done, "total": self.total,
                       "message": message})

    def run_path(self, step: Step) -> Path:
        return self.runs_root / ExperimentSpec.from_dict(step.spec).run_name()

    def experiment(self, step: Step, planned_before: int) -> dict:
        """Run (or resume) the step's experiment; its results dict."""
        self._check_stop()
        results = run_experiment(ExperimentSpec.from_dict(step.spec), self.runs_root, callback=self.forward,
                                 data_dir=self.data_dir, stop_requested=self.stop_requested)
        self._record_path(str(self.run_path(step)))
        if results["status"] == "cancelled":
            raise CheckCancelled()
        self.advance(planned_before + step.trainings, f"{step.label}: run {results['status']}")
        return results

    def analysis(self, step: Step, planned_before: int) -> dict:
        """Run (or resume) the step's analysis on the run of the step's spec (which must exist)."""
        self._check_stop()
        run_path = self.run_path(step)
        if not (run_path / "spec.json").is_file():  # an analysis that needs only θ0 (early-bird)
            RunDir.create(self.runs_root, ExperimentSpec.from_dict(step.spec))
        result = run_analysis(step.analysis, run_path, step.params, callback=self.forward, data_dir=self.data_dir,
                              stop_requested=self.stop_requested)
        self._record_path(str(run_path))
        if result["status"] == "cancelled":
            raise CheckCancelled()
        self.advance(planned_before + step.trainings, f"{step.label}: analysis {step.analysis} finished")
        return result

    def run_all(self, steps: list[Step]) -> list[dict]:
        """Every step in order: experiments first make the run directories analyses branch off."""
        outputs, planned = [], 0
        self.advance(0, "starting")
        for step in steps:
            outputs.append(self.analysis(step, planned) if step.analysis else self.experiment(step, planned))
            planned += step.trainings
        return outputs

    def _record_path(self, path: str) -> None:
        if path not in self.run_paths:
            self.run_paths.append(path)

    def _check_stop(self) -> None:
        if self.stop_requested():
            raise CheckCancelled()
