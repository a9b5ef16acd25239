"""The early phase of training (Frankle, Schwab & Morcos 2020, "The Early Phase of Neural Network
Training", ICLR, Sections 4-5), on a finished IMP run with late rewinding (k > 0).

For each chosen pruned round r, the run's ticket (round r's mask on θk) is perturbed, and each
perturbed network is trained like the ticket: the same mask, iterations k..T, the run's
training settings and data order. The perturbations (trainer.pruning.perturbations) change only
the survivors: signs of θ0 with |θk|, |θ0| with the signs of θk, sign flips (all, or a random
fraction), shuffles (global: across all prunable layers; per layer; within each output
neuron/filter; and the same three only among weights of the same sign), and Gaussian noise of
std α·σ_layer (σ_layer: the std of the layer's initialisation distribution) for each α.

Beside them: the unperturbed ticket (the run's own round r, reused, not retrained) and the k=0
reference, "rewind to 0": round r's mask on θ0, trained iterations 0..T. The run rewinds to k,
so it has no k=0 ticket of its own; this one uses the masks found with rewinding to k.

Every random draw has its own generator seeded from the run's init seed, the study's `seed`, the
perturbation and the round, so results are deterministic. All networks that share a segment
(k..T for the perturbations, 0..T for rewind to 0) train stacked, across rounds; each finished
network is a unit of work stored at once, so a cancelled study resumes where it stopped.
"""
from __future__ import annotations

from trainer import events
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
)
from trainer.analyses.params import Param
from trainer.pruning import criteria, perturbations as ticket_perturbations
from trainer.seeds import generator
from trainer.spec import SpecError
from trainer.steps import Step
from trainer.training.stacked import chunks
from trainer.training.stacked_loop import train_segments

NAME = "early_phase"
REWIND_TO_ZERO = "rewind_to_zero"
NOISE = "noise"
DEFAULT_ALPHAS = (0.5, 1.0, 2.0)

PARAMS = (
    Param("rounds", "int_list", (), "Pruned rounds of the run whose tickets are perturbed; empty = every finished "
          "pruned round.", minimum=1, maximum=100, unordered=True),
    Param("perturbations", "str_list", ticket_perturbations.PERTURBATIONS,
          "Perturbations of the ticket at θk, each then trained k..T: init_signs (signs of θ0, |θk|), "
          "init_magnitudes (|θ0|, signs of θk), flip_signs (all), flip_signs_random (a random flip_fraction per "
          "layer), shuffle_global / shuffle_layer / shuffle_unit (survivors permuted across all prunable layers, "
          "within each layer, within each neuron/filter) and their _same_sign forms (permuted only among weights "
          "of the same sign).", choices=ticket_perturbations.PERTURBATIONS, unordered=True),
    Param("flip_fraction", "float", 0.5, "Fraction of each layer's survivors whose sign flip_signs_random flips.",
          minimum=0.01, maximum=1.0),
    Param("noise_alphas", "float_list", DEFAULT_ALPHAS, "Gaussian noise on the survivors of θk with std α × the "
          "layer's init std, one network per α; empty = no noise.", minimum=0.01, maximum=100.0, unordered=True),
    Param("seed", "int", 0, "Which draw of the random perturbations (shuffles, random flips, noise); another seed "
          "is another draw.", minimum=0, maximum=2**31 - 1),
)


def run_early_phase(run_path, rounds=(), perturbations=ticket_perturbations.PERTURBATIONS, flip_fraction=0.5,
                    noise_alphas=DEFAULT_ALPHAS, seed=0, *, callback: events.Callback = events.ignore, data_dir=None,
                    stop_requested=lambda: False) -> dict:
    """Perturb the run's tickets at θk and train them; the result JSON (also in result.json).

    Result: {"perturbations": {network: [entry per round]}, "ticket": [the run's round records],
    "rewind_to_zero": [entry per round], "dense": round 0 summary, "noise_alphas", "rounds",
    "rewind_iteration", "total_iterations", ...}; network is a perturbation's name or "noise_<α>";
    an entry is a round record (remaining_fraction, early_stop, final, curve, ...) plus
    "perturbation" and "alpha" (noise only).
    """
    params = {"rounds": list(rounds), "perturbations": list(perturbations), "flip_fraction": flip_fraction,
              "noise_alphas": list(noise_alphas), "seed": seed}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested)


def noise_network(alpha: float) -> str:
    return f"{NOISE}_{alpha:g}"


def _unit(network: str, round_index: int) -> str:
    return f"{network}/round_{round_index:03d}"


def require_rewinding(rewind_step: str) -> None:
    if Step.parse(rewind_step).amount == 0:
        raise SpecError("analysis", f"the run rewinds to θ0 (rewind_step {rewind_step}); the early-phase study "
                                    f"perturbs tickets at θk with k > 0: use a run with a later rewind_step")


