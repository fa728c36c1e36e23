"""Training throughput (env-steps/s): rl_relax's estimators vs stable-baselines3's A2C, in one run.

For CartPole-v1 and InvertedPendulum-v5, each with 8 envs x 5 steps per update (40 transitions per
gradient step) on the CPU with one torch thread:

- rl_relax with ``estimator=baseline`` and with the env's control-variate estimator (``relax`` on
  CartPole, ``lax`` on InvertedPendulum), using the shipped env config;
- stable-baselines3's A2C with its defaults (the same 8 x 5 rollout, RMSprop, 64-64 tanh nets);
- the raw vectorised env with random actions and no learning (the ceiling).

Each run also reports its process's peak resident memory.

``--against REV`` adds rl_relax at a git revision (checked out into a temporary worktree) for both of
its estimators, run alternately with this tree's, and reports this tree's throughput as a ratio of that
revision's: the side-by-side regression check for a change to the training loop.

Runs alternate between implementations in fresh subprocesses, so machine noise hits all alike; the
tables report medians and ratios. Output: ``throughput.{md,csv}`` in a new
``outputs/bench_throughput/<date_time>/``, in ``--out DIR``, or with ``--update-committed`` in the
committed ``results/``.

    python scripts/bench_throughput.py                 # 5 runs each
    python scripts/bench_throughput.py --runs 3 --scale 0.5
    python scripts/bench_throughput.py --runs 10 --scale 1.0 --update-committed   # results/throughput.*
    python scripts/bench_throughput.py --against 06c2aa7 --runs 10       # this tree vs a revision

Needs the bench extra (stable-baselines3): pip install -e ".[bench,mujoco]".
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import output_dir  # noqa: E402

COMMITTED = ROOT / "results"
OURS = """
import json, sys, torch
from hydra import compose, initialize_config_module
from rl_relax.trainer import Trainer
torch.set_num_threads(1)
with initialize_config_module("rl_relax.configs", version_base="1.3"):
    cfg = compose("train", overrides=["env=%(option)s", "estimator=%(estimator)s", "seed=%(seed)d",
        "env.num_envs=8", "learner.num_steps=5", "total_timesteps=%(steps)d", "logging.progress=never",
        "checkpoint.interval_steps=100000000"])
fps = Trainer(cfg, sys.argv[1]).run()["fps"]
"""

SB3 = """
import json, time, torch
from stable_baselines3 import A2C
from stable_baselines3.common.env_util import make_vec_env
torch.set_num_threads(1)
env = make_vec_env("%(env_id)s", n_envs=8, seed=%(seed)d)
model = A2C("MlpPolicy", env, n_steps=5, device="cpu", seed=%(seed)d)
t = time.perf_counter()
model.learn(total_timesteps=%(steps)d)
fps = model.num_timesteps / (time.perf_counter() - t)
"""

RAW = """
import json, time, numpy as np, gymnasium as gym
envs = gym.make_vec("%(env_id)s", num_envs=8)
envs.reset(seed=%(seed)d)
envs.action_space.seed(%(seed)d)
actions = [envs.action_space.sample() for _ in range(1000)]
n = %(steps)d // 8
t = time.perf_counter()
for i in range(n):
    envs.step(actions[i %% 1000])
