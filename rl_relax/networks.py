"""Policy and value networks.

Policies sample through explicit noise so that an estimator can replay a sample under new
parameters (the ``sample`` / ``rsample`` contract of ``torch.distributions``, with the noise kept):

- categorical:  a = argmax(logits + g),  g = -log(-log u),  u ~ U(0, 1)^K   (Gumbel-max; noise "u")
- Gaussian:     a = mu(s) + sigma * eps,  eps ~ N(0, I)                     (noise "eps")

Acting (one small batch per env step) is latency-bound, so it runs in NumPy on views of the
parameters when they live on the CPU: a 64-64 MLP costs a few microseconds there against tens in
eager PyTorch. The noise is drawn from a seeded ``numpy.random.Generator``. Learning uses the torch
forward pass. ``log_prob`` and ``entropy`` are written out (a log-softmax and a gather, or the
Gaussian density) because building a ``torch.distributions`` object per update roughly doubled
the cost of the A2C update on CartPole-sized batches; tests check them against
``torch.distributions`` (which :meth:`Policy.distribution` still returns for estimators that want
it) and check that the NumPy and torch forward passes agree.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal
from torch.nn import functional as F

from rl_relax.envs import resolve_spec
from rl_relax.errors import ConfigError


class _NumpyTanh(torch.autograd.Function):
    """tanh computed by NumPy, differentiated like torch.tanh (d tanh = 1 - tanh^2, twice differentiable)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.from_numpy(np.tanh(x.detach().numpy()))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors  # the output: with create_graph this stays differentiable
        return grad * (1.0 - y * y)


#: From this many elements on, a CPU float32 tanh goes through NumPy: torch 2.13's CPU tanh kernel is not
#: vectorised on our machines (2.2 ns per element against NumPy's 0.2), which for seed-stacked
#: networks (S x B x 64 activations) costs more than the autograd.Function's ~15 us of overhead.
NUMPY_TANH_MIN_ELEMENTS = 8192


