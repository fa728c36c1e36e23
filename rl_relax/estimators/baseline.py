"""The classic A2C estimator: a state-value baseline only."""

from __future__ import annotations

import torch

from rl_relax.estimators.base import Estimator, EstimatorBatch


class BaselineEstimator(Estimator):
    r"""Score-function estimator with the state-value baseline V(s):

        g_hat = (1 / |valid|) * sum_t grad_theta log pi(a_t | s_t) * A_t,

    where A_t = R_t - V(s_t) comes from the shared returns machinery (n-step or GAE(lambda)).
    Unbiased because V(s_t) does not depend on a_t. Surrogate: S = mean_t log pi(a_t|s_t) * A_t
    with A_t treated as a constant. Any action space.
    """

    def surrogate(self, batch: EstimatorBatch) -> torch.Tensor:
        # The weights (valid / num_valid) multiply the constant advantages, not the graph.
        return torch.dot(batch.log_prob, batch.advantages * batch.weights)
