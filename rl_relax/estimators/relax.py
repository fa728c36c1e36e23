"""RELAX for categorical policies (Grathwohl et al. 2018, Sec. 3.2 and App. C)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from rl_relax import surrogates
from rl_relax.errors import ConfigError
from rl_relax.estimators.base import RolloutBatch
from rl_relax.estimators.gumbel_relaxation import GumbelRelaxationEstimator
from rl_relax.samplers import biased_conditional_gumbel, conditional_gumbel, relaxed_categorical

log = logging.getLogger("rl_relax")

#: ``estimator.conditional_sampler``: the exact p(z | a, theta), or the released RL code's biased one (full name only).
CONDITIONAL_SAMPLERS = ("exact", "biased_released_code")


class RelaxEstimator(GumbelRelaxationEstimator):
    r"""RELAX with the exact conditional Gumbel sampler.

    With z_t = log pi(.|s_t) + g(u_t), a_t = argmax z_t (the executed action, u_t stored at acting
    time) and z~_t ~ p(z | a_t, theta) from stored noise v_t (:func:`rl_relax.samplers.conditional_gumbel`):

        g_hat = (1/(T N)) sum_t valid_t [ grad log pi(a_t|s_t) * (A_t - c(s_t, z~_t))
                                          + grad c(s_t, z_t) - grad c(s_t, z~_t) ]

    where c(s, z) = c_phi(s, softmax(z / tau)) with a learned temperature tau, and
    A_t = R_t - V(s_t) from the shared returns machinery, so the full control variate is
    V + c_phi. The score weight's c(s_t, z~_t) carries no gradient to theta; the two pathwise terms
    differentiate through the samplers (:func:`rl_relax.surrogates.relax`). Unbiased for any c_phi
    because z~ has z's distribution given a (App. A).

    c_phi's inputs besides z are ``cv_inputs`` (:meth:`cv_features`; ``dist_params`` = log pi(.|s_t),
    detached). With ``state_baseline=variance`` the score weight is R_t - b_phi(s_t) - c(s_t, z~_t)
    (:meth:`score_offset`): the full control variate b_phi + c_phi, all trained on the variance
    objective, as in the paper's discrete experiments (where c_phi(s, z) is the only baseline).

    ``conditional_sampler=biased_released_code`` swaps in the released RL code's sampler, which sets
    z~_b = log theta_b + g(v_b) (:func:`rl_relax.samplers.biased_conditional_gumbel`): biased, accepted only
    under that full name, warned about at construction and recorded as ``estimator_bias`` in summary.json.
    It exists to reproduce the paper's CartPole and LunarLander numbers as they were obtained (App. E).
    """

    #: z~ ~ p(z | a, theta); a class attribute so that tests can swap in a deliberately biased sampler.
    conditional_sampler = staticmethod(conditional_gumbel)

    #: Why this estimator is biased (summary.json's ``estimator_bias``); None: it is unbiased.
    bias_note: str | None = None

    def __init__(self, *args, conditional_sampler: str = "exact", **kwargs):
        super().__init__(*args, **kwargs)
        if conditional_sampler not in CONDITIONAL_SAMPLERS:
            raise ConfigError(
                f"estimator.conditional_sampler={conditional_sampler!r} is not one of "
                f"{', '.join(CONDITIONAL_SAMPLERS)} (the released code's biased sampler only by its full name). "
                "Fix: estimator.conditional_sampler=exact."
            )
        self.conditional_sampler_name = conditional_sampler
        if conditional_sampler == "biased_released_code":  # for reproducing the paper's discrete numbers only
            self.conditional_sampler = biased_conditional_gumbel
            self.bias_note = (
                "conditional_sampler=biased_released_code: the released RELAX code's 'slightly biased' conditional "
                "sampler (z~_b = log theta_b + g(v_b)), so the gradient estimate is biased"
            )
            log.warning("estimator %s: BIASED gradient estimates: %s; for reproducing the paper's CartPole and "
                        "LunarLander numbers only", self.name, self.bias_note)  # fmt: skip

    def extra_noise_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"v": (self.num_actions,)}

    def extra_noise(self, action: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        v = rng.random((action.shape[0], self.num_actions), dtype=np.float32)
        return {"v": np.maximum(v, 1e-12, out=v)}

    def control_variates(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """c(s_t, z_t), c(s_t, z~_t) and the score weight's control variate (theta's path cut), per step."""
        logits, features = batch.dist_params, self.cv_features(batch)
        z = relaxed_categorical(logits, batch.noise["u"])
        z_tilde = self.conditional_sampler(logits, batch.actions, batch.noise["v"])
        # One forward of c for c(z), c(z~) and the score weight c(z~) with theta's path cut (rows: dim -2).
        c = self.relaxed_cv(
            torch.cat([features, features, features], -2), torch.cat([z, z_tilde, z_tilde.detach()], -2)
        )
        c_z, c_z_tilde, c_z_tilde_fixed = c.split(z.shape[-2], dim=-1)
        offset = self.score_offset(batch, features)
        return c_z, c_z_tilde, c_z_tilde_fixed if offset is None else c_z_tilde_fixed + offset

    def surrogate(self, batch: RolloutBatch) -> torch.Tensor:
        c_z, c_z_tilde, c_z_tilde_fixed = self.control_variates(batch)
        return batch.mean(surrogates.relax(batch.log_prob, batch.advantages, c_z, c_z_tilde, c_z_tilde_fixed))

    def surrogate_terms(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        c_z, c_z_tilde, c_z_tilde_fixed = self.control_variates(batch)
        score = surrogates.score_function(batch.log_prob, batch.advantages - c_z_tilde_fixed.detach())
        return {"score": batch.mean(score), "pathwise": batch.mean(c_z - c_z_tilde)}

    def control_variate_metrics(self) -> dict[str, float]:
        return {"cv/temperature": self.scalar(self.log_temperature.exp())}
