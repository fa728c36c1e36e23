"""The value function's levers (``value.*``): a V that knows the time left before the time limit (as an
input, or Tucker et al.'s horizon-aware form), and V fitted by its own optimizer with several steps.

Checked: the horizon-aware formula against hand-computed numbers; the positions V is given (from the
rollout buffer: valid steps, reset slots, the bootstrap observation) against an env whose observation
is its position; V's own steps are regression steps on targets fixed before them (a reference with
moving targets fails); the defaults leave the joint A2C update as it was; config, resume and
architecture checks. Unbiasedness with a time-aware V: ``tests/test_estimator_base.py``; seed groups:
``tests/test_seed_group.py``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rl_relax import checkpoint as ckpt
from rl_relax.errors import CheckpointError, ConfigError
from rl_relax.estimators.baseline import BaselineEstimator
from rl_relax.learner import A2CLearner
from rl_relax.networks import MLP, ValueNet, env_time_limit
from rl_relax.rollout import RolloutBuffer
from rl_relax.train import train
from rl_relax.trainer import Trainer
from tests.conftest import compose_config
from tests.test_rollout import counter_rollouts
from tests.update_reference import OBS_DIM, T, filled_buffer, learner_cfg, make_learner, reference_update


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def linear_value(**options) -> ValueNet:
    """A V without hidden layers, weights set by hand: head 0 = 1 + 2 s, head 1 = 10 - s (+ 3 * time input)."""
    value = ValueNet(1, [], "tanh", False, **options)
    layer = value.net.layers[0]
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        layer.weight[0, 0], layer.bias[0] = 2.0, 1.0
        if layer.weight.shape[0] == 2:
            layer.weight[1, 0], layer.bias[1] = -1.0, 10.0
        if options.get("time_input"):
            layer.weight[-1, 1] = 3.0
    return value


def test_horizon_aware_value_is_tuckers_formula_with_hand_computed_numbers():
    """T_limit = 4, gamma = 0.5: H = (1 - 0.5^4) / 0.5 = 1.875 and rbar = head_1 / H.
    V(s, t) = V_1(s) + (1 - 0.5^(4 - t)) / 0.5 * rbar(s)."""
    value = linear_value(horizon_aware=True, time_limit=4, gamma=0.5)
    s = torch.tensor([[0.0], [1.0], [2.0], [1.0], [1.0]])
    t = torch.tensor([0, 1, 2, 3, 4])
    v1 = torch.tensor([1.0, 3.0, 5.0, 3.0, 3.0])
    rbar = torch.tensor([10.0, 9.0, 8.0, 9.0, 9.0]) / 1.875
    factor = torch.tensor([1.875, 1.75, 1.5, 1.0, 0.0])  # (1 - 0.5^k) / 0.5 for k = 4, 3, 2, 1, 0
    expected = v1 + factor * rbar
    expected[-1] = 0.0  # no step left: V = 0 exactly
    torch.testing.assert_close(value(s, t), expected)
    torch.testing.assert_close(value(s[:1], t[:1]), torch.tensor([11.0]))  # t = 0: V_1 + H rbar = 1 + 10
    heads = value.heads(s, t)
    torch.testing.assert_close(heads[0], v1)
    torch.testing.assert_close(heads[1], rbar)


def test_horizon_aware_value_without_discount_counts_the_steps_left():
    value = linear_value(horizon_aware=True, time_limit=5, gamma=1.0)
    s, t = torch.tensor([[1.0], [1.0]]), torch.tensor([1, 3])
    v1, rbar = 3.0, 9.0 / 5  # H = T_limit = 5
    torch.testing.assert_close(value(s, t), torch.tensor([v1 + 4 * rbar, v1 + 2 * rbar]))


def test_time_input_is_the_fraction_of_the_time_left():
    """With T_limit = 8, position t gives the input (8 - t) / 8; past the limit it is clamped to 0 (and V = 0)."""
    value = linear_value(time_input=True, time_limit=8)
    s = torch.tensor([[1.0], [1.0], [1.0], [2.0]])
    t = torch.tensor([0, 2, 7, 9])
    expected = torch.tensor([3.0 + 3.0, 3.0 + 3.0 * 6 / 8, 3.0 + 3.0 * 1 / 8, 0.0])
    torch.testing.assert_close(value(s, t), expected)
    with pytest.raises(ValueError, match="positions"):
        value(s)


def test_a_wrong_horizon_factor_fails_the_hand_computed_check():
    """Power check: the undiscounted factor (T_limit - t) instead of (1 - gamma^k) / (1 - gamma) is caught."""
    value = linear_value(horizon_aware=True, time_limit=4, gamma=0.5)
    value._horizon_fraction = torch.arange(5, dtype=torch.float32) / 4  # k / T_limit
    s, t = torch.tensor([[1.0]]), torch.tensor([2])
    with pytest.raises(AssertionError):
        torch.testing.assert_close(value(s, t), torch.tensor([3.0 + 1.5 * 9.0 / 1.875]))


def test_stacked_time_aware_values_equal_each_seeds_own():
    from rl_relax.seed_stack import stack_modules

    torch.manual_seed(0)
    singles = [ValueNet(3, [8], "tanh", True, time_input=True, horizon_aware=True, time_limit=6) for _ in range(3)]
    stacked = stack_modules(singles)
    obs, positions = torch.randn(3, 10, 3), torch.randint(0, 7, (3, 10))
    expected = torch.stack([v(obs[k], positions[k]) for k, v in enumerate(singles)])
    torch.testing.assert_close(stacked(obs, positions), expected)


# ----------------------------------------------------------------------------- positions from the buffer
def test_observation_positions_are_where_each_observation_is_in_its_episode():
    """Counter-v0's observation is its position in the episode. Every stored observation, obs[T] and the
    reset slots' (the ended episode's true final observation) included, gets that position; a reset slot at
    t = 0 (its episode ended in the previous rollout) gets 0."""
    handle, buf, collector = counter_rollouts(max_episode_steps=3)
    seen_reset_first = seen_reset_inside = False
    for _ in range(6):
        collector.collect()
        positions, obs = buf.observation_positions(), buf.obs_np[..., 0]
        reset_first = ~buf.valid_np[0]
        expected = obs.astype(np.int64)
        expected[0][reset_first] = 0
        np.testing.assert_array_equal(positions, expected)
        seen_reset_first |= reset_first.any()
        seen_reset_inside |= (~buf.valid_np[1:]).any()
        assert positions[-1].max() <= 3
    handle.close()
    assert seen_reset_first and seen_reset_inside


def test_seed_stacked_positions_are_each_seeds_own():
    policy = make_learner(BaselineEstimator).policy
    single = [RolloutBuffer(4, 2, OBS_DIM, policy, {}, torch.device("cpu")) for _ in range(2)]
    stacked = RolloutBuffer(4, 2, OBS_DIM, policy, {}, torch.device("cpu"), num_seeds=2)
    rng = np.random.default_rng(0)
    for k, buf in enumerate(single):
        buf.valid_np[:] = rng.random((4, 2)) > 0.3
        buf.episode_step_np[:] = np.where(buf.valid_np, rng.integers(0, 9, (4, 2)), -1)
        stacked.valid_np[k], stacked.episode_step_np[k] = buf.valid_np, buf.episode_step_np
    expected = np.stack([b.observation_positions() for b in single])
    np.testing.assert_array_equal(stacked.observation_positions(), expected)


def time_aware_learner(estimator=BaselineEstimator, value_cfg=None, time_limit=16, **cfg):
    """make_learner's, with a time-input, horizon-aware V (filled_buffer's positions stay below the limit)."""
    learner = make_learner(estimator)
    torch.manual_seed(1)
    value = ValueNet(OBS_DIM, [8, 8], "tanh", True, time_input=True, horizon_aware=True, time_limit=time_limit)
    return A2CLearner(learner.policy, value, learner.estimator, learner_cfg(**cfg), value_cfg=value_cfg)


def test_the_learner_gives_v_every_observations_position():
    learner = time_aware_learner(time_limit=4)
    buf = filled_buffer(learner)
    buf.episode_step_np[:] = np.where(buf.valid_np, np.arange(T)[:, None] % 4, -1)
    targets = learner.targets(buf)
    positions = buf.observation_positions()
    with torch.no_grad():
        expected = learner.value(torch.from_numpy(buf.obs_np), torch.from_numpy(positions))
    np.testing.assert_allclose(targets.values_np, expected.numpy(), rtol=1e-6, atol=1e-6)
    assert (targets.values_np[positions >= 4] == 0).all() and (positions >= 4).any()  # the time limit: V = 0


# ----------------------------------------------------------------------------- V's own optimizer
VALUE_CFG = OmegaConf.create({"steps": 6, "lr": 1e-2, "optimizer": "adam"})


def reference_value_fit(learner: A2CLearner, buf: RolloutBuffer, steps: int, moving_targets: bool = False):
    """V after ``steps`` plain Adam steps on (1/(T N)) sum valid (R - V)^2, R from the V before the steps."""
    value = copy.deepcopy(learner.value)
    adam = torch.optim.Adam(value.parameters(), lr=1e-2, eps=1e-5)  # learner.eps, as V's own Adam uses
    positions = torch.from_numpy(buf.observation_positions().reshape(-1))
    valid = torch.from_numpy(buf.valid_np.reshape(-1)).float()
    returns = torch.from_numpy(learner.targets(buf).returns_np.reshape(-1))
    for _ in range(steps):
        if moving_targets:  # the wrong variant: targets recomputed from the moving V
            learner.value.load_state_dict(value.state_dict())
            returns = torch.from_numpy(learner.targets(buf).returns_np.reshape(-1))
        values = value(torch.from_numpy(buf.obs_np[:-1].reshape(-1, OBS_DIM)), positions[: T * buf.num_envs])
        loss = ((returns - values).square() * valid).sum() / valid.numel()
        adam.zero_grad()
        loss.backward()
        adam.step()
    return [p.detach().clone() for p in value.parameters()]


def test_value_steps_are_regression_steps_on_targets_fixed_before_them():
    reference = time_aware_learner(value_cfg=VALUE_CFG)
    buf = filled_buffer(reference)
    expected = reference_value_fit(reference, buf, steps=6)
    learner = time_aware_learner(value_cfg=VALUE_CFG)
    learner.update(filled_buffer(learner), global_step=0)
    for mine, ref in zip(learner.value.parameters(), expected, strict=True):
        torch.testing.assert_close(mine.detach(), ref, rtol=1e-4, atol=1e-6)


def test_moving_targets_fail_the_same_comparison():
    """Power check: recomputing the targets from the moving V at each step gives another V."""
    reference = time_aware_learner(value_cfg=VALUE_CFG)
    expected = reference_value_fit(reference, filled_buffer(reference), steps=6, moving_targets=True)
    learner = time_aware_learner(value_cfg=VALUE_CFG)
    learner.update(filled_buffer(learner), global_step=0)
    with pytest.raises(AssertionError):
        for mine, ref in zip(learner.value.parameters(), expected, strict=True):
            torch.testing.assert_close(mine.detach(), ref, rtol=1e-4, atol=1e-6)


def test_value_steps_reduce_the_regression_loss_on_a_fixed_batch():
    def fitted_loss(steps: int) -> tuple[float, float]:
        learner = time_aware_learner(value_cfg=OmegaConf.create({"steps": steps, "lr": 2e-2, "optimizer": "adam"}))
        buf = filled_buffer(learner)
        stats = learner.update(buf, global_step=0, diagnostics=True)
        return stats.value_loss, learner.estimator_metrics["train/value_loss_fitted"]

    before, after_one = fitted_loss(1)
    before_again, after_many = fitted_loss(100)
    assert before == before_again  # the loss logged as train/value_loss is the one before the steps
    assert after_one < before and after_many < 0.25 * before, (before, after_one, after_many)


def test_the_policy_step_uses_the_advantages_from_before_the_value_steps():
    """With V on its own, the policy's gradient is the joint update's policy part, whatever V does next."""
    reference = time_aware_learner()
    expected, _, _ = reference_update(reference, filled_buffer(reference))
    learner = time_aware_learner(value_cfg=VALUE_CFG)
    learner.update(filled_buffer(learner), global_step=0)
    assert learner.flat.grad.numel() == learner.num_policy_params  # V is not in the policy's optimizer
    torch.testing.assert_close(learner.flat.grad, expected[: learner.num_policy_params], rtol=1e-4, atol=1e-6)


def test_value_learning_rate_follows_the_schedule():
    learner = time_aware_learner(value_cfg=VALUE_CFG, lr_schedule="linear", lr=1e-3)
    learner.set_progress(0.25)
    assert learner.value_optimizer.param_groups[0]["lr"] == pytest.approx(0.75e-2)
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(0.75e-3)


# ----------------------------------------------------------------------------- defaults and config
def test_the_default_value_config_keeps_the_joint_update_bit_for_bit():
    cfg = compose_config()
    assert (cfg.value.steps, cfg.value.lr, cfg.value.optimizer) == (1, None, None)
    assert not cfg.value.time_input and not cfg.value.horizon_aware
    plain, configured = make_learner(BaselineEstimator), make_learner(BaselineEstimator)
    configured = A2CLearner(configured.policy, configured.value, configured.estimator, learner_cfg(),
                            value_cfg=cfg.value)  # fmt: skip
    assert not configured.separate_value and configured.value_optimizer is None
    assert configured.flat.data.numel() == plain.flat.data.numel()  # V's parameters in the joint step
    for learner in (plain, configured):
        learner.update(filled_buffer(learner), global_step=0)
    assert torch.equal(plain.flat.data, configured.flat.data) and torch.equal(plain.flat.grad, configured.flat.grad)
    assert "value_optimizer" not in configured.state_dict()


def test_time_options_need_the_envs_time_limit(tmp_path):
    counter = ["env.id=RlRelaxTest/Counter-v0", "env.import_module=tests.toy_envs", "env.num_envs=2"]
    for option in ("value.time_input", "value.horizon_aware"):
        with pytest.raises(ConfigError, match=rf"{option}=true needs the env's time limit.*max_episode_steps"):
            Trainer(compose_config(*counter, f"{option}=true"), tmp_path / "run")
    trainer = Trainer(compose_config(*counter, "value.time_input=true", "env.make_kwargs={max_episode_steps: 7}"),
                      tmp_path / "run2")  # fmt: skip
    assert trainer.value.time_limit == 7
    trainer.env.close()
    assert env_time_limit(compose_config("env=CartPole").env) == 500
    assert env_time_limit(compose_config("env=CartPole", "env.make_kwargs={max_episode_steps: 200}").env) == 200


def test_value_settings_are_checked(tmp_path):
    for bad, match in (("value.steps=0", "value.steps=0 must be"), ("value.optimizer=sgd", "value.optimizer='sgd'"),
                       ("value.lr=-1", "value.lr=-1 must be")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            Trainer(compose_config(bad), tmp_path / "run")


# ----------------------------------------------------------------------------- checkpoints
SHORT = ["env=CartPole", "total_timesteps=400", "checkpoint.interval_steps=200", "env.vectorization=sync"]
LEVERS = ["value.horizon_aware=true", "value.time_input=true", "value.steps=3", "value.lr=1e-3",
          "value.optimizer=adam", "env.make_kwargs={max_episode_steps: 30}"]  # fmt: skip


def test_a_checkpoint_round_trips_the_value_function_and_its_optimizer(tmp_path):
    """Resuming restores V (both heads, the time input) and V's own Adam state exactly as saved."""
    train(compose_config(*SHORT, *LEVERS), tmp_path / "run")
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints"))
    trainer = Trainer(compose_config(*SHORT, *LEVERS, "total_timesteps=800"), tmp_path / "run")
    try:
        assert not trainer.learner.value_optimizer.state  # fresh: nothing to compare yet
        trainer._resume_or_start()
        assert trainer.global_step == saved["counters"]["global_step"] == 400
        for name, tensor in trainer.value.state_dict().items():
            assert torch.equal(tensor, saved["value"][name]), name
        restored = trainer.learner.value_optimizer.state_dict()
        for key, tensor in saved["learner"]["value_optimizer"]["state"][0].items():  # exp_avg, exp_avg_sq, step
            assert torch.equal(restored["state"][0][key], tensor), key
        assert restored["param_groups"][0]["lr"] == 1e-3
    finally:
        trainer.env.close()


