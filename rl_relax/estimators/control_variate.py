"""Estimators with a learned, action-dependent control variate (LAX, RELAX, DLAX): the shared training.

The full control variate is V(s) + c_phi(s, .): V is fit by regression like the baseline's, and phi
(c_phi's network plus anything else an estimator learns, e.g. RELAX's temperature) is trained only to
minimise the variance of the policy-gradient estimate g_hat (Grathwohl et al. 2018, Sec. 3.3, eq.
vargrad):

    d Var(g_hat) / d phi = E[ d ||g_hat||^2 / d phi ]      (E[g_hat] does not depend on phi)

so ||g_hat||^2 of one rollout is an unbiased single-sample estimate of the objective. Objectives:

- ``variance`` (default): g_hat with respect to *all* policy parameters theta;
- ``dist_params``: sum_t ||dS/dp_t||^2 with respect to the distribution parameters p_t (logits or
  Gaussian means): a cheaper proxy that ignores how the network couples samples (as in
  Storchastic and the paper's VAE code).

phi has its own Adam optimizer and learning rate (a loss multiplier would not be a learning rate
under Adam). g_hat is computed before phi moves (the paper's Alg. 2); then
:meth:`ControlVariateEstimator.learn` takes ``cv_steps`` phi steps on the same rollout at the same theta.

**The objective's gradient, fast and exact.** S depends on theta through the distribution parameters
p = f_theta(s) and the policy's direct parameters d (the Gaussian log-std). With h = dS/dp and
h_d = dS/dd, both differentiable in phi, g_hat = (J^T h, h_d) where J = dp/dtheta, and

    d ||g_hat||^2 / d phi = 2 (J g_net)^T dh/dphi + 2 h_d^T dh_d/dphi,

so one vector-Jacobian product (g_hat), one Jacobian-vector product through the policy network
(forward mode, :meth:`rl_relax.networks.MLP.jvp`) and one backward pass through h replace double
backprop through the policy network. This holds only if S reaches the network's parameters through
``batch.dist_params`` alone. On its first update the estimator checks that in S's autograd graph; a
surrogate that reaches them another way (say, a control variate that runs the policy network again)
gets the plain double-backprop computation (:func:`rl_relax.surrogates.variance_loss`) instead, with a
warning. Both computations are tested equal through the learner's real update.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import gymnasium as gym
import torch
from torch import nn

from rl_relax import surrogates
from rl_relax.errors import ConfigError, TrainingDivergedError
from rl_relax.estimators.base import Estimator, RolloutBatch
from rl_relax.networks import MLP, Policy
from rl_relax.optim import FlatParameters, make_adam

log = logging.getLogger("rl_relax")

OBJECTIVES = ("variance", "dist_params")


class ControlVariateNet(nn.Module):
    """c_phi(s, x): an MLP on the concatenated state and action (or relaxed action) x."""

    def __init__(self, obs_dim: int, x_dim: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        # A near-zero output layer: the estimator starts out as the plain baseline estimator.
        self.net = MLP(obs_dim + x_dim, hidden_sizes, 1, activation, ortho_init=True, out_gain=0.01)

    def forward(self, obs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, x], dim=-1)).squeeze(-1)


def reaches_other_than_through(output: torch.Tensor, params: Sequence[torch.Tensor], through: torch.Tensor) -> bool:
    """Whether ``output``'s autograd graph reaches any of ``params`` without passing through ``through``."""
    targets = {id(p) for p in params}
    stop = through.grad_fn
    seen: set[int] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node is stop or id(node) in seen:
            continue
        seen.add(id(node))
        if id(getattr(node, "variable", None)) in targets:
            return True
        stack.extend(next_node for next_node, _ in node.next_functions)
    return False


