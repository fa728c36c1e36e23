"""The batch's constant normaliser gives every estimator the same expectation, whatever V and c_phi are.

Under NEXT_STEP autoreset the number of valid slots in a rollout depends on where episodes end, so on
the actions. On an environment whose actions decide where episodes end, with a small batch (2 envs x 3
steps) and many rollouts, the means of

    g_relax - g_baseline    (the control variate's terms)    and    (1/(T N)) sum_t valid_t grad log pi(a_t|s_t) V(s_t)

must both be zero within a few standard errors. Dividing by the number of valid transitions instead
(the old normalisation) fails the same test: those terms then have a nonzero mean of order 1/batch.
The same holds for RELAX with ``state_baseline=variance`` (b_phi(s) replaces V(s) in the score weight,
c_phi reads V, the time and the distribution parameters too), and for its state part b_phi alone.
"""

from __future__ import annotations

import dataclasses
import functools
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl_relax.estimators.base import RolloutBatch
from rl_relax.estimators.baseline import BaselineEstimator
from rl_relax.estimators.relax import RelaxEstimator
from rl_relax.rollout import RolloutBuffer, RolloutCollector
from tests.update_reference import make_learner

NUM_ENVS, NUM_STEPS, GROUPS, SAMPLES = 2, 2, 100, 60


class EndsOnAction(gym.Env):
    """Action 0 ends the episode (reward 0); action 1 goes on (reward 1 + obs[0]). Observations ~ N(0, I)."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(3)

    def _obs(self):
        return self.np_random.normal(size=3).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        obs = self._obs()
        ends = int(action) == 0
        return obs, 0.0 if ends else 1.0 + float(obs[0]), ends, False, {}


VARIANCE_BASELINE = {"state_baseline": "variance", "cv_inputs": ["state", "value", "time", "dist_params"],
                     "cv_time_limit": 3}  # fmt: skip
VARIANTS = ("relax", "relax_variance_baseline", "variance_baseline_alone")


@functools.cache
def mean_differences(old_normalisation: bool, variant: str = "relax") -> tuple[np.ndarray, np.ndarray]:
    """z-scores of E[g_relax - g_baseline] and E[mean_t grad log pi V] over many small rollouts.

    ``variant``: RELAX as configured by default, with ``state_baseline=variance`` (b_phi and c_phi far from
    zero), or with c_phi set to zero so that only the variance-trained state baseline differs from V.
    """
    options = {} if variant == "relax" else VARIANCE_BASELINE
    learner = make_learner(lambda: RelaxEstimator(name="relax", **options), discrete=True)
    if variant == "variance_baseline_alone":
        torch.nn.init.zeros_(learner.estimator.cv.net.layers[-1].weight)
        torch.nn.init.zeros_(learner.estimator.cv.net.layers[-1].bias)
    for p in learner.value.parameters():  # a V far from zero and far from the true values
        p.data.normal_(0.0, 1.0)
    relax, baseline = learner.estimator, BaselineEstimator()
    envs = gym.wrappers.vector.RecordEpisodeStatistics(
        gym.vector.SyncVectorEnv(
            [EndsOnAction] * (GROUPS * NUM_ENVS), autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP
        )
    )
    buf = RolloutBuffer(NUM_STEPS, GROUPS * NUM_ENVS, 3, learner.policy, {"u": (3,), "v": (3,)}, torch.device("cpu"))
    collector = RolloutCollector(
        SimpleNamespace(envs=envs, episode_stats=envs),
        learner.policy,
        buf,
        np.random.default_rng(0),
        ("u",),
        relax.extra_noise,
    )
    collector.start(envs.reset(seed=0)[0])
    relax_minus_baseline, value_term = [], []
    # b_phi - V alone is a smaller term than the control variate's: twice the rollouts give its power check power.
    for _ in range(SAMPLES * (2 if variant == "variance_baseline_alone" else 1)):
        collector.collect()
        targets = learner.targets(buf)
        batch = learner.make_batch(buf, targets)  # weights valid / (T * GROUPS * N): each group's, averaged
        if old_normalisation:  # each group divides by its own number of valid transitions
            valid = batch.valid.float().view(NUM_STEPS, GROUPS, NUM_ENVS)
            weights = valid / valid.sum(dim=(0, 2), keepdim=True) / GROUPS
            batch = dataclasses.replace(batch, step_weights=weights.reshape(-1))
        difference = relax.surrogate(batch) - baseline.surrogate(batch)
        grads = torch.autograd.grad(difference, batch.theta, retain_graph=True)
        relax_minus_baseline.append(torch.cat([g.reshape(-1) for g in grads]))
        values = torch.from_numpy(targets.values_np[:-1].reshape(-1).copy())
        grads = torch.autograd.grad(batch.mean(batch.log_prob * values), batch.theta)
        value_term.append(torch.cat([g.reshape(-1) for g in grads]))
    envs.close()

    def z(samples):
        samples = torch.stack(samples).double()
        return (samples.mean(0).abs() / (samples.std(0) / len(samples) ** 0.5)).numpy()

    return z(relax_minus_baseline), z(value_term)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_estimator_has_the_same_expectation_with_the_constant_normaliser(variant):
    z_cv, z_value = mean_differences(old_normalisation=False, variant=variant)
    assert z_cv.max() < 4.5 and z_value.max() < 4.5, (z_cv.max(), z_value.max())


@pytest.mark.parametrize(
    ("variant", "which"),
    [("relax", "control variate"), ("relax", "state value"), ("variance_baseline_alone", "control variate")],
)
def test_dividing_by_the_number_of_valid_transitions_fails_the_same_test(variant, which):
    z_cv, z_value = mean_differences(old_normalisation=True, variant=variant)
    assert (z_cv if which == "control variate" else z_value).max() > 4.5, (z_cv.max(), z_value.max())


# ----------------------------------------------------------------------------- a time-aware V (value.*)
TIME_LIMIT = 3


@functools.cache
def time_aware_mean_differences(hindsight: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`mean_differences` for RELAX with a time-input, horizon-aware V far from zero, on EndsOnAction
    under a 3-step time limit (positions 0-2, truncations at the limit, V = 0 there); also the number of
    truncations seen.

    ``hindsight`` is the deliberately wrong variant: V is told the time left as it turned out (one step when
    this step's action ends the episode), which depends on a_t, so grad log pi V no longer has mean zero.
    """
    from rl_relax.learner import A2CLearner
    from rl_relax.networks import ValueNet
    from tests.update_reference import learner_cfg

    base = make_learner(lambda: RelaxEstimator(name="relax"), discrete=True)
    torch.manual_seed(2)
    value = ValueNet(3, [8, 8], "tanh", True, time_input=True, horizon_aware=True, time_limit=TIME_LIMIT)
    for p in value.parameters():
        p.data.normal_(0.0, 1.0)
    learner = A2CLearner(base.policy, value, base.estimator, learner_cfg())
    relax, baseline = learner.estimator, BaselineEstimator()
    envs = gym.wrappers.vector.RecordEpisodeStatistics(
        gym.vector.SyncVectorEnv(
            [lambda: gym.wrappers.TimeLimit(EndsOnAction(), TIME_LIMIT)] * (GROUPS * NUM_ENVS),
            autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
        )
    )
    buf = RolloutBuffer(NUM_STEPS, GROUPS * NUM_ENVS, 3, learner.policy, {"u": (3,), "v": (3,)}, torch.device("cpu"))
    collector = RolloutCollector(SimpleNamespace(envs=envs, episode_stats=envs), learner.policy, buf,
                                 np.random.default_rng(0), ("u",), relax.extra_noise)  # fmt: skip
    collector.start(envs.reset(seed=0)[0])
    relax_minus_baseline, value_term, truncations = [], [], 0
    for _ in range(SAMPLES):
        collector.collect()
        truncations += int(buf.truncated_np.sum())
        targets = learner.targets(buf)
        batch = learner.make_batch(buf, targets)
        grads = torch.autograd.grad(relax.surrogate(batch) - baseline.surrogate(batch), batch.theta, retain_graph=True)
        relax_minus_baseline.append(torch.cat([g.reshape(-1) for g in grads]))
        values = torch.from_numpy(targets.values_np[:-1].reshape(-1).copy())  # V(s_t, t) as the learner used it
        if hindsight:
            positions = np.where(buf.terminated_np, TIME_LIMIT - 1, buf.observation_positions()[:-1])
            with torch.no_grad():
                values = value(batch.obs, torch.from_numpy(positions.reshape(-1)))
        grads = torch.autograd.grad(batch.mean(batch.log_prob * values), batch.theta)
        value_term.append(torch.cat([g.reshape(-1) for g in grads]))
    envs.close()

    def z(samples):
        samples = torch.stack(samples).double()
        return (samples.mean(0).abs() / (samples.std(0) / len(samples) ** 0.5)).numpy()

    return z(relax_minus_baseline), z(value_term), truncations


