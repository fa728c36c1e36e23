"""Vector environments from config: gymnasium vector envs, episode statistics, normalisation.

Autoreset mode is always ``NEXT_STEP`` (gymnasium's default, and the only mode CartPole's native
vector env supports) and is asserted after construction. Under NEXT_STEP the step that ends an
episode returns the true final observation, and the *next* step of that sub-env is a reset
transition (action ignored, reward 0): :mod:`rl_relax.rollout` masks it out of every loss and
statistic, and the value of the true final observation is available for truncation bootstrapping
without any extra forward pass.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.wrappers.vector import NormalizeObservation, NormalizeReward, RecordEpisodeStatistics

from rl_relax.errors import ConfigError, MissingExtraError

VECTORIZATION_MODES = ("auto", "sync", "async")


def shipped_env_options() -> list[str]:
    """Names of the env options shipped in ``configs/env`` (``env=<name>`` on the command line)."""
    files = importlib.resources.files("rl_relax.configs").joinpath("env").iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def _extra_for(spec: gym.envs.registration.EnvSpec) -> str | None:
    """The rl-relax pip extra that provides an environment's dependencies, if any."""
    entry = str(spec.entry_point)
    for extra in ("box2d", "mujoco"):
        if f"envs.{extra}" in entry:
            return extra
    return None


def resolve_spec(env_id: str, import_module: str | None = None) -> gym.envs.registration.EnvSpec:
    """Import the user's module (so it can register its env), then look up ``env_id``."""
    if import_module:
        try:
            importlib.import_module(import_module)
        except ImportError as exc:
            raise ConfigError(
                f"env.import_module={import_module!r} cannot be imported ({exc}). "
                "Fix: install that module or put it on PYTHONPATH."
            ) from None
    try:
        return gym.spec(env_id)
    except gym.error.Error as exc:
        options = ", ".join(shipped_env_options())
        raise ConfigError(
            f"unknown gymnasium environment id {env_id!r} ({exc}). "
            f"Fix: use a shipped option, env=<one of: {options}>, or a registered id with "
            "env.id=<id> (plus env.import_module=<module> if your env registers itself on import)."
        ) from None