def _body(context: AnalysisContext) -> dict:
    params = context.params
    require_rewinding(context.run_dir.spec.rewind_step)
    if not params["perturbations"] and not params["noise_alphas"]:
        raise SpecError("perturbations", "choose at least one perturbation or noise α")
    rounds = context.require_rounds(params["rounds"], "rounds", minimum=1)
    if (done := context.reuse_finished()) is not None:
        return done
    context.start()
    records = {r["round"]: r for r in context.run_dir.records()}
    networks = [(name, None) for name in params["perturbations"]] + [(NOISE, a) for a in params["noise_alphas"]]
    perturbed = [(name, alpha, r) for name, alpha in networks for r in rounds]
    reference = [(REWIND_TO_ZERO, None, r) for r in rounds]
    found = _train_missing(context, perturbed, rewind=True)
    found.update(_train_missing(context, reference, rewind=False))
    by_network: dict[str, list] = {}
    for name, alpha, round_index in perturbed:
        network = _network(name, alpha)
        by_network.setdefault(network, []).append(found[_unit(network, round_index)])
    first = records[rounds[0]]
    return context.finish({
        "rounds": rounds, "perturbations": by_network, "noise_alphas": params["noise_alphas"],
        "ticket": [{**records[r], "network": "ticket", "source": "imp_run"} for r in rounds],
        REWIND_TO_ZERO: [found[_unit(REWIND_TO_ZERO, r)] for r in rounds],
        "dense": summary(records[0]) if 0 in records else None,
        "rewind_iteration": first["start_iteration"], "total_iterations": first["end_iteration"],
    })


def _network(name: str, alpha: float | None) -> str:
    return noise_network(alpha) if name == NOISE else name


def start_state(context: AnalysisContext, name: str, alpha: float | None, round_index: int) -> dict:
    """The weights a network starts from: θ0 for rewind to 0, else θk perturbed; pruned weights zero."""
    run, params = context.run, context.params
    mask = context.run_dir.mask(round_index)
    if name == REWIND_TO_ZERO:
        return run.theta_init()
    theta_k, theta_0 = run.theta_rewind(), run.theta_init()
    draws = generator(run.spec.init_seed, NAME, params["seed"], _network(name, alpha), round_index)
    if name == NOISE:
        stds = criteria.layer_init_stds(run.spec.model, theta_0, mask)
        return ticket_perturbations.add_noise(theta_k, mask, alpha, stds, draws)
    return ticket_perturbations.perturb(name, theta_k, theta_0, mask, generator=draws,
                                        flip_fraction=params["flip_fraction"])


def _train_missing(context: AnalysisContext, todo: list[tuple], rewind: bool) -> dict[str, dict]:
    """Records of every (name, alpha, round) in `todo` by unit: stored ones as they are, the others
    trained stacked (from k, or from 0 for the reference) and stored as each stack finishes."""
    found, missing = {}, []
    for name, alpha, round_index in todo:
        unit = _unit(_network(name, alpha), round_index)
        stored = context.unit_record(unit)
        if stored is not None:
            found[unit] = stored
        else:
            missing.append((name, alpha, round_index))
    if not missing:
        return found
    run = context.run
    start, end = (run.rewind_iteration if rewind else 0), run.total_iterations
    for part in chunks(len(missing), run.stack_size()):
        context.check_stop()
        batch = [missing[index] for index in part]
        found.update(_train_stack(context, batch, start, end))
    return found


def _train_stack(context: AnalysisContext, batch: list[tuple], start: int, end: int) -> dict[str, dict]:
    run = context.run
    labels, built = {}, []
    for name, alpha, round_index in batch:
        network = _network(name, alpha)
        mask = context.run_dir.mask(round_index)
        sparsity = run.sparsity(mask)
        labels[f"{network}@{round_index}"] = (network, round_index)
        built.append((run.model_with(start_state(context, name, alpha, round_index)), mask, sparsity))
        round_started(context.callback, network, round_index, mask, start, end, sparsity=sparsity)

    def relabel(event: dict) -> None:
        network, round_index = labels.get(event.get("network"), (event.get("network"), event.get("round")))
        context.callback({**event, "network": network, "round": round_index})

    segments, _ = train_segments([model for model, _, _ in built], [mask for _, mask, _ in built], run.data,
                                 run.spec, start, end, round_index=batch[0][2], networks=list(labels),
                                 stack_size=len(batch), callback=relabel, stop_requested=context.stop_requested)
    done = {}
    for (name, alpha, round_index), (_, mask, sparsity), segment in zip(batch, built, segments):
        if segment.status == "cancelled":
            raise Cancelled()
        network = _network(name, alpha)
        record = segment_record(segment, mask, round_index=round_index, network=network, start_iteration=start,
                                end_iteration=end, sparsity=sparsity, perturbation=name, alpha=alpha)
        context.save_unit(_unit(network, round_index), record)
        round_finished(context.callback, record)
        done[_unit(network, round_index)] = record
    return done


def check(params: dict, info: dict) -> None:
    check_rounds(params, info)
    if info.get("rewind_step") is not None:
        require_rewinding(info["rewind_step"])
    if not params.get("perturbations") and not params.get("noise_alphas"):
        raise SpecError("perturbations", "choose at least one perturbation or noise α")


def summary_lines(result: dict) -> list[str]:
    lines = [(f"perturbed at k = {result.get('rewind_iteration')} and trained to {result.get('total_iterations')}; "
              f"rewind to 0: the same masks on θ0, trained from 0"),
             f"{'network':<26} {'round':>5} {'% remaining':>11} {'early-stop acc':>14} {'final acc':>9}"]
    groups = {"ticket (unperturbed)": result.get("ticket") or [], REWIND_TO_ZERO: result.get(REWIND_TO_ZERO) or [],
              **(result.get("perturbations") or {})}
    for network, entries in groups.items():
        for entry in entries:
            lines.append(f"{network:<26} {entry['round']:>5} {100 * entry['remaining_fraction']:>11.1f} "
                         f"{percent_text((entry.get('early_stop') or {}).get('test_accuracy')):>14} "
                         f"{percent_text((entry.get('final') or {}).get('test_accuracy')):>9}")
    return lines
