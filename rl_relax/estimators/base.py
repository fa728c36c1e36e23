"""The estimator interface: a rollout in, the policy-gradient estimate g_hat out.

Each update the learner (:mod:`rl_relax.learner`) builds a :class:`RolloutBatch` and

1. asks :meth:`Estimator.estimate` for a surrogate S with grad_theta S = g_hat, and backpropagates
   -S together with its value and entropy terms (one backward pass);
2. hands g_hat back to :meth:`Estimator.learn`, where the estimator trains whatever it learns (a
   control variate, a temperature, ...) with its own optimizer, and returns its scalars to log.

The learner never looks inside an estimator and names none of its hyperparameters.

Contract of a new estimator (one module in this package + one ``configs/estimator/<name>.yaml``):

- implement :meth:`Estimator.surrogate`: a scalar S(theta, phi) with grad_theta S = g_hat, the ascent
  direction estimating grad_theta E[return]. Average per-step terms with :meth:`RolloutBatch.mean`
  (a constant normaliser, see there) so that every estimator has the same expectation;
- optionally override :meth:`Estimator.learn` (and :meth:`Estimator.estimate`) to train what the
  estimator learns (see :class:`~rl_relax.estimators.control_variate.ControlVariateEstimator`, which
  does it for any surrogate built from a learned control variate);
- ask for the sampling noise it needs at acting time (``noise_keys``, ``extra_noise``) so that it can
  rebuild the executed sample under the current parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl_relax.networks import Policy


@dataclass
class RolloutBatch:
    """One rollout of T steps in N envs, the policy evaluated under grad.

    For S seeds trained together (:mod:`rl_relax.seed_group`) every tensor below gains a leading
    seed dimension (S, B, ...), the networks are seed-stacked, and :meth:`mean` (so every
    surrogate) returns one value per seed, (S,): write estimators with ``dim=-1`` / ``dim=-2``
    for the per-step and row dimensions and they work both ways.

    Every per-step tensor is stored *time-major and flat*: B = T * N rows, row t * N + i is step t of
    env i. Estimators that treat steps independently use the tensors as they are; estimators that look
    across time (per-episode sums, trajectory-wise control variates) view them as (T, N, ...) with
    :meth:`by_time` (free) and use the masks. ``valid`` is False on gymnasium's NEXT_STEP reset slots
    (the step after an episode ended, whose action the env ignored); ``episode_step`` is a valid step's
    position in its episode (0 for the first step; -1 on reset slots).
    """

    obs: torch.Tensor  # (B, obs_dim)
    actions: torch.Tensor  # (B, ...) as stored: unclipped for Box
    advantages: torch.Tensor  # (B,) A_t from the shared returns machinery, no grad; 0 on reset slots
    valid: torch.Tensor  # (B,) bool
    terminated: torch.Tensor  # (B,) bool
    truncated: torch.Tensor  # (B,) bool
    episode_step: torch.Tensor  # (B,) int, -1 on reset slots
    dist_params: torch.Tensor  # (B, ...) logits or Gaussian means, a function of theta
    log_prob: torch.Tensor  # (B,) log pi(a_t|s_t), computed from dist_params
    noise: dict[str, torch.Tensor]  # (B, ...) the stored sampling noise the estimator asked for
    policy: Policy
    theta_net: list[nn.Parameter]  # the policy network's parameters (dist_params = net(obs))
    theta_direct: list[nn.Parameter]  # the distribution's own parameters (the Gaussian log-std)
    step_weights: torch.Tensor  # (B,) valid_t / (T N), see :meth:`mean`
    num_envs: int
    #: V on the rollout's observations as the learner computed it, ((T + 1) N,) (the last N rows: the
    #: bootstrap observations; may carry grad), or None where the caller has no V. Read it as :attr:`values`.
    state_values: torch.Tensor | None = None

    @property
    def theta(self) -> list[nn.Parameter]:
        """The policy parameters theta, in the order of g_hat's entries: the network's, then the direct ones."""
        return [*self.theta_net, *self.theta_direct]

    @property
    def num_steps(self) -> int:
        return self.valid.shape[-1] // self.num_envs

    @property
    def seed_shape(self) -> tuple[int, ...]:
        """() for one agent; (S,) for S seeds trained together, whose per-step tensors are (S, B, ...)."""
        return tuple(self.valid.shape[:-1])

    @property
    def values(self) -> torch.Tensor:
        """V(s_t) per step, (B,), detached: an input a control variate may use (a constant for theta and phi)."""
        if self.state_values is None:
            raise ValueError("this RolloutBatch carries no state values (state_values=None)")
        return self.state_values[..., : self.valid.shape[-1]].detach()

    def by_time(self, x: torch.Tensor) -> torch.Tensor:
        """A per-step tensor (B, ...) viewed in the rollout's time layout (T, N, ...) (seeds: (S, T, N, ...))."""
        lead = self.valid.dim()
        return x.view(*x.shape[: lead - 1], self.num_steps, self.num_envs, *x.shape[lead:])

    def mean(self, per_step: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """(1 / (T N)) * sum_t valid_t * x_t for a per-step (B,) tensor: the batch average, constant normaliser.

        ``scale``: a per-step factor c_t that is a constant (it is detached), giving the average of c_t x_t
        with c_t folded into the weights (one operation fewer to differentiate: the score-function term
        A_t log pi_t is the hot one).

        The normaliser is the number of slots T * N, not the number of valid transitions: under
        NEXT_STEP autoreset the number of valid slots depends on where episodes end, so on the actions,
        and dividing by it gives terms with zero mean given s_t (a state baseline V(s_t), a control
        variate's correction) a nonzero mean given (s_t, a_t), of order 1/batch. With a constant
        normaliser every estimator has the same expectation, whatever V and c_phi are. (Reset slots
        still count in the normaliser; that only rescales the step, as a learning rate would.)
        """
        weights = self.step_weights if scale is None else self.step_weights * scale.detach()
        if per_step.dim() == 1:
            return torch.dot(per_step, weights)
        return (per_step * weights).sum(-1)  # seeds stacked: one mean per seed, (S,)

    def reevaluated(self) -> RolloutBatch:
        """The same batch with a fresh policy forward pass (a new graph from theta to dist_params)."""
        dist_params = self.policy(self.obs)
        log_prob = self.policy.log_prob(dist_params, self.actions)
        return dataclasses.replace(self, dist_params=dist_params, log_prob=log_prob)


class Estimator(nn.Module):
    """A policy-gradient estimator g_hat of grad_theta E[return] (ascent direction)."""

    #: Names of the policy's sampling noise to store at acting time ("u" categorical, "eps" Gaussian).
    noise_keys: tuple[str, ...] = ()

    def __init__(self, name: str | None = None):
        super().__init__()
        self.name = name or type(self).__name__

    def bind(self, policy: Policy, obs_dim: int, action_space: gym.spaces.Space, time_limit: int | None = None) -> None:
        """Called once before training: check the action space, build what the estimator learns.

        ``time_limit``: the env's episode time limit (None if it has none), for estimators that use it.
        """

    #: Whether :meth:`set_progress` must be called before every update (a schedule over training).
    uses_progress: bool = False

    def set_progress(self, fraction_done: float) -> None:
        """Called by the learner with the fraction of ``total_timesteps`` done (its own schedules' fraction):
        before every update when :attr:`uses_progress`, else at the start of training only."""

    def extra_noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes (per env) of extra noise drawn at acting time by :meth:`extra_noise`."""
        return {}

    def extra_noise(self, action: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Extra per-step noise to store, given the sampled actions (e.g. RELAX's v), from ``rng``."""
        return {}

    #: Parameters that meet per-state tensors by broadcasting (see :mod:`rl_relax.seed_stack`).
    seed_broadcast: ClassVar[dict[str, int]] = {}
    #: None for one agent; S when stacked over S seeds (:func:`rl_relax.seed_stack.stack_modules`).
    num_seeds: int | None = None

    def scalar(self, value: torch.Tensor) -> float | list[float]:
        """A logged scalar: a float, or one float per seed when stacked over seeds."""
        return value.item() if self.num_seeds is None else value.reshape(self.num_seeds, -1)[:, 0].tolist()

    def surrogate(self, batch: RolloutBatch) -> torch.Tensor:
        """S(theta) with grad_theta S = g_hat (one per seed, (S,), when stacked over seeds)."""
        raise NotImplementedError

    def estimate(self, batch: RolloutBatch) -> torch.Tensor:
        """This update's surrogate: a scalar whose gradient with respect to ``batch.theta`` is g_hat.

        The learner backpropagates it together with its value and entropy terms, then calls
        :meth:`learn`. The default is :meth:`surrogate` itself; an estimator that has already
        computed dS/d(dist_params) may return the linearisation <dist_params, dS/d(dist_params)>
        instead, which has the same gradient.
        """
        return self.surrogate(batch)

    def learn(self, g_hat: torch.Tensor) -> dict[str, float]:
        """Train what the estimator learns, once per update, after :meth:`estimate`.

        ``g_hat`` is the gradient of the surrogate :meth:`estimate` returned, flat over
        ``batch.theta`` ((S, P) when stacked over seeds), computed before theta moves. Returns
        scalars to log (e.g. ``cv/loss``), one per seed (a list) when stacked.
        """
        return {}

    def gradient(self, batch: RolloutBatch) -> torch.Tensor:
        """g_hat on ``batch``, flat over ``batch.theta``; nothing is trained (variance probes use this).

        The policy's graph is kept, so that several estimators can be compared on one batch.
        """
        grads = torch.autograd.grad(self.surrogate(batch), batch.theta, retain_graph=True)
        return torch.cat([g.reshape(-1) for g in grads])

    def extra_state(self) -> dict:
        """Optimizer state etc. to checkpoint besides ``state_dict()``."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned."""
