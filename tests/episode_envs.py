"""A tiny environment whose actions decide how long episodes last; importing this module registers it.

``RlRelaxTest/StopOrGo-v0``: obs = [steps taken so far]. Action 0 stops (reward 1, terminated), action 1 goes
on (reward 2), action 2 goes on (reward -0.5). Time limit 3 steps (a truncation, final observation [3]).
Its expected return under any policy is a short sum over action sequences (:func:`expected_return`), so an
estimator's expected gradient can be checked against the exact one.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

REWARDS = (1.0, 2.0, -0.5)
TIME_LIMIT = 3


class StopOrGoEnv(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(REWARDS))
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.t)], dtype=np.float32), REWARDS[int(action)], int(action) == 0, False, {}


def expected_return(logits: torch.Tensor) -> torch.Tensor:
    """The expected undiscounted return within the time limit: ``logits`` (TIME_LIMIT, 3) are the policy's at
    obs 0, 1, 2 (a differentiable function of the policy's parameters, so autograd gives the exact gradient)."""
    probs = torch.softmax(logits, dim=-1)
    rewards = torch.tensor(REWARDS, dtype=probs.dtype)
    to_go = torch.zeros((), dtype=probs.dtype)  # the expected return from step t on, built from the last step
    for t in reversed(range(TIME_LIMIT)):
        goes_on = torch.ones_like(rewards)
        goes_on[0] = 0.0  # action 0 ends the episode
        to_go = (probs[t] * (rewards + goes_on * to_go)).sum()
    return to_go


if "RlRelaxTest/StopOrGo-v0" not in gym.registry:
    gym.register("RlRelaxTest/StopOrGo-v0", entry_point=StopOrGoEnv, max_episode_steps=TIME_LIMIT)