def tanh(x: torch.Tensor) -> torch.Tensor:
    """torch.tanh, through NumPy for large CPU float32 tensors (see :data:`NUMPY_TANH_MIN_ELEMENTS`)."""
    if x.numel() >= NUMPY_TANH_MIN_ELEMENTS and x.device.type == "cpu" and x.dtype == torch.float32:
        return _NumpyTanh.apply(x.contiguous())
    return torch.tanh(x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": tanh,
    "relu": F.relu,
    "elu": F.elu,
    "gelu": F.gelu,
}
NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {  # may overwrite their argument
    "tanh": lambda x: np.tanh(x, out=x),
    "relu": lambda x: np.maximum(x, 0.0, out=x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
}


# The Gumbel-max trick needs u > 0 (numpy's uniform draws are in [0, 1), so never 1).
_U_EPS = 1e-12


class MLP(nn.Module):
    """Linear layers with an activation between them and a linear output.

    Orthogonal init (gain sqrt(2) on hidden layers, ``out_gain`` on the output, zero biases), as in
    SB3 and CleanRL. ``forward`` calls the functional ops directly (a module call per layer would
    cost more than the matrix products themselves).

    :meth:`forward_numpy` (acting) keeps NumPy views of the parameters and must notice when they are
    replaced (``.to``, re-registering a Parameter, the learner's flat buffer): it checks the storage of
    every layer's weight and bias on every call, or once on entering :meth:`parameters_fixed` (a
    rollout, during which nothing replaces them). Once per rollout, the check's ~4 us of attribute
    lookups are about 0.5% of a CartPole iteration; tests fail if a replacement goes unnoticed.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_sizes: Sequence[int],
        out_dim: int,
        activation: str = "tanh",
        ortho_init: bool = True,
        out_gain: float = 1.0,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}. Fix: e.g. policy.activation=tanh."
            )
        if any(int(h) <= 0 for h in hidden_sizes):
            raise ConfigError(f"hidden_sizes {list(hidden_sizes)} must all be positive integers.")
        sizes = [in_dim, *map(int, hidden_sizes), out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.activation = ACTIVATIONS[activation]
        self._np_activation = NUMPY_ACTIVATIONS.get(activation)
        self._np_params: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._np_buffers: dict[tuple[int, ...], list[np.ndarray]] = {}  # batch shape -> hidden activations
        self._np_key: tuple[int, ...] = ()
        self._fixed = _FixedParameters(self)  # parameters_fixed(); its depth > 0: the views were checked on entry
        if ortho_init:
            for i, layer in enumerate(self.layers):
                nn.init.orthogonal_(layer.weight, out_gain if i == len(self.layers) - 1 else math.sqrt(2))
                nn.init.zeros_(layer.bias)

    #: None for one network; S for S independent networks stacked on a leading seed dimension
    #: (weights (S, out, in), inputs and outputs (S, B, ...)), set by :func:`rl_relax.seed_stack.stack_modules`.
    num_seeds: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear = F.linear if self.num_seeds is None else _seed_linear
        *hidden, out = self.layers
        for layer in hidden:
            x = self.activation(linear(x, layer.weight, layer.bias))
        return linear(x, out.weight, out.bias)

    def jvp(self, x: torch.Tensor, tangents: Sequence[torch.Tensor]) -> torch.Tensor:
        """Forward-mode derivative J t of the output w.r.t. the parameters, in direction ``tangents``.

        ``tangents`` lists one tensor per parameter, in ``parameters()`` order. Written out for the
        activations we ship (torch.func.jvp costs about four times as much on small MLPs); gelu
        falls back to torch.func. No graph is recorded.
        """
        if self.activation is F.gelu:
            return self._jvp_torch_func(x, tangents)
        linear = F.linear if self.num_seeds is None else _seed_linear
        with torch.no_grad():
            dx = None
            for i, layer in enumerate(self.layers):
                d_weight, d_bias = tangents[2 * i], tangents[2 * i + 1]
                y = linear(x, layer.weight, layer.bias)
                dy = linear(x, d_weight, d_bias)
                if dx is not None:
                    dy = dy + linear(dx, layer.weight)
                if i == len(self.layers) - 1:
                    return dy
                x = self.activation(y)
                dx = dy * _activation_derivative(self.activation, y, x)
        raise AssertionError("unreachable")

    def _jvp_torch_func(self, x: torch.Tensor, tangents: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.num_seeds is not None:
            raise NotImplementedError("the gelu jvp of seed-stacked networks; use tanh, relu or elu")
        names = [name for name, _ in self.named_parameters()]
        primals = {name: p.detach() for name, p in self.named_parameters()}
        directions = dict(zip(names, tangents, strict=True))
        with torch.no_grad():
            return torch.func.jvp(lambda p: torch.func.functional_call(self, p, (x,)), (primals,), (directions,))[1]

    def parameters_fixed(self) -> _FixedParameters:
        """``with net.parameters_fixed():`` a block in which the parameters are not replaced (a rollout).

        :meth:`forward_numpy` checks its parameter views once, on entry, instead of on every call; a
        parameter replaced or moved inside the block is not noticed before the block ends. (Changing
        values in place, as optimizers do, is always seen: the views share the parameters' storage.)
        """
        return self._fixed

    def _refresh_numpy_views(self) -> None:
        """Rebuild the NumPy views if any parameter's storage changed (moved, re-homed or replaced)."""
        key = tuple(p.data_ptr() for layer in self.layers for p in (layer.weight, layer.bias))
        if key != self._np_key:
            weight = self.layers[0].weight
            ready = self._np_activation is not None and weight.device.type == "cpu" and weight.dtype == torch.float32
            # Stacked networks: weights (S, in, out), biases (S, 1, out) against inputs (S, N, in).
            self._np_params = (
                [(np.swapaxes(lin.weight.detach().numpy(), -1, -2), lin.bias.detach().numpy()[..., None, :])
                 for lin in self.layers] if ready else None
            )  # fmt: skip
            self._np_key = key  # only once the views are built: a failure above leaves them to be rebuilt

    def forward_numpy(self, x: np.ndarray) -> np.ndarray | None:
        """The same function in NumPy, on zero-copy views of the current parameters (no grad).

        Returns None when that is not possible (parameters off the CPU, not float32, or an
        activation without a NumPy version); callers then use the torch forward pass.
        """
        if not self._fixed.depth:
            self._refresh_numpy_views()
        if self._np_params is None:
            return None
        *hidden, (w_out, b_out) = self._np_params
        buffers = self._np_buffers.get(x.shape[:-1])
        if buffers is None:  # hidden activations are written in place: no allocations per step
            buffers = [np.empty((*x.shape[:-1], w.shape[-1]), dtype=np.float32) for w, _ in hidden]
            self._np_buffers[x.shape[:-1]] = buffers
        for (w, b), h in zip(hidden, buffers, strict=True):
            x = np.matmul(x, w, out=h)
            x += b
            x = self._np_activation(x)
        return x @ w_out + b_out


class _FixedParameters:
    """The context manager of :meth:`MLP.parameters_fixed`: a plain class, whose own overhead is ~0.3 us (a
    ``contextlib`` generator setting module attributes cost ~3 us, about what the block saves on a CartPole rollout)."""

    __slots__ = ("depth", "net")

    def __init__(self, net: MLP):
        self.net, self.depth = net, 0

    def __enter__(self) -> None:
        self.net._refresh_numpy_views()
        self.depth += 1

    def __exit__(self, *exc_info: object) -> None:
        self.depth -= 1


def _seed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear for S stacked layers: x (S, B, in), weight (S, out, in), bias (S, out) -> (S, B, out)."""
    if bias is None:
        return torch.bmm(x, weight.transpose(-1, -2))
    return torch.baddbmm(bias.unsqueeze(-2), x, weight.transpose(-1, -2))


def _activation_derivative(activation, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    """d activation / d pre-activation, from the pre- and post-activation values."""
    if activation is tanh:
        return 1.0 - post.square()
    if activation is F.relu:
        return (pre > 0).to(pre.dtype)
    if activation is F.elu:
        return torch.where(pre > 0, torch.ones_like(pre), post + 1.0)
    raise ValueError(f"no derivative for {activation}")


@dataclass
class ActOutput:
    """What a policy returns when acting (NumPy): the action to store and the noise that made it."""

    action: np.ndarray  # stored action (unclipped for Box)
    noise: dict[str, np.ndarray]


class Policy(nn.Module):
    """Maps observations to distribution parameters; samples through explicit noise.

    Stacked over S seeds (:func:`rl_relax.seed_stack.stack_modules`), every method takes and returns
    a leading seed dimension: observations (S, B, obs_dim), distribution parameters (S, B, ...),
    log-probabilities and entropies (S, B).
    """

    #: Parameters that meet per-state tensors by broadcasting, with the singleton dimensions their
    #: seed-stacked version needs after the seed dimension (the Gaussian log-std: (S, 1, A)).
    seed_broadcast: ClassVar[dict[str, int]] = {}

    net: MLP
    noise_shapes: dict[str, tuple[int, ...]]
    action_shape: tuple[int, ...]
    action_dtype: np.dtype

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Distribution parameters (logits or Gaussian means), differentiable."""
        return self.net(obs)

    def direct_parameters(self) -> list[nn.Parameter]:
        """Parameters the distribution uses directly rather than through ``net`` (listed after net's)."""
        return []

    def params_numpy(self, obs: np.ndarray) -> np.ndarray:
        """Distribution parameters for acting, without grad, as a NumPy array."""
        params = self.net.forward_numpy(obs)
        if params is not None:
            return params
        device = self.net.layers[0].weight.device
        with torch.no_grad():
            return self.net(torch.from_numpy(obs).to(device)).cpu().numpy()

    def distribution(self, params: torch.Tensor) -> Distribution:
        """The action distribution as a ``torch.distributions`` object."""
        raise NotImplementedError

    def log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) per state, shape (B,)."""
        raise NotImplementedError

    def entropy(self, params: torch.Tensor) -> torch.Tensor:
        """H(pi(.|s)) per state, shape (B,)."""
        raise NotImplementedError

    def draw_noise(self, rng: np.random.Generator, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
        """The sampling noise for distribution parameters of ``shape``, from ``rng`` (written into ``out`` if given)."""
        raise NotImplementedError

    def action_from_noise(self, params: np.ndarray, noise: np.ndarray) -> ActOutput:
        """The action that ``noise`` (from :meth:`draw_noise`) gives under the distribution ``params``."""
        raise NotImplementedError

    def sample(self, params: np.ndarray, rng: np.random.Generator) -> ActOutput:
        return self.action_from_noise(params, self.draw_noise(rng, params.shape))

    def sample_seeds(self, params: np.ndarray, rngs: Sequence[np.random.Generator]) -> ActOutput:
        """Seed-stacked sampling: ``params`` (S, N, ...), seed k's noise from ``rngs[k]`` alone.

        Each generator draws exactly what :meth:`sample` would draw for that seed, so seed k's acting
        noise is the stream of a single run with the same generator.
        """
        noise = np.empty(params.shape, dtype=np.float32)
        for k, rng in enumerate(rngs):
            self.draw_noise(rng, noise.shape[1:], out=noise[k])
        return self.action_from_noise(params, noise)

    def mode(self, params: np.ndarray) -> np.ndarray:
        """The most likely action (deterministic evaluation)."""
        raise NotImplementedError

    def act(self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False) -> ActOutput:
        params = self.params_numpy(obs)
        return ActOutput(self.mode(params), {}) if deterministic else self.sample(params, rng)

    def env_action(self, action: np.ndarray) -> np.ndarray:
        """The action as the environment takes it (clipped to the bounds for Box spaces)."""
        return action


class CategoricalPolicy(Policy):
    """pi(a|s) = softmax(logits(s))_a, sampled with the Gumbel-max trick (noise u ~ U(0,1)^K)."""

    def __init__(self, obs_dim: int, num_actions: int, hidden_sizes, activation, ortho_init):
        super().__init__()
        self.num_actions = num_actions
        self.net = MLP(obs_dim, hidden_sizes, num_actions, activation, ortho_init, out_gain=0.01)
        self.noise_shapes = {"u": (num_actions,)}
        self.action_shape = ()
        self.action_dtype = np.dtype(np.int64)

    def distribution(self, params: torch.Tensor) -> Distribution:
        return Categorical(logits=params, validate_args=False)

    def log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return params.log_softmax(-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def entropy(self, params: torch.Tensor) -> torch.Tensor:
        log_p = params.log_softmax(-1)
        return -(log_p.exp() * log_p).sum(-1)

    def draw_noise(self, rng: np.random.Generator, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
        return rng.random(shape, dtype=np.float32, out=out)

    def action_from_noise(self, params: np.ndarray, noise: np.ndarray) -> ActOutput:
        np.maximum(noise, _U_EPS, out=noise)  # here rather than per draw: once for all seeds of a group
        scores = np.log(noise)  # params + g with g = -log(-log u), computed in place
        np.negative(scores, out=scores)
        np.log(scores, out=scores)
        np.subtract(params, scores, out=scores)
        return ActOutput(scores.argmax(axis=-1), {"u": noise})

    def mode(self, params: np.ndarray) -> np.ndarray:
        return np.argmax(params, axis=-1)


class GaussianPolicy(Policy):
    """pi(a|s) = N(mu(s), diag(exp(log_std))^2) with a state-independent log-std (noise eps ~ N(0, I)).

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
        self.net = MLP(obs_dim, hidden_sizes, act_dim, activation, ortho_init, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))
        self.noise_shapes = {"eps": (act_dim,)}
        self.action_shape = (act_dim,)
        self.action_dtype = np.dtype(np.float32)
        self._env_shape = action_space.shape
        self._low = action_space.low.reshape(-1).astype(np.float32)
        self._high = action_space.high.reshape(-1).astype(np.float32)

    seed_broadcast: ClassVar[dict[str, int]] = {"log_std": 1}

    def direct_parameters(self) -> list[nn.Parameter]:
        return [self.log_std]

    def distribution(self, params: torch.Tensor) -> Distribution:
        std = self.log_std.exp().expand_as(params)
        return Independent(Normal(params, std, validate_args=False), 1, validate_args=False)

    def log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - params) * torch.exp(-self.log_std)
        return (-0.5 * z.square() - self.log_std).sum(-1) - 0.5 * math.log(2 * math.pi) * params.shape[-1]

    def entropy(self, params: torch.Tensor) -> torch.Tensor:
        per_state = (self.log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1)
        return per_state.expand(params.shape[:-1])

    def draw_noise(self, rng: np.random.Generator, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32, out=out)

    def action_from_noise(self, params: np.ndarray, noise: np.ndarray) -> ActOutput:
        std = np.exp(self.log_std.detach().cpu().numpy())
        return ActOutput((params + std * noise).astype(np.float32), {"eps": noise})

    def mode(self, params: np.ndarray) -> np.ndarray:
        return params.astype(np.float32)

    def env_action(self, action: np.ndarray) -> np.ndarray:
        clipped = np.clip(action, self._low, self._high)
        return clipped.reshape((action.shape[0], *self._env_shape))


