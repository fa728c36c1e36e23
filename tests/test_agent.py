"""A trained agent loaded from a run: finding the checkpoint, the device check, normalised acting."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from rl_relax import checkpoint as ckpt
from rl_relax.agent import check_device, load_agent, resolve_checkpoint
from rl_relax.envs import make_vector_env
from rl_relax.errors import CheckpointError, ConfigError


@pytest.fixture
def cartpole_run(run_training, tmp_path):
    """A short CartPole run with observation normalisation on (so its statistics are not the identity)."""
    run_training("env.normalize_observation=true", "total_timesteps=2000", run_dir=tmp_path / "runs" / "cp" / "t1")
    return tmp_path / "runs" / "cp" / "t1"


def test_act_normalises_raw_observations_exactly_as_the_training_wrapper(cartpole_run):
    agent = load_agent(cartpole_run)
    payload = ckpt.load_checkpoint(agent.checkpoint)
    handle = make_vector_env(agent.config.env, num_envs=1)
    try:
        handle.load_normalizer_state(payload["normalizers"])
        handle.freeze_normalizers()
        raw = np.random.default_rng(0).normal(0.0, 1.0, size=(64, 4)).astype(np.float32)
        by_wrapper = handle.obs_norm.observations(raw)  # gymnasium's NormalizeObservation, frozen
    finally:
        handle.close()
    assert np.allclose(agent.normalize(raw), by_wrapper, atol=1e-6)
    assert not np.allclose(agent.normalize(raw), raw, atol=1e-2)  # the statistics are not the identity
    # Deterministic actions are the policy's argmax on the normalised observation, not on the raw one.
    with torch.no_grad():
        expected = agent.policy(torch.as_tensor(by_wrapper)).argmax(-1).numpy()
    assert np.array_equal(agent.act(raw), expected)


def test_act_takes_one_observation_or_a_batch_and_returns_what_the_env_accepts(cartpole_run):
    agent = load_agent(cartpole_run)
    env = agent.make_env()
    obs, _ = env.reset(seed=0)
    action = agent.act(obs)
    assert np.ndim(action) == 0 and env.action_space.contains(int(action))
    env.step(action)
    env.close()
    assert agent.act(np.stack([obs, obs, obs])).shape == (3,)
    with pytest.raises(ValueError, match="this agent takes"):
        agent.act(np.zeros(5, dtype=np.float32))


def test_stochastic_actions_follow_the_seed_and_box_actions_respect_the_bounds(run_training, tmp_path):
    run_training("env=Pendulum", "total_timesteps=800", "policy.log_std_init=1.0")
    obs = np.random.default_rng(1).uniform(-1, 1, size=(200, 3)).astype(np.float32)
    a, b = load_agent(tmp_path / "run", seed=7), load_agent(tmp_path / "run", seed=7)
    sampled = a.act(obs, deterministic=False)
    assert np.array_equal(sampled, b.act(obs, deterministic=False))
    assert not np.array_equal(sampled, a.act(obs, deterministic=True))
    assert sampled.shape == (200, 1) and np.all(np.abs(sampled) <= 2.0)  # Pendulum's torque bounds
    assert np.any(np.abs(sampled) == 2.0)  # std e^1 around a mean near 0: some samples were clipped


def test_a_run_parent_with_one_run_resolves_to_that_runs_latest_checkpoint(cartpole_run):
    latest = ckpt.latest_checkpoint(cartpole_run / "checkpoints")
    assert resolve_checkpoint(cartpole_run.parent) == latest
    assert resolve_checkpoint(cartpole_run.parent.parent) == latest
    assert resolve_checkpoint(cartpole_run) == latest and resolve_checkpoint(latest) == latest


def test_a_directory_with_several_runs_is_an_error_that_lists_them(cartpole_run):
    shutil.copytree(cartpole_run, cartpole_run.parent / "t2")
    with pytest.raises(CheckpointError, match=r"holds 2 runs: t1, t2\. Fix: pass one of them"):
        resolve_checkpoint(cartpole_run.parent)


def test_a_directory_without_runs_is_an_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="holds no checkpoints"):
        resolve_checkpoint(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_a_device_error():
    with pytest.raises(ConfigError, match=r"no CUDA GPU on this machine.*Fix: --device cpu"):
        check_device("cuda")


def test_device_names_are_checked_before_anything_is_loaded(cartpole_run):
    with pytest.raises(ConfigError, match="CUDA"):
        load_agent(cartpole_run, device="cuda:99")
    with pytest.raises(ConfigError, match="'gpu' is not a torch device"):
        check_device("gpu")
    assert check_device("cpu") == torch.device("cpu")


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one_and_renames_nothing(run_training, tmp_path):
    from rl_relax import checkpoint as ckpt
    from rl_relax.agent import load_agent

    run_dir = tmp_path / "run"
    run_training("total_timesteps=800", "checkpoint.interval_steps=400", run_dir=run_dir)
    first, newest = ckpt.list_checkpoints(run_dir / "checkpoints")[-2:]
    newest.write_bytes(newest.read_bytes()[:-50])  # torn
    agent = load_agent(run_dir)
    assert agent.act(np.zeros(4, dtype=np.float32)) in (0, 1)
    assert newest.exists() and first.exists()  # read only: nothing moved aside
    with pytest.raises(CheckpointError):
        load_agent(newest)  # a file the user named is not replaced by another


def test_runs_moved_aside_by_resume_false_are_not_candidates(tmp_path):
    from rl_relax.agent import find_runs

    for rel in ("a/checkpoints", "a/previous_runs/20260101/checkpoints"):
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "ckpt_000000000400.pt").write_bytes(b"x")
    assert find_runs(tmp_path) == [tmp_path / "a"]
