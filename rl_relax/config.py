"""Checks on the composed config, so bad input fails before anything runs, with the fix named."""

from __future__ import annotations

from typing import Any

import torch

from rl_relax.envs import VECTORIZATION_MODES
from rl_relax.errors import ConfigError
from rl_relax.optim import OPTIMIZERS

DEVICES = ("auto", "cpu", "cuda")


def _positive(value: Any, key: str, example: str, integer: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{key}={value!r} must be {kind}. Fix: e.g. {key}={example}.")


def validate(cfg: Any) -> None:
    """Raise :class:`ConfigError` on the first invalid value."""
    _positive(cfg.total_timesteps, "total_timesteps", "200000", integer=True)
    _positive(cfg.env.num_envs, "env.num_envs", "8", integer=True)
    _positive(cfg.env.solved_window, "env.solved_window", "100", integer=True)
    learner = cfg.learner
    _positive(learner.lr, "learner.lr", "7e-4")
    _positive(learner.num_steps, "learner.num_steps", "5", integer=True)
    gamma = learner.gamma
    if not isinstance(gamma, int | float) or not 0.0 < gamma <= 1.0:
        raise ConfigError(f"learner.gamma={gamma!r} must be in (0, 1]. Fix: e.g. learner.gamma=0.99.")
    lam = learner.gae_lambda
    if not isinstance(lam, int | float) or not 0.0 <= lam <= 1.0:
        raise ConfigError(f"learner.gae_lambda={lam!r} must be in [0, 1]. Fix: e.g. learner.gae_lambda=0.95.")
    for key in ("ent_coef", "vf_coef"):
        if learner[key] < 0:
            raise ConfigError(f"learner.{key}={learner[key]!r} must be >= 0.")
    if learner.max_grad_norm is not None:
        _positive(learner.max_grad_norm, "learner.max_grad_norm", "0.5 (or null for no clipping)")
    if learner.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"learner.optimizer={learner.optimizer!r} is not one of {', '.join(OPTIMIZERS)}. "
            "Fix: learner.optimizer=rmsprop."
        )
    if learner.lr_schedule not in ("constant", "linear"):
        raise ConfigError(f"learner.lr_schedule={learner.lr_schedule!r} must be constant or linear.")
    if cfg.env.get("vectorization", "auto") not in VECTORIZATION_MODES:
        raise ConfigError(
            f"env.vectorization={cfg.env.vectorization!r} is not one of {', '.join(VECTORIZATION_MODES)}."
        )
    if cfg.device not in DEVICES:
        raise ConfigError(f"device={cfg.device!r} is not one of {', '.join(DEVICES)}. Fix: device=auto.")
    _positive(cfg.logging.interval_steps, "logging.interval_steps", "2000", integer=True)
    _positive(cfg.checkpoint.interval_steps, "checkpoint.interval_steps", "100000", integer=True)
    _positive(cfg.checkpoint.keep_last, "checkpoint.keep_last", "2", integer=True)
    if cfg.variance.interval_steps < 0:
        raise ConfigError("variance.interval_steps must be >= 0 (0 turns the sampled measurement off).")
    if cfg.variance.interval_steps > 0 and cfg.variance.num_batches < 2:
        raise ConfigError("variance.num_batches must be >= 2 to estimate a variance. Fix: variance.num_batches=100.")
    if not 0.0 < cfg.variance.ema_decay < 1.0:
        raise ConfigError(
            f"variance.ema_decay={cfg.variance.ema_decay} must be in (0, 1). Fix: variance.ema_decay=0.99."
        )
    if cfg.logging.progress not in ("auto", "always", "never"):
        raise ConfigError(f"logging.progress={cfg.logging.progress!r} must be auto, always or never.")


def resolve_device(requested: str) -> tuple[torch.device, str]:
    """The torch device for networks and updates, and a sentence explaining the choice."""
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "device=cuda but torch sees no CUDA GPU (CPU build or no driver). Fix: device=cpu or device=auto."
            )
        return torch.device("cuda"), "device=cuda as requested"
    if requested == "cpu":
        return torch.device("cpu"), "device=cpu as requested"
    why = "an A2C update on small MLPs is latency-bound, so a GPU does not speed it up; use device=cuda to override"
    if not torch.cuda.is_available():
        why = "no CUDA GPU is available"
    return torch.device("cpu"), f"device=auto chose cpu: {why}"
