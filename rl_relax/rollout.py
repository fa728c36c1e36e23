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

Two kinds of batch (``learner.batch``): ``steps`` (:class:`RolloutCollector`, the default) fills
T = ``learner.num_steps`` steps of every env, episodes running on across updates; ``episodes``
(:class:`EpisodeCollector`, the RELAX paper's discrete protocol) fills the buffer with complete episodes
of one env, starting each update with a fresh episode, and leaves the slots after the last one invalid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rl_relax.envs import VectorEnvHandle
from rl_relax.networks import ActOutput, Policy

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
        self._on_cpu = torch.device(device).type == "cpu"
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
        tensor = self._flat[name]
        return tensor if self._on_cpu else tensor.to(self.device)

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
        return tensor if self._on_cpu else tensor.to(self.device)


@dataclass
class EpisodeRecord:
    """Episodes that ended during a rollout, in the order they ended (raw, unnormalised returns)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    #: Env steps taken, when a collector counts them (:class:`EpisodeCollector`); None: a full buffer's T N.
    env_steps: int | None = None


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

    def _act(self, t: int) -> ActOutput:
        """The policy acts on the observations of step t; the action and the noise asked for are stored."""
        buf = self.buffer
        out = self.policy.act(buf.obs_np[t], self.rng)
        buf.actions_np[t] = out.action
        for key in self.noise_keys:
            buf.noise_np[key][t] = out.noise[key]
        if self.extra_noise is not None:
            for key, value in self.extra_noise(out.action, self.rng).items():
                buf.noise_np[key][t] = value
        return out

    def collect(self) -> EpisodeRecord:
        """Fill the buffer with ``num_steps`` vector steps; return the episodes that ended."""
        buf, n = self.buffer, self.buffer.num_envs
        episodes = EpisodeRecord()
        step = self.env.envs.step
        # gymnasium's episode statistics count the steps of each env's current episode (NEXT_STEP:
        # the reset step does not count): before step t that is t's position in its episode.
        stats = self.env.episode_stats
        with self.policy.net.parameters_fixed():  # acting checks the parameters once, not every step
            for t in range(buf.num_steps):
                buf.episode_step_np[t] = stats.episode_lengths
                # Copy the observation before stepping: vector envs may reuse their arrays.
                buf.obs_np[t] = self._next_obs.reshape(n, -1)
                out = self._act(t)

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


def episode_capacity(time_limit: int, episodes_per_update: int) -> int:
    """Slots an :class:`EpisodeCollector` buffer needs: E episodes of at most ``time_limit`` steps, with a
    NEXT_STEP reset slot between consecutive ones."""
    return episodes_per_update * time_limit + episodes_per_update - 1


class EpisodeCollector(RolloutCollector):
    """Fills a buffer of one env with ``episodes_per_update`` complete episodes (``learner.batch=episodes``).

    Each update starts a fresh episode: if the previous update's last episode ended (it always has, after
    the first update), gymnasium's NEXT_STEP reset step is taken first, outside the buffer (its action is
    ignored by the env, so none is drawn). Episode e then fills the next slots up to its last step;
    between two episodes of one update the reset step is an ordinary invalid slot, as in a
    :class:`RolloutCollector` buffer. The slots after the last episode's end are invalid padding: their
    observation is the episode's true final observation (also ``obs[len]``), action 0, reward 0, no
    termination, and noise 0.5 (in every sampler's domain, so that masked terms stay finite).

    The buffer has T = :func:`episode_capacity` slots, so an update's batch average keeps the constant
    normaliser T (:meth:`rl_relax.estimators.base.RolloutBatch.mean`), whatever the episodes' lengths.
    ``collect`` returns the episodes with ``env_steps``, the env steps actually taken: the episodes'
    lengths summed (reset steps are not steps of any episode and are not counted).
    """

    def __init__(
        self,
        env: VectorEnvHandle,
        policy: Policy,
        buffer: RolloutBuffer,
        rng: np.random.Generator,
        noise_keys: Sequence[str] = (),
        extra_noise: ExtraNoiseFn | None = None,
        episodes_per_update: int = 1,
    ):
        if buffer.num_envs != 1 or buffer.obs_np.ndim != 3:
            raise ValueError("an EpisodeCollector fills the buffer of one env (num_envs=1, no seed dimension)")
        if episodes_per_update < 1:
            raise ValueError(f"episodes_per_update must be >= 1, got {episodes_per_update}")
        super().__init__(env, policy, buffer, rng, noise_keys, extra_noise)
        self.episodes_per_update = int(episodes_per_update)
        self._ignored_action = self.policy.env_action(np.zeros_like(buffer.actions_np[0]))

    def collect(self) -> EpisodeRecord:
        """Fill the buffer with ``episodes_per_update`` complete episodes; return them, with ``env_steps``."""
        with self.policy.net.parameters_fixed():  # acting checks the parameters once, not every step
            return self._collect_episodes()

    def _collect_episodes(self) -> EpisodeRecord:
        buf, step, stats = self.buffer, self.env.envs.step, self.env.episode_stats
        episodes = EpisodeRecord()
        if self._reset_pending[0]:  # NEXT_STEP: this step only resets the env (action ignored, nothing to store)
            self._next_obs = step(self._ignored_action)[0]
        ended, env_steps, reset_slot = 0, 0, False
        for t in range(buf.num_steps):
            buf.episode_step_np[t] = -1 if reset_slot else stats.episode_lengths
            buf.obs_np[t] = self._next_obs.reshape(1, -1)
            out = self._act(t)
            obs, rewards, terminated, truncated, infos = step(self.policy.env_action(out.action))
            buf.rewards_np[t] = rewards
            buf.terminated_np[t] = terminated
            buf.truncated_np[t] = truncated
            buf.valid_np[t] = not reset_slot
            self._next_obs = obs
            if "_episode" in infos and infos["_episode"].any():
                episodes.returns.extend(infos["episode"]["r"][infos["_episode"]].tolist())
                episodes.lengths.extend(infos["episode"]["l"][infos["_episode"]].tolist())
            if reset_slot:
                reset_slot = False
                continue
            env_steps += 1
            if terminated[0] or truncated[0]:
                ended += 1
                if ended == self.episodes_per_update:
                    self._pad(t + 1)
                    self._reset_pending[0] = True
                    episodes.env_steps = env_steps
                    return episodes
                reset_slot = True
        raise RuntimeError(
            f"{self.episodes_per_update} episode(s) did not end within {buf.num_steps} steps: the env ran past "
            "the time limit the buffer was sized for (env.make_kwargs.max_episode_steps or its spec's)"
        )

    def _pad(self, start: int) -> None:
        """Slots ``start`` .. T - 1 invalid, ``obs[start:]`` the last episode's true final observation."""
        buf = self.buffer
        buf.obs_np[start:] = self._next_obs.reshape(1, -1)
        buf.actions_np[start:] = 0
        buf.rewards_np[start:] = 0.0
        buf.terminated_np[start:] = False
        buf.truncated_np[start:] = False
        buf.valid_np[start:] = False
        buf.episode_step_np[start:] = -1
        for noise in buf.noise_np.values():
            noise[start:] = 0.5
