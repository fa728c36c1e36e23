"""The variance anatomy: its estimators of Sigma_s, Sigma_a, Sigma_tau are unbiased, checked against exact values.

Each test compares estimates with values computed by enumeration, within 4 standard errors, and a
deliberately wrong variant (no inner-variance correction, one continuation shared by all actions, a
plugged-in Monte Carlo V, continuations that replay the env's random stream) fails the same check.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rl_relax import anatomy
from rl_relax.anatomy import (
    AffinityError,
    AnatomyConfig,
    VarianceAnatomy,
    decompose,
    exact_value_action_variance,
    state_terms,
)
from rl_relax.env_state import restore_state as restore_exactly
from rl_relax.estimators.base import Estimator
from rl_relax.estimators.baseline import BaselineEstimator
from rl_relax.estimators.relax import RelaxEstimator
from rl_relax.networks import CategoricalPolicy, ValueNet
from tests.estimator_problems import make

Z = 4.0  # standard errors


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------ a synthetic problem, exact terms
class TableProblem:
    """g(s, a, xi) = f(s, a) + h(s, a) * xi with xi = +-1: 3 states, 3 actions, P = 2 parameters."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.p_state = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
        self.pi = torch.softmax(torch.randn(3, 3, generator=g, dtype=torch.float64), -1)
        self.f = torch.randn(3, 3, 2, generator=g, dtype=torch.float64) * 2.0
        self.h = 1.5 + 0.1 * torch.rand(3, 3, 2, generator=g, dtype=torch.float64)  # sizeable trajectory noise

    def exact(self) -> dict[str, float]:
        mean_a = (self.pi[..., None] * self.f).sum(1)  # (S, P) E[g | s]
        overall = (self.p_state[:, None] * mean_a).sum(0)
        state = (self.p_state[:, None] * (mean_a - overall).square()).sum(0)
        action = (self.p_state[:, None] * (self.pi[..., None] * (self.f - mean_a[:, None]).square()).sum(1)).sum(0)
        trajectory = (self.p_state[:, None] * (self.pi[..., None] * self.h.square()).sum(1)).sum(0)
        return {"state": state.mean().item(), "action": action.mean().item(), "trajectory": trajectory.mean().item()}

    def sample(self, m: int, k: int, n: int, seed: int, shared_continuation: bool = False) -> torch.Tensor:
        """(M, K, L, P) samples; ``shared_continuation`` reuses one set of continuations for all K actions."""
        g = torch.Generator().manual_seed(seed)
        states = torch.multinomial(self.p_state, m, replacement=True, generator=g)
        actions = torch.multinomial(self.pi[states], k, replacement=True, generator=g)  # (M, K)
        xi_shape = (m, 1, n) if shared_continuation else (m, k, n)
        xi = (torch.randint(0, 2, xi_shape, generator=g) * 2 - 1).to(torch.float64).expand(m, k, n)
        f, h = self.f[states[:, None], actions], self.h[states[:, None], actions]  # (M, K, P)
        return f[:, :, None] + h[:, :, None] * xi[..., None]


def _estimate(samples: torch.Tensor):
    return decompose([state_terms(samples[i]) for i in range(samples.shape[0])])


def test_state_action_trajectory_estimates_match_the_exact_terms():
    problem = TableProblem()
    exact = problem.exact()
    estimate = _estimate(problem.sample(3000, 3, 2, seed=1))
    for name, value in exact.items():
        term = getattr(estimate, name)
        assert abs(term.value - value) < Z * term.stderr, (name, term, value)
    assert estimate.total == pytest.approx(sum(exact.values()), rel=0.1)


