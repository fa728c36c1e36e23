"""A trained agent loaded from a run: ``load_agent(run_dir_or_checkpoint).act(obs)``.

The agent is the checkpoint's policy plus the run's observation-normalisation statistics, frozen:
:meth:`Agent.act` takes the raw observation the env returns, normalises it as training did
(gymnasium's ``NormalizeObservation``: (o − mean) / sqrt(var + 1e-8)) and returns the action as the
env takes it (clipped to the bounds for Box actions). :meth:`Agent.make_env` builds one env from the
run's own config (id, ``make_kwargs``, ``import_module``) to act in. ``python -m rl_relax.evaluate``
is built on this class.

Where a path points: a checkpoint file, a run directory (its latest checkpoint), or a directory
holding exactly one run below it (e.g. ``runs/CartPole-v1__relax__seed0``, the parent of the
timestamped run directory); several runs there are an error that lists them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rl_relax import checkpoint as ckpt
from rl_relax.envs import make_env
from rl_relax.errors import CheckpointError, ConfigError
from rl_relax.networks import Policy, make_policy

log = logging.getLogger("rl_relax")

# gymnasium's NormalizeObservation default (rl_relax's wrappers use it); tests check we match the wrapper.
OBS_NORM_EPSILON = 1e-8
_LISTED_RUNS = 10  # how many candidate runs an ambiguous-directory error names


def find_runs(directory: Path) -> list[Path]:
    """Run directories at or below ``directory``: those whose ``checkpoints/`` holds a checkpoint."""
    found = [d.parent for d in Path(directory).rglob("checkpoints") if ckpt.latest_checkpoint(d) is not None]
    # submitit's job folders, and earlier runs moved aside by checkpoint.resume=false, are not runs.
    return sorted(d for d in found if ".submitit" not in d.parts and "previous_runs" not in d.parts)


def _load_newest_intact(path: Path, fall_back: bool) -> dict[str, Any]:
    """Load ``path``; if it is corrupt and the user named a run (not this file), the newest intact
    checkpoint before it, with a warning (read only: nothing in the run directory is renamed)."""
    try:
        return ckpt.load_checkpoint(path, map_location="cpu")
    except CheckpointError as exc:
        in_run = ckpt.list_checkpoints(path.parent) if fall_back else []
        older = in_run[: in_run.index(path)] if path in in_run else []
        for candidate in reversed(older):
            try:
                payload = ckpt.load_checkpoint(candidate, map_location="cpu")
            except CheckpointError:
                continue
            log.warning("%s; using the previous checkpoint %s", str(exc).split(" Fix:")[0], candidate)
            return payload
        raise


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file; the latest checkpoint of a run directory; or that of the one run below ``path``."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist. Fix: pass a run directory or a ckpt_*.pt file.")
    for candidate in (path / "checkpoints", path):
        latest = ckpt.latest_checkpoint(candidate)
        if latest is not None:
            return latest
    runs = find_runs(path)
    if len(runs) == 1:
        return ckpt.latest_checkpoint(runs[0] / "checkpoints")  # type: ignore[return-value]
    if not runs:
        raise CheckpointError(
            f"{path} holds no checkpoints (expected {path / 'checkpoints'}/ckpt_*.pt, here or in one run "
            "directory below). Fix: pass the directory of a run that saved one, or a checkpoint file."
        )
    names = ", ".join(str(r.relative_to(path)) for r in runs[:_LISTED_RUNS])
    more = f" and {len(runs) - _LISTED_RUNS} more" if len(runs) > _LISTED_RUNS else ""
    raise CheckpointError(f"{path} holds {len(runs)} runs: {names}{more}. Fix: pass one of them, e.g. {runs[-1]}.")


def check_device(device: str) -> torch.device:
    """The torch device ``device`` names, if this machine has it; otherwise a one-line device error."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"device {device!r} is not a torch device ({exc}). Fix: --device cpu or --device cuda."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r}: torch sees no CUDA GPU on this machine (a CPU build of torch, or no driver). "
                "Fix: --device cpu."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s). Fix: --device cuda:0."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available on this machine. Fix: --device cpu.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r} is not supported here. Fix: --device cpu or --device cuda.")
    return dev


