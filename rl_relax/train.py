"""Entry point: ``python -m rl_relax.train env=CartPole estimator=baseline seed=3``.

Hydra composes ``configs/train.yaml`` with the ``env`` and ``estimator`` groups and command-line
overrides, creates the run directory, and calls :func:`main`. Errors in the user's input print one
message naming the fix and exit non-zero, without a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rl_relax.errors import RlRelaxError
from rl_relax.trainer import Trainer

log = logging.getLogger("rl_relax")


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train (or resume) the run described by ``cfg`` in ``run_dir``; return its summary."""
    trainer = Trainer(cfg, run_dir)
    return trainer.run()


@hydra.main(version_base="1.3", config_path="pkg://rl_relax.configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = train(cfg, run_dir)
    except RlRelaxError as exc:
        log.error("error: %s", exc)
        sys.exit(exc.exit_code)
    return summary["final_return_mean"]


if __name__ == "__main__":
    main()
