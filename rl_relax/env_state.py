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

Box2D envs (LunarLander, BipedalWalker, CarRacing) cannot be supported: pybox2d exposes bodies'
positions and velocities but not the world's contact manifolds, the solver's accumulated impulses or
the lander's particle bodies, so a "restored" world does not reproduce the next transition. Asking for
one raises :class:`StateNotRestorableError` with that reason.

A snapshot also records the env's random generator (``env.unwrapped.np_random``). :func:`restore_state`
puts it back (the exact next transition) or, given ``rng``, gives the env a fresh generator seeded from
it (independent continuations of a stochastic env).

Time limits are not part of the snapshot: the anatomy builds its envs without gymnasium's ``TimeLimit``
(:func:`make_restorable_env`) and applies the limit itself from the episode step it tracks.
"""

from __future__ import annotations

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


def _saver(env: gym.Env) -> _Saver:
    sim = env.unwrapped
    if callable(getattr(sim, _HOOK_SAVE, None)) and callable(getattr(sim, _HOOK_RESTORE, None)):
        return _Saver(lambda e: getattr(e, _HOOK_SAVE)(), lambda e, s: getattr(e, _HOOK_RESTORE)(s))
    saver = _builtin_saver(sim)
    if saver is not None:
        return saver
    name = env.spec.id if env.spec is not None else type(sim).__name__
    if "box2d" in type(sim).__module__:
        raise StateNotRestorableError(
            f"{name} is a Box2D env: pybox2d cannot save and restore a world's contacts, solver impulses and "
            "particles, so its state cannot be restored exactly and the variance anatomy cannot run on it. "
            "Fix: use a classic-control or MuJoCo env, or an env that implements save_state()/restore_state()."
        )
    raise StateNotRestorableError(
        f"{name} ({type(sim).__name__}) cannot save and restore its simulator state, which the variance anatomy "
        f"needs. Fix: give {type(sim).__name__} the methods save_state() -> object and restore_state(state) "
        "(see rl_relax/env_state.py)."
    )


def check_restorable(env: gym.Env) -> None:
    """Raise :class:`StateNotRestorableError` (with the reason and a fix) unless ``env`` can be restored."""
    _saver(env)


def save_state(env: gym.Env) -> EnvSnapshot:
    """The simulator state of ``env`` (wrappers are not part of it) and its random generator's state."""
    sim = env.unwrapped
    return EnvSnapshot(_saver(env).save(sim), dict(sim.np_random.bit_generator.state))


def restore_state(env: gym.Env, snapshot: EnvSnapshot, rng: np.random.Generator | None = None) -> None:
    """Put ``snapshot`` back into ``env``.

    Without ``rng`` the env's random generator is restored too, so the next transition is exactly the
    one that followed the snapshot. With ``rng`` the env gets a fresh generator seeded from ``rng``:
    continuations restarted from one snapshot are then independent, as the variance anatomy needs.
    """
    sim = env.unwrapped
    _saver(env).restore(sim, snapshot.sim)
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
    are kept. Raises :class:`StateNotRestorableError` if the env cannot be restored.
    """
    from rl_relax.envs import resolve_spec

    spec = resolve_spec(env_cfg.id, env_cfg.get("import_module"))
    make_kwargs = dict(env_cfg.get("make_kwargs") or {})
    limit = make_kwargs.pop("max_episode_steps", spec.max_episode_steps)
    env = gym.make(dataclasses.replace(spec, max_episode_steps=None), disable_env_checker=True, **make_kwargs)
    try:
        check_restorable(env)
    except StateNotRestorableError:
        env.close()
        raise
    return env, (None if limit is None else int(limit))
