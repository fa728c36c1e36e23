"""The VAE's per-layer gradient estimators (rl_relax.vae.estimators) against the exact ELBO gradient.

On tiny models (3 pixels; two stochastic layers of 2 latents, or one layer of 3 latents behind tanh
layers) the ELBO is an exact sum over all 2^D latent configurations, and autograd of that sum is the
exact gradient w.r.t. every model parameter. Each estimator's mean over 100 independent batch
estimates (400 images each) must agree within 4.5 standard errors on every encoder parameter;
decoder gradients are exact given b for every estimator. Concrete is biased and must fail the same
check, as must RELAX/REBAR with the two conditional-sampler bugs of the paper's history (theta in
place of 1 - theta, duvenaud/relax issue #1; no gradient through v', issue #6), NVIL with a baseline that
sees the sample, and DisARM without its factor 1/2: the power of the check.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from rl_relax import toolkit as tk
from rl_relax.vae.estimators import VaeEstimator, encoder_gradient_log_variance
from rl_relax.vae.models import BernoulliVAE, bernoulli_log_prob, build_model

X = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
REPEATS, BATCHES = 200, 100
TINY = {"linear2": ([2, 2], []), "nonlinear": ([3], [4, 4])}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(kind: str) -> BernoulliVAE:
    torch.manual_seed(0)
    latents, hidden = TINY[kind]
    model = BernoulliVAE(3, latents, hidden)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0)
    return model


def exact_gradient(model: BernoulliVAE, x: torch.Tensor) -> torch.Tensor:
    """d/dparams of mean_i sum_b q(b | x_i) f(x_i, b), enumerating every b."""
    total = torch.zeros(())
    for config in itertools.product(*(itertools.product([0.0, 1.0], repeat=n) for n in model.latent_sizes)):
        samples = [torch.tensor(b).expand(x.shape[0], -1) for b in config]
        logits, log_q, previous = [], torch.zeros(x.shape[0]), x
        for k, b in enumerate(samples):
            logits.append(model.encode(k, previous))
            log_q = log_q + bernoulli_log_prob(b, logits[-1])
            previous = b
        total = total + (log_q.exp() * model.elbo_terms(x, samples, logits)).mean()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(total, list(model.parameters()))])


def estimated_gradients(model: BernoulliVAE, estimator: VaeEstimator, seed: int = 1) -> torch.Tensor:
    """(BATCHES, P): each row the estimator's gradient on X repeated REPEATS times (an average of iid estimates)."""
    generator = torch.Generator().manual_seed(seed)
    xs = X.repeat(REPEATS, 1)
    rows = []
    for _ in range(BATCHES):
        est = estimator.estimate(model, xs, generator, update_statistics=False)
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(est.surrogate, list(model.parameters()))]))
    return torch.stack(rows)


def make_estimator(name: str, model: BernoulliVAE) -> VaeEstimator:
    """The estimator with perturbed control-variate parameters, so that the learned terms are non-zero."""
    torch.manual_seed(2)
    estimator = VaeEstimator(name, model, hidden_sizes=[8])
    with torch.no_grad():
        for p in estimator.parameters():
            p.add_(0.5 * torch.randn_like(p))
    if name == "reinforce":  # NVIL's running mean from one batch: a baseline near the ELBO, as in training
        estimator.estimate(model, X.repeat(500, 1), torch.Generator().manual_seed(3))
    return estimator


def encoder_z_scores(model: BernoulliVAE, name: str) -> torch.Tensor:
    exact = exact_gradient(model, X)
    grads = estimated_gradients(model, make_estimator(name, model))
    n_encoder = sum(p.numel() for p in model.encoder_parameters())  # the encoder's parameters come first
    mean, se = grads.mean(0), grads.std(0) / BATCHES**0.5
    return ((mean - exact) / se)[:n_encoder]


@pytest.mark.parametrize("kind", list(TINY))
@pytest.mark.parametrize("name", ["reinforce", "rebar", "relax", "disarm"])
def test_unbiased_estimators_match_the_exact_elbo_gradient(kind, name):
    assert encoder_z_scores(tiny_model(kind), name).abs().max() < 4.5


