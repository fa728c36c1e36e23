"""Training throughput of rl_relax's A2C vs stable-baselines3's A2C, side by side in one run.

Both train CartPole-v1 with 8 envs x 5 steps per update (40 transitions per gradient step), RMSprop,
lr 7e-4, the same MLP sizes (64-64 tanh, separate policy and value nets), on the CPU with one torch
thread each. Runs alternate (ours, SB3, ours, SB3, ...) in fresh subprocesses so that machine noise
hits both alike; we report the median env-steps/s of each and their ratio. The raw vectorised
environment step rate (random actions, no learning) is measured alongside as the ceiling.

    python scripts/bench_throughput.py            # writes results/throughput_a2c_cartpole.{md,csv}
    python scripts/bench_throughput.py --steps 200000 --runs 7

Needs the bench extra (stable-baselines3): pip install -c constraints-cpu.txt -e ".[bench]".
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OURS = """
import json, sys, time, torch
from hydra import compose, initialize_config_module
from rl_relax.trainer import Trainer
torch.set_num_threads(1)
with initialize_config_module("rl_relax.configs", version_base="1.3"):
    cfg = compose("train", overrides=["env=CartPole", "estimator=baseline", "seed=%(seed)d",
        "total_timesteps=%(steps)d", "logging.progress=never", "checkpoint.interval_steps=100000000"])
summary = Trainer(cfg, sys.argv[1]).run()
print(json.dumps({"fps": summary["fps"]}))
"""

SB3 = """
import json, time, torch
from stable_baselines3 import A2C
from stable_baselines3.common.env_util import make_vec_env
torch.set_num_threads(1)
env = make_vec_env("CartPole-v1", n_envs=8, seed=%(seed)d)
model = A2C("MlpPolicy", env, device="cpu", seed=%(seed)d)
t = time.perf_counter()
model.learn(total_timesteps=%(steps)d)
print(json.dumps({"fps": model.num_timesteps / (time.perf_counter() - t)}))
"""

RAW = """
import json, time, numpy as np, gymnasium as gym
envs = gym.make_vec("CartPole-v1", num_envs=8)
envs.reset(seed=%(seed)d)
actions = np.random.default_rng(%(seed)d).integers(0, 2, size=(2000, 8))
n = %(steps)d // 8
t = time.perf_counter()
for i in range(n):
    envs.step(actions[i %% 2000])
print(json.dumps({"fps": n * 8 / (time.perf_counter() - t)}))
"""

IMPLS = {"rl_relax": OURS, "stable-baselines3": SB3, "raw-env": RAW}


def run_one(code: str, seed: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        proc = subprocess.run(
            [sys.executable, "-c", code % {"seed": seed, "steps": steps}, run_dir],
            capture_output=True, text=True, check=False, cwd=ROOT,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["fps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per training run")
    parser.add_argument("--runs", type=int, default=5, help="runs per implementation (seeds 0..runs-1)")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()

    fps: dict[str, list[float]] = {name: [] for name in IMPLS}
    for seed in range(args.runs):
        for name, code in IMPLS.items():
            value = run_one(code, seed, args.steps)
            fps[name].append(value)
            print(f"seed {seed} {name:18s} {value:10,.0f} env-steps/s", flush=True)

    medians = {name: statistics.median(values) for name, values in fps.items()}
    ratio = medians["rl_relax"] / medians["stable-baselines3"]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "throughput_a2c_cartpole.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["env", "estimator", "impl", "num_envs", "num_steps", "steps_per_sec_median", "runs", "all_runs"]
        )
        for name, values in fps.items():
            estimator = "none" if name == "raw-env" else "baseline"
            writer.writerow(["CartPole-v1", estimator, name, 8, 5, round(medians[name]), len(values),
                             " ".join(str(round(v)) for v in values)])  # fmt: skip
    import gymnasium
    import torch

    versions = f"torch {torch.__version__}, gymnasium {gymnasium.__version__}"
    try:
        import stable_baselines3

        versions += f", stable-baselines3 {stable_baselines3.__version__}"
    except ImportError:
        pass
    lines = [
        "# A2C training throughput on CartPole-v1 (8 envs x 5 steps, CPU, 1 torch thread)",
        "",
        f"Command: `python scripts/bench_throughput.py --steps {args.steps} --runs {args.runs}`  ",
        f"Date: {dt.date.today().isoformat()}  ",
        f"Machine: {platform.machine()}, {platform.processor() or 'unknown CPU'}, "
        f"{_cpu_count()} cores, Python {platform.python_version()}, {versions}  ",
        f"Seeds: 0..{args.runs - 1}, {args.steps:,} env steps per run, runs interleaved in fresh processes.",
        "",
        "| impl | env-steps/s (median) | all runs |",
        "|---|---:|---|",
    ]
    for name, values in fps.items():
        lines.append(f"| {name} | {medians[name]:,.0f} | {', '.join(f'{v:,.0f}' for v in values)} |")
    lines += [
        "",
        f"**rl_relax / stable-baselines3 = {ratio:.2f}x** (target: >= 3x). "
        f"rl_relax reaches {medians['rl_relax'] / medians['raw-env']:.0%} of the raw env step rate.",
        "",
    ]
    (args.out / "throughput_a2c_cartpole.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"benchmark took {time.perf_counter() - t0:.0f} s")
