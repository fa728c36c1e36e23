"""rl_relax: A2C with swappable policy-gradient estimators (baseline, LAX, RELAX).

The Python API (the command line's config system, from Python)::

    from rl_relax import load_agent, train_agent

    result = train_agent(env="CartPole", estimator="relax", seed=0, total_timesteps=50_000)
    agent = load_agent(result.run_dir)  # a run directory, a checkpoint, or a run's parent directory
    action = agent.act(obs)             # raw observation in, normalised as in training, env action out

The names are imported on first use, so ``import rl_relax`` stays light (no torch, gymnasium or Hydra).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Agent", "TrainResult", "__version__", "load_agent", "train_agent"]

_EXPORTS = {"train_agent": "rl_relax.api", "TrainResult": "rl_relax.api", "load_agent": "rl_relax.agent",
            "Agent": "rl_relax.agent"}  # fmt: skip

if TYPE_CHECKING:
    from rl_relax.agent import Agent, load_agent
    from rl_relax.api import TrainResult, train_agent


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rl_relax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
