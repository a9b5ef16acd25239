"""The reinforcement-learning parts (trainer/rl.py): environments, the actor-critic network, GAE against a
hand computation, deterministic rollouts and losses, greedy evaluation, masks, and that A2C learns CartPole."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from trainer.rl import (
    ENVIRONMENTS,
    A2CSettings,
    ActorCritic,
    RolloutStream,
    _sample_actions,
    advantages,
    environment,
    evaluate_returns,
)
from trainer.seeds import generator

EVAL_SEEDS = list(range(100, 110))


def built_model(env_name: str, init_seed: int, hidden=(64, 64)) -> ActorCritic:
    """An ActorCritic built on 'meta', materialised, Glorot-normal weights and zero biases from a private
    generator (as the model registry initialises its fully connected models)."""
    entry = environment(env_name)
    with torch.device("meta"):
        model = ActorCritic(entry.observation_size, entry.action_count, hidden)
    model = model.to_empty(device="cpu")
    init_generator = generator(init_seed, "test_rl_init")
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight, generator=init_generator)
            nn.init.zeros_(module.bias)
    return model


def constant_action_model(env_name: str, action: int) -> ActorCritic:
    """Every weight zero, the policy's output bias favours `action`: the greedy action never changes."""
    model = built_model(env_name, 0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.policy.out.bias[action] = 1.0
    return model


def train(model, stream, iterations, lr, start_iteration=0):
    """Adam on the stream's losses; the list of loss values."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for iteration in range(start_iteration, start_iteration + iterations):
        loss = stream.loss(model, iteration)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


# ---- environments and the network ---------------------------------------------------------
@pytest.mark.parametrize("name", list(ENVIRONMENTS))
def test_environment_entries_match_gymnasium(name):
    entry = environment(name)
    assert entry.name == name and entry.title
    env = gym.make(entry.gym_id)
    try:
        assert env.observation_space.shape == (entry.observation_size,)
        assert env.action_space.n == entry.action_count
        assert env.spec.max_episode_steps == entry.max_episode_steps
        assert env.spec.reward_threshold == entry.solved_return
    finally:
        env.close()


def test_unknown_environment_names_the_known_ones():
    with pytest.raises(ValueError, match="cartpole.*acrobot"):
        environment("pong")


def test_actor_critic_is_built_on_meta_with_named_layers_of_both_heads():
    model = built_model("acrobot", 0, hidden=(64, 32))
    assert [name for name, _ in model.named_parameters()] == [
        f"{head}.{layer}.{kind}" for head in ("policy", "value") for layer in ("fc1", "fc2", "out")
        for kind in ("weight", "bias")]
    assert model.policy.fc1.weight.shape == (64, 6) and model.policy.fc2.weight.shape == (32, 64)
    assert model.policy.out.weight.shape == (3, 32) and model.value.out.weight.shape == (1, 32)
    assert not list(model.buffers())
    logits, values = model(torch.zeros(5, 6))
    assert logits.shape == (5, 3) and values.shape == (5,)


def test_actor_critic_heads_are_separate_tanh_networks():
    model = built_model("cartpole", 1)
    observations = torch.randn(7, 4, generator=generator(0, "observations"))
    logits, values = model(observations)
    hidden = torch.tanh(model.value.fc2(torch.tanh(model.value.fc1(observations))))
    torch.testing.assert_close(values, model.value.out(hidden).squeeze(-1))
    with torch.no_grad():
        model.value.fc1.weight.add_(1.0)  # the value head only: the policy's logits do not move
    torch.testing.assert_close(model(observations)[0], logits, rtol=0, atol=0)


def test_settings_refuse_impossible_values():
    with pytest.raises(ValueError):
        A2CSettings(envs=0)
    with pytest.raises(ValueError):
        A2CSettings(gamma=1.5)
    assert A2CSettings(envs=4, rollout_steps=16).batch_size == 64


# ---- generalised advantage estimation -----------------------------------------------------
def test_advantages_match_a_hand_computation_with_a_truncated_and_a_terminated_step():
    # step 1 is cut by the time limit (bootstraps with its final observation's value 4.0), step 2 ends at a
    # terminal state (its next value 2.0 is ignored), step 3 is cut by the rollout's end (bootstraps with 3.0)
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0])
    values = torch.tensor([0.5, 1.0, 1.5, 2.0])
    next_values = torch.tensor([1.0, 4.0, 2.0, 3.0])
    terminated = torch.tensor([False, False, True, False])
    episode_ended = torch.tensor([False, True, True, False])
    estimates = advantages(rewards, values, next_values, terminated, episode_ended, gamma=0.9, lam=0.5)
    # δ = r + γ·V' − V: 1 + 0.9·1 − 0.5 = 1.4 ; 2 + 0.9·4 − 1 = 4.6 ; 3 − 1.5 = 1.5 ; 4 + 0.9·3 − 2 = 4.7
    # Â3 = 4.7, Â2 = 1.5 (episode ended), Â1 = 4.6 (episode ended), Â0 = 1.4 + 0.9·0.5·4.6 = 3.47
    torch.testing.assert_close(estimates, torch.tensor([3.47, 4.6, 1.5, 4.7]))
    torch.testing.assert_close(estimates + values, torch.tensor([3.97, 5.6, 3.0, 6.7]))  # the value targets


def test_advantages_reduce_to_td_error_and_to_bootstrapped_monte_carlo_returns():
    rewards = torch.tensor([[1.0, -1.0], [0.5, 2.0], [2.0, 0.0]])  # (T=3, N=2)
    values = torch.tensor([[0.3, 0.1], [0.7, -0.4], [1.1, 0.9]])
    next_values = torch.cat([values[1:], torch.tensor([[2.0, -1.0]])])
    never = torch.zeros(3, 2, dtype=torch.bool)
    td_errors = rewards + 0.8 * next_values - values
    torch.testing.assert_close(advantages(rewards, values, next_values, never, never, gamma=0.8, lam=0.0), td_errors)
    # γ = λ = 1 without episode ends: Â_t = r_t + … + r_{T−1} + V(s_T) − V(s_t)
    rewards_to_go = rewards.flip(0).cumsum(0).flip(0)
    torch.testing.assert_close(advantages(rewards, values, next_values, never, never, gamma=1.0, lam=1.0),
                               rewards_to_go + next_values[-1] - values)


# ---- rollouts and losses ------------------------------------------------------------------
def test_sampled_actions_follow_the_policy_and_repeat_with_the_generator():
    probabilities = torch.tensor([0.2, 0.5, 0.3])
    logits = probabilities.log().expand(40000, 3)
    actions = _sample_actions(logits, generator(0, "test_sampling"))
    frequencies = torch.bincount(actions, minlength=3).float() / len(actions)
    torch.testing.assert_close(frequencies, probabilities, atol=0.01, rtol=0)  # binomial sd ≤ 0.0025
    assert torch.equal(actions, _sample_actions(logits, generator(0, "test_sampling")))
    assert not torch.equal(actions, _sample_actions(logits, generator(1, "test_sampling")))


def test_same_model_seed_and_iterations_give_identical_losses_and_a_different_seed_does_not():
    settings = A2CSettings(envs=4, rollout_steps=16)
    runs = []
    for seed in (5, 5, 6):
        with RolloutStream("cartpole", settings, seed=seed, start_iteration=10) as stream:
            runs.append((train(built_model("cartpole", 3), stream, 5, lr=3e-3, start_iteration=10),
                         list(stream.finished_returns)))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]


def test_a_segment_depends_on_its_start_iteration_not_on_what_came_before():
    settings = A2CSettings(envs=2, rollout_steps=8)
    model = built_model("cartpole", 4)

    def losses_from(start_iteration, warmup):
        with RolloutStream("cartpole", settings, seed=1, start_iteration=start_iteration) as stream:
            for iteration in range(start_iteration - warmup, start_iteration):
                stream.loss(model, iteration)  # rollouts of other iterations: must not shift the segment's
            return [stream.loss(model, iteration).item() for iteration in range(start_iteration, start_iteration + 3)]

    resumed = losses_from(3, warmup=0)
    assert losses_from(3, warmup=0) == resumed
    assert losses_from(0, warmup=0) != resumed  # other environment seeds and action draws


def test_rollouts_never_draw_from_the_global_random_streams():
    model = built_model("cartpole", 0)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    with RolloutStream("cartpole", A2CSettings(envs=2, rollout_steps=8), seed=0, start_iteration=0) as stream:
        stream.loss(model, 0).backward()
    evaluate_returns(model, "cartpole", [1, 2])
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]


def test_loss_is_finite_and_reaches_every_parameter_of_both_heads():
    model = built_model("acrobot", 2)
    with RolloutStream("acrobot", A2CSettings(envs=3, rollout_steps=10), seed=0, start_iteration=0) as stream:
        loss = stream.loss(model, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert set(stream.last_loss_terms) == {"policy", "value", "entropy"}
    assert 0 < stream.last_loss_terms["entropy"] <= np.log(3) + 1e-6


def test_masked_weights_with_masked_gradients_stay_zero_under_adam():
    model = built_model("cartpole", 1)
    mask_generator = generator(0, "test_mask")
    masks = {name: (torch.rand(parameter.shape, generator=mask_generator) > 0.5).float()
             for name, parameter in model.named_parameters() if name.endswith("weight")}
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            parameters[name].mul_(mask)
    before = {name: parameter.detach().clone() for name, parameter in parameters.items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with RolloutStream("cartpole", A2CSettings(envs=2, rollout_steps=16), seed=0, start_iteration=0) as stream:
        for iteration in range(3):
            optimizer.zero_grad()
            stream.loss(model, iteration).backward()
            for name, mask in masks.items():
                parameters[name].grad.mul_(mask)
            optimizer.step()
    for name, mask in masks.items():
        weight = parameters[name].detach()
        assert torch.all(weight[mask == 0] == 0), name  # no re-masking after the step was needed
        assert not torch.equal(weight[mask == 1], before[name][mask == 1]), name  # the kept weights learned


def test_episode_ends_keep_the_final_observation_and_the_finished_returns():
    settings = A2CSettings(envs=3, rollout_steps=20)
    model = constant_action_model("cartpole", 0)  # always pushes left: the pole falls within a few dozen steps
    with RolloutStream("cartpole", settings, seed=2, start_iteration=0) as stream:
        rollout = stream._collect(model, 0)
    ended = rollout["episode_ended"]
    assert ended.any() and torch.equal(ended, rollout["terminated"])  # falling terminates, nothing truncates
    final = rollout["next_observations"][ended]
    beyond_limits = (final[:, 0].abs() > 2.4) | (final[:, 2].abs() > 12 * 2 * np.pi / 360)
    assert beyond_limits.all()  # the observation that ended the episode, not the next episode's first
    following = rollout["observations"][1:][ended[:-1]]
    assert (following.abs() <= 0.05).all()  # a fresh episode starts after each ended step
    assert len(stream.finished_returns) == int(ended.sum())
    assert all(value == int(value) and 1 <= value < 100 for value in stream.finished_returns)  # 1 per step


def test_the_time_limit_truncates_and_the_return_counts_every_step():
    entry = environment("acrobot")
    settings = A2CSettings(envs=2, rollout_steps=50)
    model = constant_action_model("acrobot", 1)  # no torque: the arm hangs and never reaches the line
    with RolloutStream("acrobot", settings, seed=0, start_iteration=0) as stream:
        rollouts = [stream._collect(model, iteration) for iteration in range(entry.max_episode_steps // 50)]
    assert not any(rollout["terminated"].any() for rollout in rollouts)
    assert not any(rollout["episode_ended"].any() for rollout in rollouts[:-1])
    assert rollouts[-1]["episode_ended"][-1].all()  # step 500 of every environment
    assert stream.finished_returns == [-float(entry.max_episode_steps)] * settings.envs


# ---- evaluation ---------------------------------------------------------------------------
def greedy_return_by_hand(model, gym_id, seed):
    env = gym.make(gym_id)
    observation, _ = env.reset(seed=seed)
    total, done = 0.0, False
    with torch.no_grad():
        while not done:
            logits, _ = model(torch.as_tensor(observation, dtype=torch.float32).unsqueeze(0))
            observation, reward, terminated, truncated, _ = env.step(int(logits.argmax()))
            total += reward
            done = terminated or truncated
    env.close()
    return total


def test_evaluation_is_the_mean_greedy_return_of_one_episode_per_seed():
    model = built_model("cartpole", 7)
    model.train()
    seeds = [3, 11, 12]
    mean = evaluate_returns(model, "cartpole", seeds)
    assert mean == evaluate_returns(model, "cartpole", seeds)
    assert mean == pytest.approx(np.mean([greedy_return_by_hand(model, "CartPole-v1", seed) for seed in seeds]))
    assert model.training  # the caller's mode is restored
    with pytest.raises(ValueError):
        evaluate_returns(model, "cartpole", [])


def test_evaluation_ends_episodes_at_the_time_limit():
    entry = environment("acrobot")
    assert evaluate_returns(constant_action_model("acrobot", 1), "acrobot", [0, 1]) == -entry.max_episode_steps


# ---- learning -----------------------------------------------------------------------------
def test_a2c_learns_cartpole():
    # Measured with this setting for init and stream seeds 0…9: untrained 9–225, trained 217–500,
    # trained − untrained 184–491 (seed 0: 27 → 378). A2C is unstable on CartPole, hence the loose bounds.
    model = built_model("cartpole", 0)
    untrained = evaluate_returns(model, "cartpole", EVAL_SEEDS)
    with RolloutStream("cartpole", A2CSettings(), seed=0, start_iteration=0) as stream:
        train(model, stream, 300, lr=3e-3)
    trained = evaluate_returns(model, "cartpole", EVAL_SEEDS)
    assert trained <= environment("cartpole").max_episode_steps
    assert trained >= 150 and trained >= untrained + 100, (untrained, trained)
