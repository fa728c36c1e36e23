"""The A2C update computed the slow, obvious way, to check the learner's real update against.

:func:`reference_update` evaluates the documented loss

    loss = -S - ent_coef * H + vf_coef * L_V,    means over valid slots divided by T N,

by plain autograd, and trains phi (if the estimator has one) with ``cv_steps`` Adam steps on the
variance objective computed by plain double backprop (:func:`rl_relax.surrogates.variance_loss`),
after the estimator's ``cv_warmup_steps`` (taken before the gradient, on the same rollout).
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf

from rl_relax import surrogates
from rl_relax.estimators.base import Estimator
from rl_relax.estimators.control_variate import ControlVariateEstimator
from rl_relax.learner import A2CLearner
from rl_relax.networks import CategoricalPolicy, GaussianPolicy, ValueNet
from rl_relax.rollout import RolloutBuffer
from rl_relax.samplers import gaussian_reparam, relaxed_categorical

T, N, OBS_DIM, NUM_ACTIONS, ACT_DIM = 5, 4, 3, 3, 2


def learner_cfg(**overrides):
    cfg = {
        "gamma": 0.99, "gae_lambda": 0.95, "ent_coef": 0.0, "vf_coef": 0.5, "normalize_advantage": False,
        "lr_schedule": "constant", "optimizer": "rmsprop", "lr": 7e-4, "rmsprop_alpha": 0.99, "eps": 1e-5,
        "max_grad_norm": None, "adam_betas": [0.9, 0.999],
    }  # fmt: skip
    cfg.update(overrides)
    return OmegaConf.create(cfg)


def make_learner(
    estimator_factory: Callable[[], Estimator], discrete: bool = True, seed: int = 0, **cfg_overrides
) -> A2CLearner:
    """A learner with small, far-from-trivial networks; the same seed gives identical copies."""
    torch.manual_seed(seed)
    if discrete:
        policy, space = CategoricalPolicy(OBS_DIM, NUM_ACTIONS, [8, 8], "tanh", True), gym.spaces.Discrete(NUM_ACTIONS)
    else:
        space = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,))
        policy = GaussianPolicy(OBS_DIM, space, [8, 8], "tanh", True, log_std_init=-0.2)
    for p in policy.net.parameters():
        p.data.normal_(0.0, 0.5)
    value = ValueNet(OBS_DIM, [8, 8], "tanh", True)
    estimator = estimator_factory()
    estimator.bind(policy, OBS_DIM, space)
    if isinstance(estimator, ControlVariateEstimator):  # an untrained but far-from-zero control variate
        torch.nn.init.orthogonal_(estimator.cv.net.layers[-1].weight, 3.0)
        if estimator.state_baseline_net is not None:  # and a far-from-zero state part (b_phi)
            torch.nn.init.orthogonal_(estimator.state_baseline_net.net.layers[-1].weight, 3.0)
            torch.nn.init.constant_(estimator.state_baseline_net.net.layers[-1].bias, 0.5)
    return A2CLearner(policy, value, estimator, learner_cfg(**cfg_overrides))


def filled_buffer(learner: A2CLearner, seed: int = 0) -> RolloutBuffer:
    """A rollout with terminations, truncations, NEXT_STEP reset slots, and the estimator's noise."""
    rng = np.random.default_rng(seed)
    policy, estimator = learner.policy, learner.estimator
    shapes = {k: policy.noise_shapes[k] for k in estimator.noise_keys}
    shapes.update(estimator.extra_noise_shapes())
    buf = RolloutBuffer(T, N, OBS_DIM, policy, shapes, torch.device("cpu"))
    buf.obs_np[:] = rng.normal(size=buf.obs_np.shape)
    buf.rewards_np[:] = rng.normal(size=(T, N))
    buf.terminated_np[1, 0] = buf.truncated_np[3, 2] = True
    buf.valid_np[2, 0] = buf.valid_np[4, 2] = False
    buf.episode_step_np[:] = np.where(buf.valid_np, np.arange(T)[:, None] + 3 * np.arange(N), -1)
    for key, shape in shapes.items():  # uniform noise for the categorical samplers, normal for the Gaussian
        draw = rng.normal(size=(T, N, *shape)) if key == "eps" else rng.random((T, N, *shape)).clip(1e-6)
        buf.noise_np[key][:] = draw
    with torch.no_grad():
        params = policy(torch.from_numpy(buf.obs_np[:T]))
        if isinstance(policy, CategoricalPolicy):
            u = buf.noise_np.get("u", rng.random((T, N, NUM_ACTIONS)).clip(1e-6).astype(np.float32))
            buf.actions_np[:] = relaxed_categorical(params, torch.from_numpy(u)).argmax(-1).numpy()
        else:
            eps = buf.noise_np.get("eps", rng.normal(size=(T, N, ACT_DIM)).astype(np.float32))
            buf.actions_np[:] = gaussian_reparam(params, policy.log_std, torch.from_numpy(eps)).numpy()
    return buf


