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
    assert ending(outside, 100.0, terminated=True) == "landed"  # the env's +100 for rest overrides the rest
    assert ending(inside, -100.0, terminated=True) == "crashed"
    assert ending(outside, -100.0, terminated=True) == "flew out"
    assert ending(outside, -3.0, terminated=False) == "time limit, in the air"
    assert ending(np.array([0.1, 0.0, 0, 0, 0, 0, 0, 1]), 0.5, terminated=False) == "time limit, on the ground"


def true_ending(env: gym.Env, terminated: bool) -> str:
    """The ending read from the env's internals (what the script avoids depending on): the test's reference."""
    lander = env.unwrapped
    if not terminated:
        on_ground = lander.legs[0].ground_contact or lander.legs[1].ground_contact
        return "time limit, on the ground" if on_ground else "time limit, in the air"
    if not lander.lander.awake:
        return "landed"
    return "crashed" if lander.game_over else "flew out"


@pytest.mark.parametrize(
    ("controller", "max_steps", "expected"),
    [
        (lambda env, obs, rng: heuristic(env.unwrapped, obs), 1000, "landed"),  # gymnasium's demo controller lands
        (lambda env, obs, rng: 0, 1000, "crashed"),  # engines off: free fall
        (lambda env, obs, rng: 2, 1000, "flew out"),  # main engine on: up and out of the viewport
        (lambda env, obs, rng: int(rng.integers(4)), 1000, {"crashed", "flew out"}),  # random: a mix
        (lambda env, obs, rng: 0, 20, "time limit, in the air"),  # stopped in free fall
        # stopped while landing: touched down (not yet at rest), still in the air, or landed early
        (
            lambda env, obs, rng: heuristic(env.unwrapped, obs),
            180,
            {"landed", "time limit, on the ground", "time limit, in the air"},
        ),
    ],
    ids=["heuristic", "free fall", "main engine", "random", "time limit in the air", "time limit near the ground"],
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
    if isinstance(expected, str):
        assert found == {expected: 8}
    else:  # every one of these, and only these
        assert set(found) == expected


def test_prints_the_endings_of_each_report_summed_over_its_seed_runs(run_training, tmp_path, capsys):
    report = tmp_path / "report"
    for seed in (0, 1):
        run_training("env=LunarLander", "env.num_envs=2", "total_timesteps=400", f"seed={seed}",
                     run_dir=report / f"seed{seed}")  # fmt: skip
    checkpoint = next((report / "seed0" / "checkpoints").glob("ckpt_*.pt"))

    assert lunarlander_endings.main([str(report), str(checkpoint), "--episodes", "3"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("3 episodes per run, sampled actions, reset seeds 12345..12347\n")
    counts = r"\| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| -?\d+ ± \d+ \|"
    summed, single = out.strip().splitlines()[-2:]
    match = re.fullmatch(rf"\| {re.escape(str(report))} \(2 runs\) \| 6 {counts}", summed)
    assert match, summed
    assert sum(map(int, match.groups())) == 6
    match = re.fullmatch(rf"\| {re.escape(str(checkpoint))} \| 3 {counts}", single)
    assert match, single
    assert sum(map(int, match.groups())) == 3


def test_a_report_is_read_in_seed_order_and_only_its_seed_runs(tmp_path):
    for name in ("seed10", "seed2", "seed_old", "seed0"):
        (tmp_path / name).mkdir()
    (tmp_path / "seed3").write_text("not a run")

    assert [p.name for p in lunarlander_endings.runs_of(tmp_path)] == ["seed0", "seed2", "seed10"]
    assert lunarlander_endings.runs_of(tmp_path / "seed2") == [tmp_path / "seed2"]


def test_a_run_without_a_checkpoint_is_reported_before_anything_plays(run_training, tmp_path, capsys):
    run_training("env=LunarLander", "env.num_envs=2", "total_timesteps=200", run_dir=tmp_path / "good")
    (tmp_path / "empty").mkdir()

    assert lunarlander_endings.main([str(tmp_path / "good"), str(tmp_path / "empty")]) == 2

    captured = capsys.readouterr()
    assert captured.out == "" and str(tmp_path / "empty") in captured.err


def test_a_run_of_another_env_gets_a_one_line_error(run_training, tmp_path, capsys):
    run_training("env=CartPole", "total_timesteps=200", run_dir=tmp_path / "cartpole")

    assert lunarlander_endings.main([str(tmp_path / "cartpole")]) == 2

    err = capsys.readouterr().err
    assert "trained on CartPole-v1, not LunarLander" in err
