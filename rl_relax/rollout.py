"""Rollout buffer and collection: the policy acts in the vector env and everything is stored.

Per step t and env i the buffer holds obs, action (unclipped), reward, terminated, truncated,
V(s_t), the sampling noise the estimator asked for, and ``valid``: False for gymnasium's NEXT_STEP
reset transitions (the step after an episode ended, whose action the env ignored). Invalid steps
are masked out of every loss and statistic downstream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rl_relax.envs import VectorEnvHandle
from rl_relax.networks import Policy, ValueNet

ExtraNoiseFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class RolloutBuffer:
    """Preallocated (T, N, ...) tensors for one rollout of T steps in N envs."""

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_dim: int,
        policy: Policy,
        noise_shapes: dict[str, tuple[int, ...]],
        device: torch.device,
    ):
        t, n = num_steps, num_envs
        self.num_steps, self.num_envs = t, n
        self.obs = torch.zeros((t, n, obs_dim), device=device)
        self.actions = torch.zeros((t, n, *policy.action_shape), dtype=policy.action_dtype, device=device)
        self.rewards = torch.zeros((t, n), device=device)
        self.values = torch.zeros((t, n), device=device)
        self.terminated = torch.zeros((t, n), dtype=torch.bool, device=device)
        self.truncated = torch.zeros((t, n), dtype=torch.bool, device=device)
        self.valid = torch.ones((t, n), dtype=torch.bool, device=device)
        self.noise = {k: torch.zeros((t, n, *s), device=device) for k, s in noise_shapes.items()}
        self.last_value = torch.zeros((n,), device=device)

    def flat(self, name: str) -> torch.Tensor:
        """A stored field with the (T, N) dimensions merged into one batch dimension."""
        x = self.noise[name] if name in self.noise else getattr(self, name)
        return x.reshape(self.num_steps * self.num_envs, *x.shape[2:])


@dataclass
class EpisodeRecord:
    """Episodes that ended during a rollout, in the order they ended (raw, unnormalised returns)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


class RolloutCollector:
    """Steps the vector env with the current policy and fills a :class:`RolloutBuffer`."""

    def __init__(
        self,
        env: VectorEnvHandle,
        policy: Policy,
        value: ValueNet,
        buffer: RolloutBuffer,
        noise_keys: Sequence[str] = (),
        extra_noise: ExtraNoiseFn | None = None,
    ):
        self.env, self.policy, self.value, self.buffer = env, policy, value, buffer
        self.noise_keys = tuple(noise_keys)
        self.extra_noise = extra_noise
        self.device = buffer.obs.device
        self._next_obs: np.ndarray | None = None
        self._reset_pending = np.zeros(buffer.num_envs, dtype=bool)

    def start(self, obs: np.ndarray) -> None:
        """Begin from freshly reset observations."""
        self._next_obs = obs
        self._reset_pending[:] = False

    @torch.no_grad()
    def collect(self) -> EpisodeRecord:
        """Fill the buffer with ``num_steps`` vector steps; return the episodes that ended."""
        buf, n = self.buffer, self.buffer.num_envs
        episodes = EpisodeRecord()
        for t in range(buf.num_steps):
            # Copy the observation into the buffer before stepping: vector envs may reuse the array.
            obs_t = buf.obs[t]
            obs_t.copy_(torch.from_numpy(self._next_obs.reshape(n, -1)))
            out = self.policy.act(obs_t)
            buf.values[t] = self.value(obs_t)
            buf.actions[t] = out.action
            for key in self.noise_keys:
                buf.noise[key][t] = out.noise[key]
            if self.extra_noise is not None:
                for key, value in self.extra_noise(out.action).items():
                    buf.noise[key][t] = value
            buf.valid[t] = torch.from_numpy(~self._reset_pending)

            obs, rewards, terminated, truncated, infos = self.env.envs.step(self.policy.env_action(out.action))
            buf.rewards[t] = torch.from_numpy(np.asarray(rewards, dtype=np.float32))
            buf.terminated[t] = torch.from_numpy(np.asarray(terminated))
            buf.truncated[t] = torch.from_numpy(np.asarray(truncated))
            self._reset_pending = np.logical_or(terminated, truncated)
            self._next_obs = obs
            if "_episode" in infos:
                ended = infos["_episode"]
                if ended.any():
                    episodes.returns.extend(infos["episode"]["r"][ended].tolist())
                    episodes.lengths.extend(infos["episode"]["l"][ended].tolist())

        last_obs = torch.from_numpy(np.asarray(self._next_obs, dtype=np.float32).reshape(n, -1))
        buf.last_value.copy_(self.value(last_obs.to(self.device)))
        return episodes
