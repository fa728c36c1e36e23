"""seed_group: num_seeds=S trains S independent seeds in one process, each exactly as its single run.

Equivalence is tested run against run: with per-seed environments (``env.vectorization=sync``) a
seed trained inside a group follows its single run step for step (same episodes; parameters,
optimizer and control-variate states equal up to float rounding, which differs only because a
batched matrix product sums in another order). A deliberately coupled group (gradient clipping by
the norm over all seeds, a realistic leak) fails the same comparison.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from rl_relax import checkpoint as ckpt
from rl_relax.errors import TrainingDivergedError
from rl_relax.optim import FlatParameters
from rl_relax.seed_group import SeedGroupEnv, SeedGroupTrainer
from rl_relax.train import objective, train
from tests.conftest import compose_config, read_scalars

SHORT = ["total_timesteps=1200", "checkpoint.interval_steps=400", "env.vectorization=sync"]
CV_OPTIONS = ["estimator.cv_inputs=[state,value,time,dist_params]",  # time: divided by the env's time limit
              "estimator.state_baseline=variance", "estimator.cv_warmup_steps=3", "estimator.cv_lr_schedule=linear",
              "estimator.cv_gap_interval=7", "estimator.cv_gap_steps=3", "estimator.cv_term_norms_interval=5",
              "estimator.cv_steps=2"]  # fmt: skip
VALUE_LEVERS = ["value.horizon_aware=true", "value.time_input=true", "value.steps=3", "value.lr=1e-3",
                "value.optimizer=adam"]  # fmt: skip


@pytest.fixture(autouse=True)
def _threads(one_torch_thread):
    yield


def newest(run_dir: Path) -> dict:
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir / "checkpoints"))


def tensors(tree, prefix=""):
    """Every tensor in a checkpoint payload, by path."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from tensors(value, f"{prefix}.{key}")


