"""Lee, Yu & Yang's estimator for models with `if` branches (rl_relax.nondiff), against exact gradients.

Exact references: the slide example's closed form and Gauss-Legendre quadrature (1-D, z-dependent
jump), and a 2-D model with two oblique hyperplanes whose ELBO is closed-form (constant jumps), so
that the scale gradient and the conditional sampling on a hyperplane are checked too. Per-sample
estimates come from a mean with a leading sample axis; statistical checks use fixed seeds and
z-scores in standard errors.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import pytest
import torch

from rl_relax import nondiff as nd
from rl_relax import toolkit as tk

N = 20_000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def per_sample_gradients(estimator: str, model: nd.HyperplaneModel, mean: torch.Tensor, log_std: torch.Tensor,
                         seed: int = 0, scale: float = 1.0) -> torch.Tensor:  # fmt: skip
    """(N, 2d) per-sample estimates of d ELBO / d (mean, log_std)."""
    generator = torch.Generator().manual_seed(seed)
    mu = mean.expand(N, -1).clone().requires_grad_()
    ls = log_std.expand(N, -1).clone().requires_grad_()
    q = tk.Gaussian(mu, ls)
    noise = {"eps": torch.randn(N, model.dim, generator=generator)}
    boundary = nd.boundary_noise(tk.Gaussian(mean, log_std), model, N, generator)
    f = nd.elbo_integrand(model, q)
    if estimator == "lee":
        s = nd.reparameterization_with_boundary(model, q, noise, boundary, reduction="none")
    elif estimator == "plain":
        s = tk.reparameterization(f, q, noise, reduction="none")
    elif estimator == "score":
        s = tk.reinforce(f, q, noise, reduction="none")
    elif estimator == "half_boundary":  # a deliberately wrong variant: half of the boundary term
        plain = tk.reparameterization(f, q, noise, reduction="none")
        s = plain + 0.5 * (nd.reparameterization_with_boundary(model, q, noise, boundary, reduction="none") - plain)
    else:
        raise AssertionError(estimator)
    g_mu, g_ls = torch.autograd.grad(s.sum(), [mu, ls], allow_unused=True)
    g_ls = torch.zeros_like(ls) if g_ls is None else g_ls
    return torch.cat([g_mu, g_ls], -1) * scale


def z_scores(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    return (samples.mean(0) - exact) / (samples.std(0) / math.sqrt(samples.shape[0]))


# -- the slide example -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theta", [-1.0, 0.0, 0.7, 2.0])
def test_quadrature_matches_the_slide_examples_closed_form(theta):
    _, d_mean, d_log_std = nd.exact_elbo_gradient_1d(nd.slide_example(), theta, 0.0)
    assert d_mean == pytest.approx(nd.slide_example_exact_gradient(theta), abs=1e-6)
    # sigma = 1 is not learned in the example, but the quadrature gives its gradient too: ELBO = -(theta^2 +
    # sigma^2)/2 + log sigma - 2.5 Phi(theta / sigma) + const, so at sigma = 1 d/dlog sigma = 2.5 theta phi(theta).
    phi = math.exp(-0.5 * theta**2) / math.sqrt(2 * math.pi)
    assert d_log_std == pytest.approx(2.5 * theta * phi, abs=1e-6)


def test_slide_example_program_follows_its_branches():
    model = nd.slide_example()
    z = torch.tensor([[0.5], [-0.5]])
    log_prior = -0.5 * 0.25 - 0.5 * math.log(2 * math.pi)
    expected = torch.tensor([log_prior - 4.5, log_prior - 2.0]) - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(model(z), expected)


@pytest.mark.parametrize("theta", [-1.0, 0.0, 0.7])
def test_lee_estimator_and_score_function_are_unbiased_on_the_slide_example(theta):
    model, exact = nd.slide_example(), nd.slide_example_exact_gradient(theta)
    for estimator in ("lee", "score"):
        g = per_sample_gradients(estimator, model, torch.tensor([theta]), torch.zeros(1))[:, 0]
        assert abs(z_scores(g[:, None], torch.tensor([exact])).item()) < 4.0, estimator


@pytest.mark.parametrize("theta", [-1.0, 0.0, 0.7])
def test_plain_reparameterization_is_biased_by_the_missing_boundary_term(theta):
    model, exact = nd.slide_example(), nd.slide_example_exact_gradient(theta)
    g = per_sample_gradients("plain", model, torch.tensor([theta]), torch.zeros(1))[:, 0]
    bias = g.mean().item() - exact
    se = g.std().item() / math.sqrt(N)
    assert abs(bias) > 10 * se  # significant: the power of the unbiasedness test above
    boundary = -2.5 * math.exp(-0.5 * theta**2) / math.sqrt(2 * math.pi)  # phi(theta) (log r1(0) - log r2(0))
    assert bias == pytest.approx(-boundary, abs=4 * se)  # and it is exactly the surface term


def test_half_a_boundary_term_fails_the_unbiasedness_check():
    model, exact = nd.slide_example(), nd.slide_example_exact_gradient(0.0)
    g = per_sample_gradients("half_boundary", model, torch.tensor([0.0]), torch.zeros(1))[:, 0]
    assert abs(z_scores(g[:, None], torch.tensor([exact])).item()) > 10


def test_lax_with_any_control_variate_is_unbiased_on_the_slide_example():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    theta, exact = 0.3, nd.slide_example_exact_gradient(0.3)
    mu = torch.full((N, 1), theta, requires_grad=True)
    q = tk.Gaussian(mu, torch.zeros(1))
    noise = {"eps": torch.randn(N, 1, generator=torch.Generator().manual_seed(1))}
    s = tk.lax(nd.elbo_integrand(nd.slide_example(), q), q, noise, lambda z: 3.0 * net(z).squeeze(-1), reduction="none")
    (g,) = torch.autograd.grad(s.sum(), [mu])
    assert abs(z_scores(g, torch.tensor([exact])).item()) < 4.0


# -- 2-D, two oblique hyperplanes, learned scale -------------------------------------------------------------------

NORMALS = torch.tensor([[1.0, 2.0], [-1.5, 0.5]])
OFFSETS = torch.tensor([-0.5, 0.3])
JUMPS = torch.tensor([[-1.0, 2.0], [0.5, -3.0]])  # log-density added on the (taken, not taken) side of each


def two_plane_model() -> nd.HyperplaneModel:
    def log_density(z: torch.Tensor, branches: torch.Tensor) -> torch.Tensor:
        smooth = (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(-1)
        return smooth + torch.where(branches, JUMPS[:, 0], JUMPS[:, 1]).sum(-1)

    return nd.HyperplaneModel(NORMALS, OFFSETS, log_density)


def two_plane_exact_gradient(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Closed form: P(a.z + c > 0) = Phi((a.mu + c) / sqrt(a^T D a)) under q; the rest is Gaussian algebra."""
    mu, ls = mean.clone().double().requires_grad_(), log_std.clone().double().requires_grad_()
    var = (2 * ls).exp()
    a, c, jumps = NORMALS.double(), OFFSETS.double(), JUMPS.double()
    p = torch.special.ndtr((a @ mu + c) / torch.sqrt(a.square() @ var))
    elbo = (-0.5 * (mu.square() + var)).sum() + (p * jumps[:, 0] + (1 - p) * jumps[:, 1]).sum() + ls.sum()
    return torch.cat(torch.autograd.grad(elbo, [mu, ls])).float()


