"""Gradient-variance summaries: what grad/log_variance and grad/log_variance_sampled compute."""

import math

import pytest
import torch

from rl_relax.variance import OnlineGradientVariance, sampled_log_variance


def test_sampled_log_variance_is_the_mean_log_of_per_parameter_sample_variances():
    grads = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 16.0]])
    # per-parameter sample variances (ddof 1): [4, 12]
    assert sampled_log_variance(grads) == pytest.approx((math.log(4.0) + math.log(12.0)) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        sampled_log_variance(grads[:1])


def test_online_estimate_tracks_a_known_variance():
    torch.manual_seed(0)
    stds = torch.tensor([0.1, 1.0, 5.0])
    tracker = OnlineGradientVariance(3, decay=0.99)
    assert math.isnan(tracker.log_variance())
    for _ in range(3000):
        tracker.update(torch.randn(3) * stds + torch.tensor([1.0, -2.0, 0.5]))
    expected = torch.log(stds.square()).mean().item()
    # An EMA with decay 0.99 averages ~200 samples: log-variance error ~ sqrt(2/200) per parameter.
    assert tracker.log_variance() == pytest.approx(expected, abs=0.3)
    # Power: a tracker fed 10x the noise reports ~log(100) more.
    louder = OnlineGradientVariance(3, decay=0.99)
    for _ in range(3000):
        louder.update(torch.randn(3) * stds * 10)
    assert louder.log_variance() - tracker.log_variance() == pytest.approx(math.log(100.0), abs=0.5)


def test_online_estimate_is_bias_corrected_early():
    tracker = OnlineGradientVariance(1, decay=0.99)
    tracker.update(torch.tensor([1.0]))
    tracker.update(torch.tensor([3.0]))
    # Two samples, bias-corrected weights ~(0.497, 0.503): variance ~1, not the ~0.02 of raw EMAs.
    assert tracker.log_variance() == pytest.approx(0.0, abs=0.05)


def test_online_state_round_trip():
    a = OnlineGradientVariance(2)
    for x in ([1.0, 2.0], [2.0, 0.0], [0.0, 1.0]):
        a.update(torch.tensor(x))
    b = OnlineGradientVariance(2)
    b.load_state_dict(a.state_dict())
    assert b.log_variance() == a.log_variance() and b.count == 3