def assert_same_run(group_seed_dir: Path, single_dir: Path, atol: float = 2e-5) -> None:
    """Same episodes and counters; every checkpointed tensor equal up to float rounding."""
    a, b = newest(group_seed_dir), newest(single_dir)
    assert a["counters"]["episodes"] == b["counters"]["episodes"]
    assert a["counters"]["recent_returns"] == b["counters"]["recent_returns"]
    assert a["meta"] == b["meta"]
    # The process-wide Python/NumPy/torch generators (".rng") only seed the initial networks; training draws
    # from each seed's own acting generator (".acting_rng", compared by the episodes above). A group's
    # checkpoints record the one process's global state, which is not a seed's.
    mine = {k: v for k, v in tensors(a) if not k.startswith(".rng.")}
    theirs = {k: v for k, v in tensors(b) if not k.startswith(".rng.")}
    assert a["acting_rng"] == b["acting_rng"]
    assert mine.keys() == theirs.keys()
    for name, value in mine.items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(value, theirs[name], atol=atol, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
        else:
            assert torch.equal(value, theirs[name]), name


def train_group_and_singles(tmp_path: Path, *overrides: str, seeds=(3, 4)) -> None:
    train(compose_config(*SHORT, *overrides, f"seed={seeds[0]}", f"num_seeds={len(seeds)}"), tmp_path / "group")
    for seed in seeds:
        train(compose_config(*SHORT, *overrides, f"seed={seed}"), tmp_path / f"single{seed}")


@pytest.mark.parametrize(
    "overrides",
    [
        ("env=CartPole", "estimator=baseline"),
        ("env=CartPole", "estimator=relax", "learner.ent_coef=0.01", "learner.normalize_advantage=true"),
        ("env=CartPole", "estimator=dlax", "estimator.cv_steps=2", "estimator.cv_objective=dist_params"),
        ("env=Pendulum", "estimator=lax", "env.normalize_observation=true", "learner.optimizer=adam"),
        # the control-variate options (README "Estimators"), diagnostics included
        ("env=CartPole", "estimator=relax", *CV_OPTIONS),
        # the value levers, with a 30-step time limit so that episodes also truncate (V = 0 at the limit)
        ("env=CartPole", "estimator=relax", "env.make_kwargs={max_episode_steps: 30}", *VALUE_LEVERS),
    ],
    ids=["baseline", "relax", "dlax", "lax", "cv_options", "value_levers"],
)
def test_each_seed_of_a_group_follows_its_single_run(tmp_path, overrides):
    train_group_and_singles(tmp_path, *overrides)
    for seed in (3, 4):
        assert_same_run(tmp_path / "group" / f"seed{seed}", tmp_path / f"single{seed}")


def test_a_coupled_group_fails_the_comparison(tmp_path, monkeypatch):
    """Power: clipping by the norm over all seeds (seeds leak into each other's step size) is caught."""

    def global_clip(self, max_norm):
        norm = torch.linalg.vector_norm(self.data.grad).item()
        if max_norm / (norm + 1e-6) < 1.0:
            self.data.grad.mul_(max_norm / (norm + 1e-6))
        return [norm] * self.data.shape[0] if self.num_seeds else norm

    train_group_and_singles(tmp_path, "env=CartPole", "estimator=baseline", "learner.max_grad_norm=0.05")
    assert_same_run(tmp_path / "group" / "seed3", tmp_path / "single3")  # the honest group passes here
    monkeypatch.setattr(FlatParameters, "clip_grad_norm_", global_clip)
    train(compose_config(*SHORT, "env=CartPole", "learner.max_grad_norm=0.05", "seed=3", "num_seeds=2"),
          tmp_path / "coupled")  # fmt: skip
    with pytest.raises(AssertionError):
        assert_same_run(tmp_path / "coupled" / "seed3", tmp_path / "single3")


def test_a_group_writes_ordinary_run_directories(tmp_path):
    result = train(compose_config(*SHORT, "estimator=relax", "seed=0", "num_seeds=3"), tmp_path / "g")
    assert [run["seed"] for run in result["runs"]] == [0, 1, 2]
    assert objective(result, "final_return") == pytest.approx(sum(r["final_return_mean"] for r in result["runs"]) / 3)
    for seed in range(3):
        run_dir = tmp_path / "g" / f"seed{seed}"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["finished"] and summary["seed"] == seed and summary["timesteps"] >= 1200
        scalars = read_scalars(run_dir)
        assert "cv/temperature" in scalars and "rollout/ep_rew_mean" in scalars
        assert (run_dir / ".hydra" / "config.yaml").is_file()
    from rl_relax.agent import load_agent
    from rl_relax.summarize import find_runs

    assert sorted(run.seed for run in find_runs(tmp_path)) == [0, 1, 2]  # the group's own dir is no run
    agent = load_agent(tmp_path / "g" / "seed1")
    assert agent is not None
    # A second invocation finds every seed finished and writes nothing.
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "g").rglob("*") if p.is_file() and p.name != ".lock"}
    again = train(compose_config(*SHORT, "estimator=relax", "seed=0", "num_seeds=3"), tmp_path / "g")
    assert [r["timesteps"] for r in again["runs"]] == [r["timesteps"] for r in result["runs"]]
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_resume_continues_every_seed_like_its_single_run(tmp_path):
    """Stopped at 1200 steps, continued to 2400: each seed equals its single run stopped and continued alike."""
    common = ["env=CartPole", "estimator=relax", "env.vectorization=sync", "checkpoint.interval_steps=400"]
    for total in (1200, 2400):
        train(compose_config(*common, f"total_timesteps={total}", "seed=5", "num_seeds=2"), tmp_path / "group")
        train(compose_config(*common, f"total_timesteps={total}", "seed=6"), tmp_path / "single6")
    assert newest(tmp_path / "group" / "seed6")["counters"]["global_step"] == 2400
    assert_same_run(tmp_path / "group" / "seed6", tmp_path / "single6")


def test_resume_after_a_kill_between_two_seeds_checkpoints(tmp_path, caplog):
    common = ["env=CartPole", "checkpoint.interval_steps=400", "seed=0", "num_seeds=2"]
    train(compose_config(*common, "total_timesteps=1200"), tmp_path / "g")
    ckpt.checkpoint_path(tmp_path / "g" / "seed1" / "checkpoints", 1200).unlink()  # seed 1 never wrote step 1200
    with caplog.at_level(logging.WARNING, logger="rl_relax"):
        result = train(compose_config(*common, "total_timesteps=2000"), tmp_path / "g")
    assert "the step every seed of the group has" in caplog.text
    assert [r["timesteps"] for r in result["runs"]] == [2000, 2000]


