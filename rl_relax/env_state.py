"""Save and restore an environment's simulator state, so that many continuations can start from one state.

The variance anatomy (:mod:`rl_relax.anatomy`) restarts an env from a sampled state many times: with
other actions, and with independent continuations after each. That needs the *whole* state that the
next transitions depend on, not the observation. Supported:

- gymnasium's classic control: CartPole (``state``, ``steps_beyond_terminated``), Acrobot (``state``),
  Pendulum (``state``, ``last_u``), MountainCar and MountainCarContinuous (``state``);
- every MuJoCo env (``gymnasium.envs.mujoco.MujocoEnv``): the full integration state of
  ``mujoco.mj_getState(..., mjSTATE_INTEGRATION)`` (time, qpos, qvel, act, warm start, controls, ...),
  which reproduces the next ``mj_step`` bit for bit (``set_state(qpos, qvel)`` alone leaves the solver's
  warm start behind);
- **your own env**: give its unwrapped class two methods (the hook)::

      def save_state(self) -> object:            # everything the next transitions depend on
          return (self.x.copy(), self.t)
      def restore_state(self, state) -> None:    # put it back; no reset needed
          self.x, self.t = state[0].copy(), state[1]

  They take precedence over the built-in savers.

- **every other env, by replay** (Box2D's LunarLander and CarRacing, and any env without a saver):
  :class:`ActionReplay` records how the current episode began (the reset's seed, or the random
  generator's state it drew from) and every action since; restoring resets the env the same way and
  replays the actions. pybox2d cannot save a world (it exposes bodies' positions and velocities but not
  the contact manifolds, the solver's accumulated impulses or the particles), but Box2D is
  deterministic, so the replayed world is the same bit for bit. A restore costs as many env steps as
  the episode had taken. Replay is exact only for an env that is a deterministic function of its reset
  seed, its random generator and the actions: :func:`make_restorable_env` checks that on a short
  episode and refuses an env that fails (with :class:`StateNotRestorableError`). BipedalWalker fails:
  its Box2D world outlives its episodes (it is created once, in ``__init__``), so a replayed episode
  runs in a world with another history.

A snapshot also records the env's random generator (``env.unwrapped.np_random``). :func:`restore_state`
puts it back (the exact next transition) or, given ``rng``, gives the env a fresh generator seeded from
it (independent continuations of a stochastic env).

Time limits are not part of the snapshot: the anatomy builds its envs without gymnasium's ``TimeLimit``
(:func:`make_restorable_env`) and applies the limit itself from the episode step it tracks.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from rl_relax.errors import ConfigError

_HOOK_SAVE, _HOOK_RESTORE = "save_state", "restore_state"


class StateNotRestorableError(ConfigError):
    """The env's simulator state cannot be saved and restored."""


@dataclass(frozen=True)
class EnvSnapshot:
    """An env's simulator state (whatever its saver returns) and its random generator's state."""

    sim: Any
    rng_state: dict


@dataclass(frozen=True)
class _Saver:
    save: Callable[[Any], Any]
    restore: Callable[[Any, Any], None]


def _attributes_saver(*names: str) -> _Saver:
    """Save and restore plain attributes (copies of arrays, so later steps cannot alias them)."""

    def copy(value: Any) -> Any:
        return np.array(value, copy=True) if isinstance(value, np.ndarray) else value

    def save(env: Any) -> tuple:
        return tuple(copy(getattr(env, name)) for name in names)

    def restore(env: Any, state: tuple) -> None:
        for name, value in zip(names, state, strict=True):
            setattr(env, name, copy(value))

    return _Saver(save, restore)


def _mujoco_saver() -> _Saver:
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION

    def save(env: Any) -> np.ndarray:
        state = np.empty(mujoco.mj_stateSize(env.model, spec))
        mujoco.mj_getState(env.model, env.data, state, spec)
        return state

    def restore(env: Any, state: np.ndarray) -> None:
        mujoco.mj_setState(env.model, env.data, state, spec)
        warmstart = env.data.qacc_warmstart.copy()
        mujoco.mj_forward(env.model, env.data)  # derived quantities (sensors, positions) the observation reads
        env.data.qacc_warmstart[:] = warmstart

    return _Saver(save, restore)


