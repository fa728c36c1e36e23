"""Discrete VAE benchmark: every (model, estimator) pair over seeds, equal step budgets, on the bundled digits.

    python scripts/vae_benchmark.py                          # a new outputs/vae_benchmark/<date_time>/
    python scripts/vae_benchmark.py --update-committed       # replaces the committed results/vae/
    python scripts/vae_benchmark.py --steps 500 --seeds 0 --out /tmp/vae --models linear1
    python scripts/vae_benchmark.py --out DIR --resume       # finish an interrupted benchmark in DIR

Each run is ``python -m rl_relax.vae model=<m> estimator=<e> seed=<s> steps=<steps> <overrides>``, run
in-process (Hydra's compose API) with its TensorBoard events under ``--runs-dir``; its evaluation rows
and summary are copied to ``<out>/runs/``. From those the script writes

- ``table.md`` / ``table.csv``: per (model, estimator), mean and std over seeds of the best training
  ELBO, the best validation ELBO, the mean encoder-gradient log-variance and the time per step; and the
  paper's ranking claim (RELAX >= REBAR > the others on training ELBO) checked on this data;
- ``curves.csv`` (every evaluation row) and ``learning_<model>.png`` (training ELBO and log-variance).

Output directory as for every script (scripts/output_dir.py): a new ``outputs/vae_benchmark/<date_time>/``,
``--out DIR``, or ``--update-committed`` for ``results/vae/``. ``--resume`` keeps the runs already in
``<out>/runs`` (their results equal a fresh run's, so the recorded command leaves it out); without it
those are discarded first.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import platform
import shutil
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import output_dir  # noqa: E402

COMMITTED = ROOT / "results" / "vae"
MODELS = ("linear1", "linear2", "nonlinear")
ESTIMATORS = ("reinforce", "concrete", "rebar", "relax", "disarm")
LABELS = {"reinforce": "NVIL (REINFORCE + baseline)", "concrete": "Concrete", "rebar": "REBAR", "relax": "RELAX",
          "disarm": "DisARM"}  # fmt: skip
PAPER = {  # Grathwohl et al. 2018, Table 1, MNIST (best training ELBO); DisARM is not in the paper
    "nonlinear": {"concrete": -102.2, "reinforce": -101.5, "rebar": -81.01, "relax": -78.13},
    "linear1": {"concrete": -111.3, "reinforce": -112.5, "rebar": -111.6, "relax": -111.20},
    "linear2": {"concrete": -99.62, "reinforce": -99.6, "rebar": -98.22, "relax": -98.00},
}


def run_one(model: str, estimator: str, seed: int, args: argparse.Namespace) -> dict:
    from hydra import compose, initialize_config_module

    from rl_relax.vae.train import VaeTrainer

    overrides = [f"model={model}", f"estimator={estimator}", f"seed={seed}", f"steps={args.steps}",
                 f"eval.interval={args.eval_interval}", "logging.progress=never", *args.overrides]  # fmt: skip
    with initialize_config_module("rl_relax.configs.vae", version_base="1.3"):
        cfg = compose("vae", overrides=overrides)
    run_dir = args.runs_dir / f"{model}__{estimator}__seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    summary = VaeTrainer(cfg, run_dir).run()
    stem = args.out / "runs" / f"{model}__{estimator}__seed{seed}"
    shutil.copyfile(run_dir / "metrics.csv", stem.with_suffix(".csv"))
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(args: argparse.Namespace) -> None:
    runs_dir = args.out / "runs"
    summaries = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*.json"))]
    output_dir.refuse_empty(summaries, f"finished runs in {runs_dir}", "run the benchmark (without --resume).")
    rows, curves = [], []
    for path in sorted(runs_dir.glob("*.csv")):
        model, estimator, seed = path.stem.split("__")
        with path.open() as handle:
            for r in csv.DictReader(handle):
                curves.append({"model": model, "estimator": estimator, "seed": int(seed.removeprefix("seed")), **r})
    for model in args.models:
        for estimator in args.estimators:
            runs = [s for s in summaries if s["model"] == model and s["estimator"] == estimator]
            if not runs:
                continue
            row = {"model": model, "estimator": estimator, "seeds": len(runs), "steps": runs[0]["steps"]}
            for key in ("best_train_elbo", "best_valid_elbo", "mean_encoder_log_variance", "final_test_elbo"):
                row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([s[key] for s in runs])
            row["ms_per_step"] = 1000 * statistics.mean(s["seconds_per_step"] for s in runs)
            row["paper_train_elbo_mnist"] = PAPER[model].get(estimator)
            rows.append(row)
    with (args.out / "table.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with (args.out / "curves.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(curves[0]))
        writer.writeheader()
        writer.writerows(curves)
    write_markdown(args, rows, summaries)
    plot(args, curves)


def ranking_lines(rows: list[dict], summaries: list[dict], model: str) -> list[str]:
    """The paper's claim RELAX >= REBAR > others, checked with per-seed differences (mean +- standard error)."""
    by_est = {r["estimator"]: r for r in rows if r["model"] == model}
    order = sorted(by_est, key=lambda e: -by_est[e]["best_train_elbo_mean"])
    lines = [f"- **{model}**: ranking by best training ELBO: " + " > ".join(
        f"{LABELS[e]} ({by_est[e]['best_train_elbo_mean']:.3f})" for e in order) + "."]  # fmt: skip

    def diff(a: str, b: str) -> str:
        per_seed = {}
        for s in summaries:
            if s["model"] == model and s["estimator"] in (a, b):
                per_seed.setdefault(s["seed"], {})[s["estimator"]] = s["best_train_elbo"]
        d = [v[a] - v[b] for v in per_seed.values() if len(v) == 2]
        if not d:
            return "n/a"
        mean, std = _mean_std(d)
        se = std / len(d) ** 0.5
        return f"{mean:+.3f} ± {se:.3f} (SE, {len(d)} paired seeds)"

    if "relax" in by_est and "rebar" in by_est:
        lines.append(f"  RELAX − REBAR: {diff('relax', 'rebar')}.")
        others = [e for e in by_est if e not in ("relax", "rebar")]
        if others:
            best_other = max(others, key=lambda e: by_est[e]["best_train_elbo_mean"])
            lines.append(f"  REBAR − best other ({LABELS[best_other]}): {diff('rebar', best_other)}; "
                         f"RELAX − {LABELS[best_other]}: {diff('relax', best_other)}.")  # fmt: skip
    return lines


