"""Entry point: ``python -m rl_relax.vae model=nonlinear estimator=relax seed=3 steps=20000``.

Hydra composes ``configs/vae/vae.yaml`` with the ``model`` and ``estimator`` groups. Errors in the
user's input print one line naming the fix and exit non-zero, without a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rl_relax.errors import RlRelaxError
from rl_relax.vae.train import VaeTrainer

log = logging.getLogger("rl_relax")


@hydra.main(version_base="1.3", config_path="pkg://rl_relax.configs.vae", config_name="vae")
def main(cfg: DictConfig) -> float:
    """Train one VAE; return the best validation ELBO (what a Hydra sweeper maximises)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return float(VaeTrainer(cfg, run_dir).run()["best_valid_elbo"])
    except RlRelaxError as exc:
        log.error("error: %s", exc)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
