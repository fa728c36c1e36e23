"""The A2C update: one gradient step on the whole rollout, the estimator supplying the policy gradient.

    loss(theta, w) = -S(theta) - ent_coef * H(theta) + vf_coef * L_V(w)

    H   = (1/(T N)) sum_t valid_t H(pi(.|s_t))              (entropy bonus)
    L_V = (1/(T N)) sum_t valid_t (R_t - V_w(s_t))^2        (value regression on the TD(lambda) targets)

S is the estimator's surrogate of this update (``Estimator.estimate``), grad_theta S = g_hat. One
backward pass gives the whole gradient; g_hat alone (the policy part of it when there is no entropy
term) then goes back to ``Estimator.learn``, which trains whatever the estimator learns, before
theta moves (:mod:`rl_relax.estimators.base`). R_t and A_t = R_t - V_old(s_t) come from
:func:`rl_relax.returns.gae` (with ``learner.batch=episodes``, from :func:`rl_relax.returns.monte_carlo`:
the return to the end of each complete episode, never bootstrapped). Every mean uses the same constant
normaliser T N, the buffer's slots (see :meth:`rl_relax.estimators.base.RolloutBatch.mean` for why not the
number of valid transitions).
The global gradient norm is clipped to ``max_grad_norm``, then one optimizer step updates policy
and value together (as in stable-baselines3's A2C).

g_hat itself (policy parameters only, entropy and value terms excluded, before clipping) feeds
:class:`~rl_relax.variance.OnlineGradientVariance`, identically for every estimator.

Seed-stacked networks (S seeds trained together, :mod:`rl_relax.seed_group`) run the same update
for all seeds at once: every mean above is then one per seed, the loss differentiated is the sum
of the seeds' losses (so seed k's slice of the gradient is seed k's own), and clipping, the
non-finite check and the statistics are per seed. A seed whose loss is not finite, or that the
trainer has stopped (``active``), gets no parameter update; the others go on.

The value function's levers (``value.*``, README "Value-function levers"): a V that takes the time
left before the env's time limit (:class:`~rl_relax.networks.ValueNet`, fed each observation's position
from :meth:`RolloutBuffer.observation_positions`), and V fitted by its own optimizer. With
``value.steps`` > 1, ``value.lr`` or ``value.optimizer`` set, V leaves the joint step above: the policy
step uses -S - ent_coef * H alone (advantages from the V before this update), then V takes
``value.steps`` steps of its own optimizer on L_V with the targets R_t fixed (computed once, by the V
that produced the advantages), each clipped to ``learner.max_grad_norm``; ``vf_coef`` has no role there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

# autograd imports this module (and with it sympy, ~0.3 s) on the first backward pass that is given
# explicit output gradients; importing it with the learner keeps that one-time cost out of training.
import torch.fx.experimental.symbolic_shapes

from rl_relax.errors import CheckpointError, TrainingDivergedError
from rl_relax.estimators.base import Estimator, RolloutBatch
from rl_relax.networks import Policy, ValueNet
from rl_relax.optim import FlatParameters, make_optimizer
from rl_relax.returns import gae, monte_carlo
from rl_relax.rollout import RolloutBuffer
from rl_relax.variance import OnlineGradientVariance


@dataclass
class UpdateStats:
    """Scalars of one update (Python floats: on the CPU a host copy is cheaper than tensor bookkeeping).

    Seed-stacked: each field is a list with one value per seed, and ``finite`` says which seeds' update
    was finite (the others were not applied).
    """

    policy_loss: float  # -S, the estimator's surrogate
    value_loss: float
    grad_norm: float  # global norm of the whole gradient before clipping
    pg_norm: float  # norm of the policy-gradient estimate g_hat alone, before clipping
    entropy: float | None  # mean policy entropy; None when neither the loss nor diagnostics needed it
    finite: list[bool] | None = None


@dataclass
class Targets:
    """What the returns machinery gives one rollout: V with grad, and the regression targets."""

    values: torch.Tensor  # ((T + 1) N,) V(s_t) on every observation of the rollout (time-major), with grad
    advantages: np.ndarray  # (T, N) A_t = R_t - V(s_t), 0 on reset slots
    #: ((T + 1) N,) what each V(s_t) regresses on: the TD(lambda) targets R_t on the T N slots, time-major, then
    #: V(s_T) itself (no grad) on the N bootstrap observations, which are no regression inputs: their error is
    #: exactly 0, and ``values - value_targets`` needs no slice (whose backward costs ~5 us per update).
    value_targets: torch.Tensor
    returns_np: np.ndarray  # (T, N) the targets R_t on the host (explained variance)
    values_np: np.ndarray  # (T + 1, N) V(s_t) on the host, no grad
    positions: torch.Tensor | None = None  # ((T + 1) N,) the observations' positions, for a V that takes them


class A2CLearner:
    """Owns the policy/value optimizer and performs the A2C update on a filled rollout buffer."""

    def __init__(
        self,
        policy: Policy,
        value: ValueNet,
        estimator: Estimator,
        learner_cfg,
        variance_decay: float = 0.99,
        value_cfg=None,
    ):
        self.policy, self.value, self.estimator = policy, value, estimator
        self.value_uses_time = bool(getattr(value, "uses_time", False))
        self.num_seeds: int | None = policy.net.num_seeds  # None: one agent; S: seed-stacked networks
        seeds = () if self.num_seeds is None else (self.num_seeds,)
        # Plain Python copies: OmegaConf attribute access costs microseconds on the hot path.
        self.gamma, self.gae_lambda = float(learner_cfg.gamma), float(learner_cfg.gae_lambda)
        self.ent_coef, self.vf_coef = float(learner_cfg.ent_coef), float(learner_cfg.vf_coef)
        self.normalize_advantage = bool(learner_cfg.normalize_advantage)
        # Episode batches (learner.batch=episodes): Monte Carlo returns of complete episodes, no bootstrapping.
        self.monte_carlo = str(learner_cfg.get("batch", "steps")) == "episodes"
        self.lr_schedule = str(learner_cfg.lr_schedule)
        # theta: the network's parameters, then the distribution's direct ones (Gaussian log-std).
        self.theta_net, self.theta_direct = list(policy.net.parameters()), list(policy.direct_parameters())
        if len(self.theta_net) + len(self.theta_direct) != len(list(policy.parameters())):
            raise TypeError("a Policy's parameters must be its net's plus direct_parameters()")
        self.num_policy_params = sum(p.numel() for p in [*self.theta_net, *self.theta_direct]) // (self.num_seeds or 1)
        # V's own optimizer (value.steps > 1, value.lr or value.optimizer set), else V is in the joint step.
        value_cfg = value_cfg if value_cfg is not None else {}
        self.value_steps = int(value_cfg.get("steps", 1))
        value_lr, value_optimizer = value_cfg.get("lr"), value_cfg.get("optimizer")
        self.separate_value = self.value_steps > 1 or value_lr is not None or value_optimizer is not None
        joint_value = [] if self.separate_value else list(value.parameters())
        # Policy parameters first: g_hat is subtracted from the leading slice of the flat gradient.
        self.flat = FlatParameters([*self.theta_net, *self.theta_direct, *joint_value], self.num_seeds)
        self.optimizer = make_optimizer([self.flat.data], learner_cfg)
        self.base_lr = float(learner_cfg.lr)
        self.max_grad_norm = math.inf if learner_cfg.max_grad_norm is None else float(learner_cfg.max_grad_norm)
        self.value_flat: FlatParameters | None = None
        self.value_optimizer = None
        if self.separate_value:
            self.value_flat = FlatParameters(list(value.parameters()), self.num_seeds)
            self.value_base_lr = float(learner_cfg.lr if value_lr is None else value_lr)
            settings = SimpleNamespace(  # the learner's optimizer settings, with V's name and learning rate
                optimizer=str(learner_cfg.optimizer if value_optimizer is None else value_optimizer),
                lr=self.value_base_lr, rmsprop_alpha=learner_cfg.rmsprop_alpha, eps=learner_cfg.eps,
                adam_betas=learner_cfg.adam_betas,
            )  # fmt: skip
            self.value_optimizer = make_optimizer([self.value_flat.data], settings)
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        device = self.flat.data.device
        self._minus_one = torch.full(seeds, -1.0, device=device)
        self._value_coefficients: dict[int, torch.Tensor] = {}  # T N -> vf_coef / (T N), see value_squared_error
        self._minus_ent_coef = torch.full(seeds, -self.ent_coef, device=device)
        #: Seed-stacked: which seeds still train (the trainer stops solved or diverged ones, :meth:`stop_seed`).
        self.active = torch.ones(seeds, dtype=torch.bool, device=device)
        self._all_active = True
        #: Scalars of the last update, logged as they are: the estimator's (from ``learn``), and with V's own
        #: optimizer ``train/value_loss_fitted`` on logged updates.
        self.estimator_metrics: dict[str, float] = {}
        self.grad_variance = OnlineGradientVariance(
            (*seeds, self.num_policy_params), decay=variance_decay, device=self.flat.data.device
        )

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def uses_progress(self) -> bool:
        """Whether :meth:`set_progress` must be called before every update (a schedule here or in the estimator)."""
        return self.lr_schedule == "linear" or self.estimator.uses_progress

    def set_progress(self, fraction_done: float) -> None:
        """Apply the learning-rate schedule (and the estimator's, :meth:`Estimator.set_progress`) at this
        fraction of total_timesteps."""
        linear = self.lr_schedule == "linear"
        lr = self.base_lr * max(1.0 - fraction_done, 0.0) if linear else self.base_lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.value_optimizer is not None:  # V's own learning rate follows the same schedule
            for group in self.value_optimizer.param_groups:
                group["lr"] = self.value_base_lr * lr / self.base_lr
        self.estimator.set_progress(fraction_done)

    # ------------------------------------------------------------------------------- the update
    def update(self, buf: RolloutBuffer, global_step: int, diagnostics: bool = False) -> UpdateStats:
        """One A2C update from ``buf``.

        ``diagnostics`` also computes what is only logged (the entropy when it is not part of the
        loss, the explained variance): the trainer asks for it on the updates it logs.
        """
        targets = self.targets(buf)
        batch = self.make_batch(buf, targets)
        surrogate = self.estimator.estimate(batch)  # S(theta): grad_theta S = g_hat
        value_error = self.value_squared_error(targets)  # T N * L_V
        entropy = None
        if self.ent_coef != 0.0 or diagnostics:
            with torch.set_grad_enabled(self.ent_coef != 0.0):  # without an entropy bonus it is only logged
                entropy = batch.mean(self.policy.entropy(batch.dist_params))
        # loss = -S + vf_coef * L_V - ent_coef * H, backpropagated term by term with its coefficients
        # (one backward pass; no autograd nodes for the sum, nor for L_V's 1/(T N), folded into its coefficient).
        value_coefficient = self.value_coefficient(batch.valid.shape[-1])  # vf_coef / (T N)
        terms, coefficients = [surrogate, value_error], [self._minus_one, value_coefficient]
        if self.separate_value:  # V takes its own steps after the policy's (_fit_value)
            terms, coefficients = [surrogate], [self._minus_one]
        g_hat = None
        if self.ent_coef != 0.0:
            terms.append(entropy)
            coefficients.append(self._minus_ent_coef)
            g_hat = self.flat_policy_gradient(torch.autograd.grad(surrogate.sum(), batch.theta, retain_graph=True))
        if self.num_seeds is None:
            self.flat.zero_grad()
            torch.autograd.backward(terms, coefficients)
        else:  # seed-stacked parameters are strided views: the gradients are collected, then written
            self.flat.set_grad(torch.autograd.grad(terms, self.flat.params, coefficients, allow_unused=True))
        if g_hat is None:  # -S is then the loss's only term in theta: its gradient there is -g_hat
            g_hat = -self.flat.grad[..., : self.num_policy_params]

        self.grad_variance.update(g_hat)
        if self.num_seeds is not None:
            value_loss = [error / batch.valid.shape[-1] for error in value_error.tolist()]  # L_V per seed
            return self._finish_seed_stacked(surrogate, value_loss, entropy, g_hat, diagnostics, targets, buf,
                                             batch.step_weights)  # fmt: skip
        value_loss = value_error.item() / batch.valid.shape[-1]  # L_V
        pg_norm = torch.linalg.vector_norm(g_hat).item()
        grad_norm = self.flat.clip_grad_norm_(self.max_grad_norm)
        # A non-finite loss makes the gradient norm non-finite: one check, before anything moves.
        if not math.isfinite(grad_norm) or (self.separate_value and not math.isfinite(value_loss)):
            raise TrainingDivergedError(
                f"the loss became non-finite at environment step {global_step} (policy surrogate "
                f"{surrogate.item():.4g}, value loss {value_loss:.4g}). "
                "Training stopped; the last good checkpoint is kept. "
                "Fix: lower learner.lr, enable env.normalize_reward, or set learner.max_grad_norm."
            )
        self.estimator_metrics = self.estimator.learn(g_hat)  # before theta moves: g_hat is at this theta
        self.optimizer.step()
        if self.separate_value:
            self._fit_value(buf, targets, batch.step_weights, global_step, diagnostics)
        if diagnostics:
            self._last = (targets.returns_np, targets.values_np[:-1], buf.valid_np.copy())
        return UpdateStats(
            -surrogate.item(), value_loss, grad_norm, pg_norm, None if entropy is None else entropy.item()
        )

    def _finish_seed_stacked(
        self, surrogate, value_loss, entropy, g_hat, diagnostics, targets, buf, step_weights
    ) -> UpdateStats:
        """The rest of :meth:`update` for seed-stacked networks: per-seed clipping, checks and statistics."""
        pg_norm = torch.linalg.vector_norm(g_hat, dim=-1).tolist()
        grad_norm = self.flat.clip_grad_norm_(self.max_grad_norm)
        metrics = self.estimator.learn(g_hat)  # before theta moves: g_hat is at this theta
        self.estimator_metrics = metrics
        finite = [
            math.isfinite(norm)
            and all(math.isfinite(values[k]) for values in metrics.values() if isinstance(values, list))
            for k, norm in enumerate(grad_norm)
        ]
        if self.separate_value:  # V's loss is not in this gradient: checked on its own, before anything moves
            finite = [ok and math.isfinite(loss) for ok, loss in zip(finite, value_loss, strict=True)]
        # Non-finite or stopped seeds do not move (their gradients may be nan: masked, not multiplied).
        if not all(finite) or not self._all_active:
            keep = self.active & torch.tensor(finite, device=self.active.device)
            self.flat.grad.masked_fill_(~keep.unsqueeze(-1), 0.0)
        self.optimizer.step()
        if self.separate_value:
            finite = self._fit_value(buf, targets, step_weights, 0, diagnostics, finite)
        if diagnostics:
            self._last = (targets.returns_np, targets.values_np[:, :-1], buf.valid_np.copy())
        return UpdateStats(
            (-surrogate).tolist(), value_loss, grad_norm, pg_norm,
            None if entropy is None else entropy.tolist(), finite,
        )  # fmt: skip

    def _fit_value(self, buf: RolloutBuffer, targets: Targets, step_weights: torch.Tensor, global_step: int,
                   diagnostics: bool, finite: list[bool] | None = None) -> list[bool] | None:  # fmt: skip
        """``value.steps`` steps of V's own optimizer on L_V = (1/(T N)) sum_t valid_t (R_t - V(s_t))^2.

        The targets R_t stay those computed before the steps (by the V that produced the advantages); the
        first step reuses that forward pass. Seed-stacked: ``finite`` says which seeds may move; a seed whose
        V gradient turns non-finite stops moving and is reported not finite (returned). With
        ``diagnostics``, L_V after the steps is logged as ``train/value_loss_fitted``.
        """
        assert self.value_flat is not None and self.value_optimizer is not None
        flat, num_slots = self.value_flat, buf.num_steps * buf.num_envs
        returns = targets.value_targets[..., :num_slots]
        obs = buf.flat("obs")
        positions = None if targets.positions is None else targets.positions[..., :num_slots]

        def regression_loss(values: torch.Tensor) -> torch.Tensor:  # one per seed when seed-stacked
            return ((returns - values).square() * step_weights).sum(-1)

        for step in range(self.value_steps):
            values = targets.values[..., :num_slots] if step == 0 else self.value(obs, positions)
            loss = regression_loss(values)
            if self.num_seeds is None:
                flat.zero_grad()
                loss.backward()
                norm = flat.clip_grad_norm_(self.max_grad_norm)
                if not math.isfinite(norm):
                    raise TrainingDivergedError(
                        f"the value loss became non-finite at environment step {global_step} (V step {step + 1} "
                        f"of {self.value_steps}, loss {loss.item():.4g}). Training stopped; the last good checkpoint "
                        "is kept. Fix: lower value.lr, enable env.normalize_reward, or set learner.max_grad_norm."
                    )
            else:
                assert finite is not None
                flat.set_grad(torch.autograd.grad(loss.sum(), flat.params))
                norms = flat.clip_grad_norm_(self.max_grad_norm)
                finite = [ok and math.isfinite(norm) for ok, norm in zip(finite, norms, strict=True)]
                if not all(finite) or not self._all_active:
                    keep = self.active & torch.tensor(finite, device=self.active.device)
                    flat.grad.masked_fill_(~keep.unsqueeze(-1), 0.0)
            self.value_optimizer.step()
        if diagnostics:
            with torch.no_grad():
                fitted = regression_loss(self.value(obs, positions))
            self.estimator_metrics = {
                **self.estimator_metrics,
                "train/value_loss_fitted": fitted.item() if self.num_seeds is None else fitted.tolist(),
            }
        return finite

    def stop_seed(self, seed: int) -> None:
        """Seed-stacked: seed ``seed``'s parameters stop moving from the next update on."""
        self.active[seed] = False
        self._all_active = False

    def value_squared_error(self, targets: Targets) -> torch.Tensor:
        """T N * L_V = sum_t (R_t - V(s_t))^2 over all T N slots (one per seed when seed-stacked).

        L_V is a mean over all slots, with the constant normaliser of ``batch.mean``: on reset slots
        R_t = V(s_t) (A_t = 0), so they add 0. The update differentiates this sum and puts 1/(T N) into
        its coefficient (:meth:`value_coefficient`): a scaling node fewer in the backward pass. The sum
        runs over all (T + 1) N observations: the N bootstrap ones are their own targets (error exactly 0).
        """
        error = targets.values - targets.value_targets
        if self.num_seeds is None:
            return torch.dot(error, error)
        return error.square().sum(-1)

    def value_coefficient(self, num_slots: int) -> torch.Tensor:
        """vf_coef / (T N): the weight of :meth:`value_squared_error` in the loss (one per seed, made once)."""
        coefficient = self._value_coefficients.get(num_slots)
        if coefficient is None:
            seeds = () if self.num_seeds is None else (self.num_seeds,)
            coefficient = torch.full(seeds, self.vf_coef / num_slots, device=self.flat.data.device)
            self._value_coefficients[num_slots] = coefficient
        return coefficient

    def flat_policy_gradient(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """Per-parameter gradients over theta as one flat vector ((S, P) when seed-stacked)."""
        seeds = () if self.num_seeds is None else (self.num_seeds,)
        return torch.cat([g.reshape(*seeds, -1) for g in grads], dim=-1)

    # ------------------------------------------------------------------------------- the batch
    def targets(self, buf: RolloutBuffer) -> Targets:
        """V on all T + 1 observations in one forward pass; GAE(lambda) on the host copy (Monte Carlo
        returns of the complete episodes with ``learner.batch=episodes``, :func:`rl_relax.returns.monte_carlo`).

        Seed-stacked, the buffer's arrays are (S, T, N): GAE runs on (T, S, N) views, for it S N
        columns like any others.
        """
        num_steps, num_envs = buf.num_steps, buf.num_envs
        positions = None
        if self.value_uses_time:  # V takes the time left: each observation's position in its episode
            positions_np = buf.observation_positions()
            positions = buf.tensor(positions_np.reshape(*positions_np.shape[:-2], -1))
            values = self.value(buf.flat("all_obs"), positions)
        else:
            values = self.value(buf.flat("all_obs"))
        if self.num_seeds is not None:
            values_np = values.numpy(force=True).reshape(self.num_seeds, num_steps + 1, num_envs)
            time_major = [np.moveaxis(x, 0, 1) for x in (buf.rewards_np, values_np, buf.terminated_np,
                                                         buf.truncated_np, buf.valid_np)]  # fmt: skip
            rewards, values_t, terminated, truncated, valid = time_major
            if self.monte_carlo:
                advantages, returns = monte_carlo(rewards, values_t[:-1], terminated | truncated, valid, self.gamma)
            else:
                advantages, returns = gae(rewards, values_t[:-1], values_t[-1], terminated, truncated, valid,
                                          gamma=self.gamma, gae_lambda=self.gae_lambda)  # fmt: skip
            advantages = np.ascontiguousarray(np.moveaxis(advantages, 0, 1))
            returns = np.ascontiguousarray(np.moveaxis(returns, 0, 1))
            value_targets = np.concatenate((returns, values_np[:, -1:]), axis=1).reshape(self.num_seeds, -1)
            return Targets(values, advantages, buf.tensor(value_targets), returns, values_np, positions)
        values_np = values.numpy(force=True).reshape(num_steps + 1, num_envs)
        if self.monte_carlo:
            advantages, returns = monte_carlo(buf.rewards_np, values_np[:-1], buf.terminated_np | buf.truncated_np,
                                              buf.valid_np, self.gamma)  # fmt: skip
        else:
            advantages, returns = gae(
                buf.rewards_np, values_np[:-1], values_np[-1], buf.terminated_np, buf.truncated_np,
                buf.valid_np, gamma=self.gamma, gae_lambda=self.gae_lambda,
            )  # fmt: skip
        value_targets = np.concatenate((returns, values_np[-1:])).reshape(-1)
        return Targets(values, advantages, buf.tensor(value_targets), returns, values_np, positions)

    def make_batch(self, buf: RolloutBuffer, targets: Targets) -> RolloutBatch:
        """The estimator's view of the rollout (time-major, flat), the policy evaluated under grad."""
        obs, actions, valid = buf.flat("obs"), buf.flat("actions"), buf.flat("valid")
        flat_shape = valid.shape  # (T N,), or (S, T N) seed-stacked
        advantages = buf.tensor(targets.advantages.reshape(flat_shape))
        step_weights = buf.tensor(buf.valid_np.reshape(flat_shape) * np.float32(1.0 / valid.shape[-1]))
        if self.normalize_advantage:  # statistics over the valid transitions (of each seed)
            weights = step_weights / step_weights.sum(-1, keepdim=True).clamp_min(1e-30)
            mean = (advantages * weights).sum(-1, keepdim=True)
            std = ((advantages - mean).square() * weights).sum(-1, keepdim=True).sqrt()
            advantages = (advantages - mean) / (std + 1e-8) * valid
        dist_params = self.policy(obs)
        return RolloutBatch(
            obs=obs, actions=actions, advantages=advantages, valid=valid,
            terminated=buf.flat("terminated"), truncated=buf.flat("truncated"), episode_step=buf.flat("episode_step"),
            dist_params=dist_params, log_prob=self.policy.log_prob(dist_params, actions),
            noise={key: buf.flat(f"noise/{key}") for key in buf.noise_np}, policy=self.policy,
            theta_net=self.theta_net, theta_direct=self.theta_direct, step_weights=step_weights,
            num_envs=buf.num_envs, state_values=targets.values,
        )  # fmt: skip

    def estimator_gradients(self, buf: RolloutBuffer, estimators: dict[str, Estimator]) -> dict[str, torch.Tensor]:
        """Each estimator's g_hat (flat, w.r.t. all policy parameters) on one rollout; nothing is updated."""
        batch = self.make_batch(buf, self.targets(buf))
        return {name: estimator.gradient(batch) for name, estimator in estimators.items()}

    # ------------------------------------------------------------------------------- diagnostics, state
    def explained_variance(self) -> float | list[float]:
        """1 - Var(R - V) / Var(R) on the last logged update's valid transitions (nan if Var(R) = 0)."""
        if self._last is None:
            return math.nan if self.num_seeds is None else [math.nan] * self.num_seeds
        if self.num_seeds is not None:
            return [self._explained_variance(*(x[k] for x in self._last)) for k in range(self.num_seeds)]
        return self._explained_variance(*self._last)

    @staticmethod
    def _explained_variance(returns: np.ndarray, values: np.ndarray, valid: np.ndarray) -> float:
        r, v = returns[valid].astype(np.float64), values[valid].astype(np.float64)
        if r.size < 2:
            return math.nan
        var_r = r.var()
        return math.nan if var_r == 0 else float(1.0 - (r - v).var() / var_r)

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "grad_variance": self.grad_variance.state_dict()}
        if self.value_optimizer is not None:
            state["value_optimizer"] = self.value_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if ("value_optimizer" in state) != self.separate_value:
            how = {True: "with its own optimizer", False: "jointly with the policy"}
            raise CheckpointError(
                f"the checkpoint's value function was trained {how['value_optimizer' in state]}, this run's is "
                f"trained {how[self.separate_value]}. Fix: use the value.steps, value.lr and value.optimizer of "
                "the run that wrote it, or a new run directory (hydra.run.dir=...)."
            )
        self.optimizer.load_state_dict(state["optimizer"])
        if self.value_optimizer is not None:
            self.value_optimizer.load_state_dict(state["value_optimizer"])
        self.grad_variance.load_state_dict(state["grad_variance"])
