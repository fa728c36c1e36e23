r"""Variance anatomy: where the per-step policy gradient's variance comes from, at the current policy.

Tucker et al. 2018 ("The Mirage of Action-Dependent Baselines") split the variance of the per-step
estimator g_t by the law of total variance into

    Var(g) = Sigma_s + Sigma_a + Sigma_tau
    Sigma_s   = Var_s(E[g | s])                  the state: the same for every unbiased estimator
    Sigma_a   = E_s[Var_a(E[g | s, a])]          the action: the only part a baseline or control variate changes
    Sigma_tau = E_{s,a}[Var_tau(g | s, a)]       the rest of the trajectory: no baseline touches it

each a per-parameter variance, summarised here as the mean over the policy parameters (shares and
"removed" fractions are ratios of these means). "a" is everything the estimator draws with the
action at step t (RELAX's u and v, LAX's eps), "tau" everything after it (later actions, the env's
own randomness) up to the rollout boundary.

**What g_t is.** The per-step term of the training update, g_hat = (1/(T N)) sum_t valid_t g_t, for
the advantage estimator training uses: GAE(lambda) / n-step returns cut at episode ends and
bootstrapped with the learned V at the rollout boundary, T - t steps after slot t (t uniform over the
rollout's T positions). With episode batches (``learner.batch=episodes``, the RELAX paper's discrete
protocol) it is the Monte Carlo return to the end of the state's episode, never bootstrapped, as
:func:`rl_relax.returns.monte_carlo` computes it in training: each continuation then runs until its
episode terminates or reaches the time limit (a truncation counts as the end, as in training).
g_t is computed through the public estimator interface (:meth:`Estimator.gradient` on a one-step
:class:`RolloutBatch`). Four estimators are decomposed on
the same samples:

- ``no_baseline``: grad log pi(a|s) * R_t (the score function with the TD(lambda) return R_t, the Monte
  Carlo return with episode batches);
- ``learned_value``: grad log pi(a|s) * (R_t - V(s)) (the A2C estimator);
- ``estimator``: the run's estimator with its full control variate (V + c_phi for LAX/RELAX/DLAX);
- ``exact_value``: grad log pi(a|s) * (R_t - V*(s)) with V*(s) = E[R_t | s], what a perfect critic
  would give as a baseline (the bootstrap inside R_t stays the learned V).

Every estimator here is affine in the advantage: g = psi * A + r with psi = grad log pi(a|s) and r
not depending on A (checked on the first sample; an estimator that is not gets a clear error), so
g at a continuation's advantage A_l is r + psi A_l, and E_tau[g | s, a] = r + psi * mean(A).

**Nested Monte Carlo.** M states, each from its own on-policy stream (reset, then the frozen policy
for a uniform number of steps in [B, 2B), B the env's time limit by default), so states are
independent draws from (approximately) the state distribution of training's rollouts; at each state
K actions (with the estimator's noise); after each (state, action) L independent continuations,
restarted from the saved simulator state (:mod:`rl_relax.env_state`) with fresh env randomness.

**Unbiased estimators** (per parameter; g_{mkl} is the estimate at state m, action k, continuation l;
s2 is the sample variance with divisor n - 1):

- Sigma_tau_hat = mean_m mean_k s2_l(g_mkl): each s2_l is unbiased for Var_tau(g | s, a).
- Sigma_a_hat = mean_m [s2_k(gbar_mk) - mean_k s2_l(g_mkl) / L], gbar_mk = mean_l g_mkl. The sample
  variance of the inner means overstates Var_a(E[g|s,a]) by E_a[Var_tau]/L (each gbar_mk carries its
  continuations' noise); the second term removes exactly that (the inner-variance correction).
- Sigma_s_hat = s2_m(gbar_m) - mean_m s2_k(gbar_mk) / K, gbar_m = mean_k gbar_mk. Likewise
  Var(gbar_m | s) = Var(gbar_mk | s) / K is removed. Unbiased because the M states are independent.
- exact_value's Sigma_a = E_s[E_a[psi^2 (Q - V*)^2] - (E_a[psi Q])^2] with Q(s, a) = E[R | s, a] and
  V* = E_a Q, estimated without plugging in a noisy V*: U-statistics over distinct continuations
  (for Q^2) and distinct actions (for products of Q's and V*), each an unbiased product of
  independent factors (:func:`exact_value_action_variance`). Its Sigma_tau is no_baseline's (a
  state-only baseline does not change it).
- Sigma_s is the same quantity for every unbiased estimator (they share E[g | s]); each of the four is
  estimated, and every row reports the one with the smallest standard error.

Shares, ratios and "removed" fractions are ratios of unbiased estimates (consistent, not unbiased).
An unbiased estimate of a small variance can be slightly negative; it is reported as it is.

**Cost** in env steps: M * U[B, 2B) for the states (mean 1.5 M B) plus M K L * (continuation length
<= T - t, mean <= (T + 1) / 2; with episode batches, the steps left in the state's episode); and
(K + K) M one-sample gradient evaluations. With the defaults
(M = 64, K = 8, L = 8) on CartPole (T = 5, B = 500): about 48,000 + 12,000 env steps. An env restored
by replay (:class:`rl_relax.env_state.ActionReplay`: Box2D) adds M K L times the sampled states' mean
episode step (each continuation replays its state's episode); the reported env steps include them.

The probe never touches the training run's environments or random streams: it builds its own envs
and draws from its own generator. The policy, V and c_phi are only read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rl_relax.env_state import EnvSnapshot, make_restorable_env, restore_state, save_state
from rl_relax.errors import ConfigError
from rl_relax.estimators.base import Estimator, RolloutBatch
from rl_relax.estimators.baseline import BaselineEstimator
from rl_relax.networks import Policy, ValueNet
from rl_relax.returns import gae, monte_carlo

VARIANTS = ("no_baseline", "learned_value", "estimator", "exact_value")
VARIANT_LABELS = {
    "no_baseline": "no baseline",
    "learned_value": "learned V(s)",
    "estimator": "estimator's full control variate",
    "exact_value": "exact V(s) (Monte Carlo)",
}
NORMALIZER_EPSILON = 1e-8  # gymnasium's NormalizeObservation / NormalizeReward default


# ----------------------------------------------------------------------------------------- the estimators
def inner_variance_of_mean(inner_variance: torch.Tensor, count: int) -> torch.Tensor:
    """Var(mean of ``count`` i.i.d. draws) estimated from their sample variance: s2 / count.

    The correction that keeps nested Monte Carlo unbiased: the spread of inner means contains it.
    """
    return inner_variance / count


def state_terms(g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-state pieces of the decomposition from g of shape (K, L, P) (actions, continuations, parameters).

    Returns per parameter: ``mean`` gbar_m, ``trajectory`` mean_k s2_l(g), ``action`` s2_k(gbar_k) -
    trajectory / L, ``mean_variance`` s2_k(gbar_k) / K (the noise of gbar_m given s).
    """
    num_actions, num_continuations = g.shape[0], g.shape[1]
    if num_actions < 2 or num_continuations < 2:
        raise ValueError("need at least 2 actions and 2 continuations per state")
    inner_means = g.mean(1)
    trajectory = g.var(1).mean(0)
    between = inner_means.var(0)
    return {
        "mean": inner_means.mean(0),
        "trajectory": trajectory,
        "action": between - inner_variance_of_mean(trajectory, num_continuations),
        "mean_variance": inner_variance_of_mean(between, num_actions),
    }


