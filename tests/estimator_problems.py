"""Problems with exact policy gradients, for the estimators' unbiasedness tests.

- a contextual bandit: 3 states (one-hot), 4 actions, fixed rewards f(s, a); J = mean_s sum_a pi(a|s) f(s, a);
- a Gaussian problem: f(s, a) = -|a - t_s|^2, so J = mean_s [-|mu(s) - t_s|^2 - sum sigma^2].

A batch of m independent one-step samples is a rollout of T = m steps in N = 1 env, every step valid.
Estimates are averaged over G independent groups of m samples; :func:`z_scores` measures each gradient
component's distance from the exact gradient in standard errors (the spread of the group means).
"""

from __future__ import annotations

import gymnasium as gym
import torch

from rl_relax.estimators.base import Estimator, RolloutBatch
from rl_relax.networks import CategoricalPolicy, GaussianPolicy, Policy
from rl_relax.samplers import gaussian_reparam, relaxed_categorical

NUM_STATES, NUM_ACTIONS = 3, 4


def one_step_batch(
    policy: Policy, obs: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor, noise: dict
) -> RolloutBatch:
    """m one-step samples as a (T = m, N = 1) rollout, with the policy evaluated under grad."""
    m = obs.shape[0]
    dist_params = policy(obs)
    return RolloutBatch(
        obs=obs, actions=actions, advantages=advantages, valid=torch.ones(m, dtype=torch.bool),
        terminated=torch.ones(m, dtype=torch.bool), truncated=torch.zeros(m, dtype=torch.bool),
        episode_step=torch.zeros(m, dtype=torch.long), dist_params=dist_params,
        log_prob=policy.log_prob(dist_params, actions), noise=noise, policy=policy,
        theta_net=list(policy.net.parameters()), theta_direct=policy.direct_parameters(),
        step_weights=torch.full((m,), 1.0 / m), num_envs=1,
    )  # fmt: skip


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

    def batch(self, m: int, g: torch.Generator) -> RolloutBatch:
        states = torch.randint(0, NUM_STATES, (m,), generator=g)
        obs = torch.eye(NUM_STATES)[states]
        u = torch.rand(m, NUM_ACTIONS, generator=g).clamp_min(1e-12)
        v = torch.rand(m, NUM_ACTIONS, generator=g).clamp_min(1e-12)
        with torch.no_grad():
            actions = relaxed_categorical(self.policy(obs), u).argmax(-1)
        advantages = self.rewards[states, actions] - self.state_values[states]
        return one_step_batch(self.policy, obs, actions, advantages, {"u": u, "v": v})


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

    def batch(self, m: int, g: torch.Generator) -> RolloutBatch:
        states = torch.randint(0, NUM_STATES, (m,), generator=g)
        obs = torch.eye(NUM_STATES)[states]
        eps = torch.randn(m, 2, generator=g)
        with torch.no_grad():
            actions = gaussian_reparam(self.policy(obs), self.policy.log_std, eps)
        reward = -(actions - self.targets[states]).square().sum(-1)
        return one_step_batch(self.policy, obs, actions, reward - self.state_values[states], {"eps": eps})


def group_gradients(problem, estimator: Estimator, groups: int = 200, m: int = 200, seed: int = 1) -> torch.Tensor:
    """(groups, P): each row is the estimator's gradient averaged over m fresh samples."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([estimator.gradient(problem.batch(m, g)) for _ in range(groups)])


def z_scores(problem, estimator: Estimator) -> torch.Tensor:
    samples = group_gradients(problem, estimator)
    se = samples.std(0) / samples.shape[0] ** 0.5
    return (samples.mean(0) - problem.exact_gradient()).abs() / se


def make(cls, problem, **kwargs) -> Estimator:
    estimator = cls(name=cls.__name__, **kwargs)
    estimator.bind(problem.policy, NUM_STATES, problem.space)
    return estimator
