"""Samplers as deterministic functions of distribution parameters and stored noise.

Each sample is a differentiable function of the parameters given the noise, so the same noise can be
replayed under the current parameters (needed by LAX and RELAX, which differentiate through it).

Categorical with probabilities theta = softmax(logits), noise u, v ~ U(0, 1)^K (Grathwohl et al. 2018,
App. B; Tucker et al. 2017, App.):

    z      = log theta + g(u),        g(u) = -log(-log u)           (Gumbel-max: argmax z ~ theta)
    b      = argmax z
    z~_b   = g(v_b)                                                   (the max of K Gumbels is Gumbel(0))
    z~_i   = -log( -log(v_i) / theta_i - log(v_b) ),  i != b          (Gumbel(log theta_i) truncated at z~_b)

so that (b, z~) has the same joint distribution as (b, z). The paper's released RL code set
z~_b = log theta_b + g(v_b) (its "slightly biased" sampler); :func:`biased_conditional_gumbel` keeps it
only so that tests can show the unbiasedness checks catch it.

Bernoulli with theta = sigmoid(logit), noise u, v ~ U(0, 1) (App. B):

    z      = logit + log(u / (1 - u))                                  (logistic noise: z > 0 w.p. theta)
    b      = 1[z > 0]
    v'     = v * (1 - theta)               if b = 0
           = v * theta + (1 - theta)       if b = 1
    z~     = logit + log(v' / (1 - v'))

The gradient of z~ must flow through the theta inside v' with v held fixed (a PyTorch port once
dropped it: duvenaud/relax issue #6), and it is 1 - theta, not theta, in both branches (an early
version of the paper had the typo: issue #1).

Gaussian: a = mu + sigma * eps, eps ~ N(0, I).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise from uniform noise: g = -log(-log u)."""
    return -torch.log(-torch.log(u))


def relaxed_categorical(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """z = log softmax(logits) + g(u); ``argmax(z)`` is a sample of Categorical(logits)."""
    return torch.log_softmax(logits, dim=-1) + gumbel(u)


def conditional_gumbel(logits: torch.Tensor, actions: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """z~ ~ p(z | argmax z = b, theta), exactly (see the module docstring), differentiable in logits.

    Args:
        logits: (B, K) unnormalised log-probabilities (normalised here).
        actions: (B,) the sampled categories b.
        v: (B, K) uniform noise in (0, 1), independent of the noise that produced b.
    """
    log_theta = torch.log_softmax(logits, dim=-1)
    b = actions.unsqueeze(-1)
    log_neg_log_v = torch.log(-torch.log(v))  # log(-log v)
    top = -log_neg_log_v.gather(-1, b)  # z~_b = -log(-log v_b)
    # z~_i = -log(-log(v_i) / theta_i - log v_b), in log space: exp(-log theta_i) overflows (and its
    # gradient becomes inf/inf = nan) once a near-deterministic policy puts theta_i below ~1e-38.
    others = -torch.logaddexp(log_neg_log_v - log_theta, -top)
    return others.scatter(-1, b, top)


def biased_conditional_gumbel(logits: torch.Tensor, actions: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The released RELAX RL code's sampler: z~_b = log theta_b + g(v_b). Biased; for tests only."""
    log_theta = torch.log_softmax(logits, dim=-1)
    b = actions.unsqueeze(-1)
    top = log_theta.gather(-1, b) + gumbel(v.gather(-1, b))
    others = log_theta - torch.log(-torch.log(v) + torch.exp(log_theta) * torch.exp(-top))
    return others.scatter(-1, b, top)


def gaussian_reparam(mean: torch.Tensor, log_std: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """a = mean + exp(log_std) * eps, differentiable in mean and log_std."""
    return mean + torch.exp(log_std) * eps


def relaxed_bernoulli(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """z = logit + log(u / (1 - u)); ``z > 0`` is a sample of Bernoulli(sigmoid(logit))."""
    return logits + torch.log(u) - torch.log1p(-u)


def conditional_bernoulli(logits: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """z~ ~ p(z | b, theta) for the Bernoulli relaxation, differentiable in the logits (see above).

    Computed in log space: z~ = logit + log v' - log(1 - v') with

        b = 1:  log v' = log1p(-(1 - v) theta),   log(1 - v') = log1p(-v) + log theta
        b = 0:  log v' = log v + log(1 - theta),  log(1 - v') = log1p(-v (1 - theta))

    the same function of theta (v held fixed), but finite in float32 where forming v' first would round
    it to 1 (e.g. v = 1 - 2e-7 and theta = 0.2) and return an infinite z~.
    """
    log_theta, log_one_minus_theta = F.logsigmoid(logits), F.logsigmoid(-logits)
    one = b > 0.5
    log_v_prime = torch.where(one, torch.log1p(-(1.0 - v) * log_theta.exp()), torch.log(v) + log_one_minus_theta)
    log_rest = torch.where(one, torch.log1p(-v) + log_theta, torch.log1p(-v * log_one_minus_theta.exp()))
    return logits + log_v_prime - log_rest
