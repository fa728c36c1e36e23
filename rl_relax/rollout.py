"""Rollout buffer and collection: the policy acts in the vector env and everything is stored.

Per step t and env i the buffer holds obs, action (unclipped), reward, terminated, truncated,
the sampling noise the estimator asked for, and ``valid``: False for gymnasium's NEXT_STEP reset
transitions (the step after an episode ended, whose action the env ignored). Invalid steps are
masked out of every loss and statistic downstream. ``obs[T]`` is the observation after the last
step, for bootstrapping.

V(s_t) is not computed while acting: the parameters do not change during a rollout, so the
learner evaluates V on all T + 1 observations in one batched forward pass, which gives the same
numbers as per-step evaluation at a fraction of the cost.

Everything is staged in NumPy arrays during collection (acting runs in NumPy, see
:mod:`rl_relax.networks`) and handed to torch once per rollout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rl_relax.envs import VectorEnvHandle
from rl_relax.networks import Policy

ExtraNoiseFn = Callable[[np.ndarray, np.random.Generator], dict[str, np.ndarray]]


class RolloutBuffer:
    """Preallocated storage for one rollout of T steps in N envs.

    With ``num_seeds=S`` (seeds trained together, :mod:`rl_relax.seed_group`) every array has a
    leading seed dimension, (S, T, N, ...), and the flat views are (S, T N, ...).
    """

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_dim: int,
        policy: Policy,
        noise_shapes: dict[str, tuple[int, ...]],
        device: torch.device,
        num_seeds: int | None = None,
    ):
        t, n = num_steps, num_envs
        self.num_steps, self.num_envs, self.device = t, n, device
        s = () if num_seeds is None else (num_seeds,)
        self.obs_np = np.zeros((*s, t + 1, n, obs_dim), dtype=np.float32)
        self.rewards_np = np.zeros((*s, t, n), dtype=np.float32)
        self.terminated_np = np.zeros((*s, t, n), dtype=bool)
        self.truncated_np = np.zeros((*s, t, n), dtype=bool)
        self.valid_np = np.ones((*s, t, n), dtype=bool)
        self.episode_step_np = np.zeros((*s, t, n), dtype=np.int64)  # position in the episode, -1 on reset slots
        self.actions_np = np.zeros((*s, t, n, *policy.action_shape), dtype=policy.action_dtype)
        self.noise_np = {k: np.zeros((*s, t, n, *shape), dtype=np.float32) for k, shape in noise_shapes.items()}
        # Flat, time-major torch views (row t * N + i) of the arrays, made once: the arrays are rewritten
        # in place every rollout, so on the CPU these views always hold the current rollout, for free.
        per_step = {
            "obs": self.obs_np[..., :t, :, :], "actions": self.actions_np, "valid": self.valid_np,
            "terminated": self.terminated_np, "truncated": self.truncated_np, "episode_step": self.episode_step_np,
            **{f"noise/{k}": v for k, v in self.noise_np.items()},
        }  # fmt: skip
        lead = len(s)
        self._flat = {k: torch.from_numpy(v.reshape(*s, t * n, *v.shape[lead + 2 :])) for k, v in per_step.items()}
        self._flat["all_obs"] = torch.from_numpy(self.obs_np.reshape(*s, (t + 1) * n, obs_dim))

    def flat(self, name: str) -> torch.Tensor:
        """A per-step array as a flat (T N, ...) tensor on the buffer's device (a view of the buffer on the CPU).

        Names: obs, actions, valid, terminated, truncated, episode_step, noise/<key>, and all_obs (the
        ((T + 1) N, obs_dim) observations including the one after the last step).
        """
        return self.tensor(self._flat[name])

    def observation_positions(self) -> np.ndarray:
        """The position in its episode of every stored observation obs[0..T]: (T + 1, N), or (S, T + 1, N).

        A valid step's observation is at ``episode_step[t]``. Observation t + 1 follows step t: after a
        valid step it is the same episode's next observation (its true final observation when step t
        ended the episode: position = the episode's length), at ``episode_step[t] + 1``; after a reset
        slot it is the new episode's first, at 0. A reset slot at t = 0 holds the final observation of an
        episode that ended in the previous rollout, whose length this rollout does not record: 0 is
        returned there, and nothing depends on it (the slot's advantage is 0, it is masked out of the
        value regression, and its regression residual is 0 at the V that computed the targets).
        """
        step, valid = self.episode_step_np, self.valid_np
        positions = np.empty((*step.shape[:-2], self.num_steps + 1, self.num_envs), dtype=np.int64)
        positions[..., 0, :] = np.where(valid[..., 0, :], step[..., 0, :], 0)
        positions[..., 1:, :] = np.where(valid, step + 1, 0)
        return positions

    def tensor(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``array`` on the buffer's device (zero-copy on the CPU)."""
        tensor = torch.from_numpy(array) if isinstance(array, np.ndarray) else array
        return tensor if self.device.type == "cpu" else tensor.to(self.device)


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
        buffer: RolloutBuffer,
        rng: np.random.Generator,
        noise_keys: Sequence[str] = (),
        extra_noise: ExtraNoiseFn | None = None,
    ):
        self.env, self.policy, self.buffer, self.rng = env, policy, buffer, rng
        self.noise_keys = tuple(noise_keys)
        self.extra_noise = extra_noise
        self._next_obs: np.ndarray | None = None
        self._reset_pending = np.zeros(buffer.num_envs, dtype=bool)

    def start(self, obs: np.ndarray) -> None:
        """Begin from freshly reset observations."""
        self._next_obs = obs
        self._reset_pending = np.zeros(self.buffer.num_envs, dtype=bool)

    def collect(self) -> EpisodeRecord:
        """Fill the buffer with ``num_steps`` vector steps; return the episodes that ended."""
        buf, n = self.buffer, self.buffer.num_envs
        episodes = EpisodeRecord()
        step = self.env.envs.step
        # gymnasium's episode statistics count the steps of each env's current episode (NEXT_STEP:
        # the reset step does not count): before step t that is t's position in its episode.
        stats = self.env.episode_stats
        for t in range(buf.num_steps):
            buf.episode_step_np[t] = stats.episode_lengths
            # Copy the observation before stepping: vector envs may reuse their arrays.
            buf.obs_np[t] = self._next_obs.reshape(n, -1)
            out = self.policy.act(buf.obs_np[t], self.rng)
            buf.actions_np[t] = out.action
            for key in self.noise_keys:
                buf.noise_np[key][t] = out.noise[key]
            if self.extra_noise is not None:
                for key, value in self.extra_noise(out.action, self.rng).items():
                    buf.noise_np[key][t] = value

            obs, rewards, terminated, truncated, infos = step(self.policy.env_action(out.action))
            buf.rewards_np[t] = rewards
            buf.terminated_np[t] = terminated
            buf.truncated_np[t] = truncated
            self._next_obs = obs
            if "_episode" in infos:
                ended = infos["_episode"]
                if ended.any():
                    episodes.returns.extend(infos["episode"]["r"][ended].tolist())
                    episodes.lengths.extend(infos["episode"]["l"][ended].tolist())
        buf.obs_np[buf.num_steps] = self._next_obs.reshape(n, -1)
        # A step is a NEXT_STEP reset transition iff its env's previous step ended an episode.
        done = np.logical_or(buf.terminated_np, buf.truncated_np)
        np.logical_not(self._reset_pending, out=buf.valid_np[0])
        np.logical_not(done[:-1], out=buf.valid_np[1:])
        self._reset_pending = done[-1]
        np.putmask(buf.episode_step_np, ~buf.valid_np, -1)  # reset slots belong to no episode
        return episodes
