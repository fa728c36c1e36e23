"""Policy and value networks.

Policies sample through explicit noise so that an estimator can replay a sample under new
parameters (the ``sample`` / ``rsample`` contract of ``torch.distributions``, with the noise kept):

- categorical:  a = argmax(logits + g),  g = -log(-log u),  u ~ U(0, 1)^K   (Gumbel-max; noise "u")
- Gaussian:     a = mu(s) + sigma * eps,  eps ~ N(0, I)                     (noise "eps")

Log-probabilities and entropies come from ``torch.distributions``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from rl_relax.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}

# The Gumbel-max trick needs u strictly inside (0, 1).
_U_EPS = 1e-12


def mlp(
    in_dim: int,
    hidden_sizes: Sequence[int],
    out_dim: int,
    activation: str = "tanh",
    ortho_init: bool = True,
    out_gain: float = 1.0,
) -> nn.Sequential:
    """An MLP with orthogonal init (gain sqrt(2) on hidden layers, ``out_gain`` on the output)."""
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}. Fix: e.g. policy.activation=tanh."
        )
    if any(int(h) <= 0 for h in hidden_sizes):
        raise ConfigError(f"hidden_sizes {list(hidden_sizes)} must all be positive integers.")
    layers: list[nn.Module] = []
    sizes = [in_dim, *map(int, hidden_sizes)]
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [_init(nn.Linear(a, b), math.sqrt(2), ortho_init), ACTIVATIONS[activation]()]
    layers.append(_init(nn.Linear(sizes[-1], out_dim), out_gain, ortho_init))
    return nn.Sequential(*layers)


def _init(layer: nn.Linear, gain: float, ortho: bool) -> nn.Linear:
    if ortho:
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


@dataclass
class ActOutput:
    """What a policy returns when acting: the action to store, the one to send, and its noise."""

    action: torch.Tensor  # stored action (unclipped for Box)
    noise: dict[str, torch.Tensor]


class Policy(nn.Module):
    """Maps observations to distribution parameters; samples through stored noise."""

    noise_shapes: dict[str, tuple[int, ...]]
    action_shape: tuple[int, ...]
    action_dtype: torch.dtype

    def distribution(self, params: torch.Tensor) -> Distribution:
        """The action distribution; ``log_prob`` and ``entropy`` return one value per state."""
        raise NotImplementedError

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        raise NotImplementedError

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        """The action as the environment takes it (clipped to the bounds for Box spaces)."""
        raise NotImplementedError


class CategoricalPolicy(Policy):
    """pi(a|s) = softmax(logits(s))_a, sampled with the Gumbel-max trick."""

    def __init__(self, obs_dim: int, num_actions: int, hidden_sizes, activation, ortho_init):
        super().__init__()
        self.num_actions = num_actions
        self.net = mlp(obs_dim, hidden_sizes, num_actions, activation, ortho_init, out_gain=0.01)
        self.noise_shapes = {"u": (num_actions,)}
        self.action_shape = ()
        self.action_dtype = torch.long

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    def distribution(self, params: torch.Tensor) -> Distribution:
        return Categorical(logits=params, validate_args=False)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        logits = self.net(obs)
        if deterministic:
            return ActOutput(logits.argmax(-1), {})
        u = torch.rand_like(logits).clamp_(_U_EPS, 1.0 - _U_EPS)
        action = (logits - torch.log(-torch.log(u))).argmax(-1)
        return ActOutput(action, {"u": u})

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        return action.cpu().numpy()


class GaussianPolicy(Policy):
    """pi(a|s) = N(mu(s), diag(exp(log_std))^2) with a state-independent log-std.

    The sampled action is stored unclipped (log-probabilities use it); the env gets it clipped to
    the action bounds.
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: gym.spaces.Box,
        hidden_sizes,
        activation,
        ortho_init,
        log_std_init: float = 0.0,
    ):
        super().__init__()
        act_dim = int(np.prod(action_space.shape))
        self.net = mlp(obs_dim, hidden_sizes, act_dim, activation, ortho_init, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))
        self.noise_shapes = {"eps": (act_dim,)}
        self.action_shape = (act_dim,)
        self.action_dtype = torch.float32
        self._env_shape = action_space.shape
        self._low = action_space.low.reshape(-1).astype(np.float32)
        self._high = action_space.high.reshape(-1).astype(np.float32)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    def distribution(self, params: torch.Tensor) -> Distribution:
        std = self.log_std.exp().expand_as(params)
        return Independent(Normal(params, std, validate_args=False), 1, validate_args=False)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        mean = self.net(obs)
        if deterministic:
            return ActOutput(mean, {})
        eps = torch.randn_like(mean)
        return ActOutput(mean + self.log_std.exp() * eps, {"eps": eps})

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        clipped = np.clip(action.cpu().numpy(), self._low, self._high)
        return clipped.reshape((action.shape[0], *self._env_shape))


class ValueNet(nn.Module):
    """V(s): the state-value baseline, fit by regression on the returns."""

    def __init__(self, obs_dim: int, hidden_sizes, activation, ortho_init):
        super().__init__()
        self.net = mlp(obs_dim, hidden_sizes, 1, activation, ortho_init, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


def make_policy(policy_cfg, obs_space: gym.spaces.Box, action_space: gym.spaces.Space) -> Policy:
    """Categorical policy for Discrete actions, diagonal Gaussian for Box."""
    obs_dim = int(np.prod(obs_space.shape))
    common = dict(
        hidden_sizes=policy_cfg.hidden_sizes,
        activation=policy_cfg.activation,
        ortho_init=policy_cfg.ortho_init,
    )
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalPolicy(obs_dim, int(action_space.n), **common)
    if isinstance(action_space, gym.spaces.Box):
        return GaussianPolicy(obs_dim, action_space, log_std_init=policy_cfg.log_std_init, **common)
    raise ConfigError(f"unsupported action space {action_space}: use Discrete or Box.")


def make_value(value_cfg, obs_space: gym.spaces.Box) -> ValueNet:
    obs_dim = int(np.prod(obs_space.shape))
    return ValueNet(obs_dim, value_cfg.hidden_sizes, value_cfg.activation, value_cfg.ortho_init)
