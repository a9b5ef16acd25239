"""Reproduction checks (trainer/reproduce/): every check end to end at the tiny budget, each verdict
rule on made-up measurements, matching_checks, resume, cancel, and the CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.cli.main import main
from trainer.reproduce import (
    BUDGETS,
    CHECK_PROGRESS,
    CHECKS,
    agent_tickets,
    early_bird_convergence,
    early_phase_signs,
    edge_popup_subnetworks,
    iterative_vs_one_shot,
    language_model_tickets,
    learned_supermask_accuracy,
    lenet_stability,
    malach_width,
    matching_checks,
    optimizer_transfer,
    pretraining_random_labels,
    result_path,
    retraining_modes,
    run_check,
    shared_weight_tickets,
    supermask,
    synflow_collapse,
    task_tickets,
    tickets_vs_dense,
)
from trainer.reproduce.base import FAILS, HOLDS, UNDECIDED
from trainer.spec import SpecError

ROOT = Path(__file__).resolve().parents[3]
RESULT_KEYS = {"name", "title", "claim", "source", "tolerance", "budget", "status", "verdict", "reason", "measured",
               "summary", "chart", "protocol", "run_paths", "wall_seconds"}
# tiny runs on synthetic images; the language-model and agent checks on their embedded corpus and environment
TINY_DATASETS = {"synthetic", "python_docs", "cartpole"}


@pytest.fixture(scope="module")
def shared_runs_root(tmp_path_factory):
    """One runs root for the tiny runs of every check: the checks that share the LeNet run reuse it."""
    return tmp_path_factory.mktemp("reproduce_runs")


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- end to end -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CHECKS))
def test_every_check_runs_end_to_end_at_the_tiny_budget(name, shared_runs_root):
    seen = []
    result = run_check(name, shared_runs_root, budget="tiny", callback=seen.append)
    assert RESULT_KEYS <= set(result)
    assert result["name"] == name and result["budget"] == "tiny" and result["status"] == "finished"
    # tiny is a smoke test: never a verdict on the claim, but the reason says what the rule found
    assert result["verdict"] == "INCONCLUSIVE" and result["reason"].startswith("tiny is a smoke-test budget")
    assert result["measured"] and all(value is None or isinstance(value, (int, float))
                                      for value in result["measured"].values())
    chart = result["chart"]
    assert {"title", "x_label", "y_label", "log_x", "series"} <= set(chart) and chart["series"]
    assert all(len(series["x"]) == len(series["y"]) for series in chart["series"])
    assert result["protocol"] == CHECKS[name].protocol("tiny")
    assert all(step["spec"]["dataset"] in TINY_DATASETS for step in result["protocol"]["steps"])
    assert result["run_paths"] and all(Path(path, "spec.json").is_file() for path in result["run_paths"])
    assert json.loads(result_path(shared_runs_root, name, "tiny").read_text()) == result
    json.dumps(result, allow_nan=False)
    progress = [event for event in seen if event["type"] == CHECK_PROGRESS]
    assert progress and all(event["check"] == name for event in seen)
    assert [event["done"] for event in progress] == sorted(event["done"] for event in progress)
    assert progress[-1]["done"] == progress[-1]["total"] > 0


def test_a_second_run_of_a_check_trains_nothing(tmp_path):
    first = run_check("lenet_stability", tmp_path, budget="tiny")
    seen = []
    second = run_check("lenet_stability", tmp_path, budget="tiny", callback=seen.append)
    types = {event["type"] for event in seen}
    assert "round_started" not in types and "metrics" not in types
    assert "round_skipped" in types or "unit_skipped" in types
    assert second["measured"] == first["measured"] and second["run_paths"] == first["run_paths"]


def test_a_stop_request_ends_the_check_cancelled_and_inconclusive(tmp_path):
    result = run_check("retraining_modes", tmp_path, budget="tiny", stop_requested=lambda: True)
    assert result["status"] == "cancelled" and result["verdict"] == "INCONCLUSIVE"
    assert json.loads(result_path(tmp_path, "retraining_modes", "tiny").read_text())["status"] == "cancelled"


@pytest.mark.parametrize("name, budget", [("nope", "tiny"), ("supermask", "huge")])
def test_unknown_name_or_budget_is_a_spec_error(name, budget, tmp_path):
    with pytest.raises(SpecError):
        run_check(name, tmp_path, budget=budget)
    assert not (tmp_path / "reproduce").exists()


def test_every_check_states_its_claim_source_tolerance_and_protocol_per_budget():
    for check in CHECKS.values():
        assert check.claim and check.source and check.tolerance and check.title
        for budget in BUDGETS:
            protocol = check.protocol(budget)
            assert protocol["budget"] == budget and protocol["steps"]
            json.dumps(protocol)
    small = CHECKS["tickets_vs_dense"].protocol("small")["steps"][0]["spec"]
    assert small["training"]["optimizer"] == "adam" and small["training"]["lr"] == 0.0012
    assert small["training"]["batch_size"] == 60 and small["pruning"]["layer_fractions"] == {"fc3.weight": 0.1}


# ---- verdict rules on made-up measurements ----------------------------------------------------

def _tickets(**changes):
    measured = {"reference_round": 7, "remaining_fraction": 0.211, "tolerance": 0.005, "replicates": 3,
                "dense_accuracy": 0.876, "ticket_accuracy": 0.889, "reinit_accuracy": 0.860,
                "ticket_minus_dense": 0.013, "ticket_minus_dense_ci_low": 0.008, "ticket_minus_dense_ci_high": 0.018,
                "dense_early_stop_iteration": 4250.0, "ticket_early_stop_iteration": 2500.0,
                "reinit_minus_dense": -0.016, "reinit_minus_dense_ci_low": -0.025, "reinit_minus_dense_ci_high": -0.007,
                "reinit_replicates": 3, "ticket_minus_reinit": 0.029}
    return {**measured, **changes}


def _iterative(**changes):
    return {"remaining_fraction": 0.07, "tolerance": 0.005, "replicates": 3, "iterative_accuracy": 0.89,
            "one_shot_accuracy": 0.88, "iterative_minus_one_shot": 0.01, "ci_low": 0.0, "ci_high": 0.02, **changes}


def _retraining(lr, weight, fine):
    return {"lr_rewinding_accuracy": lr, "weight_rewinding_accuracy": weight, "fine_tuning_accuracy": fine}


def _synflow(*accuracies, empty_layers=(0, 0, 0, 0)):
    """accuracies of synflow, snip, grasp, magnitude; 1 point above chance or less counts as collapsed (flow cut)."""
    measured = {"remaining_fraction": 0.0011, "chance": 0.1}
    for method, accuracy, empty in zip(("synflow", "snip", "grasp", "magnitude"), accuracies, empty_layers):
        measured.update({f"{method}_empty_layers": empty, f"{method}_accuracy": accuracy,
                         f"{method}_collapsed": int(empty > 0 or accuracy <= 0.11)})
    return measured


def _early_bird(found, epochs=40, window=5):
    return {"early_bird_epoch": found, "epochs": epochs, "window": window}


def _optimizer_transfer(adam_to_sgd, sgd_to_adam):
    """(ticket, random ticket) accuracies per direction."""
    measured = {}
    for direction, (ticket, random) in (("adam_to_sgd", adam_to_sgd), ("sgd_to_adam", sgd_to_adam)):
        measured.update({f"{direction}_ticket_accuracy": ticket, f"{direction}_random_ticket_accuracy": random,
                         f"{direction}_own_ticket_accuracy": 0.89, f"{direction}_remaining_fraction": 0.108})
    return measured


def _early_phase(ticket, flipped, shuffled, same_sign):
    return {"ticket_accuracy": ticket, "flip_signs_accuracy": flipped, "shuffle_layer_accuracy": shuffled,
            "shuffle_unit_same_sign_accuracy": same_sign}


def _pretraining(ticket, short, long):
    return {"ticket_accuracy": ticket, "short_accuracy": short, "long_accuracy": long}


def _edge_popup(narrow: tuple, wide: tuple) -> dict:
    """Measured accuracies at k = 10, 30, 50, 70, 90% for widths ×1 and ×2, built as measurements() does."""
    results = {"spec": {"dataset": "fashion_mnist"}}
    analysis = {"subnetworks": [{"width": width, "kept_percent": k, "test_accuracy": accuracy}
                                for width, row in ((1.0, narrow), (2.0, wide))
                                for k, accuracy in zip(edge_popup_subnetworks.KEPT_PERCENTS, row)],
                "dense": [{"width": 1.0, "final": {"test_accuracy": 0.89}},
                          {"width": 2.0, "final": {"test_accuracy": 0.9}}]}
    return edge_popup_subnetworks.measurements(results, analysis)["measured"]


def _malach(*errors) -> dict:
    """Measured relative approximation errors at widths 25, 50, ... (one per error), built as measurements() does."""
    entries = [{"width": 25 * 2 ** index, "relative_mse": error, "agreement": 0.8}
               for index, error in enumerate(errors)]
    return malach_width.measurements({"approximation": entries, "target": {"test_accuracy": 0.85}})["measured"]


def _learned(sampled, dense_theta_0=0.07) -> dict:
    """Measured: the sampled masks' accuracy and the dense θ0 network's, built as measurements() does."""
    results = {"spec": {"dataset": "fashion_mnist"},
               "rounds": [{"round": 0, "replicate": 0, "curve": {"iteration": [0, 2000],
                                                                 "test_accuracy": [dense_theta_0, 0.86]}}]}
    analysis = {"iterations": 440, "dense": {"final": {"test_accuracy": 0.86}},
                "masks": [{"weights": "theta_0", "sampled": {"test_accuracy": sampled, "test_accuracy_std": 0.005,
                                                             "kept_fraction": 0.5},
                           "expected": {"test_accuracy": sampled}, "kept_fraction_expected": 0.5}]}
    return learned_supermask_accuracy.measurements(results, analysis)["measured"]


def _weight_agnostic(ticket: tuple, random: tuple) -> dict:
    """Measured at round 7 (and round 12, reported) from accuracies at w = -1, 1, 2, built as measurements() does."""
    def entry(kind, round_index, accuracies):
        return {"round": round_index, "kind": kind, "remaining_fraction": 0.8 ** round_index,
                "weight_values": [-1.0, 1.0, 2.0], "test_accuracy": list(accuracies),
                "mean_accuracy": None if None in accuracies else sum(accuracies) / len(accuracies)}
    analysis = {"chance": 0.1, "weight_values": [-1.0, 1.0, 2.0],
                "ticket": [entry("ticket", 7, ticket), entry("ticket", 12, ticket)],
                "random": [entry("random", 7, random), entry("random", 12, random)]}
    return shared_weight_tickets.measurements(analysis, 7)["measured"]


def _task_results(metric: str, dense: tuple, ticket: tuple, reinit: tuple) -> dict:
    """A results.json of an IMP run with one replicate per value: test `metric` at early stop of dense (round 0),
    the ticket and the random reinit at round 5. Every record also holds a test_accuracy that orders them the
    other way round, which a check of another task must not read."""
    def record(round_index, value):
        if value is None:
            return {"round": round_index, "status": "diverged", "remaining_fraction": 0.8 ** round_index}
        return {"round": round_index, "status": "finished", "remaining_fraction": 0.8 ** round_index,
                "early_stop": {"iteration": 150, f"test_{metric}": value, "test_accuracy": -value}}
    entries = [{"rounds": [record(0, d), record(5, t)], "controls": {"random_reinit": [record(5, r)]}}
               for d, t, r in zip(dense, ticket, reinit)]
    return {"spec": {"control_rounds": [5]}, **entries[0],
            "replicates": [{"replicate": index, **entry} for index, entry in enumerate(entries[1:], 1)]}


def _language_model(dense, ticket, reinit) -> dict:
    """Measured from per-replicate test perplexities (lower is better), built as measurements() does."""
    return language_model_tickets.measurements(_task_results("perplexity", dense, ticket, reinit))["measured"]


def _agent(dense, ticket, reinit) -> dict:
    """Measured from per-replicate test mean returns (higher is better), built as measurements() does."""
    return agent_tickets.measurements(_task_results("return", dense, ticket, reinit))["measured"]


VERDICT_CASES = [
    (tickets_vs_dense, _tickets(), "PASS"),
    (tickets_vs_dense, _tickets(ticket_early_stop_iteration=4500.0), "FAIL"),  # the ticket learns slower
    (tickets_vs_dense, _tickets(ticket_minus_dense=-0.03, ticket_minus_dense_ci_high=-0.02), "FAIL"),
    (tickets_vs_dense, _tickets(reinit_minus_dense=0.001, reinit_minus_dense_ci_low=-0.004,
                                reinit_minus_dense_ci_high=0.006), "FAIL"),  # reinit stays at dense level
    (tickets_vs_dense, _tickets(reinit_minus_dense=-0.003, reinit_minus_dense_ci_low=-0.012,
                                reinit_minus_dense_ci_high=0.006), "INCONCLUSIVE"),
    (tickets_vs_dense, _tickets(replicates=2), "INCONCLUSIVE"),
    (tickets_vs_dense, _tickets(ticket_minus_dense=None), "INCONCLUSIVE"),  # diverged
    (iterative_vs_one_shot, _iterative(), "PASS"),
    (iterative_vs_one_shot, _iterative(iterative_minus_one_shot=-0.004), "PASS"),  # within tolerance
    (iterative_vs_one_shot, _iterative(iterative_minus_one_shot=-0.03, ci_high=-0.01), "FAIL"),
    (iterative_vs_one_shot, _iterative(iterative_minus_one_shot=-0.01, ci_high=0.002), "INCONCLUSIVE"),
    (iterative_vs_one_shot, _iterative(replicates=1), "INCONCLUSIVE"),
    (supermask, {"remaining_fraction": 0.07, "supermask_accuracy": 0.73, "chance": 0.1}, "PASS"),
    (supermask, {"remaining_fraction": 0.07, "supermask_accuracy": 0.12, "chance": 0.1}, "FAIL"),
    (supermask, {"remaining_fraction": 0.07, "supermask_accuracy": 0.17, "chance": 0.1}, "INCONCLUSIVE"),
    (lenet_stability, {"instability": 0.004}, "PASS"),
    (lenet_stability, {"instability": 0.05}, "FAIL"),
    (lenet_stability, {"instability": 0.025}, "INCONCLUSIVE"),
    (lenet_stability, {"instability": None}, "INCONCLUSIVE"),
    (retraining_modes, _retraining(0.89, 0.885, 0.88), "PASS"),
    (retraining_modes, _retraining(0.886, 0.889, 0.88), "PASS"),  # lr rewinding within 0.5 points
    (retraining_modes, _retraining(0.89, 0.885, 0.91), "FAIL"),  # fine-tuning 2.5 points above
    (retraining_modes, _retraining(0.879, 0.889, 0.88), "INCONCLUSIVE"),  # 1 point below: neither
    (synflow_collapse, _synflow(0.65, 0.1, 0.1, 0.1, empty_layers=(0, 1, 1, 0)), "PASS"),
    (synflow_collapse, _synflow(0.65, 0.1, 0.1, 0.3, empty_layers=(1, 0, 0, 0)), "FAIL"),  # SynFlow empties a layer
    (synflow_collapse, _synflow(0.65, 0.5, 0.4, 0.3), "FAIL"),  # no baseline collapses
    (synflow_collapse, _synflow(0.65, 0.1, 0.1, 0.3, empty_layers=(0, 1, 1, 0)), "INCONCLUSIVE"),
    (early_bird_convergence, _early_bird(7), "PASS"),
    (early_bird_convergence, _early_bird(25), "FAIL"),
    (early_bird_convergence, _early_bird(None), "FAIL"),
    (early_bird_convergence, _early_bird(12), "INCONCLUSIVE"),
    (early_phase_signs, _early_phase(0.89, 0.60, 0.70, 0.885), "PASS"),
    (early_phase_signs, _early_phase(0.89, 0.888, 0.70, 0.885), "FAIL"),  # flipping signs does not hurt
    (early_phase_signs, _early_phase(0.89, 0.60, 0.70, 0.85), "FAIL"),  # the same-sign shuffle hurts 4 points
    (early_phase_signs, _early_phase(0.89, 0.60, 0.70, 0.87), "INCONCLUSIVE"),  # 2 points: neither
    (early_phase_signs, _early_phase(0.89, None, 0.70, 0.885), "INCONCLUSIVE"),  # diverged
    (optimizer_transfer, _optimizer_transfer((0.88, 0.85), (0.89, 0.86)), "PASS"),
    (optimizer_transfer, _optimizer_transfer((0.88, 0.85), (0.86, 0.86)), "FAIL"),  # SGD -> Adam: no lead
    (optimizer_transfer, _optimizer_transfer((0.88, 0.875), (0.89, 0.86)), "INCONCLUSIVE"),  # half a point
    (optimizer_transfer, _optimizer_transfer((None, 0.85), (0.89, 0.86)), "INCONCLUSIVE"),  # diverged
    (pretraining_random_labels, _pretraining(0.88, 0.884, 0.86), "PASS"),
    (pretraining_random_labels, _pretraining(0.88, 0.877, 0.865), "PASS"),  # short within 0.5 points below
    (pretraining_random_labels, _pretraining(0.88, 0.85, 0.83), "FAIL"),  # short pre-training hurts 3 points
    (pretraining_random_labels, _pretraining(0.88, 0.884, 0.886), "FAIL"),  # long does not hurt
    (pretraining_random_labels, _pretraining(0.88, 0.884, 0.879), "INCONCLUSIVE"),  # half a point: neither
    (pretraining_random_labels, _pretraining(0.88, None, 0.86), "INCONCLUSIVE"),  # diverged
    (edge_popup_subnetworks, _edge_popup((0.5, 0.8, 0.85, 0.8, 0.6), (0.55, 0.85, 0.88, 0.86, 0.7)), "PASS"),
    (edge_popup_subnetworks, _edge_popup((0.5, 0.8, 0.85, 0.8, 0.9), (0.55, 0.85, 0.88, 0.86, 0.7)), "FAIL"),
    (edge_popup_subnetworks, _edge_popup((0.5, 0.8, 0.85, 0.8, 0.6), (0.55, 0.8, 0.82, 0.8, 0.7)), "FAIL"),
    (edge_popup_subnetworks, _edge_popup((0.12, 0.16, 0.17, 0.1, 0.1), (0.55, 0.85, 0.88, 0.86, 0.7)), "INCONCLUSIVE"),
    (edge_popup_subnetworks, _edge_popup((0.5, 0.8, 0.85, 0.8, 0.855), (0.55, 0.85, 0.88, 0.86, 0.7)), "INCONCLUSIVE"),
    (malach_width, _malach(0.5, 0.3, 0.2, 0.15), "PASS"),
    (malach_width, _malach(0.5, 0.3, 0.35, 0.4), "PASS"),  # judged on the ends; the rise is reported
    (malach_width, _malach(0.3, 0.35, 0.31), "FAIL"),  # the widest is no better than the narrowest
    (malach_width, _malach(0.3, 0.29, 0.28), "INCONCLUSIVE"),  # less than 10% lower
    (malach_width, _malach(0.3, None), "INCONCLUSIVE"),  # diverged
    (learned_supermask_accuracy, _learned(0.80), "PASS"),
    (learned_supermask_accuracy, _learned(0.13), "FAIL"),  # near chance
    (learned_supermask_accuracy, _learned(0.30, dense_theta_0=0.28), "FAIL"),  # no better than the dense θ0
    (learned_supermask_accuracy, _learned(0.18), "INCONCLUSIVE"),  # 1.8 × chance
    (learned_supermask_accuracy, _learned(0.80, dense_theta_0=0.70), "INCONCLUSIVE"),  # 10 points over the dense θ0
    (learned_supermask_accuracy, _learned(None), "INCONCLUSIVE"),  # diverged
    (shared_weight_tickets, _weight_agnostic((0.02, 0.70, 0.70), (0.05, 0.15, 0.15)), "PASS"),
    # judged at w > 0: the mean over ±w (0.47) would be no lead over the random mask's 0.5 at all
    (shared_weight_tickets, _weight_agnostic((0.01, 0.70, 0.70), (0.60, 0.45, 0.45)), "PASS"),
    (shared_weight_tickets, _weight_agnostic((0.05, 0.12, 0.12), (0.05, 0.10, 0.10)), "FAIL"),  # near chance
    (shared_weight_tickets, _weight_agnostic((0.02, 0.50, 0.50), (0.02, 0.55, 0.55)), "FAIL"),  # below the random mask
    (shared_weight_tickets, _weight_agnostic((0.02, 0.50, 0.50), (0.02, 0.48, 0.48)), "INCONCLUSIVE"),  # 2 points ahead
    (shared_weight_tickets, _weight_agnostic((0.02, None, None), (0.02, 0.48, 0.48)), "INCONCLUSIVE"),  # diverged
    (language_model_tickets, _language_model((100, 102, 98), (99, 101, 98.5), (130, 135, 128)), "PASS"),
    # the ticket's perplexity 30 above dense: it does not match
    (language_model_tickets, _language_model((100, 102, 98), (130, 133, 128), (150, 155, 148)), "FAIL"),
    # the reinit's perplexity is lower than the ticket's
    (language_model_tickets, _language_model((100, 102, 98), (99, 101, 98.5), (90, 92, 89)), "FAIL"),
    # the reinit is lower on average but one replicate disagrees: the interval straddles 0
    (language_model_tickets, _language_model((100, 102, 98), (99, 101, 98.5), (95, 130, 101)), "INCONCLUSIVE"),
    (language_model_tickets, _language_model((100, 102), (99, 101), (130, 135)), "INCONCLUSIVE"),  # 2 replicates
    (agent_tickets, _agent((480, 500, 450), (500, 490, 470), (150, 200, 120)), "PASS"),
    (agent_tickets, _agent((480, 500, 490), (100, 120, 110), (50, 60, 40)), "FAIL"),  # the ticket's return collapses
    (agent_tickets, _agent((300, 330, 310), (300, 320, 310), (480, 500, 495)), "FAIL"),  # the reinit returns more
    # A2C's spread between seeds: the reinit solves CartPole in one replicate, so its interval overlaps the ticket's
    (agent_tickets, _agent((480, 500, 450), (480, 500, 450), (150, 500, 300)), "INCONCLUSIVE"),
    (agent_tickets, _agent((480, 500, 450), (None, None, None), (150, 200, 120)), "INCONCLUSIVE"),  # diverged
]


@pytest.mark.parametrize("module, measured, expected", VERDICT_CASES,
                         ids=[f"{case[0].NAME}-{index}-{case[2]}" for index, case in enumerate(VERDICT_CASES)])
def test_verdict_rules(module, measured, expected):
    decision = module.judge(measured)
    assert decision.verdict == expected, decision.reason
    assert decision.reason.endswith(".")


def test_every_verdict_is_reachable_for_every_check():
    reached = {}
    for module, _, expected in VERDICT_CASES:
        reached.setdefault(module.NAME, set()).add(expected)
    assert set(reached) == set(CHECKS)
    assert all(verdicts == {"PASS", "FAIL", "INCONCLUSIVE"} for verdicts in reached.values()), reached


@pytest.mark.parametrize("module, build, better, worse", [
    (language_model_tickets, _language_model, (99, 101, 98.5), (130, 135, 128)),  # perplexity: lower is better
    (agent_tickets, _agent, (480, 495, 470), (150, 200, 120)),  # mean return: higher is better
], ids=["perplexity", "return"])
def test_the_task_checks_read_their_metric_in_its_direction(module, build, better, worse):
    """Sub-claim 2 (ticket beats the random reinit) holds when the ticket's metric is the better one and fails the
    other way round; sub-claim 1 (ticket matches dense) follows the same direction."""
    dense = (100, 102, 98) if module is language_model_tickets else (480, 500, 450)
    unit = module.PERPLEXITY if module is language_model_tickets else module.RETURN
    winning = build(dense, better, worse)
    matches, beats = task_tickets.findings(winning, unit)
    assert (matches.outcome, beats.outcome) == (HOLDS, HOLDS), (matches.text, beats.text)
    assert winning[f"ticket_{unit.key}"] == pytest.approx(sum(better) / 3)  # read from test_<metric>
    assert winning["reference_round"] == 5 and winning["remaining_fraction"] == pytest.approx(0.8 ** 5)
    losing = build(dense, worse, better)
    matches, beats = task_tickets.findings(losing, unit)
    assert (matches.outcome, beats.outcome) == (FAILS, FAILS), (matches.text, beats.text)
    assert module.judge(losing).verdict == "FAIL" and module.judge(winning).verdict == "PASS"
    assert unit.label in module.summary(winning)


def test_agent_tickets_leave_overlapping_returns_undecided():
    """A2C's spread between seeds: a mean lead whose 95% CI reaches below 0 decides nothing."""
    measured = _agent((480, 500, 450), (480, 500, 450), (150, 500, 300))
    assert measured["ticket_minus_reinit"] > 0 and measured["ticket_minus_reinit_ci_low"] < 0
    assert task_tickets.ticket_beats_reinit(measured, agent_tickets.RETURN).outcome == UNDECIDED


