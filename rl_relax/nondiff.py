"""Reparameterization gradients for models with `if` branches: Lee, Yu & Yang, NeurIPS 2018.

A probabilistic program whose branches test linear conditions on the latent z has a joint density
that is smooth inside regions cut out by hyperplanes a_j . z + c_j = 0 and jumps across them:

    log p(x0, z) = log r_s(z),      s_j = 1[a_j . z + c_j > 0]  (the branch each `if` takes).

For a reparameterised Gaussian q_theta (z = mu + sigma * eps, eps ~ N(0, I), diagonal) the ELBO gradient is

    d ELBO = E_eps[ d_theta (log p - log q)(z(eps)) ]                                    (1) reparameterization
           + sum_j  N(-c_j; a_j.mu, a_j^T D a_j) E[ (d g_j / d theta) (h_j^+ - h_j^-) | a_j.z + c_j = 0 ]   (2) boundary

with D = diag(sigma^2), g_j(eps, theta) = a_j . (mu + sigma eps) + c_j (so d g_j / d mu = a_j and
d g_j / d log sigma = a_j * (z - mu)), and h_j^+ - h_j^- = log p with branch j taken minus log p with
branch j not taken, at the boundary point (log q is continuous and cancels). Term (1) is what autograd
through the `if` computes, the *plain* reparameterization gradient: it misses (2), the boundary
(surface) term of Lee et al. (their Theorem 1, with the velocity field of the reparameterization),
and is therefore biased. Term (2) is estimated here by sampling z from q conditioned on the hyperplane
(exact Gaussian conditioning, z = y + D a (-c - a.y) / (a^T D a) with y ~ q), so the estimator is
unbiased.

Public API: :class:`HyperplaneModel`, :func:`elbo_integrand`, :func:`boundary_noise`,
:func:`reparameterization_with_boundary` (the Lee et al. estimator), :func:`exact_elbo_gradient_1d`
(quadrature), and the seed slides' example: :func:`slide_example` and :func:`slide_example_exact_gradient`.
The plain reparameterization and score-function estimators are ``toolkit.reparameterization`` and
``toolkit.reinforce`` applied to :func:`elbo_integrand`; ``toolkit.lax`` adds a learned control variate.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

import numpy as np
import torch

from rl_relax import toolkit as tk

LogDensity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class HyperplaneModel:
    """log p(x0, z) that is smooth given the branches s_j = 1[normals[j] . z + offsets[j] > 0].

    ``log_density(z, branches)``: z of shape (N, d), branches a bool tensor (N, J); returns (N,). It must
    be smooth in z for fixed branches (it is evaluated on both sides of a boundary at points on it).
    """

    normals: torch.Tensor  # (J, d)
    offsets: torch.Tensor  # (J,)
    log_density: LogDensity

    def __post_init__(self) -> None:
        self.normals = torch.as_tensor(self.normals, dtype=torch.get_default_dtype())
        self.offsets = torch.as_tensor(self.offsets, dtype=self.normals.dtype)
        if self.normals.ndim != 2 or self.offsets.shape != self.normals.shape[:1]:
            raise ValueError(f"normals must be (J, d) and offsets (J,), got {tuple(self.normals.shape)} and "
                             f"{tuple(self.offsets.shape)}")  # fmt: skip
        if (self.normals.norm(dim=1) == 0).any():
            raise ValueError("every hyperplane needs a non-zero normal vector")

    @property
    def dim(self) -> int:
        return int(self.normals.shape[1])

    def branches(self, z: torch.Tensor) -> torch.Tensor:
        """s_j(z) = 1[a_j . z + c_j > 0], shape (N, J)."""
        return z @ self.normals.T + self.offsets > 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x0, z), following the branches z takes (what running the program computes)."""
        return self.log_density(z, self.branches(z.detach()))


