"""The A2C update computes the gradient of the documented loss, whatever shortcuts it takes."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rl_relax.estimators.baseline import BaselineEstimator
from rl_relax.learner import A2CLearner
from rl_relax.networks import CategoricalPolicy, ValueNet
from rl_relax.returns import gae
from rl_relax.rollout import RolloutBuffer

T, N, OBS_DIM, NUM_ACTIONS = 5, 4, 3, 3


def learner_cfg(**overrides):
    cfg = {
        "gamma": 0.99, "gae_lambda": 0.95, "ent_coef": 0.0, "vf_coef": 0.5, "normalize_advantage": False,
        "lr_schedule": "constant", "optimizer": "rmsprop", "lr": 7e-4, "rmsprop_alpha": 0.99, "eps": 1e-5,
        "max_grad_norm": None, "adam_betas": [0.9, 0.999],
    }  # fmt: skip
    cfg.update(overrides)
    return OmegaConf.create(cfg)


def filled_buffer(policy, seed=0) -> RolloutBuffer:
    """A rollout with terminations, truncations and NEXT_STEP reset slots."""
    rng = np.random.default_rng(seed)
    buf = RolloutBuffer(T, N, OBS_DIM, policy, {}, torch.device("cpu"))
    buf.obs_np[:] = rng.normal(size=buf.obs_np.shape)
    buf.actions_np[:] = rng.integers(NUM_ACTIONS, size=(T, N))
    buf.rewards_np[:] = rng.normal(size=(T, N))
    buf.terminated_np[1, 0] = buf.truncated_np[3, 2] = True
    buf.valid_np[2, 0] = buf.valid_np[4, 2] = False
    return buf


def reference_loss(learner, buf, ent_coef, vf_coef, normalize_advantage):
    """loss = -mean_t log pi(a_t|s_t) A_t - ent_coef mean_t H_t + vf_coef mean_t (R_t - V(s_t))^2, by autograd."""
    obs = torch.from_numpy(buf.obs_np)
    values = learner.value(obs)
    old = values.detach().numpy()
    adv, ret = gae(buf.rewards_np, old[:-1], old[-1], buf.terminated_np, buf.truncated_np, buf.valid_np,
                   gamma=0.99, gae_lambda=0.95)  # fmt: skip
    valid = torch.from_numpy(buf.valid_np).float()
    w = valid / valid.sum()
    adv = torch.from_numpy(adv)
    if normalize_advantage:
        mean = (adv * w).sum()
        adv = (adv - mean) / (((adv - mean).square() * w).sum().sqrt() + 1e-8) * valid
    logits = learner.policy(obs[:-1])
    log_p = logits.log_softmax(-1)
    log_prob = log_p.gather(-1, torch.from_numpy(buf.actions_np).unsqueeze(-1)).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    value_loss = ((torch.from_numpy(ret) - values[:-1]).square() * w).sum()
    return -(log_prob * adv * w).sum() - ent_coef * (entropy * w).sum() + vf_coef * value_loss, value_loss


def make_learner(**overrides):
    torch.manual_seed(0)
    policy = CategoricalPolicy(OBS_DIM, NUM_ACTIONS, [8, 8], "tanh", True)
    value = ValueNet(OBS_DIM, [8, 8], "tanh", True)
    return A2CLearner(policy, value, BaselineEstimator(), learner_cfg(**overrides))


@pytest.mark.parametrize(
    ("ent_coef", "vf_coef", "normalize_advantage"), [(0.0, 0.5, False), (0.0, 0.3, True), (0.01, 0.5, False)]
)
def test_update_gradient_is_the_gradient_of_the_a2c_loss(ent_coef, vf_coef, normalize_advantage):
    learner = make_learner(ent_coef=ent_coef, vf_coef=vf_coef, normalize_advantage=normalize_advantage)
    buf = filled_buffer(learner.policy)
    loss, value_loss = reference_loss(learner, buf, ent_coef, vf_coef, normalize_advantage)
    params = [*learner.policy.parameters(), *learner.value.parameters()]
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    stats = learner.update(buf, global_step=0)  # no clipping: the buffer keeps the raw gradient
    torch.testing.assert_close(learner.flat.grad, expected, rtol=1e-5, atol=1e-7)
    assert stats.value_loss == pytest.approx(value_loss.item(), rel=1e-5)
    # The value network's gradient comes from the host-side d(loss)/dV: bit-identical to autograd's.
    value_part = learner.flat.grad[learner.num_policy_params :]
    assert torch.equal(value_part, expected[learner.num_policy_params :])


def test_a_wrong_value_gradient_fails_the_comparison():
    """Power check: the comparison above notices a value gradient off by a factor as small as 1.001."""
    learner = make_learner()
    buf = filled_buffer(learner.policy)
    loss, _ = reference_loss(learner, buf, 0.0, 0.5 * 1.001, False)
    params = [*learner.policy.parameters(), *learner.value.parameters()]
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
    learner.update(buf, global_step=0)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(learner.flat.grad, expected, rtol=1e-5, atol=1e-7)


def test_explained_variance_of_the_last_logged_update_uses_valid_transitions_only():
    learner = make_learner()
    buf = filled_buffer(learner.policy)
    with torch.no_grad():
        values = learner.value(torch.from_numpy(buf.obs_np)).numpy()
    _, returns = gae(buf.rewards_np, values[:-1], values[-1], buf.terminated_np, buf.truncated_np, buf.valid_np,
                     gamma=0.99, gae_lambda=0.95)  # fmt: skip
    r, v = returns[buf.valid_np].astype(np.float64), values[:-1][buf.valid_np].astype(np.float64)
    assert r.size == T * N - 2
    learner.update(buf, global_step=0, diagnostics=True)
    assert learner.explained_variance() == pytest.approx(1 - np.var(r - v) / np.var(r), rel=1e-5)
