"""Bad input through the real command line: a short message naming the fix, non-zero exit, no
traceback, and nothing already written is lost."""

from __future__ import annotations

import os
import re
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


# ----------------------------------------------------------------------------- issue 16: every bad value is one line
ISSUE_16_VALUES = [
    (["learner.rmsprop_alpha=2"], "learner.rmsprop_alpha=2 must be in [0, 1)"),
    (["learner.eps=abc"], "learner.eps='abc' must be a number >= 0"),
    (["variance.ema_decay=abc"], "variance.ema_decay='abc' must be in (0, 1)"),
    (["variance.interval_steps=nan"], "variance.interval_steps=nan must be an integer >= 0"),
    (["seed=1.5"], "seed=1.5 must be an integer"),
    (["learner.num_steps=1000000000000"], "learner.num_steps=1000000000000 must be at most 16,777,216"),
    (["experiment=CartPole_relax", "estimator=baseline"], "estimator.cv_lr=0.01 is not a setting of estimator"),
    (["estimator=relax", "estimator.cv_lr=abc"], "estimator.cv_lr='abc' must be a positive number"),
]


def test_bad_values_from_the_command_line_are_one_line_without_traceback(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-m", "rl_relax.train", *overrides, f"hydra.run.dir={tmp_path / str(i)}"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i, (overrides, _) in enumerate(ISSUE_16_VALUES)
    ]  # fmt: skip
    for proc, (overrides, message) in zip(procs, ISSUE_16_VALUES, strict=True):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 2, (overrides, out)
        assert "Traceback" not in out and message in out, (overrides, out)
        (line,) = [x for x in out.splitlines() if "error:" in x]
        assert "Fix:" in line


def exploding_estimator(name: str = "x", hidden_sizes=(64,)):
    raise ValueError("phi needs at least one hidden layer")


def test_an_estimator_constructor_error_keeps_its_cause():
    from rl_relax.trainer import make_estimator

    cfg = OmegaConf.create({"_target_": "tests.test_cli.exploding_estimator", "name": "x"})
    with pytest.raises(ConfigError, match=r"ValueError: phi needs at least one hidden layer\. Fix:"):
        make_estimator(cfg)


@pytest.mark.skipif(
    not Path("/sys").is_dir() or (os.access("/sys", os.W_OK) and os.geteuid() != 0),
    reason="needs a directory this process cannot create entries in (/sys)",
)
def test_an_unwritable_run_directory_is_one_line_with_exit_code_4():
    proc = cli("total_timesteps=400", "hydra.run.dir=/sys/rl_relax_cannot_write_here")
    out = assert_clean_failure(proc, "cannot write to the run directory /sys/rl_relax_cannot_write_here", "Fix:")
    assert proc.returncode == 4 and len(out.strip().splitlines()) == 1, out


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_last_checkpoint(make_cfg, tmp_path, monkeypatch):
    import errno

    from rl_relax import checkpoint as ckpt
    from rl_relax.errors import StorageError
    from rl_relax.train import train

    run_dir = tmp_path / "run"
    real_fdopen = os.fdopen
    writes = []

    def filling_up(fd, mode="r", *args, **kwargs):
        writes.append(mode)
        if len(writes) > 2:  # a checkpoint and summary.json, then the disk is full
            os.close(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", filling_up)
    with pytest.raises(StorageError) as info:
        train(make_cfg("total_timesteps=2000", "checkpoint.interval_steps=400"), run_dir)
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message and "ckpt_000000000400.pt is intact" in message
    assert info.value.exit_code == 4
    files = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert files == ["ckpt_000000000400.pt"]  # no temporary file left behind
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert ckpt.load_checkpoint(run_dir / "checkpoints" / files[0])["counters"]["global_step"] == 400


def test_help_lists_the_groups_sweep_options_and_keys_that_exist_with_their_defaults():
    """Every launcher, sweeper and key --help names exists in the composed config, with the default it shows."""
    import yaml as pyyaml
    from omegaconf import OmegaConf

    from rl_relax.api import compose_config

    proc = cli("--help")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    text = proc.stdout
    for group in ("env: ", "estimator: ", "experiment: ", "hydra/launcher=local", "hydra/sweeper=optuna"):
        assert group in text, group
    assert "CartPole" in text.split("env: ")[1].splitlines()[0]
    sweeps = re.findall(r"^(hydra/(?:launcher|sweeper))=(\w+)", text, flags=re.M)
    assert len(sweeps) == 6
    for group, option in sweeps:
        assert compose_config([f"{group}={option}"]).hydra.runtime.choices[group] == option
    keys = text.split("== Most used keys (key=value) ==")[1].split("Examples:")[0]
    entries = re.findall(r"^([a-z_.]+)=(\S+)", keys, flags=re.M)
    assert len(entries) >= 20
    cfg = compose_config(["estimator=relax"])
    for key, shown in entries:
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", key
        if "<" in shown or key.startswith("hydra."):
            continue  # an example, not the default
        default = OmegaConf.select(cfg, key)
        default = OmegaConf.to_container(default) if OmegaConf.is_config(default) else default
        value = float(shown) if isinstance(default, float) else pyyaml.safe_load(shown)  # YAML reads 7e-4 as text
        assert value == default, f"--help shows {key}={shown}, the config's default is {default!r}"
