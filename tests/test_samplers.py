"""Samplers: Gumbel-max follows the policy; the conditional sampler reproduces the joint law of
(argmax z, z); the paper code's biased sampler is caught by the same test."""

import numpy as np
import pytest
import torch

from rl_relax.samplers import biased_conditional_gumbel, conditional_bernoulli, conditional_gumbel, relaxed_categorical

LOGITS = torch.tensor([0.5, -0.3, 1.2, -1.0])
N = 200_000


def uniforms(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(N, 4, generator=g).clamp_min(1e-12)


def test_gumbel_max_sample_follows_softmax():
    z = relaxed_categorical(LOGITS.expand(N, 4), uniforms(0))
    freq = torch.bincount(z.argmax(-1), minlength=4).double() / N
    probs = torch.softmax(LOGITS.double(), -1)
    se = (probs * (1 - probs) / N).sqrt()
    assert ((freq - probs).abs() < 4 * se).all()


def joint_discrepancy(sampler) -> torch.Tensor:
    """max over (b, i) of |mean(z_i | b) - mean(z~_i | b)| in standard errors, and the same for E[z_i^2]."""
    logits = LOGITS.expand(N, 4)
    z = relaxed_categorical(logits, uniforms(1))
    b = z.argmax(-1)
    z_tilde = sampler(logits, b, uniforms(2))
    worst = torch.tensor(0.0, dtype=torch.float64)
    for action in range(4):
        rows = b == action
        n = rows.sum()
        for f in (lambda x: x, torch.square):
            x, y = f(z[rows].double()), f(z_tilde[rows].double())
            se = (x.var(0) / n + y.var(0) / n).sqrt()
            worst = torch.maximum(worst, ((x.mean(0) - y.mean(0)).abs() / se).max())
    return worst


def test_conditional_sample_has_the_joint_distribution_of_the_unconditional_one():
    logits = LOGITS.expand(1000, 4)
    b = torch.randint(0, 4, (1000,), generator=torch.Generator().manual_seed(3))
    assert (conditional_gumbel(logits, b, uniforms(4)[:1000]).argmax(-1) == b).all()  # consistent with b
    assert joint_discrepancy(conditional_gumbel) < 4.5


def test_the_biased_sampler_fails_the_same_check():
    assert joint_discrepancy(biased_conditional_gumbel) > 10


@pytest.mark.parametrize("sampler", [conditional_gumbel, relaxed_categorical])
def test_samplers_are_differentiable_in_the_logits(sampler):
    logits = LOGITS.clone().requires_grad_()
    args = (logits.expand(8, 4), torch.zeros(8, dtype=torch.long), uniforms(5)[:8])
    out = sampler(*args) if sampler is conditional_gumbel else sampler(args[0], args[2])
    (grad,) = torch.autograd.grad(out.sum(), logits)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_conditional_sampler_stays_finite_for_a_near_deterministic_policy():
    """theta_i = exp(-150) underflows 1/theta_i in float32; the sample and its gradient must not."""
    logits = torch.tensor([[150.0, 0.0], [0.0, 150.0]], requires_grad=True)
    v = torch.tensor([[0.3, 0.6], [0.5, 0.2]])
    z_tilde = conditional_gumbel(logits, torch.tensor([0, 1]), v)
    assert torch.isfinite(z_tilde).all() and (z_tilde.argmax(-1) == torch.tensor([0, 1])).all()
    # z~_i = -log(-log(v_i) / theta_i - log v_b) ~= log theta_i - log(-log v_i) when theta_i is tiny
    assert z_tilde[0, 1].item() == pytest.approx(-150.0 - torch.log(-torch.log(v[0, 1])).item(), abs=1e-3)
    (grad,) = torch.autograd.grad(torch.softmax(z_tilde, -1)[:, 0].sum() + z_tilde.sum(), logits)
    assert torch.isfinite(grad).all()


def test_conditional_bernoulli_is_finite_where_v_prime_would_round_to_one():
    """v = 1 - 2e-7, theta = 0.2, b = 1: v' = 1 - (1 - v) theta rounds to 1 in float32; the log-space
    sampler stays finite and equals the float64 value of the formula."""
    logits = torch.full((1,), float(np.log(0.2 / 0.8)), requires_grad=True)
    b, v = torch.ones(1), torch.full((1,), 1.0 - 2e-7)
    z = conditional_bernoulli(logits, b, v)
    (grad,) = torch.autograd.grad(z.sum(), logits)
    assert torch.isfinite(z).all() and torch.isfinite(grad).all()
    theta, v64 = 0.2, float(v.double())
    v_prime = 1.0 - (1.0 - v64) * theta
    expected = np.log(0.25) + np.log(v_prime) - np.log((1.0 - v64) * theta)
    assert z.item() == pytest.approx(expected, rel=1e-5)
