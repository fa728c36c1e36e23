"""DLAX (rl_relax/estimators/dlax.py): unbiased against the exact gradient with a far-from-zero control
variate, a deliberately wrong variant caught, its update equal to plain double backprop, and a run."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

from rl_relax.errors import ConfigError
from rl_relax.estimators.base import RolloutBatch
from rl_relax.estimators.dlax import DlaxEstimator, gumbel_log_density
from rl_relax.samplers import relaxed_categorical
from tests.estimator_problems import NUM_STATES, BanditProblem, GaussianProblem, make, strong_control_variate, z_scores
from tests.update_reference import check_update_matches_reference


class ActionScoreDlax(DlaxEstimator):
    """Wrong: the control variate's score term uses grad log pi(a) instead of grad log p(z)."""

    def surrogate(self, batch: RolloutBatch) -> torch.Tensor:
        z = relaxed_categorical(batch.dist_params, batch.noise["u"])
        c_z, c_z_fixed = self.relaxed_cv(batch.obs, z), self.relaxed_cv(batch.obs, z.detach())
        return batch.mean(batch.log_prob * (batch.advantages - c_z_fixed) + c_z)


def test_gumbel_log_density_matches_torch_distributions():
    torch.manual_seed(0)
    logits, z = torch.randn(5, 4), torch.randn(5, 4)
    loc = torch.log_softmax(logits, -1)
    expected = torch.distributions.Gumbel(loc, torch.ones_like(loc)).log_prob(z).sum(-1)
    torch.testing.assert_close(gumbel_log_density(logits, z), expected)


def test_dlax_with_an_untrained_control_variate_is_unbiased():
    problem = BanditProblem()
    assert z_scores(problem, strong_control_variate(make(DlaxEstimator, problem))).max() < 4


def test_dlax_with_the_action_score_fails_the_unbiasedness_test():
    problem = BanditProblem()
    assert z_scores(problem, strong_control_variate(make(ActionScoreDlax, problem))).max() > 4


@pytest.mark.parametrize("objective", ["variance", "dist_params"])
@pytest.mark.parametrize(("ent_coef", "cv_steps"), [(0.0, 1), (0.01, 2)])
def test_dlax_update_equals_plain_double_backprop(objective, ent_coef, cv_steps):
    def factory():
        return DlaxEstimator(name="dlax", cv_objective=objective, cv_steps=cv_steps, cv_lr=0.01)

    check_update_matches_reference(factory, True, cv_steps=cv_steps, ent_coef=ent_coef)


def test_dlax_with_its_control_variate_options_equals_plain_double_backprop():
    def factory():
        return DlaxEstimator(
            name="dlax", cv_steps=2, cv_lr=0.01, cv_inputs=["state", "value", "time", "dist_params"], cv_time_limit=7,
            state_baseline="variance", cv_warmup_steps=2, cv_gap_interval=1, cv_gap_steps=2, cv_term_norms_interval=1,
        )  # fmt: skip

    check_update_matches_reference(factory, True, cv_steps=2, ent_coef=0.01)


def test_dlax_refuses_continuous_actions():
    with pytest.raises(ConfigError, match="estimator=lax"):
        DlaxEstimator(name="dlax").bind(GaussianProblem().policy, NUM_STATES, gym.spaces.Box(-1, 1, (2,)))


def test_dlax_trains_on_cartpole_and_logs_its_control_variate(run_training, tmp_path):
    from tests.conftest import read_scalars

    summary = run_training("estimator=dlax", "total_timesteps=2000", "logging.interval_steps=400")
    assert summary["estimator"] == "dlax" and summary["timesteps"] >= 2000
    scalars = read_scalars(tmp_path / "run")
    temperatures = [v for _, v in scalars["cv/temperature"]]
    assert temperatures[-1] != pytest.approx(1.0)  # tau was trained
    losses = [v for _, v in scalars["cv/loss"]]
    assert len(set(losses)) > 1 and all(math.isfinite(v) for v in losses)
