"""Linear mode connectivity and instability (Frankle, Dziugaite, Roy & Carbin 2020).

From θk of a finished run, either the dense network (round 0) or round r's ticket (its mask
on θk), two copies train from iteration k to T with different data orders (SGD noise). The
test error of (1-α)θA + αθB is measured at evenly spaced α (masked networks stay masked;
batch-norm statistics are recomputed at every point, see trainer.training.interpolation), and

    instability = max error on the path - mean of the two end errors;
    the network is stable when instability < 2% (STABILITY_THRESHOLD).

A sweep over rewind steps k needs θk for each k: θ0 and the run's own θk are on disk; any
other k retrains round 0's dense network from θ0 to k with the run's data seed, which is
deterministic (the same batches and rates as the run's round 0), and caches it in
<run>/analyses/connectivity/rewind_points/. For a ticket (round r > 0) and a k other than
the run's, the run's mask (found with the run's own rewind point) is paired with θk.
"""
from __future__ import annotations

from trainer import events
from trainer.analyses import events as aevents
from trainer.analyses.common import (
    AnalysisContext,
    Cancelled,
    check_rounds,
    execute,
    percent_text,
    round_finished,
    round_started,
    segment_record,
    summary,
    train_networks,
)
from trainer.analyses.params import Param
from trainer.pruning import masks
from trainer.rundir import save_tensor_dict_atomically
from trainer.seeds import derive_seed, generator
from trainer.spec import SpecError
from trainer.steps import Step
from trainer.training.interpolation import batch_norm_layers, evaluate_path, evenly_spaced, statistics_batches

NAME = "connectivity"
STABILITY_THRESHOLD = 0.02
COPIES = ("copy_a", "copy_b")

PARAMS = (
    Param("round", "int", 0, "0 = the dense network; r > 0 = round r's ticket (its mask on θk).",
          minimum=0, maximum=100),
    Param("rewind_steps", "step_list", (), "Rewind points k to start the two copies from, e.g. 0it,100it,1ep; "
          "empty = the run's own rewind step.", unordered=True),
    Param("points", "int", 25, "Evenly spaced interpolation points from α=0 to α=1 (both ends included).",
          minimum=3, maximum=201),
    Param("seed", "int", 0, "Which pair of data orders the two copies use (another seed = another pair).",
          minimum=0, maximum=2**31 - 1),
    Param("bn_batches", "int", 20, "Training batches used to recompute batch-norm statistics at each point "
          "(models with batch norm only).", minimum=1, maximum=10000),
)


def run_connectivity(run_path, round=0, rewind_steps=(), points=25, seed=0, bn_batches=20, *,  # noqa: A002
                     callback: events.Callback = events.ignore, data_dir=None, stop_requested=lambda: False) -> dict:
    """Instability of the run's round-`round` network for each rewind step; the result JSON.

    Result: {"curves": [{"rewind_iteration", "alpha", "test_error", "test_loss", "test_accuracy",
    "instability", "stable", "endpoint_errors", "copies": [summary A, summary B], ...}, ...],
    "instability_vs_k": {"rewind_iteration": [...], "instability": [...], "stable": [...]},
    "round", "remaining_fraction", "stability_threshold", "data_seeds", "total_iterations", ...}.
    """
    params = {"round": round, "rewind_steps": list(rewind_steps), "points": points, "seed": seed,
              "bn_batches": bn_batches}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested)


def copy_data_seeds(data_seed: int, seed: int) -> list[int]:
    return [derive_seed(data_seed, "connectivity", seed, copy) % (2**31) for copy in COPIES]


def _body(context: AnalysisContext) -> dict:
    params = context.params
    round_index = params["round"]
    if round_index not in context.finished_rounds():
        raise SpecError("round", f"round {round_index} is not finished in {context.run_dir.path} "
                                 f"(finished: {context.finished_rounds() or 'none'})")
    if (done := context.reuse_finished()) is not None:
        return done
    run = context.run
    steps = params["rewind_steps"] or [run.spec.rewind_step]
    rewind_iterations = []
    for index, text in enumerate(steps):
        k = Step.parse(text).to_iterations(run.data.iterations_per_epoch)
        if k >= run.total_iterations:
            raise SpecError(f"rewind_steps[{index}]", f"{text} ({k} iterations) must be before the end of "
                                                      f"training ({run.total_iterations} iterations)")
        rewind_iterations.append(k)
    rewind_iterations = sorted(set(rewind_iterations))
    context.start()
    mask = context.run_dir.mask(round_index)
    seeds = copy_data_seeds(run.spec.data_seed, params["seed"])
    curves = [_curve(context, k, mask, seeds) for k in rewind_iterations]
    return context.finish({
        "round": round_index, "remaining_fraction": run.sparsity(mask)["remaining_fraction"],
        "stability_threshold": STABILITY_THRESHOLD, "data_seeds": seeds, "total_iterations": run.total_iterations,
        "run_rewind_iteration": run.rewind_iteration, "curves": curves,
        "instability_vs_k": {"rewind_iteration": [c["rewind_iteration"] for c in curves],
                             "instability": [c["instability"] for c in curves],
                             "stable": [c["stable"] for c in curves]},
    })