def exact_value_action_variance(score: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """Unbiased estimate of Var_a(psi(a) (Q(s, a) - V*(s))) at one state, per parameter.

    score: (K, P) psi_k = grad log pi(a_k|s); advantages: (K, L) continuation returns (any shift by a
    constant of the state gives the same result). With Rbar_k the mean over l, S = sum_k Rbar_k,
    S2 = sum_k Rbar_k^2:

        E_a[psi^2 Q^2]        ~ mean_k psi_k^2 [(sum_l R_kl)^2 - sum_l R_kl^2] / (L (L - 1))
        E_a[psi^2 Q] V*       ~ sum_k psi_k^2 Rbar_k (S - Rbar_k) / (K (K - 1))
        E_a[psi^2] V*^2       ~ sum_k psi_k^2 [(S - Rbar_k)^2 - (S2 - Rbar_k^2)] / (K (K - 1) (K - 2))
        (E_a[psi Q])^2        ~ [(sum_k psi_k Rbar_k)^2 - sum_k (psi_k Rbar_k)^2] / (K (K - 1))

    and the result is the first - 2 * second + third - fourth. Each line averages products of
    independent factors (distinct continuations or distinct actions), hence is unbiased; plugging in
    V* ~ mean_k Rbar_k instead would not be. Needs K >= 3 and L >= 2.
    """
    k, n = advantages.shape
    if k < 3 or n < 2:
        raise ValueError("the exact-V estimate needs at least 3 actions and 2 continuations per state")
    a = advantages.to(score.dtype)
    sq = score.square()
    r_sum, r_sq_sum = a.sum(1), a.square().sum(1)
    q_squared = (r_sum.square() - r_sq_sum) / (n * (n - 1))  # (K,) unbiased for Q_k^2
    rbar = r_sum / n
    total, total_sq = rbar.sum(), rbar.square().sum()
    others = total - rbar  # sum over j != k
    psi2_q2 = (sq * q_squared[:, None]).mean(0)
    psi2_q_v = (sq * (rbar * others)[:, None]).sum(0) / (k * (k - 1))
    pairs_of_others = others.square() - (total_sq - rbar.square())  # sum over distinct i, j != k of R_i R_j
    psi2_v2 = (sq * pairs_of_others[:, None]).sum(0) / (k * (k - 1) * (k - 2))
    weighted = score * rbar[:, None]
    mean_psi_q_sq = (weighted.sum(0).square() - weighted.square().sum(0)) / (k * (k - 1))
    return psi2_q2 - 2.0 * psi2_q_v + psi2_v2 - mean_psi_q_sq


@dataclass
class Term:
    """One term: the mean over parameters of the per-parameter estimates, its standard error, and those estimates."""

    value: float
    stderr: float
    per_parameter: torch.Tensor | None = None  # (P,) the unbiased estimate for each policy parameter (float64)


@dataclass
class Decomposition:
    """Sigma_s, Sigma_a and Sigma_tau of one estimator (means over parameters, per step)."""

    state: Term
    action: Term
    trajectory: Term

    @property
    def total(self) -> float:
        return self.state.value + self.action.value + self.trajectory.value

    def shares(self) -> dict[str, float]:
        total = self.total
        return {
            name: (getattr(self, name).value / total if total > 0 else math.nan)
            for name in ("state", "action", "trajectory")
        }


def _term(per_state: torch.Tensor) -> Term:
    """Mean over states (and parameters) of per-state contributions (M, P), with its standard error."""
    per_state = per_state.double()
    per_state_mean = per_state.mean(1)
    m = per_state_mean.shape[0]
    stderr = per_state_mean.std().item() / math.sqrt(m) if m > 1 else math.nan
    return Term(per_state_mean.mean().item(), stderr, per_state.mean(0))


def decompose(per_state: list[dict[str, torch.Tensor]]) -> Decomposition:
    """Combine :func:`state_terms` of M independent states into unbiased Sigma_s, Sigma_a, Sigma_tau.

    Sigma_s = s2_m(gbar_m) - mean_m s2_k(gbar_mk) / K is written as the mean of per-state
    contributions (M / (M - 1)) (gbar_m - gbar)^2 - mean_variance_m, so that it gets a standard error
    like the other two terms.
    """
    m = len(per_state)
    if m < 2:
        raise ValueError("need at least 2 states")
    means = torch.stack([s["mean"] for s in per_state]).double()
    spread = (means - means.mean(0)).square() * (m / (m - 1))
    state = spread - torch.stack([s["mean_variance"] for s in per_state]).double()
    return Decomposition(
        state=_term(state),
        action=_term(torch.stack([s["action"] for s in per_state])),
        trajectory=_term(torch.stack([s["trajectory"] for s in per_state])),
    )


@dataclass
class StateSamples:
    """What the nested Monte Carlo gives at one state, for the four estimators.

    score (K, P): psi_k = grad log pi(a_k|s); rest (K, P): the run's estimator at advantage 0;
    advantages (K, L): R_kl - V(s) per continuation; value: V(s).
    """

    score: torch.Tensor
    rest: torch.Tensor
    advantages: torch.Tensor
    value: float


@dataclass
class AnatomyResult:
    """The decomposition of each estimator, the removed fractions of Sigma_a, and the cost."""

    decompositions: dict[str, Decomposition]
    num_states: int
    num_actions: int
    num_continuations: int
    env_steps: int
    seconds: float
    num_parameters: int
    extras: dict[str, Any] = field(default_factory=dict)

    def removed(self) -> dict[str, float]:
        """Fraction of the no-baseline Sigma_a that each baseline removes, and the cv's beyond the learned V."""
        d = self.decompositions
        none = d["no_baseline"].action.value

        def frac(a: float, b: float) -> float:
            return 1.0 - a / b if b > 0 else math.nan

        return {
            "learned_value": frac(d["learned_value"].action.value, none),
            "estimator": frac(d["estimator"].action.value, none),
            "exact_value": frac(d["exact_value"].action.value, none),
            "estimator_beyond_value": frac(d["estimator"].action.value, d["learned_value"].action.value),
        }

    def scalars(self) -> dict[str, float]:
        """TensorBoard scalars (prefix ``variance/``), as documented in the README."""
        d = self.decompositions
        est = d["estimator"]
        shares = est.shares()
        removed = self.removed()
        return {
            "variance/state": est.state.value,
            "variance/action": est.action.value,
            "variance/trajectory": est.trajectory.value,
            "variance/total": est.total,
            "variance/share_state": shares["state"],
            "variance/share_action": shares["action"],
            "variance/share_trajectory": shares["trajectory"],
            "variance/action_no_baseline": d["no_baseline"].action.value,
            "variance/action_learned_value": d["learned_value"].action.value,
            "variance/action_exact_value": d["exact_value"].action.value,
            "variance/action_removed_by_value": removed["learned_value"],
            "variance/action_removed_by_cv": removed["estimator"],
            "variance/action_removed_by_cv_beyond_value": removed["estimator_beyond_value"],
            "variance/action_removed_by_exact_value": removed["exact_value"],
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per estimator: the three terms with standard errors, total, shares, removed fraction."""
        removed = self.removed()
        removed["no_baseline"] = 0.0
        rows = []
        for name in VARIANTS:
            dec = self.decompositions[name]
            shares = dec.shares()
            rows.append({
                "variant": name, "state": dec.state.value, "state_se": dec.state.stderr,
                "action": dec.action.value, "action_se": dec.action.stderr,
                "trajectory": dec.trajectory.value, "trajectory_se": dec.trajectory.stderr, "total": dec.total,
                "share_state": shares["state"], "share_action": shares["action"],
                "share_trajectory": shares["trajectory"], "action_removed": removed[name],
            })  # fmt: skip
        return rows


def decompose_samples(samples: list[StateSamples], advantage_map: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    """The four estimators' decompositions from the nested samples.

    ``advantage_map`` turns raw advantages R - V(s) into the ones training uses (the identity, or the
    fixed standardisation (A - mu) / sigma when ``learner.normalize_advantage`` is on); its scale is
    also applied to the no-baseline return R = A + V(s).
    """
    per_variant: dict[str, list[dict[str, torch.Tensor]]] = {name: [] for name in VARIANTS}
    exact_action: list[torch.Tensor] = []
    for s in samples:
        adv = advantage_map(s.advantages).to(s.score.dtype)
        ret = adv - advantage_map(torch.zeros(())).to(s.score.dtype) + s.value * _scale(advantage_map)
        psi = s.score[:, None, :]
        per_variant["no_baseline"].append(state_terms(psi * ret[:, :, None]))
        per_variant["learned_value"].append(state_terms(psi * adv[:, :, None]))
        per_variant["estimator"].append(state_terms(s.rest[:, None, :] + psi * adv[:, :, None]))
        exact_action.append(exact_value_action_variance(s.score, adv))
    out = {name: decompose(terms) for name, terms in per_variant.items() if name != "exact_value"}
    # Sigma_s is one quantity for every unbiased estimator (E[g | s] is theirs alike): every row shows the
    # most precise of its estimates (usually the learned V's, whose gbar_m carry the least noise).
    state = min((d.state for d in out.values()), key=lambda t: t.stderr if math.isfinite(t.stderr) else math.inf)
    out = {name: Decomposition(state, d.action, d.trajectory) for name, d in out.items()}
    out["exact_value"] = Decomposition(state, _term(torch.stack(exact_action)), out["no_baseline"].trajectory)
    return out


def _scale(advantage_map: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The multiplicative part of an affine advantage map."""
    return float(advantage_map(torch.ones(())) - advantage_map(torch.zeros(())))


# ----------------------------------------------------------------------------------------- per-sample gradients
def one_step_batch(policy: Policy, obs: torch.Tensor, action: torch.Tensor, advantage: float,
                   noise: dict[str, torch.Tensor], episode_step: int,
                   value: float | None = None) -> RolloutBatch:  # fmt: skip
    """One valid step as a (T = 1, N = 1) rollout with weight 1, so that g_hat is the per-step term g_t
    (``value``: V(s), for estimators whose control variate reads it)."""
    dist_params = policy(obs[None])
    actions = action[None]
    return RolloutBatch(
        obs=obs[None], actions=actions, advantages=torch.full((1,), float(advantage)),
        valid=torch.ones(1, dtype=torch.bool), terminated=torch.zeros(1, dtype=torch.bool),
        truncated=torch.zeros(1, dtype=torch.bool), episode_step=torch.full((1,), int(episode_step)),
        dist_params=dist_params, log_prob=policy.log_prob(dist_params, actions),
        noise={k: v[None] for k, v in noise.items()}, policy=policy,
        theta_net=list(policy.net.parameters()), theta_direct=policy.direct_parameters(),
        step_weights=torch.ones(1), num_envs=1, state_values=None if value is None else torch.full((1,), float(value)),
    )  # fmt: skip


class AffinityError(ConfigError):
    """The estimator's per-step gradient is not affine in the advantage."""


def per_sample_gradients(policy: Policy, estimator: Estimator, obs: torch.Tensor, actions: torch.Tensor,
                         noise: dict[str, torch.Tensor], episode_step: int, check_affine: bool = False,
                         value: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """psi_k (the score function at advantage 1) and r_k (the estimator at advantage 0) for K actions at one state.

    With ``check_affine`` the estimator at advantage 2.5 is compared with r + 2.5 psi (an
    :class:`AffinityError` if they differ), which is what E_tau[g | s, a] = r + psi mean(A) relies on.
    """
    score_estimator = BaselineEstimator(name="score")
    scores, rests = [], []
    for k in range(actions.shape[0]):
        noise_k = {key: value[k] for key, value in noise.items()}
        batch = one_step_batch(policy, obs, actions[k], 1.0, noise_k, episode_step, value)
        scores.append(score_estimator.gradient(batch))
        rests.append(estimator.gradient(one_step_batch(policy, obs, actions[k], 0.0, noise_k, episode_step, value)))
        if check_affine and k == 0:
            direct = estimator.gradient(one_step_batch(policy, obs, actions[k], 2.5, noise_k, episode_step, value))
            affine = rests[0] + 2.5 * scores[0]
            scale = affine.abs().max().clamp_min(1e-6)
            if not torch.allclose(direct, affine, rtol=1e-4, atol=1e-5 * float(scale)):
                raise AffinityError(
                    f"estimator {estimator.name!r}: its per-step gradient is not grad log pi(a|s) * A + (terms "
                    "without A), which the variance anatomy relies on to average over continuations. Fix: "
                    "use the advantage only as the score function's weight (rl_relax.surrogates)."
                )
    return torch.stack(scores).detach(), torch.stack(rests).detach()


# ----------------------------------------------------------------------------------------- the probe
@dataclass
class AnatomyConfig:
    """How many samples: M states, K actions per state, L continuations per (state, action)."""

    num_states: int = 64
    num_actions: int = 8
    num_continuations: int = 8
    burn_in_steps: int | None = None  # B: each state's stream runs U[B, 2B) steps; None = the env's time limit
    seed: int = 0

    def check(self) -> None:
        for name, low in (("num_states", 2), ("num_actions", 3), ("num_continuations", 2)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"variance anatomy: {name}={value!r} must be an integer >= {low}. Fix: e.g. 8.")
        if self.burn_in_steps is not None and self.burn_in_steps < 1:
            raise ConfigError(f"variance anatomy: burn_in_steps={self.burn_in_steps} must be >= 1 (or None).")


@dataclass
class _Slot:
    """A sampled state: simulator snapshot, raw observation, episode step, and steps to the rollout boundary."""

    snapshot: EnvSnapshot
    obs: np.ndarray
    episode_step: int
    horizon: int


class VarianceAnatomy:
    """The decomposition probe at the current (frozen) policy, value function and control variate.

    Args:
        env_cfg: the run's ``env`` config (a restorable env, :mod:`rl_relax.env_state`).
        learner_cfg: the run's ``learner`` config (gamma, gae_lambda, num_steps, normalize_advantage).
        policy, value, estimator: the run's, only read.
        config: M, K, L, burn-in and the probe's own seed.

    :meth:`measure` takes the run's frozen normalisation statistics (``VectorEnvHandle.normalizer_state()``)
    and an optional ``progress(done, total)`` callback; :meth:`close` closes the probe's envs.
    """

    def __init__(self, env_cfg: Any, learner_cfg: Any, policy: Policy, value: ValueNet, estimator: Estimator,
                 config: AnatomyConfig | None = None):  # fmt: skip
        self.config = config or AnatomyConfig()
        self.config.check()
        self.env_cfg, self.policy, self.value, self.estimator = env_cfg, policy, value, estimator
        self.gamma, self.gae_lambda = float(learner_cfg.gamma), float(learner_cfg.gae_lambda)
        self.num_steps = int(learner_cfg.num_steps)
        # Episode batches: Monte Carlo returns to the episode's end (the continuation's horizon is the time limit).
        self.monte_carlo = str(learner_cfg.get("batch", "steps")) == "episodes"
        self.normalize_advantage = bool(learner_cfg.get("normalize_advantage", False))
        self._envs: list = []
        self.time_limit: int | None = None
        self._open_envs(1)  # fails early, with the reason, for an env that cannot be restored
        if self.monte_carlo and self.time_limit is None:
            raise ConfigError(
                f"variance anatomy: learner.batch=episodes runs each continuation to its episode's end, but "
                f"{env_cfg.id} has no time limit. Fix: env.make_kwargs.max_episode_steps=<steps>."
            )

    # ------------------------------------------------------------------ envs and normalisation
    def _open_envs(self, count: int) -> None:
        while len(self._envs) < count:
            env, self.time_limit = make_restorable_env(self.env_cfg)
            env.reset(seed=len(self._envs))  # wrappers insist on a reset before the first step; restores follow
            self._envs.append(env)

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs = []

    def _normalizers(self, state: dict) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
        obs_stats = state.get("obs")
        reward_stats = state.get("reward")
        if obs_stats is not None:
            mean = obs_stats["mean"].numpy()
            std = np.sqrt(obs_stats["var"].numpy() + NORMALIZER_EPSILON)
        reward_scale = 1.0
        if reward_stats is not None:
            reward_scale = float(1.0 / np.sqrt(reward_stats["var"].numpy() + NORMALIZER_EPSILON))

        def normalize(obs: np.ndarray) -> np.ndarray:
            obs = np.asarray(obs, dtype=np.float64).reshape(obs.shape[0], -1)
            return ((obs - mean) / std if obs_stats is not None else obs).astype(np.float32)

        return normalize, reward_scale

    # ------------------------------------------------------------------ sampling
    def _sample_states(self, rng: np.random.Generator, normalize) -> tuple[list[_Slot], int]:
        """M independent states: one stream each, U[B, 2B) on-policy steps after a seeded reset."""
        cfg = self.config
        burn_in = cfg.burn_in_steps or self.time_limit or 1000
        slots: list[_Slot] = []
        steps = 0
        chunk = len(self._envs)
        while len(slots) < cfg.num_states:
            envs = self._envs[: min(chunk, cfg.num_states - len(slots))]
            lengths = rng.integers(burn_in, 2 * burn_in, size=len(envs))
            obs = np.stack([env.reset(seed=int(rng.integers(2**31)))[0] for env in envs]).reshape(len(envs), -1)
            episode_step = np.zeros(len(envs), dtype=np.int64)
            for t in range(int(lengths.max())):
                active = np.flatnonzero(lengths > t)
                actions = self.policy.env_action(self.policy.act(normalize(obs[active]), rng).action)
                for i, a in zip(active, actions, strict=True):
                    next_obs, _, terminated, truncated, _ = envs[i].step(a)
                    episode_step[i] += 1
                    steps += 1
                    if terminated or truncated or (self.time_limit and episode_step[i] >= self.time_limit):
                        next_obs, _ = envs[i].reset(seed=int(rng.integers(2**31)))
                        episode_step[i] = 0
                    obs[i] = np.asarray(next_obs).reshape(-1)
            for i, env in enumerate(envs):
                horizon = self.num_steps - int(rng.integers(self.num_steps))  # T - t, t uniform in [0, T)
                if self.monte_carlo:  # to the end of the episode: at the latest, the time limit
                    horizon = int(self.time_limit) - int(episode_step[i])
                slots.append(_Slot(save_state(env), obs[i].copy(), int(episode_step[i]), horizon))
        return slots, steps

    def _continuations(self, slot: _Slot, actions: np.ndarray, rng: np.random.Generator, normalize,
                       reward_scale: float) -> tuple[np.ndarray, float, int]:  # fmt: skip
        """R_kl - V(s) for K actions x L continuations from ``slot`` (GAE, or Monte Carlo returns, as in
        training), V(s), env steps."""
        k_count, l_count = actions.shape[0], self.config.num_continuations
        n = k_count * l_count
        self._open_envs(n)
        envs = self._envs[:n]
        first = np.repeat(self.policy.env_action(actions), l_count, axis=0)
        replayed = sum(getattr(env, "replayed_steps", 0) for env in envs)
        for env in envs:
            restore_state(env, slot.snapshot, rng=rng)
        steps = sum(getattr(env, "replayed_steps", 0) for env in envs) - replayed  # restores by replay cost steps
        obs = [np.repeat(slot.obs[None], n, axis=0)]  # raw observations, step 0 = the state itself
        rewards = np.zeros((slot.horizon, n), dtype=np.float32)
        terminated = np.zeros((slot.horizon, n), dtype=bool)
        truncated = np.zeros((slot.horizon, n), dtype=bool)
        alive = np.ones(n, dtype=bool)
        for j in range(slot.horizon):
            # The sampled action first, then the policy's own (the same frozen policy, fresh noise).
            policy_actions = None if j == 0 else self.policy.act(normalize(obs[-1]), rng).action
            step_actions = first if policy_actions is None else self.policy.env_action(policy_actions)
            next_obs = obs[-1].copy()
            for i in np.flatnonzero(alive):
                o, r, term, trunc, _ = envs[i].step(step_actions[i])
                steps += 1
                rewards[j, i] = float(r) * reward_scale
                terminated[j, i] = bool(term)
                limit_hit = self.time_limit is not None and slot.episode_step + j + 1 >= self.time_limit
                truncated[j, i] = bool(trunc) or (limit_hit and not term)
                next_obs[i] = np.asarray(o).reshape(-1)
            obs.append(next_obs)
            # After an episode ends GAE cuts the recursion: later slots are masked out (valid = 0).
            alive &= ~(terminated[j] | truncated[j])
        valid = np.ones((slot.horizon, n), dtype=bool)
        valid[1:] = np.logical_and.accumulate(~(terminated | truncated), axis=0)[:-1]
        with torch.no_grad():
            flat = torch.from_numpy(normalize(np.concatenate(obs)))
            if getattr(self.value, "uses_time", False):  # value.time_input / horizon_aware: positions t + j
                positions = torch.from_numpy(np.repeat(slot.episode_step + np.arange(slot.horizon + 1), n))
                values = self.value(flat, positions).numpy().reshape(slot.horizon + 1, n)
            else:
                values = self.value(flat).numpy().reshape(slot.horizon + 1, n)
        if self.monte_carlo:  # the horizon is the time limit: every continuation's episode ends within it
            advantages, _ = monte_carlo(rewards, values[:-1], (terminated | truncated) & valid, valid, self.gamma)
        else:
            advantages, _ = gae(rewards, values[:-1], values[-1], terminated & valid, truncated & valid, valid,
                                gamma=self.gamma, gae_lambda=self.gae_lambda)  # fmt: skip
        return advantages[0].reshape(k_count, l_count), float(values[0, 0]), steps

    # ------------------------------------------------------------------ the measurement
    def measure(self, normalizer_state: dict | None = None,
                progress: Callable[[int, int], None] | None = None) -> AnatomyResult:  # fmt: skip
        """One decomposition at the current parameters (nothing is trained or changed)."""
        start = time.perf_counter()
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 0x5A5A])
        normalize, reward_scale = self._normalizers(normalizer_state or {})
        self._open_envs(cfg.num_actions * cfg.num_continuations)  # one per continuation, also the state streams
        with self.policy.net.parameters_fixed():  # acting checks the parameters once, not every step
            slots, steps = self._sample_states(rng, normalize)
        noise_keys = self.estimator.noise_keys
        samples: list[StateSamples] = []
        for m, slot in enumerate(slots):
            obs_np = normalize(np.repeat(slot.obs[None], cfg.num_actions, axis=0))
            out = self.policy.act(obs_np, rng)
            noise = {key: out.noise[key] for key in noise_keys}
            noise.update(self.estimator.extra_noise(out.action, rng))
            with self.policy.net.parameters_fixed():
                advantages, value, used = self._continuations(slot, out.action, rng, normalize, reward_scale)
            steps += used
            score, rest = per_sample_gradients(
                self.policy, self.estimator, torch.from_numpy(obs_np[0]), torch.from_numpy(out.action),
                {key: torch.from_numpy(np.asarray(v)) for key, v in noise.items()}, slot.episode_step,
                check_affine=m == 0, value=value,
            )  # fmt: skip
            samples.append(StateSamples(score, rest, torch.from_numpy(advantages).double(), value))
            if progress is not None:
                progress(m + 1, len(slots))
        advantage_map = self._advantage_map(samples)
        decompositions = decompose_samples(samples, advantage_map)
        num_parameters = samples[0].score.shape[1]
        return AnatomyResult(
            decompositions, cfg.num_states, cfg.num_actions, cfg.num_continuations, steps,
            time.perf_counter() - start, num_parameters,
            extras={"burn_in_steps": cfg.burn_in_steps or self.time_limit or 1000, "time_limit": self.time_limit},
        )  # fmt: skip

    def _advantage_map(self, samples: list[StateSamples]) -> Callable[[torch.Tensor], torch.Tensor]:
        """Identity, or (A - mu) / sigma with mu, sigma over all sampled advantages (learner.normalize_advantage).

        Training standardises with each batch's own statistics; here they are fixed at their values
        on the probe's on-policy samples, so the decomposition is that of the standardised estimator
        without the batch-to-batch fluctuation of mu and sigma.
        """
        if not self.normalize_advantage:
            return lambda a: a
        pooled = torch.cat([s.advantages.reshape(-1) for s in samples])
        mu, sigma = pooled.mean().item(), pooled.std().item() + 1e-8
        return lambda a: (a - mu) / sigma