fps = n * 8 / (time.perf_counter() - t)
"""

# Appended to each snippet: its throughput and the process's peak resident memory (Linux: ru_maxrss in KiB).
REPORT = """
import resource
print(json.dumps({"fps": fps, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# env option, gymnasium id, env steps per run, the control-variate estimator for this action space
ENVS = [("CartPole", "CartPole-v1", 100_000, "relax"), ("InvertedPendulum", "InvertedPendulum-v5", 50_000, "lax")]


def cases(scale: float, against: str | None = None, against_tree: Path | None = None) -> list[dict]:
    out = []
    for option, env_id, steps, cv_estimator in ENVS:
        steps = int(steps * scale)
        common = {"option": option, "env_id": env_id, "steps": steps}
        if against is not None:
            out += [
                {**common, "impl": f"rl_relax@{against}", "estimator": estimator, "code": OURS, "tree": against_tree}
                for estimator in ("baseline", cv_estimator)
            ]
        out += [
            {**common, "impl": "rl_relax", "estimator": "baseline", "code": OURS},
            {**common, "impl": "rl_relax", "estimator": cv_estimator, "code": OURS},
            {**common, "impl": "stable-baselines3", "estimator": "baseline", "code": SB3},
            {**common, "impl": "raw-env", "estimator": "none", "code": RAW},
        ]
    return out


def run_one(case: dict, seed: int) -> dict:
    """One fresh process: {"fps": env-steps/s, "peak_rss_mib": peak resident memory}.

    It runs in the case's source tree (this checkout, or the ``--against`` revision's worktree): ``python -c``
    puts the working directory first on the import path, so that tree's ``rl_relax`` is the one imported.
    """
    with tempfile.TemporaryDirectory() as run_dir:
        code = case["code"] % {**case, "seed": seed} + REPORT
        proc = subprocess.run([sys.executable, "-c", code, run_dir], capture_output=True, text=True, check=False,
                              cwd=case.get("tree") or ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed ({case['impl']} {case['option']}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per case (seeds 0..runs-1)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every run's env steps")
    parser.add_argument("--against", metavar="REV", default=None,
                        help="also run rl_relax at this git revision, alternating with this tree (a regression "
                             "check); writes throughput_against.{md,csv}")  # fmt: skip
    output_dir.add_arguments(parser, COMMITTED)
    args = parser.parse_args()
    args.out = output_dir.resolve(parser, args, "bench_throughput", COMMITTED)
    if args.against is not None and _commit(f"{args.against}^{{commit}}") == "unknown":
        parser.exit(2, f"error: --against {args.against}: not a commit of this repository. "
                       "Fix: name a commit, tag or branch (git log --oneline lists them).\n")  # fmt: skip
    if importlib.util.find_spec("stable_baselines3") is None:
        parser.exit(2, 'error: the benchmark compares with stable-baselines3, which is not installed. '
                       'Fix: pip install -e ".[bench,mujoco]"\n')  # fmt: skip

    with revision_tree(parser, args.against) as tree:
        todo = cases(args.scale, args.against, tree)
        measure(todo, args.runs)
    write(args, todo)


@contextlib.contextmanager
def revision_tree(parser: argparse.ArgumentParser, revision: str | None) -> Iterator[Path | None]:
    """A temporary git worktree of ``revision`` (removed afterwards), or None without one."""
    if revision is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="bench-against-") as parent:
        tree = Path(parent) / "tree"
        added = subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=ROOT,
                               capture_output=True, text=True, check=False)  # fmt: skip
        if added.returncode != 0:
            parser.exit(2, f"error: --against {revision}: git cannot check it out ({added.stderr.strip()}). "
                           "Fix: name a commit, tag or branch of this repository.\n")  # fmt: skip
        try:
            configs = tree / "rl_relax" / "configs"
            if not configs.exists() and (tree / "configs").is_dir():
                # The package finds its Hydra configs as rl_relax.configs; an editable install maps that name to
                # this checkout's configs/, so the revision's own are linked into its package instead.
                configs.symlink_to(Path("..") / "configs")
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True,
                           check=False)  # fmt: skip


def measure(todo: list[dict], runs: int) -> None:
    """Every case once per seed, the cases alternating, each in a fresh process."""
    for case in todo:
        case["fps"], case["rss"] = [], []
    for seed in range(runs):
        for case in todo:
            result = run_one(case, seed)
            case["fps"].append(result["fps"])
            case["rss"].append(result["peak_rss_mib"])
            print(f"seed {seed} {case['option']:17s} {case['impl']:18s} {case['estimator']:9s} "
                  f"{case['fps'][-1]:10,.0f} env-steps/s {case['rss'][-1]:6.0f} MiB", flush=True)  # fmt: skip
    for case in todo:
        case["median"], case["rss_median"] = statistics.median(case["fps"]), statistics.median(case["rss"])


def write(args: argparse.Namespace, todo: list[dict]) -> None:
    stem = args.out / ("throughput_against" if args.against else "throughput")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["env", "estimator", "impl", "num_envs", "steps_per_sec_median", "runs", "num_steps",
                         "peak_rss_mib_median", "all_runs"])  # fmt: skip
        for c in todo:
            writer.writerow([c["env_id"], c["estimator"], c["impl"], 8, round(c["median"]), len(c["fps"]), 5,
                             round(c["rss_median"]), " ".join(str(round(v)) for v in c["fps"])])  # fmt: skip

    lines = [
        "# Training throughput: rl_relax estimators vs stable-baselines3 A2C (8 envs x 5 steps, CPU, 1 thread)",
        "",
        f"Command: `python scripts/bench_throughput.py --runs {args.runs} --scale {args.scale}"
        + (f" --against {args.against}" if args.against else "")
        + f"{output_dir.command_suffix(args)}`  ",
        f"Code: {code_version()}"
        + (f"; against {args.against} = commit {_commit(args.against)}" if args.against else "")
        + "  ",
        f"Date: {dt.date.today().isoformat()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {_versions()}  ",
        f"Seeds: 0..{args.runs - 1}; implementations alternate in fresh processes; medians of env-steps/s.  ",
        "Peak memory: the process's peak resident set size (ru_maxrss; CPU only, no GPU in this machine), median.",
        "",
        "| env | impl | estimator | env-steps/s (median) | peak memory (MiB) | all runs |",
        "|---|---|---|---:|---:|---|",
    ]
    for c in todo:
        runs = ", ".join(f"{v:,.0f}" for v in c["fps"])
        lines.append(
            f"| {c['env_id']} | {c['impl']} | {c['estimator']} | {c['median']:,.0f} | {c['rss_median']:,.0f} | {runs} |"
        )
    lines += [
        "",
        "Ratios: of the medians, and (more robust to the machine's drift) the median of the per-seed ratios of",
        "runs made back to back:",
        "",
    ]
    for option, env_id, _, cv_estimator in ENVS:
        rows = {(c["impl"], c["estimator"]): c for c in todo if c["option"] == option}
        ours, cv = rows[("rl_relax", "baseline")], rows[("rl_relax", cv_estimator)]
        sb3, raw = rows[("stable-baselines3", "baseline")], rows[("raw-env", "none")]
        lines += [
            f"- {env_id}: rl_relax baseline / SB3 A2C = **{ours['median'] / sb3['median']:.2f}x** "
            f"(per-seed median {_paired(ours, sb3):.2f}x); {cv_estimator} / baseline = "
            f"**{cv['median'] / ours['median']:.0%}** (per-seed median {_paired(cv, ours):.0%}); rl_relax baseline "
            f"runs at {ours['median'] / raw['median']:.0%} of the raw env step rate.",
        ]
        if args.against:
            then = {name: rows[(f"rl_relax@{args.against}", name)] for name in ("baseline", cv_estimator)}
            lines += [
                f"- {env_id}, this tree / {args.against}: baseline "
                f"**{ours['median'] / then['baseline']['median']:.3f}** (per-seed median "
                f"{_paired(ours, then['baseline']):.3f}); {cv_estimator} "
                f"**{cv['median'] / then[cv_estimator]['median']:.3f}** (per-seed median "
                f"{_paired(cv, then[cv_estimator]):.3f}).",
            ]
    lines.append("")
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {stem}.{{md,csv}}")


def _commit(revision: str, root: Path = ROOT) -> str:
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "--short", revision], cwd=root,
                           capture_output=True, text=True)  # fmt: skip
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else "unknown"


def code_version(root: Path = ROOT) -> str:
    """The measured code: its commit, and whether the package or its configs differed from it (a
    benchmark of an uncommitted change must not be credited to the commit it started from)."""
    changed = subprocess.run(["git", "status", "--porcelain", "--", "rl_relax", "configs"], cwd=root,
                             capture_output=True, text=True)  # fmt: skip
    dirty = changed.returncode == 0 and changed.stdout.strip()
    return f"commit {_commit('HEAD', root)}" + (" with uncommitted changes to rl_relax/ or configs/" if dirty else "")


def _paired(a: dict, b: dict) -> float:
    return statistics.median(x / y for x, y in zip(a["fps"], b["fps"], strict=True))


def _versions() -> str:
    import gymnasium
    import torch

    versions = f"torch {torch.__version__}, gymnasium {gymnasium.__version__}"
    try:
        import stable_baselines3

        versions += f", stable-baselines3 {stable_baselines3.__version__}"
    except ImportError:
        versions += ", stable-baselines3 not installed"
    return versions


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"benchmark took {time.perf_counter() - t0:.0f} s")
