"""summarize: groups by every setting but the seed, reports the same-policy ratio and the anatomy in full."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from rl_relax.summarize import MIN_BAND_SEEDS, seed_curves, summarize


def fake_run(root: Path, estimator: str, lr: float, seed: int, ratios: list[float], steps: int = 4000,
             anatomy: dict[str, float] | None = None) -> Path:  # fmt: skip
    """A finished run directory as training writes it: .hydra/config.yaml, summary.json, TensorBoard events."""
    run = root / f"estimator={estimator},learner.lr={lr},seed={seed}"
    (run / ".hydra").mkdir(parents=True)
    cfg = {"seed": seed, "env": {"id": "CartPole-v1", "num_envs": 8}, "estimator": {"name": estimator},
           "learner": {"lr": lr, "gamma": 0.99}, "logging": {"interval_steps": 1000 + seed},  # logging never splits
           "device": "cpu" if seed else "auto"}  # fmt: skip
    OmegaConf.save(OmegaConf.create(cfg), run / ".hydra" / "config.yaml")
    summary = {"finished": True, "status": "ok", "final_return_mean": 100.0 + seed, "episodes_to_solve": None,
               "fps": 1000.0}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    writer = SummaryWriter(str(run))
    for i, step in enumerate(range(1000, steps + 1, 1000)):
        writer.add_scalar("rollout/ep_rew_mean", 10.0 * i + seed, step)
        writer.add_scalar("grad/log_variance", -3.0, step)
        if i < len(ratios):
            writer.add_scalar("grad/variance_ratio_sampled", ratios[i], step)
        for tag, value in (anatomy or {}).items():
            writer.add_scalar(f"variance/{tag}", value, step)
    writer.close()
    return run


def test_runs_that_differ_only_in_learning_rate_are_kept_apart_with_their_same_policy_ratio(tmp_path):
    fake_run(tmp_path, "relax", 7e-4, 0, [0.5, 0.7, 0.9])  # median 0.7
    fake_run(tmp_path, "relax", 7e-4, 1, [0.9, 0.9, 0.8])  # median 0.9
    fake_run(tmp_path, "relax", 1e-3, 0, [2.0, 3.0, 4.0])  # median 3.0
    fake_run(tmp_path, "relax", 1e-3, 1, [5.0, 5.0, 5.0])  # median 5.0
    fake_run(tmp_path, "baseline", 7e-4, 0, [])
    text = summarize(tmp_path, plots=False)
    rows = {
        (r["estimator"], r["settings"]): r for r in csv.DictReader((tmp_path / "summary.csv").read_text().splitlines())
    }
    assert set(rows) == {("relax", "learner.lr=0.0007"), ("relax", "learner.lr=0.001"), ("baseline", "")}
    slow, fast = rows[("relax", "learner.lr=0.0007")], rows[("relax", "learner.lr=0.001")]
    assert slow["seeds"] == "0 1" and fast["seeds"] == "0 1"  # the seeds of one setting, not "0 0 1 1"
    assert float(slow["variance_ratio_mean"]) == pytest.approx(0.8)
    assert float(fast["variance_ratio_mean"]) == pytest.approx(4.0)
    assert float(fast["variance_ratio_std"]) == pytest.approx(math.sqrt(2.0))
    assert "| CartPole-v1 | relax | 0 1 | 0/2 |" in text and "0.800 ± 0.141" in text and "learner.lr=0.001 |" in text
    assert math.isnan(float(rows[("baseline", "")]["variance_ratio_mean"]))


def test_the_anatomy_shares_and_removed_fractions_are_reported_when_logged(tmp_path):
    anatomy = {"share_state": 0.1, "share_action": 0.7, "share_trajectory": 0.2, "action_removed_by_value": 0.9,
               "action_removed_by_cv": 0.95, "action_removed_by_exact_value": 0.99}  # fmt: skip
    fake_run(tmp_path, "relax", 7e-4, 0, [1.0], anatomy=anatomy)
    text = summarize(tmp_path, plots=False)
    assert "10% / 70% / 20%" in text and "90% / 95% / 99%" in text


def test_curves_cover_each_run_to_its_end_and_bands_only_where_enough_seeds_reach():
    short = np.array([[0.0, 1.0], [50.0, 1.0]])
    long = np.array([[0.0, 3.0], [100.0, 5.0]])
    grid, mean, std, count = seed_curves([short, long], points=101)
    assert grid[-1] == 100.0 and mean[-1] == pytest.approx(5.0)  # not cut at the shorter run's end
    assert (count[grid <= 50] == 2).all() and (count[grid > 50] == 1).all()
    assert np.isfinite(std[grid <= 50]).all() and np.isnan(std[grid > 50]).all()
    assert MIN_BAND_SEEDS == 2
    assert mean[0] == pytest.approx(2.0) and std[0] == pytest.approx(np.std([1.0, 3.0], ddof=1))


def test_plots_are_written_with_worded_axes(tmp_path):
    fake_run(tmp_path, "relax", 7e-4, 0, [0.5, 0.7])
    fake_run(tmp_path, "relax", 7e-4, 1, [0.9, 0.9], steps=8000)
    summarize(tmp_path)
    for name in ("returns.png", "log_variance.png", "variance_ratio.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_a_resumed_runs_rewritten_steps_replace_the_old_ones_without_reader_warnings(tmp_path, caplog):
    import logging

    from rl_relax.summarize import read_scalars

    first = SummaryWriter(str(tmp_path))
    for step in range(6):
        first.add_scalar("charts/episodic_return", float(step), step)
    first.close()
    resumed = SummaryWriter(str(tmp_path), purge_step=3)  # the product's resume from a step-3 checkpoint
    for step in range(3, 6):
        resumed.add_scalar("charts/episodic_return", 10.0 * step, step)
    resumed.close()
    with caplog.at_level(logging.WARNING):
        scalars = read_scalars(tmp_path, ("charts/episodic_return",))
    assert scalars["charts/episodic_return"] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0), (5, 50.0)]
    assert not [r for r in caplog.records if r.name.startswith("tensorboard")]