class ControlVariateEstimator(Estimator):
    """Base class: owns phi, its optimizer, and the variance-objective training step."""

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
        #: None until the first update has checked the surrogate's graph (see the module docstring).
        self.fast_gradient: bool | None = None

    # ------------------------------------------------------------------------------- phi
    def bind(self, policy: Policy, obs_dim: int, action_space: gym.spaces.Space) -> None:
        """Subclasses build their networks, then call this last: phi moves to the policy's device and
        gets its optimizer now, so that building it (torch's optimizers import a lot on first use) never
        lands inside training."""
        super().bind(policy, obs_dim, action_space)
        self.to(next(policy.parameters()).device)
        self._ensure_optimizer()

    def _ensure_optimizer(self) -> None:
        """Create phi's optimizer on first use, once the parameters sit on their final device."""
        if self.cv_optimizer is None:
            self._phi = [p for p in self.parameters() if p.requires_grad]
            self._flat_phi = FlatParameters(self._phi, num_seeds=self.num_seeds)
            self.cv_optimizer = make_adam([self._flat_phi.data], lr=self.cv_lr, betas=self.cv_adam_betas)

    def after_stacking(self) -> None:
        """Called by :func:`rl_relax.seed_stack.stack_modules`: phi's optimizer on the stacked parameters."""
        self.cv_optimizer, self.fast_gradient = None, None
        self._ensure_optimizer()

    def phi_parameters(self) -> list[nn.Parameter]:
        """phi: every trainable parameter of the estimator (network, temperature, ...)."""
        self._ensure_optimizer()
        return self._phi

    @property
    def phi_gradient(self) -> torch.Tensor:
        """The gradient of the last phi step, flat over :meth:`phi_parameters` (a diagnostic)."""
        self._ensure_optimizer()
        return self._flat_phi.grad

    def step_control_variate(self, phi_grads: Sequence[torch.Tensor | None], objective: float | list[float]) -> None:
        """One optimizer step of phi on the given gradients (None = no dependence), if they are finite.

        Stacked over seeds, a seed whose objective or gradient is not finite gets a zero gradient
        instead (the others step); the learner stops that seed, seeing its non-finite ``cv/loss``.
        """
        self._ensure_optimizer()
        grad = self._flat_phi.set_grad(phi_grads)
        if self.num_seeds is not None:
            finite = torch.isfinite(grad).all(-1) & torch.isfinite(torch.tensor(objective, device=grad.device))
            grad.masked_fill_(~finite.unsqueeze(-1), 0.0)
            self.cv_optimizer.step()
            return
        # Checked before the step, so that phi (and the checkpoints) never hold what a blow-up made.
        if not (math.isfinite(objective) and math.isfinite(grad.sum().item())):
            raise TrainingDivergedError(
                f"the control variate's variance objective became non-finite (||g||^2 = {objective:.4g}); "
                "phi was not updated and the last good checkpoint is kept. "
                f"Fix: lower estimator.cv_lr (now {self.cv_lr:g}) or learner.lr."
            )
        self.cv_optimizer.step()

    # ------------------------------------------------------------------------------- g_hat and its variance
    def estimate(self, batch: RolloutBatch) -> torch.Tensor:
        """This update's surrogate; with the fast computation, its linearisation in the policy outputs.

        The fast computation needs h = dS/d(dist_params) as a function of phi anyway, so the
        learner gets <dist_params, h> + <d, h_d> (h fixed): the same gradient in theta, and the
        learner's one backward pass through the policy network then yields g_hat for :meth:`learn`.
        """
        surrogate = self.surrogate(batch)  # (S,) when stacked over seeds
        if self.fast_gradient is None:
            self.fast_gradient = not reaches_other_than_through(surrogate, batch.theta_net, batch.dist_params)
            if not self.fast_gradient:
                log.warning(
                    "estimator %s: the surrogate reaches the policy network other than through "
                    "batch.dist_params; using plain double backprop for the control variate (slower)",
                    self.name,
                )
        if not self.fast_gradient:
            self._pending = (batch, None, None)
            return surrogate
        h_p, h_direct = self._output_gradients(surrogate, batch)
        self._pending = (batch, h_p, h_direct)
        if self.num_seeds is None:
            linearised = torch.dot(batch.dist_params.reshape(-1), h_p.detach().reshape(-1))
            for d, h in zip(batch.theta_direct, h_direct, strict=True):
                linearised = linearised + torch.dot(d.reshape(-1), h.detach().reshape(-1))
            return linearised
        per_seed = (batch.dist_params * h_p.detach()).reshape(self.num_seeds, -1).sum(-1)
        for d, h in zip(batch.theta_direct, h_direct, strict=True):
            per_seed = per_seed + (d * h.detach()).reshape(self.num_seeds, -1).sum(-1)
        return per_seed

    def learn(self, g_hat: torch.Tensor) -> dict[str, float]:
        """``cv_steps`` phi steps on the variance objective, the first at the phi that gave ``g_hat``."""
        batch, h_p, h_direct = self._pending
        del self._pending
        if h_p is None:
            phi_grads, objective = self.reference_phi_gradient(batch.reevaluated())
        else:
            phi_grads, objective = self._fast_phi_gradient(batch, g_hat, h_p, h_direct)
        self.step_control_variate(phi_grads, objective)
        for _ in range(self.cv_steps - 1):
            # Same rollout, same theta, the new phi: a fresh policy graph (the learner consumed the last).
            again = batch.reevaluated()
            if self.fast_gradient:
                phi_grads, objective = self.fast_phi_gradient(again)
            else:
                phi_grads, objective = self.reference_phi_gradient(again)
            self.step_control_variate(phi_grads, objective)
        return {"cv/loss": objective, **self.control_variate_metrics()}

    def control_variate_metrics(self) -> dict[str, float]:
        """Extra scalars to log (e.g. the relaxation temperature)."""
        return {}

    def _output_gradients(self, surrogate: torch.Tensor, batch: RolloutBatch):
        """h = dS/d(dist_params) and h_d = dS/d(direct parameters), differentiable in phi."""
        total = surrogate if surrogate.dim() == 0 else surrogate.sum()  # seeds: their sum has each seed's gradient
        h_p, *h_direct = torch.autograd.grad(
            total, [batch.dist_params, *batch.theta_direct], create_graph=True, allow_unused=True
        )
        h_direct = [torch.zeros_like(d) if h is None else h for h, d in zip(h_direct, batch.theta_direct, strict=True)]
        return h_p, h_direct

    def fast_phi_gradient(self, batch: RolloutBatch) -> tuple[list[torch.Tensor | None], float]:
        """d objective / d phi and the objective's value by the vjp/jvp computation (module docstring)."""
        h_p, h_direct = self._output_gradients(self.surrogate(batch), batch)
        g_net = torch.autograd.grad(batch.dist_params, batch.theta_net, h_p.detach(), retain_graph=True)
        lead = () if self.num_seeds is None else (self.num_seeds,)
        g_hat = torch.cat(
            [*(x.reshape(*lead, -1) for x in g_net), *(h.detach().reshape(*lead, -1) for h in h_direct)], dim=-1
        )
        return self._fast_phi_gradient(batch, g_hat, h_p, h_direct)

    def _fast_phi_gradient(self, batch: RolloutBatch, g_hat: torch.Tensor, h_p, h_direct):
        if self.cv_objective == "variance":
            sizes = [p[0].numel() if self.num_seeds is not None else p.numel() for p in batch.theta_net]
            chunks = g_hat[..., : sum(sizes)].split(sizes, dim=-1)
            tangents = [chunk.reshape(p.shape) for chunk, p in zip(chunks, batch.theta_net, strict=True)]
            jg = batch.policy.net.jvp(batch.obs, tangents).view_as(h_p)
            outputs = [h_p, *h_direct]
            directions = [2.0 * jg, *(2.0 * h.detach() for h in h_direct)]
            objective = self._per_seed_square_sum([g_hat])
        else:
            outputs, directions = [h_p], [2.0 * h_p.detach()]
            objective = self._per_seed_square_sum([h_p.detach()])
        phi_grads = torch.autograd.grad(outputs, self.phi_parameters(), directions, allow_unused=True)
        return list(phi_grads), objective

    def reference_phi_gradient(self, batch: RolloutBatch) -> tuple[list[torch.Tensor | None], float]:
        """The same by plain double backprop: the reference the fast computation is tested against."""
        params = batch.theta if self.cv_objective == "variance" else [batch.dist_params]
        surrogate = self.surrogate(batch)
        loss, grads = surrogates.variance_loss(surrogate if surrogate.dim() == 0 else surrogate.sum(), params)
        phi_grads = torch.autograd.grad(loss, self.phi_parameters(), allow_unused=True)
        return list(phi_grads), loss.item() if self.num_seeds is None else self._per_seed_square_sum(grads)

    def _per_seed_square_sum(self, tensors: Sequence[torch.Tensor]) -> float | list[float]:
        """sum of squares of ``tensors``: a float, or one per seed when stacked over seeds."""
        if self.num_seeds is None:
            (only,) = tensors
            return only.square().sum().item()
        return sum(t.reshape(self.num_seeds, -1).square().sum(-1) for t in tensors).tolist()

    # ------------------------------------------------------------------------------- checkpoints
    def extra_state(self) -> dict:
        self._ensure_optimizer()
        return {"cv_optimizer": self.cv_optimizer.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self._ensure_optimizer()
        self.cv_optimizer.load_state_dict(state["cv_optimizer"])