def test_dropping_the_inner_variance_correction_fails(monkeypatch):
    problem = TableProblem()
    exact = problem.exact()
    monkeypatch.setattr(anatomy, "inner_variance_of_mean", lambda inner, count: torch.zeros_like(inner))
    estimate = _estimate(problem.sample(3000, 3, 2, seed=1))
    # Sigma_a absorbs Sigma_tau / L, Sigma_s absorbs (Sigma_a + Sigma_tau / L) / K.
    assert abs(estimate.action.value - exact["action"]) > Z * estimate.action.stderr
    assert abs(estimate.state.value - exact["state"]) > Z * estimate.state.stderr


def test_one_continuation_shared_by_all_actions_fails():
    problem = TableProblem()
    exact = problem.exact()
    estimate = _estimate(problem.sample(3000, 3, 2, seed=1, shared_continuation=True))
    assert abs(estimate.action.value - exact["action"]) > Z * estimate.action.stderr


# ------------------------------------------------------------------------ the exact-V estimate
def _score_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    p_state = torch.tensor([0.4, 0.35, 0.25], dtype=torch.float64)
    pi = torch.softmax(torch.randn(3, 3, generator=g, dtype=torch.float64) * 1.5, -1)
    q = torch.randn(3, 3, generator=g, dtype=torch.float64) * 3.0 + 5.0  # far from zero: a baseline matters
    noise = 1.0 + torch.rand(3, 3, generator=g, dtype=torch.float64)
    psi = torch.eye(3, dtype=torch.float64)[None] - pi[:, None, :]  # (S, A, P) grad of log softmax w.r.t. logits
    return p_state, pi, q, noise, psi


def test_exact_value_action_variance_is_unbiased_and_a_plugged_in_mean_is_not():
    p_state, pi, q, noise, psi = _score_problem()
    v_star = (pi * q).sum(1)
    centred = psi * (q - v_star[:, None])[..., None]  # (S, A, P)
    mean_a = (pi[..., None] * centred).sum(1)
    exact = (p_state[:, None] * (pi[..., None] * (centred - mean_a[:, None]).square()).sum(1)).sum(0).mean().item()

    g = torch.Generator().manual_seed(3)
    m, k, n = 4000, 3, 2
    states = torch.multinomial(p_state, m, replacement=True, generator=g)
    actions = torch.multinomial(pi[states], k, replacement=True, generator=g)
    returns = q[states[:, None], actions][..., None] + noise[states[:, None], actions][..., None] * torch.randn(
        m, k, n, generator=g, dtype=torch.float64
    )
    scores = psi[states[:, None], actions]  # (M, K, P)
    unbiased = torch.stack([exact_value_action_variance(scores[i], returns[i]) for i in range(m)]).mean(1)
    value, se = unbiased.mean().item(), unbiased.std().item() / m**0.5
    assert abs(value - exact) < Z * se, (value, exact, se)

    # Wrong: V* replaced by the mean of the same samples, then the usual nested estimate.
    plug_in = returns.mean((1, 2), keepdim=True)
    wrong = torch.stack([
        state_terms(scores[i][:, None, :] * (returns[i] - plug_in[i])[..., None])["action"] for i in range(m)
    ]).mean(1)  # fmt: skip
    assert abs(wrong.mean().item() - exact) > Z * wrong.std().item() / m**0.5


# ------------------------------------------------------------------------ end to end on an env
REWARDS = np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0], [-3.0, 2.0, 6.0]])
NOISE = np.array([[1.0, 2.0, 0.5], [3.0, 1.0, 2.0], [0.5, 0.5, 4.0]])


class OneStepEnv(gym.Env):
    """A uniformly drawn state (one-hot), one action, reward REWARDS[s, a] + NOISE[s, a] * N(0, 1), episode over."""

    observation_space = gym.spaces.Box(0.0, 1.0, (3,))
    action_space = gym.spaces.Discrete(3)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.s = int(self.np_random.integers(3))
        return np.eye(3, dtype=np.float32)[self.s], {}

    def step(self, action):
        reward = REWARDS[self.s, action] + NOISE[self.s, action] * self.np_random.normal()
        return np.eye(3, dtype=np.float32)[self.s], float(reward), True, False, {}

    def save_state(self):
        return self.s

    def restore_state(self, state):
        self.s = state


