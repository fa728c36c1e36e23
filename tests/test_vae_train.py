"""Training runs of the discrete VAE (rl_relax.vae.train and the ``python -m rl_relax.vae`` entry point)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from rl_relax.errors import ConfigError
from rl_relax.vae.train import METRIC_FIELDS, VaeTrainer

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["steps=12", "eval.interval=6", "eval.variance_samples=2", "model.latent_size=8", "model.hidden_size=8",
         "estimator.hidden_sizes=[8]", "logging.progress=never"]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def compose_vae(*overrides: str):
    with initialize_config_module("rl_relax.configs.vae", version_base="1.3"):
        return compose("vae", overrides=[*SMALL, *overrides])


@pytest.mark.parametrize("estimator", ["reinforce", "concrete", "rebar", "relax", "disarm"])
@pytest.mark.parametrize("model", ["linear1", "linear2", "nonlinear"])
def test_every_estimator_trains_every_model(tmp_path, model, estimator):
    summary = VaeTrainer(compose_vae(f"model={model}", f"estimator={estimator}"), tmp_path).run()
    assert summary["model"] == model and summary["estimator"] == estimator and summary["steps"] == 12
    assert -100 < summary["best_valid_elbo"] < 0 and np.isfinite(summary["mean_encoder_log_variance"])
    with (tmp_path / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [0, 6, 12] and list(rows[0]) == list(METRIC_FIELDS)
    assert json.loads((tmp_path / "summary.json").read_text())["best_train_elbo"] == summary["best_train_elbo"]
    assert (tmp_path / "model.pt").exists() and any(tmp_path.glob("events.out.tfevents.*"))


def test_training_improves_the_elbo(tmp_path):
    summary = VaeTrainer(compose_vae("model=linear1", "estimator=rebar", "steps=300", "eval.interval=300"),
                         tmp_path).run()  # fmt: skip
    with (tmp_path / "metrics.csv").open() as handle:
        first, last = (float(r["train_elbo"]) for r in csv.DictReader(handle))
    assert last > first + 0.5 and summary["best_train_elbo"] == last


def test_same_seed_same_run(tmp_path):
    a = VaeTrainer(compose_vae("estimator=relax", "seed=3"), tmp_path / "a").run()
    b = VaeTrainer(compose_vae("estimator=relax", "seed=3"), tmp_path / "b").run()
    assert a["best_train_elbo"] == b["best_train_elbo"] and a["final_test_elbo"] == b["final_test_elbo"]


def test_a_local_file_trains(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", train=rng.integers(0, 2, (40, 16)), valid=rng.integers(0, 2, (8, 16)),
             test=rng.integers(0, 2, (8, 16)))  # fmt: skip
    cfg = compose_vae("data.name=file", f"data.path={tmp_path / 'tiny.npz'}", "batch_size=8", "eval.batch_size=8")
    summary = VaeTrainer(cfg, tmp_path / "run").run()
    assert summary["data"] == "tiny"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.name=deep", "model='deep'"),
        ("estimator.name=muprop", "estimator='muprop'"),
        ("steps=0", "steps=0"),
        ("lr=-1", "lr=-1"),
        ("data.name=file", "needs data.path"),
        ("eval.variance_samples=1", "variance_samples"),
        ("logging.progress=sometimes", "logging.progress='sometimes'"),
    ],
)
def test_bad_config_values_name_the_fix(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        VaeTrainer(compose_vae(override), tmp_path)


def test_command_line_entry_point(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "rl_relax.vae", *SMALL, "estimator=disarm", f"hydra.run.dir={tmp_path / 'ok'}"]
    ok = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "ok" / "summary.json").read_text())["estimator"] == "disarm"
    bad = subprocess.run([sys.executable, "-m", "rl_relax.vae", "data.name=file", "data.path=/nonexistent/mnist.amat",
                          f"hydra.run.dir={tmp_path / 'bad'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert bad.returncode == 2
    output = bad.stdout + bad.stderr  # Hydra's logging writes to stdout
    assert "data.path='/nonexistent/mnist.amat' does not exist" in output and "Traceback" not in output