class Agent:
    """A trained policy with its run's frozen observation normalisation.

    Attributes:
        policy: the policy network (:class:`rl_relax.networks.Policy`), in eval mode on ``device``.
        config: the run's resolved config (the one it trained with).
        checkpoint: the checkpoint file it was loaded from (None for the live policy of a training run).
        observation_space, action_space: the env's single-env spaces.
    """

    def __init__(
        self,
        policy: Policy,
        config: DictConfig,
        checkpoint: Path | None,
        observation_space: gym.spaces.Box,
        action_space: gym.Space,
        obs_stats: tuple[np.ndarray, np.ndarray] | None,
        seed: int | None = None,
    ):
        self.policy, self.config, self.checkpoint = policy, config, checkpoint
        self.observation_space, self.action_space = observation_space, action_space
        self._obs_stats = obs_stats
        self._rng = np.random.default_rng(seed)

    @property
    def env_id(self) -> str:
        return str(self.config.env.id)

    def seed(self, seed: int | None) -> None:
        """Reseed the generator used by stochastic actions (``act(..., deterministic=False)``)."""
        self._rng = np.random.default_rng(seed)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """The observation as the policy saw it in training: (o − mean) / sqrt(var + 1e-8), or o unchanged."""
        obs = np.asarray(obs, dtype=np.float64)
        if self._obs_stats is not None:
            mean, var = self._obs_stats
            obs = (obs - mean) / np.sqrt(var + OBS_NORM_EPSILON)
        return obs.astype(np.float32)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The action for one raw observation (shape = the observation space's) or a batch of them.

        ``deterministic=True`` (the default, as ``python -m rl_relax.evaluate``) takes the
        distribution's mode: argmax of the logits, or the Gaussian mean; ``False`` samples (note that
        stable-baselines3's ``predict`` samples by default). Returns an action the env accepts: an
        integer for Discrete spaces, an array clipped to the bounds for Box spaces; with a batch of
        observations, one action per row.
        """
        obs = np.asarray(obs)
        shape = self.observation_space.shape
        single = obs.shape == shape
        if not single and obs.shape[1:] != shape:
            raise ValueError(f"observation of shape {obs.shape}; this agent takes {shape} or (batch, *{shape}).")
        batch = self.normalize(obs).reshape(-1, int(np.prod(shape)))
        with torch.no_grad():
            action = self.policy.env_action(self.policy.act(batch, self._rng, deterministic).action)
        return action[0] if single else action

    def make_env(self, render_mode: str | None = None) -> gym.Env:
        """One env as the run trained on (id, ``make_kwargs``), without normalisation: ``act`` applies it."""
        return make_env(self.config.env, render_mode=render_mode)


def load_agent(path: str | Path, device: str = "cpu", seed: int | None = None) -> Agent:
    """Load the agent of a run directory (its latest checkpoint), a checkpoint file, or a run's parent.

    Args:
        path: checkpoint file, run directory, or a directory holding exactly one run.
        device: where the policy lives; checked first, so a missing GPU is reported as a device
            problem (the checkpoint is always read on the CPU, then moved).
        seed: seed of the generator for stochastic actions.
    """
    dev = check_device(device)
    ckpt_path = resolve_checkpoint(Path(path))
    payload: dict[str, Any] = _load_newest_intact(ckpt_path, fall_back=not Path(path).is_file())
    cfg = OmegaConf.create(payload["config_yaml"])
    env = make_env(cfg.env)
    try:
        obs_space, action_space = env.observation_space, env.action_space
    finally:
        env.close()
    policy = make_policy(cfg.policy, obs_space, action_space)
    expected = {k: v for k, v in payload["meta"]["architecture"].items() if k.startswith("policy.")}
    have = {f"policy.{k}": list(v.shape) for k, v in policy.state_dict().items()}
    if have != expected:
        raise CheckpointError(f"checkpoint {ckpt_path} does not match the policy its config describes.")
    policy.load_state_dict(payload["policy"])
    policy.to(dev).eval()
    obs_stats = None
    if cfg.env.get("normalize_observation", False):
        stats = payload["normalizers"].get("obs")
        if stats is None:
            raise CheckpointError(f"checkpoint {ckpt_path} has no observation-normalisation statistics.")
        obs_stats = (stats["mean"].numpy().astype(np.float64), stats["var"].numpy().astype(np.float64))
    return Agent(policy, cfg, ckpt_path, obs_space, action_space, obs_stats, seed)