ENV_ID = "RlRelaxTest/OneStep-v0"
if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=OneStepEnv)
ENV_CFG = OmegaConf.create({"id": ENV_ID})
LEARNER_CFG = OmegaConf.create({"gamma": 0.9, "gae_lambda": 1.0, "num_steps": 3, "normalize_advantage": False})


def _nets(seed: int = 0):
    torch.manual_seed(seed)
    policy = CategoricalPolicy(3, 3, [8], "tanh", ortho_init=True)
    for p in policy.parameters():  # far from uniform, so that every term is sizeable
        p.data.normal_(0.0, 0.8)
    value = ValueNet(3, [8], "tanh", ortho_init=True)
    return policy, value


def _exact_terms(policy, value) -> dict[str, dict[str, float]]:
    """Every term by enumeration: states uniform, R = reward (one step, terminated)."""
    obs = torch.eye(3)
    probs = torch.softmax(policy(obs), -1).detach().double()
    with torch.no_grad():
        v_learned = value(obs).double()
    psi = torch.zeros(3, 3, sum(p.numel() for p in policy.parameters()), dtype=torch.float64)
    for s in range(3):
        for a in range(3):
            log_prob = torch.log_softmax(policy(obs[s : s + 1]), -1)[0, a]
            grads = torch.autograd.grad(log_prob, list(policy.parameters()))
            psi[s, a] = torch.cat([g.reshape(-1) for g in grads]).double()
    q = torch.tensor(REWARDS)
    baselines = {"no_baseline": torch.zeros(3), "learned_value": v_learned, "exact_value": (probs * q).sum(1)}
    out = {}
    for name, b in baselines.items():
        mu = psi * (q - b[:, None])[..., None]  # E[g | s, a]
        mean_s = (probs[..., None] * mu).sum(1)
        action = (probs[..., None] * (mu - mean_s[:, None]).square()).sum(1).mean(0)
        state = (mean_s - mean_s.mean(0)).square().mean(0)
        trajectory = (probs[..., None] * psi.square() * torch.tensor(NOISE**2)[..., None]).sum(1).mean(0)
        out[name] = {
            "state": state.mean().item(),
            "action": action.mean().item(),
            "trajectory": trajectory.mean().item(),
        }
    return out


def _probe(policy, value, estimator, seed=0, states=400):
    config = AnatomyConfig(num_states=states, num_actions=4, num_continuations=3, burn_in_steps=1, seed=seed)
    probe = VarianceAnatomy(ENV_CFG, LEARNER_CFG, policy, value, estimator, config)
    try:
        return probe.measure()
    finally:
        probe.close()


def _check(
    result, exact, variants=("no_baseline", "learned_value", "exact_value"), terms=("state", "action", "trajectory")
):
    for variant in variants:
        for name in terms:
            term = getattr(result.decompositions[variant], name)
            assert abs(term.value - exact[variant][name]) < Z * term.stderr, (variant, name, term, exact[variant][name])


def test_the_probe_on_an_env_matches_the_exact_decomposition():
    policy, value = _nets()
    estimator = make(BaselineEstimator, type("P", (), {"policy": policy, "space": gym.spaces.Discrete(3)})())
    result = _probe(policy, value, estimator)
    exact = _exact_terms(policy, value)
    _check(result, exact)
    # The baseline estimator's full control variate is V: the same numbers as learned_value.
    assert result.decompositions["estimator"].action.value == pytest.approx(
        result.decompositions["learned_value"].action.value, rel=1e-9
    )
    assert result.env_steps == 400 * 1 + 400 * 4 * 3
    removed = result.removed()
    assert removed["exact_value"] == pytest.approx(
        1 - exact["exact_value"]["action"] / exact["no_baseline"]["action"], abs=0.15
    )


