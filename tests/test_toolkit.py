"""The single-variable toolkit: unbiased estimators match exact gradients (by enumeration or in closed
form) with untrained control variates; Concrete's bias is detected; the two Bernoulli
conditional-sampler pitfalls are caught; the README example runs; the toy results hold.

Tolerance: every component of the mean of N i.i.d. per-sample estimates within 4 standard errors
(std / sqrt(N)) of the exact gradient.
"""

from __future__ import annotations

import csv
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl_relax import toolkit as tk
from rl_relax.samplers import conditional_bernoulli, relaxed_bernoulli

ROOT = Path(__file__).resolve().parents[1]
N = 100_000


def per_sample_gradients(make_dist, params: torch.Tensor, estimator, n: int = N, seed: int = 0) -> torch.Tensor:
    """(n, *params.shape): each row is one sample's gradient estimate w.r.t. the parameters."""
    g = torch.Generator().manual_seed(seed)
    noise = make_dist(params.detach()).noise(n, g)
    copies = params.detach().expand(n, *params.shape).clone().requires_grad_()
    per_sample = estimator(make_dist(copies), noise)
    (grads,) = torch.autograd.grad(per_sample.sum(), copies)
    return grads


def z_scores(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    se = samples.std(0) / samples.shape[0] ** 0.5
    return ((samples.mean(0) - exact).abs() / se).reshape(-1)


# ----------------------------------------------------------------------------- problems with exact gradients
T = 0.45  # the toy's target (the experiment uses 0.499; a larger signal makes the checks sharper)
LOGIT = torch.tensor([0.3])


def toy_f(b: torch.Tensor) -> torch.Tensor:
    return (b - T).square().reshape(b.shape[0], -1).sum(-1)


def toy_exact(logit: torch.Tensor) -> torch.Tensor:
    theta = torch.sigmoid(logit)
    return theta * (1 - theta) * ((1 - T) ** 2 - T**2)  # d/dlogit of theta (1-t)^2 + (1-theta) t^2


WEIGHTS = torch.tensor([1.0, -2.0, 0.5])
LOGITS3 = torch.tensor([0.4, -0.8, 1.1])


def multi_f(b: torch.Tensor) -> torch.Tensor:
    b = b.reshape(b.shape[0], -1)
    return (b @ WEIGHTS - 0.3).square() + 2.0 * b[:, 0] * b[:, 2]


def multi_exact(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.clone().requires_grad_()
    theta = torch.sigmoid(logits)
    total = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=3):
        b = torch.tensor(bits)
        total = total + torch.prod(theta**b * (1 - theta) ** (1 - b)) * multi_f(b[None])[0]
    return torch.autograd.grad(total, logits)[0]


CAT_LOGITS = torch.tensor([0.2, -0.5, 0.9])
CAT_VALUES = torch.tensor([1.0, -2.0, 3.0])


def cat_f(b: torch.Tensor) -> torch.Tensor:
    return (b.reshape(b.shape[0], -1) @ CAT_VALUES).square()


def cat_exact(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.clone().requires_grad_()
    return torch.autograd.grad((torch.softmax(logits, -1) * CAT_VALUES.square()).sum(), logits)[0]


def random_control_variate(num_inputs: int, kind: str = "bernoulli", f=None) -> tk.ControlVariate:
    """An untrained control variate that is far from zero, so that a biased estimator shows."""
    torch.manual_seed(3)
    cv = tk.ControlVariate(num_inputs, kind, f=f, hidden=8, temperature_init=0.7)
    with torch.no_grad():
        cv.scale.fill_(2.0)
        for p in cv.net.parameters():
            p.normal_(0, 1.5)
    return cv


# ----------------------------------------------------------------------------- unbiasedness
@pytest.mark.parametrize("baseline", [0.0, 0.2])
def test_reinforce_is_unbiased(baseline):
    samples = per_sample_gradients(tk.Bernoulli, LOGIT, lambda d, n: tk.reinforce(toy_f, d, n, baseline, "none"))
    assert z_scores(samples, toy_exact(LOGIT)).max() < 4


def test_rebar_is_unbiased():
    estimator = lambda d, n: tk.rebar(toy_f, d, n, eta=0.7, temperature=0.5, reduction="none")  # noqa: E731
    samples = per_sample_gradients(tk.Bernoulli, LOGIT, estimator)
    assert z_scores(samples, toy_exact(LOGIT)).max() < 4


def test_relax_is_unbiased_for_several_bernoullis():
    cv = random_control_variate(3)
    samples = per_sample_gradients(tk.Bernoulli, LOGITS3, lambda d, n: tk.relax(multi_f, d, n, cv, "none"))
    assert z_scores(samples, multi_exact(LOGITS3)).max() < 4


def test_relax_and_reinforce_are_unbiased_for_a_categorical():
    cv = random_control_variate(3, "categorical")
    for estimator in (
        lambda d, n: tk.relax(cat_f, d, n, cv, "none"),
        lambda d, n: tk.reinforce(cat_f, d, n, 0.0, "none"),
    ):
        samples = per_sample_gradients(tk.Categorical, CAT_LOGITS, estimator)
        assert z_scores(samples, cat_exact(CAT_LOGITS)).max() < 4


def test_lax_and_reparameterization_are_unbiased_for_a_gaussian():
    target = torch.tensor([0.5, -1.0])
    f = lambda x: (x - target).square().sum(-1)  # noqa: E731  E f = |mu - a|^2 + sum sigma^2
    mean, log_std = torch.tensor([0.2, 0.3]), torch.tensor([-0.2, 0.1])
    exact = torch.cat([2 * (mean - target), 2 * torch.exp(2 * log_std)])
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    cv = lambda x: 3.0 * net(x).squeeze(-1)  # noqa: E731
    for estimator in (lambda d, n: tk.lax(f, d, n, cv, "none"), lambda d, n: tk.reparameterization(f, d, n, "none")):
        params = torch.cat([mean, log_std])
        samples = per_sample_gradients(lambda p: tk.Gaussian(p[..., :2], p[..., 2:]), params, estimator)
        assert z_scores(samples, exact).max() < 4


def test_concrete_is_biased_for_a_positive_temperature():
    samples = per_sample_gradients(tk.Bernoulli, LOGIT, lambda d, n: tk.concrete(toy_f, d, n, 0.5, "none"))
    bias = samples.mean(0) - toy_exact(LOGIT)
    assert z_scores(samples, toy_exact(LOGIT)).max() > 10, bias  # measured bias, many standard errors away


# ----------------------------------------------------------------------------- the Bernoulli conditional sampler
def conditional_with_typo(logits, b, v):
    """The early paper version's typo: theta where 1 - theta belongs (duvenaud/relax issue #1)."""
    theta = torch.sigmoid(logits)
    v_prime = torch.where(b > 0.5, v * (1 - theta) + theta, v * theta)
    return logits + torch.log(v_prime) - torch.log1p(-v_prime)


def conditional_without_theta_gradient(logits, b, v):
    """The PyTorch port's bug: no gradient through the theta inside v' (duvenaud/relax issue #6)."""
    theta = torch.sigmoid(logits).detach()
    v_prime = torch.where(b > 0.5, v * theta + (1 - theta), v * (1 - theta))
    return logits + torch.log(v_prime) - torch.log1p(-v_prime)


def joint_discrepancy(conditional) -> float:
    """max |E[z | b] - E[z~ | b]| and the same for E[z^2 | b], in standard errors."""
    g = torch.Generator().manual_seed(5)
    logits = torch.full((N,), 0.6)
    z = relaxed_bernoulli(logits, torch.rand(N, generator=g).clamp(1e-12, 1 - 1e-7))
    b = (z > 0).float()
    z_tilde = conditional(logits, b, torch.rand(N, generator=g).clamp(1e-12, 1 - 1e-7))
    worst = 0.0
    for value in (0.0, 1.0):
        rows = b == value
        for fn in (lambda x: x, torch.square):
            x, y = fn(z[rows].double()), fn(z_tilde[rows].double())
            se = (x.var() / rows.sum() + y.var() / rows.sum()).sqrt()
            worst = max(worst, ((x.mean() - y.mean()).abs() / se).item())
    return worst


def test_conditional_bernoulli_reproduces_the_joint_law_and_the_typo_does_not():
    assert joint_discrepancy(conditional_bernoulli) < 4
    assert joint_discrepancy(conditional_with_typo) > 10


class _BernoulliWith(tk.Bernoulli):
    conditional_fn = staticmethod(conditional_bernoulli)

    def conditional(self, b, noise):
        return self.conditional_fn(self.logits, b, noise["v"])


def test_relax_needs_the_gradient_through_theta_inside_the_conditional_noise():
    cv = random_control_variate(3)

    class NoThetaGradient(_BernoulliWith):
        conditional_fn = staticmethod(conditional_without_theta_gradient)

    exact = multi_exact(LOGITS3)
    good = per_sample_gradients(_BernoulliWith, LOGITS3, lambda d, n: tk.relax(multi_f, d, n, cv, "none"))
    bad = per_sample_gradients(NoThetaGradient, LOGITS3, lambda d, n: tk.relax(multi_f, d, n, cv, "none"))
    assert z_scores(good, exact).max() < 4
    assert z_scores(bad, exact).max() > 4


# ----------------------------------------------------------------------------- variance objective, README, toy
def test_variance_loss_training_lowers_the_variance():
    """300 Adam steps on ||g||^2 for RELAX's control variate lower the estimator's variance at a fixed theta."""
    cv = tk.ControlVariate(3, "bernoulli", hidden=8)
    opt = torch.optim.Adam(cv.parameters(), lr=0.01)
    estimator = lambda d, n: tk.relax(multi_f, d, n, cv, "none")  # noqa: E731
    before = per_sample_gradients(tk.Bernoulli, LOGITS3, estimator, n=20_000, seed=9).var(0).log().mean()
    logits = LOGITS3.clone().requires_grad_()
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        dist = tk.Bernoulli(logits)
        loss, _ = tk.variance_loss(tk.relax(multi_f, dist, dist.noise(16, g), cv), [logits])
        opt.zero_grad()
        loss.backward(inputs=list(cv.parameters()))
        opt.step()
    after = per_sample_gradients(tk.Bernoulli, LOGITS3, estimator, n=20_000, seed=9).var(0).log().mean()
    assert after < before - 0.5, (before.item(), after.item())


def test_readme_example_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- toolkit-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "the README lost its toolkit example"
    proc = subprocess.run([sys.executable, "-c", match.group(1)], capture_output=True, text=True, check=False,
                          cwd=ROOT, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "theta" in proc.stdout


def test_toy_script_writes_csv_and_plots(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/toy_problem.py", "--steps", "20", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((tmp_path / "toy_t0499.csv").read_text().splitlines()))
    assert {r["estimator"] for r in rows} == {"REINFORCE", "Concrete", "REBAR", "RELAX"} and len(rows) == 4 * 3
    for name in ("loss.png", "log_variance.png", "relaxations.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_committed_toy_results_reproduce_the_papers_finding():
    """RELAX drives theta towards the optimum 0; REINFORCE and REBAR stay near 0.5 (results/toy)."""
    rows = list(csv.DictReader((ROOT / "results" / "toy" / "toy_t0499.csv").read_text().splitlines()))
    last = {}
    for r in rows:
        last[r["estimator"]] = float(r["theta"])
    assert last["RELAX"] < 0.1
    assert min(last["REINFORCE"], last["REBAR"]) > max(0.3, 5 * last["RELAX"])


def test_the_non_differentiable_model_estimators_are_reachable_from_the_toolkit():
    from rl_relax import nondiff

    for name in ("HyperplaneModel", "boundary_noise", "elbo_integrand", "reparameterization_with_boundary"):
        assert getattr(tk, name) is getattr(nondiff, name)
    with pytest.raises(AttributeError, match="no attribute"):
        tk.not_an_estimator  # noqa: B018