def test_task_checks_protocols_follow_the_paper_setting():
    lm = language_model_tickets.lm_spec("small")
    assert (lm["model"], lm["dataset"], lm["rewind_step"]) == ("transformer_lm", "python_docs", "20it")
    assert {key: lm["training"][key] for key in ("optimizer", "lr", "batch_size", "context_length",
                                                 "training_steps")} == {
        "optimizer": "adam", "lr": 0.001, "batch_size": 32, "context_length": 64, "training_steps": "200it"}
    agent = agent_tickets.agent_spec("small")
    assert (agent["model"], agent["dataset"], agent["rewind_step"]) == ("actor_critic", "cartpole", "10it")
    assert (agent["training"]["lr"], agent["training"]["training_steps"], agent["training"]["eval_interval"]) == (
        0.003, "200it", "20it")
    for spec in (lm, agent):
        assert spec["pruning"]["fraction"] == 0.2 and spec["pruning"]["scope"] == "layerwise"
        assert spec["pruning"]["rounds"] == 5 and spec["replicates"] == 3
        assert spec["controls"] == ["random_reinit"] and spec["control_rounds"] == [5]  # 32.8%, nearest 1/3
    assert task_tickets.reference_round(8) == 5 and task_tickets.reference_round(1) == 1
    assert matching_checks(lm) == ["language_model_tickets"] and matching_checks(agent) == ["agent_tickets"]
    assert matching_checks({**lm, "controls": [], "control_rounds": []}) == []  # no reinit: the claim is untestable
    assert matching_checks({**agent, "rewind_step": "0it"}) == []  # Yu et al.'s tickets need late rewinding
    assert matching_checks({**agent, "rewind_step": "30it", "replicates": 1}) == ["agent_tickets"]  # budgets differ
    assert matching_checks({**lm, "model": "lstm_lm"}) == []


