"""The A2C update computes the gradient of the documented loss, whatever shortcuts it takes; every
estimator's update (control variate included) equals the plain autograd computation; and every
estimator has the same expectation, whatever V and c_phi are."""

import numpy as np
import pytest
import torch

from rl_relax.estimators.baseline import BaselineEstimator
from rl_relax.estimators.lax import LaxEstimator
from rl_relax.estimators.relax import RelaxEstimator
from rl_relax.returns import gae
from tests.update_reference import N, T, check_update_matches_reference, filled_buffer, make_learner


@pytest.mark.parametrize(
    ("ent_coef", "vf_coef", "normalize_advantage"), [(0.0, 0.5, False), (0.0, 0.3, True), (0.01, 0.5, False)]
)
def test_update_gradient_is_the_gradient_of_the_a2c_loss(ent_coef, vf_coef, normalize_advantage):
    check_update_matches_reference(
        BaselineEstimator, True, ent_coef=ent_coef, vf_coef=vf_coef, normalize_advantage=normalize_advantage
    )


def test_a_wrong_value_coefficient_fails_the_comparison():
    """Power check: the comparison notices a value-loss coefficient off by a factor as small as 1.001."""
    from tests import update_reference

    reference = make_learner(BaselineEstimator)
    reference.vf_coef *= 1.001
    expected, _, _ = update_reference.reference_update(reference, filled_buffer(reference))
    learner = make_learner(BaselineEstimator)
    learner.update(filled_buffer(learner), global_step=0)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(learner.flat.grad, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("estimator_cls", "discrete"), [(RelaxEstimator, True), (LaxEstimator, False)])
@pytest.mark.parametrize("objective", ["variance", "dist_params"])
@pytest.mark.parametrize(("ent_coef", "cv_steps"), [(0.0, 1), (0.01, 1), (0.0, 3), (0.01, 2)])
def test_control_variate_update_equals_plain_double_backprop(estimator_cls, discrete, objective, ent_coef, cv_steps):
    """The fast vjp/jvp path, through the learner's real update, against the reference computation."""

    def factory():
        return estimator_cls(name="cv", cv_objective=objective, cv_steps=cv_steps, cv_lr=0.01)

    check_update_matches_reference(factory, discrete, cv_steps=cv_steps, ent_coef=ent_coef)


#: Control-variate options (README "Estimators") that change what phi is and how it is trained.
CV_OPTIONS = {
    "all-inputs-variance-baseline-warmup": {
        "cv_inputs": ["state", "value", "time", "dist_params"], "cv_time_limit": 7, "state_baseline": "variance",
        "cv_warmup_steps": 2,
    },
    "value-time-schedule-diagnostics": {
        "cv_inputs": ["value", "time"], "cv_time_limit": 7, "cv_lr_schedule": "linear", "cv_gap_interval": 1,
        "cv_gap_steps": 3, "cv_term_norms_interval": 1,
    },
}  # fmt: skip


@pytest.mark.parametrize(("estimator_cls", "discrete"), [(RelaxEstimator, True), (LaxEstimator, False)])
@pytest.mark.parametrize("options", CV_OPTIONS.values(), ids=CV_OPTIONS)
@pytest.mark.parametrize(("objective", "ent_coef", "cv_steps"), [("variance", 0.0, 1), ("dist_params", 0.01, 2)])
def test_control_variate_options_keep_the_update_equal_to_plain_double_backprop(
    estimator_cls, discrete, options, objective, ent_coef, cv_steps
):
    def factory():
        return estimator_cls(name="cv", cv_objective=objective, cv_steps=cv_steps, cv_lr=0.01, **options)

    check_update_matches_reference(factory, discrete, cv_steps=cv_steps, ent_coef=ent_coef)


def test_a_warm_up_after_the_first_gradient_fails_the_comparison():
    """Power: the comparison notices warm-up steps taken after the first update's gradient instead of before."""

    class LateWarmup(RelaxEstimator):
        def estimate(self, batch):
            steps, self.cv_warmup_steps = self.cv_warmup_steps, 0
            surrogate = super().estimate(batch)
            self.cv_warmup_steps = steps
            return surrogate

        def learn(self, g_hat):
            metrics = super().learn(g_hat)
            for _ in range(self.cv_warmup_steps):
                self.step_control_variate(*self.objective_gradient(self._last_batch.reevaluated()))
            return metrics

        def surrogate(self, batch):
            self._last_batch = batch
            return super().surrogate(batch)

    with pytest.raises(AssertionError):
        check_update_matches_reference(lambda: LateWarmup(name="late", cv_lr=0.01, cv_warmup_steps=3), True)


