"""Summarise a sweep: ``python -m rl_relax.summarize <sweep dir> [--out DIR] [--no-plots]``.

Finds every run under the directory (a ``.hydra/config.yaml``), reads its ``summary.json`` and
TensorBoard scalars, and writes:

- ``summary.md`` / ``summary.csv``: per (env, estimator), mean +/- std over seeds of episodes to solve
  (over the seeds that solved, with the count), final mean return, the run-average of
  ``grad/log_variance``, and fps;
- ``returns.png`` and ``log_variance.png``: ``rollout/ep_rew_mean`` and ``grad/log_variance`` against
  environment steps, one panel per env, one line per estimator (mean over seeds, band = +/- 1 std);
- the list of runs that did not finish (still running, interrupted, diverged or failed), so a partial
  sweep is summarised without silently dropping anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf


@dataclass
class Run:
    path: Path
    env_id: str
    estimator: str
    seed: int
    status: str  # finished | unfinished | diverged | failed
    summary: dict = field(default_factory=dict)
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def find_runs(sweep_dir: Path) -> list[Run]:
    runs = []
    for config_path in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        run_dir = config_path.parent.parent
        if ".submitit" in run_dir.parts:
            continue
        cfg = OmegaConf.load(config_path)
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        if not summary:
            status = "unfinished" if (run_dir / "checkpoints").is_dir() else "failed"
        elif summary.get("status") == "diverged":
            status = "diverged"
        else:
            status = "finished" if summary.get("finished") else "unfinished"
        estimator = cfg.get("estimator", {}).get("name", "?")
        runs.append(Run(run_dir, str(cfg.env.id), str(estimator), int(cfg.seed), status, summary))
    return runs


def read_scalars(run_dir: Path, tags: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    available = set(acc.Tags()["scalars"])
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in tags if tag in available}


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(mean: float, std: float, digits: int = 1) -> str:
    return "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def table(runs: list[Run]) -> list[dict]:
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.summary:
            groups[(run.env_id, run.estimator)].append(run)
    rows = []
    for (env_id, estimator), members in sorted(groups.items()):
        solved = [r.summary["episodes_to_solve"] for r in members if r.summary.get("episodes_to_solve") is not None]
        log_var = [
            statistics.mean(v for _, v in r.scalars["grad/log_variance"] if math.isfinite(v))
            for r in members
            if r.scalars.get("grad/log_variance")
        ]
        rows.append({
            "env": env_id,
            "estimator": estimator,
            "seeds": " ".join(str(r.seed) for r in sorted(members, key=lambda r: r.seed)),
            "runs": len(members),
            "solved": len(solved),
            "episodes_to_solve": _mean_std(solved),
            "final_return": _mean_std([r.summary.get("final_return_mean") for r in members]),
            "log_variance": _mean_std(log_var),
            "fps": _mean_std([r.summary.get("fps") for r in members]),
        })  # fmt: skip
    return rows


def write_tables(rows: list[dict], runs: list[Run], out: Path) -> str:
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["env", "estimator", "runs", "seeds", "solved", "episodes_to_solve_mean",
                         "episodes_to_solve_std", "final_return_mean", "final_return_std", "log_variance_mean",
                         "log_variance_std", "fps_mean", "fps_std"])  # fmt: skip
        for r in rows:
            writer.writerow([r["env"], r["estimator"], r["runs"], r["seeds"], r["solved"], *r["episodes_to_solve"],
                             *r["final_return"], *r["log_variance"], *r["fps"]])  # fmt: skip
    lines = [
        "| env | estimator | seeds | solved | episodes to solve | final return | mean grad/log_variance | fps |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['estimator']} | {r['seeds']} | {r['solved']}/{r['runs']} | "
            f"{_fmt(*r['episodes_to_solve'])} | {_fmt(*r['final_return'])} | {_fmt(*r['log_variance'], 2)} | "
            f"{_fmt(*r['fps'], 0)} |"
        )
    pending = [r for r in runs if r.status != "finished"]
    if pending:
        lines += ["", "Runs that did not finish (not in the means above unless they wrote a summary):", ""]
        lines += [f"- {r.status}: {r.path} ({r.env_id}, {r.estimator}, seed {r.seed})" for r in pending]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def plot(runs: list[Run], tag: str, ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r.env_id for r in runs if r.scalars.get(tag)})
    if not envs:
        return
    fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4), squeeze=False)
    for ax, env_id in zip(axes[0], envs, strict=True):
        by_estimator: dict[str, list[Run]] = defaultdict(list)
        for r in runs:
            if r.env_id == env_id and r.scalars.get(tag):
                by_estimator[r.estimator].append(r)
        for estimator, members in sorted(by_estimator.items()):
            curves = [np.array(r.scalars[tag], dtype=float) for r in members]
            end = min(c[-1, 0] for c in curves)
            grid = np.linspace(max(c[0, 0] for c in curves), end, 200)
            ys = np.stack([np.interp(grid, c[:, 0], c[:, 1]) for c in curves])
            mean, std = ys.mean(0), ys.std(0)
            ax.plot(grid, mean, label=f"{estimator} ({len(members)} seeds)")
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(ylabel)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize(sweep_dir: Path, out: Path | None = None, plots: bool = True) -> str:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a directory")
    out = Path(out or sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = find_runs(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"no runs (.hydra/config.yaml) under {sweep_dir}")
    for run in runs:
        if run.summary or (run.path / "checkpoints").is_dir():
            run.scalars = read_scalars(run.path, ("rollout/ep_rew_mean", "grad/log_variance"))
    text = write_tables(table(runs), runs, out)
    if plots:
        plot(runs, "rollout/ep_rew_mean", "mean episode return (last 100)", out / "returns.png")
        plot(runs, "grad/log_variance", "grad/log_variance", out / "log_variance.png")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl_relax.summarize", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (or any directory of runs)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep directory)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    try:
        print(summarize(args.sweep_dir, args.out, plots=not args.no_plots), end="")
    except FileNotFoundError as exc:
        print(f"error: {exc}. Fix: pass the directory a multirun wrote (hydra.sweep.dir).", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
