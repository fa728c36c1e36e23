"""Gradient estimators for E_{p(b|theta)}[f(b)] over one (possibly multivariate) random variable.

The RL estimators in :mod:`rl_relax.estimators` are these estimators applied per time step; this
module exposes them on their own, for your discrete or continuous random variables. Each estimator
returns a *surrogate*: a scalar whose gradient with respect to the distribution's parameters (and
anything upstream of them) is the gradient estimate, averaged over the N samples in ``noise``
(``reduction="none"`` gives the per-sample surrogates instead). f is a black box: it receives hard
samples and is never differentiated, except inside REBAR's control variate and the (biased) Concrete
estimator, which evaluate it on relaxed samples.

=================  =========================================================================  ========
estimator          gradient estimate (per sample)                                             unbiased
=================  =========================================================================  ========
REINFORCE          (f(b) - baseline) d log p(b)                                                yes
reparameterization d f(T(theta, eps)) (Gaussian)                                               yes
Concrete           d f(sigma_lambda(z)) (Gumbel-softmax / binary Concrete)                     no
REBAR              RELAX with c(z) = eta * f(sigma_lambda(z))                                  yes
RELAX              (f(b) - c(z~)) d log p(b) + d c(z) - d c(z~),  b = H(z), z~ ~ p(z | b)       yes
LAX                (f(b) - c(b)) d log p(b) + d c(b),  b = T(theta, eps) (Gaussian)             yes
Lee et al. 2018    d f(T(theta, eps)) + boundary terms, f piecewise smooth across hyperplanes  yes
=================  =========================================================================  ========

The last one, for densities with ``if`` branches on the sampled variable (Lee, Yu & Yang 2018), lives in
:mod:`rl_relax.nondiff` and is re-exported here: :func:`reparameterization_with_boundary`,
:class:`HyperplaneModel`, :func:`elbo_integrand`, :func:`boundary_noise`.

(Grathwohl et al. 2018, Sec. 2-3 and App. A-B.) The formulas themselves live in
:mod:`rl_relax.surrogates`, shared with the RL estimators. The control variate's parameters phi are trained
with :func:`variance_loss`, the single-sample estimate ||g||^2 of the variance whose phi-gradient is
d Var(g) / d phi for any unbiased estimator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from rl_relax import surrogates
from rl_relax.samplers import (
    conditional_bernoulli,
    conditional_gumbel,
    gaussian_reparam,
    relaxed_bernoulli,
    relaxed_categorical,
)

Noise = dict[str, torch.Tensor]
Function = Callable[[torch.Tensor], torch.Tensor]
_TINY = 1e-12


def _uniform(shape: Sequence[int], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(tuple(shape), generator=generator, dtype=like.dtype, device=like.device)
    return u.clamp_(_TINY, 1.0 - 1e-7)


class _Discrete:
    """A discrete variable parameterised by logits, with noise u (sampling) and v (conditional resampling)."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def noise(self, num_samples: int, generator: torch.Generator | None = None) -> Noise:
        shape = (num_samples, *self.logits.shape)
        return {"u": _uniform(shape, generator, self.logits), "v": _uniform(shape, generator, self.logits)}


