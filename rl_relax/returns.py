"""Advantages and returns: GAE(lambda) with explicit termination, truncation and validity masks.

All tensors have shape (T, N): T steps of N environments. With gymnasium's NEXT_STEP autoreset the
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
"""

from __future__ import annotations

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    last_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    valid: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and value targets.

    Args:
        rewards, values: (T, N) float; ``values[t] = V(s_t)`` computed at acting time.
        last_value: (N,) V(s_T), the observation after the last step of the rollout.
        terminated, truncated, valid: (T, N) bool.
        gamma: discount in (0, 1]. gae_lambda: in [0, 1].

    Returns:
        (advantages, returns), both (T, N); zero advantages where ``valid`` is False.
    """
    num_steps = rewards.shape[0]
    not_terminated = (~terminated).to(rewards.dtype)
    continues = (~(terminated | truncated)).to(rewards.dtype)
    validf = valid.to(rewards.dtype)
    next_values = torch.cat([values[1:], last_value.unsqueeze(0)], dim=0)
    deltas = (rewards + gamma * not_terminated * next_values - values) * validf
    decay = gamma * gae_lambda * continues
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(num_steps)):
        running = deltas[t] + decay[t] * running
        advantages[t] = running
    advantages *= validf
    return advantages, advantages + values
