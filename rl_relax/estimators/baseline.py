"""The classic A2C estimator: a state-value baseline only."""

from __future__ import annotations

import torch

from rl_relax.estimators.base import Estimator, RolloutBatch


class BaselineEstimator(Estimator):
    r"""Score-function estimator with the state-value baseline V(s):

        g_hat = (1 / (T N)) * sum_t valid_t * grad_theta log pi(a_t | s_t) * A_t,

    where A_t = R_t - V(s_t) comes from the shared returns machinery (n-step or GAE(lambda)).
    Unbiased for the policy gradient of the same advantage estimator whatever V is, because V(s_t)
    does not depend on a_t and the normaliser T N is a constant. Any action space.
    """

    def surrogate(self, batch: RolloutBatch) -> torch.Tensor:
        # S = (1 / (T N)) sum_t valid_t A_t log pi(a_t|s_t), the score function's surrogate, with the
        # constant A_t in the weights (surrogates.score_function(log_prob, A) averaged, one product fewer).
        return batch.mean(batch.log_prob, scale=batch.advantages)
