"""Winning tickets in reinforcement learning: an actor-critic agent on CartPole keeps its return at a third
of its weights.

Yu, Edunov, Tian & Morcos 2020 (ICLR), "Playing the lottery with rewards and multiple languages: lottery
tickets in RL and NLP", Section 5 (classic control): with late rewinding and iterative pruning, tickets
exist for actor-critic agents on classic control tasks and outperform randomly re-initialised sub-networks
of the same masks; how far pruning can go before the return drops varies by task.

Protocol (small): actor_critic (policy and value MLPs, 64-64) on CartPole-v1, A2C (8 environments × 32
steps per iteration), Adam 3e-3, 200 iterations per round, evaluation every 20 (10 greedy episodes on
fixed seeds per split), late rewinding to k = 10 iterations, layerwise magnitude pruning 20% per round,
5 rounds (32.8% left), 3 replicates, the random_reinit control (the round's mask on a fresh init, trained
k..T like the ticket) at round 5, the round nearest 1/3 remaining. Numbers are each training's test
mean return at its early stop (the highest validation return).

A2C is unstable between seeds: one agent may solve CartPole (return 500) where another with the same
settings stalls near 100, and a single greedy evaluation swings with it. So no single run is judged:
the paired comparisons over replicates decide, and wide confidence intervals make a sub-claim undecided
(INCONCLUSIVE) rather than a PASS or FAIL on noise; the dense std enters the tolerance.

Verdict at that round (trainer.reproduce.task_tickets; mean return: higher is better), paired by
replicate, tolerance = max(one std of dense return across replicates, 1% of the dense mean):
  ticket matches dense   holds when mean(ticket − dense) >= −tolerance (at dense level or above); fails
                         when the 95% CI of the difference lies wholly below −tolerance
  ticket beats reinit    holds when the 95% CI of ticket − reinit lies wholly above 0; fails when it lies
                         wholly below +tolerance (no lead larger than the tolerance, or the reinit is better)
n < 3 paired replicates, or a missing measurement, leaves a sub-claim undecided.
"""
from __future__ import annotations

from functools import partial

from trainer.reproduce import task_tickets
from trainer.reproduce.base import Check, Step
from trainer.tasks import REINFORCEMENT_LEARNING

NAME = "agent_tickets"
RETURN = REINFORCEMENT_LEARNING.metric

BUDGET_SETTINGS = {
    # training steps, eval interval, rewind step (k), rounds, replicates, reinforcement settings
    "tiny": ("8it", "4it", "1it", 2, 3, {"envs": 4, "rollout_steps": 8, "eval_episodes": 3}),
    "small": ("200it", "20it", "10it", 5, 3, {}),
    "large": ("500it", "25it", "25it", 8, 5, {"eval_episodes": 20}),
}


def agent_spec(budget: str) -> dict:
    steps, eval_interval, rewind, rounds, replicates, reinforcement = BUDGET_SETTINGS[budget]
    return task_tickets.imp_spec(
        {"model": "actor_critic", "dataset": "cartpole", "rewind_step": rewind, "reinforcement": reinforcement,
         "training": {"optimizer": "adam", "lr": 0.003, "training_steps": steps, "eval_interval": eval_interval,
                      "metrics_interval": 20}},
        rounds, replicates)


def steps(budget: str, data_dir) -> list[Step]:
    return [task_tickets.imp_step("Actor-critic IMP on CartPole (late rewinding, replicates, random reinit)",
                                  agent_spec(budget))]


# The shared rules of trainer.reproduce.task_tickets, read in this task's metric.
measure = partial(task_tickets.measure, unit=RETURN)
measurements = partial(task_tickets.measurements, unit=RETURN)
judge = partial(task_tickets.judge, unit=RETURN)
summary = partial(task_tickets.summary, unit=RETURN)


CHECK = Check(
    name=NAME, title="Agent tickets: an actor-critic on CartPole keeps its return at a third of its weights",
    claim="Tickets exist in RL (actor-critic agents on classic control; how far pruning goes varies by task), and "
          "they beat the same masks randomly re-initialised.",
    source="Yu, Edunov, Tian & Morcos 2020 (ICLR), 'Playing the lottery with rewards and multiple languages', "
           "Section 5 (classic control)",
    tolerance="At the round nearest 1/3 remaining (round 5, 32.8%), over >= 3 replicates, test mean return (higher "
              "is better): ticket mean >= dense − max(1 std of dense, 1% of the dense mean) (FAIL: the 95% CI of "
              "ticket − dense wholly below −tolerance); ticket above the random reinit with the 95% CI of ticket − "
              "reinit above 0 (FAIL: that CI wholly below +tolerance). A2C varies a lot between seeds, so "
              "overlapping intervals leave it INCONCLUSIVE.",
    steps=steps, measure=measure, judge=judge, match_fields=task_tickets.MATCH_FIELDS, summary=summary,
    datasets=("cartpole",), requires=task_tickets.requires_late_rewinding_and_reinit,
    notes="A2C on CartPole only, 200 iterations per round (Yu et al.: PPO on classic control and Atari with many "
          "more updates); 3 replicates; the reinit control only at the reference round.")
