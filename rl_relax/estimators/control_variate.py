"""Shared machinery of estimators with a learned, action-dependent control variate (LAX, RELAX).

The full control variate is V(s) + c_phi(s, .): V is fit by regression like the baseline's, and
c_phi (this module's network, plus anything else an estimator learns, e.g. RELAX's temperature) is
trained only to minimise the variance of the policy-gradient estimate g_theta (Grathwohl et al. 2018,
Sec. 3.3, eq. vargrad):

    d Var(g_theta) / d phi = E[ d ||g_theta||^2 / d phi ]      (E[g_theta] does not depend on phi)

so ||g_theta||^2 of one rollout is an unbiased single-sample estimate of the objective. Objectives:

- ``variance`` (default): g_theta is the estimator's gradient with respect to *all* policy
  parameters, kept differentiable in phi (double backprop): one ``autograd.grad`` with
  ``create_graph=True`` over the whole batch, then one more for phi.
- ``dist_params``: the per-sample squared gradient with respect to the distribution parameters
  (logits, or Gaussian means), sum_t ||dS/dp_t||^2. Cheaper (no second pass through the policy
  network's weights) but a different quantity: it ignores how the network couples samples, so it
  optimises a proxy of the variance that actually reaches theta (as in Storchastic and the paper's
  VAE code).

phi has its own Adam optimizer and learning rate (a loss multiplier would not be a learning rate
under Adam) and takes ``cv_steps`` steps per policy update, recomputing g_theta each step on the same
rollout at the same theta. The learner computes the objective's gradient
(:meth:`rl_relax.learner.A2CLearner.control_variate_gradient`) for every such estimator alike; an
estimator only supplies its surrogate and its networks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rl_relax.errors import ConfigError
from rl_relax.estimators.base import Estimator
from rl_relax.networks import MLP
from rl_relax.optim import FlatParameters, make_adam

OBJECTIVES = ("variance", "dist_params")


class ControlVariateNet(nn.Module):
    """c_phi(s, x): an MLP on the concatenated state and action (or relaxed action) x."""

    def __init__(self, obs_dim: int, x_dim: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        # A near-zero output layer: the estimator starts out as the plain baseline estimator.
        self.net = MLP(obs_dim + x_dim, hidden_sizes, 1, activation, ortho_init=True, out_gain=0.01)

    def forward(self, obs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, x], dim=-1)).squeeze(-1)


class ControlVariateEstimator(Estimator):
    """Base class: owns c_phi, its optimizer, and the variance-objective training step."""

    trains_control_variate = True

    def __init__(
        self,
        name: str | None = None,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "relu",
        cv_lr: float = 1e-3,
        cv_steps: int = 1,
        cv_objective: str = "variance",
        cv_adam_betas: Sequence[float] = (0.9, 0.999),
    ):
        super().__init__(name)
        if cv_objective not in OBJECTIVES:
            raise ConfigError(
                f"estimator.cv_objective={cv_objective!r} is not one of {', '.join(OBJECTIVES)}. "
                "Fix: estimator.cv_objective=variance."
            )
        if not cv_lr > 0 or int(cv_steps) < 1:
            raise ConfigError(f"estimator.cv_lr={cv_lr} must be > 0 and estimator.cv_steps={cv_steps} >= 1.")
        self.hidden_sizes, self.activation = list(hidden_sizes), activation
        self.cv_lr, self.cv_steps, self.cv_objective = float(cv_lr), int(cv_steps), cv_objective
        self.cv_adam_betas = tuple(cv_adam_betas)
        self.cv_optimizer: torch.optim.Optimizer | None = None

    def _ensure_optimizer(self) -> None:
        """Create phi's optimizer on first use, once the parameters sit on their final device."""
        if self.cv_optimizer is None:
            self._phi = [p for p in self.parameters() if p.requires_grad]
            self._flat_phi = FlatParameters(self._phi)
            self.cv_optimizer = make_adam([self._flat_phi.data], lr=self.cv_lr, betas=self.cv_adam_betas)

    def phi_parameters(self) -> list[nn.Parameter]:
        """phi: every trainable parameter of the estimator (network, temperature, ...)."""
        self._ensure_optimizer()
        return self._phi

    def step_control_variate(self, phi_grads: Sequence[torch.Tensor | None]) -> None:
        """One optimizer step of phi on the given gradients (None = no dependence)."""
        self._ensure_optimizer()
        views = [
            torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1)
            for p, g in zip(self._phi, phi_grads, strict=True)
        ]
        torch.cat(views, out=self._flat_phi.grad)
        self.cv_optimizer.step()

    def control_variate_metrics(self) -> dict[str, float]:
        """Extra scalars to log (e.g. the relaxation temperature)."""
        return {}

    def extra_state(self) -> dict:
        self._ensure_optimizer()
        return {"cv_optimizer": self.cv_optimizer.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self._ensure_optimizer()
        self.cv_optimizer.load_state_dict(state["cv_optimizer"])
