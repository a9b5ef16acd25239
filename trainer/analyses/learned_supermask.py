"""Learned supermasks (Zhou, Lan, Liu & Yosinski 2019, NeurIPS, "Deconstructing Lottery Tickets: Zeros,
Signs, and the Supermask", Section 5.1 "Learned supermasks"; their code: uber-research/
deconstructing-lottery-tickets, train_supermask.py and masked_networks.py).

The run's initial weights θ0 stay frozen (or, weights='signed_constant', each layer's weights become
sign(θ0) × the standard deviation of that layer's θ0, as the paper's signed-constant variant); every
conv/linear weight gets a score s, its mask probability is sigmoid(s), and each forward pass uses a
mask sampled from Bernoulli(sigmoid(s)). The gradient of the sampled mask passes straight through
to sigmoid(s) and on to s (trainer.training.score_masks); the weight choices train stacked (one
architecture, the same batches; each its own scores and samples). Only the scores train: SGD with momentum
0.9 and the paper's learning rate 100, scores initialised to 0 (probability 1/2; the paper's
sigmoid_bias), no weight decay, batch 250 (the code's default); the paper trains 2,000 epochs, we
default to 2 (CPU budget), with a cosine decay of the rate that the paper does not use (it keeps it
constant; we share the score-training loop with edge-popup, and a decayed rate settles the
probabilities before evaluation).

Evaluation, as the paper's code: the test accuracy of masks *sampled* from the learned
probabilities, averaged over `eval_samples` samples (10 in the paper). Beside it we report the
*expected* mask (weights × sigmoid(s), a deterministic network that is not a binary mask) and
the % of weights kept: the expected fraction (mean of sigmoid(s), what the paper prints) and the
sampled masks' mean fraction. Every sample is seeded from the run's init seed.
"""
from __future__ import annotations

import statistics

import torch

from trainer import events, models
from trainer.analyses.common import (
    AnalysisContext,
    Cancelled,
    check_score_training,
    execute,
    percent_text,
    round_finished,
    round_started,
    run_score_study,
    summary,
)
from trainer.analyses.params import Param
from trainer.rundir import json_safe
from trainer.seeds import generator
from trainer.training.score_masks import (
    ScoreJob,
    ScoreTraining,
    accuracy_with,
    sampled_masks,
    train_scores_stacked,
)
from trainer.training.stacked import chunks

NAME = "learned_supermask"
WEIGHTS = ("theta_0", "signed_constant")

PARAMS = (
    Param("weights", "str_list", ("theta_0",), "The frozen weights under the mask: the run's θ0, and/or its signed "
          "constant (sign of θ0 × the layer's std of θ0). One learned mask per choice.", choices=WEIGHTS,
          unordered=True, labels=("θ0 of the run", "signed constant of θ0")),
    Param("iterations", "step", "2ep", "Mask training, in iterations ('500it') or epochs of the run's training split "
          "('2ep'); the paper trains 2,000 epochs, scaled down for a CPU."),
    Param("batch_size", "int", 250, "Batch size of the mask training (the paper's code: 250).", minimum=1,
          maximum=4096),
    Param("lr", "float", 100.0, "Learning rate of the scores, decayed to 0 on a cosine (paper: 100, SGD).",
          minimum=1e-6, maximum=10000),
    Param("momentum", "float", 0.9, "SGD momentum of the scores (paper: 0.9).", minimum=0, maximum=0.999),
    Param("score_init", "float", 0.0, "Initial score of every weight (paper: 0, a keep probability of 1/2).",
          minimum=-20, maximum=20),
    Param("eval_samples", "int", 10, "Masks sampled from the learned probabilities to evaluate; the reported accuracy "
          "is their mean (paper: 10).", minimum=1, maximum=100),
)


def run_learned_supermask(run_path, weights=("theta_0",), iterations="2ep", batch_size=250, lr=100.0, momentum=0.9,
                          score_init=0.0, eval_samples=10, *, callback: events.Callback = events.ignore,
                          data_dir=None, stop_requested=lambda: False) -> dict:
    """Learn Bernoulli supermasks on the run's frozen θ0; the result JSON (also in result.json).

    Result: {"masks": [entry per weights choice], "dense": the run's round 0 summary, "chance", ...}; an
    entry has weights, sampled {test_accuracy (mean), test_accuracy_std, test_accuracies, kept_fraction},
    expected {test_accuracy, test_loss}, kept_fraction_expected, layers {name: {shape, total,
    kept_fraction_expected}}, train_loss.
    """
    params = {"weights": list(weights), "iterations": iterations, "batch_size": batch_size, "lr": lr,
              "momentum": momentum, "score_init": score_init, "eval_samples": eval_samples}
    return execute(NAME, PARAMS, run_path, params, _body, callback=callback, data_dir=data_dir,
                   stop_requested=stop_requested)


def check(params: dict, info: dict) -> None:
    check_score_training(params, ("weights",))


def _body(context: AnalysisContext) -> dict:
    return run_score_study(context, check, lambda data, iterations: _learn_all(context, data, iterations))


def _learn_all(context: AnalysisContext, data, iterations: int) -> dict:
    choices = context.params["weights"]
    found = {choice: context.unit_record(choice) for choice in choices}
    missing = [choice for choice in choices if found[choice] is None]
    for part in chunks(len(missing), context.run.stack_size()) if missing else []:
        context.check_stop()
        found.update(_learn_stack(context, data, [missing[index] for index in part], iterations))
    dense = context.run_dir.record(0) if 0 in context.finished_rounds() else None
    return {"masks": [found[choice] for choice in choices], "dense": summary(dense) if dense else None}