def test_a_diverged_seed_stops_alone(tmp_path):
    group = SeedGroupTrainer(compose_config(*SHORT, "seed=0", "num_seeds=3"), tmp_path / "g")
    with torch.no_grad():
        # seed 1 only (loaded into the stack at start)
        group.trainers[1].policy.net.layers[0].weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match=r"seed\(s\) 1 diverged"):
        group.run()
    statuses = [json.loads((tmp_path / "g" / f"seed{s}" / "summary.json").read_text()) for s in range(3)]
    assert [s["status"] for s in statuses] == ["ok", "diverged", "ok"]
    assert statuses[0]["finished"] and statuses[2]["finished"] and statuses[0]["timesteps"] >= 1200
    assert not list((tmp_path / "g" / "seed1" / "checkpoints").glob("ckpt_*.pt"))  # nothing non-finite saved


def test_solved_seeds_stop_one_by_one(tmp_path):
    cfg = compose_config(
        "total_timesteps=20000", "seed=0", "num_seeds=3", "stop_when_solved=true",
        "env.solved_threshold=28", "env.solved_window=10",
    )  # fmt: skip
    runs = train(cfg, tmp_path / "g")["runs"]
    assert all(run["steps_to_solve"] is not None for run in runs)
    for run in runs:  # each stopped at its own solve step, like a single run with stop_when_solved
        assert run["timesteps"] == run["steps_to_solve"]
    assert len({run["timesteps"] for run in runs}) > 1


def test_native_vector_envs_are_shared_only_without_normalisation():
    assert SeedGroupEnv.can_share(compose_config("env=CartPole").env)
    assert not SeedGroupEnv.can_share(compose_config("env=CartPole", "env.normalize_observation=true").env)
    assert not SeedGroupEnv.can_share(compose_config("env=CartPole", "env.vectorization=sync").env)
    assert not SeedGroupEnv.can_share(compose_config("env=Pendulum").env)


def test_device_auto_picks_a_gpu_only_for_large_groups(monkeypatch):
    from rl_relax.config import GPU_MIN_SEEDS, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", GPU_MIN_SEEDS)[0].type == "cuda"
    device, why = resolve_device("auto", 8)
    assert device.type == "cpu" and "below" in why
    assert resolve_device("auto")[0].type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", 4 * GPU_MIN_SEEDS)[0].type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_group_on_the_gpu_follows_the_cpu_group(tmp_path):
    """device=cuda: the batched update on the GPU, environments on the CPU; the same run up to float rounding."""
    overrides = ["env=CartPole", "estimator=relax", "seed=0", "num_seeds=4", *SHORT]
    train(compose_config(*overrides, "device=cuda"), tmp_path / "gpu")
    train(compose_config(*overrides, "device=cpu"), tmp_path / "cpu")
    for seed in range(4):
        a, b = newest(tmp_path / "gpu" / f"seed{seed}"), newest(tmp_path / "cpu" / f"seed{seed}")
        assert a["counters"]["global_step"] == b["counters"]["global_step"] == 1200
        for name, value in a["policy"].items():
            torch.testing.assert_close(value, b["policy"][name], atol=1e-3, rtol=1e-3)


def test_a_shared_native_env_gives_every_seed_its_own_initial_states(tmp_path):
    """CartPole's S N sub-envs in one vector env: seeds get distinct initial states from the env's U(-0.05, 0.05)."""
    group = SeedGroupTrainer(compose_config("env=CartPole", "seed=0", "num_seeds=4"), tmp_path / "g")
    try:
        assert group.env.shared
        obs = group.env.reset(group.seeds, 0)
        assert obs.shape == (4, 8, 4) and np.all(np.abs(obs) <= 0.05)
        blocks = {tuple(np.round(obs[k].ravel(), 6)) for k in range(4)}
        assert len(blocks) == 4  # no two seeds share a stream of initial states
    finally:
        group.close()
