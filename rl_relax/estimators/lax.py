"""LAX for reparameterizable (Gaussian) policies (Grathwohl et al. 2018, Sec. 3.1 and App. C)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rl_relax import surrogates
from rl_relax.errors import ConfigError
from rl_relax.estimators.base import RolloutBatch
from rl_relax.estimators.control_variate import ControlVariateEstimator, ControlVariateNet
from rl_relax.networks import Policy
from rl_relax.samplers import gaussian_reparam


class LaxEstimator(ControlVariateEstimator):
    r"""LAX with the control variate evaluated at the executed action.

    With a_t = mu_theta(s_t) + sigma_theta * eps_t (eps_t stored at acting time, so a_t is the action
    the env received, before clipping):

        g_hat = (1/(T N)) sum_t valid_t [ grad log pi(a_t|s_t) * (A_t - c_phi(s_t, a_t))
                                          + grad c_phi(s_t, a_t(theta, eps_t)) ]

    Both terms use the same a_t (App. C's proof needs it; the released code's fresh sample in the
    second term is biased). The score weight's c_phi(s_t, a_t) carries no gradient to theta; the
    pathwise term differentiates through the reparameterisation (:func:`rl_relax.surrogates.lax`).
    A_t = R_t - V(s_t), so the full control variate is V + c_phi. Unbiased for any c_phi.

    c_phi's inputs besides a_t are ``cv_inputs`` (:meth:`cv_features`; ``dist_params`` = the mean and
    log-std at s_t, detached, as the paper's continuous code feeds mu and sigma). With
    ``state_baseline=variance`` the score weight is R_t - b_phi(s_t) - c_phi(s_t, a_t) (:meth:`score_offset`).
    """

    noise_keys = ("eps",)

    def bind(self, policy: Policy, obs_dim: int, action_space: gym.spaces.Space, time_limit: int | None = None) -> None:
        if not isinstance(action_space, gym.spaces.Box):
            raise ConfigError(
                f"estimator=lax needs a continuous (Box) action space, this env has {action_space}. "
                "Fix: use estimator=relax for discrete actions (or estimator=baseline)."
            )
        act_dim = int(np.prod(action_space.shape))
        features = self.feature_dim(obs_dim, dist_dim=2 * act_dim)
        self.cv = ControlVariateNet(features, act_dim, self.hidden_sizes, self.activation)
        super().bind(policy, obs_dim, action_space, time_limit)

    def distribution_features(self, batch: RolloutBatch) -> torch.Tensor:
        means = batch.dist_params.detach()
        return torch.cat([means, batch.policy.log_std.detach().expand_as(means)], dim=-1)

    def control_variates(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """c_phi(s_t, a_t(theta, eps_t)) and the score weight's control variate (theta's path cut), per step."""
        means, features = batch.dist_params, self.cv_features(batch)
        actions = gaussian_reparam(means, batch.policy.log_std, batch.noise["eps"])
        c = self.cv(torch.cat([features, features], -2), torch.cat([actions, actions.detach()], -2))
        c_action, c_action_fixed = c.split(actions.shape[-2], dim=-1)
        offset = self.score_offset(batch, features)
        return c_action, c_action_fixed if offset is None else c_action_fixed + offset

    def surrogate(self, batch: RolloutBatch) -> torch.Tensor:
        c_action, c_action_fixed = self.control_variates(batch)
        return batch.mean(surrogates.lax(batch.log_prob, batch.advantages, c_action, c_action_fixed))

    def surrogate_terms(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        c_action, c_action_fixed = self.control_variates(batch)
        score = surrogates.score_function(batch.log_prob, batch.advantages - c_action_fixed.detach())
        return {"score": batch.mean(score), "pathwise": batch.mean(c_action)}
