"""Entry point: ``python -m rl_relax.train env=CartPole estimator=baseline seed=3``.

Hydra composes ``configs/train.yaml`` with the ``env`` and ``estimator`` groups and command-line
overrides, creates the run directory, and calls :func:`main`. Errors in the user's input print one
message naming the fix and exit non-zero (codes in :mod:`rl_relax.errors`), without a traceback. In
a multirun the failed job is reported to Hydra instead, so the sweep's other jobs still run (the
sweep exits non-zero at the end).

A stop signal (SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP) makes the run checkpoint after the current
update, mark ``summary.json`` ``interrupted``, log the command that resumes it, and exit with
128 + the signal number. Under Hydra's submitit launcher the signal is then handed to submitit,
which requeues the job; the requeued job resumes from that checkpoint.
"""

from __future__ import annotations

import importlib
import logging
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rl_relax.errors import MissingExtraError, RlRelaxError, TrainingInterrupted
from rl_relax.trainer import Trainer

log = logging.getLogger("rl_relax")


def train(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> dict:
    """Train (or resume) the run described by ``cfg`` in ``run_dir``; return its summary.

    ``overrides``: the overrides that define the run (its TensorBoard hparams), e.g. Hydra's task overrides.
    """
    if int(cfg.get("num_seeds", 1)) > 1:
        from rl_relax.seed_group import SeedGroupTrainer

        summaries = SeedGroupTrainer(cfg, run_dir, overrides).run()
        return {"num_seeds": len(summaries), "runs": summaries}
    trainer = Trainer(cfg, run_dir, overrides)
    return trainer.run()


def objective(summary: dict, kind: str) -> float:
    """The number a sweeper maximises: ``final_return`` or ``neg_episodes_to_solve``.

    For a group of seeds (``num_seeds`` > 1), the mean over its seeds.

    An unsolved run counts as solving one window after the episodes it ran (a penalty that keeps
    the ordering: solved runs always rank above unsolved ones of the same length).
    """
    if "runs" in summary:
        values = [objective(run, kind) for run in summary["runs"]]
        return sum(values) / len(values)
    if kind == "final_return":
        value = summary["final_return_mean"]
        return float("-inf") if value is None else float(value)
    if kind == "neg_episodes_to_solve":
        solved = summary["episodes_to_solve"]
        return -float(solved if solved is not None else summary["episodes"] + summary["solved_window"])
    raise RlRelaxError(f"sweep_objective={kind!r} must be final_return or neg_episodes_to_solve.")


def resume_command(run_dir: Path) -> str:
    """The command line that continues this run: the same overrides, in the same run directory."""
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # not under Hydra (e.g. called from Python)
        overrides = []
    args = [o for o in overrides if not o.startswith("hydra.run.dir=")] + [f"hydra.run.dir={run_dir}"]
    return "python -m rl_relax.train " + " ".join(shlex.quote(a) for a in args)


@hydra.main(version_base="1.3", config_path="pkg://rl_relax.configs", config_name="train")
def main(cfg: DictConfig) -> float:
    """Train one run; return the sweep objective (Hydra sweepers such as Optuna maximise it)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        overrides = list(HydraConfig.get().overrides.task)
        return objective(train(cfg, run_dir, overrides), str(cfg.sweep_objective))
    except TrainingInterrupted as exc:
        stop = getattr(exc, "stop_signals", None)
        if stop is not None and stop.successor() is not None:
            log.warning("%s; handing %s to the job scheduler (submitit requeues the job, which resumes from it)",
                        exc, exc.signal_name)  # fmt: skip
            stop.hand_over()  # submitit's handler requeues and exits; a handler that returns falls through
        else:
            log.warning("%s. Resume with: %s", exc, resume_command(run_dir))
        sys.exit(exc.exit_code)  # in a multirun too: a stop signal stops the whole sweep
    except RlRelaxError as exc:
        log.error("error: %s", exc)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # SystemExit would end the whole sweep (or kill a joblib worker): an exception is recorded
            # by Hydra as this job's failure, and the remaining jobs run.
            raise JobFailed(f"{exc} (run directory: {run_dir})") from None
        sys.exit(exc.exit_code)


class JobFailed(Exception):
    """A sweep job that stopped with an RlRelaxError (its message is already in the job's log)."""


# Hydra plugin packages behind the launcher / sweeper options, and the extra that installs each.
SWEEP_PLUGINS: dict[str, tuple[str, str, str]] = {
    "hydra/launcher=local": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher", "cluster"),
    "hydra/launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher", "cluster"),
    "hydra/launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "cluster"),
    "hydra/launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "cluster"),
    "hydra/launcher=submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "cluster"),
    "hydra/sweeper=optuna": ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper", "optuna"),
}


def missing_sweep_extra(argv: list[str]) -> str | None:
    """The one-line error for a launcher or sweeper on the command line whose plugin is not installed
    (instead of Hydra's "Could not find 'hydra/sweeper/optuna'"), or None when all are there."""
    for arg in argv:
        choice = arg.lstrip("+~")
        if choice.startswith("override "):
            choice = choice[len("override ") :]
        if choice not in SWEEP_PLUGINS:
            continue
        module, package, extra = SWEEP_PLUGINS[choice]
        try:
            importlib.import_module(module)
        except ImportError:
            return (f"{choice} needs {package}, which is not installed (the {extra} extra). "
                    f'Fix: pip install "rl-relax[{extra}]" (from a clone: pip install -e ".[{extra}]").')  # fmt: skip
    return None


def cli() -> None:
    """``python -m rl_relax.train``: a missing sweep extra is one line (exit 2), then Hydra runs :func:`main`."""
    problem = missing_sweep_extra(sys.argv[1:])
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(MissingExtraError.exit_code)
    main()


if __name__ == "__main__":
    cli()
