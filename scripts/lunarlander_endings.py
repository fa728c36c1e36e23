"""How LunarLander episodes end, for the policies of trained runs: landed, crashed, flew out, time limit.

LunarLander's return alone does not say what a policy does: a return of about -150 may be a crash, a
flight out of the viewport or a hover until the time limit. This plays episodes with each run's latest
checkpoint and sorts their ends by gymnasium's documented termination rules (LunarLander-v3), read from
the public step output only, in the env's own order of precedence:

- terminated with a positive final reward: landed, the lander at rest (+100 overrides the rest);
- terminated with the observation's x coordinate at |x| >= 1: flew out of the viewport (-100);
- terminated otherwise: crashed, the lander's body touched the ground (-100);
- truncated by the time limit, split by the legs' ground contacts (observation entries 6 and 7): on the
  ground, when a leg touches it (down but never at rest), or in the air.

Actions are sampled, as in training (``--deterministic`` takes the mode), and episode i of every run is
reset with seed ``--seed + i``. Each argument is a run directory, a checkpoint file, or a directory of
runs (a levers report: ``runs/levers/LunarLander/<row>/report`` with its seed<k> runs):

    python scripts/lunarlander_endings.py runs/levers/LunarLander/*/report --episodes 10
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl_relax.agent import load_agent, resolve_checkpoint
from rl_relax.errors import RlRelaxError
from rl_relax.evaluation import run_episodes

ENDINGS = ("landed", "crashed", "flew out", "time limit, on the ground", "time limit, in the air")


def ending(observation: np.ndarray, reward: float, terminated: bool) -> str:
    """How an episode ended, from its last step (see the module docstring)."""
    if not terminated:
        legs_down = observation[6] > 0.5 or observation[7] > 0.5
        return "time limit, on the ground" if legs_down else "time limit, in the air"
    if reward > 0:
        return "landed"
    return "flew out" if abs(float(observation[0])) >= 1.0 else "crashed"


class RecordEnding(gym.Wrapper):
    """Keeps the ending of every episode played through it."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.endings: list[str] = []

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            self.endings.append(ending(obs, float(reward), bool(terminated)))
        return obs, reward, terminated, truncated, info


def play(run: Path, episodes: int, seed: int, deterministic: bool) -> tuple[Counter[str], list[float]]:
    """The endings and returns of ``episodes`` episodes of ``run``'s latest policy."""
    agent = load_agent(run, seed=seed)
    if not agent.env_id.startswith("LunarLander"):
        raise RlRelaxError(f"{run} trained on {agent.env_id}, not LunarLander. Fix: pass LunarLander runs.")
    env = RecordEnding(agent.make_env())
    try:
        returns, _ = run_episodes(agent, env, episodes, seed, deterministic)
    finally:
        env.close()
    return Counter(env.endings), returns


def runs_of(path: Path) -> list[Path]:
    """The seed<k> runs of a report directory, in seed order; otherwise ``path`` itself."""
    seeds = [p for p in path.glob("seed*") if p.is_dir() and re.fullmatch(r"seed\d+", p.name)]
    return sorted(seeds, key=lambda p: int(p.name[4:])) or [path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, checkpoints or levers reports")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per run (default 10)")
    parser.add_argument("--seed", type=int, default=12345, help="episode i is reset with seed + i (>= 0)")
    parser.add_argument("--deterministic", action="store_true", help="the distribution's mode, not samples")
    args = parser.parse_args(argv)
    if args.episodes <= 0:
        parser.error(f"--episodes {args.episodes} must be positive")
    if args.seed < 0:
        parser.error(f"--seed {args.seed} must be >= 0 (gymnasium's reset seeds are non-negative)")
    try:
        groups = [(path, runs_of(path)) for path in args.paths]
        for _, runs in groups:  # every run has a checkpoint, before any plays
            for run in runs:
                resolve_checkpoint(run)
        rows = []
        for path, runs in groups:
            total: Counter[str] = Counter()
            returns: list[float] = []
            for run in runs:
                endings, run_returns = play(run, args.episodes, args.seed, args.deterministic)
                total.update(endings)
                returns += run_returns
            label = f"{path} ({len(runs)} runs)" if len(runs) > 1 else str(path)
            counts = " | ".join(str(total[e]) for e in ENDINGS)
            rows.append(f"| {label} | {len(returns)} | {counts} | {np.mean(returns):.0f} ± {np.std(returns):.0f} |")
    except RlRelaxError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    actions = "the distribution's mode" if args.deterministic else "sampled actions"
    print(f"{args.episodes} episodes per run, {actions}, reset seeds {args.seed}..{args.seed + args.episodes - 1}\n")
    print(f"| runs | episodes | {' | '.join(ENDINGS)} | return |")
    print(f"|---|---:|{'---:|' * len(ENDINGS)}---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
