"""Where the policy gradient's variance comes from: the variance anatomy at three stages of training.

    python scripts/variance_anatomy.py                       # CartPole, Acrobot, InvertedPendulum, LunarLander
    python scripts/variance_anatomy.py --envs CartPole --seeds 0 --states 16   # a quick look
    python scripts/variance_anatomy.py --update-committed    # results/variance_anatomy.{md,csv} + PNGs

For each env option and seed it trains the baseline estimator and the env's control-variate
estimator (relax for discrete actions, lax for continuous ones) with the shipped config and
``total_timesteps=--total-timesteps`` (checkpoints at half-way and at the end), skipping runs that
already finished in ``--runs-dir``, then measures the decomposition (:mod:`rl_relax.anatomy`,
``python -m rl_relax.variance``) of each run's estimator at

- **start**: the initial policy (step 0, rebuilt from the run's config and seed);
- **half-way**: the checkpoint at total_timesteps / 2;
- **end**: the checkpoint at total_timesteps.

An env whose state cannot be restored (:mod:`rl_relax.env_state`) is reported as such, with the
reason, and skipped. LunarLander's states are restored by replaying the episode, which makes a
measurement there ~1M env steps (about a minute). Writes ``variance_anatomy.md`` / ``.csv`` and
``variance_anatomy_<env>.png`` to a new ``outputs/variance_anatomy/<date_time>/``, ``--out DIR``, or with
``--update-committed`` to ``results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import output_dir  # noqa: E402

COMMITTED = ROOT / "results"
STAGES = ("start", "half-way", "end")
TERMS = ("state", "action", "trajectory")


def estimators_for(env_option: str) -> list[str]:
    import gymnasium as gym

    from rl_relax.api import compose_config
    from rl_relax.envs import make_env

    env = make_env(compose_config([f"env={env_option}"]).env)
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    env.close()
    return ["baseline", "relax" if discrete else "lax"]


def train_overrides(env: str, estimator: str, seed: int, total: int, run_dir: Path) -> list[str]:
    return [f"env={env}", f"estimator={estimator}", f"seed={seed}", f"total_timesteps={total}",
            f"checkpoint.interval_steps={total // 2}", "checkpoint.keep_last=3", "logging.progress=never",
            "torch_threads=1", f"hydra.run.dir={run_dir}"]  # fmt: skip


def train(env: str, estimator: str, seed: int, total: int, run_dir: Path) -> None:
    """``python -m rl_relax.train ...``, unless the run already finished (its summary.json says so)."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        done = json.loads(summary.read_text())
        if done.get("finished") and done.get("timesteps", 0) >= total:
            return
    command = [sys.executable, "-m", "rl_relax.train", *train_overrides(env, estimator, seed, total, run_dir)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: training failed: {' '.join(command)}\n{done.stderr[-2000:]}")


def mean_return_at(run_dir: Path, step: int) -> float | None:
    """rollout/ep_rew_mean logged at the last point <= step (None at step 0 or if absent)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if step == 0:
        return None
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if "rollout/ep_rew_mean" not in acc.Tags()["scalars"]:
        return None
    points = [e.value for e in acc.Scalars("rollout/ep_rew_mean") if e.step <= step]
    return points[-1] if points else None


def measure(run_dir: Path, step: int, config) -> tuple[list[dict], float, int]:
    """The anatomy's rows at ``step``, cached in the run directory (an interrupted script resumes)."""
    cache = run_dir / (f"anatomy_step{step}_M{config.num_states}_K{config.num_actions}_L{config.num_continuations}"
                       f"_seed{config.seed}.json")  # fmt: skip
    if cache.is_file():
        cached = json.loads(cache.read_text())
        return cached["rows"], cached["seconds"], cached["env_steps"]
    rows, seconds, env_steps = _measure(run_dir, step, config)
    cache.write_text(json.dumps({"rows": rows, "seconds": seconds, "env_steps": env_steps}))
    return rows, seconds, env_steps


def _measure(run_dir: Path, step: int, config) -> tuple[list[dict], float, int]:
    from rl_relax.anatomy import VarianceAnatomy
    from rl_relax.variance import load_policy_at

    trainer, _ = load_policy_at(run_dir, step)
    try:
        probe = VarianceAnatomy(trainer.cfg.env, trainer.cfg.learner, trainer.policy, trainer.value,
                                trainer.estimator, config)  # fmt: skip
        try:
            result = probe.measure(trainer.env.normalizer_state())
        finally:
            probe.close()
    finally:
        trainer.env.close()
    return result.rows(), result.seconds, result.env_steps


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean over seeds of each term per (env, estimator, stage, variant); shares and removed from the means."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["env"], r["estimator"], STAGES.index(r["stage"]), r["variant_order"]), []).append(r)
    out = []
    for key in sorted(groups):
        members = groups[key]
        agg = {k: members[0][k] for k in ("env", "estimator", "stage", "variant", "variant_order")}
        agg["seeds"] = len(members)
        agg["return"] = _mean([m["return"] for m in members])
        for term in (*TERMS, "total"):
            agg[term] = statistics.mean(m[term] for m in members)
        for term in TERMS:  # the standard error of a mean of independent estimates
            agg[f"{term}_se"] = sum(m[f"{term}_se"] ** 2 for m in members) ** 0.5 / len(members)
        # Shares of the parts clipped at 0 (an unbiased estimate of a tiny variance can be slightly negative).
        positive = sum(max(agg[t], 0.0) for t in TERMS)
        for term in TERMS:
            agg[f"share_{term}"] = max(agg[term], 0.0) / positive if positive > 0 else float("nan")
        out.append(agg)
    by_policy: dict[tuple, dict[str, dict]] = {}
    for agg in out:
        by_policy.setdefault((agg["env"], agg["estimator"], agg["stage"]), {})[agg["variant"]] = agg
    for variants in by_policy.values():
        none, value = variants["no_baseline"]["action"], variants["learned_value"]
        for agg in variants.values():
            agg["action_removed"] = 1.0 - agg["action"] / none if none > 0 else float("nan")
            # Tucker et al.'s comparison: the per-step variance relative to the learned V's estimator.
            agg["vs_value"] = agg["total"] / value["total"] if value["total"] > 0 else float("nan")
    return out


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _ratio(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.2g}x"


def _pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:.0f}%"


