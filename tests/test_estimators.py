"""Estimators: unbiased against exact gradients (and biased variants caught), and training the control
variate on the variance objective lowers the gradient variance. Problems: tests/estimator_problems.py;
every gradient component must lie within 4 standard errors of the exact gradient.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from rl_relax import surrogates
from rl_relax.errors import ConfigError
from rl_relax.estimators.base import RolloutBatch
from rl_relax.estimators.baseline import BaselineEstimator
from rl_relax.estimators.lax import LaxEstimator
from rl_relax.estimators.relax import RelaxEstimator
from rl_relax.networks import MLP
from rl_relax.samplers import biased_conditional_gumbel, gaussian_reparam
from tests.estimator_problems import (
    NUM_STATES,
    BanditProblem,
    GaussianProblem,
    group_gradients,
    make,
    strong_control_variate,
    z_scores,
)


class BiasedRelax(RelaxEstimator):
    """RELAX with the released code's "slightly biased" conditional sampler."""

    conditional_sampler = staticmethod(biased_conditional_gumbel)


class FreshActionLax(LaxEstimator):
    """LAX as the released continuous code computes it: c evaluated at a fresh sample a', not a_t."""

    def surrogate(self, batch: RolloutBatch) -> torch.Tensor:
        fresh = gaussian_reparam(batch.dist_params, batch.policy.log_std, torch.randn_like(batch.noise["eps"]))
        c = self.cv(batch.obs, fresh)
        return batch.mean(surrogates.lax(batch.log_prob, batch.advantages, c, c.detach()))


def test_baseline_is_unbiased_on_the_bandit():
    problem = BanditProblem()
    assert z_scores(problem, make(BaselineEstimator, problem)).max() < 4


def test_relax_with_an_untrained_control_variate_is_unbiased():
    problem = BanditProblem()
    estimator = strong_control_variate(make(RelaxEstimator, problem))
    assert z_scores(problem, estimator).max() < 4


def test_relax_with_the_biased_sampler_fails_the_unbiasedness_test():
    problem = BanditProblem()
    estimator = strong_control_variate(make(BiasedRelax, problem))
    assert z_scores(problem, estimator).max() > 4


def test_baseline_is_unbiased_on_the_gaussian_problem():
    problem = GaussianProblem()
    assert z_scores(problem, make(BaselineEstimator, problem)).max() < 4


def test_lax_with_an_untrained_control_variate_is_unbiased():
    problem = GaussianProblem()
    assert z_scores(problem, strong_control_variate(make(LaxEstimator, problem))).max() < 4


def test_lax_at_a_fresh_action_fails_the_unbiasedness_test():
    problem = GaussianProblem()
    assert z_scores(problem, strong_control_variate(make(FreshActionLax, problem))).max() > 4


def log_variance(problem, estimator) -> float:
    samples = group_gradients(problem, estimator, groups=100, m=32, seed=11)
    return samples.var(0).clamp_min(1e-30).log().mean().item()


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_training_phi_on_the_variance_objective_lowers_the_variance(direction):
    """300 phi steps on ||g||^2 lower the sampled log-variance (same evaluation noise before and after);
    ascending it instead (the wrong sign, which must fail the check) raises it."""
    problem = BanditProblem()
    estimator = strong_control_variate(make(RelaxEstimator, problem, cv_lr=3e-3), gain=3.0)
    before = log_variance(problem, estimator)
    g = torch.Generator().manual_seed(7)
    for _ in range(300):
        phi_grads, objective = estimator.fast_phi_gradient(problem.batch(32, g))
        estimator.step_control_variate([None if x is None else direction * x for x in phi_grads], objective)
    after = log_variance(problem, estimator)
    if direction > 0:
        assert after < before - 0.3, (before, after)
    else:
        assert after > before, (before, after)


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "gelu"])
def test_mlp_jvp_matches_torch_func(activation):
    torch.manual_seed(0)
    net = MLP(3, [16, 16], 2, activation=activation)
    x = torch.randn(10, 3)
    tangents = [torch.randn_like(p) for p in net.parameters()]
    primals = {k: p.detach() for k, p in net.named_parameters()}
    directions = dict(zip(primals, tangents, strict=True))
    expected = torch.func.jvp(lambda p: torch.func.functional_call(net, p, (x,)), (primals,), (directions,))[1]
    torch.testing.assert_close(net.jvp(x, tangents), expected, rtol=1e-5, atol=1e-6)


def test_estimators_refuse_the_wrong_action_space():
    with pytest.raises(ConfigError, match="estimator=lax"):
        RelaxEstimator(name="relax").bind(GaussianProblem().policy, NUM_STATES, gym.spaces.Box(-1, 1, (2,)))
    with pytest.raises(ConfigError, match="estimator=relax"):
        LaxEstimator(name="lax").bind(BanditProblem().policy, NUM_STATES, gym.spaces.Discrete(4))


def test_a_non_finite_control_variate_objective_stops_before_phi_moves():
    """The check names estimator.cv_lr and leaves phi untouched (so no checkpoint can hold the blow-up)."""
    from rl_relax.errors import TrainingDivergedError

    problem = BanditProblem()
    estimator = strong_control_variate(make(RelaxEstimator, problem, cv_lr=0.05))
    before = [p.detach().clone() for p in estimator.phi_parameters()]
    phi_grads, _ = estimator.fast_phi_gradient(problem.batch(8, torch.Generator().manual_seed(0)))
    with pytest.raises(TrainingDivergedError, match=r"estimator\.cv_lr"):
        estimator.step_control_variate(phi_grads, float("nan"))
    for p, q in zip(estimator.phi_parameters(), before, strict=True):
        assert torch.equal(p, q)