def test_continuations_that_replay_the_envs_random_stream_fail(monkeypatch):
    policy, value = _nets()
    estimator = make(BaselineEstimator, type("P", (), {"policy": policy, "space": gym.spaces.Discrete(3)})())
    monkeypatch.setattr(anatomy, "restore_state", lambda env, snapshot, rng=None: restore_exactly(env, snapshot))
    result = _probe(policy, value, estimator)
    exact = _exact_terms(policy, value)
    term = result.decompositions["learned_value"].trajectory
    assert abs(term.value - exact["learned_value"]["trajectory"]) > Z * term.stderr


def test_relax_shares_the_state_and_trajectory_terms_and_changes_only_the_action_term():
    policy, value = _nets()
    problem = type("P", (), {"policy": policy, "space": gym.spaces.Discrete(3)})()
    estimator = make(RelaxEstimator, problem, hidden_sizes=[8], activation="tanh", cv_lr=1e-3)
    torch.nn.init.orthogonal_(estimator.cv.net.layers[-1].weight, 3.0)  # a control variate far from zero
    result = _probe(policy, value, estimator)
    exact = _exact_terms(policy, value)
    term = result.decompositions["estimator"]
    for name in ("state", "trajectory"):
        assert abs(getattr(term, name).value - exact["learned_value"][name]) < Z * getattr(term, name).stderr
    assert term.action.value != pytest.approx(result.decompositions["learned_value"].action.value, rel=1e-3)


class SquaredAdvantage(Estimator):
    def surrogate(self, batch):
        return batch.mean(batch.log_prob * batch.advantages.square())


def test_an_estimator_not_affine_in_the_advantage_is_refused():
    policy, value = _nets()
    with pytest.raises(AffinityError, match="not grad log pi"):
        _probe(policy, value, SquaredAdvantage(), states=2)


def test_bad_sample_sizes_are_refused():
    policy, value = _nets()
    with pytest.raises(anatomy.ConfigError, match="num_actions=2 must be an integer >= 3"):
        VarianceAnatomy(ENV_CFG, LEARNER_CFG, policy, value, BaselineEstimator(), AnatomyConfig(num_actions=2))


# ------------------------------------------------------------------------ returns as in training
class ChainEnv(gym.Env):
    """x -> x + 1 whatever the action, reward x + 1, terminated when x reaches 5."""

    observation_space = gym.spaces.Box(0.0, 10.0, (1,))
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0
        return np.array([self.x], dtype=np.float32), {}

    def step(self, action):
        self.x += 1
        return np.array([self.x], dtype=np.float32), float(self.x), self.x >= 5, False, {}

    def save_state(self):
        return self.x

    def restore_state(self, state):
        self.x = state


CHAIN_ID = "RlRelaxTest/Chain-v0"
if CHAIN_ID not in gym.registry:
    gym.register(CHAIN_ID, entry_point=ChainEnv, max_episode_steps=4)


