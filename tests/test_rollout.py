"""Rollout collection on a time-limited env: NEXT_STEP reset masking, truncation vs termination."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rl_relax.envs import make_vector_env, seed_vector_env
from rl_relax.networks import make_policy
from rl_relax.returns import gae
from rl_relax.rollout import EpisodeCollector, RolloutBuffer, RolloutCollector, episode_capacity

GAMMA = 0.9
POLICY_CFG = OmegaConf.create({"hidden_sizes": [8], "activation": "tanh", "ortho_init": True, "log_std_init": 0.0})


def collect_counter(num_steps: int, **env_kwargs):
    """One rollout of RlRelaxTest/Counter-v0 (obs = steps taken in the episode, reward 1)."""
    env_cfg = OmegaConf.create({"id": "RlRelaxTest/Counter-v0", "num_envs": 1, "make_kwargs": env_kwargs,
                                "import_module": "tests.toy_envs"})  # fmt: skip
    handle = make_vector_env(env_cfg)
    policy = make_policy(POLICY_CFG, handle.envs.single_observation_space, handle.envs.single_action_space)
    buf = RolloutBuffer(num_steps, 1, 1, policy, policy.noise_shapes, policy.net.layers[0].weight.device)
    collector = RolloutCollector(handle, policy, buf, np.random.default_rng(0), noise_keys=tuple(policy.noise_shapes))
    collector.start(seed_vector_env(handle, 0))
    episodes = collector.collect()
    handle.close()
    collect_counter.policy = policy
    return buf, episodes


def advantages_with_value_equal_to_obs(buf):
    """GAE with V(s) = s (the step counter), so bootstrapping is visible in the numbers."""
    values = buf.obs_np[..., 0]
    adv, _ = gae(buf.rewards_np, values[:-1], values[-1], buf.terminated_np, buf.truncated_np, buf.valid_np,
                 GAMMA, 1.0)  # fmt: skip
    return adv[:, 0]


def test_reset_transition_is_masked_and_final_obs_is_kept():
    buf, episodes = collect_counter(8, max_episode_steps=3)
    # steps: obs 0,1,2 -> truncated at t=2; t=3 is the reset transition (obs = true final obs 3).
    assert buf.obs_np[:, 0, 0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert buf.valid_np[:, 0].tolist() == [True, True, True, False, True, True, True, False]
    assert buf.truncated_np[:, 0].tolist() == [False, False, True, False, False, False, True, False]
    assert buf.rewards_np[3, 0] == 0.0
    assert episodes.returns == [3.0, 3.0] and episodes.lengths == [3, 3]


def counter_rollouts(max_episode_steps: int):
    """Rollouts of 3 steps in 2 Counter-v0 envs with the given time limit: (env handle, buffer, collector)."""
    env_cfg = OmegaConf.create({"id": "RlRelaxTest/Counter-v0", "num_envs": 2,
                                "make_kwargs": {"max_episode_steps": max_episode_steps},
                                "import_module": "tests.toy_envs"})  # fmt: skip
    handle = make_vector_env(env_cfg)
    policy = make_policy(POLICY_CFG, handle.envs.single_observation_space, handle.envs.single_action_space)
    buf = RolloutBuffer(3, 2, 1, policy, {}, policy.net.layers[0].weight.device)
    collector = RolloutCollector(handle, policy, buf, np.random.default_rng(0))
    collector.start(seed_vector_env(handle, 0))
    return handle, buf, collector


def test_episode_step_is_the_position_in_the_episode_across_rollout_boundaries():
    """Counter-v0's observation is the number of steps taken in the episode: the stored position must
    equal it on every valid slot (also in rollouts that start mid-episode) and be -1 on reset slots."""
    handle, buf, collector = counter_rollouts(max_episode_steps=4)
    positions = []
    for _ in range(4):
        collector.collect()
        expected = np.where(buf.valid_np, buf.obs_np[:-1, :, 0], -1)
        np.testing.assert_array_equal(buf.episode_step_np, expected)
        positions.extend(buf.episode_step_np[:, 0].tolist())
    handle.close()
    assert positions == [0, 1, 2, 3, -1, 0, 1, 2, 3, -1, 0, 1]


def test_reset_transition_after_a_rollout_boundary_is_masked():
    """An episode that ends on a rollout's last step makes the next rollout's first step the reset."""
    handle, buf, collector = counter_rollouts(max_episode_steps=3)
    valid = []
    for _ in range(3):
        collector.collect()
        valid.append(buf.valid_np[:, 0].tolist())
    handle.close()
    # Episodes of 3 steps plus one reset step: periods of 4 over rollouts of 3 steps.
    assert valid == [[True, True, True], [False, True, True], [True, False, True]]


def test_truncation_bootstraps_with_value_of_final_observation():
    buf, _ = collect_counter(8, max_episode_steps=3)
    adv = advantages_with_value_equal_to_obs(buf)
    # t=2: r=1, V(final obs = 3) bootstrapped: 1 + 0.9*3 - 2 = 1.7
    assert adv[2] == pytest.approx(1.0 + GAMMA * 3.0 - 2.0)
    assert adv[3] == 0.0  # the masked reset transition


def test_termination_does_not_bootstrap():
    buf, _ = collect_counter(8, terminate_at=3)
    assert buf.terminated_np[:, 0].tolist() == [False, False, True, False, False, False, True, False]
    adv = advantages_with_value_equal_to_obs(buf)
    # t=2: r=1 and the episode is over: 1 - V(2) = -1
    assert adv[2] == pytest.approx(1.0 - 2.0)


def test_stored_gumbel_noise_reproduces_the_actions():
    buf, _ = collect_counter(6, max_episode_steps=50)
    u = buf.noise_np["u"]
    assert ((u > 0) & (u < 1)).all()
    logits = collect_counter.policy.params_numpy(buf.obs_np[:-1].reshape(-1, 1)).reshape(6, 1, 2)
    # a_t = argmax(logits + g), g = -log(-log u): replaying the stored noise gives the same actions.
    np.testing.assert_array_equal(np.argmax(logits - np.log(-np.log(u)), axis=-1), buf.actions_np)


@pytest.mark.parametrize("episodes", [False, True], ids=["steps", "episodes"])
def test_a_policy_parameter_replaced_between_rollouts_is_used_by_the_next_one(episodes):
    """Acting checks the policy's parameters once per rollout (``MLP.parameters_fixed``): a layer
    replaced between two rollouts (a checkpoint's tensors, a user's edit) acts from the next one on."""
    env_cfg = OmegaConf.create({"id": "RlRelaxTest/Counter-v0", "num_envs": 1, "make_kwargs": {"max_episode_steps": 4},
                                "import_module": "tests.toy_envs"})  # fmt: skip
    handle = make_vector_env(env_cfg)
    policy = make_policy(POLICY_CFG, handle.envs.single_observation_space, handle.envs.single_action_space)
    if episodes:
        buf = RolloutBuffer(episode_capacity(4, 2), 1, 1, policy, {}, policy.net.layers[0].weight.device)
        collector = EpisodeCollector(handle, policy, buf, np.random.default_rng(0), episodes_per_update=2)
    else:
        buf = RolloutBuffer(9, 1, 1, policy, {}, policy.net.layers[0].weight.device)
        collector = RolloutCollector(handle, policy, buf, np.random.default_rng(0))
    collector.start(seed_vector_env(handle, 0))
    collector.collect()
    policy.params_numpy(buf.obs_np[0])  # acting outside a rollout (e.g. an evaluation) also builds the views
    for action in (0, 1):  # logits (+-50 towards `action`) from a replaced output layer
        out = policy.net.layers[-1]
        out.weight = torch.nn.Parameter(torch.zeros_like(out.weight))
        out.bias = torch.nn.Parameter(torch.tensor([50.0, -50.0] if action == 0 else [-50.0, 50.0]))
        collector.collect()
        assert (buf.actions_np[buf.valid_np] == action).all()
    handle.close()
