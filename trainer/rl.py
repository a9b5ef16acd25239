"""Reinforcement-learning parts of the lottery ticket task of Yu et al. (ICLR 2020, "Playing the lottery with
rewards and multiple languages: lottery tickets in RL and NLP"): actor-critic agents on classic control.

The learner is synchronous advantage actor-critic, A2C (the synchronous variant of A3C, Mnih et al. 2016,
"Asynchronous methods for deep reinforcement learning"), with generalised advantage estimation, GAE (Schulman
et al. 2016, "High-dimensional continuous control using generalized advantage estimation"):

- `envs` copies of a gymnasium environment run side by side (a SyncVectorEnv, no subprocesses). A rollout is
  `rollout_steps` steps of all of them, actions sampled from the current policy; the environments are carried
  over from one rollout to the next, so episodes run across rollout boundaries.
- ONE TRAINING ITERATION is one optimizer update on one rollout batch of `envs × rollout_steps` transitions:
  `RolloutStream.loss` collects the rollout and returns the scalar loss, the caller steps its optimizer.
- The loss is  policy loss + value_coef · value loss − entropy_coef · entropy,  with the policy loss
  −mean(log π(a|s) · Â), the value loss mean((V(s) − R)²) towards the λ-returns R = Â + V(s), and the mean
  entropy of π(·|s) as an exploration bonus. Â is GAE(γ, λ), optionally normalised over the batch.
- gymnasium tells `terminated` (the task ended: the value after it is zero) from `truncated` (the time limit
  cut the episode: the state still had a future). A truncated step bootstraps with the value of its final
  observation, a terminated one does not; neither passes advantage on across the episode boundary.

Networks (`ActorCritic`) are separate policy and value MLPs with tanh units, the usual shape for these tasks.
Every random choice is seeded with `trainer.seeds`: the environments' resets from (seed, start_iteration), the
actions of iteration i from (seed, i); torch's and numpy's global random streams are never used. The same
model, seed and iteration range therefore give the same rollouts and the same losses, and a segment that starts
at iteration k (a resumed run, a rewound ticket) does not depend on what was drawn before k.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from torch import Tensor, nn

from trainer.seeds import derive_seed, generator


# ---- environments -------------------------------------------------------------------------
@dataclass(frozen=True)
class EnvironmentEntry:
    name: str
    gym_id: str
    title: str
    observation_size: int
    action_count: int
    max_episode_steps: int  # gymnasium's time limit: an episode is truncated after this many steps
    solved_return: float | None  # gymnasium's reward_threshold: the mean return that counts as solved


ENVIRONMENTS: dict[str, EnvironmentEntry] = {
    entry.name: entry for entry in (
        EnvironmentEntry("cartpole", "CartPole-v1", "CartPole-v1 (balance a pole on a cart)",
                         observation_size=4, action_count=2, max_episode_steps=500, solved_return=475.0),
        EnvironmentEntry("acrobot", "Acrobot-v1", "Acrobot-v1 (swing a two-link arm up)",
                         observation_size=6, action_count=3, max_episode_steps=500, solved_return=-100.0),
    )
}


def environment(name: str) -> EnvironmentEntry:
    try:
        return ENVIRONMENTS[name]
    except KeyError:
        raise ValueError(f"unknown environment {name!r}; known: {', '.join(ENVIRONMENTS)}") from None


def _vector_env(env_name: str, count: int) -> SyncVectorEnv:
    """`count` copies in one process; SAME_STEP autoreset hands back the final observation of an episode
    (info["final_obs"]) in the step that ends it, and the next episode's first observation as the observation."""
    gym_id = environment(env_name).gym_id
    return SyncVectorEnv([lambda: gym.make(gym_id, disable_env_checker=True) for _ in range(count)],
                         autoreset_mode=AutoresetMode.SAME_STEP)


# ---- the network --------------------------------------------------------------------------
class _TanhMLP(nn.Module):
    """fc1 … fcK with tanh, then a linear `out` layer."""

    def __init__(self, inputs: int, hidden: tuple[int, ...], outputs: int):
        super().__init__()
        self.depth = len(hidden)
        for index, units in enumerate(hidden, start=1):
            self.add_module(f"fc{index}", nn.Linear(inputs, units))
            inputs = units
        self.out = nn.Linear(inputs, outputs)

    def forward(self, x: Tensor) -> Tensor:
        for index in range(1, self.depth + 1):
            x = torch.tanh(getattr(self, f"fc{index}")(x))
        return self.out(x)