def _change(before: dict, after: dict, what: str) -> str:
    """How ``after``'s Σa compares with ``before``'s, or "no detectable change" within 2 standard errors."""
    a, b = before["action"], after["action"]
    se = (before["action_se"] ** 2 + after["action_se"] ** 2) ** 0.5
    numbers = f"Σa {a:.2g} ± {before['action_se']:.1g} → {b:.2g} ± {after['action_se']:.1g}"
    if abs(a - b) <= 2 * se:
        return f"{what} makes no detectable change ({numbers})"
    if b < a:
        return f"{what} removes {_pct(1 - max(b, 0.0) / a)} of it ({numbers})"
    return f"{what} multiplies it by {b / a:.2g} ({numbers})" if a > 0 else f"{what} adds to it ({numbers})"


def interpretation(agg: list[dict], env_id: str) -> list[str]:
    """Sentences computed from the numbers: what the learned V, the control variate and an exact V do."""
    lines = []
    for estimator in sorted({a["estimator"] for a in agg if a["env"] == env_id}):
        for stage in STAGES:
            v = {a["variant"]: a for a in agg if (a["env"], a["estimator"], a["stage"]) == (env_id, estimator, stage)}
            if not v:
                continue
            est, value, exact = v["estimator"], v["learned_value"], v["exact_value"]
            cv_name = f"{estimator.upper()}'s c_phi"
            cv = "" if estimator == "baseline" else f" {_change(value, est, cv_name)}."
            lines.append(
                f"- {estimator}, {stage}: with the learned V, the shares are Σs {_pct(value['share_state'])}, "
                f"Σa {_pct(value['share_action'])}, Στ {_pct(value['share_trajectory'])}; V removes "
                f"{_pct(value['action_removed'])} of the no-baseline Σa. Of the Σa V leaves, "
                f"{_change(value, exact, 'an exact V')}.{cv}"
            )
    return lines


