"""Tiny deterministic environments for the tests; importing this module registers them.

``RlRelaxTest/Counter-v0``: obs = [steps taken so far], reward 1 per step, any action.
It terminates after ``terminate_at`` steps (if given); a time limit comes from ``max_episode_steps``.
``nan_after`` makes every reward after that many steps NaN (to test divergence handling).

``RlRelaxTest/GlobalNoise-v0``: a random walk driven by NumPy's *global* random state (not the env's
``np_random``), so replaying its episode does not reproduce it (50-step time limit).
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np


class CounterEnv(gym.Env):
    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, terminate_at: int | None = None, nan_after: int | None = None, continuous: bool = False):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = (
            gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32) if continuous else gym.spaces.Discrete(2)
        )
        self.terminate_at, self.nan_after = terminate_at, nan_after
        self.t = 0
        self.total = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        self.total += 1
        reward = 1.0
        if self.nan_after is not None and self.total > self.nan_after:
            reward = float("nan")
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([float(self.t)], dtype=np.float32), reward, terminated, False, {}


if "RlRelaxTest/Counter-v0" not in gym.registry:
    gym.register("RlRelaxTest/Counter-v0", entry_point=CounterEnv)


class GlobalNoiseEnv(gym.Env):
    metadata: ClassVar[dict] = {"render_modes": []}
    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0.0
        return np.array([self.x], dtype=np.float32), {}

    def step(self, action):
        self.x += float(action) - 0.5 + np.random.normal()  # the global state, on purpose
        return np.array([self.x], dtype=np.float32), 1.0, False, False, {}


if "RlRelaxTest/GlobalNoise-v0" not in gym.registry:
    gym.register("RlRelaxTest/GlobalNoise-v0", entry_point=GlobalNoiseEnv, max_episode_steps=50)