def command_options(args: argparse.Namespace) -> str:
    """The options that determine the results (not --resume), as they belong in the recorded command."""
    parts = []
    for flag, value, default in (("--models", args.models, list(MODELS)), ("--estimators", args.estimators,
                                 list(ESTIMATORS)), ("--seeds", args.seeds, [0, 1, 2])):  # fmt: skip
        if value != default:
            parts.append(f" {flag} {' '.join(map(str, value))}")
    for flag, value, default in (("--steps", args.steps, 8000), ("--eval-interval", args.eval_interval, 500)):
        if value != default:
            parts.append(f" {flag} {value}")
    suffix = output_dir.command_suffix(args)
    overrides = f" -- {' '.join(args.overrides)}" if args.overrides else ""
    return "".join(parts) + suffix + overrides


def write_markdown(args: argparse.Namespace, rows: list[dict], summaries: list[dict]) -> None:
    seeds = sorted({s["seed"] for s in summaries})
    overrides = f" with {' '.join(args.overrides)}" if args.overrides else ""
    lines = [
        "# Discrete VAE benchmark (bundled 8x8 digits, binarized)",
        "",
        f"Command: `python scripts/vae_benchmark.py{command_options(args)}`  ",
        f"Date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {torch.get_num_threads()} torch thread, "
        f"Python {platform.python_version()}, torch {torch.__version__}; seeds {seeds}; training time summed over "
        f"the runs {sum(s['seconds_per_step'] * s['steps'] for s in summaries) / 60:.1f} min (CPU shared with "
        "other jobs: wall time, indicative only).",
        "",
        f"Every run: {rows[0]['steps']} steps of batch 24 (the paper ran 2,000,000 steps on MNIST/Omniglot: these "
        f"budgets are {2_000_000 / rows[0]['steps']:.0f}x smaller, on 1197 training images of 64 pixels), the shipped "
        f"configs (Adam lr 1e-3, 200 latents per layer){overrides}, "
        "equal budgets for all estimators. ELBOs in nats per image, single-sample estimates on the whole "
        "split with a fixed evaluation noise; best over the evaluations (every "
        f"{args.eval_interval} steps). Log-variance: mean over the encoder's parameters of log Var(g_p), from 20 "
        "estimates on one fixed batch, averaged over the evaluations after step 0. mean ± std over seeds.",
        "",
        "| model | estimator | best train ELBO | best valid ELBO | test ELBO (final) | encoder grad log-var "
        "| ms/step (wall, shared CPU) | paper, MNIST train ELBO |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = "–" if r["paper_train_elbo_mnist"] is None else f"{r['paper_train_elbo_mnist']}"
        lines.append(
            f"| {r['model']} | {LABELS[r['estimator']]}"
            f" | {r['best_train_elbo_mean']:.3f} ± {r['best_train_elbo_std']:.3f}"
            f" | {r['best_valid_elbo_mean']:.3f} ± {r['best_valid_elbo_std']:.3f}"
            f" | {r['final_test_elbo_mean']:.3f} ± {r['final_test_elbo_std']:.3f}"
            f" | {r['mean_encoder_log_variance_mean']:.2f} ± {r['mean_encoder_log_variance_std']:.2f}"
            f" | {r['ms_per_step']:.1f} | {paper} |"
        )
    lines += ["", "## The paper's ranking (RELAX >= REBAR > the others on training ELBO) on this data", ""]
    for model in args.models:
        if any(r["model"] == model for r in rows):
            lines += ranking_lines(rows, summaries, model)
    (args.out / "table.md").write_text("\n".join(lines) + "\n")


def plot(args: argparse.Namespace, curves: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for model in args.models:
        fig, (ax_elbo, ax_var) = plt.subplots(1, 2, figsize=(11, 4))
        for estimator in args.estimators:
            rows = [c for c in curves if c["model"] == model and c["estimator"] == estimator]
            if not rows:
                continue
            steps = sorted({int(c["step"]) for c in rows})
            for ax, key in ((ax_elbo, "train_elbo"), (ax_var, "encoder_log_variance")):
                per_step = [[float(c[key]) for c in rows if int(c["step"]) == s] for s in steps]
                mean = [statistics.mean(v) for v in per_step]
                line = ax.plot(steps, mean, label=LABELS[estimator])[0]
                ax.fill_between(steps, [min(v) for v in per_step], [max(v) for v in per_step],
                                color=line.get_color(), alpha=0.15)  # fmt: skip
        ax_elbo.set(xlabel="step", ylabel="training ELBO (nats)", title=f"{model}: training ELBO (mean, min-max)")
        ax_var.set(xlabel="step", ylabel="mean log Var(encoder grad)", title=f"{model}: gradient log-variance")
        lows = [float(c["train_elbo"]) for c in curves if c["model"] == model and int(c["step"]) > 0]
        if lows:
            ax_elbo.set_ylim(sorted(lows)[len(lows) // 20], max(lows) + 0.3)
        ax_elbo.legend()
        fig.tight_layout()
        fig.savefig(args.out / f"learning_{model}.png", dpi=110)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--eval-interval", type=int, default=500)
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "vae_benchmark")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in <out>/runs")
    output_dir.add_arguments(parser, COMMITTED)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = parser.parse_args()
    args.out = output_dir.resolve(parser, args, "vae_benchmark", COMMITTED)
    if not args.resume and (args.out / "runs").exists():
        shutil.rmtree(args.out / "runs")
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    for seed in args.seeds:  # seeds outermost: an interrupted benchmark has complete rounds
        for model in args.models:
            for estimator in args.estimators:
                if args.resume and (args.out / "runs" / f"{model}__{estimator}__seed{seed}.json").exists():
                    continue
                summary = run_one(model, estimator, seed, args)
                print(f"{model} {estimator} seed {seed}: best train ELBO {summary['best_train_elbo']:.3f}, "
                      f"best valid ELBO {summary['best_valid_elbo']:.3f}", flush=True)  # fmt: skip
    summarise(args)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