def test_a_time_aware_value_keeps_every_estimator_unbiased(one_torch_thread):
    z_cv, z_value, truncations = time_aware_mean_differences(hindsight=False)
    assert truncations > 100  # the time limit was reached (V = 0 bootstraps) many times
    assert z_cv.max() < 4.5 and z_value.max() < 4.5, (z_cv.max(), z_value.max())


def test_a_value_told_the_time_left_in_hindsight_fails_the_same_test(one_torch_thread):
    """Power check: a V whose time input depends on whether this step's action ends the episode is caught."""
    _, z_value, _ = time_aware_mean_differences(hindsight=True)
    assert z_value.max() > 4.5, z_value.max()


@pytest.mark.parametrize("seeds", [None, 3])
def test_mean_with_a_constant_scale_is_the_mean_of_the_product_and_never_differentiates_the_scale(seeds):
    shape = (8,) if seeds is None else (seeds, 8)
    x = torch.randn(shape, requires_grad=True)
    scale = torch.randn(shape, requires_grad=True)
    weights = torch.rand(shape)
    batch = SimpleNamespace(step_weights=weights)
    scaled = RolloutBatch.mean(batch, x, scale=scale)
    expected = (x * scale.detach() * weights).sum(-1)
    torch.testing.assert_close(scaled, expected)
    torch.testing.assert_close(RolloutBatch.mean(batch, x * scale.detach()), expected)
    scaled.sum().backward()
    torch.testing.assert_close(x.grad, scale.detach() * weights)
    assert scale.grad is None  # a constant: the estimator's weights never train what produced them