class ValueNet(nn.Module):
    """V(s): the state-value baseline, fit by regression on the returns.

    Two options let V know how many steps k = T_limit - t are left before the env's time limit T_limit
    (t: the observation's position in its episode, 0 for the first):

    - ``time_input``: k / T_limit in [0, 1] is an extra input of the network;
    - ``horizon_aware`` (Tucker et al. 2018, "The Mirage of Action-Dependent Baselines"): two heads,
      V(s, k) = V_1(s) + (1 - gamma^k) / (1 - gamma) * rbar(s), with rbar(s) the per-step average reward
      (k * rbar for gamma = 1). The rbar head's output h is stored at the scale of V: rbar = h / H with
      H = (1 - gamma^T_limit) / (1 - gamma), so both heads get gradients of the same size; the function
      class is exactly Tucker's.

    With either, V(s, 0) = 0 exactly: no reward follows the time limit, and such observations (the true
    final observation of a time-limit truncation) are never regression inputs, so a network output there
    would be an untrained extrapolation. Truncation at the time limit therefore bootstraps with 0, as in
    Tucker et al.'s complete-path returns. Positions come from the rollout buffer
    (:meth:`rl_relax.rollout.RolloutBuffer.observation_positions`) as ``episode_step``.
    """

    def __init__(
        self,
        obs_dim: int,
        hidden_sizes,
        activation,
        ortho_init,
        time_input: bool = False,
        horizon_aware: bool = False,
        time_limit: int | None = None,
        gamma: float = 0.99,
    ):
        super().__init__()
        self.time_input, self.horizon_aware = bool(time_input), bool(horizon_aware)
        self.time_limit = None if time_limit is None else int(time_limit)
        self.gamma = float(gamma)
        if self.uses_time:
            if self.time_limit is None or self.time_limit < 1:
                raise ValueError(f"a V with the time remaining needs a time limit >= 1, got {time_limit!r}")
            if not 0.0 < self.gamma <= 1.0:
                raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
            # Per k = 0..T_limit, exact in float64: k / T_limit, the horizon factor / H, and k > 0.
            k = np.arange(self.time_limit + 1, dtype=np.float64)
            horizon = k if self.gamma == 1.0 else -np.expm1(k * math.log(self.gamma)) / (1.0 - self.gamma)
            tables = {"_time_fraction": k / self.time_limit, "_horizon_fraction": horizon / horizon[-1],
                      "_alive": (k > 0).astype(np.float64)}  # fmt: skip
            for name, table in tables.items():  # not persistent: a function of the config, not learned state
                self.register_buffer(name, torch.from_numpy(table.astype(np.float32)), persistent=False)
        out = 2 if self.horizon_aware else 1
        self.net = MLP(obs_dim + int(self.time_input), hidden_sizes, out, activation, ortho_init, out_gain=1.0)

    @property
    def uses_time(self) -> bool:
        """Whether V takes the observations' positions in their episodes."""
        return self.time_input or self.horizon_aware

    def steps_left(self, episode_step: torch.Tensor) -> torch.Tensor:
        """k = T_limit - t, clamped to [0, T_limit], as an index (long)."""
        assert self.time_limit is not None
        return (self.time_limit - episode_step.long()).clamp_(0, self.time_limit)

    def forward(self, obs: torch.Tensor, episode_step: torch.Tensor | None = None) -> torch.Tensor:
        """V for observations (..., B, obs_dim); ``episode_step`` (..., B): their positions, for a time-aware V."""
        if not self.uses_time:
            return self.net(obs).squeeze(-1)
        out, k = self._outputs(obs, episode_step)
        values = out[..., 0] + self._horizon_fraction[k] * out[..., 1] if self.horizon_aware else out.squeeze(-1)
        return values * self._alive[k]

    def heads(self, obs: torch.Tensor, episode_step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Horizon-aware V: (V_1(s), rbar(s)), with V = V_1 + (1 - gamma^k) / (1 - gamma) * rbar for k > 0."""
        if not self.horizon_aware:
            raise ValueError("heads() is for a horizon-aware V (value.horizon_aware=true)")
        out, _ = self._outputs(obs, episode_step)
        assert self.time_limit is not None
        limit = float(self.time_limit)
        full_horizon = limit if self.gamma == 1.0 else -math.expm1(limit * math.log(self.gamma)) / (1.0 - self.gamma)
        return out[..., 0], out[..., 1] / full_horizon

    def _outputs(self, obs: torch.Tensor, episode_step: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's outputs (..., B, heads) and the steps left k (..., B)."""
        if episode_step is None:
            raise ValueError("this V takes the time remaining: pass the observations' positions (episode_step)")
        k = self.steps_left(episode_step)
        if self.time_input:
            obs = torch.cat([obs, self._time_fraction[k].unsqueeze(-1)], dim=-1)
        return self.net(obs), k


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


def env_time_limit(env_cfg) -> int | None:
    """The env's time limit: ``env.make_kwargs.max_episode_steps`` if given, else the spec's ``max_episode_steps``."""
    spec = resolve_spec(env_cfg.id, env_cfg.get("import_module"))
    make_kwargs = dict(env_cfg.get("make_kwargs") or {})
    limit = make_kwargs.get("max_episode_steps", spec.max_episode_steps)
    return None if limit is None else int(limit)


def make_value(value_cfg, obs_space: gym.spaces.Box, env_cfg=None, gamma: float = 0.99) -> ValueNet:
    """V from the ``value`` config; ``env_cfg`` gives the time limit when V takes the time remaining."""
    obs_dim = int(np.prod(obs_space.shape))
    time_input, horizon_aware = bool(value_cfg.get("time_input", False)), bool(value_cfg.get("horizon_aware", False))
    time_limit = None
    if time_input or horizon_aware:
        option = "value.time_input" if time_input else "value.horizon_aware"
        time_limit = None if env_cfg is None else env_time_limit(env_cfg)
        if time_limit is None or time_limit < 1:
            env_id = "this env" if env_cfg is None else env_cfg.id
            raise ConfigError(
                f"{option}=true needs the env's time limit, and {env_id} has none (no max_episode_steps). "
                f'Fix: give it one, e.g. env.make_kwargs="{{max_episode_steps: 1000}}", or set {option}=false.'
            )
    return ValueNet(
        obs_dim, value_cfg.hidden_sizes, value_cfg.activation, value_cfg.ortho_init,
        time_input=time_input, horizon_aware=horizon_aware, time_limit=time_limit, gamma=gamma,
    )  # fmt: skip
