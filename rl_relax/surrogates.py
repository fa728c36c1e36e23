"""The estimators' formulas, once: per-sample surrogates and the variance objective (rlax style).

A *surrogate* is a tensor whose gradient with respect to theta (the distribution's parameters and
everything upstream of them) is the single-sample gradient estimate. Both the toolkit
(:mod:`rl_relax.toolkit`, estimators of grad E_{p(b|theta)}[f(b)] for one random variable) and the RL
estimators (:mod:`rl_relax.estimators`, where f(b) is the advantage A_t of the executed action) call
these functions, so each formula is written exactly once. The arguments are what the formula needs,
already evaluated; the ``*_fixed`` arguments are the same quantity with theta's path cut (the sample
detached) but phi's kept, so that the score weight is a constant for theta and still a function of the
control variate's parameters phi (Grathwohl et al. 2018, "Backpropagation through the Void").

Shapes: every argument has the same shape (one value per sample); the result too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def score_function(log_prob: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
    """REINFORCE: g = weight * grad log p(b). ``weight`` (f(b) minus a baseline independent of b) is a constant."""
    weight = weight.detach() if isinstance(weight, torch.Tensor) else weight
    return log_prob * weight


def relax(
    log_prob: torch.Tensor, f: torch.Tensor, c_z: torch.Tensor, c_z_tilde: torch.Tensor, c_z_tilde_fixed: torch.Tensor
) -> torch.Tensor:
    """RELAX (Sec. 3.2, App. A): g = [f(b) - c(z~)] grad log p(b) + grad c(z) - grad c(z~).

    b = H(z), z ~ p(z|theta), z~ ~ p(z|b, theta); c(z) and c(z~) are differentiated through their
    samplers, c(z~) in the score weight is not (``c_z_tilde_fixed``). Unbiased for any c because z~
    has z's distribution given b. ``f`` is a constant (f(b) for a black box, A_t in RL).
    """
    return log_prob * (f.detach() - c_z_tilde_fixed) + c_z - c_z_tilde


def lax(log_prob: torch.Tensor, f: torch.Tensor, c_x: torch.Tensor, c_x_fixed: torch.Tensor) -> torch.Tensor:
    """LAX (Sec. 3.1, App. C): g = [f(x) - c(x)] grad log p(x) + grad c(x(theta, eps)), at the *same* x.

    x = T(theta, eps) is reparameterised; ``c_x`` is differentiated through it, ``c_x_fixed`` (the
    score weight) is not. Evaluating the two terms at different samples is biased.
    """
    return log_prob * (f.detach() - c_x_fixed) + c_x


def variance_loss(surrogate: torch.Tensor, params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """||g||^2 with g = d surrogate / d params, differentiable in the control variate's parameters phi.

    Returns (loss, g detached). For an unbiased estimator E[g] does not depend on phi, so
    d E||g||^2 / d phi = d Var(g) / d phi (eq. vargrad): one sample of ||g||^2 is an unbiased estimate
    of the objective's gradient. Plain double backprop; the RL estimators' faster computation
    (:mod:`rl_relax.estimators.control_variate`) is tested against this one.
    """
    grads = torch.autograd.grad(surrogate, list(params), create_graph=True)
    loss = torch.stack([g.square().sum() for g in grads]).sum()
    return loss, [g.detach() for g in grads]
