"""Periodic deterministic evaluation during training (stable-baselines3's ``EvalCallback``).

Every ``eval.interval_steps`` environment steps the current policy plays ``eval.episodes`` complete
episodes in its own env (built from the run's env config, without our wrappers) and the mean raw
return and length are logged as ``eval/mean_reward`` and ``eval/mean_ep_length`` (SB3's names).
Acting goes through :class:`rl_relax.agent.Agent`: the observation is normalised with the training
statistics as they are at that step (frozen, never updated by evaluation) and the action is the
distribution's mode.

Evaluation never touches the training run: its env is a separate object, episode ``i`` is reset
with seed ``eval_seed + i`` (the same start states at every evaluation, so successive points
compare the policy, not the luck of the draw), and deterministic actions draw no random numbers
from any generator the training uses (torch's, NumPy's global or the acting generator).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rl_relax.agent import Agent
from rl_relax.envs import make_env
from rl_relax.networks import Policy

# Offset of the evaluation env's reset seeds from the run seed (training envs use seed + i, the
# sampled variance probe seed + 1_000_003 + i).
EVAL_SEED_OFFSET = 2_000_003


def run_episodes(agent: Agent, env: gym.Env, episodes: int, seed: int, deterministic: bool = True) -> tuple[
    list[float], list[int]
]:  # fmt: skip
    """Play ``episodes`` complete episodes, episode ``i`` reset with ``seed + i``; return raw returns and lengths."""
    returns: list[float] = []
    lengths: list[int] = []
    with agent.policy.net.parameters_fixed():  # acting checks the parameters once, not every step
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            total, length, done = 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(agent.act(obs, deterministic))
                total += float(reward)
                length += 1
                done = bool(terminated or truncated)
            returns.append(total)
            lengths.append(length)
    return returns, lengths


class PeriodicEvaluation:
    """The training policy evaluated in a separate env with frozen normalisation statistics.

    ``policy`` is the live training policy (read, never modified: actions are taken under
    ``torch.no_grad`` by :meth:`Agent.act`).
    """

    def __init__(self, cfg: Any, policy: Policy, episodes: int):
        self.cfg, self.episodes = cfg, int(episodes)
        self.seed = int(cfg.seed) + EVAL_SEED_OFFSET
        self.env = make_env(cfg.env)
        self._policy = policy

    def evaluate(self, normalizer_state: dict) -> dict[str, float]:
        """``eval/mean_reward`` and ``eval/mean_ep_length`` over ``episodes`` deterministic episodes."""
        obs_stats = None
        if "obs" in normalizer_state:
            stats = normalizer_state["obs"]
            obs_stats = (stats["mean"].numpy().astype(np.float64), stats["var"].numpy().astype(np.float64))
        agent = Agent(self._policy, self.cfg, None, self.env.observation_space, self.env.action_space, obs_stats)
        returns, lengths = run_episodes(agent, self.env, self.episodes, self.seed, deterministic=True)
        return {"eval/mean_reward": float(np.mean(returns)), "eval/mean_ep_length": float(np.mean(lengths))}

    def close(self) -> None:
        self.env.close()
