"""The control-variate options of lax/relax/dlax (rl_relax/estimators/control_variate.py).

- ``cv_inputs`` and ``state_baseline=variance`` keep every estimator unbiased against the exact gradient
  (tests/estimator_problems.py, 4 standard errors), and deliberately wrong variants (a "state" baseline
  that sees the action, LAX with the distribution parameters not detached) fail the same test;
- the diagnostics (``cv_gap_interval``, ``cv_term_norms_interval``) leave training bit-identical, and a
  measurement that does not restore phi is caught; the score and pathwise norms add up to cv/loss;
- ``cv_warmup_steps`` steps phi once, on a fresh run only; ``cv_lr_schedule=linear`` follows the learner's
  progress; bad options are one-line errors naming the fix;
- the variance anatomy reads V(s) for estimators whose control variate needs it.

The learner-level equality with plain double backprop is in tests/test_learner.py and tests/test_dlax.py;
equal expectations under NEXT_STEP autoreset in tests/test_estimator_base.py.
"""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import pytest
import torch

from rl_relax.config import validate
from rl_relax.errors import ConfigError
from rl_relax.estimators.base import RolloutBatch
from rl_relax.estimators.control_variate import ControlVariateEstimator, reaches_other_than_through
from rl_relax.estimators.dlax import DlaxEstimator
from rl_relax.estimators.lax import LaxEstimator
from rl_relax.estimators.relax import RelaxEstimator
from tests.conftest import compose_config
from tests.estimator_problems import BanditProblem, GaussianProblem, make, strong_control_variate, z_scores
from tests.update_reference import filled_buffer, make_learner

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALL_INPUTS = ["state", "value", "time", "dist_params"]
TIME_LIMIT = 10
OPTIONS = {"cv_inputs": ALL_INPUTS, "cv_time_limit": TIME_LIMIT, "state_baseline": "variance"}


# ------------------------------------------------------------------------ unbiasedness against the exact gradient
class WithStateValues:
    """A problem whose batches carry V(s) (the problem's state values, which its advantages subtract) and
    a random episode step, as the learner's batches do."""

    def __init__(self, problem):
        self.problem, self.policy, self.space = problem, problem.policy, problem.space

    def exact_gradient(self) -> torch.Tensor:
        return self.problem.exact_gradient()

    def batch(self, m: int, g: torch.Generator) -> RolloutBatch:
        batch = self.problem.batch(m, g)
        states = batch.obs.argmax(-1)
        return dataclasses.replace(
            batch,
            state_values=self.problem.state_values[states],
            episode_step=torch.randint(0, TIME_LIMIT, (m,), generator=g),
        )


def strong(estimator: ControlVariateEstimator) -> ControlVariateEstimator:
    """A far-from-zero c_phi and b_phi, so that a wrong estimator shows its bias."""
    strong_control_variate(estimator)
    if estimator.state_baseline_net is not None:
        torch.nn.init.orthogonal_(estimator.state_baseline_net.net.layers[-1].weight, 10.0)
        torch.nn.init.constant_(estimator.state_baseline_net.net.layers[-1].bias, -2.0)
    return estimator


class ActionAwareBaseline(RelaxEstimator):
    """Wrong: its "state" baseline also sees the executed action, so the score term it adds has a nonzero mean."""

    def score_offset(self, batch, features):
        return super().score_offset(batch, features) + 2.0 * (batch.actions == 0).float()


class UndetachedLax(LaxEstimator):
    """Wrong: c_phi reads the distribution parameters with theta's path kept, so grad_theta c has a direct part."""

    def distribution_features(self, batch):
        return torch.cat([batch.dist_params, batch.policy.log_std.expand_as(batch.dist_params)], dim=-1)


@pytest.mark.parametrize("state_baseline", ["regression", "variance"])
@pytest.mark.parametrize("cls", [RelaxEstimator, DlaxEstimator])
def test_discrete_estimators_with_every_input_are_unbiased(cls, state_baseline):
    problem = WithStateValues(BanditProblem())
    estimator = strong(make(cls, problem, **{**OPTIONS, "state_baseline": state_baseline}))
    assert z_scores(problem, estimator).max() < 4


@pytest.mark.parametrize("state_baseline", ["regression", "variance"])
def test_lax_with_every_input_is_unbiased(state_baseline):
    problem = WithStateValues(GaussianProblem())
    estimator = strong(make(LaxEstimator, problem, **{**OPTIONS, "state_baseline": state_baseline}))
    assert z_scores(problem, estimator).max() < 4


