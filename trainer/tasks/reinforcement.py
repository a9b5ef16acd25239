"""Reinforcement learning (Yu, Edunov, Tian & Morcos 2020, ICLR, "Playing the lottery with rewards and multiple
languages: lottery tickets in RL and NLP", Section 5: actor-critic agents on classic control).

The agent (trainer.rl.ActorCritic) learns by A2C with GAE (trainer.rl.RolloutStream): one training iteration
is one optimizer update on one rollout of `envs × rollout_steps` environment steps; a segment (a round from
iteration k) resets its environments from (data seed, k), so a rewound ticket's training does not depend on
what an earlier round drew. The metric is the **mean return** of greedy episodes (higher is better) over a
fixed set of seeded episodes: validation and test use different seeds (the same for every run, replicate
and round, so every network is scored on the same episodes). The evaluation "loss" is the negative mean
return, so the early-stop rule shared by every task (lowest validation loss) picks the highest validation
return. An environment has no epochs: training lengths are given in iterations.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trainer import datasets, rl
from trainer.tasks.base import Metric, PreparedData, Task

RETURN = Metric("return", "mean return", higher_is_better=True, percent=False)
VALIDATION_SEED_BASE, TEST_SEED_BASE = 1_000_000, 2_000_000  # episode seeds: base + 0, 1, ..., eval_episodes - 1


@dataclass
class EnvironmentData(PreparedData):
    """PreparedData of an environment: no tensors (rollouts are drawn while training), its A2C settings and
    the seeds of its evaluation episodes."""
    settings: rl.A2CSettings = field(default_factory=rl.A2CSettings)
    eval_episodes: int = 10


def _empty(device: torch.device, size: int) -> torch.Tensor:
    return torch.zeros(0, size, device=device)


class ReinforcementLearning(Task):
    name = "reinforcement_learning"
    title = "Reinforcement learning"
    metric = RETURN

    def prepare(self, spec, device: torch.device, data_dir=None) -> EnvironmentData:
        entry = rl.environment(spec.dataset)
        settings = spec.reinforcement
        a2c = rl.A2CSettings(envs=settings.envs, rollout_steps=settings.rollout_steps, gamma=settings.gamma,
                             gae_lambda=settings.gae_lambda, value_coef=settings.value_coef,
                             entropy_coef=settings.entropy_coef)
        spec.check_dataset_fit()
        info = datasets.DATASETS[spec.dataset].info
        no_labels = torch.zeros(0, dtype=torch.long, device=device)
        return EnvironmentData(info, _empty(device, entry.observation_size), no_labels,
                               _empty(device, entry.observation_size), no_labels,
                               _empty(device, entry.observation_size), no_labels, a2c.batch_size, task=self,
                               settings=a2c, eval_episodes=settings.eval_episodes)

    def iterations_per_epoch(self, data) -> int:
        return 1  # no epochs: the spec refuses 'ep' lengths for environments

    def stream(self, data, data_seed, start_iteration):
        return rl.RolloutStream(data.info.name, data.settings, data_seed, start_iteration, data.device)

    def evaluate(self, model, data, split):
        base = VALIDATION_SEED_BASE if split == "val" else TEST_SEED_BASE
        mean_return = rl.evaluate_returns(model, data.info.name, range(base, base + data.eval_episodes),
                                          data.device)
        return -mean_return, mean_return

    def has_validation(self, data) -> bool:
        return True

    def validation_size(self, data) -> int:
        return data.eval_episodes


REINFORCEMENT_LEARNING = ReinforcementLearning()
