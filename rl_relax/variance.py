"""Gradient-variance measurement, identical for every estimator so that curves overlay.

Both measures summarise per-parameter variances of the estimator's gradient g (with respect to all
policy parameters, entropy and value terms excluded, before clipping) as the mean over parameters
of log Var(g_p), the convention of the RELAX paper's plots and code:

- online (``grad/log_variance``, every update, cheap): exponential moving averages of g and g^2 with
  decay beta, bias-corrected like Adam's moments, Var = E[g^2] - E[g]^2. The policy moves while the
  averages accumulate, so this tracks the variance along training rather than at one policy.
- sampled (``grad/log_variance_sampled``, the paper's protocol): with the policy and control
  variate frozen, K independent fresh batches give K gradients; Var is their per-parameter sample
  variance. Computing the baseline estimator's gradient on the same batches gives the variance
  reduction at the same policy.

Variances are floored at 1e-30 before the log so that a parameter with no gradient cannot make the
mean -inf.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

VARIANCE_FLOOR = 1e-30


class OnlineGradientVariance:
    """Per-parameter EMA estimate of Var(g) along training."""

    def __init__(self, size: int | tuple[int, ...], decay: float = 0.99, device: torch.device | str = "cpu"):
        """``size``: the number of parameters P, or (S, P) for S seeds (one variance per seed)."""
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.mean = torch.zeros(size, device=device)
        self.mean_sq = torch.zeros(size, device=device)
        self.count = 0

    def update(self, g: torch.Tensor) -> None:
        # m <- decay m + (1 - decay) g, and the same for g^2: one interpolation (lerp) each
        self.mean.lerp_(g, 1.0 - self.decay)
        self.mean_sq.lerp_(g.square(), 1.0 - self.decay)
        self.count += 1

    def log_variance(self) -> float | list[float]:
        """Mean over parameters of log(E[g^2] - E[g]^2); nan before two updates (one per seed for (S, P))."""
        if self.count < 2:
            return math.nan if self.mean.dim() == 1 else [math.nan] * self.mean.shape[0]
        correction = 1.0 - self.decay**self.count
        var = self.mean_sq / correction - (self.mean / correction).square()
        log_var = torch.log(var.clamp_min(VARIANCE_FLOOR)).mean(-1)
        return log_var.item() if log_var.dim() == 0 else log_var.tolist()

    def state_dict(self) -> dict:
        return {"mean": self.mean, "mean_sq": self.mean_sq, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean.copy_(state["mean"])
        self.mean_sq.copy_(state["mean_sq"])
        self.count = int(state["count"])


def sampled_log_variance(grads: torch.Tensor) -> float:
    """Mean over parameters of the log of the per-parameter sample variance of K gradients (K, P)."""
    if grads.shape[0] < 2:
        raise ValueError("need at least two gradient samples")
    return torch.log(grads.var(dim=0, unbiased=True).clamp_min(VARIANCE_FLOOR)).mean().item()


class SampledVarianceProbe:
    """The paper's protocol: K fresh rollouts at the current (frozen) policy and control variate.

    The rollouts come from a separate copy of the vector env with its own acting-noise generator,
    so measuring never changes the training run's environments or random streams. Each rollout
    gives every compared estimator's gradient on the same data; the per-parameter sample variances
    over the K rollouts are summarised by :func:`sampled_log_variance`.
    """

    def __init__(self, env_handle, collector, learner, estimators: dict):
        self.env, self.collector, self.learner, self.estimators = env_handle, collector, learner, estimators

    def measure(self, num_batches: int, normalizer_state: dict) -> dict[str, float]:
        self.env.load_normalizer_state(normalizer_state)
        self.env.freeze_normalizers()
        samples: dict[str, list[torch.Tensor]] = {name: [] for name in self.estimators}
        for _ in range(num_batches):
            self.collector.collect()
            for name, g in self.learner.estimator_gradients(self.collector.buffer, self.estimators).items():
                samples[name].append(g)
        logs = {name: sampled_log_variance(torch.stack(gs)) for name, gs in samples.items()}
        out = {"grad/log_variance_sampled": logs["estimator"]}
        if "baseline" in logs:
            out["grad/log_variance_sampled_baseline"] = logs["baseline"]
            # Geometric mean over parameters of Var(estimator) / Var(baseline), at the same policy.
            out["grad/variance_ratio_sampled"] = math.exp(logs["estimator"] - logs["baseline"])
        return out

    def close(self) -> None:
        self.env.close()


class AnatomyProbe:
    """The variance anatomy during training, every ``variance.anatomy_interval_steps`` env steps.

    Each measurement builds its own envs and generator (seeded from the run seed and the step), so it
    never touches the training run's environments or random streams, and closes them afterwards.
    """

    def __init__(self, cfg, policy, value, estimator):
        from rl_relax.env_state import make_restorable_env

        self.cfg, self.policy, self.value, self.estimator = cfg, policy, value, estimator
        self.interval = int(cfg.variance.anatomy_interval_steps)
        # An env whose state cannot be restored is refused now, before training, not at the first
        # measurement (a long run would otherwise fail midway, its work so far kept only in checkpoints).
        make_restorable_env(cfg.env)[0].close()

    def due(self, global_step: int, steps_per_update: int) -> bool:
        """Whether this update crossed a multiple of the interval."""
        return self.interval > 0 and global_step // self.interval > (global_step - steps_per_update) // self.interval

    def measure(self, normalizer_state: dict, global_step: int) -> dict[str, float]:
        import logging

        from rl_relax.anatomy import AnatomyConfig, VarianceAnatomy

        v = self.cfg.variance
        config = AnatomyConfig(int(v.anatomy_states), int(v.anatomy_actions), int(v.anatomy_continuations),
                               seed=int(self.cfg.seed) * 1_000_003 + int(global_step))  # fmt: skip
        probe = VarianceAnatomy(self.cfg.env, self.cfg.learner, self.policy, self.value, self.estimator, config)
        try:
            result = probe.measure(normalizer_state)
        finally:
            probe.close()
        logging.getLogger("rl_relax").info(
            "variance anatomy at step %d: %d env steps, %.1f s", global_step, result.env_steps, result.seconds
        )
        return result.scalars()


# ----------------------------------------------------------------------------------------- the entry point
def load_policy_at(run_or_checkpoint: Path, step: int | None):
    """(trainer, checkpoint path or None) with the run's policy, V and control variate at ``step``.

    ``step`` None: the latest checkpoint; 0: the run's initial parameters (rebuilt from its config and
    seed, as training built them); otherwise the checkpoint of that step. Nothing is written.
    """
    from omegaconf import OmegaConf

    from rl_relax import checkpoint as ckpt
    from rl_relax.agent import resolve_checkpoint
    from rl_relax.errors import CheckpointError
    from rl_relax.trainer import Trainer

    latest = resolve_checkpoint(Path(run_or_checkpoint))
    path = latest
    if step is not None and step != ckpt.checkpoint_step(latest):
        path = ckpt.checkpoint_path(latest.parent, step) if step else latest
        if step and not path.is_file():
            have = ", ".join(str(ckpt.checkpoint_step(p)) for p in ckpt.list_checkpoints(latest.parent))
            raise CheckpointError(f"{latest.parent} has no checkpoint of step {step} (it has: {have}). "
                                  "Fix: pick one of those steps, or --steps latest.")  # fmt: skip
    payload = ckpt.load_checkpoint(path)
    cfg = OmegaConf.create(payload["config_yaml"])
    trainer = Trainer(cfg, latest.parent.parent)
    if step == 0:
        return trainer, None
    trainer.restore(payload, path)
    return trainer, path


def _steps_of(run_or_checkpoint: Path, choice: list[str], initial: bool) -> list[int | None]:
    from rl_relax import checkpoint as ckpt
    from rl_relax.agent import resolve_checkpoint

    latest = resolve_checkpoint(Path(run_or_checkpoint))
    if choice == ["latest"]:
        steps: list[int | None] = [ckpt.checkpoint_step(latest)]
    elif choice == ["all"]:
        steps = [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(latest.parent)]
    else:
        steps = [int(s) for s in choice]
    return ([0] if initial else []) + steps


def main(argv: list[str] | None = None) -> int:
    """``python -m rl_relax.variance <run dir or checkpoint> [--steps ...] [--initial] [--states M] ...``"""
    import argparse
    import sys

    from rl_relax.anatomy import AnatomyConfig, VarianceAnatomy
    from rl_relax.anatomy_report import markdown_table, plot_stacked, write_csv
    from rl_relax.errors import RlRelaxError

    parser = argparse.ArgumentParser(
        prog="python -m rl_relax.variance",
        description="Variance anatomy of a run's policy gradient at chosen checkpoints: Sigma_s, Sigma_a, Sigma_tau "
        "for no baseline, the learned V, the estimator's full control variate and an exact V (rl_relax/anatomy.py).",
    )
    parser.add_argument("path", type=Path, help="run directory, checkpoint file, or a directory holding one run")
    parser.add_argument("--steps", nargs="+", default=["latest"],
                        help="checkpoints to measure: latest (default), all, or their env steps")  # fmt: skip
    parser.add_argument("--initial", action="store_true", help="also measure the run's initial policy (step 0)")
    parser.add_argument("--states", type=int, default=64, help="M sampled states (default 64)")
    parser.add_argument("--actions", type=int, default=8, help="K actions per state (default 8)")
    parser.add_argument("--continuations", type=int, default=8, help="L continuations per action (default 8)")
    parser.add_argument("--burn-in", type=int, default=None,
                        help="B: each state's stream runs U[B, 2B) steps (default: the env's time limit)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="the probe's own seed (default 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: <run dir>/variance_anatomy/)")  # fmt: skip
    args = parser.parse_args(argv)
    config = AnatomyConfig(args.states, args.actions, args.continuations, args.burn_in, args.seed)
    rows, panels = [], []
    out = None
    try:
        try:
            steps = _steps_of(args.path, args.steps, args.initial)
        except ValueError:
            parser.exit(2, f"{parser.prog}: error: --steps takes latest, all or integers, got {args.steps}\n")
        config.check()
        for step in steps:
            trainer, path = load_policy_at(args.path, step)
            try:
                out = Path(args.out or trainer.run_dir / "variance_anatomy")
                probe = VarianceAnatomy(trainer.cfg.env, trainer.cfg.learner, trainer.policy, trainer.value,
                                        trainer.estimator, config)  # fmt: skip
                label = f"step {step if step is not None else trainer.global_step}"
                try:
                    result = probe.measure(trainer.env.normalizer_state(), _progress_printer(label))
                finally:
                    probe.close()
            finally:
                trainer.env.close()
            print(f"{label}: {result.env_steps:,} env steps, {result.seconds:.1f} s "
                  f"(M={config.num_states}, K={config.num_actions}, L={config.num_continuations})",
                  file=sys.stderr)  # fmt: skip
            step_rows = [{"step": trainer.global_step, "checkpoint": str(path) if path else "initial", **r}
                         for r in result.rows()]  # fmt: skip
            rows += step_rows
            panels.append((f"{trainer.cfg.env.id}, {trainer.estimator.name}, {label}", step_rows))
    except RlRelaxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "variance_anatomy.csv", ["step", "checkpoint"])
    table = markdown_table(rows, ["step"])
    (out / "variance_anatomy.md").write_text(
        "# Variance anatomy (per-step policy gradient, mean over policy parameters)\n\n"
        f"Command: `python -m rl_relax.variance {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n" + table
    )
    plot_stacked(panels, out / "variance_anatomy.png", "Where the policy gradient's variance comes from")
    print(table, end="")
    print(f"wrote {out / 'variance_anatomy.md'}, .csv and .png", file=sys.stderr)
    return 0


def _progress_printer(label: str):
    import sys

    interactive = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        if interactive:
            print(f"\r{label}: state {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
        elif done == total or done % max(1, total // 4) == 0:
            print(f"{label}: state {done}/{total}", file=sys.stderr, flush=True)

    return show


if __name__ == "__main__":
    import sys

    sys.exit(main())
