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

**Options** (``configs/estimator/{lax,relax,dlax}.yaml``, README "Estimators"): what c_phi sees besides
the action (``cv_inputs``: the state, V(s_t), the time in the episode, the policy's distribution
parameters, all constants for theta), warm-up phi steps on the first rollout (``cv_warmup_steps``), a
linear decay of phi's learning rate (``cv_lr_schedule``), the state part of the control variate trained
on the variance objective instead of by regression (``state_baseline=variance``: b_phi(s) replaces V(s)
in the score weight), and two diagnostics that leave training unchanged: how far phi is from its
optimum on the current rollout (``cv_gap_interval``) and the score and pathwise terms' squared norms
(``cv_term_norms_interval``). The defaults are today's estimator, computed by the same operations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

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
#: What c_phi may see besides the (relaxed) action, in the order its input vector holds them.
CV_INPUTS = ("state", "value", "time", "dist_params")
STATE_BASELINES = ("regression", "variance")
LR_SCHEDULES = ("constant", "linear")
#: Floor of the objective inside cv/gap's logarithm (an objective of exactly 0 would give log 0).
_TINY = 1e-30

Scalar = float | list[float]  # a logged value: one float, or one per seed when stacked over seeds


class ControlVariateNet(nn.Module):
    """c_phi(f, x): an MLP on the concatenated input features f (by default the state) and the action x."""

    def __init__(self, feature_dim: int, x_dim: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        # A near-zero output layer: the estimator starts out as the plain baseline estimator.
        self.net = MLP(feature_dim + x_dim, hidden_sizes, 1, activation, ortho_init=True, out_gain=0.01)

    def forward(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([features, x], dim=-1)).squeeze(-1)


class StateBaselineNet(nn.Module):
    """b_phi(f): the control variate's state part when it is trained on the variance objective
    (``state_baseline=variance``); an MLP on the same input features as c_phi, without the action."""

    def __init__(self, feature_dim: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        # Initialised like V (output gain 1): it has to grow to the returns' scale.
        self.net = MLP(feature_dim, hidden_sizes, 1, activation, ortho_init=True, out_gain=1.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


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


def _elementwise(function, *values: Scalar) -> Scalar:
    """``function`` applied to logged scalars: floats, or per-seed lists element by element."""
    if isinstance(values[0], list):
        return [function(*items) for items in zip(*values, strict=True)]
    return function(*values)


def _lower_finite(best: float, candidate: float) -> float:
    return candidate if math.isfinite(candidate) and candidate < best else best


def _log_ratio(before: float, after: float) -> float:
    return math.log(max(before, _TINY)) - math.log(max(after, _TINY))


def _check_options(
    cv_warmup_steps: int, cv_lr_schedule: str, cv_inputs: Sequence[str], cv_time_limit: int | None,
    cv_gap_interval: int, cv_gap_steps: int, cv_term_norms_interval: int, state_baseline: str,
) -> None:  # fmt: skip
    """One-line :class:`ConfigError` for a bad option (a run's config is checked the same way before this)."""

    def count(value: Any, low: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    def fail(what: str, fix: str) -> None:
        raise ConfigError(f"{what}. Fix: {fix}.")

    for key, value, low in (
        ("cv_warmup_steps", cv_warmup_steps, 0),
        ("cv_gap_interval", cv_gap_interval, 0),
        ("cv_gap_steps", cv_gap_steps, 1),
        ("cv_term_norms_interval", cv_term_norms_interval, 0),
    ):
        if not count(value, low):
            fail(f"estimator.{key}={value!r} must be an integer >= {low}", f"estimator.{key}={low}")
    for key, value, options in (
        ("cv_lr_schedule", cv_lr_schedule, LR_SCHEDULES),
        ("state_baseline", state_baseline, STATE_BASELINES),
    ):
        if value not in options:
            fail(f"estimator.{key}={value!r} is not one of {', '.join(options)}", f"estimator.{key}={options[0]}")
    inputs = [cv_inputs] if isinstance(cv_inputs, str) else list(cv_inputs)
    if any(x not in CV_INPUTS for x in inputs) or len(set(inputs)) != len(inputs):
        fail(f"estimator.cv_inputs={inputs!r} must list distinct inputs from {', '.join(CV_INPUTS)}",
             "estimator.cv_inputs=[state]")  # fmt: skip
    if cv_time_limit is not None and not count(cv_time_limit, 1):
        fail(f"estimator.cv_time_limit={cv_time_limit!r} must be a positive integer (or null)",
             "estimator.cv_time_limit=500")  # fmt: skip


class ControlVariateEstimator(Estimator):
    """Base class: owns phi, its optimizer, the variance-objective training step and the options above.

    Subclasses build ``self.cv`` in :meth:`bind` on :meth:`feature_dim` inputs, evaluate it on
    :meth:`cv_features`, add :meth:`score_offset` to the score weight's control variate, and
    implement :meth:`surrogate_terms` (the score and pathwise parts of the surrogate, for diagnostics).
    """

    def __init__(
        self,
        name: str | None = None,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "relu",
        cv_lr: float = 1e-3,
        cv_steps: int = 1,
        cv_objective: str = "variance",
        cv_adam_betas: Sequence[float] = (0.9, 0.999),
        cv_warmup_steps: int = 0,
        cv_lr_schedule: str = "constant",
        cv_inputs: Sequence[str] = ("state",),
        cv_time_limit: int | None = None,
        cv_gap_interval: int = 0,
        cv_gap_steps: int = 100,
        cv_term_norms_interval: int = 0,
        state_baseline: str = "regression",
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
        _check_options(cv_warmup_steps, cv_lr_schedule, cv_inputs, cv_time_limit, cv_gap_interval, cv_gap_steps,
                       cv_term_norms_interval, state_baseline)  # fmt: skip
        self.cv_warmup_steps, self.cv_lr_schedule = cv_warmup_steps, cv_lr_schedule
        self.cv_inputs = tuple(x for x in CV_INPUTS if x in cv_inputs)  # the input vector's order, whatever the list's
        self.cv_time_limit = cv_time_limit
        self.cv_gap_interval, self.cv_gap_steps = cv_gap_interval, cv_gap_steps
        self.cv_term_norms_interval, self.state_baseline = cv_term_norms_interval, state_baseline
        self.uses_progress = cv_lr_schedule == "linear"
        self._state_only = self.cv_inputs == ("state",)  # today's c_phi(s, x): the features are the observations
        self.state_baseline_net: StateBaselineNet | None = None
        self._feature_dim: int | None = None
        self._updates = 0  # learn() calls in this process: the diagnostics' cadence
        #: The latest diagnostics (cv/gap, cv/*_sq_norm), logged with every update until the next measurement.
        self._diagnostics: dict[str, Scalar] = {}
        self.cv_optimizer: torch.optim.Optimizer | None = None
        #: None until the first update has checked the surrogate's graph (see the module docstring).
        self.fast_gradient: bool | None = None

    # ------------------------------------------------------------------------------- c_phi's inputs
    def feature_dim(self, obs_dim: int, dist_dim: int) -> int:
        """Width of :meth:`cv_features` for ``obs_dim`` observations and ``dist_dim`` distribution features."""
        widths = {"state": obs_dim, "value": 1, "time": 1, "dist_params": dist_dim}
        self._feature_dim = sum(widths[x] for x in self.cv_inputs)
        return self._feature_dim

    def cv_features(self, batch: RolloutBatch) -> torch.Tensor:
        """c_phi's inputs besides the action, per step (B, F): constants for theta, so that theta reaches
        c_phi only through the sample (a direct path would bias LAX)."""
        if self._state_only:
            return batch.obs
        parts = []
        for name in self.cv_inputs:
            if name == "state":
                parts.append(batch.obs)
            elif name == "value":
                parts.append(batch.values.unsqueeze(-1))
            elif name == "time":  # reset slots (-1) have weight 0; clamped so that their input stays in range
                step = batch.episode_step.clamp_min(0).to(batch.obs.dtype)
                parts.append((step / self.cv_time_limit).unsqueeze(-1))
            else:
                parts.append(self.distribution_features(batch))
        return torch.cat(parts, dim=-1) if parts else batch.obs[..., :0]

    def distribution_features(self, batch: RolloutBatch) -> torch.Tensor:
        """The policy's distribution parameters at s_t, detached (``cv_inputs`` ``dist_params``)."""
        return batch.dist_params.detach()

    def score_offset(self, batch: RolloutBatch, features: torch.Tensor) -> torch.Tensor | None:
        """b_phi(s_t) - V(s_t) with ``state_baseline=variance``, else None.

        Added to the control variate in the score weight: A_t - (c + b_phi - V) = R_t - b_phi(s_t) - c,
        so b_phi replaces V as the state baseline (R_t = A_t + V(s_t), the regression targets), and V
        only bootstraps. b_phi(s_t) does not depend on the action or on theta: the score term it adds
        has zero mean given s_t, so the estimator stays unbiased.
        """
        if self.state_baseline_net is None:
            return None
        return self.state_baseline_net(features) - batch.values

    def surrogate_terms(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """The surrogate's ``score`` part (every term weighted by a log-density) and its ``pathwise`` part
        (the reparameterised control-variate terms); their gradients add up to g_hat."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------- phi
    def resolve_time_limit(self, time_limit: int | None) -> None:
        """``cv_time_limit=null`` takes the env's time limit (called by :meth:`bind`, before anything is built)."""
        if "time" in self.cv_inputs and self.cv_time_limit is None:
            if time_limit is None or time_limit < 1:
                raise ConfigError(
                    "estimator.cv_inputs has time (the episode step divided by the time limit), but this env has no "
                    "time limit. Fix: estimator.cv_time_limit=<the episode length to divide by, e.g. 1000>."
                )
            self.cv_time_limit = int(time_limit)

    def bind(self, policy: Policy, obs_dim: int, action_space: gym.spaces.Space, time_limit: int | None = None) -> None:
        """Subclasses build their networks, then call this last: the state baseline b_phi is built (if
        asked for), phi moves to the policy's device and gets its optimizer now, so that building it
        (torch's optimizers import a lot on first use) never lands inside training."""
        self.resolve_time_limit(time_limit)
        super().bind(policy, obs_dim, action_space, time_limit)
        if self.state_baseline == "variance":
            self.state_baseline_net = StateBaselineNet(self._feature_dim, self.hidden_sizes, self.activation)
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

    def set_progress(self, fraction_done: float) -> None:
        """``cv_lr_schedule=linear``: phi's learning rate decays linearly to 0 at the end of training."""
        if self.cv_lr_schedule == "linear":
            self._ensure_optimizer()
            for group in self.cv_optimizer.param_groups:
                group["lr"] = self.cv_lr * max(1.0 - fraction_done, 0.0)

    def step_control_variate(
        self, phi_grads: Sequence[torch.Tensor | None], objective: Scalar, raise_if_not_finite: bool = True
    ) -> bool:
        """One optimizer step of phi on the given gradients (None = no dependence), if they are finite.

        Stacked over seeds, a seed whose objective or gradient is not finite gets a zero gradient
        instead (the others step); the learner stops that seed, seeing its non-finite ``cv/loss``.
        One agent: a non-finite objective or gradient raises :class:`TrainingDivergedError` (or, with
        ``raise_if_not_finite=False``, skips the step). Returns whether phi stepped.
        """
        self._ensure_optimizer()
        grad = self._flat_phi.set_grad(phi_grads)
        if self.num_seeds is not None:
            finite = torch.isfinite(grad).all(-1) & torch.isfinite(torch.tensor(objective, device=grad.device))
            grad.masked_fill_(~finite.unsqueeze(-1), 0.0)
            self.cv_optimizer.step()
            return True
        # Checked before the step, so that phi (and the checkpoints) never hold what a blow-up made.
        if not (math.isfinite(objective) and math.isfinite(grad.sum().item())):
            if not raise_if_not_finite:
                return False
            raise TrainingDivergedError(
                f"the control variate's variance objective became non-finite (||g||^2 = {objective:.4g}); "
                "phi was not updated and the last good checkpoint is kept. "
                f"Fix: lower estimator.cv_lr (now {self.cv_lr:g}) or learner.lr."
            )
        self.cv_optimizer.step()
        return True

    # ------------------------------------------------------------------------------- g_hat and its variance
    def estimate(self, batch: RolloutBatch) -> torch.Tensor:
        """This update's surrogate; with the fast computation, its linearisation in the policy outputs.

        The fast computation needs h = dS/d(dist_params) as a function of phi anyway, so the
        learner gets <dist_params, h> + <d, h_d> (h fixed): the same gradient in theta, and the
        learner's one backward pass through the policy network then yields g_hat for :meth:`learn`.
        """
        if self.cv_warmup_steps and not self._optimizer_has_stepped():
            self._warm_up(batch)
        surrogate = self.surrogate(batch)  # (S,) when stacked over seeds
        if self.fast_gradient is None:
            self._check_graph(surrogate, batch)
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

    def _check_graph(self, surrogate: torch.Tensor, batch: RolloutBatch) -> None:
        """Decide, once, between the fast phi gradient and plain double backprop (module docstring)."""
        self.fast_gradient = not reaches_other_than_through(surrogate, batch.theta_net, batch.dist_params)
        if not self.fast_gradient:
            log.warning(
                "estimator %s: the surrogate reaches the policy network other than through "
                "batch.dist_params; using plain double backprop for the control variate (slower)",
                self.name,
            )

    def _optimizer_has_stepped(self) -> bool:
        """Whether phi's optimizer has any state: False on a fresh run's first update, True after a resume."""
        self._ensure_optimizer()
        return bool(self.cv_optimizer.state)

    def _warm_up(self, batch: RolloutBatch) -> None:
        """``cv_warmup_steps`` phi steps on the first rollout at the initial theta, before the first update's
        g_hat is computed (so the first policy step already uses the warmed-up control variate)."""
        if self.fast_gradient is None:
            fresh = batch.reevaluated()
            self._check_graph(self.surrogate(fresh), fresh)
        for _ in range(self.cv_warmup_steps):
            self.step_control_variate(*self.objective_gradient(batch.reevaluated()))

    def objective_gradient(self, batch: RolloutBatch) -> tuple[list[torch.Tensor | None], Scalar]:
        """d objective / d phi and the objective on ``batch`` (a graph the learner will not use), by the
        fast computation where the surrogate allows it, else by plain double backprop."""
        if self.fast_gradient:
            return self.fast_phi_gradient(batch)
        return self.reference_phi_gradient(batch)

    def learn(self, g_hat: torch.Tensor) -> dict[str, Scalar]:
        """``cv_steps`` phi steps on the variance objective, the first at the phi that gave ``g_hat``."""
        batch, h_p, h_direct = self._pending
        del self._pending
        self._updates += 1
        gap_due = self.cv_gap_interval and self._updates % self.cv_gap_interval == 0
        if self.cv_term_norms_interval and self._updates % self.cv_term_norms_interval == 0:
            self._diagnostics.update(self.term_norms(batch.reevaluated()))  # at the phi that gave g_hat
        if h_p is None:
            phi_grads, objective = self.reference_phi_gradient(batch.reevaluated())
        else:
            phi_grads, objective = self._fast_phi_gradient(batch, g_hat, h_p, h_direct)
        first = best = objective
        self.step_control_variate(phi_grads, objective)
        for _ in range(self.cv_steps - 1):
            # Same rollout, same theta, the new phi: a fresh policy graph (the learner consumed the last).
            phi_grads, objective = self.objective_gradient(batch.reevaluated())
            best = _elementwise(_lower_finite, best, objective) if gap_due else best
            self.step_control_variate(phi_grads, objective)
        if gap_due:
            self._diagnostics.update(self.optimality_gap(batch, first, best))
        metrics = {"cv/loss": objective, **self.control_variate_metrics()}
        if self.cv_lr_schedule != "constant":
            lr = self.cv_optimizer.param_groups[0]["lr"]
            metrics["cv/learning_rate"] = lr if self.num_seeds is None else [lr] * self.num_seeds
        if self._diagnostics:
            metrics.update(self._diagnostics)
        return metrics

    # ------------------------------------------------------------------------------- diagnostics
    def optimality_gap(self, batch: RolloutBatch, objective: Scalar, best: Scalar) -> dict[str, Scalar]:
        """How far phi is from its optimum on this rollout at this theta; training is left unchanged.

        ``objective`` is ||g_hat||^2 at the phi that gave this update's g_hat, ``best`` the lowest value
        the update's own phi steps have seen since. From phi after those steps, ``cv_gap_steps`` more
        steps on the same rollout follow (with the optimizer's own state), each evaluated; then phi, its
        gradient and the optimizer's state are put back exactly. Returns cv/gap = log objective -
        log(lowest objective seen), >= 0, and cv/gap_loss, that lowest objective.
        """
        saved = self._save_phi()
        try:
            for step in range(self.cv_gap_steps + 1):
                phi_grads, value = self.objective_gradient(batch.reevaluated())
                best = _elementwise(_lower_finite, best, value)
                if step == self.cv_gap_steps or not self.step_control_variate(phi_grads, value, False):
                    break
        finally:
            self._restore_phi(saved)
        return {"cv/gap": _elementwise(_log_ratio, objective, best), "cv/gap_loss": best}

    def _save_phi(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        state = self.cv_optimizer.state[self._flat_phi.data]
        saved_state = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
        return self._flat_phi.data.clone(), self._flat_phi.grad.clone(), saved_state

    @torch.no_grad()
    def _restore_phi(self, saved: tuple[torch.Tensor, torch.Tensor, dict[str, Any]]) -> None:
        """Copy back in place: the parameters are views into the flat tensor the optimizer holds."""
        data, grad, saved_state = saved
        self._flat_phi.data.copy_(data)
        self._flat_phi.grad.copy_(grad)
        state = self.cv_optimizer.state[self._flat_phi.data]
        for key, value in saved_state.items():
            if isinstance(value, torch.Tensor) and isinstance(state.get(key), torch.Tensor):
                state[key].copy_(value)
            else:
                state[key] = value

    def term_norms(self, batch: RolloutBatch) -> dict[str, Scalar]:
        """||grad_theta score part||^2, ||grad_theta pathwise part||^2 and the cosine between the two
        (:meth:`surrogate_terms`; g_hat is their sum, so cv/loss = a + b + 2 cos sqrt(a b))."""
        lead = () if self.num_seeds is None else (self.num_seeds,)
        flat = {}
        for name, term in self.surrogate_terms(batch).items():
            grads = torch.autograd.grad(term.sum(), batch.theta, retain_graph=True, allow_unused=True)
            flat[name] = torch.cat([
                (torch.zeros_like(p) if g is None else g.detach()).reshape(*lead, -1)
                for g, p in zip(grads, batch.theta, strict=True)
            ], dim=-1)  # fmt: skip
        score, pathwise = flat["score"], flat["pathwise"]
        score_sq, pathwise_sq = score.square().sum(-1), pathwise.square().sum(-1)
        cosine = (score * pathwise).sum(-1) / (score_sq * pathwise_sq).sqrt().clamp_min(_TINY)
        return {
            "cv/score_sq_norm": self.scalar(score_sq),
            "cv/pathwise_sq_norm": self.scalar(pathwise_sq),
            "cv/score_pathwise_cosine": self.scalar(cosine),
        }

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
