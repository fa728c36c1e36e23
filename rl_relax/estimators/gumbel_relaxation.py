"""The control variate on the Gumbel-relaxed action that RELAX and DLAX share (discrete actions).

With z = log pi(.|s) + g(u) the Gumbel-perturbed logits (a = argmax z, u stored at acting time), the
control variate is c(s, z) = c_phi(s, softmax(z / tau)): a network of the state features (``cv_inputs``)
and the relaxed action, with a learned temperature tau (Grathwohl et al. 2018, Sec. 3.2 and App. B).
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl_relax.errors import ConfigError
from rl_relax.estimators.base import RolloutBatch
from rl_relax.estimators.control_variate import ControlVariateEstimator, ControlVariateNet
from rl_relax.networks import Policy


class GumbelRelaxationEstimator(ControlVariateEstimator):
    """A control-variate estimator whose c_phi sees the relaxed action softmax(z / tau)."""

    noise_keys = ("u",)
    # Stacked over seeds the temperature is (S, 1, 1), against z's (S, B, K).
    seed_broadcast: ClassVar[dict[str, int]] = {"log_temperature": 2}

    def __init__(self, *args, temperature_init: float = 1.0, learn_temperature: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_temperature = nn.Parameter(
            torch.tensor(float(np.log(temperature_init))), requires_grad=bool(learn_temperature)
        )
        self.num_actions = 0

    def bind(self, policy: Policy, obs_dim: int, action_space: gym.spaces.Space, time_limit: int | None = None) -> None:
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ConfigError(
                f"estimator={self.name} needs a Discrete action space, this env has {action_space}. "
                "Fix: use estimator=lax for continuous actions (or estimator=baseline)."
            )
        self.num_actions = int(action_space.n)
        features = self.feature_dim(obs_dim, dist_dim=self.num_actions)
        self.cv = ControlVariateNet(features, self.num_actions, self.hidden_sizes, self.activation)
        super().bind(policy, obs_dim, action_space, time_limit)

    def relaxed_cv(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """c(s, z) = c_phi(s, softmax(z / tau)), s given as c_phi's input features."""
        return self.cv(features, torch.softmax(z * torch.exp(-self.log_temperature), dim=-1))

    def distribution_features(self, batch: RolloutBatch) -> torch.Tensor:
        return torch.log_softmax(batch.dist_params.detach(), dim=-1)  # log pi(.|s): the logits up to a shift
