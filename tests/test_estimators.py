"""Estimators: unbiased against exact gradients (and biased variants caught), the variance objective's
gradient is exact, and training the control variate on it lowers the gradient variance.

Problems with exact policy gradients:
- a contextual bandit: 3 states (one-hot), 4 actions, fixed rewards f(s, a); J = mean_s sum_a pi(a|s) f(s, a);
- a Gaussian problem: f(s, a) = -|a - t_s|^2, so J = mean_s [-|mu(s) - t_s|^2 - sum sigma^2].
Estimates are averaged over G independent groups of m samples; every gradient component must lie
within 4 standard errors (the spread of the group means) of the exact gradient.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from omegaconf import OmegaConf

from rl_relax.errors import ConfigError
from rl_relax.estimators.base import Estimator, EstimatorBatch
from rl_relax.estimators.baseline import BaselineEstimator
from rl_relax.estimators.lax import LaxEstimator
from rl_relax.estimators.relax import RelaxEstimator
from rl_relax.learner import A2CLearner
from rl_relax.networks import MLP, CategoricalPolicy, GaussianPolicy, ValueNet
from rl_relax.samplers import biased_conditional_gumbel, gaussian_reparam, relaxed_categorical

NUM_STATES, NUM_ACTIONS = 3, 4
LEARNER_CFG = OmegaConf.create({
    "gamma": 0.99, "gae_lambda": 1.0, "ent_coef": 0.0, "vf_coef": 0.5, "normalize_advantage": False,
    "lr_schedule": "constant", "optimizer": "rmsprop", "lr": 7e-4, "rmsprop_alpha": 0.99, "eps": 1e-5,
    "max_grad_norm": 0.5, "adam_betas": [0.9, 0.999],
})  # fmt: skip


def strong_control_variate(estimator: Estimator, gain: float = 10.0) -> Estimator:
    """An untrained but far-from-zero c_phi, so that a wrong estimator shows its bias."""
    torch.nn.init.orthogonal_(estimator.cv.net.layers[-1].weight, gain)
    torch.nn.init.constant_(estimator.cv.net.layers[-1].bias, 0.5)
    return estimator


class BanditProblem:
    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.policy = CategoricalPolicy(NUM_STATES, NUM_ACTIONS, [8], "tanh", ortho_init=True)
        for p in self.policy.parameters():  # a policy far from uniform
            p.data.normal_(0.0, 0.8, generator=g)
        self.rewards = torch.randn(NUM_STATES, NUM_ACTIONS, generator=g) * 2.0
        self.state_values = torch.randn(NUM_STATES, generator=g)  # any V(s) keeps the estimate unbiased
        self.space = gym.spaces.Discrete(NUM_ACTIONS)

    def exact_gradient(self) -> torch.Tensor:
        probs = torch.softmax(self.policy(torch.eye(NUM_STATES)), -1)
        objective = (probs * self.rewards).sum(-1).mean()
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(objective, list(self.policy.parameters()))])

    def batch(self, m: int, g: torch.Generator) -> EstimatorBatch:
        states = torch.randint(0, NUM_STATES, (m,), generator=g)
        obs = torch.eye(NUM_STATES)[states]
        u = torch.rand(m, NUM_ACTIONS, generator=g).clamp_min(1e-12)
        v = torch.rand(m, NUM_ACTIONS, generator=g).clamp_min(1e-12)
        logits = self.policy(obs)
        actions = relaxed_categorical(logits.detach(), u).argmax(-1)
        advantages = self.rewards[states, actions] - self.state_values[states]
        return EstimatorBatch(
            obs=obs, actions=actions, advantages=advantages, weights=torch.full((m,), 1.0 / m),
            dist_params=logits, log_prob=self.policy.log_prob(logits, actions), noise={"u": u, "v": v},
            policy=self.policy,
        )  # fmt: skip


class GaussianProblem:
    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        space = gym.spaces.Box(-10.0, 10.0, (2,))
        self.policy = GaussianPolicy(NUM_STATES, space, [8], "tanh", ortho_init=True, log_std_init=-0.3)
        for p in self.policy.net.parameters():
            p.data.normal_(0.0, 0.8, generator=g)
        self.targets = torch.randn(NUM_STATES, 2, generator=g)
        self.state_values = torch.randn(NUM_STATES, generator=g)
        self.space = space

    def exact_gradient(self) -> torch.Tensor:
        mean = self.policy(torch.eye(NUM_STATES))
        objective = (-(mean - self.targets).square().sum(-1) - torch.exp(2 * self.policy.log_std).sum()).mean()
        params = [*self.policy.net.parameters(), self.policy.log_std]
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(objective, params)])

    def batch(self, m: int, g: torch.Generator) -> EstimatorBatch:
        states = torch.randint(0, NUM_STATES, (m,), generator=g)
        obs = torch.eye(NUM_STATES)[states]
        eps = torch.randn(m, 2, generator=g)
        mean = self.policy(obs)
        actions = gaussian_reparam(mean, self.policy.log_std, eps).detach()
        reward = -(actions - self.targets[states]).square().sum(-1)
        return EstimatorBatch(
            obs=obs, actions=actions, advantages=reward - self.state_values[states],
            weights=torch.full((m,), 1.0 / m), dist_params=mean, log_prob=self.policy.log_prob(mean, actions),
            noise={"eps": eps}, policy=self.policy,
        )  # fmt: skip


def group_gradients(problem, estimator: Estimator, groups: int = 200, m: int = 200, seed: int = 1) -> torch.Tensor:
    """(groups, P): each row is the estimator's gradient averaged over m fresh samples."""
    g = torch.Generator().manual_seed(seed)
    params = [*problem.policy.net.parameters(), *problem.policy.direct_parameters()]
    rows = []
    for _ in range(groups):
        grads = torch.autograd.grad(estimator.surrogate(problem.batch(m, g)), params)
        rows.append(torch.cat([x.reshape(-1) for x in grads]))
    return torch.stack(rows)