class Bernoulli(_Discrete):
    """Independent Bernoulli variables with theta = sigmoid(logits); b has the logits' shape."""

    def relaxed(self, noise: Noise) -> torch.Tensor:
        return relaxed_bernoulli(self.logits, noise["u"])

    def hard(self, z: torch.Tensor) -> torch.Tensor:
        return (z > 0).to(z.dtype)

    def conditional(self, b: torch.Tensor, noise: Noise) -> torch.Tensor:
        return conditional_bernoulli(self.logits, b, noise["v"])

    def soft(self, z: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
        return torch.sigmoid(z / temperature)

    def log_prob(self, b: torch.Tensor) -> torch.Tensor:
        """log p(b), summed over the variables: shape (N,)."""
        per_variable = b * F.logsigmoid(self.logits) + (1.0 - b) * F.logsigmoid(-self.logits)
        return per_variable.reshape(b.shape[0], -1).sum(-1)


class Categorical(_Discrete):
    """Independent categorical variables over the last axis of ``logits``; b is one-hot."""

    def relaxed(self, noise: Noise) -> torch.Tensor:
        return relaxed_categorical(self.logits, noise["u"])

    def hard(self, z: torch.Tensor) -> torch.Tensor:
        return F.one_hot(z.argmax(-1), z.shape[-1]).to(z.dtype)

    def conditional(self, b: torch.Tensor, noise: Noise) -> torch.Tensor:
        logits = self.logits.expand_as(b)
        return conditional_gumbel(logits, b.argmax(-1), noise["v"])

    def soft(self, z: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
        return torch.softmax(z / temperature, dim=-1)

    def log_prob(self, b: torch.Tensor) -> torch.Tensor:
        return (b * torch.log_softmax(self.logits, -1)).reshape(b.shape[0], -1).sum(-1)


class Gaussian:
    """Independent Gaussians N(mean, exp(log_std)^2), reparameterised as x = mean + std * eps."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean, self.log_std = mean, log_std

    def noise(self, num_samples: int, generator: torch.Generator | None = None) -> Noise:
        shape = (num_samples, *self.mean.shape)
        return {"eps": torch.randn(shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)}

    def sample(self, noise: Noise) -> torch.Tensor:
        return gaussian_reparam(self.mean, self.log_std, noise["eps"])

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) * torch.exp(-self.log_std)
        per_variable = -0.5 * z.square() - self.log_std - 0.5 * torch.log(torch.tensor(2 * torch.pi))
        return per_variable.reshape(x.shape[0], -1).sum(-1)


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    return per_sample.mean() if reduction == "mean" else per_sample


def reinforce(
    f: Function, dist: Bernoulli | Categorical | Gaussian, noise: Noise, baseline: torch.Tensor | float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:  # fmt: skip
    """Score function: (f(b) - baseline) d log p(b). The baseline must not depend on b."""
    b = dist.sample(noise) if isinstance(dist, Gaussian) else dist.hard(dist.relaxed(noise))
    b = b.detach()
    return _reduce(surrogates.score_function(dist.log_prob(b), f(b) - baseline), reduction)


def reparameterization(f: Function, dist: Gaussian, noise: Noise, reduction: str = "mean") -> torch.Tensor:
    """d f(T(theta, eps)): needs a differentiable f and a continuous variable."""
    return _reduce(f(dist.sample(noise)), reduction)


def concrete(
    f: Function, dist: Bernoulli | Categorical, noise: Noise, temperature: float, reduction: str = "mean"
) -> torch.Tensor:
    """d f(sigma_lambda(z)): f evaluated on the relaxed sample. Biased for any temperature > 0."""
    return _reduce(f(dist.soft(dist.relaxed(noise), temperature)), reduction)


def relax(
    f: Function, dist: Bernoulli | Categorical, noise: Noise, control_variate: Function, reduction: str = "mean"
) -> torch.Tensor:
    """RELAX: (f(b) - c(z~)) d log p(b) + d c(z) - d c(z~), with z~ ~ p(z | b) (exact conditional).

    ``control_variate`` maps relaxed samples z (logit space, shape of the noise) to one value per
    sample. The score weight's c(z~) carries no gradient to theta, only to phi.
    """
    z = dist.relaxed(noise)
    b = dist.hard(z).detach()
    z_tilde = dist.conditional(b, noise)
    c_z, c_z_tilde, c_z_tilde_fixed = control_variate(z), control_variate(z_tilde), control_variate(z_tilde.detach())
    return _reduce(surrogates.relax(dist.log_prob(b), f(b), c_z, c_z_tilde, c_z_tilde_fixed), reduction)


def rebar(
    f: Function, dist: Bernoulli | Categorical, noise: Noise, eta: torch.Tensor | float,
    temperature: torch.Tensor | float, reduction: str = "mean",
) -> torch.Tensor:  # fmt: skip
    """REBAR: RELAX with c(z) = eta * f(sigma_lambda(z)) (Tucker et al. 2017); f must be differentiable."""
    return relax(f, dist, noise, lambda z: eta * f(dist.soft(z, temperature)), reduction)


def lax(f: Function, dist: Gaussian, noise: Noise, control_variate: Function, reduction: str = "mean") -> torch.Tensor:
    """LAX for a reparameterisable variable: (f(b) - c(b)) d log p(b) + d c(b), at the same b."""
    x = dist.sample(noise)
    x_fixed = x.detach()
    log_prob = dist.log_prob(x_fixed)
    return _reduce(surrogates.lax(log_prob, f(x_fixed), control_variate(x), control_variate(x_fixed)), reduction)


#: ||g||^2, differentiable in phi (step theta with g and phi with its gradient); see rl_relax.surrogates.
variance_loss = surrogates.variance_loss


class ControlVariate(nn.Module):
    """A learned control variate on the relaxed variable: c(z) = eta * f(sigma_lambda(z)) + s * NN(sigma_lambda(z)).

    With ``f=None`` only the network term is used (the RELAX toy problem's choice); with f it is REBAR's
    relaxation plus a learned correction. The temperature lambda, eta and the scale s are learned too;
    s starts at 0 so that training starts from the REINFORCE estimator (or REBAR's, with f).
    """

    def __init__(
        self, num_inputs: int, kind: str = "bernoulli", f: Function | None = None, hidden: int = 10,
        temperature_init: float = 0.5,
    ):  # fmt: skip
        super().__init__()
        if kind not in ("bernoulli", "categorical"):
            raise ValueError(f"kind must be bernoulli or categorical, got {kind!r}")
        self.kind, self.f = kind, f
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature_init)).log())
        self.eta = nn.Parameter(torch.tensor(1.0))
        self.scale = nn.Parameter(torch.tensor(0.0))
        self.net = nn.Sequential(nn.Linear(num_inputs, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def relaxed_sample(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "bernoulli":
            return torch.sigmoid(z / self.temperature)
        return torch.softmax(z / self.temperature, dim=-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        soft = self.relaxed_sample(z)
        out = self.scale * self.net(2.0 * soft.reshape(z.shape[0], -1) - 1.0).squeeze(-1)
        if self.f is not None:
            out = out + self.eta * self.f(soft)
        return out


_NONDIFF = ("HyperplaneModel", "boundary_noise", "elbo_integrand", "reparameterization_with_boundary")


def __getattr__(name: str):
    """The non-differentiable-model estimators (rl_relax.nondiff), imported on first use: that module
    builds on this one, so importing it eagerly here would be circular."""
    if name in _NONDIFF:
        from rl_relax import nondiff

        return getattr(nondiff, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