def test_a_state_baseline_that_sees_the_action_fails_the_unbiasedness_test():
    problem = WithStateValues(BanditProblem())
    assert z_scores(problem, strong(make(ActionAwareBaseline, problem, **OPTIONS))).max() > 4


def test_lax_reading_the_distribution_parameters_undetached_fails_the_unbiasedness_test():
    problem = WithStateValues(GaussianProblem())
    assert z_scores(problem, strong(make(UndetachedLax, problem, **OPTIONS))).max() > 4


def test_the_variance_baseline_replaces_v_in_the_score_weight():
    """With c_phi zero, RELAX's gradient with state_baseline=variance is the score function with R - b_phi(s)."""
    problem = WithStateValues(BanditProblem())
    estimator = make(RelaxEstimator, problem, state_baseline="variance")
    torch.nn.init.zeros_(estimator.cv.net.layers[-1].weight)
    torch.nn.init.zeros_(estimator.cv.net.layers[-1].bias)
    batch = problem.batch(16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        weight = batch.advantages + batch.values - estimator.state_baseline_net(batch.obs)
    expected = torch.autograd.grad(batch.mean(batch.log_prob * weight), batch.theta, retain_graph=True)
    torch.testing.assert_close(estimator.gradient(batch), torch.cat([g.reshape(-1) for g in expected]))


# ------------------------------------------------------------------------ inputs
def test_the_inputs_are_constants_in_their_documented_order():
    learner = make_learner(lambda: RelaxEstimator(name="r", cv_inputs=["dist_params", "time", "state", "value"],
                                                  cv_time_limit=TIME_LIMIT))  # fmt: skip
    estimator = learner.estimator
    batch = learner.make_batch(filled_buffer(learner), learner.targets(filled_buffer(learner)))
    features = estimator.cv_features(batch)
    expected = torch.cat([
        batch.obs, batch.values[:, None], batch.episode_step.clamp_min(0)[:, None] / TIME_LIMIT,
        torch.log_softmax(batch.dist_params, -1),
    ], dim=-1)  # fmt: skip
    torch.testing.assert_close(features, expected.detach())
    assert not features.requires_grad
    assert estimator.cv.net.layers[0].in_features == features.shape[-1] + 3
    # theta reaches the surrogate only through dist_params: the fast phi gradient applies
    assert not reaches_other_than_through(estimator.surrogate(batch), batch.theta_net, batch.dist_params)


def test_the_default_inputs_are_the_observations_themselves():
    """Today's c_phi(s, x): no concatenation and no extra work on the default path."""
    learner = make_learner(lambda: RelaxEstimator(name="r"))
    batch = learner.make_batch(filled_buffer(learner), learner.targets(filled_buffer(learner)))
    assert learner.estimator.cv_features(batch) is batch.obs
    assert learner.estimator.state_baseline_net is None and not learner.uses_progress


# ------------------------------------------------------------------------ diagnostics leave training unchanged
def _train(learner, updates: int = 3) -> list[dict]:
    metrics = []
    for k in range(updates):
        learner.update(filled_buffer(learner, seed=k), global_step=0)
        metrics.append(dict(learner.estimator_metrics))
    return metrics


def _state(learner) -> list[torch.Tensor]:
    estimator = learner.estimator
    tensors = [learner.flat.data, *learner.optimizer.state[learner.flat.data].values(), estimator._flat_phi.data]
    return tensors + [v for v in estimator.cv_optimizer.state[estimator._flat_phi.data].values()]


@pytest.mark.parametrize(("cls", "discrete"), [(RelaxEstimator, True), (LaxEstimator, False)])
def test_the_diagnostics_leave_training_bit_identical(cls, discrete):
    common = {"cv_lr": 0.01, "cv_steps": 2, **OPTIONS}
    plain = make_learner(lambda: cls(name="plain", **common), discrete)
    measured = make_learner(lambda: cls(name="measured", cv_gap_interval=1, cv_gap_steps=4,
                                        cv_term_norms_interval=1, **common), discrete)  # fmt: skip
    _train(plain)
    metrics = _train(measured)
    for a, b in zip(_state(plain), _state(measured), strict=True):
        assert torch.equal(a, b)
    for m in metrics:
        assert m["cv/gap"] > 0 and math.isfinite(m["cv/gap"]) and m["cv/gap_loss"] > 0
        assert m["cv/score_sq_norm"] > 0 and m["cv/pathwise_sq_norm"] > 0


def test_a_gap_measurement_that_does_not_restore_phi_is_caught(monkeypatch):
    """Power: the bit-identity check above notices phi (or its optimizer) left where the extra steps took it."""
    plain = make_learner(lambda: RelaxEstimator(name="plain", cv_lr=0.01))
    _train(plain)
    monkeypatch.setattr(ControlVariateEstimator, "_restore_phi", lambda self, saved: None)
    measured = make_learner(lambda: RelaxEstimator(name="measured", cv_lr=0.01, cv_gap_interval=1, cv_gap_steps=2))
    _train(measured)
    assert not all(torch.equal(a, b) for a, b in zip(_state(plain), _state(measured), strict=True))


def test_the_gap_is_the_log_ratio_of_the_objective_to_its_lowest_value_after_more_steps():
    learner = make_learner(lambda: RelaxEstimator(name="r", cv_lr=0.01, cv_gap_interval=2, cv_gap_steps=5))
    metrics = _train(learner, updates=3)
    assert "cv/gap" not in metrics[0]  # measured every second update, then logged until the next measurement
    assert metrics[2]["cv/gap"] == metrics[1]["cv/gap"]
    m = metrics[1]  # cv_steps = 1: cv/loss is the objective at the phi that gave this update's g_hat
    assert m["cv/gap"] == pytest.approx(math.log(m["cv/loss"] / m["cv/gap_loss"]), rel=1e-6)
    assert m["cv/gap_loss"] < m["cv/loss"]


@pytest.mark.parametrize(("cls", "discrete"), [(RelaxEstimator, True), (LaxEstimator, False), (DlaxEstimator, True)])
def test_the_score_and_pathwise_parts_add_up_to_the_estimate(cls, discrete):
    """||g||^2 = ||g_score||^2 + ||g_pathwise||^2 + 2 cos ||g_score|| ||g_pathwise||, at the same phi (cv/loss)."""
    learner = make_learner(lambda: cls(name="c", cv_term_norms_interval=1, **OPTIONS), discrete)
    (m,) = _train(learner, updates=1)
    a, b, cos = m["cv/score_sq_norm"], m["cv/pathwise_sq_norm"], m["cv/score_pathwise_cosine"]
    assert a + b + 2 * cos * math.sqrt(a * b) == pytest.approx(m["cv/loss"], rel=1e-4)
    assert abs(cos) <= 1 + 1e-6


def test_a_split_that_misses_a_pathwise_term_fails_the_sum():
    class Missing(RelaxEstimator):
        def surrogate_terms(self, batch):
            c_z, _, c_z_tilde_fixed = self.control_variates(batch)
            score = batch.log_prob * (batch.advantages - c_z_tilde_fixed.detach())
            return {"score": batch.mean(score), "pathwise": batch.mean(c_z)}  # - c(z~) left out

    learner = make_learner(lambda: Missing(name="c", cv_term_norms_interval=1))
    (m,) = _train(learner, updates=1)
    a, b, cos = m["cv/score_sq_norm"], m["cv/pathwise_sq_norm"], m["cv/score_pathwise_cosine"]
    assert a + b + 2 * cos * math.sqrt(a * b) != pytest.approx(m["cv/loss"], rel=1e-3)


# ------------------------------------------------------------------------ warm-up and schedule
def _adam_steps(estimator) -> int:
    return int(estimator.cv_optimizer.state[estimator._flat_phi.data]["step"].item())


def test_the_warm_up_happens_once_on_a_fresh_run_and_not_after_a_resume():
    learner = make_learner(lambda: RelaxEstimator(name="r", cv_warmup_steps=5, cv_steps=2))
    learner.update(filled_buffer(learner), global_step=0)
    assert _adam_steps(learner.estimator) == 5 + 2
    learner.update(filled_buffer(learner, seed=1), global_step=0)
    assert _adam_steps(learner.estimator) == 5 + 2 + 2
    resumed = make_learner(lambda: RelaxEstimator(name="r", cv_warmup_steps=5, cv_steps=2), seed=3)
    resumed.estimator.load_state_dict(learner.estimator.state_dict())
    resumed.estimator.load_extra_state(learner.estimator.extra_state())
    resumed.update(filled_buffer(resumed), global_step=0)
    assert _adam_steps(resumed.estimator) == 5 + 2 + 2 + 2


def test_the_linear_schedule_follows_the_learners_progress():
    learner = make_learner(lambda: RelaxEstimator(name="r", cv_lr=0.01, cv_lr_schedule="linear"))
    assert learner.uses_progress  # the trainer then calls set_progress before every update
    learner.set_progress(0.25)
    assert learner.estimator.cv_optimizer.param_groups[0]["lr"] == pytest.approx(0.0075)
    assert learner.learning_rate == pytest.approx(7e-4)  # learner.lr_schedule=constant is untouched
    learner.update(filled_buffer(learner), global_step=0)
    assert learner.estimator_metrics["cv/learning_rate"] == pytest.approx(0.0075)
    learner.set_progress(1.5)
    assert learner.estimator.cv_optimizer.param_groups[0]["lr"] == 0.0
    constant = make_learner(lambda: RelaxEstimator(name="r", cv_lr=0.01))
    constant.set_progress(0.5)
    assert constant.estimator.cv_optimizer.param_groups[0]["lr"] == 0.01


def test_a_run_logs_the_schedule_and_the_diagnostics(run_training, tmp_path):
    from tests.conftest import read_scalars

    run_training(
        "estimator=relax", "total_timesteps=1600", "logging.interval_steps=400", "estimator.cv_lr_schedule=linear",
        "estimator.cv_gap_interval=5", "estimator.cv_gap_steps=3", "estimator.cv_term_norms_interval=5",
        "estimator.cv_warmup_steps=3",
    )  # fmt: skip
    scalars = read_scalars(tmp_path / "run")
    rates = [v for _, v in scalars["cv/learning_rate"]]
    assert rates == sorted(rates, reverse=True) and rates[0] < 1e-3 and rates[-1] < rates[0]
    for tag in ("cv/gap", "cv/gap_loss", "cv/score_sq_norm", "cv/pathwise_sq_norm", "cv/score_pathwise_cosine"):
        assert tag in scalars and all(math.isfinite(v) for _, v in scalars[tag])


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"cv_inputs": ["state", "action"]}, "estimator.cv_inputs=[state]"),
        ({"cv_inputs": ["state", "state"]}, "estimator.cv_inputs=[state]"),
        ({"state_baseline": "mse"}, "estimator.state_baseline=regression"),
        ({"cv_lr_schedule": "cosine"}, "estimator.cv_lr_schedule=constant"),
        ({"cv_warmup_steps": -1}, "estimator.cv_warmup_steps=0"),
        ({"cv_gap_steps": 0}, "estimator.cv_gap_steps=1"),
        ({"cv_time_limit": 0}, "estimator.cv_time_limit=500"),
    ],
)
def test_bad_options_are_one_line_errors_naming_the_fix(kwargs, fix):
    with pytest.raises(ConfigError) as info:
        RelaxEstimator(name="r", **kwargs)
    assert "\n" not in str(info.value) and f"Fix: {fix}" in str(info.value)


