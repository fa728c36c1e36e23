"""The A2C update: one gradient step on the whole rollout, the estimator supplying the policy term.

    loss = L_pg(theta) - ent_coef * mean_t H(pi(.|s_t)) + vf_coef * mean_t (R_t - V(s_t))^2

L_pg = -S is minus the estimator's surrogate (grad_theta S = g_hat); R_t and A_t = R_t - V_old(s_t)
come from :func:`rl_relax.returns.gae`. Means run over valid transitions only (weights
w_t = valid_t / num_valid). The global gradient norm is clipped to ``max_grad_norm``, then one
optimizer step updates policy and value together (as in stable-baselines3's A2C). Estimators with
a learned control variate first train it on the variance objective (their own optimizer), with
g_hat computed before phi moves.

The value term enters backpropagation through its gradient with respect to the value outputs,

    d/dV(s_t) [vf_coef * sum_t w_t (R_t - V(s_t))^2] = -(vf_coef * w_t) * (2 (R_t - V(s_t))),

computed on the host from the V(s_t) copied there for the advantages anyway: on CartPole-sized
batches the autograd nodes of a squared error cost more than the value network's own backward
pass. The products are taken in autograd's order, so the gradients are bit-identical to
backpropagating the squared error (a test checks it).

g_hat itself (policy parameters only, entropy and value terms excluded, before clipping) feeds
:class:`~rl_relax.variance.OnlineGradientVariance`, identically for every estimator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rl_relax.errors import TrainingDivergedError
from rl_relax.estimators.base import Estimator, EstimatorBatch
from rl_relax.networks import Policy, ValueNet
from rl_relax.optim import FlatParameters, make_optimizer
from rl_relax.returns import gae
from rl_relax.rollout import RolloutBuffer
from rl_relax.variance import OnlineGradientVariance


@dataclass
class UpdateStats:
    """Scalars of one update (Python floats: on the CPU a host copy is cheaper than tensor bookkeeping)."""

    policy_loss: float  # -S, the estimator's surrogate
    value_loss: float
    grad_norm: float  # global norm of the whole gradient before clipping
    pg_norm: float  # norm of the policy-gradient estimate g_hat alone, before clipping
    entropy: float | None  # mean policy entropy; None when neither the loss nor diagnostics needed it


@dataclass
class _Prepared:
    make_batch: Callable[[], EstimatorBatch]
    values: torch.Tensor  # ((T + 1) N,) V on every observation of the rollout, with grad
    value_grad: torch.Tensor  # ((T + 1) N,) d(vf_coef * value loss)/d values (0 on the bootstrap row)
    value_loss: float  # sum_t w_t (R_t - V(s_t))^2
    returns: np.ndarray  # (B,) TD(lambda) targets
    values_old: np.ndarray  # (B,) V(s_t), no grad
    weights: np.ndarray  # (B,) valid / num_valid


# A loss term for backpropagation: an output and the gradient flowing into it (None: a scalar loss, 1).
_Term = tuple[torch.Tensor, torch.Tensor | None]


def _backward(terms: list[_Term], retain_graph: bool = False) -> None:
    """Accumulate sum_k J_k^T v_k into the parameters' gradients for (output_k, v_k) pairs (v_k None: 1)."""
    outputs, grads = zip(*terms, strict=True)
    torch.autograd.backward(list(outputs), list(grads), retain_graph=retain_graph)


