"""How LunarLander episodes end, for the policies of trained runs: landed, crashed, flew out, time limit.

LunarLander's return alone does not say what a policy does: a return of about -150 may be a crash, a
flight out of the viewport or a hover until the time limit. This plays episodes with each run's latest
checkpoint and sorts their ends by gymnasium's documented termination rules (LunarLander-v3):

- terminated with the observation's x coordinate at |x| >= 1: flew out of the viewport (reward -100);
- terminated with the final reward > 0: landed, the lander at rest (reward +100);
- terminated otherwise: crashed, the lander's body touched the ground (reward -100);
- truncated: the time limit, still flying.

Actions are sampled, as in training (``--deterministic`` takes the mode), and episode i of every run is
reset with seed ``--seed + i``. Each argument is a run directory, a checkpoint file, or a directory of
runs (a levers report: ``runs/levers/LunarLander/<row>/report`` with its seed<k> runs):

    python scripts/lunarlander_endings.py runs/levers/LunarLander/*/report --episodes 10
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl_relax.agent import load_agent
from rl_relax.errors import RlRelaxError

ENDINGS = ("landed", "crashed", "flew out", "time limit")


def ending(observation: np.ndarray, reward: float, terminated: bool) -> str:
    """How an episode ended, from its last step (see the module docstring)."""
    if not terminated:
        return "time limit"
    if abs(float(observation[0])) >= 1.0:
        return "flew out"
    return "landed" if reward > 0 else "crashed"


def play(run: Path, episodes: int, seed: int, deterministic: bool) -> tuple[Counter[str], list[float]]:
    """The endings and returns of ``episodes`` episodes of ``run``'s latest policy."""
    agent = load_agent(run, seed=seed)
    if not agent.env_id.startswith("LunarLander"):
        raise RlRelaxError(f"{run} trained on {agent.env_id}, not LunarLander. Fix: pass LunarLander runs.")
    env = agent.make_env()
    endings: Counter[str] = Counter()
    returns = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            total, terminated, truncated = 0.0, False, False
            while not (terminated or truncated):
                obs, reward, terminated, truncated, _ = env.step(agent.act(obs, deterministic))
                total += float(reward)
            endings[ending(obs, float(reward), bool(terminated))] += 1
            returns.append(total)
    finally:
        env.close()
    return endings, returns


def runs_of(path: Path) -> list[Path]:
    """The seed<k> runs of a report directory, in seed order; otherwise ``path`` itself."""
    seeds = [p for p in path.glob("seed*") if p.is_dir()] if path.is_dir() else []
    return sorted(seeds, key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else -1) or [path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, checkpoints or levers reports")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per run (default 10)")
    parser.add_argument("--seed", type=int, default=12345, help="episode i is reset with seed + i")
    parser.add_argument("--deterministic", action="store_true", help="the distribution's mode, not samples")
    args = parser.parse_args(argv)
    if args.episodes <= 0:
        parser.error(f"--episodes {args.episodes} must be positive")
    rows = []
    try:
        for path in args.paths:
            total: Counter[str] = Counter()
            returns: list[float] = []
            runs = runs_of(path)
            for run in runs:
                endings, run_returns = play(run, args.episodes, args.seed, args.deterministic)
                total.update(endings)
                returns += run_returns
            label = f"{path} ({len(runs)} runs)" if len(runs) > 1 else str(path)
            counts = " | ".join(str(total[e]) for e in ENDINGS)
            rows.append(f"| {label} | {len(returns)} | {counts} | {np.mean(returns):.0f} ± {np.std(returns):.0f} |")
    except RlRelaxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"| runs | episodes | {' | '.join(ENDINGS)} | return |")
    print(f"|---|---:|{'---:|' * len(ENDINGS)}---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