@pytest.mark.parametrize(
    ("x", "episode_step", "horizon", "expected_end"),
    [
        (1, 0, 2, "bootstrap"),  # the rollout boundary after 2 steps: bootstrap with V(x = 3)
        (2, 0, 4, "terminated"),  # x reaches 5 after 3 steps: no bootstrap, the later slot is cut
        (1, 2, 3, "truncated"),  # the time limit (4) after 2 steps: bootstrap with V of the final observation
    ],
)
def test_continuation_advantages_are_gae_with_the_bootstrap_at_the_rollout_boundary(x, episode_step, horizon,
                                                                                   expected_end):  # fmt: skip
    gamma, lam = 0.9, 0.8
    policy = CategoricalPolicy(1, 2, [4], "tanh", ortho_init=True)
    value = ValueNet(1, [4], "tanh", ortho_init=True)
    learner = OmegaConf.create({"gamma": gamma, "gae_lambda": lam, "num_steps": horizon})
    probe = VarianceAnatomy(OmegaConf.create({"id": CHAIN_ID}), learner, policy, value, BaselineEstimator(),
                            AnatomyConfig(num_states=2, num_actions=3, num_continuations=2))  # fmt: skip
    snapshot = anatomy.EnvSnapshot(x, {})
    slot = anatomy._Slot(snapshot, np.array([x], dtype=np.float32), episode_step, horizon)

    def identity(o):
        return np.asarray(o, np.float32).reshape(len(o), -1)

    advantages, v0, steps = probe._continuations(slot, np.zeros(3, dtype=np.int64), np.random.default_rng(0),
                                                 identity, 1.0)  # fmt: skip
    probe.close()

    def v(state):
        with torch.no_grad():
            return value(torch.tensor([[float(state)]])).item()

    n = {"bootstrap": horizon, "terminated": 5 - x, "truncated": 4 - episode_step}[expected_end]
    deltas = []
    for j in range(n):
        state, reward = x + j, float(x + j + 1)
        last = j == n - 1
        next_value = 0.0 if (last and expected_end == "terminated") else v(state + 1)
        deltas.append(reward + gamma * next_value - v(state))
    expected = sum((gamma * lam) ** j * d for j, d in enumerate(deltas))
    assert v0 == pytest.approx(v(x), abs=1e-6)
    np.testing.assert_allclose(advantages, expected, rtol=1e-5)
    assert steps == 3 * 2 * n


@pytest.mark.parametrize(
    ("x", "episode_step", "expected_end"),
    [
        (2, 0, "terminated"),  # x reaches 5 after 3 steps
        (1, 2, "truncated"),  # the time limit (4) after 2 steps: the end of the episode, no bootstrap either
    ],
)
def test_with_episode_batches_continuations_run_to_the_episode_end_with_monte_carlo_returns(x, episode_step,
                                                                                            expected_end):  # fmt: skip
    gamma = 0.9
    policy = CategoricalPolicy(1, 2, [4], "tanh", ortho_init=True)
    value = ValueNet(1, [4], "tanh", ortho_init=True)
    learner = OmegaConf.create({"gamma": gamma, "gae_lambda": 0.8, "num_steps": 1, "batch": "episodes"})
    probe = VarianceAnatomy(OmegaConf.create({"id": CHAIN_ID}), learner, policy, value, BaselineEstimator(),
                            AnatomyConfig(num_states=2, num_actions=3, num_continuations=2))  # fmt: skip

    def identity(o):
        return np.asarray(o, np.float32).reshape(len(o), -1)

    # Sampled states get the steps left in their episode as the horizon, whatever learner.num_steps.
    slots, _ = probe._sample_states(np.random.default_rng(0), identity)
    assert [s.horizon for s in slots] == [4 - s.episode_step for s in slots]
    slot = anatomy._Slot(anatomy.EnvSnapshot(x, {}), np.array([x], dtype=np.float32), episode_step, 4 - episode_step)
    advantages, _, steps = probe._continuations(slot, np.zeros(3, dtype=np.int64), np.random.default_rng(0),
                                                identity, 1.0)  # fmt: skip
    probe.close()
    with torch.no_grad():
        v_x = value(torch.tensor([[float(x)]])).item()
    n = {"terminated": 5 - x, "truncated": 4 - episode_step}[expected_end]
    expected = sum(gamma**j * float(x + j + 1) for j in range(n)) - v_x  # the discounted rewards to the end, - V(s)
    np.testing.assert_allclose(advantages, expected, rtol=1e-5)
    assert steps == 3 * 2 * n


def test_per_parameter_estimates_are_kept_and_summarise_to_the_reported_mean():
    problem = TableProblem()
    estimate = _estimate(problem.sample(500, 3, 2, seed=2))
    for name in ("state", "action", "trajectory"):
        term = getattr(estimate, name)
        assert term.per_parameter.shape == (2,)
        assert term.value == pytest.approx(term.per_parameter.mean().item(), rel=1e-12)