def reference_phi_step(learner: A2CLearner, buf: RolloutBuffer) -> None:
    """One phi step on the variance objective of ``buf``, by plain double backprop on a fresh batch."""
    estimator = learner.estimator
    fresh = learner.make_batch(buf, learner.targets(buf))
    wrt = fresh.theta if estimator.cv_objective == "variance" else [fresh.dist_params]
    objective, _ = surrogates.variance_loss(estimator.surrogate(fresh), wrt)
    grads = torch.autograd.grad(objective, estimator.phi_parameters(), allow_unused=True)
    estimator.step_control_variate(list(grads), objective.item())


def reference_update(learner: A2CLearner, buf: RolloutBuffer, cv_steps: int = 1):
    """(d loss / d (theta, w) flat, phi after ``cv_steps`` steps, the last phi gradient), without any shortcut.

    A fresh estimator with ``cv_warmup_steps`` first takes those steps on ``buf`` (the first update's).
    """
    estimator, policy = learner.estimator, learner.policy
    if isinstance(estimator, ControlVariateEstimator) and not estimator.cv_optimizer.state:
        for _ in range(estimator.cv_warmup_steps):
            reference_phi_step(learner, buf)
    targets = learner.targets(buf)
    batch = learner.make_batch(buf, targets)
    valid = torch.from_numpy(buf.valid_np).float()  # (T, N)
    mean = lambda x: (x * valid).sum() / valid.numel()  # noqa: E731
    entropy = mean(policy.entropy(batch.dist_params).view(T, N))
    values = targets.values.view(T + 1, N)
    value_loss = mean((torch.from_numpy(targets.returns_np) - values[:-1]).square())
    loss = -estimator.surrogate(batch) - learner.ent_coef * entropy + learner.vf_coef * value_loss
    params = [*batch.theta, *learner.value.parameters()]
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
    phi_grad = None
    if isinstance(estimator, ControlVariateEstimator):
        for _ in range(cv_steps):
            reference_phi_step(learner, buf)
        phi_grad = estimator.phi_gradient.clone()
    phi = [p.detach().clone() for p in estimator.parameters()]
    return expected, phi, phi_grad


def check_update_matches_reference(
    estimator_factory: Callable[[], Estimator], discrete: bool, cv_steps: int = 1, **cfg_overrides
) -> None:
    """The learner's real update and :func:`reference_update` agree on the gradient of the loss, on the
    last phi step's gradient (Adam's first steps hardly depend on the gradient's size, so phi alone would
    be a weak check) and on phi after all steps."""
    reference = make_learner(estimator_factory, discrete, **cfg_overrides)
    expected_grad, expected_phi, expected_phi_grad = reference_update(reference, filled_buffer(reference), cv_steps)
    learner = make_learner(estimator_factory, discrete, **cfg_overrides)
    learner.update(filled_buffer(learner), global_step=0)
    torch.testing.assert_close(learner.flat.grad, expected_grad, rtol=1e-4, atol=1e-6)
    if expected_phi_grad is not None:
        torch.testing.assert_close(learner.estimator.phi_gradient, expected_phi_grad, rtol=1e-4, atol=1e-6)
    for mine, ref in zip(learner.estimator.parameters(), expected_phi, strict=True):
        torch.testing.assert_close(mine.detach(), ref, rtol=1e-4, atol=1e-6)