def elbo_integrand(model: HyperplaneModel, dist: tk.Gaussian) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(z) = log p(x0, z) - log q_theta(z), whose expectation under q_theta is the ELBO."""
    return lambda z: model(z) - dist.log_prob(z)


def boundary_noise(dist: tk.Gaussian, model: HyperplaneModel, num_samples: int,
                   generator: torch.Generator | None = None) -> tk.Noise:  # fmt: skip
    """Noise for the boundary term: one standard-normal draw per sample and hyperplane, shape (N, J, d)."""
    shape = (num_samples, model.normals.shape[0], model.dim)
    return {"eps": torch.randn(shape, generator=generator, dtype=dist.mean.dtype, device=dist.mean.device)}


def reparameterization_with_boundary(model: HyperplaneModel, dist: tk.Gaussian, noise: tk.Noise,
                                     boundary: tk.Noise, reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    """Lee et al.'s unbiased estimator of d ELBO / d (mean, log_std): term (1) plus term (2) (module docstring).

    Returns a surrogate whose gradient with respect to ``dist.mean`` and ``dist.log_std`` (and anything
    upstream of them) is the estimate, averaged over the N samples (``reduction="none"``: per sample).
    ``noise`` is ``dist.noise(N)``; ``boundary`` is :func:`boundary_noise` with the same N. The mean and
    log-std may carry a leading sample axis (N, d): the gradient of the summed per-sample surrogates
    w.r.t. such a mean is then the N per-sample estimates (how the tests measure variance).
    """
    if dist.mean.shape[-1:] != (model.dim,) or dist.mean.ndim > 2:
        raise ValueError(f"the Gaussian's mean must have shape ({model.dim},) or (N, {model.dim}) to match the model, "
                         f"got {tuple(dist.mean.shape)}")  # fmt: skip
    interior = elbo_integrand(model, dist)(dist.sample(noise))  # (1): autograd follows the branch taken
    std = dist.log_std.exp().expand_as(dist.mean)
    mean, std = dist.mean.unsqueeze(-2), std.unsqueeze(-2)  # (1 or N, 1, d): broadcast over hyperplanes
    a, c = model.normals, model.offsets  # (J, d), (J,)
    var = std.detach().square()
    y = mean.detach() + std.detach() * boundary["eps"]  # (N, J, d) draws from q
    spread = (a.square() * var).sum(-1)  # a^T D a
    centre = (mean.detach() * a).sum(-1) + c  # a . mu + c
    z_on = y + var * a * ((-c - (y * a).sum(-1)) / spread).unsqueeze(-1)  # q conditioned on a.z + c = 0
    density = torch.exp(-0.5 * centre.square() / spread) / torch.sqrt(2 * math.pi * spread)  # N(-c; a.mu, a^T D a)
    eps_on = (z_on - mean.detach()) / std.detach()
    jumps = []
    for k in range(a.shape[0]):  # h_k^+ - h_k^- at the boundary points of hyperplane k
        points = z_on[:, k]
        taken = model.branches(points)
        taken[:, k] = True
        plus = model.log_density(points, taken.clone())
        taken[:, k] = False
        jumps.append(plus - model.log_density(points, taken))
    jump = torch.stack(jumps, -1).detach()  # (N, J)
    g = ((mean + std * eps_on) * a).sum(-1) + c  # g_k(eps_on, theta): its theta-gradient is the velocity term
    boundary_term = (density.detach() * jump * g).sum(-1)
    per_sample = interior + boundary_term
    return per_sample.mean() if reduction == "mean" else per_sample


# ---------------------------------------------------------------------------------------------------------------
# The seed slides' example (Lee, Yu, Yang 2018):
#     z ~ N(0, 1);  if z > 0: observe 0 under N(3, 1)  else: observe 0 under N(-2, 1);   q_theta = N(theta, 1)


def _log_normal(x: torch.Tensor | float, mean: torch.Tensor | float, std: float = 1.0) -> torch.Tensor:
    x = torch.as_tensor(x)
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def slide_example() -> HyperplaneModel:
    """log p(x0 = 0, z) = log N(z; 0, 1) + (log N(0; 3, 1) if z > 0 else log N(0; -2, 1)); one boundary, z = 0."""

    def log_density(z: torch.Tensor, branches: torch.Tensor) -> torch.Tensor:
        z = z[..., 0]
        observe = torch.where(branches[..., 0], _log_normal(0.0, 3.0), _log_normal(0.0, -2.0))
        return _log_normal(z, 0.0) + observe

    return HyperplaneModel(torch.tensor([[1.0]]), torch.tensor([0.0]), log_density)


def slide_example_exact_gradient(theta: float) -> float:
    """d ELBO / d theta = -theta + phi(theta) (log N(0; 3, 1) - log N(0; -2, 1)) = -theta - 2.5 phi(theta).

    (E_q[log N(z; 0, 1)] = -theta^2/2 + const, P(z > 0) = Phi(theta), the entropy does not depend on theta.)
    """
    return -theta - 2.5 * math.exp(-0.5 * theta**2) / math.sqrt(2 * math.pi)


def exact_elbo_gradient_1d(model: HyperplaneModel, mean: float, log_std: float,
                           nodes_per_piece: int = 200, width: float = 12.0) -> tuple[float, float, float]:  # fmt: skip
    """(ELBO, d ELBO / d mean, d ELBO / d log_std) for a 1-D model by Gauss-Legendre quadrature.

    ELBO = int q_theta(z) (log p(x0, z) - log q_theta(z)) dz over [mean - width std, mean + width std],
    split at the boundaries so that every piece is smooth; the grid is fixed in z, so differentiating the
    quadrature sum in theta (autograd, float64) is exact up to quadrature error: nothing moves with theta
    but q. (Reparameterised estimators move z with theta instead, which is where the boundary term comes from.)
    """
    if model.dim != 1:
        raise ValueError("exact_elbo_gradient_1d needs a 1-D model")
    mu = torch.tensor(float(mean), dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor(float(log_std), dtype=torch.float64, requires_grad=True)
    sigma = math.exp(log_std)
    lo, hi = mean - width * sigma, mean + width * sigma
    cuts = sorted(float(-c / a) for a, c in zip(model.normals[:, 0].tolist(), model.offsets.tolist(), strict=True))
    edges = [lo, *(x for x in cuts if lo < x < hi), hi]
    x_ref, w_ref = np.polynomial.legendre.leggauss(nodes_per_piece)
    total = torch.zeros((), dtype=torch.float64)
    for left, right in itertools.pairwise(edges):
        z = torch.tensor(0.5 * (right - left) * x_ref + 0.5 * (right + left), dtype=torch.float64)
        w = torch.tensor(0.5 * (right - left) * w_ref, dtype=torch.float64)
        log_q = -0.5 * ((z - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
        with torch.no_grad():
            log_p = model(z.to(model.normals.dtype).unsqueeze(-1)).to(torch.float64)
        total = total + (w * log_q.exp() * (log_p - log_q)).sum()
    d_mean, d_log_std = torch.autograd.grad(total, [mu, log_sigma])
    return total.item(), d_mean.item(), d_log_std.item()
