"""Summarise a sweep: ``python -m rl_relax.summarize <sweep dir> [--out DIR] [--no-plots]``.

Finds every run under the directory (a ``.hydra/config.yaml``), reads its ``summary.json`` and
TensorBoard scalars, and groups runs that share **every setting except the seed** (runs that differ
in, say, ``learner.lr`` are different rows; measurement-only settings such as logging, checkpoints,
device and the variance probes do not split groups). It writes

- ``summary.md`` / ``summary.csv``: per group, mean +/- std over seeds of episodes to solve (over the
  seeds that solved, with the count), final mean return, the **same-policy variance ratio**
  (``grad/variance_ratio_sampled``: Var(estimator) / Var(baseline estimator) on the same fresh
  rollouts, geometric mean over parameters; per run the median over its measurements), the variance
  anatomy's shares and the fractions of Sigma_a removed (``variance/*``, per run the mean over its
  measurements) when the runs logged them, the run-average of the online ``grad/log_variance`` (each
  run at its own policy, so not comparable across runs that learned differently), and fps; the
  ``settings`` column names what distinguishes groups of the same env and estimator;
- ``returns.png``, ``log_variance.png`` and (when measured) ``variance_ratio.png``: one panel per env,
  one line per group against environment steps. Each run counts over its full length: the line is
  the mean over the seeds that reached a step, and the band (+/- 1 std over seeds) is drawn only
  where at least ``MIN_BAND_SEEDS`` seeds reached it;
- the list of runs that did not finish (still running, interrupted, diverged or failed), so a partial
  sweep is summarised without silently dropping anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

#: The band of a curve needs at least this many seeds at a step.
MIN_BAND_SEEDS = 2
#: Settings that identify no experiment: they never split a group (the seed is the group's sample).
NOT_SETTINGS = ("seed", "run_name", "device", "torch_threads", "torch_deterministic", "sweep_objective",
                "logging.", "checkpoint.", "variance.", "hydra.")  # fmt: skip
RATIO_TAG = "grad/variance_ratio_sampled"
ONLINE_TAG = "grad/log_variance"
ANATOMY_TAGS = ("variance/share_state", "variance/share_action", "variance/share_trajectory",
                "variance/action_removed_by_value", "variance/action_removed_by_cv",
                "variance/action_removed_by_exact_value")  # fmt: skip
TAGS = ("rollout/ep_rew_mean", ONLINE_TAG, RATIO_TAG, *ANATOMY_TAGS)


@dataclass
class Run:
    path: Path
    env_id: str
    estimator: str
    seed: int
    status: str  # finished | unfinished | diverged | failed
    summary: dict = field(default_factory=dict)
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # every config leaf that defines the experiment

    @property
    def group(self) -> tuple:
        return (self.env_id, self.estimator, tuple(sorted(self.settings.items())))


def _flatten(node, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(node) if isinstance(node, list) else str(node)}


def experiment_settings(cfg) -> dict[str, str]:
    """The config's leaves minus the seed and the settings that only measure or log (``NOT_SETTINGS``)."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=False))
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n) for n in NOT_SETTINGS)}


def find_runs(sweep_dir: Path) -> list[Run]:
    runs = []
    for config_path in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        run_dir = config_path.parent.parent
        if ".submitit" in run_dir.parts:
            continue
        cfg = OmegaConf.load(config_path)
        if int(cfg.get("num_seeds", 1)) > 1:  # a seed group's own directory: its seed<k>/ directories are the runs
            continue
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        if not summary:
            status = "unfinished" if (run_dir / "checkpoints").is_dir() else "failed"
        elif summary.get("status") == "diverged":
            status = "diverged"
        else:
            status = "finished" if summary.get("finished") else "unfinished"
        estimator = cfg.get("estimator", {}).get("name", "?")
        run = Run(run_dir, str(cfg.env.id), str(estimator), int(cfg.seed), status, summary)
        run.settings = experiment_settings(cfg)
        runs.append(run)
    return runs


