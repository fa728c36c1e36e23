"""``train_agent``: the command line's config and run directory, from Python."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rl_relax import TrainResult, load_agent, train_agent
from rl_relax.api import hydra_value, to_overrides
from rl_relax.errors import ConfigError, StorageError

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"logging__progress": "never"}


def test_python_values_become_hydra_override_syntax():
    assert hydra_value(True) == "true" and hydra_value(None) == "null" and hydra_value(1e-3) == "0.001"
    assert hydra_value([64, 64]) == "[64,64]" and hydra_value({"max_episode_steps": 50}) == "{max_episode_steps:50}"
    assert hydra_value("CartPole") == "CartPole" and hydra_value("it's here") == "'it\\'s here'"
    assert to_overrides({"learner__lr": 0.01, "seed": 3}) == ["learner.lr=0.01", "seed=3"]


def test_train_agent_runs_what_the_command_line_runs(tmp_path):
    """Same settings, same composed config and the identical run (same seed, same machine)."""
    api = train_agent(estimator="relax", seed=3, total_timesteps=1200, run_dir=tmp_path / "api", **QUIET)
    cli = subprocess.run(
        [sys.executable, "-m", "rl_relax.train", "estimator=relax", "seed=3", "total_timesteps=1200",
         "logging.progress=never", f"hydra.run.dir={tmp_path / 'cli'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert isinstance(api, TrainResult) and api.run_dir == tmp_path / "api"
    hydra_dirs = (api.run_dir / ".hydra", tmp_path / "cli" / ".hydra")
    assert len({(d / "config.yaml").read_text() for d in hydra_dirs}) == 1
    api_overrides, cli_overrides = (yaml.safe_load((d / "overrides.yaml").read_text()) for d in hydra_dirs)
    assert sorted(api_overrides) == sorted(cli_overrides)
    cli_summary = yaml.safe_load((tmp_path / "cli" / "summary.json").read_text())
    for key in ("timesteps", "episodes", "final_return_mean", "estimator", "seed"):
        assert api.summary[key] == cli_summary[key], key
    assert "done: 1200 steps" in (api.run_dir / "train.log").read_text()


def test_nested_settings_and_verbatim_overrides_reach_the_config(tmp_path):
    result = train_agent(
        "CartPole", seed=5, run_dir=tmp_path / "run", total_timesteps=400, learner__lr=0.002,
        policy__hidden_sizes=[32, 16], env__make_kwargs={"max_episode_steps": 50},
        overrides=["learner.gamma=0.95"], **QUIET,
    )  # fmt: skip
    cfg = result.config
    assert cfg.learner.lr == 0.002 and list(cfg.policy.hidden_sizes) == [32, 16] and cfg.learner.gamma == 0.95
    assert cfg.env.make_kwargs.max_episode_steps == 50 and cfg.seed == 5
    assert result.summary["timesteps"] == 400 and result.summary["final_length_mean"] <= 50
    agent = load_agent(result.run_dir)
    assert agent.policy.net.layers[0].out_features == 32 and agent.config.env.make_kwargs.max_episode_steps == 50


def test_the_default_run_directory_is_the_command_lines_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = train_agent(total_timesteps=200, **QUIET)
    assert result.run_dir.is_relative_to(tmp_path / "runs") and (result.run_dir / "summary.json").is_file()
    again = train_agent(total_timesteps=400, run_dir=result.run_dir, **QUIET)  # an existing run resumes
    assert again.summary["timesteps"] == 400 and "resumed from" in (result.run_dir / "train.log").read_text()


@pytest.mark.parametrize(
    ("settings", "needles"),
    [
        ({"learner__lrr": 0.1}, ["unknown setting 'learner.lrr'", "Did you mean learner.lr", "Fix"]),
        ({"env": "NoSuchEnv"}, ["unknown env option 'NoSuchEnv'", "CartPole", "LunarLander"]),
        ({"learner__gamma": 1.5}, ["learner.gamma=1.5 must be in (0, 1]"]),
    ],
)
def test_bad_settings_are_one_line_config_errors(settings, needles, tmp_path):
    with pytest.raises(ConfigError) as info:
        train_agent(run_dir=tmp_path / "run", total_timesteps=200, **settings, **QUIET)
    message = str(info.value)
    assert "\n" not in message and "+learner" not in message
    for needle in needles:
        assert needle in message


def test_the_rl_relax_logger_is_restored_after_a_run(tmp_path):
    logger = logging.getLogger("rl_relax")
    before = (logger.level, logger.propagate, list(logger.handlers))
    train_agent(run_dir=tmp_path / "run", total_timesteps=200, verbose=False, **QUIET)
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


def test_an_unwritable_run_directory_is_a_storage_error(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(StorageError, match=r"cannot write the run directory .*a_file/run .*Fix: pass a writable"):
        train_agent(run_dir=tmp_path / "a_file" / "run", total_timesteps=200, **QUIET)


def test_run_names_distinguish_experiments_and_stay_unchanged_without_one():
    """The command line's run directory (hydra.run.dir, printed by --cfg hydra) and the API's agree."""
    from rl_relax.api import compose_config

    cases = {
        (): "runs/CartPole-v1__relax__seed0/",
        ("experiment=CartPole_relax",): "runs/CartPole_relax/CartPole-v0__relax__seed0/",
        ("experiment=paper_CartPole",): "runs/paper_CartPole/CartPole-v0__relax__seed0/",
    }
    for extra, expected in cases.items():
        overrides = ["estimator=relax", *extra]
        assert str(compose_config(overrides).hydra.run.dir).startswith(expected), extra
    args = ["experiment=paper_CartPole", "estimator=relax", "--cfg", "all", "--resolve"]
    cli = subprocess.run([sys.executable, "-m", "rl_relax.train", *args], cwd=ROOT, capture_output=True, text=True,
                         check=True)  # fmt: skip
    run_dir = yaml.safe_load(cli.stdout)["hydra"]["run"]["dir"]
    assert run_dir.startswith("runs/paper_CartPole/CartPole-v0__relax__seed0/")


def test_the_hparams_are_the_python_settings(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    train_agent(estimator="relax", seed=1, total_timesteps=200, learner__lr=2e-3, run_dir=tmp_path / "r", **QUIET)
    acc = EventAccumulator(str(tmp_path / "r"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG]
    start = metadata.parse_session_start_info_plugin_data(content)
    assert {k: v.string_value or v.number_value for k, v in start.hparams.items()} == {
        "env.id": "CartPole-v1",
        "estimator.name": "relax",
        "estimator": "relax",
        "seed": 1,
        "learner.lr": 0.002,
        "total_timesteps": 200,
    }