def test_lee_estimator_is_unbiased_in_mean_and_scale_with_two_oblique_hyperplanes():
    mean, log_std = torch.tensor([0.4, -0.2]), torch.tensor([0.3, -0.4])
    exact = two_plane_exact_gradient(mean, log_std)
    lee = per_sample_gradients("lee", two_plane_model(), mean, log_std)
    assert z_scores(lee, exact).abs().max() < 4.5
    plain = per_sample_gradients("plain", two_plane_model(), mean, log_std)
    assert z_scores(plain, exact).abs().max() > 10  # the same check catches the plain gradient


def test_bad_shapes_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="normals must be"):
        nd.HyperplaneModel(torch.ones(2), torch.zeros(2), lambda z, s: z.sum(-1))
    with pytest.raises(ValueError, match="non-zero normal"):
        nd.HyperplaneModel(torch.zeros(1, 2), torch.zeros(1), lambda z, s: z.sum(-1))
    model, q = nd.slide_example(), tk.Gaussian(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        nd.reparameterization_with_boundary(model, q, q.noise(2), nd.boundary_noise(q, model, 2))


def test_the_readme_example_runs_as_written_and_finds_the_optimum():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    match = re.search(r"<!-- nondiff-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "the README lost its nondiff-example"
    torch.manual_seed(0)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(match.group(1), "README nondiff-example", "exec"), {})
    theta = float(printed.getvalue().split("=")[1])
    assert -1.0 < theta < -0.5  # theta* = -0.752; plain reparameterization would end near 0