# ---- matching_checks ------------------------------------------------------------------------

def test_matching_checks_of_specs_that_match_and_that_do_not():
    lenet = CHECKS["tickets_vs_dense"].protocol("small")["steps"][0]["spec"]
    # a LeNet IMP run rewinding to θ0 is also the pre-training check's ticket without pre-training
    assert matching_checks(lenet) == ["tickets_vs_dense", "iterative_vs_one_shot", "supermask", "shared_weight_tickets",
                                      "pretraining_random_labels"]
    # budgets may differ; without a random-reinit control the F&C claim cannot be tested
    shorter = {**lenet, "training": {**lenet["training"], "training_steps": "1000it"}, "replicates": 1,
               "controls": [], "control_rounds": []}
    assert matching_checks(shorter) == ["iterative_vs_one_shot", "supermask", "shared_weight_tickets",
                                        "pretraining_random_labels"]
    assert matching_checks({**lenet, "dataset": "synthetic"}) == []
    assert matching_checks({**lenet, "training": {**lenet["training"], "optimizer": "sgd", "lr": 0.1}}) == []
    stability = CHECKS["lenet_stability"].protocol("small")["steps"][0]["spec"]
    assert "lenet_stability" in matching_checks(stability)
    dense = CHECKS["learned_supermask_accuracy"].protocol("small")["steps"][0]["spec"]
    assert {"edge_popup_subnetworks", "learned_supermask_accuracy", "malach_width"} <= set(matching_checks(dense))
    early_bird = CHECKS["early_bird_convergence"].protocol("large")["steps"][0]["spec"]
    assert "early_bird_convergence" in matching_checks(early_bird)
    assert matching_checks({"model": "conv2"}) == [] and matching_checks({"model": 3}) == []


