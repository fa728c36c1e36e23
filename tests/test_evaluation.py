"""Periodic deterministic evaluation during training (rl_relax/evaluation.py)."""

import pytest
import torch

from rl_relax import checkpoint as ckpt
from rl_relax.evaluate import evaluate
from rl_relax.evaluation import EVAL_SEED_OFFSET
from tests.conftest import read_scalars

NUMBERS = ("timesteps", "updates", "episodes", "episodes_to_solve", "final_return_mean", "final_length_mean")


def test_eval_scalars_appear_at_the_first_update_reaching_each_interval(run_training, tmp_path):
    run_training("total_timesteps=2000", "eval.interval_steps=900", "eval.episodes=2")
    scalars = read_scalars(tmp_path / "run")
    # 40 env steps per update: the first updates at or past 900 and 1800 are at 920 and 1800.
    assert [step for step, _ in scalars["eval/mean_reward"]] == [920, 1800]
    assert [step for step, _ in scalars["eval/mean_ep_length"]] == [920, 1800]
    assert [step for step, _ in scalars["time/eval_s"]] == [920, 1800]
    # CartPole pays 1 per step: the mean return equals the mean length.
    assert scalars["eval/mean_reward"] == scalars["eval/mean_ep_length"]


def test_eval_is_off_by_default(run_training, tmp_path):
    run_training("total_timesteps=400")
    scalars = read_scalars(tmp_path / "run")
    assert "eval/mean_reward" not in scalars and "time/eval_s" not in scalars


def test_training_with_eval_is_bit_identical_to_training_without(run_training, tmp_path):
    """Evaluation has its own env and draws nothing from the training's random streams."""
    common = ("total_timesteps=1600", "env.normalize_observation=true", "estimator=relax")
    off = run_training(*common, run_dir=tmp_path / "off")
    on = run_training(*common, "eval.interval_steps=400", "eval.episodes=3", run_dir=tmp_path / "on")
    assert len(read_scalars(tmp_path / "on")["eval/mean_reward"]) == 4
    assert {k: on[k] for k in NUMBERS} == {k: off[k] for k in NUMBERS}
    states = [ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / r / "checkpoints")) for r in ("off", "on")]
    for part in ("policy", "value", "estimator"):
        for key, tensor in states[0][part].items():
            assert torch.equal(tensor, states[1][part][key]), f"{part}.{key}"
    for key, tensor in states[0]["normalizers"]["obs"].items():
        assert torch.equal(tensor, states[1]["normalizers"]["obs"][key]), key
    assert states[0]["acting_rng"] == states[1]["acting_rng"]
    off_scalars, on_scalars = read_scalars(tmp_path / "off"), read_scalars(tmp_path / "on")
    for tag in ("train/policy_loss", "train/value_loss", "rollout/ep_rew_mean"):
        assert off_scalars[tag] == on_scalars[tag], tag


def test_eval_acts_as_evaluate_does_with_the_frozen_normalisation(run_training, tmp_path):
    """The evaluation at the last step is `python -m rl_relax.evaluate` on the final checkpoint, with the
    evaluation's seeds: same policy, same frozen observation statistics, same episodes."""
    run_training("total_timesteps=2000", "env.normalize_observation=true", "eval.interval_steps=1000",
                 "eval.episodes=3", "seed=5")  # fmt: skip
    (step, logged), *_ = reversed(read_scalars(tmp_path / "run")["eval/mean_reward"])
    assert step == 2000
    result = evaluate(tmp_path / "run", episodes=3, seed=5 + EVAL_SEED_OFFSET)
    assert logged == pytest.approx(result["return_mean"], rel=1e-6)


@pytest.mark.parametrize(("override", "message"), [
    ("eval.interval_steps=-1", "eval.interval_steps=-1 must be an integer >= 0 (0 = off)"),
    ("eval.episodes=0", "eval.episodes=0 must be a positive integer"),
])  # fmt: skip
def test_bad_eval_settings_are_one_line_errors(override, message, make_cfg):
    from rl_relax.config import validate
    from rl_relax.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(make_cfg(override))
