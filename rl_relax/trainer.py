"""The training run: build the parts from the config, collect and update, log, checkpoint, resume.

Data flows one way: config -> vector env -> rollout (the policy acts, noise stored) -> returns ->
estimator + learner update -> TensorBoard / checkpoint / summary.json.

Step accounting: every vector step counts ``env.num_envs`` env steps (including NEXT_STEP reset
slots, as stable-baselines3 counts). With episode batches (``learner.batch=episodes``) an update counts
the env steps it actually took, its episodes' lengths summed (reset steps excluded), so step counts,
logging and checkpoint cadences, episodes-to-solve steps and fps are in real env steps. Training stops
after the first update at which the count reaches ``total_timesteps``, so that is a lower bound exceeded
by less than one rollout (one batch of episodes).

Robustness (README "Checkpoints, resume"): the run holds an exclusive lock on its directory; stop
signals are checked once per update, then a checkpoint is written and ``summary.json`` says
``interrupted``; resuming takes the newest intact checkpoint (a corrupt one is moved aside),
refuses one of another env, seed or architecture, and applies the configured optimizer
hyperparameters to the restored optimizers; ``checkpoint.resume=false`` moves an earlier run's
files aside instead of mixing with them; re-running a finished run writes nothing.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from rl_relax import checkpoint as ckpt
from rl_relax.config import MAX_ROLLOUT, resolve_device, validate
from rl_relax.envs import VectorEnvHandle, make_vector_env, seed_vector_env, threshold_for
from rl_relax.errors import (
    CheckpointError,
    ConfigError,
    RlRelaxError,
    TrainingDivergedError,
    TrainingInterrupted,
)
from rl_relax.estimators.base import Estimator
from rl_relax.estimators.baseline import BaselineEstimator
from rl_relax.evaluation import PeriodicEvaluation
from rl_relax.learner import A2CLearner
from rl_relax.logger import Progress, TensorBoardLogger, run_hparams
from rl_relax.networks import env_time_limit, make_policy, make_value
from rl_relax.rollout import EpisodeCollector, RolloutBuffer, RolloutCollector, episode_capacity
from rl_relax.rundir import RunDirectoryLock, move_previous_run_aside, remove_stale_temporary_files
from rl_relax.signals import StopSignals
from rl_relax.variance import SampledVarianceProbe

log = logging.getLogger("rl_relax")


def signal_name(signum: int | None) -> str:
    try:
        return signal.Signals(signum).name
    except (ValueError, TypeError):
        return f"signal {signum}"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (environments are seeded at reset, env i with seed + i)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_estimator(estimator_cfg: DictConfig) -> Estimator:
    """Instantiate ``configs/estimator/<name>.yaml`` through its ``_target_``."""
    try:
        estimator = hydra.utils.instantiate(estimator_cfg, _convert_="all")
    except RlRelaxError:
        raise
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, InstantiationException) and exc.__cause__ is not None else exc
        if isinstance(cause, RlRelaxError):  # the estimator's own check already names the key and the fix
            raise type(cause)(str(cause)) from None
        detail = " ".join(str(cause).split()) or type(cause).__name__
        raise ConfigError(
            f"cannot build estimator {estimator_cfg.get('name')!r} from {estimator_cfg.get('_target_')!r}: "
            f"{type(cause).__name__}: {detail}. Fix: check the estimator.* values on the command line and in "
            f"configs/estimator/{estimator_cfg.get('name')}.yaml."
        ) from None
    if not isinstance(estimator, Estimator):
        raise ConfigError(f"estimator._target_ {estimator_cfg._target_!r} is not an rl_relax Estimator.")
    return estimator


def episode_batch_slots(env_cfg: DictConfig, episodes_per_update: int) -> int:
    """The slots of an episode batch's buffer (:func:`rl_relax.rollout.episode_capacity`): the env's time limit
    bounds every episode; an env without one, or a buffer too large, is a one-line :class:`ConfigError`."""
    time_limit = env_time_limit(env_cfg)
    if time_limit is None or time_limit < 1:
        raise ConfigError(
            f"learner.batch=episodes sizes its buffer by the env's time limit, and {env_cfg.id} has none (no "
            'max_episode_steps). Fix: give it one, e.g. env.make_kwargs="{max_episode_steps: 1000}", or '
            "learner.batch=steps."
        )
    slots = episode_capacity(time_limit, episodes_per_update)
    if slots > MAX_ROLLOUT:
        raise ConfigError(
            f"learner.episodes_per_update={episodes_per_update} episodes of up to {time_limit} steps need "
            f"{slots:,} slots, above the {MAX_ROLLOUT:,} a rollout buffer may hold. Fix: e.g. "
            "learner.episodes_per_update=1."
        )
    return slots


def write_json_atomic(path: Path, data: dict[str, Any], intact: Path | None = None) -> None:
    """Atomic, uniquely named temporary file; a full disk is a one-line :class:`StorageError`."""
    ckpt.write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode(), "summary", intact)


def _optimizer_states(tree: Any, prefix: str = "") -> dict[str, dict]:
    """Every torch optimizer state dict (``{"state", "param_groups"}``) nested in ``tree``, by path."""
    if not isinstance(tree, dict):
        return {}
    if "param_groups" in tree and "state" in tree:
        return {prefix: tree}
    found: dict[str, dict] = {}
    for key, value in tree.items():
        found.update(_optimizer_states(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def apply_configured_hyperparameters(loaded: dict[str, Any], fresh: dict[str, Any], path: Path) -> list[str]:
    """Write the configured optimizer hyperparameters (lr, betas, eps, alpha, ...) into the loaded
    optimizer states, in place, so that a resumed run uses what its command line says (and what
    its saved config records). ``fresh`` holds the same subtrees from optimizers just built from the
    config. Returns a description of each changed value."""
    changes: list[str] = []
    fresh_states = _optimizer_states(fresh)
    for name, state in _optimizer_states(loaded).items():
        new = fresh_states.get(name)
        if new is None:
            continue
        if len(state["param_groups"]) != len(new["param_groups"]):
            raise CheckpointError(
                f"checkpoint {path}: optimizer {name} has {len(state['param_groups'])} parameter groups, this run "
                f"{len(new['param_groups'])}. Fix: use the same config as the run that wrote it, or a new run "
                "directory."
            )
        for old_group, new_group in zip(state["param_groups"], new["param_groups"], strict=True):
            for key, value in new_group.items():
                if key == "params":
                    continue
                if old_group.get(key) != value:
                    changes.append(f"{name} {key} {old_group.get(key)!r} -> {value!r}")
                old_group[key] = value
    return changes


class Trainer:
    """One training run in ``run_dir``; resumes from ``run_dir/checkpoints`` when it can.

    ``overrides`` are the command-line overrides that define the run (Hydra's task overrides; the
    Python API passes its own): they become the run's TensorBoard hparams.
    """

    def __init__(
        self, cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None, device: torch.device | None = None
    ):
        validate(cfg)
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.overrides = list(overrides or [])
        self.ckpt_dir = self.run_dir / "checkpoints"
        torch.set_num_threads(int(cfg.torch_threads))
        if cfg.torch_deterministic:
            torch.use_deterministic_algorithms(True)
        if device is None:  # a seed group resolves its device once, for all its seeds
            self.device, device_reason = resolve_device(cfg.device)
            log.info("%s", device_reason)
        else:
            self.device = device
        seed_everything(int(cfg.seed))

        self.env = make_vector_env(cfg.env, reward_gamma=float(cfg.learner.gamma))
        try:
            self._build(cfg)
        except BaseException:
            self.env.close()
            raise

    def _build(self, cfg: DictConfig) -> None:
        envs = self.env.envs
        obs_space, action_space = envs.single_observation_space, envs.single_action_space
        obs_dim = int(np.prod(obs_space.shape))
        self.policy = make_policy(cfg.policy, obs_space, action_space).to(self.device)
        self.value = make_value(cfg.value, obs_space, cfg.env, float(cfg.learner.gamma)).to(self.device)
        self.estimator = make_estimator(cfg.estimator)
        self.estimator.bind(self.policy, obs_dim, action_space, time_limit=env_time_limit(cfg.env))
        self.estimator.to(self.device)
        self.learner = A2CLearner(
            self.policy, self.value, self.estimator, cfg.learner, variance_decay=float(cfg.variance.ema_decay),
            value_cfg=cfg.value,
        )  # fmt: skip

        # Acting noise comes from its own generator, seeded from the run seed and checkpointed.
        self.rng = np.random.default_rng(int(cfg.seed))
        self.collector = self._make_collector(self.env, self.rng)
        self.buffer = self.collector.buffer
        self.threshold = threshold_for(cfg.env)
        self.stop_when_solved = bool(cfg.stop_when_solved)
        self._probe: SampledVarianceProbe | None = None
        self._evaluation: PeriodicEvaluation | None = None
        window = int(cfg.env.solved_window)
        self.recent_returns: deque[float] = deque(maxlen=window)
        self.recent_lengths: deque[int] = deque(maxlen=window)
        self.global_step = self.updates = self.episodes = 0
        self._saved_step: int | None = None  # step of the newest checkpoint of this run
        self.episodes_to_solve: int | None = None
        self.steps_to_solve: int | None = None
        self.wall_time_before = 0.0  # wall time of earlier sessions of this run (resume)
        # Seconds spent measuring (variance probes) and evaluating, over the whole run: not training, so
        # fps leaves them out. _side_s_session: the part spent in this process.
        self.probe_time_s = self.eval_time_s = self._side_s_session = 0.0
        # Sum and count of log(grad/variance_ratio_sampled) over the run: the hparams metric.
        self.log_ratio_sum, self.log_ratio_count = 0.0, 0
        modules = {"policy": self.policy, "value": self.value, "estimator": self.estimator}
        network = {f"{name}.activation": str(cfg[name].activation) for name in modules if "activation" in cfg[name]}
        network["frozen parameters"] = sorted(
            f"{name}.{param}" for name, module in modules.items()
            for param, p in module.named_parameters() if not p.requires_grad
        )  # fmt: skip
        # The identity of the run a checkpoint belongs to: resuming with another value is refused.
        self.meta = {
            "env_id": self.cfg.env.id,
            "estimator": self.estimator.name,
            "seed": int(cfg.seed),
            "observation_shape": list(obs_space.shape),
            "action_space": str(action_space),
            "architecture": ckpt.parameter_shapes(**modules),
            "network": network,
            "optimizer": str(cfg.learner.optimizer),
        }

    # ----------------------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "format_version": ckpt.FORMAT_VERSION,
            "meta": self.meta,
            "config_yaml": self._config_yaml(),
            "policy": self.policy.state_dict(),
            "value": self.value.state_dict(),
            "estimator": self.estimator.state_dict(),
            "estimator_extra": self.estimator.extra_state(),
            "learner": self.learner.state_dict(),
            "normalizers": self.env.normalizer_state(),
            "rng": ckpt.rng_state(),
            "acting_rng": self.rng.bit_generator.state,
            "counters": {
                "global_step": self.global_step,
                "updates": self.updates,
                "episodes": self.episodes,
                "episodes_to_solve": self.episodes_to_solve,
                "steps_to_solve": self.steps_to_solve,
                "recent_returns": list(self.recent_returns),
                "recent_lengths": list(self.recent_lengths),
                "wall_time_s": self._wall_time(),
                "probe_time_s": self.probe_time_s,
                "eval_time_s": self.eval_time_s,
                "log_ratio_sum": self.log_ratio_sum,
                "log_ratio_count": self.log_ratio_count,
            },
        }

    def _config_yaml(self) -> str:
        """The resolved config as YAML, rendered once (it does not change during a run; ~7 ms per rendering)."""
        if getattr(self, "_config_yaml_text", None) is None:
            self._config_yaml_text = OmegaConf.to_yaml(self.cfg, resolve=True)
        return self._config_yaml_text

    def restore(self, payload: dict[str, Any], path: Path) -> None:
        ckpt.check_compatible(payload, self.meta, path)
        fresh = {"learner": self.learner.state_dict(), "estimator_extra": self.estimator.extra_state()}
        try:
            changes = apply_configured_hyperparameters(payload, fresh, path)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ckpt.CheckpointError(
                f"checkpoint {path} holds an optimizer state that does not fit this run ({exc}). "
                "Fix: use the same config as the run that wrote it, or a new run directory (hydra.run.dir=...)."
            ) from None
        for change in changes:
            log.info("resume: %s (the configured value)", change)
        try:
            self.policy.load_state_dict(payload["policy"])
            self.value.load_state_dict(payload["value"])
            self.estimator.load_state_dict(payload["estimator"])
            self.estimator.load_extra_state(payload["estimator_extra"])
            self.learner.load_state_dict(payload["learner"])
            self.env.load_normalizer_state(payload["normalizers"])
            ckpt.set_rng_state(payload["rng"])
            self.rng.bit_generator.state = payload["acting_rng"]
            counters = payload["counters"]
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise ckpt.CheckpointError(
                f"checkpoint {path} is incomplete or does not fit this run ({str(exc).splitlines()[0]}). "
                "Fix: delete it to resume from the previous checkpoint, or use a new run directory."
            ) from None
        self.global_step = int(counters["global_step"])
        self.updates = int(counters["updates"])
        self.episodes = int(counters["episodes"])
        self.episodes_to_solve = counters["episodes_to_solve"]
        self.steps_to_solve = counters["steps_to_solve"]
        self.recent_returns.extend(counters["recent_returns"])
        self.recent_lengths.extend(counters["recent_lengths"])
        self.wall_time_before = float(counters["wall_time_s"])
        # .get: checkpoints written before these counters existed resume with zeros.
        self.probe_time_s = float(counters.get("probe_time_s", 0.0))
        self.eval_time_s = float(counters.get("eval_time_s", 0.0))
        self.log_ratio_sum = float(counters.get("log_ratio_sum", 0.0))
        self.log_ratio_count = int(counters.get("log_ratio_count", 0))
        self._saved_step = self.global_step

    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current state; refuse (diverged) if any of it is non-finite."""
        state = self.state()
        bad = ckpt.non_finite_entries(state)
        if bad:
            kept = ckpt.latest_checkpoint(self.ckpt_dir)
            if any(b.startswith(("estimator.", "estimator_extra.")) for b in bad):
                fix = (f"the control variate diverged: lower estimator.cv_lr (now {self.cfg.estimator.get('cv_lr')}) "
                       "or use estimator=baseline")  # fmt: skip
            else:
                fix = (f"lower learner.lr (now {self.cfg.learner.lr}) or keep learner.max_grad_norm set "
                       "(gradient clipping)")  # fmt: skip
            raise TrainingDivergedError(
                f"non-finite values at environment step {self.global_step} in {', '.join(bad[:3])}"
                f"{' and more' if len(bad) > 3 else ''}: no checkpoint written, the last good one "
                f"({kept if kept is not None else 'none yet'}) is kept. Fix: {fix}."
            )
        path = ckpt.save_checkpoint(state, self.ckpt_dir, self.global_step, self.cfg.checkpoint.keep_last)
        self._saved_step = self.global_step
        self.write_summary(finished=False)
        return path

    # ----------------------------------------------------------------------------- bookkeeping
    def _wall_time(self) -> float:
        return self.wall_time_before + (time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0)

    def _record_episodes(self, returns: list[float], lengths: list[int]) -> None:
        window = self.recent_returns.maxlen
        for ret, length in zip(returns, lengths, strict=True):
            self.episodes += 1
            self.recent_returns.append(float(ret))
            self.recent_lengths.append(int(length))
            if (
                self.episodes_to_solve is None
                and self.threshold is not None
                and len(self.recent_returns) == window
                and sum(self.recent_returns) / window >= self.threshold
            ):
                self.episodes_to_solve, self.steps_to_solve = self.episodes, self.global_step
                log.info(
                    "solved: mean return over %d episodes >= %s after %d episodes (%d steps)",
                    window, self.threshold, self.episodes, self.global_step,
                )  # fmt: skip

    def mean_return(self) -> float | None:
        return sum(self.recent_returns) / len(self.recent_returns) if self.recent_returns else None

    def mean_variance_ratio(self) -> float | None:
        """Geometric mean of the run's ``grad/variance_ratio_sampled`` measurements (None if none)."""
        return math.exp(self.log_ratio_sum / self.log_ratio_count) if self.log_ratio_count else None

    def summary(self, finished: bool, status: str = "ok") -> dict[str, Any]:
        session_steps = self.global_step - self._start_step
        if session_steps > 0:
            fps = self._fps() or None
        else:  # nothing trained in this process: the whole run's training rate, not 0
            training_s = self.wall_time_before - self.probe_time_s - self.eval_time_s
            fps = self.global_step / training_s if training_s > 0 else None
        return {
            "env_id": self.cfg.env.id,
            "estimator": self.estimator.name,
            # null for an unbiased estimator; else what makes it biased (e.g. the released code's RELAX sampler)
            "estimator_bias": getattr(self.estimator, "bias_note", None),
            "seed": int(self.cfg.seed),
            "total_timesteps": int(self.cfg.total_timesteps),
            "timesteps": self.global_step,
            "updates": self.updates,
            "episodes": self.episodes,
            "solved_threshold": self.threshold,
            "solved_window": int(self.cfg.env.solved_window),
            "episodes_to_solve": self.episodes_to_solve,
            "steps_to_solve": self.steps_to_solve,
            "final_return_mean": self.mean_return(),
            "final_length_mean": (sum(self.recent_lengths) / len(self.recent_lengths)) if self.recent_lengths else None,
            "fps": fps,  # training only: probe and evaluation time excluded
            "wall_time_s": self._wall_time(),
            "probe_time_s": self.probe_time_s,
            "eval_time_s": self.eval_time_s,
            "variance_ratio_mean": self.mean_variance_ratio(),
            "device": str(self.device),
            "finished": finished,
            "status": status,
            "run_dir": str(self.run_dir),
        }

    def write_summary(self, finished: bool, status: str = "ok") -> dict[str, Any]:
        data = self.summary(finished, status)
        write_json_atomic(self.run_dir / "summary.json", data, ckpt.latest_checkpoint(self.ckpt_dir))
        return data

    # ----------------------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        """Train to ``total_timesteps`` (resuming if possible); return the summary.

        Raises :class:`TrainingInterrupted` after a stop signal (a checkpoint is written first),
        :class:`TrainingDivergedError`, :class:`StorageError`, or another :class:`RlRelaxError`.
        """
        self._t0, self._start_step = time.perf_counter(), self.global_step
        lock = RunDirectoryLock(self.run_dir)
        try:
            with StopSignals() as stop:
                lock.acquire()
                return self._run(stop)
        finally:
            lock.release()
            self.env.close()
            if self._probe is not None:
                self._probe.close()
            if self._evaluation is not None:
                self._evaluation.close()

    def _resume_or_start(self) -> Path | None:
        """Restore the newest intact checkpoint (resume=true) or move an earlier run aside (resume=false)."""
        remove_stale_temporary_files(self.run_dir)
        if not self.cfg.checkpoint.resume:
            moved = move_previous_run_aside(self.run_dir)
            if moved is not None:
                log.warning("checkpoint.resume=false: moved the earlier run's checkpoints, TensorBoard events and "
                            "summary.json to %s; this run starts at step 0", moved)  # fmt: skip
            return None
        found = ckpt.load_latest_valid(self.ckpt_dir, map_location=self.device)
        if found is None:
            return None
        latest, payload = found
        self.restore(payload, latest)
        log.info("resumed from %s at step %d (%d episodes)", latest, self.global_step, self.episodes)
        return latest

    def _already_finished(self) -> dict[str, Any]:
        """A finished run re-run: write nothing (no TensorBoard event, summary.json untouched)."""
        path = self.run_dir / "summary.json"
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            summary = None
        if not (isinstance(summary, dict) and summary.get("finished") and summary.get("timesteps") == self.global_step):
            self._start_step = self.global_step
            summary = self.write_summary(finished=True)  # the process stopped between checkpoint and summary
        log.info("the run in %s already finished at step %d: nothing to do", self.run_dir, self.global_step)
        return summary

    def _run(self, stop: StopSignals) -> dict[str, Any]:
        cfg = self.cfg
        latest = self._resume_or_start()
        total = int(cfg.total_timesteps)
        if latest is not None and (self.global_step >= total or self.stop_requested()):
            return self._already_finished()
        # Resumed runs reset their envs with a seed derived from the step, so they stay reproducible.
        self.collector.start(seed_vector_env(self.env, int(cfg.seed) + self.global_step))

        tb = self.open_tensorboard(resumed=latest is not None)
        try:
            finished = self._loop(tb, stop, total, fresh=latest is None)
        except TrainingDivergedError:
            self.write_summary(finished=False, status="diverged")
            raise
        except OSError as exc:  # e.g. TensorBoard's writer or the env hit a full disk
            where = Path(exc.filename) if getattr(exc, "filename", None) else self.run_dir
            raise ckpt.storage_error(where, exc, "to", ckpt.latest_checkpoint(self.ckpt_dir)) from None
        finally:
            tb.close()
        if not finished:
            return self._interrupted(stop)
        summary = self.write_summary(finished=True)
        log.info(
            "done: %d steps, %d episodes, mean return %s, episodes to solve %s, %.0f fps",
            summary["timesteps"], summary["episodes"], summary["final_return_mean"],
            summary["episodes_to_solve"], summary["fps"] or 0.0,
        )  # fmt: skip
        return summary

    def open_tensorboard(self, resumed: bool) -> TensorBoardLogger:
        """The run's TensorBoard writer, events a crashed process wrote after the checkpoint purged."""
        # Events a crashed process wrote after the checkpoint (steps > S) are purged; the point at S stays.
        # A fresh start purges everything an earlier attempt logged before its first checkpoint. Every session
        # writes its SessionLog.START, the first one too: TensorBoard's server takes a run's first START for its
        # beginning and purges only at later ones.
        purge_step = self.global_step + 1 if resumed else 0
        try:
            tb = TensorBoardLogger(self.run_dir, purge_step=purge_step)
            self._hparams = run_hparams(self.cfg, self.overrides)
        except OSError as exc:
            raise ckpt.storage_error(self.run_dir / "events.out.tfevents.*", exc, "TensorBoard events") from None
        return tb

    def _interrupted(self, stop: StopSignals) -> dict[str, Any]:
        """After a stop signal: checkpoint (unless this step has one), mark summary.json, raise."""
        assert stop.signum is not None
        if self._saved_step != self.global_step and self.global_step > 0:
            self.save_checkpoint()
        self.write_summary(finished=False, status="interrupted")
        name = signal_name(stop.signum)
        saved = ckpt.latest_checkpoint(self.ckpt_dir)
        exc = TrainingInterrupted(
            f"stopped by {name} at step {self.global_step:,} of {int(self.cfg.total_timesteps):,}; "
            f"checkpoint {saved if saved is not None else '(none: no update finished)'}",
            stop.signum,
        )
        exc.stop_signals = stop  # type: ignore[attr-defined]  (train.main hands the signal on, e.g. to submitit)
        raise exc

    def _loop(self, tb: TensorBoardLogger, stop: StopSignals, total: int, fresh: bool) -> bool:
        """The training loop; True when it ran to the end (or solved), False when a stop signal came."""
        cfg = self.cfg
        if fresh:
            tb.config(cfg, self._config_yaml())
            tb.hparams_start(self._hparams)  # once per run: a resumed session continues the same session
        steps_per_update = self.buffer.num_steps * self.buffer.num_envs  # with episode batches: each counts its own
        log_every = max(1, math.ceil(cfg.logging.interval_steps / steps_per_update))
        episode_batches = isinstance(self.collector, EpisodeCollector)
        log_interval = int(cfg.logging.interval_steps)
        ckpt_interval = int(cfg.checkpoint.interval_steps)
        next_ckpt = (self.global_step // ckpt_interval + 1) * ckpt_interval
        variance_interval = int(cfg.variance.interval_steps)
        next_variance = (self.global_step // variance_interval + 1) * variance_interval if variance_interval else None
        anatomy = None  # built once, not looked up in the config every update
        if int(cfg.variance.get("anatomy_interval_steps", 0)):
            from rl_relax.variance import AnatomyProbe

            anatomy = AnatomyProbe(cfg, self.policy, self.value, self.estimator)
        eval_interval = int(cfg.eval.interval_steps)
        next_eval = (self.global_step // eval_interval + 1) * eval_interval if eval_interval else None
        progress = Progress(total, cfg.logging.progress, cfg.logging.progress_interval_s)
        linear_lr = self.learner.uses_progress  # a schedule (learner's or estimator's) to advance
        self.learner.set_progress(self.global_step / total)
        sums = {"train/policy_loss": 0.0, "train/value_loss": 0.0, "train/grad_norm": 0.0, "grad/pg_norm": 0.0}
        count = 0
        self._t0, self._start_step, self._side_s_session = time.perf_counter(), self.global_step, 0.0
        log.info("training %s with %s for %d steps -> %s", cfg.env.id, self.estimator.name, total, self.run_dir)
        try:
            while self.global_step < total:
                if stop.requested:  # checked once per update: the update in flight is never cut short
                    log.warning("received %s: stopping at step %d after writing a checkpoint",
                                signal_name(stop.signum), self.global_step)  # fmt: skip
                    if count:  # the updates since the last point get one at the stop step
                        self._log(tb, {k: v / count for k, v in sums.items()}, None)
                    return False
                if linear_lr:
                    self.learner.set_progress(self.global_step / total)
                episodes = self.collector.collect()
                if episode_batches:  # the steps this batch of episodes took; logged when a multiple is crossed
                    steps_per_update = episodes.env_steps
                    self.global_step += steps_per_update
                    log_due = self.global_step // log_interval > (self.global_step - steps_per_update) // log_interval
                else:
                    self.global_step += steps_per_update
                    log_due = (self.updates + 1) % log_every == 0
                self.updates += 1
                if episodes.returns:
                    self._record_episodes(episodes.returns, episodes.lengths)
                solved_now = self.stop_requested()
                last = self.global_step >= total or solved_now
                log_now = last or stop.requested or log_due
                stats = self.learner.update(self.buffer, self.global_step, diagnostics=log_now)
                sums["train/policy_loss"] += stats.policy_loss
                sums["train/value_loss"] += stats.value_loss
                sums["train/grad_norm"] += stats.grad_norm
                sums["grad/pg_norm"] += stats.pg_norm
                count += 1
                if log_now:
                    self._log(tb, {k: v / count for k, v in sums.items()}, stats.entropy)
                    sums = dict.fromkeys(sums, 0.0)
                    count = 0
                if next_variance is not None and self.global_step >= next_variance:
                    started = time.perf_counter()
                    probe = self._variance_probe()
                    measured = probe.measure(int(cfg.variance.num_batches), self.env.normalizer_state())
                    if "grad/variance_ratio_sampled" in measured:
                        self.log_ratio_sum += math.log(measured["grad/variance_ratio_sampled"])
                        self.log_ratio_count += 1
                    measured["time/probe_s"] = self._side_time(started, "probe")
                    tb.scalars(measured, self.global_step)
                    next_variance = (self.global_step // variance_interval + 1) * variance_interval
                if anatomy is not None and anatomy.due(self.global_step, steps_per_update):  # rl_relax/anatomy.py
                    started = time.perf_counter()
                    measured = anatomy.measure(self.env.normalizer_state(), self.global_step)
                    measured["time/anatomy_s"] = self._side_time(started, "probe")
                    tb.scalars(measured, self.global_step)
                if next_eval is not None and self.global_step >= next_eval:
                    started = time.perf_counter()
                    evaluated = self._periodic_evaluation().evaluate(self.env.normalizer_state())
                    evaluated["time/eval_s"] = self._side_time(started, "eval")
                    tb.scalars(evaluated, self.global_step)
                    next_eval = (self.global_step // eval_interval + 1) * eval_interval
                if self.global_step >= next_ckpt or last:
                    self.save_checkpoint()
                    next_ckpt = (self.global_step // ckpt_interval + 1) * ckpt_interval
                if progress.due():  # its arguments are computed only when the line is drawn
                    progress.update(self.global_step, self._fps(), self.mean_return())
                if solved_now:
                    log.info("stopping early: solved (stop_when_solved=true)")
                    break
            progress.update(self.global_step, self._fps(), self.mean_return(), force=True)
        finally:
            progress.close()
        tb.hparams_end(self._final_metrics(), self.global_step)
        return True

    def _final_metrics(self) -> dict[str, float]:
        """The HParams tab's metrics: final return, episodes to solve, mean same-policy variance ratio."""
        metrics = {
            "hparams/final_return": self.mean_return(),
            "hparams/episodes_to_solve": self.episodes_to_solve,
            "hparams/variance_ratio": self.mean_variance_ratio(),
        }
        return {tag: float(value) for tag, value in metrics.items() if value is not None}

    def _side_time(self, started: float, kind: str) -> float:
        """Book the seconds since ``started`` as probe or evaluation time (left out of fps); return them."""
        seconds = time.perf_counter() - started
        self._side_s_session += seconds
        if kind == "eval":
            self.eval_time_s += seconds
        else:
            self.probe_time_s += seconds
        return seconds

    def _make_collector(self, env: VectorEnvHandle, rng: np.random.Generator) -> RolloutCollector:
        """A rollout buffer of the run's shape, storing the noise the estimator asks for, and its collector."""
        obs_dim = int(np.prod(env.envs.single_observation_space.shape))
        noise_shapes = {k: self.policy.noise_shapes[k] for k in self.estimator.noise_keys}
        noise_shapes.update(self.estimator.extra_noise_shapes())
        extra = self.estimator.extra_noise if self.estimator.extra_noise_shapes() else None
        if self.cfg.learner.get("batch", "steps") == "episodes":
            episodes = int(self.cfg.learner.episodes_per_update)
            buffer = RolloutBuffer(episode_batch_slots(self.cfg.env, episodes), 1, obs_dim, self.policy, noise_shapes,
                                   self.device)  # fmt: skip
            return EpisodeCollector(env, self.policy, buffer, rng, self.estimator.noise_keys, extra, episodes)
        buffer = RolloutBuffer(int(self.cfg.learner.num_steps), int(self.cfg.env.num_envs), obs_dim, self.policy,
                               noise_shapes, self.device)  # fmt: skip
        return RolloutCollector(env, self.policy, buffer, rng, self.estimator.noise_keys, extra)

    def _variance_probe(self) -> SampledVarianceProbe:
        """Built on first use: a copy of the env with its own collector and noise stream."""
        if self._probe is None:
            cfg = self.cfg
            env = make_vector_env(cfg.env, reward_gamma=float(cfg.learner.gamma))
            collector = self._make_collector(env, np.random.default_rng([int(cfg.seed), 1]))
            collector.start(seed_vector_env(env, int(cfg.seed) + 1_000_003))
            estimators = {"estimator": self.estimator}
            if not isinstance(self.estimator, BaselineEstimator):
                estimators["baseline"] = BaselineEstimator(name="baseline")
            self._probe = SampledVarianceProbe(env, collector, self.learner, estimators)
        return self._probe

    def _periodic_evaluation(self) -> PeriodicEvaluation:
        """Built on first use: its own env (rl_relax/evaluation.py)."""
        if self._evaluation is None:
            self._evaluation = PeriodicEvaluation(self.cfg, self.policy, int(self.cfg.eval.episodes))
        return self._evaluation

    def stop_requested(self) -> bool:
        return self.stop_when_solved and self.episodes_to_solve is not None

    def _fps(self) -> float:
        """Env steps per second of training in this process: probe and evaluation seconds left out."""
        elapsed = time.perf_counter() - self._t0 - self._side_s_session
        return (self.global_step - self._start_step) / elapsed if elapsed > 0 else 0.0

    def _log(self, tb: TensorBoardLogger, means: dict[str, float], entropy: float | None) -> None:
        """Write the scalars: loss and gradient-norm means since the last write, the rest as of now."""
        scalars = {
            "train/explained_variance": self.learner.explained_variance(),
            "grad/log_variance": self.learner.grad_variance.log_variance(),
            **self.learner.estimator_metrics,
        }
        if hasattr(self.policy, "log_std"):
            scalars["train/std"] = self.policy.log_std.exp().mean().item()
        self.log_scalars(tb, means, entropy, scalars)

    def log_scalars(self, tb: TensorBoardLogger, means: dict[str, float], entropy: float | None, learner: dict) -> None:
        """Write ``means`` (since the last write), the learner's scalars and the run's counters, as of now."""
        scalars = dict(means)
        if entropy is not None:
            scalars["train/entropy"] = entropy
        scalars["train/learning_rate"] = self.learner.learning_rate
        scalars.update(learner)
        if self.recent_returns:
            scalars["rollout/ep_rew_mean"] = self.mean_return()
            scalars["rollout/ep_len_mean"] = sum(self.recent_lengths) / len(self.recent_lengths)
        scalars["rollout/episodes"] = self.episodes
        if self.threshold is not None:
            scalars["rollout/solved"] = float(self.episodes_to_solve is not None)
        scalars["time/fps"] = self._fps()
        tb.scalars(scalars, self.global_step)
