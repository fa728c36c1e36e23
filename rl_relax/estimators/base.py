"""The estimator interface between the learner and a policy-gradient estimator."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl_relax.networks import Policy


@dataclass
class EstimatorBatch:
    """One rollout, flattened to B = T * N transitions, with the policy evaluated under grad.

    ``valid`` is 1.0 for real transitions and 0.0 for NEXT_STEP reset transitions; every
    per-transition term is weighted by ``weights = valid / num_valid`` (a mean over the valid
    transitions).
    """

    obs: torch.Tensor  # (B, obs_dim)
    actions: torch.Tensor  # (B, ...) as stored: unclipped for Box
    advantages: torch.Tensor  # (B,) A_t from the shared returns machinery, no grad
    weights: torch.Tensor  # (B,) valid / num_valid: 0 for reset transitions, sums to 1
    dist_params: torch.Tensor  # (B, ...) logits or Gaussian means, a function of theta
    log_prob: torch.Tensor  # (B,) log pi(a_t|s_t), a function of theta
    noise: dict[str, torch.Tensor]  # (B, ...) the stored sampling noise the estimator asked for
    policy: Policy

    def masked_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of a per-transition quantity over the valid transitions."""
        return torch.dot(x, self.weights)


class Estimator(nn.Module):
    """A policy-gradient estimator g_hat of grad_theta E[return].

    Subclasses implement :meth:`surrogate`, a scalar S(theta, phi) with grad_theta S = g_hat (the
    ascent direction; the learner minimises -S). Estimators with a learned control variate
    (:class:`~rl_relax.estimators.control_variate.ControlVariateEstimator`) own its parameters and
    optimizer, so ``state_dict`` and :meth:`extra_state` checkpoint them.
    """

    #: Names of the policy's sampling noise to store at acting time ("u" categorical, "eps" Gaussian).
    noise_keys: tuple[str, ...] = ()
    #: Whether the learner should train a control variate (see ControlVariateEstimator).
    trains_control_variate: bool = False

    def __init__(self, name: str | None = None):
        super().__init__()
        self.name = name or type(self).__name__

    def bind(self, policy: Policy, obs_dim: int, action_space: gym.spaces.Space) -> None:
        """Called once by the learner: check the action space, build control-variate networks."""

    def extra_noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes (per env) of extra noise drawn at acting time by :meth:`extra_noise`."""
        return {}

    def extra_noise(self, action: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Extra per-step noise to store, given the sampled actions (e.g. RELAX's v), from ``rng``."""
        return {}

    def surrogate(self, batch: EstimatorBatch) -> torch.Tensor:
        """S(theta) with grad_theta S = g_hat, the estimate of the gradient of the mean return."""
        raise NotImplementedError

    def extra_state(self) -> dict:
        """Optimizer state etc. to checkpoint besides ``state_dict()``."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned."""