# ---- CLI ------------------------------------------------------------------------------------

def reproduce(capsys, *args):
    """`python -m trainer reproduce ...` in this process: (exit code, stdout, stderr)."""
    code = main(["reproduce", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_lists_the_checks(capsys):
    code, out, _ = reproduce(capsys, "--list")
    assert code == 0
    for check in CHECKS.values():
        assert f"{check.name}: {check.title}" in out and check.source in out


def test_cli_runs_a_check_and_prints_the_verdict_table(capsys, tmp_path):
    code, out, err = reproduce(capsys, "supermask", "--budget", "tiny", "--runs-root", str(tmp_path))
    assert code == 0, err
    header, _, row = out.splitlines()[:3]
    assert [cell.strip() for cell in header.split("|")] == ["check", "verdict", "measured vs claim", "wall time"]
    assert row.startswith("supermask") and "INCONCLUSIVE" in row and "chance" in row
    assert "supermask [" in err and "\r" not in err  # not a terminal: plain progress lines, not a bar
    assert result_path(tmp_path, "supermask", "tiny").is_file()


def test_cli_through_python_m_trainer(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOTTERYWEB_TORCH_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "trainer", "reproduce", "nope"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: check: unknown check 'nope'; choose one of {', '.join(CHECKS)} (or 'all')"]


@pytest.mark.parametrize("args, words", [(["nope"], "unknown check 'nope'"),
                                         (["all", "--budget", "huge"], "invalid choice"),
                                         ([], "needs a check name")])
def test_cli_bad_name_or_budget_is_one_line_with_exit_code_2(args, words, capsys, tmp_path):
    code, out, err = reproduce(capsys, *args, "--runs-root", str(tmp_path))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and words in err and "Traceback" not in err
    assert not (tmp_path / "reproduce").exists()
