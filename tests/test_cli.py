"""Bad input through the real command line: a short message naming the fix, non-zero exit, no
traceback, and nothing already written is lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
from omegaconf import OmegaConf

from rl_relax.config import validate
from rl_relax.envs import make_vector_env
from rl_relax.errors import ConfigError, MissingExtraError

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, module: str = "rl_relax.train") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def assert_clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out}"
    return out


def test_unknown_env_option_lists_the_shipped_ones(tmp_path):
    proc = cli("env=NoSuchEnv", f"hydra.run.dir={tmp_path}")
    assert_clean_failure(proc, "NoSuchEnv", "CartPole", "LunarLander", "InvertedPendulum")


def test_unknown_estimator_lists_the_available_ones(tmp_path):
    assert_clean_failure(cli("estimator=nope", f"hydra.run.dir={tmp_path}"), "nope", "baseline")


def test_unknown_gymnasium_id_names_the_fix(tmp_path):
    proc = cli("env.id=NoSuchEnv-v9", f"hydra.run.dir={tmp_path}")
    assert_clean_failure(proc, "unknown gymnasium environment id 'NoSuchEnv-v9'", "env=<one of:", "CartPole")
    assert proc.returncode == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("total_timesteps=-5", "total_timesteps=-5 must be a positive integer"),
        ("env.num_envs=0", "env.num_envs=0 must be a positive integer"),
        ("learner.lr=0", "learner.lr=0 must be a positive number"),
        ("learner.lr=-1e-3", "learner.lr=-0.001 must be a positive number"),
        ("learner.gamma=1.5", "learner.gamma=1.5 must be in (0, 1]"),
        ("learner.gamma=0", "learner.gamma=0 must be in (0, 1]"),
        ("learner.gae_lambda=2", "learner.gae_lambda=2 must be in [0, 1]"),
        ("device=tpu", "device='tpu' is not one of auto, cpu, cuda"),
        ("learner.optimizer=sgd", "learner.optimizer='sgd' is not one of rmsprop, adam"),
    ],
)
def test_invalid_values_are_rejected_before_anything_runs(make_cfg, override, message):
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(override))
    assert message in str(info.value) and "Fix:" in str(info.value)


def test_invalid_value_on_the_command_line_exits_cleanly(tmp_path):
    proc = cli("learner.gamma=1.5", f"hydra.run.dir={tmp_path}")
    assert_clean_failure(proc, "learner.gamma=1.5 must be in (0, 1]")
    assert proc.returncode == 2
    assert not (tmp_path / "checkpoints").exists()


def test_missing_extra_names_the_pip_command(monkeypatch):
    def missing(*args, **kwargs):
        raise gym.error.DependencyNotInstalled('Box2D is not installed, run `pip install "gymnasium[box2d]"`')

    monkeypatch.setattr(gym, "make_vec", missing)
    env_cfg = OmegaConf.create({"id": "LunarLander-v3", "num_envs": 1})
    with pytest.raises(MissingExtraError, match=r'pip install "rl-relax\[box2d\]"'):
        make_vector_env(env_cfg)


def test_corrupt_checkpoint_on_resume_exits_cleanly_and_keeps_the_file(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    bad = ckpt_dir / "ckpt_000000001000.pt"
    bad.write_bytes(b"truncated")
    proc = cli(f"hydra.run.dir={tmp_path}", "total_timesteps=2000")
    assert_clean_failure(proc, "ckpt_000000001000.pt is corrupt", "Fix")
    assert bad.read_bytes() == b"truncated"


def test_evaluate_without_checkpoint_exits_cleanly(tmp_path):
    proc = cli(str(tmp_path), module="rl_relax.evaluate")
    assert_clean_failure(proc, "holds no checkpoints")


def test_train_then_evaluate_from_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    proc = cli("total_timesteps=2000", f"hydra.run.dir={run_dir}", "seed=1")
    assert proc.returncode == 0, proc.stderr
    assert "done: 2000 steps" in proc.stdout + proc.stderr
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "summary.json").is_file()
    ev = cli(str(run_dir), "--episodes", "2", module="rl_relax.evaluate")
    assert ev.returncode == 0, ev.stderr
    assert "CartPole-v1: return" in ev.stdout and "over 2 episodes (deterministic" in ev.stdout
