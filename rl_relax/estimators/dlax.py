"""DLAX: LAX for discrete actions through their Gumbel relaxation (Grathwohl et al. 2018, Sec. 3.2)."""

from __future__ import annotations

import torch

from rl_relax.estimators.base import RolloutBatch
from rl_relax.estimators.gumbel_relaxation import GumbelRelaxationEstimator
from rl_relax.samplers import relaxed_categorical


def gumbel_log_density(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(z | theta) of z = log softmax(logits) + Gumbel(0, 1) noise, summed over the last axis.

    Each z_i is Gumbel(mu_i) with mu = log softmax(logits): log p = sum_i [-(z_i - mu_i) - exp(-(z_i - mu_i))].
    """
    centred = z - torch.log_softmax(logits, dim=-1)
    return -(centred + torch.exp(-centred)).sum(-1)


class DlaxEstimator(GumbelRelaxationEstimator):
    r"""DLAX: the score function of the action plus a control variate on the relaxed action.

    With z_t = log pi(.|s_t) + g(u_t) (u_t stored at acting time) and a_t = argmax z_t:

        g_hat = (1/(T N)) sum_t valid_t [ grad log pi(a_t|s_t) * A_t
                                          - grad log p(z_t|s_t) * c(s_t, z_t) + grad c(s_t, z_t(theta, u_t)) ]

    where c(s, z) = c_phi(s, softmax(z / tau)) with a learned temperature tau, and A_t = R_t - V(s_t)
    (the state part of the control variate). The last two terms have zero mean for any c, because
    E_z[grad log p(z) c(z)] = grad E_z[c(z)] = E_u[grad c(z(theta, u))] (score function = reparameterisation),
    so DLAX is unbiased. Unlike RELAX it needs no conditional sample z~, but its control variate's score
    term uses log p(z) (K Gumbel densities), not log pi(a), which correlates less with f (Sec. 3.2).
    log p(z) is differentiated at the fixed z, c(s, z) in its weight carries no gradient to theta.

    c_phi's inputs besides z are ``cv_inputs`` (:meth:`cv_features`; ``dist_params`` = log pi(.|s_t),
    detached). With ``state_baseline=variance`` the action's score weight is R_t - b_phi(s_t)
    (:meth:`score_offset`) instead of A_t.
    """

    def _parts(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The action's score term, the control variate's score term and its pathwise term, per step."""
        logits, features = batch.dist_params, self.cv_features(batch)
        z = relaxed_categorical(logits, batch.noise["u"])
        # One forward of c for the pathwise c(z) and the score weight c(z) with theta's path cut.
        c = self.relaxed_cv(torch.cat([features, features], -2), torch.cat([z, z.detach()], -2))
        c_z, c_z_fixed = c.split(z.shape[-2], dim=-1)
        offset = self.score_offset(batch, features)
        weight = batch.advantages if offset is None else batch.advantages - offset
        return batch.log_prob * weight, gumbel_log_density(logits, z.detach()) * c_z_fixed, c_z

    def surrogate(self, batch: RolloutBatch) -> torch.Tensor:
        action_score, cv_score, c_z = self._parts(batch)
        return batch.mean(action_score - cv_score + c_z)

    def surrogate_terms(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        action_score, cv_score, c_z = self._parts(batch)
        return {"score": batch.mean(action_score - cv_score), "pathwise": batch.mean(c_z)}

    def control_variate_metrics(self) -> dict[str, float]:
        return {"cv/temperature": self.scalar(self.log_temperature.exp())}
