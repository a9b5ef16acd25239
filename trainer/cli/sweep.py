"""`python -m trainer sweep`: a base spec (flags or --spec, as `run`), a grid (--grid FIELD=V1,V2, repeated)
or explicit points (--points FILE.json), and --seeds N; the points run here one after another.

Each point is an ordinary run in its hash-named run directory, so a point that finished before (in this
sweep or another, or by `run`) is found and not trained again, and an interrupted sweep resumes. At the
end: one row per configuration, mean ± std over the seeds (trainer.sweep_summary).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer import datasets, tasks
from trainer.cli.display import Progress, default_runs_dir, read_json_object
from trainer.cli.spec_flags import add_spec_arguments, spec_data_from_args
from trainer.imp import run_experiment
from trainer.spec import SpecError, spec_fields
from trainer.sweep_summary import band_text, configuration_summary, rows_of_results
from trainer.sweeps import SweepDefinition, config_label, expand, parse_values, value_text

DEFAULT_MAX_POINTS = 500
# --grid lr=... and --grid training.lr=... both name training.lr (leaf names are unique: they are the flags)
_DOTTED_BY_NAME = {**{dotted.rsplit(".", 1)[-1]: dotted for dotted, _, _ in spec_fields()},
                   **{dotted: dotted for dotted, _, _ in spec_fields()}}


def add_sweep_command(commands) -> argparse.ArgumentParser:
    sweep = commands.add_parser(
        "sweep", help="Run a grid (or list) of specs with several seeds, then a table per configuration.",
        description="Every point is an ordinary run directory: finished points are reused, not retrained.")
    sweep.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                       help="A swept field and its values (repeat for a cross product), e.g. --grid lr=0.1,0.01. "
                            "A list field's values are separated by ';' "
                            "(--grid controls='random_reinit;random_prune').")
    sweep.add_argument("--points", type=Path, metavar="FILE.json",
                       help='Explicit configurations instead of a grid: '
                            '[{"training.lr": 0.1, "pruning.rounds": 3}, ...].')
    sweep.add_argument("--seeds", type=int, default=1, help="Seeds per configuration (seed 0 = the spec's own). [1]")
    sweep.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS,
                       help=f"Refuse a sweep of more experiments than this. [{DEFAULT_MAX_POINTS}]")
    sweep.add_argument("--dry-run", action="store_true", help="Print the count and the points; train nothing.")
    sweep.add_argument("--runs-dir", type=Path, default=None,
                       help="Where run directories go (default: $LOTTERYWEB_RUNS_DIR or ./runs).")
    sweep.add_argument("--data-dir", type=Path, default=None, help="Dataset directory.")
    sweep.add_argument("--quiet", action="store_true", help="Print only the points and the table.")
    add_spec_arguments(sweep)
    return sweep


def definition_from_args(args) -> SweepDefinition:
    grid: dict[str, list] = {}
    for item in args.grid:
        name, equals, text = item.partition("=")
        dotted = _DOTTED_BY_NAME.get(name.strip().replace("-", "_"))
        if not equals:
            raise SpecError("--grid", f"expected FIELD=V1,V2,..., got {item!r}")
        if dotted is None:
            raise SpecError("--grid", f"unknown spec field {name.strip()!r}; sweepable fields are "
                                      + ", ".join(dotted for dotted, _, _ in spec_fields()))
        if dotted in grid:
            raise SpecError("--grid", f"{dotted} is given twice; list all its values in one --grid")
        grid[dotted] = parse_values(dotted, text)
    points = []
    if args.points is not None:
        if grid:
            raise SpecError("--points", "give --grid or --points, not both")
        points = _read_points(args.points)
    return SweepDefinition.from_dict({"base_spec": spec_data_from_args(args), "grid": grid, "points": points,
                                      "seeds": args.seeds})


def _read_points(path: Path) -> list:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = read_json_object(path, "--points")  # says what is wrong with the file
    if isinstance(data, dict):
        data = data.get("points")
    if not isinstance(data, list) or not data:
        raise SpecError("--points", f"{path} must hold a non-empty JSON list of configurations "
                                    '[{"field": value, ...}, ...] (or {"points": [...]})')
    return [{_DOTTED_BY_NAME.get(name, name): value for name, value in point.items()}
            if isinstance(point, dict) else point for point in data]


def command_sweep(args) -> int:
    if args.max_points < 1:
        raise SpecError("--max-points", f"must be at least 1 (got {args.max_points})")
    definition = definition_from_args(args)
    def runnable_here(spec) -> None:
        entry = datasets.DATASETS[spec.dataset]
        if not entry.is_installed(args.data_dir):
            raise SpecError("dataset", f"{spec.dataset} is not installed: {entry.location_hint(args.data_dir)}")
        spec.check_dataset_fit()
    points = expand(definition, args.max_points, check=runnable_here)
    configurations = definition.configuration_count()
    print(f"{len(points)} experiments: {configurations} configuration{'s' if configurations != 1 else ''} × "
          f"{definition.seeds} seed{'s' if definition.seeds != 1 else ''}")
    if args.dry_run:
        for point in points:
            print(f"  {point.index + 1}. {config_label(point.config)}, seed {point.seed_index}: "
                  f"{point.spec.run_name()}")
        return 0
    runs_dir = args.runs_dir or default_runs_dir()
    results_by_point = []
    for point in points:
        print(f"point {point.index + 1}/{len(points)}: {config_label(point.config)}, seed {point.seed_index}",
              flush=True)
        results_by_point.append(run_experiment(point.spec, runs_dir, callback=Progress(quiet=args.quiet),
                                               data_dir=args.data_dir))
    print(sweep_table(definition, points, results_by_point))
    return 0 if all(results["status"] == "finished" for results in results_by_point) else 1


def sweep_table(definition: SweepDefinition, points: list, results_by_point: list[dict]) -> str:
    """One row per configuration: its swept values, then mean ± std (n) over its seeds."""
    metric = tasks.of_results(results_by_point[0]).metric
    name, scale = ("acc" if metric.key == "accuracy" else metric.label), (100 if metric.percent else 1)
    fields = definition.swept_fields()
    header = [field.rsplit(".", 1)[-1] for field in fields] + [
        "seeds", f"dense test {name}", "best ticket % remaining", f"test {name} at best ticket", "verdict"]
    by_configuration: dict[int, list[dict]] = {}
    for point, results in zip(points, results_by_point):
        by_configuration.setdefault(point.configuration, []).append(
            {"seed_index": point.seed_index, "rows": rows_of_results(results),
             "total_iterations": results.get("total_iterations")})
    rows = []
    for configuration, experiments in by_configuration.items():
        config = next(point.config for point in points if point.configuration == configuration)
        summary = configuration_summary(experiments, metric)
        rows.append([value_text(config.get(field)) for field in fields] + [
            str(summary["seeds"]), band_text(summary["dense"], scale), band_text(summary["best_remaining"], 100, 1),
            band_text(summary["best_metric"], scale), summary["verdict"]["text"]])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.append(f"(mean ± std over seeds; best ticket: the sparsest round within "
                 f"{'one point' if metric.percent else '1%'} of dense; verdict: the winning-ticket test with "
                 "seeds as replicates, n >= 3)")
    return "\n".join(lines)