def frozen_weights(theta_0: dict, names: list[str], choice: str) -> dict[str, torch.Tensor]:
    """The masked layers' frozen weights: θ0 itself, or sign(θ0) × std(θ0 of the layer)."""
    if choice == "theta_0":
        return {name: theta_0[name].clone() for name in names}
    return {name: torch.sign(theta_0[name]) * theta_0[name].std() for name in names}


def _learn_stack(context: AnalysisContext, data, choices: list[str], iterations: int) -> dict[str, dict]:
    """The masks of `choices` learned stacked (one architecture, the same batches), each stored as a unit."""
    run, params = context.run, context.params
    spec, info, device = run.spec, data.info, data.device
    theta_0 = run.theta_init()
    names = models.prunable_parameter_names(spec.model, info.input_shape, info.num_classes)
    jobs = []
    for choice in choices:
        frozen = {name: weight.to(device) for name, weight in frozen_weights(theta_0, names, choice).items()}
        scores = {name: torch.full(weight.shape, params["score_init"], device=device)
                  for name, weight in frozen.items()}
        network = f"supermask_{choice}"
        round_started(context.callback, network, 0, {}, 0, iterations,
                      sparsity={"remaining_fraction": _expected_fraction(scores)})

        def sample(current, iteration, choice=choice):
            return sampled_masks(current, generator(spec.init_seed, NAME, choice, "train", iteration))
        jobs.append(ScoreJob(network, run.model_with({**theta_0, **frozen}), frozen, scores, sample))
    plan = ScoreTraining(iterations, params["lr"], params["momentum"], 0.0, spec.data_seed,
                         spec.training.metrics_interval)
    results = train_scores_stacked(jobs, data, plan, callback=context.callback, stop_requested=context.stop_requested)
    if any(result.status == "cancelled" for result in results):
        raise Cancelled()
    return {choice: _evaluate(context, data, choice, job, result, iterations, len(jobs))
            for choice, job, result in zip(choices, jobs, results)}


def _evaluate(context: AnalysisContext, data, choice: str, job: ScoreJob, result, iterations: int,
              stacked_with: int) -> dict:
    """The learned mask's record (sampled and expected masks on the test set), stored as the unit `choice`."""
    seed, samples = context.run.spec.init_seed, context.params["eval_samples"]
    model, frozen, scores = job.model, job.frozen, job.scores
    accuracies, kept = [], []
    for sample in range(samples):
        with torch.no_grad():
            masks = sampled_masks(scores, generator(seed, NAME, choice, "evaluation", sample))
        accuracies.append(accuracy_with(model, frozen, masks, data.test_inputs, data.test_y)[1])
        kept.append(sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()))
    probabilities = {name: torch.sigmoid(score) for name, score in scores.items()}
    expected_loss, expected_accuracy = accuracy_with(model, frozen, probabilities, data.test_inputs, data.test_y)
    finished = result.status == "finished"
    record = {"round": 0, "network": job.network, "status": result.status, "message": result.message,
              "weights": choice, "iterations": iterations,
              "sampled": {"test_accuracy": statistics.fmean(accuracies) if finished else None,
                          "test_accuracy_std": statistics.pstdev(accuracies) if finished else None,
                          "test_accuracies": accuracies if finished else [],
                          "kept_fraction": statistics.fmean(kept)},
              "expected": {"test_accuracy": expected_accuracy if finished else None,
                           "test_loss": expected_loss if finished else None},
              "kept_fraction_expected": _expected_fraction(scores),
              "layers": {name: {"shape": list(p.shape), "total": p.numel(), "kept_fraction_expected": p.mean().item()}
                         for name, p in probabilities.items()},
              "train_loss": result.train_loss, "stacked_with": stacked_with,
              "wall_seconds": round(result.wall_seconds, 3)}
    context.save_unit(choice, record)
    round_finished(context.callback, record)
    return json_safe(record)


def _expected_fraction(scores: dict[str, torch.Tensor]) -> float:
    """Mean keep probability over every masked weight (the expected % of weights kept)."""
    total = sum(score.numel() for score in scores.values())
    return sum(torch.sigmoid(score).sum().item() for score in scores.values()) / total


def summary_lines(result: dict) -> list[str]:
    dense = ((result.get("dense") or {}).get("final") or {}).get("test_accuracy")
    lines = [f"learned Bernoulli supermasks on the run's frozen weights, {result['iterations']} iterations; "
             f"dense (trained) {percent_text(dense)}, chance {percent_text(result['chance'])}",
             f"{'weights':<16} {'% kept (expected)':>17} {'sampled acc':>11} {'± std':>7} {'expected-mask acc':>17}"]
    for entry in result["masks"]:
        sampled = entry["sampled"]
        std = sampled.get("test_accuracy_std")
        lines.append(f"{entry['weights']:<16} {100 * entry['kept_fraction_expected']:>17.2f} "
                     f"{percent_text(sampled['test_accuracy']):>11} {'-' if std is None else f'{100 * std:.2f}':>7} "
                     f"{percent_text(entry['expected']['test_accuracy']):>17}")
    return lines