def read_scalars(run_dir: Path, tags: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    # A resumed run rewrites the steps after its checkpoint (the writer's purge_step); the reader then drops
    # the older events past that step, as it should, with one "out of order event" warning per file.
    tb_logger = logging.getLogger("tensorboard")
    level = tb_logger.level
    tb_logger.setLevel(logging.ERROR)
    try:
        acc.Reload()
    finally:
        tb_logger.setLevel(level)
    available = set(acc.Tags()["scalars"])
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in tags if tag in available}


def _mean_std(values: list[float | None]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(mean: float, std: float, digits: int = 1) -> str:
    return "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _per_run(run: Run, tag: str, reduce) -> float | None:
    values = [v for _, v in run.scalars.get(tag, []) if math.isfinite(v)]
    return reduce(values) if values else None


def settings_labels(groups: list[tuple]) -> dict[tuple, str]:
    """For each group, the settings whose values differ among the groups of its env and estimator."""
    by_pair: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for group in groups:
        by_pair[group[:2]].append(group)
    labels = {}
    for members in by_pair.values():
        dicts = [dict(g[2]) for g in members]
        keys = sorted({k for d in dicts for k in d})
        varying = [k for k in keys if len({d.get(k) for d in dicts}) > 1]
        for group, d in zip(members, dicts, strict=True):
            labels[group] = " ".join(f"{k}={d.get(k, '-')}" for k in varying)
    return labels


def table(runs: list[Run]) -> list[dict]:
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.summary:
            groups[run.group].append(run)
    labels = settings_labels(list(groups))
    rows = []
    for group, members in sorted(groups.items(), key=lambda item: (item[0][:2], labels[item[0]])):
        env_id, estimator = group[:2]
        solved = [r.summary["episodes_to_solve"] for r in members if r.summary.get("episodes_to_solve") is not None]
        row = {
            "env": env_id,
            "estimator": estimator,
            "settings": labels[group],
            "seeds": " ".join(str(r.seed) for r in sorted(members, key=lambda r: r.seed)),
            "runs": len(members),
            "solved": len(solved),
            "episodes_to_solve": _mean_std(solved),
            "final_return": _mean_std([r.summary.get("final_return_mean") for r in members]),
            "variance_ratio": _mean_std([_per_run(r, RATIO_TAG, statistics.median) for r in members]),
            "log_variance": _mean_std([_per_run(r, ONLINE_TAG, statistics.mean) for r in members]),
            "fps": _mean_std([r.summary.get("fps") for r in members]),
        }
        for tag in ANATOMY_TAGS:
            row[tag.split("/")[1]] = _mean_std([_per_run(r, tag, statistics.mean) for r in members])
        rows.append(row)
    return rows


CSV_COLUMNS = ["episodes_to_solve", "final_return", "variance_ratio", "log_variance", "fps",
               *(t.split("/")[1] for t in ANATOMY_TAGS)]  # fmt: skip


def _pct(mean: float) -> str:
    return "-" if math.isnan(mean) else f"{100 * mean:.0f}%"


def write_tables(rows: list[dict], runs: list[Run], out: Path) -> str:
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["env", "estimator", "settings", "runs", "seeds", "solved",
                         *(f"{c}_{s}" for c in CSV_COLUMNS for s in ("mean", "std"))])  # fmt: skip
        for r in rows:
            writer.writerow([r["env"], r["estimator"], r["settings"], r["runs"], r["seeds"], r["solved"],
                             *(x for c in CSV_COLUMNS for x in r[c])])  # fmt: skip
    lines = [
        "| env | estimator | seeds | solved | episodes to solve | final return | same-policy variance ratio "
        "| Σ shares s / a / τ | Σa removed by V / cv / exact V | online log-variance (own policy) | fps | settings |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        shares = " / ".join(_pct(r[f"share_{t}"][0]) for t in ("state", "action", "trajectory"))
        removed = " / ".join(_pct(r[f"action_removed_by_{t}"][0]) for t in ("value", "cv", "exact_value"))
        lines.append(
            f"| {r['env']} | {r['estimator']} | {r['seeds']} | {r['solved']}/{r['runs']} | "
            f"{_fmt(*r['episodes_to_solve'])} | {_fmt(*r['final_return'])} | {_fmt(*r['variance_ratio'], 3)} | "
            f"{shares if shares != '- / - / -' else '-'} | {removed if removed != '- / - / -' else '-'} | "
            f"{_fmt(*r['log_variance'], 2)} | {_fmt(*r['fps'], 0)} | {r['settings'] or '-'} |"
        )
    lines += [
        "",
        "Same-policy variance ratio: Var(estimator) / Var(baseline estimator) on the same fresh rollouts at the "
        "same policy (grad/variance_ratio_sampled; geometric mean over parameters; per run the median over its "
        "measurements, then mean ± std over seeds). Below 1: the estimator's gradient varies less. Σ shares and "
        'Σa removed: the variance anatomy (variance/*, README "Variance anatomy"). The online log-variance is '
        "measured at each run's own policy, so it compares runs at different policies.",
    ]
    pending = [r for r in runs if r.status != "finished"]
    if pending:
        lines += ["", "Runs that did not finish (not in the means above unless they wrote a summary):", ""]
        lines += [f"- {r.status}: {r.path} ({r.env_id}, {r.estimator}, seed {r.seed})" for r in pending]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def seed_curves(curves: list[np.ndarray], points: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over seeds on a common step grid, each run counting only within its own steps.

    Returns (grid, mean, std, count): ``count`` is how many runs reached each grid step; the mean is
    over those runs (nan where none), the std nan where fewer than ``MIN_BAND_SEEDS`` did.
    """
    start, end = min(c[0, 0] for c in curves), max(c[-1, 0] for c in curves)
    grid = np.linspace(start, end, points) if end > start else np.array([start])
    ys = np.full((len(curves), len(grid)), np.nan)
    for i, c in enumerate(curves):
        inside = (grid >= c[0, 0]) & (grid <= c[-1, 0])
        ys[i, inside] = np.interp(grid[inside], c[:, 0], c[:, 1])
    count = np.isfinite(ys).sum(0)
    with warnings.catch_warnings():  # all-nan columns (no run, or one run for the std) are expected here
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(ys, 0)
        std = np.where(count >= MIN_BAND_SEEDS, np.nanstd(ys, 0, ddof=1), np.nan)
    return grid, mean, std, count


def plot(runs: list[Run], tag: str, ylabel: str, path: Path, log_y: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    envs = sorted({r.env_id for r in runs if r.scalars.get(tag)})
    if not envs:
        return
    labels = settings_labels(list({r.group for r in runs}))
    fig, axes = plt.subplots(1, len(envs), figsize=(6.5 * len(envs), 4.5), squeeze=False)
    for ax, env_id in zip(axes[0], envs, strict=True):
        groups: dict[tuple, list[Run]] = defaultdict(list)
        for r in runs:
            if r.env_id == env_id and r.scalars.get(tag):
                groups[r.group].append(r)
        for group, members in sorted(groups.items(), key=lambda item: (item[0][1], labels[item[0]])):
            curves = [np.array(r.scalars[tag], dtype=float) for r in members]
            curves = [c[np.isfinite(c[:, 1])] for c in curves]
            curves = [c for c in curves if len(c)]
            if not curves:
                continue
            grid, mean, std, _ = seed_curves(curves)
            name = group[1] + (f" ({labels[group]})" if labels[group] else "")
            (line,) = ax.plot(grid, mean, label=f"{name}: mean of {len(curves)} seed{'s' * (len(curves) > 1)}")
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2, color=line.get_color())
        handles, names = ax.get_legend_handles_labels()
        band = Patch(color="grey", alpha=0.3,
                     label=f"band: ±1 std over seeds (where ≥ {MIN_BAND_SEEDS} seeds reach the step)")  # fmt: skip
        ax.legend([*handles, band], [*names, band.get_label()], fontsize=8)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(ylabel)
        if log_y:
            ax.set_yscale("log")
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
            run.scalars = read_scalars(run.path, TAGS)
    text = write_tables(table(runs), runs, out)
    if plots:
        plot(runs, "rollout/ep_rew_mean", "mean episode return (last 100 episodes)", out / "returns.png")
        plot(runs, ONLINE_TAG, "log gradient variance at the run's own policy\n(online average, mean over parameters)",
             out / "log_variance.png")  # fmt: skip
        plot(runs, RATIO_TAG, "gradient variance / baseline estimator's\nat the same policy (geometric mean)",
             out / "variance_ratio.png", log_y=True)  # fmt: skip
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
