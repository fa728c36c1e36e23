"""Advantages and returns: GAE(lambda) with explicit termination, truncation and validity masks.

All arrays have shape (T, N): T steps of N environments. With gymnasium's NEXT_STEP autoreset the
observation that follows a done step is the episode's *true final observation*, so
``values[t + 1]`` (or ``last_value`` at the end of the rollout) is V(final obs) there:

    delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1},     done_t = terminated_t or truncated_t
    R_t     = A_t + V(s_t)                                           (the TD(lambda) target for V)

- termination: no bootstrap (the episode really ended, future value is 0);
- truncation (time limit): bootstrap with V(true final obs), the episode would have gone on;
- either way the recursion is cut, so nothing leaks across an episode boundary;
- invalid steps (the NEXT_STEP reset transitions) get A_t = 0 and are masked out of every loss.

lambda = 1 gives the n-step Monte Carlo return bootstrapped with V at the end of the rollout
(A2C's classic target); lambda = 0 gives the one-step TD error.

:func:`monte_carlo` is the target of episode batches (``learner.batch=episodes``): the discounted
return to the end of each complete episode, never bootstrapped, a time-limit truncation included.

Computed in NumPy: a T-step recursion over (N,) vectors is a few microseconds there, while each
eager torch op would cost more than the whole arithmetic.
"""

from __future__ import annotations

import numpy as np


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    last_value: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    valid: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates and value targets.

    Args:
        rewards, values: (T, N) float; ``values[t] = V(s_t)``.
        last_value: (N,) V(s_T), the observation after the last step of the rollout.
        terminated, truncated, valid: (T, N) bool.
        gamma: discount in (0, 1]. gae_lambda: in [0, 1].

    Returns:
        (advantages, returns), both (T, N) float32; zero advantages where ``valid`` is False.
    """
    num_steps = rewards.shape[0]
    terminated, truncated = np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    next_values = np.concatenate([values[1:], last_value[None]], axis=0)
    deltas = (rewards + gamma * ~terminated * next_values - values) * valid
    decay = gamma * gae_lambda * ~(terminated | truncated)
    advantages = np.empty(rewards.shape, dtype=np.float32)
    running = np.zeros(rewards.shape[1:], dtype=np.float32)
    for t in reversed(range(num_steps)):
        running = deltas[t] + decay[t] * running
        advantages[t] = running
    advantages *= valid
    return advantages, (advantages + values).astype(np.float32)


def monte_carlo(
    rewards: np.ndarray,
    values: np.ndarray,
    done: np.ndarray,
    valid: np.ndarray,
    gamma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo returns of complete episodes, no bootstrapping (``learner.batch=episodes``).

        R_t = r_t + gamma * (1 - done_t) * R_{t+1},      A_t = R_t - V(s_t)

    on valid steps: R_t is the discounted sum of the rewards from t to the end of t's episode, whether
    the episode terminated or was truncated by the time limit (a truncation is treated as terminal, as the
    RELAX paper's code did; see README "The paper's experiments"). Every episode in the batch must be
    complete (its last step has ``done``), so nothing past it is ever needed. On invalid slots (reset
    slots, the padding after the last episode) A_t = 0 and R_t = V(s_t), as :func:`gae` gives them, so
    that they add 0 to the value regression.

    Args:
        rewards, values, done, valid: (T, ...) arrays, time first; ``values[t] = V(s_t)``.
        gamma: discount in (0, 1].

    Returns:
        (advantages, returns), both (T, ...) float32.
    """
    done, valid = np.asarray(done, dtype=bool), np.asarray(valid, dtype=bool)
    decay = gamma * ~done
    returns = np.empty(rewards.shape, dtype=np.float64)  # accumulated in float64: episodes can be long
    running = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + decay[t] * running
        returns[t] = running
    returns = returns.astype(np.float32)
    advantages = np.where(valid, returns - values, np.float32(0.0)).astype(np.float32)
    return advantages, np.where(valid, returns, values).astype(np.float32)