@pytest.mark.parametrize("kind", list(TINY))
def test_concrete_is_biased_and_the_check_detects_it(kind):
    assert encoder_z_scores(tiny_model(kind), "concrete").abs().max() > 10


def typo_conditional(self, b, noise):
    """An early paper version's sampler: theta where 1 - theta belongs (duvenaud/relax issue #1)."""
    theta, v = torch.sigmoid(self.logits), noise["v"]
    v_prime = torch.where(b > 0.5, v * (1 - theta) + theta, v * theta)
    return self.logits + torch.log(v_prime) - torch.log1p(-v_prime)


def no_gradient_through_v_prime(self, b, noise):
    """A PyTorch port's bug: v' treated as a constant (duvenaud/relax issue #6 / PR #8)."""
    theta, v = torch.sigmoid(self.logits).detach(), noise["v"]
    v_prime = torch.where(b > 0.5, v * theta + (1 - theta), v * (1 - theta))
    return self.logits + torch.log(v_prime) - torch.log1p(-v_prime)


@pytest.mark.parametrize("wrong", [typo_conditional, no_gradient_through_v_prime])
@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_wrong_conditional_samplers_fail_the_check(monkeypatch, name, wrong):
    monkeypatch.setattr(tk.Bernoulli, "conditional", wrong)
    assert encoder_z_scores(tiny_model("linear2"), name).abs().max() > 10


def test_estimates_leave_nvil_statistics_alone_when_asked():
    model = tiny_model("nonlinear")
    estimator = VaeEstimator("reinforce", model, hidden_sizes=[8])
    estimator.estimate(model, X, update_statistics=False)
    assert estimator.f_mean_count.item() == 0
    estimator.estimate(model, X)
    assert estimator.f_mean_count.item() == 1 and estimator.f_mean.item() < 0  # the ELBO of these images


@pytest.mark.parametrize("name", ["reinforce", "concrete", "rebar", "relax", "disarm"])
def test_variance_objective_exists_exactly_for_estimators_with_parameters(name):
    model = build_model("linear2", 16, 5, 8)
    estimator = VaeEstimator(name, model, hidden_sizes=[8])
    est = estimator.estimate(model, torch.randint(0, 2, (6, 16)).float())
    assert (est.variance_loss is not None) == (name in ("reinforce", "rebar", "relax"))
    if est.variance_loss is not None:
        grads = torch.autograd.grad(est.variance_loss, list(estimator.parameters()), allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert est.elbo.shape == (6,)


def test_relax_control_variate_reduces_variance_relative_to_nvil_on_a_fixed_batch():
    """A sanity check of the log-variance measurement: RELAX's and REBAR's encoder gradients are quieter
    than REINFORCE with only the (untrained) baseline on the same model and batch."""
    model = tiny_model("nonlinear")
    x = X.repeat(8, 1)
    logvar = {
        name: encoder_gradient_log_variance(
            model, VaeEstimator(name, model, hidden_sizes=[8]), x, 20, torch.Generator().manual_seed(0)
        )
        for name in ("reinforce", "rebar", "relax")
    }
    assert logvar["rebar"] < logvar["reinforce"] and logvar["relax"] < logvar["reinforce"]


class BaselineSeesTheSample(VaeEstimator):
    """A deliberately wrong NVIL: baseline (c + f(b)) / 2, which depends on the sample b through f."""

    def _layer_surrogate(self, model, x, layer, leaf, noises, logits, samples, f_b):
        return 0.5 * super()._layer_surrogate(model, x, layer, leaf, noises, logits, samples, f_b)


class DisarmWithoutTheHalf(VaeEstimator):
    """A deliberately wrong DisARM: the factor 1/2 dropped (twice the gradient through the sampled layers)."""

    def _disarm(self, *args):
        return 2.0 * super()._disarm(*args)


@pytest.mark.parametrize(("cls", "name"), [(BaselineSeesTheSample, "reinforce"), (DisarmWithoutTheHalf, "disarm")])
def test_wrong_nvil_and_disarm_variants_fail_the_check(monkeypatch, cls, name):
    monkeypatch.setattr("tests.test_vae_estimators.VaeEstimator", cls)
    assert encoder_z_scores(tiny_model("linear2"), name).abs().max() > 10