class SecondPassRelax(RelaxEstimator):
    """A RELAX variant whose control variate reads the policy network's output by a second forward pass,
    so the surrogate reaches theta other than through batch.dist_params."""

    def surrogate(self, batch):
        self._policy_forward = batch.policy.forward  # a bound method, so the policy is not registered as phi
        return super().surrogate(batch)

    def relaxed_cv(self, obs, z):
        second_pass = torch.tanh(self._policy_forward(obs)).mean(-1)
        return super().relaxed_cv(obs, z) * (1.0 + second_pass)


def test_a_surrogate_that_reaches_theta_another_way_gets_the_exact_computation():
    check_update_matches_reference(lambda: SecondPassRelax(name="second_pass", cv_lr=0.01), True)


def test_forcing_the_fast_computation_on_such_a_surrogate_gives_a_wrong_gradient():
    """Power check: without the graph check the policy gradient silently misses the second path."""
    from tests import update_reference

    class Forced(SecondPassRelax):
        def estimate(self, batch):
            self.fast_gradient = True
            return super().estimate(batch)

    reference = make_learner(lambda: SecondPassRelax(name="second_pass", cv_lr=0.01))
    expected, _, _ = update_reference.reference_update(reference, filled_buffer(reference))
    learner = make_learner(lambda: Forced(name="forced", cv_lr=0.01))
    learner.update(filled_buffer(learner), global_step=0)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(learner.flat.grad, expected, rtol=1e-4, atol=1e-6)


def learner_with_its_targets():
    """A baseline learner, a filled buffer, and what its update will regress on: V(s_t) (T + 1, N) and R_t (T, N)."""
    learner = make_learner(BaselineEstimator)
    buf = filled_buffer(learner)
    with torch.no_grad():
        values = learner.value(torch.from_numpy(buf.obs_np)).numpy()
    _, returns = gae(buf.rewards_np, values[:-1], values[-1], buf.terminated_np, buf.truncated_np, buf.valid_np,
                     gamma=0.99, gae_lambda=0.95)  # fmt: skip
    return learner, buf, values, returns


def test_the_logged_value_loss_is_the_mean_squared_error_over_all_slots():
    """train/value_loss is L_V = (1/(T N)) sum_t (R_t - V(s_t))^2, although the update differentiates T N L_V."""
    learner, buf, values, returns = learner_with_its_targets()
    squared_errors = (returns.astype(np.float64) - values[:-1]) ** 2
    assert squared_errors[~buf.valid_np].max() == 0.0  # reset slots: R_t = V(s_t)
    stats = learner.update(buf, global_step=0)
    assert stats.value_loss == pytest.approx(squared_errors.sum() / (T * N), rel=1e-5)
    assert stats.value_loss != pytest.approx(squared_errors.sum() / buf.valid_np.sum(), rel=1e-3)  # not over valid


def test_explained_variance_of_the_last_logged_update_uses_valid_transitions_only():
    learner, buf, values, returns = learner_with_its_targets()
    r, v = returns[buf.valid_np].astype(np.float64), values[:-1][buf.valid_np].astype(np.float64)
    assert r.size == T * N - 2
    learner.update(buf, global_step=0, diagnostics=True)
    assert learner.explained_variance() == pytest.approx(1 - np.var(r - v) / np.var(r), rel=1e-5)


def test_a_wrong_fast_phi_gradient_fails_the_comparison():
    """Power check: the update-level comparison notices a control-variate gradient off by 1%."""

    class Off(RelaxEstimator):
        def _fast_phi_gradient(self, batch, g_hat, h_p, h_direct):
            phi_grads, objective = super()._fast_phi_gradient(batch, g_hat, h_p, h_direct)
            return [None if g is None else 1.01 * g for g in phi_grads], objective

    with pytest.raises(AssertionError):
        check_update_matches_reference(lambda: Off(name="off", cv_lr=0.01), True)
