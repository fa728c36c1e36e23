"""Evaluate a trained policy: ``python -m rl_relax.evaluate <run> [--episodes N] [--video DIR]``.

Runs N complete episodes in one environment built from the run's own config, with the
observation-normalisation statistics from the checkpoint (frozen), and prints the mean +/- std of
the raw episode return. Actions are the distribution's mode by default (``--stochastic`` samples).
``<run>`` is a run directory, a checkpoint file, or a directory holding exactly one run.
``--video DIR`` records every episode as an MP4 with gymnasium's ``RecordVideo`` (the ``video``
extra; MuJoCo envs render headless with ``MUJOCO_GL=egl``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rl_relax.agent import load_agent, resolve_checkpoint
from rl_relax.errors import ConfigError, MissingExtraError, RlRelaxError
from rl_relax.evaluation import run_episodes

__all__ = ["evaluate", "main", "resolve_checkpoint"]

VIDEO_FIX = 'pip install "rl-relax[video]"'


def evaluate(
    path: Path,
    episodes: int = 10,
    deterministic: bool = True,
    seed: int = 12345,
    device: str = "cpu",
    video_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``episodes`` episodes with the checkpointed policy; return returns and their statistics.

    Episode ``i`` is reset with seed ``seed + i``; stochastic actions use a generator seeded with ``seed``.
    With ``video_dir``, every episode is written there as ``<env id>-episode-<i>.mp4``.
    """
    if episodes <= 0:
        raise ConfigError(f"--episodes {episodes} must be positive.")
    if video_dir is not None:
        if importlib.util.find_spec("moviepy") is None:
            raise MissingExtraError(f"--video needs moviepy (the video extra). Fix: {VIDEO_FIX}.")
        # Frames are rendered off-screen: pygame needs no window, MuJoCo without a display needs EGL.
        # Set before the env (and so mujoco) is first imported; a user's own setting wins.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        if not os.environ.get("DISPLAY"):
            os.environ.setdefault("MUJOCO_GL", "egl")
    agent = load_agent(path, device=device, seed=seed)
    env = agent.make_env(render_mode="rgb_array" if video_dir is not None else None)
    if video_dir is not None:
        env = _record_video(env, Path(video_dir), agent.env_id)
    try:
        returns, lengths = run_episodes(agent, env, episodes, seed, deterministic)
    finally:
        env.close()
    result = {
        "checkpoint": str(agent.checkpoint),
        "env_id": agent.env_id,
        "episodes": episodes,
        "deterministic": deterministic,
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean(lengths)),
        "returns": returns,
    }
    if video_dir is not None:
        result["videos"] = sorted(str(p) for p in Path(video_dir).glob(f"{agent.env_id}-episode-*.mp4"))
    return result


def _record_video(env: Any, video_dir: Path, env_id: str) -> Any:
    from gymnasium.error import DependencyNotInstalled
    from gymnasium.wrappers import RecordVideo

    try:
        return RecordVideo(env, str(video_dir), episode_trigger=lambda _: True, name_prefix=env_id,
                           disable_logger=True)  # fmt: skip
    except DependencyNotInstalled as exc:
        env.close()
        raise MissingExtraError(f"--video: {exc}. Fix: {VIDEO_FIX}.") from None
    except OSError as exc:
        env.close()
        raise ConfigError(f"--video {video_dir} cannot be created ({exc}). Fix: pass a writable directory.") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl_relax.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path,
                        help="run directory (uses its latest checkpoint), checkpoint file, or a directory "
                             "holding exactly one run (e.g. runs/CartPole-v1__relax__seed0)")  # fmt: skip
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes (default 10)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=True,
                      help="act with the distribution's mode (default)")  # fmt: skip
    mode.add_argument("--stochastic", dest="deterministic", action="store_false", help="sample actions")
    parser.add_argument("--seed", type=int, default=12345,
                        help="episode i resets with seed+i; seeds stochastic actions (default 12345)")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="torch device for the policy (default cpu)")
    video_help = f"write one MP4 per episode to DIR (needs {VIDEO_FIX}; MuJoCo renders with MUJOCO_GL=egl)"
    parser.add_argument("--video", type=Path, metavar="DIR", default=None, help=video_help)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        result = evaluate(args.path, args.episodes, args.deterministic, args.seed, args.device, args.video)
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
        if "videos" in result:
            print(f"videos: {len(result['videos'])} MP4 files in {args.video}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