@pytest.mark.parametrize(
    ("first", "then", "match"),
    [
        ([], ["value.time_input=true"], "different network architecture"),
        ([], ["value.horizon_aware=true"], "different network architecture"),
        ([], ["value.steps=3"], "trained jointly with the policy, this run's is trained with its own optimizer"),
        (["value.lr=1e-3"], [], "trained with its own optimizer, this run's is trained jointly"),
    ],
)
def test_resume_refuses_a_checkpoint_of_another_value_function(tmp_path, first, then, match):
    limit = ["env.make_kwargs={max_episode_steps: 30}"]
    train(compose_config(*SHORT, *limit, *first), tmp_path / "run")
    with pytest.raises(CheckpointError, match=match):
        train(compose_config(*SHORT, *limit, *then, "total_timesteps=800"), tmp_path / "run")


# ----------------------------------------------------------------------------- the variance anatomy
def test_the_variance_anatomy_gives_a_time_aware_v_the_continuations_positions():
    from rl_relax.anatomy import AnatomyConfig, VarianceAnatomy

    env_cfg = OmegaConf.create({"id": "CartPole-v1", "make_kwargs": {"max_episode_steps": 12}})
    learner = OmegaConf.create({"gamma": 0.9, "gae_lambda": 1.0, "num_steps": 4, "normalize_advantage": False})
    torch.manual_seed(0)
    from rl_relax.networks import CategoricalPolicy

    policy = CategoricalPolicy(4, 2, [8], "tanh", True)
    calls: list[torch.Tensor] = []

    class Spy(ValueNet):
        def forward(self, obs, episode_step=None):
            calls.append(episode_step.clone())
            return super().forward(obs, episode_step)

    value = Spy(4, [8], "tanh", True, horizon_aware=True, time_limit=12, gamma=0.9)
    config = AnatomyConfig(num_states=4, num_actions=3, num_continuations=2, burn_in_steps=6, seed=0)
    probe = VarianceAnatomy(env_cfg, learner, policy, value, BaselineEstimator(), config)
    try:
        result = probe.measure()
    finally:
        probe.close()
    assert len(calls) == 4 and all(math.isfinite(v) for v in result.scalars().values())
    for positions in calls:  # per continuation j = 0..horizon: the state's position + j, for all K L copies
        per_step = positions.view(-1, 6)
        assert (per_step == per_step[:, :1]).all()
        assert (per_step[1:, 0] - per_step[:-1, 0] == 1).all()


def test_mlp_of_a_time_input_v_has_one_more_input():
    value = ValueNet(4, [8], "tanh", True, time_input=True, time_limit=10)
    assert isinstance(value.net, MLP) and value.net.layers[0].weight.shape == (8, 5)
    assert ValueNet(4, [8], "tanh", True, horizon_aware=True, time_limit=10).net.layers[-1].weight.shape == (2, 8)
