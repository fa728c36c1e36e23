"""Many seeds in one process: S independent agents trained together, ``num_seeds=S``.

Seeds ``seed, seed + 1, ..., seed + S - 1`` each get what a single run with that seed gets (the same
initial networks, acting-noise generator, environments seeded from the seed, normalisation
statistics, optimizer and control-variate state) and write what a single run writes, in their own
run directory ``<run dir>/seed<k>``: TensorBoard events, ``summary.json``, checkpoints in the
single-run format. ``summarize``, ``evaluate``, ``load_agent`` and TensorBoard see S ordinary runs.

What is shared is the *work*: every seed's networks are stacked on a leading seed dimension
(:mod:`rl_relax.seed_stack`), so acting is one batched NumPy forward pass and an update is one
batched A2C update (:mod:`rl_relax.learner`) for all seeds. The small-MLP update is dominated by
per-operation overhead, which is now paid once for S seeds. Nothing mixes seeds: every operation
acts on each seed's slice alone, and the loss differentiated is the sum of the seeds' losses.

Environments: when the env has a native vector implementation (CartPole) and no normalisation
wrapper, the S N sub-environments are one vector env (stepping it costs about as much as stepping
N; stepping S copies would cost S times as much). Its sub-environments share one random stream for
their initial states, so seed k's *environment* stream differs from a single run's, although it has
the same distribution. Otherwise each seed steps the vector env a single run with its seed would
build (its own wrappers and normalisation statistics, seeded exactly alike).

Per seed, like a single run: a seed whose loss (or control-variate objective) becomes non-finite is
stopped, its ``summary.json`` says ``diverged``, and the others go on; with ``stop_when_solved`` a
solved seed stops and the others go on. A stop signal checkpoints every seed. Resume restarts the
whole group from its seeds' checkpoints (each seed's newest; if a kill fell between two seeds'
checkpoints, the step they all have).

Implementation: one :class:`~rl_relax.trainer.Trainer` per seed does the seed's bookkeeping (run
directory, lock, logging, checkpoint format, probes, evaluation, summary); before it writes or
measures anything, the seed's slice of the stacked state is copied into its modules.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from rl_relax import checkpoint as ckpt
from rl_relax.config import resolve_device, validate
from rl_relax.envs import VectorEnvHandle, make_vector_env, resolve_spec, seed_vector_env
from rl_relax.errors import CheckpointError, ConfigError, TrainingDivergedError, TrainingInterrupted
from rl_relax.learner import A2CLearner
from rl_relax.logger import Progress, TensorBoardLogger
from rl_relax.networks import Policy
from rl_relax.rollout import EpisodeRecord, RolloutBuffer
from rl_relax.seed_stack import copy_seed_from, copy_seed_to, stack_modules
from rl_relax.signals import StopSignals
from rl_relax.trainer import Trainer, signal_name

log = logging.getLogger("rl_relax")

ExtraNoiseFn = Callable[[np.ndarray, np.random.Generator], dict[str, np.ndarray]]


def seed_run_dir(run_dir: Path, seed: int) -> Path:
    """Seed ``seed``'s run directory inside a group's run directory."""
    return Path(run_dir) / f"seed{seed}"


def group_seeds(cfg: DictConfig) -> list[int]:
    """The seeds of a ``num_seeds=S`` run: seed, seed + 1, ..., seed + S - 1."""
    return [int(cfg.seed) + k for k in range(int(cfg.num_seeds))]


def write_run_config(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> None:
    """``.hydra/config.yaml`` and ``overrides.yaml``, as Hydra writes them for one run (``summarize`` reads them)."""
    hydra_dir = Path(run_dir) / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("config.yaml", OmegaConf.to_yaml(cfg)), ("overrides.yaml", OmegaConf.to_yaml(overrides))):
        path = hydra_dir / name
        if not path.is_file() or path.read_text() != text:  # a finished group re-run writes nothing
            ckpt.write_bytes_atomic(path, text.encode(), "run config")


# --------------------------------------------------------------------------------------- environments
class SeedGroupEnv:
    """The S seeds' environments, stepped as one: either one vector env of S N sub-envs, or one per seed."""

    def __init__(self, handles: Sequence[VectorEnvHandle], num_seeds: int, num_envs: int, policy: Policy):
        self.handles, self.num_seeds, self.num_envs, self.policy = list(handles), num_seeds, num_envs, policy
        self.shared = len(self.handles) == 1 and num_seeds > 1
        self.seeds_per_handle = num_seeds if self.shared else 1

    @staticmethod
    def can_share(env_cfg: DictConfig) -> bool:
        """One vector env of S N sub-envs: only for native vector envs without normalisation wrappers."""
        if env_cfg.get("normalize_observation") or env_cfg.get("normalize_reward"):
            return False
        mode = env_cfg.get("vectorization", "auto")
        if mode == "vector_entry_point":
            return True
        return mode == "auto" and resolve_spec(env_cfg.id, env_cfg.get("import_module")).vector_entry_point is not None

    def reset(self, seeds: Sequence[int], offset: int) -> np.ndarray:
        """Reset every seed's envs (seed k's sub-env i with seeds[k] + offset + i); observations (S, N, ...)."""
        if self.shared:  # a native vector env: one seed for its one random stream
            obs = seed_vector_env(self.handles[0], seeds[0] + offset)
            return obs.reshape(self.num_seeds, self.num_envs, *obs.shape[1:])
        return np.stack([seed_vector_env(h, seed + offset) for h, seed in zip(self.handles, seeds, strict=True)])

    def episode_lengths(self) -> np.ndarray:
        """Steps of each sub-env's current episode, (S, N)."""
        lengths = [h.episode_stats.episode_lengths for h in self.handles]
        return (lengths[0] if self.shared else np.stack(lengths)).reshape(self.num_seeds, self.num_envs)

    def step(self, actions: np.ndarray, episodes: list[EpisodeRecord]):
        """Step every env with ``actions`` (S, N, ...); episodes that ended go to ``episodes[k]``.

        Returns obs (S, N, ...), rewards, terminated, truncated (S, N).
        """
        outs = []
        per = self.seeds_per_handle
        for h, handle in enumerate(self.handles):
            block = actions[h * per : (h + 1) * per].reshape(per * self.num_envs, *actions.shape[2:])
            obs, rewards, terminated, truncated, infos = handle.envs.step(self.policy.env_action(block))
            if "_episode" in infos and infos["_episode"].any():
                ended = infos["_episode"]
                for i in np.flatnonzero(ended):
                    record = episodes[h * per + i // self.num_envs]
                    record.returns.append(float(infos["episode"]["r"][i]))
                    record.lengths.append(int(infos["episode"]["l"][i]))
            outs.append((obs, rewards, terminated, truncated))
        if self.shared:
            obs, rewards, terminated, truncated = outs[0]
            shape = (self.num_seeds, self.num_envs)
            return obs.reshape(*shape, *obs.shape[1:]), rewards.reshape(shape), terminated.reshape(shape), \
                truncated.reshape(shape)  # fmt: skip
        return tuple(np.stack(x) for x in zip(*outs, strict=True))

    def close(self) -> None:
        for handle in self.handles:
            handle.close()


class SeedGroupCollector:
    """Fills a seed-stacked :class:`RolloutBuffer` (S, T, N, ...): one batched act, then every env steps.

    Seed k's noise comes from ``rngs[k]`` alone, drawn in the order a single run draws it.
    """

    def __init__(
        self,
        env: SeedGroupEnv,
        policy: Policy,
        buffer: RolloutBuffer,
        rngs: Sequence[np.random.Generator],
        noise_keys: Sequence[str] = (),
        extra_noise: ExtraNoiseFn | None = None,
    ):
        self.env, self.policy, self.buffer, self.rngs = env, policy, buffer, list(rngs)
        self.noise_keys, self.extra_noise = tuple(noise_keys), extra_noise
        self._next_obs: np.ndarray | None = None
        self._reset_pending = np.zeros((len(self.rngs), buffer.num_envs), dtype=bool)

    def start(self, obs: np.ndarray) -> None:
        self._next_obs = obs
        self._reset_pending = np.zeros_like(self._reset_pending)

    def collect(self) -> list[EpisodeRecord]:
        """Fill the buffer with ``num_steps`` vector steps of every seed; per seed, the episodes that ended."""
        with self.policy.net.parameters_fixed():  # acting checks the parameters once, not every step
            return self._collect()

    def _collect(self) -> list[EpisodeRecord]:
        buf, num_seeds = self.buffer, len(self.rngs)
        episodes = [EpisodeRecord() for _ in range(num_seeds)]
        for t in range(buf.num_steps):
            buf.episode_step_np[:, t] = self.env.episode_lengths()
            buf.obs_np[:, t] = self._next_obs.reshape(num_seeds, buf.num_envs, -1)
            params = self.policy.params_numpy(buf.obs_np[:, t])
            out = self.policy.sample_seeds(params, self.rngs)
            buf.actions_np[:, t] = out.action
            for key in self.noise_keys:
                buf.noise_np[key][:, t] = out.noise[key]
            if self.extra_noise is not None:
                for k, rng in enumerate(self.rngs):
                    for key, value in self.extra_noise(out.action[k], rng).items():
                        buf.noise_np[key][k, t] = value
            obs, rewards, terminated, truncated = self.env.step(out.action, episodes)
            buf.rewards_np[:, t] = rewards
            buf.terminated_np[:, t] = terminated
            buf.truncated_np[:, t] = truncated
            self._next_obs = obs
        buf.obs_np[:, buf.num_steps] = self._next_obs.reshape(num_seeds, buf.num_envs, -1)
        # As in RolloutCollector: a step is a NEXT_STEP reset slot iff its env's previous step ended an episode.
        done = np.logical_or(buf.terminated_np, buf.truncated_np)
        np.logical_not(self._reset_pending, out=buf.valid_np[:, 0])
        np.logical_not(done[:, :-1], out=buf.valid_np[:, 1:])
        self._reset_pending = done[:, -1].copy()
        np.putmask(buf.episode_step_np, ~buf.valid_np, -1)
        return episodes


# --------------------------------------------------------------------------------------- state transfer
def _slice_optimizer_state(state: dict, seed: int) -> dict:
    """Seed ``seed``'s part of a seed-stacked optimizer's state dict (row ``seed`` of every (S, P) tensor)."""
    return {
        "state": {i: {k: (v[seed].clone() if v.dim() > 1 else v.clone()) for k, v in s.items()}
                  for i, s in state["state"].items()},
        "param_groups": [dict(g) for g in state["param_groups"]],
    }  # fmt: skip


def _stack_optimizer_states(states: Sequence[dict]) -> dict:
    """The inverse of :func:`_slice_optimizer_state`: per-seed states stacked (scalars, e.g. Adam's step: seed 0's)."""
    first = states[0]
    stacked: dict[Any, dict] = {}
    for i, s in first["state"].items():
        stacked[i] = {
            k: (torch.stack([st["state"][i][k] for st in states]) if v.dim() > 0 else v) for k, v in s.items()
        }
    return {"state": stacked, "param_groups": first["param_groups"]}


# --------------------------------------------------------------------------------------- the group
class SeedGroupTrainer:
    """S seeds trained together in ``run_dir/seed<k>`` (see the module docstring)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None):
        validate(cfg)
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.seeds = group_seeds(cfg)
        num_seeds = len(self.seeds)
        self.device, device_reason = resolve_device(cfg.device, num_seeds)
        log.info("%s", device_reason)
        self.trainers: list[Trainer] = []
        try:
            for seed in self.seeds:  # each seeds everything and builds its modules exactly as a single run
                seed_cfg = copy.deepcopy(cfg)
                with open_dict(seed_cfg):
                    seed_cfg.seed, seed_cfg.num_seeds = seed, 1
                seed_overrides = [o for o in (overrides or []) if not o.startswith(("seed=", "num_seeds="))]
                seed_overrides = [*seed_overrides, f"seed={seed}"]
                self.trainers.append(Trainer(seed_cfg, seed_run_dir(self.run_dir, seed), seed_overrides, self.device))
                write_run_config(seed_run_dir(self.run_dir, seed), seed_cfg, seed_overrides)
            first = self.trainers[0]
            self.policy = stack_modules([t.policy for t in self.trainers])
            self.value = stack_modules([t.value for t in self.trainers])
            self.estimator = stack_modules([t.estimator for t in self.trainers])
            self.learner = A2CLearner(self.policy, self.value, self.estimator, cfg.learner,
                                      variance_decay=float(cfg.variance.ema_decay), value_cfg=cfg.value)  # fmt: skip
            if SeedGroupEnv.can_share(cfg.env) and num_seeds > 1:
                handles = [make_vector_env(cfg.env, num_envs=num_seeds * int(cfg.env.num_envs),
                                           reward_gamma=float(cfg.learner.gamma))]  # fmt: skip
                self._own_handles = handles
            else:
                handles, self._own_handles = [t.env for t in self.trainers], []
            self.env = SeedGroupEnv(handles, num_seeds, int(cfg.env.num_envs), self.policy)
            obs_dim = int(np.prod(first.env.envs.single_observation_space.shape))
            noise_shapes = {k: self.policy.noise_shapes[k] for k in self.estimator.noise_keys}
            noise_shapes.update(self.estimator.extra_noise_shapes())
            self.buffer = RolloutBuffer(int(cfg.learner.num_steps), int(cfg.env.num_envs), obs_dim, self.policy,
                                        noise_shapes, self.device, num_seeds=num_seeds)  # fmt: skip
            extra = self.estimator.extra_noise if self.estimator.extra_noise_shapes() else None
            self.collector = SeedGroupCollector(self.env, self.policy, self.buffer, [t.rng for t in self.trainers],
                                                self.estimator.noise_keys, extra)  # fmt: skip
        except BaseException:
            self.close()
            raise
        self.active = [True] * num_seeds
        self.diverged: list[int] = []

    def close(self) -> None:
        for handle in getattr(self, "_own_handles", []):
            handle.close()
        for trainer in self.trainers:
            trainer.env.close()
            for side in (trainer._probe, trainer._evaluation):
                if side is not None:
                    side.close()

    # ------------------------------------------------------------------------------- seed <-> stack
    def sync_to_seed(self, k: int) -> Trainer:
        """Copy seed k's slice of the stacked state into its trainer's modules; return the trainer."""
        t = self.trainers[k]
        copy_seed_to(self.policy, k, t.policy)
        copy_seed_to(self.value, k, t.value)
        copy_seed_to(self.estimator, k, t.estimator)
        t.learner.optimizer.load_state_dict(_slice_optimizer_state(self.learner.optimizer.state_dict(), k))
        if self.learner.value_optimizer is not None:  # V's own optimizer (value.steps > 1, value.lr, ...)
            state = _slice_optimizer_state(self.learner.value_optimizer.state_dict(), k)
            t.learner.value_optimizer.load_state_dict(state)
        variance = self.learner.grad_variance
        t.learner.grad_variance.load_state_dict(
            {"mean": variance.mean[k], "mean_sq": variance.mean_sq[k], "count": variance.count}
        )
        extra = self.estimator.extra_state()
        if extra:
            t.estimator.load_extra_state({name: _slice_optimizer_state(state, k) for name, state in extra.items()})
        t.learner.estimator_metrics = {
            name: values[k] for name, values in self.learner.estimator_metrics.items() if isinstance(values, list)
        }
        return t

    def load_from_seeds(self) -> None:
        """Copy every trainer's (restored) state into the stack."""
        for k, t in enumerate(self.trainers):
            copy_seed_from(self.policy, k, t.policy)
            copy_seed_from(self.value, k, t.value)
            copy_seed_from(self.estimator, k, t.estimator)
        self.learner.optimizer.load_state_dict(
            _stack_optimizer_states([t.learner.optimizer.state_dict() for t in self.trainers])
        )
        if self.learner.value_optimizer is not None:
            self.learner.value_optimizer.load_state_dict(
                _stack_optimizer_states([t.learner.value_optimizer.state_dict() for t in self.trainers])
            )
        variance = self.learner.grad_variance
        variance.load_state_dict({
            "mean": torch.stack([t.learner.grad_variance.mean for t in self.trainers]),
            "mean_sq": torch.stack([t.learner.grad_variance.mean_sq for t in self.trainers]),
            "count": self.trainers[0].learner.grad_variance.count,
        })  # fmt: skip
        extras = [t.estimator.extra_state() for t in self.trainers]
        if extras[0]:
            self.estimator.load_extra_state(
                {name: _stack_optimizer_states([e[name] for e in extras]) for name in extras[0]}
            )

    # ------------------------------------------------------------------------------- run
    def run(self) -> list[dict[str, Any]]:
        """Train every seed to ``total_timesteps`` (resuming if possible); return their summaries.

        Raises :class:`TrainingInterrupted` after a stop signal (every seed checkpointed first) and
        :class:`TrainingDivergedError` at the end if a seed diverged (the others finished).
        """
        from rl_relax.rundir import RunDirectoryLock

        locks = [RunDirectoryLock(t.run_dir) for t in self.trainers]
        try:
            with StopSignals() as stop:
                for lock in locks:
                    lock.acquire()
                return self._run(stop)
        finally:
            for lock in locks:
                lock.release()
            self.close()

    def _resume(self) -> list[Path | None]:
        """Every seed restores its newest checkpoint; seeds ahead of the others go back to the common step."""
        latest = [t._resume_or_start() for t in self.trainers]
        steps = [t.global_step for t in self.trainers]
        if len(set(steps)) > 1:
            target = min(steps)
            for k, t in enumerate(self.trainers):
                if t.global_step == target:
                    continue
                path = ckpt.checkpoint_path(t.ckpt_dir, target)
                if target == 0 or not path.exists():
                    raise CheckpointError(
                        f"the group's seeds stopped at different steps ({dict(zip(self.seeds, steps, strict=True))}) "
                        f"and seed {self.seeds[k]} has no checkpoint at step {target}. Fix: resume the seeds as single "
                        "runs (num_seeds=1, seed=<k>, hydra.run.dir=<group dir>/seed<k>), or start a new group."
                    )
                t.recent_returns.clear()  # restore() sets every counter and extends these two
                t.recent_lengths.clear()
                t.restore(ckpt.load_checkpoint(path, map_location=self.device), path)
                latest[k] = path
                log.warning("seed %d resumes from %s, the step every seed of the group has", self.seeds[k], path)
        self.load_from_seeds()
        return latest

    def _run(self, stop: StopSignals) -> list[dict[str, Any]]:
        cfg = self.cfg
        latest = self._resume()
        total = int(cfg.total_timesteps)
        resumed = latest[0] is not None
        first = self.trainers[0]
        if resumed and (first.global_step >= total or all(t.stop_requested() for t in self.trainers)):
            return [t._already_finished() for t in self.trainers]
        for k, t in enumerate(self.trainers):
            if t.stop_requested():  # solved before the interruption: it stays stopped
                self.active[k] = False
        for k, active in enumerate(self.active):
            if not active:
                self.learner.stop_seed(k)
        self.collector.start(self.env.reset(self.seeds, first.global_step))
        loggers = [t.open_tensorboard(resumed=latest[k] is not None) for k, t in enumerate(self.trainers)]
        try:
            finished = self._loop(loggers, stop, total, fresh=not resumed)
        except OSError as exc:
            where = Path(exc.filename) if getattr(exc, "filename", None) else self.run_dir
            raise ckpt.storage_error(where, exc, "to") from None
        finally:
            for tb in loggers:
                tb.close()
        if not finished:
            return self._interrupted(stop)
        summaries = []
        for k, t in enumerate(self.trainers):
            if k in self.diverged:
                summaries.append(t.summary(finished=False, status="diverged"))
                continue
            summaries.append(t.write_summary(finished=True))
        if self.diverged:
            raise TrainingDivergedError(
                f"seed(s) {', '.join(str(self.seeds[k]) for k in self.diverged)} diverged (their summary.json says "
                f"diverged, their last good checkpoint is kept); the other {len(self.seeds) - len(self.diverged)} "
                "finished. Fix: lower learner.lr or estimator.cv_lr, or keep learner.max_grad_norm set."
            )
        log.info("done: %d seeds, mean final return %s", len(self.seeds),
                 _mean([s["final_return_mean"] for s in summaries]))  # fmt: skip
        return summaries

    def _interrupted(self, stop: StopSignals) -> list[dict[str, Any]]:
        assert stop.signum is not None
        for k, t in enumerate(self.trainers):
            if k in self.diverged:
                continue
            if t._saved_step != t.global_step and t.global_step > 0:
                self.sync_to_seed(k)
                t.save_checkpoint()
            t.write_summary(finished=False, status="interrupted")
        exc = TrainingInterrupted(
            f"stopped by {signal_name(stop.signum)} at step {self.trainers[0].global_step:,} of "
            f"{int(self.cfg.total_timesteps):,}; every seed's checkpoint is in {self.run_dir}/seed<k>/checkpoints",
            stop.signum,
        )
        exc.stop_signals = stop  # type: ignore[attr-defined]
        raise exc

    def _stop_seed(self, k: int, reason: str) -> None:
        self.active[k] = False
        self.learner.stop_seed(k)
        if reason == "diverged":
            self.diverged.append(k)
            t = self.trainers[k]
            t.write_summary(finished=False, status="diverged")
            log.error("seed %d diverged at step %d (non-finite loss): stopped, its last good checkpoint is kept; "
                      "the other seeds go on", self.seeds[k], t.global_step)  # fmt: skip

    def _loop(self, loggers: list[TensorBoardLogger], stop: StopSignals, total: int, fresh: bool) -> bool:
        cfg, trainers = self.cfg, self.trainers
        if fresh:
            for t, tb in zip(trainers, loggers, strict=True):
                tb.config(t.cfg, t._config_yaml())
                tb.hparams_start(t._hparams)
        steps_per_update = self.buffer.num_steps * self.buffer.num_envs
        log_every = max(1, math.ceil(cfg.logging.interval_steps / steps_per_update))
        ckpt_interval = int(cfg.checkpoint.interval_steps)
        step0 = trainers[0].global_step
        next_ckpt = (step0 // ckpt_interval + 1) * ckpt_interval
        variance_interval = int(cfg.variance.interval_steps)
        next_variance = (step0 // variance_interval + 1) * variance_interval if variance_interval else None
        anatomy = None
        if int(cfg.variance.get("anatomy_interval_steps", 0)):
            from rl_relax.variance import AnatomyProbe

            anatomy = [AnatomyProbe(t.cfg, t.policy, t.value, t.estimator) for t in trainers]
        eval_interval = int(cfg.eval.interval_steps)
        next_eval = (step0 // eval_interval + 1) * eval_interval if eval_interval else None
        progress = Progress(total, cfg.logging.progress, cfg.logging.progress_interval_s)
        self.learner.set_progress(step0 / total)
        keys = ("train/policy_loss", "train/value_loss", "train/grad_norm", "grad/pg_norm")
        sums = np.zeros((len(trainers), len(keys)))
        count = 0
        started = time.perf_counter()
        for t in trainers:
            t._t0, t._start_step, t._side_s_session = started, t.global_step, 0.0
        log.info("training %s with %s, %d seeds in one process, for %d steps each -> %s/seed<k>",
                 cfg.env.id, self.estimator.name, len(trainers), total, self.run_dir)  # fmt: skip
        global_step = step0
        try:
            while global_step < total and any(self.active):
                if stop.requested:
                    log.warning("received %s: stopping at step %d after writing a checkpoint per seed",
                                signal_name(stop.signum), global_step)  # fmt: skip
                    if count:
                        self._log_all(loggers, sums / count, None)
                    return False
                if self.learner.uses_progress:
                    self.learner.set_progress(global_step / total)
                episodes = self.collector.collect()
                global_step += steps_per_update
                solved_now = []
                for k, t in enumerate(trainers):
                    if not self.active[k]:
                        continue
                    t.global_step = global_step
                    t.updates += 1
                    if episodes[k].returns:
                        t._record_episodes(episodes[k].returns, episodes[k].lengths)
                    if t.stop_requested():
                        solved_now.append(k)
                last = global_step >= total
                log_now = last or stop.requested or bool(solved_now) or trainers[0].updates % log_every == 0
                stats = self.learner.update(self.buffer, global_step, diagnostics=log_now)
                sums += np.array([stats.policy_loss, stats.value_loss, stats.grad_norm, stats.pg_norm]).T
                count += 1
                for k, ok in enumerate(stats.finite):
                    if self.active[k] and not ok:
                        self._stop_seed(k, "diverged")
                if log_now:
                    self._log_all(loggers, sums / count, stats.entropy)
                    sums[:] = 0.0
                    count = 0
                measure_variance = next_variance is not None and global_step >= next_variance
                measure_eval = next_eval is not None and global_step >= next_eval
                due_anatomy = anatomy is not None and anatomy[0].due(global_step, steps_per_update)
                save = global_step >= next_ckpt or last
                for k, t in enumerate(trainers):
                    if not self.active[k] or not (measure_variance or measure_eval or due_anatomy or save
                                                  or k in solved_now):  # fmt: skip
                        continue
                    self.sync_to_seed(k)
                    self._side_work(k, loggers[k], measure_variance, measure_eval,
                                    anatomy[k] if due_anatomy else None)  # fmt: skip
                    if save or k in solved_now:
                        t.save_checkpoint()
                if measure_variance:
                    next_variance = (global_step // variance_interval + 1) * variance_interval
                if measure_eval:
                    next_eval = (global_step // eval_interval + 1) * eval_interval
                if save:
                    next_ckpt = (global_step // ckpt_interval + 1) * ckpt_interval
                for k in solved_now:
                    self.active[k] = False
                    self.learner.stop_seed(k)
                    log.info("seed %d solved: stopped (stop_when_solved=true); the others go on", self.seeds[k])
                if progress.due():  # the arguments cost ~25 us for 8 seeds: only when drawn
                    progress.update(global_step, self._fps(), _mean([t.mean_return() for t in trainers]))
            progress.update(global_step, self._fps(), _mean([t.mean_return() for t in trainers]), force=True)
        finally:
            progress.close()
        for k, (t, tb) in enumerate(zip(trainers, loggers, strict=True)):
            if k not in self.diverged:
                tb.hparams_end(t._final_metrics(), t.global_step)
        return True

    def _side_work(self, k: int, tb: TensorBoardLogger, variance: bool, evaluate: bool, anatomy) -> None:
        """Seed k's probes and evaluation, run by its trainer on its synced modules (as in a single run)."""
        t, cfg = self.trainers[k], self.cfg
        if variance:
            started = time.perf_counter()
            measured = t._variance_probe().measure(int(cfg.variance.num_batches), t.env.normalizer_state())
            if "grad/variance_ratio_sampled" in measured:
                t.log_ratio_sum += math.log(measured["grad/variance_ratio_sampled"])
                t.log_ratio_count += 1
            measured["time/probe_s"] = t._side_time(started, "probe")
            tb.scalars(measured, t.global_step)
        if anatomy is not None:
            started = time.perf_counter()
            measured = anatomy.measure(t.env.normalizer_state(), t.global_step)
            measured["time/anatomy_s"] = t._side_time(started, "probe")
            tb.scalars(measured, t.global_step)
        if evaluate:
            started = time.perf_counter()
            evaluated = t._periodic_evaluation().evaluate(t.env.normalizer_state())
            evaluated["time/eval_s"] = t._side_time(started, "eval")
            tb.scalars(evaluated, t.global_step)

    def _log_all(self, loggers: list[TensorBoardLogger], means: np.ndarray, entropy: list[float] | None) -> None:
        keys = ("train/policy_loss", "train/value_loss", "train/grad_norm", "grad/pg_norm")
        explained = self.learner.explained_variance()
        log_variance = self.learner.grad_variance.log_variance()
        metrics = self.learner.estimator_metrics
        std = self.policy.log_std.exp().reshape(len(self.trainers), -1).mean(-1).tolist() \
            if hasattr(self.policy, "log_std") else None  # fmt: skip
        for k, (t, tb) in enumerate(zip(self.trainers, loggers, strict=True)):
            if not self.active[k]:
                continue
            learner = {
                "train/explained_variance": explained[k],
                "grad/log_variance": log_variance[k],
                "train/learning_rate": self.learner.learning_rate,
                **{name: values[k] for name, values in metrics.items() if isinstance(values, list)},
            }
            if std is not None:
                learner["train/std"] = std[k]
            t.log_scalars(tb, dict(zip(keys, means[k].tolist(), strict=True)), None if entropy is None else entropy[k],
                          learner)  # fmt: skip

    def _fps(self) -> float:
        """Env steps per second over all seeds of the group."""
        return sum(t._fps() for t, active in zip(self.trainers, self.active, strict=True) if active) or sum(
            t._fps() for t in self.trainers
        )


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def check_num_seeds(cfg: DictConfig) -> int:
    """``num_seeds`` as an int >= 1, or a one-line :class:`ConfigError`."""
    value = cfg.get("num_seeds", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"num_seeds={value!r} must be an integer >= 1 (seeds seed .. seed + num_seeds - 1).")
    return value