def _builtin_saver(env: Any) -> _Saver | None:
    from gymnasium.envs.classic_control import (
        AcrobotEnv,
        CartPoleEnv,
        Continuous_MountainCarEnv,
        MountainCarEnv,
        PendulumEnv,
    )

    if isinstance(env, CartPoleEnv):
        return _attributes_saver("state", "steps_beyond_terminated")
    if isinstance(env, PendulumEnv):
        return _attributes_saver("state", "last_u")
    if isinstance(env, AcrobotEnv | MountainCarEnv | Continuous_MountainCarEnv):
        return _attributes_saver("state")
    try:
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
    except ImportError:  # the mujoco extra is not installed: then env is not a MuJoCo env either
        return None
    if isinstance(env, MujocoEnv):
        return _mujoco_saver()
    return None


class ActionReplay(gym.Wrapper):
    """Saves an env's state as the way its episode began and the actions since; restores by replaying them.

    The outermost wrapper (every reset and step must pass through it). A snapshot is
    ``((seed, generator state before the reset, options), actions)``: with a seed the reset reseeds
    the env; without one, the env's generator is put back to the state the reset drew from. Restoring
    costs one reset and as many steps as the episode had taken. Exact for an env whose transitions
    depend only on its reset seed, its ``np_random`` and the actions (Box2D's are).
    :attr:`replayed_steps` counts the env steps restores have cost.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._start: tuple[int | None, dict, dict | None] | None = None
        self._actions: list = []
        self.replayed_steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        generator_state = self.env.unwrapped.np_random.bit_generator.state  # a fresh dict on every read
        obs, info = self.env.reset(seed=seed, options=options)
        self._start, self._actions = (seed, generator_state, copy.deepcopy(options)), []
        return obs, info

    def step(self, action):
        self._actions.append(np.array(action, copy=True) if isinstance(action, np.ndarray) else action)
        return self.env.step(action)

    def save_replay(self) -> tuple:
        if self._start is None:
            raise RuntimeError("ActionReplay: reset the env before saving its state.")
        return self._start, tuple(self._actions)

    def restore_replay(self, state: tuple) -> None:
        (seed, generator_state, options), actions = state
        if seed is None:
            generator = np.random.default_rng()
            generator.bit_generator.state = generator_state
            self.env.unwrapped.np_random = generator
        self.env.reset(seed=seed, options=copy.deepcopy(options))
        for action in actions:
            self.env.step(action)
        self.replayed_steps += len(actions)
        self._start, self._actions = state[0], list(actions)


def _exact_saver(env: gym.Env) -> _Saver | None:
    """The hook or a built-in saver, working on the unwrapped env; None when there is neither."""
    sim = env.unwrapped
    if callable(getattr(sim, _HOOK_SAVE, None)) and callable(getattr(sim, _HOOK_RESTORE, None)):
        return _Saver(lambda e: getattr(e.unwrapped, _HOOK_SAVE)(), lambda e, s: getattr(e.unwrapped, _HOOK_RESTORE)(s))
    saver = _builtin_saver(sim)
    if saver is None:
        return None
    return _Saver(lambda e: saver.save(e.unwrapped), lambda e, s: saver.restore(e.unwrapped, s))


def _saver(env: gym.Env) -> _Saver:
    """How to save and restore ``env`` (the env as the caller holds it, wrappers included)."""
    saver = _exact_saver(env)
    if saver is not None:
        return saver
    if isinstance(env, ActionReplay):
        return _Saver(lambda e: e.save_replay(), lambda e, s: e.restore_replay(s))
    cls = type(env.unwrapped).__name__
    raise StateNotRestorableError(
        f"{_env_name(env)} ({cls}) has no saver for its simulator state, which the variance anatomy needs. "
        "Fix: build it with rl_relax.env_state.make_restorable_env (it restores by replaying the episode), or "
        f"give {cls} the methods save_state() -> object and restore_state(state) (see rl_relax/env_state.py)."
    )


def _env_name(env: gym.Env) -> str:
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__


def check_restorable(env: gym.Env) -> None:
    """Raise :class:`StateNotRestorableError` (with the reason and a fix) unless ``env`` can be restored."""
    _saver(env)


def save_state(env: gym.Env) -> EnvSnapshot:
    """The simulator state of ``env`` (an :class:`ActionReplay`'s episode record, or the unwrapped env's state:
    other wrappers are not part of it) and its random generator's state."""
    return EnvSnapshot(_saver(env).save(env), dict(env.unwrapped.np_random.bit_generator.state))