class ActorCritic(nn.Module):
    """Separate policy and value MLPs (no shared trunk): policy.fc1, policy.fc2, policy.out give the action
    logits, value.fc1, value.fc2, value.out the state value. Layers only: the model registry sets the values,
    and the constructor creates nothing but parameters, so it can be built on 'meta' and materialised."""

    def __init__(self, observation_size: int, action_count: int, hidden: tuple[int, ...] = (64, 64)):
        super().__init__()
        if observation_size < 1 or action_count < 1 or any(units < 1 for units in hidden):
            raise ValueError(f"layer sizes must be positive: {observation_size}, {tuple(hidden)}, {action_count}")
        self.policy = _TanhMLP(observation_size, tuple(hidden), action_count)
        self.value = _TanhMLP(observation_size, tuple(hidden), 1)

    def forward(self, observations: Tensor) -> tuple[Tensor, Tensor]:
        """(logits (B, A), values (B,)) for observations (B, observation_size)."""
        return self.policy(observations), self.value(observations).squeeze(-1)


# ---- the learner --------------------------------------------------------------------------
@dataclass(frozen=True)
class A2CSettings:
    envs: int = 8
    rollout_steps: int = 32
    gamma: float = 0.99
    gae_lambda: float = 0.95
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    normalize_advantages: bool = True

    def __post_init__(self):
        if self.envs < 1 or self.rollout_steps < 1:
            raise ValueError(f"envs and rollout_steps must be at least 1, got {self.envs}, {self.rollout_steps}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0):
            raise ValueError(f"gamma and gae_lambda must lie in [0, 1], got {self.gamma}, {self.gae_lambda}")

    @property
    def batch_size(self) -> int:
        """Transitions per training iteration."""
        return self.envs * self.rollout_steps


def advantages(rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor, episode_ended: Tensor,
               gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates of a rollout; every argument has time as its first axis (T, …).

    rewards[t], values[t] = V(s_t), next_values[t] = V(s_{t+1}) where s_{t+1} is the observation the step
    led to (for a step that ended an episode, that episode's final observation, not the next one's first);
    terminated[t]: the episode ended at a terminal state, so nothing is bootstrapped after it; episode_ended[t]:
    terminated or truncated, so no advantage flows back across it. A truncated step still bootstraps with
    next_values[t]. The λ-returns (value targets) are advantages + values.

        δ_t = r_t + γ · (1 − terminated_t) · V(s_{t+1}) − V(s_t)
        Â_t = δ_t + γ · λ · (1 − episode_ended_t) · Â_{t+1},   Â_T = 0
    """
    not_terminal = 1.0 - terminated.to(values.dtype)
    continues = 1.0 - episode_ended.to(values.dtype)
    deltas = rewards + gamma * not_terminal * next_values - values
    estimates = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[0])
    for t in reversed(range(deltas.shape[0])):
        running = deltas[t] + gamma * lam * continues[t] * running
        estimates[t] = running
    return estimates


def _sample_actions(logits: Tensor, action_generator: torch.Generator) -> Tensor:
    """One action per row, drawn from softmax(logits) by inverting the cumulative distribution at a uniform
    draw (a few elementwise ops: cheaper than torch.multinomial for a handful of actions)."""
    cumulative = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    uniform = torch.rand(logits.shape[0], 1, generator=action_generator, device=logits.device)
    return (cumulative < uniform).sum(dim=-1).clamp(max=logits.shape[-1] - 1)  # clamp: cumsum may end below 1


class RolloutStream:
    """The training data of one segment: vectorised environments reset with seeds derived from
    (seed, start_iteration) and carried across the segment's iterations; the actions of iteration i sampled
    with a generator seeded from (seed, i). Same model + seed + iteration range give the same rollouts."""

    def __init__(self, env_name: str, settings: A2CSettings, seed: int, start_iteration: int,
                 device: str | torch.device = "cpu"):
        self.entry = environment(env_name)
        self.settings = settings
        self.seed = seed
        self.device = torch.device(device)
        self.finished_returns: list[float] = []  # undiscounted returns of the episodes ended so far
        self.last_loss_terms: dict[str, float] = {}  # policy, value, entropy of the latest loss (train metrics)
        self._envs = _vector_env(env_name, settings.envs)
        env_seeds = [derive_seed(seed, "rl_envs", start_iteration, index) for index in range(settings.envs)]
        self._observations, _ = self._envs.reset(seed=env_seeds)
        self._running_returns = np.zeros(settings.envs)

    def _collect(self, model: ActorCritic, iteration: int) -> dict[str, Tensor]:
        """One rollout with the current model, without grad: observations, actions, rewards, terminated,
        episode_ended and next_observations (the final observation where an episode ended), each (T, N, …)."""
        steps, count, device = self.settings.rollout_steps, self.settings.envs, self.device
        action_generator = generator(self.seed, "rl_actions", iteration, device=device)
        observations = torch.empty(steps, count, self.entry.observation_size, device=device)
        next_observations = torch.empty_like(observations)
        actions = torch.empty(steps, count, dtype=torch.long, device=device)
        rewards = torch.empty(steps, count, device=device)
        terminated = torch.empty(steps, count, dtype=torch.bool, device=device)
        episode_ended = torch.empty_like(terminated)
        with torch.no_grad():
            for t in range(steps):
                observations[t] = torch.as_tensor(self._observations, dtype=torch.float32, device=device)
                logits, _ = model(observations[t])
                chosen = _sample_actions(logits, action_generator)
                following, reward, step_terminated, step_truncated, info = self._envs.step(chosen.cpu().numpy())
                ended = step_terminated | step_truncated
                step_next = np.array(following, dtype=np.float32)
                for index in np.flatnonzero(ended):
                    step_next[index] = info["final_obs"][index]
                self._running_returns += reward
                self.finished_returns.extend(float(value) for value in self._running_returns[ended])
                self._running_returns[ended] = 0.0
                actions[t] = chosen
                rewards[t] = torch.as_tensor(reward, dtype=torch.float32, device=device)
                terminated[t] = torch.as_tensor(step_terminated, device=device)
                episode_ended[t] = torch.as_tensor(ended, device=device)
                next_observations[t] = torch.as_tensor(step_next, device=device)
                self._observations = following
        return {"observations": observations, "actions": actions, "rewards": rewards, "terminated": terminated,
                "episode_ended": episode_ended, "next_observations": next_observations}

    def loss(self, model: ActorCritic, iteration: int) -> Tensor:
        """Collect one rollout with `model` (no grad), then the scalar A2C loss of it, with grad. `model` may be
        any module whose forward gives (logits, values) as ActorCritic does, e.g. a wrapper applying masks."""
        rollout = self._collect(model, iteration)
        steps, count = self.settings.rollout_steps, self.settings.envs
        with torch.no_grad():
            next_values = model(rollout["next_observations"].flatten(0, 1))[1].view(steps, count)
        logits, values = model(rollout["observations"].flatten(0, 1))
        settings = self.settings
        estimates = advantages(rollout["rewards"], values.detach().view(steps, count), next_values,
                               rollout["terminated"], rollout["episode_ended"], settings.gamma, settings.gae_lambda)
        estimates = estimates.flatten()
        targets = estimates + values.detach()
        if settings.normalize_advantages:
            estimates = (estimates - estimates.mean()) / (estimates.std(correction=0) + 1e-8)
        log_probs = F.log_softmax(logits, dim=-1)
        chosen_log_probs = log_probs.gather(1, rollout["actions"].flatten().unsqueeze(1)).squeeze(1)
        policy_loss = -(chosen_log_probs * estimates).mean()
        value_loss = F.mse_loss(values, targets)
        entropy = -(log_probs.exp() * log_probs).sum(dim=-1).mean()
        self.last_loss_terms = {"policy": policy_loss.item(), "value": value_loss.item(), "entropy": entropy.item()}
        return policy_loss + settings.value_coef * value_loss - settings.entropy_coef * entropy

    def close(self) -> None:
        self._envs.close()

    def __enter__(self) -> RolloutStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---- evaluation ---------------------------------------------------------------------------
def evaluate_returns(model: ActorCritic, env_name: str, seeds: Sequence[int],
                     device: str | torch.device = "cpu") -> float:
    """Mean undiscounted return of one episode per seed, acting greedily (argmax of the logits), all episodes
    run side by side; deterministic. Episodes end at the task's end or gymnasium's time limit."""
    if len(seeds) == 0:
        raise ValueError("evaluate_returns needs at least one seed")
    envs = _vector_env(env_name, len(seeds))
    was_training = model.training
    model.eval()
    try:
        observations, _ = envs.reset(seed=[int(seed) for seed in seeds])
        returns = np.zeros(len(seeds))
        running = np.ones(len(seeds), dtype=bool)  # first episode not over yet; later episodes are ignored
        with torch.no_grad():
            while running.any():
                logits, _ = model(torch.as_tensor(observations, dtype=torch.float32, device=device))
                observations, reward, terminated, truncated, _ = envs.step(logits.argmax(dim=-1).cpu().numpy())
                returns += np.where(running, reward, 0.0)
                running &= ~(terminated | truncated)
        return float(returns.mean())
    finally:
        model.train(was_training)
        envs.close()