@dataclass
class VectorEnvHandle:
    """The wrapped vector env plus direct handles on the wrappers whose state we checkpoint."""

    envs: VectorEnv
    episode_stats: RecordEpisodeStatistics
    obs_norm: NormalizeObservation | None
    reward_norm: NormalizeReward | None

    def normalizer_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Running statistics of the normalisation wrappers, as tensors (safe for weights_only)."""
        state = {}
        for key, wrapper in (("obs", self.obs_norm), ("reward", self.reward_norm)):
            if wrapper is None:
                continue
            rms = wrapper.obs_rms if key == "obs" else wrapper.return_rms
            state[key] = {
                "mean": torch.as_tensor(np.asarray(rms.mean, dtype=np.float64)),
                "var": torch.as_tensor(np.asarray(rms.var, dtype=np.float64)),
                "count": torch.tensor(float(rms.count), dtype=torch.float64),
            }
        return state

    def load_normalizer_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for key, wrapper in (("obs", self.obs_norm), ("reward", self.reward_norm)):
            if wrapper is None:
                continue
            if key not in state:
                raise KeyError(f"checkpoint has no {key} normalisation statistics")
            rms = wrapper.obs_rms if key == "obs" else wrapper.return_rms
            if tuple(state[key]["mean"].shape) != tuple(np.shape(rms.mean)):
                raise ValueError(
                    f"{key} normalisation statistics have shape {tuple(state[key]['mean'].shape)}, "
                    f"this env needs {tuple(np.shape(rms.mean))}"
                )
            rms.mean = state[key]["mean"].numpy().astype(np.float64)
            rms.var = state[key]["var"].numpy().astype(np.float64)
            rms.count = float(state[key]["count"])

    def freeze_normalizers(self) -> None:
        """Stop updating the statistics (evaluation uses the training statistics as they are)."""
        if self.obs_norm is not None:
            self.obs_norm.update_running_mean = False
        if self.reward_norm is not None:
            self.reward_norm.update_running_mean = False

    def close(self) -> None:
        self.envs.close()


def make_vector_env(
    env_cfg: Any,
    num_envs: int | None = None,
    reward_gamma: float = 0.99,
) -> VectorEnvHandle:
    """Build the vector env described by the ``env`` config group.

    Args:
        env_cfg: the ``env`` config node (id, num_envs, vectorization, make_kwargs, ...).
        num_envs: overrides ``env_cfg.num_envs`` (evaluation uses 1).
        reward_gamma: discount used by ``NormalizeReward``'s running return estimate.
    """
    spec = resolve_spec(env_cfg.id, env_cfg.get("import_module"))
    num_envs = int(env_cfg.num_envs if num_envs is None else num_envs)
    mode = env_cfg.get("vectorization", "auto")
    if mode not in VECTORIZATION_MODES:
        raise ConfigError(
            f"env.vectorization={mode!r} is not one of {', '.join(VECTORIZATION_MODES)}. "
            "Fix: env.vectorization=sync (the default for most envs)."
        )
    make_kwargs = dict(env_cfg.get("make_kwargs") or {})
    if mode == "auto":
        mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
    vector_kwargs = {} if mode == "vector_entry_point" else {"autoreset_mode": AutoresetMode.NEXT_STEP}
    with _construction_errors(spec, make_kwargs):
        envs = gym.make_vec(
            spec.id,
            num_envs=num_envs,
            vectorization_mode=mode,
            vector_kwargs=vector_kwargs,
            **make_kwargs,
        )

    if envs.metadata.get("autoreset_mode") != AutoresetMode.NEXT_STEP:
        envs.close()
        raise ConfigError(
            f"{spec.id} vector env uses autoreset mode {envs.metadata.get('autoreset_mode')}; "
            "rl_relax needs NEXT_STEP. Fix: env.vectorization=sync."
        )
    _check_spaces(envs, spec.id)

    episode_stats = RecordEpisodeStatistics(envs, buffer_length=int(env_cfg.get("solved_window", 100)))
    wrapped: VectorEnv = episode_stats
    obs_norm = reward_norm = None
    if env_cfg.get("normalize_observation", False):
        obs_norm = NormalizeObservation(wrapped)
        wrapped = obs_norm
    if env_cfg.get("normalize_reward", False):
        reward_norm = NormalizeReward(wrapped, gamma=reward_gamma)
        wrapped = reward_norm
    return VectorEnvHandle(wrapped, episode_stats, obs_norm, reward_norm)


def make_env(env_cfg: Any, render_mode: str | None = None) -> gym.Env:
    """One plain (unwrapped by us) env of the ``env`` config group, e.g. for evaluation or rendering.

    No normalisation wrappers: :class:`rl_relax.agent.Agent` applies the saved statistics itself.
    """
    spec = resolve_spec(env_cfg.id, env_cfg.get("import_module"))
    make_kwargs = dict(env_cfg.get("make_kwargs") or {})
    with _construction_errors(spec, make_kwargs):
        return gym.make(spec.id, render_mode=render_mode, **make_kwargs)


@contextlib.contextmanager
def _construction_errors(spec: gym.envs.registration.EnvSpec, make_kwargs: dict[str, Any]) -> Iterator[None]:
    """Turn a missing optional dependency or a rejected keyword into a one-line error with its fix."""
    try:
        yield
    except gym.error.DependencyNotInstalled as exc:
        extra = _extra_for(spec)
        fix = f'pip install "rl-relax[{extra}]"' if extra else "install the package it names"
        raise MissingExtraError(f"{spec.id} needs an optional dependency: {exc}. Fix: {fix}.") from None
    except ImportError as exc:
        extra = _extra_for(spec)
        if extra is None:
            raise
        raise MissingExtraError(
            f'{spec.id} needs the {extra} extra ({exc}). Fix: pip install "rl-relax[{extra}]".'
        ) from None
    except TypeError as exc:
        raise ConfigError(
            f"env.make_kwargs={make_kwargs} rejected by {spec.id}: {exc}. "
            "Fix: pass only keyword arguments its constructor accepts."
        ) from None


def _check_spaces(envs: VectorEnv, env_id: str) -> None:
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    if not isinstance(obs_space, gym.spaces.Box):
        envs.close()
        raise ConfigError(
            f"{env_id} has observation space {obs_space}; rl_relax's MLP policies need a Box. "
            "Fix: wrap the env (e.g. gymnasium.wrappers.FlattenObservation) and register the wrapped id."
        )
    if not isinstance(act_space, gym.spaces.Discrete | gym.spaces.Box):
        envs.close()
        raise ConfigError(f"{env_id} has action space {act_space}; rl_relax supports Discrete and Box actions.")


def seed_vector_env(handle: VectorEnvHandle, seed: int) -> np.ndarray:
    """Reset with sub-env i seeded by ``seed + i``, seed the action spaces; return the observations."""
    obs, _ = handle.envs.reset(seed=seed)
    handle.envs.action_space.seed(seed)
    handle.envs.single_action_space.seed(seed)
    return obs


def threshold_for(env_cfg: Any) -> float | None:
    """The solved threshold: ``env.solved_threshold`` if set, else the spec's ``reward_threshold``."""
    if env_cfg.get("solved_threshold") is not None:
        return float(env_cfg.solved_threshold)
    spec = resolve_spec(env_cfg.id, env_cfg.get("import_module"))
    return None if spec.reward_threshold is None else float(spec.reward_threshold)