def z_scores(problem, estimator: Estimator) -> torch.Tensor:
    samples = group_gradients(problem, estimator)
    se = samples.std(0) / samples.shape[0] ** 0.5
    return (samples.mean(0) - problem.exact_gradient()).abs() / se


def make(cls, problem, **kwargs) -> Estimator:
    estimator = cls(name=cls.__name__, **kwargs)
    estimator.bind(problem.policy, NUM_STATES, problem.space)
    return estimator


class BiasedRelax(RelaxEstimator):
    """RELAX with the released code's "slightly biased" conditional sampler."""

    conditional_sampler = staticmethod(biased_conditional_gumbel)


class FreshActionLax(LaxEstimator):
    """LAX as the released continuous code computes it: c evaluated at a fresh sample a', not a_t."""

    def surrogate(self, batch: EstimatorBatch) -> torch.Tensor:
        fresh = gaussian_reparam(batch.dist_params, batch.policy.log_std, torch.randn_like(batch.noise["eps"]))
        c = self.cv(batch.obs, fresh)
        per_step = batch.log_prob * (batch.advantages - c.detach()) + c
        return torch.dot(per_step, batch.weights)


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


@pytest.mark.parametrize(
    ("problem_cls", "estimator_cls"), [(BanditProblem, RelaxEstimator), (GaussianProblem, LaxEstimator)]
)
@pytest.mark.parametrize("objective", ["variance", "dist_params"])
def test_control_variate_gradient_equals_naive_double_backprop(problem_cls, estimator_cls, objective):
    """The learner's vjp/jvp computation of d||g||^2/dphi matches differentiating ||g||^2 directly."""
    problem = problem_cls()
    estimator = strong_control_variate(make(estimator_cls, problem, cv_objective=objective))
    learner = A2CLearner(problem.policy, ValueNet(NUM_STATES, [4], "tanh", True), estimator, LEARNER_CFG)
    batch = problem.batch(64, torch.Generator().manual_seed(5))
    phi = estimator.phi_parameters()
    surrogate = estimator.surrogate(batch)
    phi_grads, g, value = learner.control_variate_gradient(surrogate, batch)

    inputs = learner.policy_params if objective == "variance" else [batch.dist_params]
    naive_g = torch.autograd.grad(estimator.surrogate(batch), inputs, create_graph=True)
    naive_loss = sum(x.square().sum() for x in naive_g)
    naive_phi = torch.autograd.grad(naive_loss, phi, allow_unused=True)
    assert value == pytest.approx(naive_loss.item(), rel=1e-4)
    for mine, ref in zip(phi_grads, naive_phi, strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-6)
    exact_g = torch.autograd.grad(estimator.surrogate(batch), learner.policy_params)
    torch.testing.assert_close(g, torch.cat([x.reshape(-1) for x in exact_g]), rtol=1e-5, atol=1e-7)


def log_variance(problem, estimator) -> float:
    samples = group_gradients(problem, estimator, groups=100, m=32, seed=11)
    return samples.var(0).clamp_min(1e-30).log().mean().item()


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_training_phi_on_the_variance_objective_lowers_the_variance(direction):
    """300 phi steps on ||g||^2 lower the sampled log-variance (same evaluation noise before and after);
    ascending it instead (the wrong sign, which must fail the check) raises it."""
    problem = BanditProblem()
    estimator = strong_control_variate(make(RelaxEstimator, problem, cv_lr=3e-3), gain=3.0)
    learner = A2CLearner(problem.policy, ValueNet(NUM_STATES, [4], "tanh", True), estimator, LEARNER_CFG)
    before = log_variance(problem, estimator)
    g = torch.Generator().manual_seed(7)
    for _ in range(300):
        batch = problem.batch(32, g)
        phi_grads, _, _ = learner.control_variate_gradient(estimator.surrogate(batch), batch)
        estimator.step_control_variate([None if x is None else direction * x for x in phi_grads])
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