def _flatten(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    return [chunk.view_as(p) for chunk, p in zip(flat.split([p.numel() for p in like]), like, strict=True)]


class A2CLearner:
    """Owns the policy/value optimizer and performs the A2C update on a filled rollout buffer."""

    def __init__(
        self, policy: Policy, value: ValueNet, estimator: Estimator, learner_cfg, variance_decay: float = 0.99
    ):
        self.policy, self.value, self.estimator = policy, value, estimator
        # Plain Python copies: OmegaConf attribute access costs microseconds on the hot path.
        self.gamma, self.gae_lambda = float(learner_cfg.gamma), float(learner_cfg.gae_lambda)
        self.ent_coef, self.vf_coef = float(learner_cfg.ent_coef), float(learner_cfg.vf_coef)
        self.normalize_advantage = bool(learner_cfg.normalize_advantage)
        self.lr_schedule = str(learner_cfg.lr_schedule)
        # Policy parameters: the network's, then the distribution's direct ones (Gaussian log-std).
        self.policy_params = [*policy.net.parameters(), *policy.direct_parameters()]
        if len(self.policy_params) != len(list(policy.parameters())):
            raise TypeError("a Policy's parameters must be its net's plus direct_parameters()")
        self.num_net_params = len(list(policy.net.parameters()))
        self.num_net_params_flat = sum(p.numel() for p in policy.net.parameters())
        self.num_policy_params = sum(p.numel() for p in self.policy_params)
        # Policy parameters first: the policy's gradient is the leading slice of the flat gradient.
        self.flat = FlatParameters([*self.policy_params, *value.parameters()])
        self.optimizer = make_optimizer([self.flat.data], learner_cfg)
        self.base_lr = float(learner_cfg.lr)
        self.max_grad_norm = math.inf if learner_cfg.max_grad_norm is None else float(learner_cfg.max_grad_norm)
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # Incoming gradients of the surrogate (fast path) and of the mean entropy: d loss / d term.
        self._minus_one = torch.tensor(-1.0, device=self.flat.data.device)
        self._minus_ent_coef = torch.tensor(-self.ent_coef, device=self.flat.data.device)
        #: Scalars the estimator reported from its last control-variate update (logged as they are).
        self.estimator_metrics: dict[str, float] = {}
        self.grad_variance = OnlineGradientVariance(
            self.num_policy_params, decay=variance_decay, device=self.flat.data.device
        )

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_progress(self, fraction_done: float) -> None:
        """Apply the learning-rate schedule at this fraction of total_timesteps."""
        linear = self.lr_schedule == "linear"
        lr = self.base_lr * max(1.0 - fraction_done, 0.0) if linear else self.base_lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _prepare(self, buf: RolloutBuffer) -> _Prepared:
        """Advantages, returns, the value term and a batch factory for one rollout (V evaluated with grad)."""
        num_steps, num_envs = buf.num_steps, buf.num_envs
        obs_all = buf.obs.reshape((num_steps + 1) * num_envs, -1)
        # V on all T + 1 observations at once; the host copy gives the advantages and bootstrap.
        values_all = self.value(obs_all)
        values_old = values_all.detach().cpu().numpy().reshape(num_steps + 1, num_envs)
        advantages, returns = gae(
            buf.rewards_np, values_old[:-1], values_old[-1], buf.terminated_np, buf.truncated_np,
            buf.valid_np, gamma=self.gamma, gae_lambda=self.gae_lambda,
        )  # fmt: skip
        batch_size = num_steps * num_envs
        device = values_all.device
        valid_np = buf.valid_np.reshape(batch_size)
        weights_np = valid_np * np.float32(1.0 / max(valid_np.sum(), 1))
        returns_np = returns.reshape(batch_size)
        values_np = values_old[:-1].reshape(batch_size)
        error = returns_np - values_np
        value_grad = np.zeros((num_steps + 1) * num_envs, dtype=np.float32)
        np.multiply(-(np.float32(self.vf_coef) * weights_np), np.float32(2.0) * error, out=value_grad[:batch_size])
        value_loss = float(np.dot(error * error, weights_np))

        weights = torch.from_numpy(weights_np).to(device)
        advantages = torch.from_numpy(advantages.reshape(batch_size)).to(device)
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

        value_grad_t = torch.from_numpy(value_grad).to(device)
        return _Prepared(make_batch, values_all, value_grad_t, value_loss, returns_np, values_np, weights_np)

    def update(self, buf: RolloutBuffer, global_step: int, diagnostics: bool = False) -> UpdateStats:
        """One A2C update from ``buf``.

        ``diagnostics`` also computes what is only logged (the entropy when it is not part of the
        loss, the explained variance): the trainer asks for it on the updates it logs.
        """
        prep = self._prepare(buf)
        batch = prep.make_batch()
        surrogate = self.estimator.surrogate(batch)
        # Everything but the policy-gradient estimate: the value term (as outputs and their incoming
        # gradient, see the module docstring) and the entropy bonus.
        rest: list[_Term] = [(prep.values, prep.value_grad)]
        entropy = None
        if self.ent_coef != 0.0:
            entropy = batch.masked_mean(self.policy.entropy(batch.dist_params))
            rest.append((entropy, self._minus_ent_coef))
        elif diagnostics:  # without an entropy bonus the entropy is only logged: keep it out of the graph
            with torch.no_grad():
                entropy = batch.masked_mean(self.policy.entropy(batch.dist_params))

        self.flat.zero_grad()
        policy_grad = self.flat.grad[: self.num_policy_params]
        self.estimator_metrics = {}
        if self.estimator.trains_control_variate:
            g = self._train_control_variate(surrogate, batch, prep, rest)
        elif self.ent_coef == 0.0:
            # Fast path: one backward pass; the policy part of the gradient is exactly -g_hat.
            _backward([(surrogate, self._minus_one), *rest])
            g = -policy_grad
        else:
            _backward(rest, retain_graph=True)
            g = _flatten(torch.autograd.grad(surrogate, self.policy_params))
            policy_grad.sub_(g)
        self.grad_variance.update(g)
        pg_norm = torch.linalg.vector_norm(g).item()
        grad_norm = self.flat.clip_grad_norm_(self.max_grad_norm)
        # A non-finite loss makes the gradient norm non-finite: one check, before any parameter moves.
        if not math.isfinite(grad_norm):
            raise TrainingDivergedError(
                f"the loss became non-finite at environment step {global_step} (policy surrogate "
                f"{surrogate.item():.4g}, value loss {prep.value_loss:.4g}). "
                "Training stopped; the last good checkpoint is kept. "
                "Fix: lower learner.lr, enable env.normalize_reward, or set learner.max_grad_norm."
            )
        self.optimizer.step()
        if diagnostics:
            self._last = (prep.returns, prep.values_old, prep.weights)
        return UpdateStats(
            -surrogate.item(), prep.value_loss, grad_norm, pg_norm, None if entropy is None else entropy.item()
        )

    def control_variate_gradient(
        self, surrogate: torch.Tensor, batch: EstimatorBatch, rest: list[_Term] | None = None
    ) -> tuple[list[torch.Tensor | None], torch.Tensor, float]:
        """The variance objective's gradient for phi, plus g_hat, without double backprop through theta.

        S depends on theta only through the distribution parameters p_t = f_theta(s_t) (logits or
        means) and the policy's direct parameters d (the Gaussian log-std). With h = dS/dp and
        h_d = dS/dd, computed differentiably in phi, g_hat = (J^T h, h_d) where J = dp/dtheta, and

            d ||g_hat||^2 / d phi = 2 (J g_net)^T dh/dphi + 2 h_d^T dh_d/dphi,

        so one vector-Jacobian product (g_hat), one Jacobian-vector product through the policy
        network (forward mode) and one backward pass through h give the exact gradient of the
        ``variance`` objective. ``dist_params`` uses sum_t ||h_t||^2 instead.

        If ``rest`` (value and entropy terms, as (output, incoming gradient) pairs) is given, the flat
        gradient buffer ends up holding grad(rest) - g_hat, the gradient of the learner's loss;
        without an entropy term one backward pass through the policy network serves both.

        Returns (phi gradients, g_hat flattened, the objective's value).
        """
        estimator = self.estimator
        direct = self.policy.direct_parameters()
        h_p, *h_direct = torch.autograd.grad(surrogate, [batch.dist_params, *direct], create_graph=True)
        net_params = self.policy_params[: self.num_net_params]
        one_pass = rest is not None and self.ent_coef == 0.0
        if one_pass:
            # One backward pass gives both -J^T h (policy) and the value gradient.
            _backward([(batch.dist_params, -h_p.detach()), *rest], retain_graph=True)
            g_net = -self.flat.grad[: self.num_net_params_flat]
        else:
            if rest is not None:
                _backward(rest, retain_graph=True)
            g_net = _flatten(torch.autograd.grad(batch.dist_params, net_params, h_p.detach(), retain_graph=True))
        g = torch.cat([g_net, *(h.detach().reshape(-1) for h in h_direct)])
        if rest is not None:  # the one-pass backward already put -g_net into the buffer
            start = self.num_net_params_flat if one_pass else 0
            self.flat.grad[start : self.num_policy_params].sub_(g[start:])
        if estimator.cv_objective == "variance":
            tangents = _unflatten(g_net, net_params)
            directions = [2.0 * self.policy.net.jvp(batch.obs, tangents)]
            directions += [2.0 * h.detach() for h in h_direct]
            outputs = [h_p, *h_direct]
            value = g.square().sum().item()
        else:
            directions, outputs = [2.0 * h_p.detach()], [h_p]
            value = h_p.detach().square().sum().item()
        phi_grads = torch.autograd.grad(outputs, estimator.phi_parameters(), directions, allow_unused=True)
        return list(phi_grads), g, value

    def _train_control_variate(
        self, surrogate: torch.Tensor, batch: EstimatorBatch, prep: _Prepared, rest: list[_Term]
    ) -> torch.Tensor:
        """phi's ``cv_steps`` steps on the variance objective; returns g_hat for the policy step.

        g_hat is computed before phi moves, on the same rollout (the paper's Alg. 2); later phi
        steps recompute the objective on the same rollout at the same theta. ``rest`` is
        backpropagated into the flat gradient buffer on the way.
        """
        estimator = self.estimator
        phi_grads, g, value = self.control_variate_gradient(surrogate, batch, rest)
        estimator.step_control_variate(phi_grads)
        for _ in range(estimator.cv_steps - 1):
            again = prep.make_batch()
            phi_grads, _, value = self.control_variate_gradient(estimator.surrogate(again), again)
            estimator.step_control_variate(phi_grads)
        self.estimator_metrics = {"cv/loss": value, **estimator.control_variate_metrics()}
        return g

    def estimator_gradients(self, buf: RolloutBuffer, estimators: dict[str, Estimator]) -> dict[str, torch.Tensor]:
        """Each estimator's g_hat (flat, w.r.t. all policy parameters) on one rollout; nothing is updated."""
        prep = self._prepare(buf)
        batch = prep.make_batch()
        out = {}
        for name, estimator in estimators.items():
            grads = torch.autograd.grad(estimator.surrogate(batch), self.policy_params, retain_graph=True)
            out[name] = _flatten(grads)
        return out

    def explained_variance(self) -> float:
        """1 - Var(R - V) / Var(R) on the last update's valid transitions (nan if Var(R) = 0)."""
        if self._last is None:
            return math.nan
        returns, values, weights = self._last
        mask = weights > 0
        r, v = returns[mask].astype(np.float64), values[mask].astype(np.float64)
        if r.size < 2:
            return math.nan
        var_r = r.var()
        return math.nan if var_r == 0 else float(1.0 - (r - v).var() / var_r)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "grad_variance": self.grad_variance.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.grad_variance.load_state_dict(state["grad_variance"])
