"""The A2C update: one gradient step on the whole rollout, the estimator supplying the policy term.

    loss = L_pg(theta) - ent_coef * mean_t H(pi(.|s_t)) + vf_coef * mean_t (R_t - V(s_t))^2

L_pg is the estimator's surrogate (grad_theta L_pg = -g_hat); R_t and A_t = R_t - V_old(s_t) come
from :func:`rl_relax.returns.gae`. Means run over valid transitions only. The global gradient norm
is clipped to ``max_grad_norm``, then one optimizer step updates policy and value together (as in
stable-baselines3's A2C). Estimators with a learned control variate train it afterwards, with
their own optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from rl_relax.errors import TrainingDivergedError
from rl_relax.estimators.base import Estimator, EstimatorBatch
from rl_relax.networks import Policy, ValueNet
from rl_relax.optim import FlatParameters, make_optimizer
from rl_relax.returns import gae
from rl_relax.rollout import RolloutBuffer


@dataclass
class UpdateStats:
    """Scalars of one update (Python floats: on the CPU a host copy is cheaper than tensor bookkeeping)."""

    policy_loss: float
    value_loss: float
    grad_norm: float  # global norm before clipping
    entropy: float | None  # mean policy entropy; None when neither the loss nor diagnostics needed it


class A2CLearner:
    """Owns the policy/value optimizer and performs the A2C update on a filled rollout buffer."""

    def __init__(self, policy: Policy, value: ValueNet, estimator: Estimator, learner_cfg):
        self.policy, self.value, self.estimator = policy, value, estimator
        # Plain Python copies: OmegaConf attribute access costs microseconds on the hot path.
        self.gamma, self.gae_lambda = float(learner_cfg.gamma), float(learner_cfg.gae_lambda)
        self.ent_coef, self.vf_coef = float(learner_cfg.ent_coef), float(learner_cfg.vf_coef)
        self.normalize_advantage = bool(learner_cfg.normalize_advantage)
        self.lr_schedule = str(learner_cfg.lr_schedule)
        self.flat = FlatParameters([*policy.parameters(), *value.parameters()])
        self.optimizer = make_optimizer([self.flat.data], learner_cfg)
        self.base_lr = float(learner_cfg.lr)
        self.max_grad_norm = math.inf if learner_cfg.max_grad_norm is None else float(learner_cfg.max_grad_norm)
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        #: Scalars the estimator reported from its last control-variate update (logged as they are).
        self.estimator_metrics: dict[str, float] = {}

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_progress(self, fraction_done: float) -> None:
        """Apply the learning-rate schedule at this fraction of total_timesteps."""
        linear = self.lr_schedule == "linear"
        lr = self.base_lr * max(1.0 - fraction_done, 0.0) if linear else self.base_lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def update(self, buf: RolloutBuffer, global_step: int, diagnostics: bool = False) -> UpdateStats:
        """One A2C update from ``buf``.

        ``diagnostics`` also computes what is only logged (the entropy when it is not part of the
        loss, the explained variance): the trainer asks for it on the updates it logs.
        """
        num_steps, num_envs = buf.num_steps, buf.num_envs
        obs_all = buf.obs.reshape((num_steps + 1) * num_envs, -1)
        # V on all T + 1 observations at once; the detached copy gives the advantages and bootstrap.
        values_all = self.value(obs_all)
        values_old = values_all.detach().cpu().numpy().reshape(num_steps + 1, num_envs)
        advantages, returns = gae(
            buf.rewards_np, values_old[:-1], values_old[-1], buf.terminated_np, buf.truncated_np,
            buf.valid_np, gamma=self.gamma, gae_lambda=self.gae_lambda,
        )  # fmt: skip
        batch_size = num_steps * num_envs
        device = values_all.device
        advantages = torch.from_numpy(advantages.reshape(batch_size)).to(device)
        returns = torch.from_numpy(returns.reshape(batch_size)).to(device)
        valid_np = buf.valid_np.reshape(batch_size)
        weights = torch.from_numpy(valid_np * np.float32(1.0 / max(valid_np.sum(), 1))).to(device)
        if self.normalize_advantage:
            mean = (advantages * weights).sum()
            std = ((advantages - mean).square() * weights).sum().sqrt()
            advantages = (advantages - mean) / (std + 1e-8) * (weights > 0)
        obs = obs_all[:batch_size]
        actions = buf.actions.reshape(batch_size, *buf.actions.shape[2:])
        noise = {k: v.reshape(batch_size, *v.shape[2:]) for k, v in buf.noise.items()}

        def make_batch() -> EstimatorBatch:
            params = self.policy(obs)
            return EstimatorBatch(
                obs=obs, actions=actions, advantages=advantages, weights=weights,
                dist_params=params, log_prob=self.policy.log_prob(params, actions),
                noise=noise, policy=self.policy,
            )  # fmt: skip

        batch = make_batch()
        policy_loss = self.estimator.policy_loss(batch)
        values = values_all[:batch_size]
        value_loss = batch.masked_mean((returns - values).square())
        loss = policy_loss + self.vf_coef * value_loss
        entropy = None
        if self.ent_coef != 0.0:
            entropy = batch.masked_mean(self.policy.entropy(batch.dist_params))
            loss = loss - self.ent_coef * entropy
        elif diagnostics:  # without an entropy bonus the entropy is only logged: keep it out of the graph
            with torch.no_grad():
                entropy = batch.masked_mean(self.policy.entropy(batch.dist_params))
        self.flat.zero_grad()
        loss.backward()
        grad_norm = self.flat.clip_grad_norm_(self.max_grad_norm)
        # A non-finite loss makes the gradient norm non-finite: one check, before any parameter moves.
        if not math.isfinite(grad_norm):
            raise TrainingDivergedError(
                f"the loss became non-finite at environment step {global_step} (loss {loss.item():.4g}: "
                f"policy {policy_loss.item():.4g}, value {value_loss.item():.4g}). "
                "Training stopped; the last good checkpoint is kept. "
                "Fix: lower learner.lr, enable env.normalize_reward, or set learner.max_grad_norm."
            )
        self.optimizer.step()
        self.estimator_metrics = self.estimator.update_control_variate(make_batch)
        if diagnostics:
            self._last = (returns, values.detach(), weights)
        return UpdateStats(
            policy_loss.item(), value_loss.item(), grad_norm, None if entropy is None else entropy.item()
        )

    def explained_variance(self) -> float:
        """1 - Var(R - V) / Var(R) on the last update's valid transitions (nan if Var(R) = 0)."""
        if self._last is None:
            return math.nan
        returns, values, weights = self._last
        mask = weights > 0
        r, v = returns[mask], values[mask]
        if r.numel() < 2:
            return math.nan
        var_r = r.var()
        return math.nan if var_r.item() == 0 else (1.0 - (r - v).var() / var_r).item()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
