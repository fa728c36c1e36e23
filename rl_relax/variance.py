"""Gradient-variance measurement, identical for every estimator so that curves overlay.

Both measures summarise per-parameter variances of the estimator's gradient g (with respect to all
policy parameters, entropy and value terms excluded, before clipping) as the mean over parameters
of log Var(g_p), the convention of the RELAX paper's plots and code:

- online (``grad/log_variance``, every update, cheap): exponential moving averages of g and g^2 with
  decay beta, bias-corrected like Adam's moments, Var = E[g^2] - E[g]^2. The policy moves while the
  averages accumulate, so this tracks the variance along training rather than at one policy.
- sampled (``grad/log_variance_sampled``, the paper's protocol): with the policy and control
  variate frozen, K independent fresh batches give K gradients; Var is their per-parameter sample
  variance. Computing the baseline estimator's gradient on the same batches gives the variance
  reduction at the same policy.

Variances are floored at 1e-30 before the log so that a parameter with no gradient cannot make the
mean -inf.
"""

from __future__ import annotations

import math

import torch

VARIANCE_FLOOR = 1e-30


class OnlineGradientVariance:
    """Per-parameter EMA estimate of Var(g) along training."""

    def __init__(self, size: int, decay: float = 0.99, device: torch.device | str = "cpu"):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.mean = torch.zeros(size, device=device)
        self.mean_sq = torch.zeros(size, device=device)
        self.count = 0

    def update(self, g: torch.Tensor) -> None:
        self.mean.mul_(self.decay).add_(g, alpha=1.0 - self.decay)
        self.mean_sq.mul_(self.decay).addcmul_(g, g, value=1.0 - self.decay)
        self.count += 1

    def log_variance(self) -> float:
        """Mean over parameters of log(E[g^2] - E[g]^2); nan before two updates."""
        if self.count < 2:
            return math.nan
        correction = 1.0 - self.decay**self.count
        var = self.mean_sq / correction - (self.mean / correction).square()
        return torch.log(var.clamp_min(VARIANCE_FLOOR)).mean().item()

    def state_dict(self) -> dict:
        return {"mean": self.mean, "mean_sq": self.mean_sq, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean.copy_(state["mean"])
        self.mean_sq.copy_(state["mean_sq"])
        self.count = int(state["count"])


def sampled_log_variance(grads: torch.Tensor) -> float:
    """Mean over parameters of the log of the per-parameter sample variance of K gradients (K, P)."""
    if grads.shape[0] < 2:
        raise ValueError("need at least two gradient samples")
    return torch.log(grads.var(dim=0, unbiased=True).clamp_min(VARIANCE_FLOOR)).mean().item()


class SampledVarianceProbe:
    """The paper's protocol: K fresh rollouts at the current (frozen) policy and control variate.

    The rollouts come from a separate copy of the vector env with its own acting-noise generator,
    so measuring never changes the training run's environments or random streams. Each rollout
    gives every compared estimator's gradient on the same data; the per-parameter sample variances
    over the K rollouts are summarised by :func:`sampled_log_variance`.
    """

    def __init__(self, env_handle, collector, learner, estimators: dict):
        self.env, self.collector, self.learner, self.estimators = env_handle, collector, learner, estimators

    def measure(self, num_batches: int, normalizer_state: dict) -> dict[str, float]:
        self.env.load_normalizer_state(normalizer_state)
        self.env.freeze_normalizers()
        samples: dict[str, list[torch.Tensor]] = {name: [] for name in self.estimators}
        for _ in range(num_batches):
            self.collector.collect()
            for name, g in self.learner.estimator_gradients(self.collector.buffer, self.estimators).items():
                samples[name].append(g)
        logs = {name: sampled_log_variance(torch.stack(gs)) for name, gs in samples.items()}
        out = {"grad/log_variance_sampled": logs["estimator"]}
        if "baseline" in logs:
            out["grad/log_variance_sampled_baseline"] = logs["baseline"]
            # Geometric mean over parameters of Var(estimator) / Var(baseline), at the same policy.
            out["grad/variance_ratio_sampled"] = math.exp(logs["estimator"] - logs["baseline"])
        return out

    def close(self) -> None:
        self.env.close()
