"""GAE / n-step returns under termination, truncation and NEXT_STEP reset transitions.

Each expected value is computed by hand in the comment next to it.
"""

import numpy as np
import pytest

from rl_relax.returns import gae

GAMMA = 0.9


def run(rewards, values, last, terminated=None, truncated=None, valid=None, lam=1.0):
    rewards = np.asarray(rewards, dtype=np.float32)[:, None]
    shape = rewards.shape
    flags = lambda x, default: np.asarray(x if x is not None else [default] * shape[0])[:, None]  # noqa: E731
    adv, ret = gae(
        rewards, np.asarray(values, dtype=np.float32)[:, None], np.asarray([last], dtype=np.float32),
        flags(terminated, False), flags(truncated, False), flags(valid, True), GAMMA, lam,
    )  # fmt: skip
    return adv[:, 0], ret[:, 0]


def test_termination_is_not_bootstrapped_and_cuts_the_return():
    # t=1 terminates; t=2 is the NEXT_STEP reset transition (reward 0, invalid); t=3 starts anew.
    adv, ret = run([1, 1, 0, 1], [10, 20, 30, 40], 50, terminated=[0, 1, 0, 0], valid=[1, 1, 0, 1])
    # A3 = 1 + .9*50 - 40 = 6;  A1 = 1 - 20 = -19 (no bootstrap);  A0 = 1 + .9*1 - 10 = -8.1
    np.testing.assert_allclose(adv, [-8.1, -19.0, 0.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(ret[[0, 1, 3]], [1.9, 1.0, 46.0], rtol=1e-6)


def test_truncation_bootstraps_from_the_true_final_observation():
    # Same, but t=1 is a time-limit truncation: values[2] = V(true final obs) = 30.
    adv, _ = run([1, 1, 0, 1], [10, 20, 30, 40], 50, truncated=[0, 1, 0, 0], valid=[1, 1, 0, 1])
    # A1 = 1 + .9*30 - 20 = 8;  A0 = 1 + .9*(1 + .9*30) - 10 = 16.2
    np.testing.assert_allclose(adv, [16.2, 8.0, 0.0, 6.0], rtol=1e-6)


def test_terminated_and_truncated_together_counts_as_termination():
    adv, _ = run([1, 1, 0, 1], [10, 20, 30, 40], 50, terminated=[0, 1, 0, 0], truncated=[0, 1, 0, 0],
                 valid=[1, 1, 0, 1])  # fmt: skip
    assert adv[1] == pytest.approx(-19.0)


def test_lambda_one_is_the_n_step_return_bootstrapped_at_the_end():
    adv, ret = run([1, 2, 3], [0.5, 1.0, 1.5], 2.0)
    # R0 = 1 + .9*2 + .81*3 + .729*2 = 6.688
    assert ret[0] == pytest.approx(1 + 0.9 * 2 + 0.81 * 3 + 0.729 * 2.0)
    assert adv[0] == pytest.approx(ret[0] - 0.5)


def test_lambda_zero_is_the_td_error_and_intermediate_lambda_mixes():
    adv0, _ = run([1, 2], [0.5, 1.0], 2.0, lam=0.0)
    np.testing.assert_allclose(adv0, [1 + 0.9 * 1.0 - 0.5, 2 + 0.9 * 2.0 - 1.0], rtol=1e-6)  # [1.4, 2.8]
    adv, _ = run([1, 2], [0.5, 1.0], 2.0, lam=0.5)
    np.testing.assert_allclose(adv, [1.4 + 0.45 * 2.8, 2.8], rtol=1e-6)


def test_invalid_steps_get_zero_advantage_and_do_not_leak():
    # An invalid step in the middle of nowhere (shouldn't happen without a done, but must stay inert).
    adv, _ = run([1, 5, 1], [0, 0, 0], 0, terminated=[1, 0, 0], valid=[1, 0, 1])
    assert adv[1] == 0.0
    assert adv[0] == pytest.approx(1.0)  # terminated: nothing from t >= 1


def test_environments_are_independent():
    rewards = np.array([[1, 0], [1, 0]], dtype=np.float32)
    values = np.zeros((2, 2), dtype=np.float32)
    flags = np.zeros((2, 2), dtype=bool)
    adv, _ = gae(rewards, values, np.array([0, 10], dtype=np.float32), flags, flags, ~flags, GAMMA, 1.0)
    np.testing.assert_allclose(adv[:, 0], [1.9, 1.0], rtol=1e-6)
    np.testing.assert_allclose(adv[:, 1], [8.1, 9.0], rtol=1e-6)