def restore_state(env: gym.Env, snapshot: EnvSnapshot, rng: np.random.Generator | None = None) -> None:
    """Put ``snapshot`` back into ``env``.

    Without ``rng`` the env's random generator is restored too, so the next transition is exactly the
    one that followed the snapshot. With ``rng`` the env gets a fresh generator seeded from ``rng``:
    continuations restarted from one snapshot are then independent, as the variance anatomy needs.
    """
    sim = env.unwrapped
    _saver(env).restore(env, snapshot.sim)
    if rng is not None:
        sim.np_random = np.random.default_rng(rng.integers(2**63))
    else:
        generator = np.random.default_rng()
        generator.bit_generator.state = snapshot.rng_state
        sim.np_random = generator


def make_restorable_env(env_cfg: Any) -> tuple[gym.Env, int | None]:
    """One env of the ``env`` config group without a time limit, and that limit (None if it has none).

    The anatomy applies the limit itself (truncation when the episode step reaches it), because the
    ``TimeLimit`` wrapper's step counter is not part of a snapshot. The env's other registered wrappers
    are kept. An env without an exact saver (the hook, classic control, MuJoCo) comes wrapped in
    :class:`ActionReplay`, once :func:`check_replay_is_exact` has passed on it; otherwise raises
    :class:`StateNotRestorableError`.
    """
    from rl_relax.envs import resolve_spec

    spec = resolve_spec(env_cfg.id, env_cfg.get("import_module"))
    make_kwargs = dict(env_cfg.get("make_kwargs") or {})
    limit = make_kwargs.pop("max_episode_steps", spec.max_episode_steps)
    env = gym.make(dataclasses.replace(spec, max_episode_steps=None), disable_env_checker=True, **make_kwargs)
    if _exact_saver(env) is None:
        env = ActionReplay(env)
        try:
            check_replay_is_exact(env)
        except StateNotRestorableError:
            env.close()
            raise
    return env, (None if limit is None else int(limit))


def _transitions(env: gym.Env, actions: list) -> list[tuple]:
    """(observation, reward, terminated) after each action, up to the end of the episode."""
    out = []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        out.append((np.array(obs, copy=True), float(reward), bool(terminated)))
        if terminated or truncated:
            break
    return out


def check_replay_is_exact(env: ActionReplay, seed: int = 0) -> None:
    """Restore ``env`` by replay inside an episode and compare the next transitions with the original ones.

    The episode starts with an unseeded reset (the generator-state path; a seeded reset comes before
    it), the snapshot is taken after a few random actions, and the next 8 transitions must be equal
    bit for bit. Raises :class:`StateNotRestorableError` when they are not: the env then depends on
    something replay does not reproduce (the global random state, the clock, a cache).
    """
    env.action_space.seed(seed)
    env.reset(seed=seed)
    env.step(env.action_space.sample())
    env.reset()
    for _ in range(12):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    snapshot = save_state(env)
    actions = [env.action_space.sample() for _ in range(8)]
    first = _transitions(env, actions)
    restore_state(env, snapshot)
    again = _transitions(env, actions)
    same = len(first) == len(again) and all(
        np.array_equal(o1, o2) and (r1, t1) == (r2, t2) for (o1, r1, t1), (o2, r2, t2) in zip(first, again, strict=True)
    )
    if not same:
        raise StateNotRestorableError(
            f"{_env_name(env)} cannot be restored by replaying its episode: after the reset and the same actions "
            "its next transitions differ, so they depend on something besides its seed, its np_random and the actions "
            f"(the global random state, the clock, ...). Fix: give {type(env.unwrapped).__name__} the methods "
            "save_state() -> object and restore_state(state) (see rl_relax/env_state.py)."
        )
    env.reset(seed=seed)