def test_a_variance_baseline_with_normalised_advantages_is_refused():
    cfg = compose_config("estimator=relax", "estimator.state_baseline=variance", "learner.normalize_advantage=true")
    with pytest.raises(ConfigError, match=r"learner\.normalize_advantage=false"):
        validate(cfg)


def test_the_time_input_divides_by_the_envs_time_limit_unless_told_otherwise(tmp_path):
    from rl_relax.trainer import Trainer

    def time_limit(*overrides):
        trainer = Trainer(compose_config("estimator=relax", "estimator.cv_inputs=[state,time]", *overrides), tmp_path)
        trainer.env.close()
        return trainer.estimator.cv_time_limit

    assert time_limit() == 500  # CartPole-v1's spec
    assert time_limit("env.make_kwargs={max_episode_steps: 200}") == 200
    assert time_limit("estimator.cv_time_limit=50") == 50
    problem = BanditProblem()
    with pytest.raises(ConfigError, match=r"estimator\.cv_time_limit=") as info:
        RelaxEstimator(name="r", cv_inputs=["state", "time"]).bind(problem.policy, 3, problem.space, time_limit=None)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------ the variance anatomy
def test_the_anatomy_decomposes_an_estimator_that_reads_v():
    """Sigma_s and Sigma_tau are the same for every unbiased estimator (its coefficient of A is psi): the
    probe's estimates for RELAX with V as an input and the variance-trained baseline match the exact terms."""
    from tests.test_anatomy import Z, _exact_terms, _nets, _probe

    policy, value = _nets()
    problem = type("P", (), {"policy": policy, "space": gym.spaces.Discrete(3)})()
    estimator = strong(make(RelaxEstimator, problem, hidden_sizes=[8], activation="tanh",
                            cv_inputs=["state", "value"], state_baseline="variance"))  # fmt: skip
    result = _probe(policy, value, estimator)
    exact = _exact_terms(policy, value)
    term = result.decompositions["estimator"]
    for name in ("state", "trajectory"):
        assert abs(getattr(term, name).value - exact["learned_value"][name]) < Z * getattr(term, name).stderr
