"""Evaluate a trained policy: ``python -m rl_relax.evaluate <run dir or checkpoint> [--episodes N]``.

Runs N complete episodes in one environment built from the run's own config, with the
observation-normalisation statistics from the checkpoint (frozen), and prints the mean +/- std of
the raw episode return. Actions are the distribution's mode by default (``--stochastic`` samples).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from rl_relax import checkpoint as ckpt
from rl_relax.envs import make_vector_env
from rl_relax.errors import CheckpointError, ConfigError, RlRelaxError
from rl_relax.networks import make_policy


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file, or the latest checkpoint of a run directory."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / "checkpoints", path):
            latest = ckpt.latest_checkpoint(candidate)
            if latest is not None:
                return latest
        raise CheckpointError(
            f"{path} holds no checkpoints (expected {path / 'checkpoints'}/ckpt_*.pt). "
            "Fix: pass a run directory of a run that saved one, or a checkpoint file."
        )
    raise CheckpointError(f"{path} does not exist. Fix: pass a run directory or a ckpt_*.pt file.")


def evaluate(
    path: Path, episodes: int = 10, deterministic: bool = True, seed: int = 12345, device: str = "cpu"
) -> dict[str, Any]:
    """Run ``episodes`` episodes with the checkpointed policy; return returns and their statistics."""
    if episodes <= 0:
        raise ConfigError(f"--episodes {episodes} must be positive.")
    ckpt_path = resolve_checkpoint(path)
    payload = ckpt.load_checkpoint(ckpt_path, map_location=device)
    cfg = OmegaConf.create(payload["config_yaml"])
    handle = make_vector_env(cfg.env, num_envs=1, reward_gamma=float(cfg.learner.gamma))
    try:
        envs = handle.envs
        policy = make_policy(cfg.policy, envs.single_observation_space, envs.single_action_space).to(device)
        expected = {k: v for k, v in payload["meta"]["architecture"].items() if k.startswith("policy.")}
        have = {f"policy.{k}": list(v.shape) for k, v in policy.state_dict().items()}
        if have != expected:
            raise CheckpointError(f"checkpoint {ckpt_path} does not match the policy its config describes.")
        policy.load_state_dict(payload["policy"])
        handle.load_normalizer_state(payload["normalizers"])
        handle.freeze_normalizers()
        rng = np.random.default_rng(seed)
        obs, _ = envs.reset(seed=seed)
        returns: list[float] = []
        lengths: list[int] = []
        with torch.no_grad():
            while len(returns) < episodes:
                out = policy.act(np.asarray(obs, dtype=np.float32).reshape(1, -1), rng, deterministic)
                obs, _, _, _, infos = envs.step(policy.env_action(out.action))
                if "_episode" in infos and infos["_episode"][0]:
                    returns.append(float(infos["episode"]["r"][0]))
                    lengths.append(int(infos["episode"]["l"][0]))
    finally:
        handle.close()
    return {
        "checkpoint": str(ckpt_path),
        "env_id": cfg.env.id,
        "episodes": episodes,
        "deterministic": deterministic,
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean(lengths)),
        "returns": returns,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl_relax.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="run directory (uses its latest checkpoint) or checkpoint file")
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes (default 10)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=True,
                      help="act with the distribution's mode (default)")  # fmt: skip
    mode.add_argument("--stochastic", dest="deterministic", action="store_false", help="sample actions")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the evaluation env and sampling")
    parser.add_argument("--device", default="cpu", help="torch device for the policy (default cpu)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        result = evaluate(args.path, args.episodes, args.deterministic, args.seed, args.device)
    except RlRelaxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        kind = "deterministic" if result["deterministic"] else "stochastic"
        print(
            f"{result['env_id']}: return {result['return_mean']:.2f} +/- {result['return_std']:.2f} "
            f"over {result['episodes']} episodes ({kind}, mean length {result['length_mean']:.1f}) "
            f"[{result['checkpoint']}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
