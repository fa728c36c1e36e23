"""Does the shipped config learn? Train an env option over several seeds and tabulate summary.json.

    python scripts/check_learning.py --env CartPole --seeds 0 1 2 3 4
    python scripts/check_learning.py --env Pendulum --seeds 0 1 2 -- learner.lr=1e-3   # extra overrides
    python scripts/check_learning.py --env CartPole --seeds 0 1 2 3 4 --update-committed  # results/

Each run is ``python -m rl_relax.train env=<env> estimator=<estimator> seed=<s> <overrides>`` in
its own run directory under ``--runs-dir``; the table (Markdown and CSV),
``learning_<env>_<estimator>.{md,csv}`` with the command, date, machine and seeds, goes to a new
``outputs/check_learning/<date_time>/``, to ``--out DIR``, or with ``--update-committed`` to the
committed ``results/``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import output_dir  # noqa: E402

COMMITTED = ROOT / "results"


def variance_columns(run_dir: Path, steps_to_solve: int | None) -> dict:
    """Summaries of the sampled gradient-variance measurements, if the run made any."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    out = {}
    if "grad/log_variance" in tags:
        out["log_variance_online_mean"] = statistics.mean(e.value for e in acc.Scalars("grad/log_variance")[1:])
    if "grad/variance_ratio_sampled" in tags:
        events = acc.Scalars("grad/variance_ratio_sampled")
        ratios = [e.value for e in events]
        out["variance_ratio_median"] = statistics.median(ratios)
        # While learning: once solved, both gradients are tiny and their ratio says little about learning.
        learning = [e.value for e in events if steps_to_solve is None or e.step <= steps_to_solve]
        out["variance_ratio_median_learning"] = statistics.median(learning) if learning else None
        out["variance_ratio_first"], out["variance_ratio_last"] = ratios[0], ratios[-1]
        out["variance_measurements"] = len(ratios)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True, help="env option, e.g. CartPole")
    parser.add_argument("--estimator", default="baseline")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "check_learning")
    output_dir.add_arguments(parser, COMMITTED)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (after --)")
    args = parser.parse_args()
    args.out = output_dir.resolve(parser, args, "check_learning", COMMITTED)

    rows = []
    for seed in args.seeds:
        run_dir = args.runs_dir / f"{args.env}__{args.estimator}__seed{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: no events or checkpoints from a previous one
        cmd = [sys.executable, "-m", "rl_relax.train", f"env={args.env}", f"estimator={args.estimator}",
               f"seed={seed}", f"hydra.run.dir={run_dir}", "logging.progress=never",
               *args.overrides]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"run failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
        summary.update(variance_columns(run_dir, summary["steps_to_solve"]))
        rows.append(summary)
        print(f"seed {seed}: final return {summary['final_return_mean']:.1f}, episodes to solve "
              f"{summary['episodes_to_solve']}, steps to solve {summary['steps_to_solve']}, "
              f"{summary['fps']:.0f} fps", flush=True)  # fmt: skip

    output_dir.refuse_empty(rows, "runs", "pass --seeds.")
    finals = [r["final_return_mean"] for r in rows]
    solved = [r for r in rows if r["episodes_to_solve"] is not None]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"learning_{args.env}_{args.estimator}"
    fields = ["seed", "timesteps", "episodes", "final_return_mean", "episodes_to_solve", "steps_to_solve",
              "solved_threshold", "fps", "log_variance_online_mean", "variance_ratio_median",
              "variance_ratio_median_learning", "variance_ratio_first", "variance_ratio_last",
              "variance_measurements"]  # fmt: skip
    with open(args.out / f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    extra = ["--", *args.overrides] if args.overrides else []
    head = ["python scripts/check_learning.py", f"--env {args.env}", f"--estimator {args.estimator}", "--seeds"]
    command = " ".join([*head, *map(str, args.seeds)]) + output_dir.command_suffix(args) + " ".join(["", *extra])
    lines = [
        f"# {rows[0]['env_id']} with estimator={args.estimator}: does the shipped config learn?",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.date.today().isoformat()}  ",
        f"Machine: {platform.machine()}, {platform.system()}, Python {platform.python_version()}, CPU  ",
        f"Seeds: {', '.join(map(str, args.seeds))}; {rows[0]['total_timesteps']:,} env steps per run; "
        f"solved = mean return over the last {rows[0]['solved_window']} episodes >= {rows[0]['solved_threshold']}",
        "",
        "| seed | final mean return | episodes to solve | steps to solve | fps |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['final_return_mean']:.1f} | {r['episodes_to_solve'] or '-'} | "
                     f"{r['steps_to_solve'] or '-'} | {r['fps']:,.0f} |")  # fmt: skip
    with_ratio = [r for r in rows if "variance_ratio_median" in r]
    if with_ratio:
        lines += [
            "",
            "Sampled gradient variance at matched policies (`grad/variance_ratio_sampled`: geometric mean over policy",
            f"parameters of Var({args.estimator}) / Var(baseline) on the same fresh rollouts):",
            "",
            "| seed | measurements | first | median until solved | median | last |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in with_ratio:
            learning = r["variance_ratio_median_learning"]
            lines.append(f"| {r['seed']} | {r['variance_measurements']} | {r['variance_ratio_first']:.3f} | "
                         f"{'-' if learning is None else f'{learning:.3f}'} | {r['variance_ratio_median']:.3f} | "
                         f"{r['variance_ratio_last']:.3f} |")  # fmt: skip
        lines += [
            "",
            "A ratio below 1 means the estimator's gradient varies less than the baseline's at the same policy.",
        ]
    lines += [
        "",
        f"Final mean return: median {statistics.median(finals):.1f}, mean {statistics.mean(finals):.1f}"
        + (f" +/- {statistics.stdev(finals):.1f}" if len(finals) > 1 else "")
        + f"; solved in {len(solved)}/{len(rows)} seeds.",
        "",
    ]
    (args.out / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.out / stem}.{{md,csv}}")


if __name__ == "__main__":
    main()