NOTES_START, NOTES_END = "<!-- notes: kept when the script rewrites this file -->", "<!-- /notes -->"


def _notes(path: Path) -> str:
    """The hand-written section between the notes markers of an existing results file ("" if none)."""
    text = path.read_text() if path.is_file() else ""
    if NOTES_START not in text or NOTES_END not in text:
        return ""
    return text[text.index(NOTES_START) : text.index(NOTES_END) + len(NOTES_END)]


def write_outputs(rows: list[dict], skipped: dict[str, str], args, out: Path, cost: dict) -> None:
    from rl_relax.anatomy import VARIANT_LABELS
    from rl_relax.anatomy_report import plot_stacked, write_csv

    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "variance_anatomy.csv", ["env", "estimator", "seed", "stage", "step", "return"])
    agg = aggregate(rows)
    command = "python scripts/variance_anatomy.py" + "".join(
        f" --{name.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, list) else value}"
        for name, value in vars(args).items()
        if name in ("envs", "seeds", "total_timesteps", "states", "actions", "continuations")
    ) + output_dir.command_suffix(args)  # fmt: skip
    import torch

    lines = [
        "# Variance anatomy: where the policy gradient's variance comes from",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.date.today().isoformat()}  ",
        f"Machine: {platform.machine()}, {platform.system()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, CPU, 1 torch thread  ",
        f"Seeds: {', '.join(map(str, args.seeds))} (training seeds; probe seed 0)  ",
        f"Probe: M={args.states} states, K={args.actions} actions, L={args.continuations} continuations; "
        f"{cost['env_steps']:,} env steps and {cost['seconds']:.0f} s for {cost['measurements']} measurements "
        f"(+ {cost['train_seconds']:.0f} s of training). Per measurement (mean): "
        + "; ".join(
            f"{env_id} {statistics.mean(n for n, _ in v):,.0f} env steps, {statistics.mean(t for _, t in v):.1f} s"
            for env_id, v in sorted(cost["per_env"].items())
        )
        + ".",
        "",
        "Per-step policy-gradient variance at the same policy, split by the law of total variance into the "
        "state Σs, the action Σa and the rest of the trajectory Στ (Tucker et al. 2018), each a mean over "
        "policy parameters of per-parameter variances, estimated without bias by nested Monte Carlo from "
        "saved simulator states (`rl_relax/anatomy.py`). Rows: the score function with no baseline, with "
        "the learned V(s), the run's estimator with its full control variate, and with an exact V(s) "
        "(Monte Carlo at the sampled states). Σs and Στ are the same for all four (no baseline changes "
        'them); "Σa removed" is the fraction of the no-baseline Σa that each one removes, "total / learned V\'s" '
        "the per-step variance (Σs + Σa + Στ) relative to that of the A2C estimator with the learned V.",
        "",
        f"Stages: start = the initial policy; half-way = {args.total_timesteps // 2:,} env steps; end = "
        f"{args.total_timesteps:,} env steps (the shipped env config with total_timesteps={args.total_timesteps:,}). "
        "Values: mean over seeds; ± = the probe's standard error of that mean; return = the training's mean "
        "episode return (last 100 episodes) at that checkpoint, mean over seeds.",
        "",
    ]
    for env_id, reason in skipped.items():
        lines += [f"**{env_id}: not measured.** {reason}", ""]
    for env_id in sorted({r["env"] for r in rows}):
        lines += [f"## {env_id}", "", f"![{env_id}](variance_anatomy_{env_id.split('-')[0]}.png)", ""]
        lines += ["| estimator | stage | return | baseline / control variate | Σs | Σa | Στ | shares s / a / τ | "
                  "Σa removed | total / learned V's |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for a in agg:
            if a["env"] != env_id:
                continue
            ret = "-" if a["return"] is None else f"{a['return']:.0f}"
            shares = " / ".join(_pct(a[f"share_{t}"]) for t in TERMS)
            terms = " | ".join(f"{a[t]:.3g} ± {a[t + '_se']:.2g}" for t in TERMS)
            lines.append(f"| {a['estimator']} | {a['stage']} | {ret} | {VARIANT_LABELS[a['variant']]} | {terms} | "
                         f"{shares} | {_pct(a['action_removed'])} | {_ratio(a['vs_value'])} |")  # fmt: skip
        lines += ["", "What the numbers say (computed from the table):", "", *interpretation(agg, env_id), ""]
        panels = []
        for estimator in sorted({a["estimator"] for a in agg if a["env"] == env_id}):
            for stage in STAGES:
                members = [a for a in agg if (a["env"], a["estimator"], a["stage"]) == (env_id, estimator, stage)]
                if members:
                    panels.append((f"{estimator}, {stage}", members))
        plot_stacked(panels, out / f"variance_anatomy_{env_id.split('-')[0]}.png",
                     f"{env_id}: per-step gradient variance by source (mean over {len(args.seeds)} seeds)")  # fmt: skip
    notes = _notes(out / "variance_anatomy.md")
    if notes:  # the hand-written interpretation of an earlier run of this script, after the introduction
        after = next(i for i, line in enumerate(lines) if line.startswith("Stages:")) + 1
        lines[after:after] = ["", notes]
    (out / "variance_anatomy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole", "Acrobot", "InvertedPendulum", "LunarLander"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--total-timesteps", type=int, default=200_000)
    parser.add_argument("--states", type=int, default=64, help="M (default 64)")
    parser.add_argument("--actions", type=int, default=8, help="K (default 8)")
    parser.add_argument("--continuations", type=int, default=8, help="L (default 8)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "outputs" / "variance_anatomy" / "runs",
                        help="where the trainings live (finished ones are reused)")  # fmt: skip
    output_dir.add_arguments(parser, COMMITTED)
    args = parser.parse_args()
    out = output_dir.resolve(parser, args, "variance_anatomy", COMMITTED)

    import torch

    from rl_relax.anatomy import VARIANTS, AnatomyConfig
    from rl_relax.api import compose_config
    from rl_relax.env_state import StateNotRestorableError, make_restorable_env

    torch.set_num_threads(1)
    config = AnatomyConfig(args.states, args.actions, args.continuations)
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    cost: dict = {"env_steps": 0, "seconds": 0.0, "measurements": 0, "train_seconds": 0.0, "per_env": {}}
    for env in args.envs:
        env_cfg = compose_config([f"env={env}"]).env
        try:
            make_restorable_env(env_cfg)[0].close()
        except StateNotRestorableError as exc:
            skipped[str(env_cfg.id)] = str(exc)
            print(f"{env}: skipped: {exc}", file=sys.stderr)
            continue
        for estimator in estimators_for(env):
            for seed in args.seeds:
                run_dir = args.runs_dir / f"{env}__{estimator}__seed{seed}"
                train(env, estimator, seed, args.total_timesteps, run_dir)
                cost["train_seconds"] += float(json.loads((run_dir / "summary.json").read_text())["wall_time_s"])
                for stage, step in zip(STAGES, (0, args.total_timesteps // 2, args.total_timesteps), strict=True):
                    measured, seconds, steps = measure(run_dir, step, config)
                    cost["env_steps"] += steps
                    cost["seconds"] += seconds
                    cost["measurements"] += 1
                    cost["per_env"].setdefault(str(env_cfg.id), []).append((steps, seconds))
                    ret = mean_return_at(run_dir, step)
                    print(f"{env} {estimator} seed {seed} {stage}: {steps:,} env steps, {seconds:.1f} s",
                          file=sys.stderr, flush=True)  # fmt: skip
                    for r in measured:
                        rows.append({"env": str(env_cfg.id), "estimator": estimator, "seed": seed, "stage": stage,
                                     "step": step, "return": ret, "variant_order": VARIANTS.index(r["variant"]),
                                     **r})  # fmt: skip
    output_dir.refuse_empty(rows, "measurements", "pass --envs with at least one restorable env")
    write_outputs(rows, skipped, args, Path(out), cost)


if __name__ == "__main__":
    main()
