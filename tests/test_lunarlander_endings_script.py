"""scripts/lunarlander_endings.py: how LunarLander episodes end, sorted from the public step output only."""

from __future__ import annotations

import re
from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.box2d.lunar_lander import heuristic

from scripts import lunarlander_endings
from scripts.lunarlander_endings import ending


def test_the_last_step_sorts_an_episode_into_its_ending():
    inside, outside = np.array([0.3, 0.0, 0, 0, 0, 0, 1, 1]), np.array([-1.02, 0.4, 0, 0, 0, 0, 0, 0])
    assert ending(inside, 100.0, terminated=True) == "landed"
    assert ending(inside, -100.0, terminated=True) == "crashed"
    assert ending(outside, -100.0, terminated=True) == "flew out"
    assert ending(outside, -3.0, terminated=False) == "time limit"


def true_ending(env: gym.Env, terminated: bool) -> str:
    """The ending read from the env's internals (what the script avoids depending on): the test's reference."""
    lander = env.unwrapped
    if not terminated:
        return "time limit"
    if not lander.lander.awake:
        return "landed"
    return "crashed" if lander.game_over else "flew out"


@pytest.mark.parametrize(
    ("controller", "max_steps", "expected"),
    [
        (lambda env, obs, rng: heuristic(env.unwrapped, obs), 1000, "landed"),  # gymnasium's demo controller lands
        (lambda env, obs, rng: 0, 1000, "crashed"),  # engines off: free fall
        (lambda env, obs, rng: 2, 1000, "flew out"),  # main engine on: up and out of the viewport
        (lambda env, obs, rng: int(rng.integers(4)), 1000, None),  # random: a mix
        (lambda env, obs, rng: 0, 20, "time limit"),
    ],
    ids=["heuristic", "free fall", "main engine", "random", "time limit"],
)
def test_the_ending_from_the_step_output_is_the_one_the_env_reached(controller, max_steps, expected):
    env, rng = gym.make("LunarLander-v3", max_episode_steps=max_steps), np.random.default_rng(0)
    found = Counter()
    for episode in range(8):
        obs, _ = env.reset(seed=episode)
        terminated = truncated = False
        while not (terminated or truncated):
            obs, reward, terminated, truncated, _ = env.step(controller(env, obs, rng))
        assert ending(obs, float(reward), terminated) == true_ending(env, terminated)
        found[ending(obs, float(reward), terminated)] += 1
    env.close()
    if expected is not None:
        assert found == {expected: 8}
    else:
        assert len(found) >= 2


def test_prints_the_endings_of_each_report_summed_over_its_seed_runs(run_training, tmp_path, capsys):
    report = tmp_path / "report"
    for seed in (0, 1):
        run_training("env=LunarLander", "env.num_envs=2", "total_timesteps=400", f"seed={seed}",
                     run_dir=report / f"seed{seed}")  # fmt: skip

    assert lunarlander_endings.main([str(report), "--episodes", "3"]) == 0

    row = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(
        rf"\| {re.escape(str(report))} \(2 runs\) \| 6 \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| .+ \|", row
    )
    assert match, row
    assert sum(map(int, match.groups())) == 6


def test_a_run_of_another_env_gets_a_one_line_error(run_training, tmp_path, capsys):
    run_training("env=CartPole", "total_timesteps=200", run_dir=tmp_path / "cartpole")

    assert lunarlander_endings.main([str(tmp_path / "cartpole")]) == 2

    err = capsys.readouterr().err
    assert "trained on CartPole-v1, not LunarLander" in err and "Traceback" not in err