def rewind_point(context: AnalysisContext, k: int) -> dict:
    """θk of the run's dense round 0: from disk, or retrained from θ0 to k (deterministic) and cached."""
    run, run_dir = context.run, context.run_dir
    if k == 0:
        return run.theta_init()
    if k == run.rewind_iteration and run_dir.theta_rewind_path.exists():
        return run_dir.load_state(run_dir.theta_rewind_path)
    cache = run_dir.path / "analyses" / NAME / "rewind_points" / f"theta_{k:07d}.pt"
    if cache.exists():
        return run_dir.load_state(cache)
    context.check_stop()
    model = run.model_with(run.theta_init())
    dense = masks.dense_mask(model, run.prunable)
    callback = aevents.tagged(context.callback, rewind_iteration=k)
    round_started(callback, "rewind_point", 0, dense, 0, k)
    [(segment, state)] = train_networks([model], [dense], run.data, run.spec, 0, k, round_index=0,
                                        networks=["rewind_point"], callback=callback,
                                        stop_requested=context.stop_requested)
    if segment.status == "cancelled":
        raise Cancelled()
    if segment.status != "finished":
        raise RuntimeError(f"retraining round 0 to iteration {k} {segment.status}: {segment.message}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_tensor_dict_atomically(state, cache)
    return run_dir.load_state(cache)


def _curve(context: AnalysisContext, k: int, mask: masks.Mask, seeds: list[int]) -> dict:
    path_unit = f"k_{k:07d}/path"
    stored = context.unit_record(path_unit)
    if stored is not None:
        return stored
    run = context.run
    callback = aevents.tagged(context.callback, rewind_iteration=k)
    units = [f"k_{k:07d}/{copy}" for copy in COPIES]
    records = [context.unit_record(unit) for unit in units]
    missing = [index for index, record in enumerate(records) if record is None]
    if missing:
        context.check_stop()
        theta_k = rewind_point(context, k)
        models = [run.model_with(theta_k) for _ in missing]
        sparsity = run.sparsity(mask)
        for index in missing:
            round_started(callback, COPIES[index], context.params["round"], mask, k, run.total_iterations,
                          sparsity=sparsity)
        trained = train_networks(models, [mask] * len(missing), run.data, run.spec, k, run.total_iterations,
                                 round_index=context.params["round"], networks=[COPIES[i] for i in missing],
                                 data_seeds=[seeds[i] for i in missing], callback=callback,
                                 stop_requested=context.stop_requested)
        for index, (segment, state) in zip(missing, trained):
            if segment.status == "cancelled":
                raise Cancelled()
            record = segment_record(segment, mask, round_index=context.params["round"], network=COPIES[index],
                                    start_iteration=k, end_iteration=run.total_iterations, sparsity=sparsity,
                                    data_seed=seeds[index])
            context.save_unit(units[index], record, state)
            round_finished(callback, record)
            records[index] = record
        if len(trained) < len(missing):
            raise Cancelled()
    states = [context.unit_state(unit) for unit in units]
    curve = {"rewind_iteration": k, "copies": [summary(r) for r in records]}
    if any(r["status"] != "finished" for r in records):
        curve.update(status="diverged", instability=None, stable=None)
        context.save_unit(path_unit, curve)
        return curve
    model = run.fresh_model(run.spec.init_seed)
    bn_batches = None
    if batch_norm_layers(model):
        bn_batches = statistics_batches(run.data.train_inputs, run.data.batch_size, context.params["bn_batches"],
                                        generator(run.spec.data_seed, "connectivity_bn", context.params["seed"]))

    def on_point(alpha, loss, accuracy):
        callback(aevents.make_event(aevents.INTERPOLATION_POINT, NAME, rewind_iteration=k, alpha=alpha,
                                    test_error=1.0 - accuracy, test_accuracy=accuracy))

    path = evaluate_path(model, states[0], states[1], evenly_spaced(context.params["points"]),
                         run.data.test_inputs, run.data.test_y, mask=mask, bn_batches=bn_batches, on_point=on_point)
    curve.update(status="finished", alpha=path["alpha"], test_error=path["error"], test_loss=path["loss"],
                 test_accuracy=path["accuracy"], batch_norm_recomputed=path["batch_norm_recomputed"],
                 endpoint_errors=[path["error"][0], path["error"][-1]], instability=path["instability"],
                 stable=path["instability"] < STABILITY_THRESHOLD)
    context.save_unit(path_unit, curve)
    return curve


def check(params: dict, info: dict) -> None:
    check_rounds(params, info)
    if params["round"] not in info["finished_rounds"]:
        raise SpecError("round", f"round {params['round']} is not a finished round of this run")


def summary_lines(result: dict) -> list[str]:
    lines = [f"round {result['round']} ({100 * result['remaining_fraction']:.1f}% remaining)",
             f"{'k (it)':>7} {'end errors':>17} {'max error':>9} {'instability':>11} stable"]
    for curve in result["curves"]:
        if curve["status"] != "finished":
            lines.append(f"{curve['rewind_iteration']:>7} {curve['status']}")
            continue
        ends = " / ".join(percent_text(e) for e in curve["endpoint_errors"])
        lines.append(f"{curve['rewind_iteration']:>7} {ends:>17} {percent_text(max(curve['test_error'])):>9} "
                     f"{percent_text(curve['instability']):>11} {'yes' if curve['stable'] else 'no'}")
    return lines
