"""End-to-end training runs: outputs, metrics, solved criterion, seeding, resume, divergence."""

import json
import shutil

import numpy as np
import pytest
import torch

from rl_relax import checkpoint as ckpt
from rl_relax.envs import shipped_env_options
from rl_relax.errors import CheckpointError, TrainingDivergedError
from rl_relax.evaluate import evaluate
from tests.conftest import read_scalars, read_scalars_as_served

TB_TAGS = {
    "rollout/ep_rew_mean", "rollout/ep_len_mean", "train/policy_loss", "train/value_loss", "train/entropy",
    "train/explained_variance", "train/learning_rate", "train/grad_norm", "time/fps",
}  # fmt: skip
SUMMARY_KEYS = {"env_id", "estimator", "seed", "total_timesteps", "episodes", "episodes_to_solve",
                "final_return_mean", "fps", "wall_time_s"}  # fmt: skip
COUNTER = ["env.id=RlRelaxTest/Counter-v0", "env.import_module=tests.toy_envs", "env.num_envs=2"]


@pytest.mark.parametrize("env", shipped_env_options())
def test_every_shipped_env_config_trains(env, run_training, tmp_path):
    """Smoke: a few updates of each shipped env option write TensorBoard, checkpoint and summary."""
    summary = run_training(f"env={env}", "env.num_envs=2", "learner.num_steps=64", "total_timesteps=1280")
    run_dir = tmp_path / "run"
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["timesteps"] == 1280 and summary["finished"] and summary["estimator"] == "baseline"
    assert (run_dir / "checkpoints" / "ckpt_000000001280.pt").is_file()
    scalars = read_scalars(run_dir)
    assert {"train/policy_loss", "train/value_loss", "time/fps", "train/grad_norm"} <= scalars.keys()
    assert all(np.isfinite(v) for _, v in scalars["train/value_loss"])


def test_outputs_metrics_and_step_axis(run_training, tmp_path):
    summary = run_training("total_timesteps=6000", "checkpoint.interval_steps=2000")
    run_dir = tmp_path / "run"
    scalars = read_scalars(run_dir)
    assert scalars.keys() >= TB_TAGS
    # x-axis = env steps summed over envs: the last point is the last step, a multiple of 8 x 5.
    assert scalars["time/fps"][-1][0] == 6000 == summary["timesteps"]
    assert all(step % 40 == 0 for step, _ in scalars["train/value_loss"])
    assert summary["episodes"] > 0 and summary["final_return_mean"] > 0
    assert [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")] == [
        "ckpt_000000004000.pt", "ckpt_000000006000.pt"]  # fmt: skip


def test_total_timesteps_is_a_lower_bound_rounded_up_to_whole_rollouts(run_training):
    assert run_training("total_timesteps=1001")["timesteps"] == 1040  # 26 rollouts of 8 x 5


def test_solved_criterion_counts_episodes_exactly(run_training, tmp_path):
    # Every Counter episode is 4 steps with return 4: the window of 3 is full after episode 3.
    summary = run_training(*COUNTER, "env.make_kwargs={max_episode_steps: 4}", "env.solved_threshold=4",
                           "env.solved_window=3", "total_timesteps=400")  # fmt: skip
    assert summary["episodes_to_solve"] == 3 and summary["solved_threshold"] == 4
    unsolvable = run_training(*COUNTER, "env.make_kwargs={max_episode_steps: 4}", "env.solved_threshold=4.5",
                              "env.solved_window=3", "total_timesteps=400", run_dir=tmp_path / "b")  # fmt: skip
    assert unsolvable["episodes_to_solve"] is None


def test_stop_when_solved_stops_early(run_training):
    summary = run_training(*COUNTER, "env.make_kwargs={max_episode_steps: 4}", "env.solved_threshold=4",
                           "env.solved_window=3", "total_timesteps=100000", "stop_when_solved=true")  # fmt: skip
    assert summary["episodes_to_solve"] == 3 and summary["timesteps"] < 100


def test_same_seed_same_curve_different_seed_different_curve(run_training, tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        run_training(f"seed={seed}", "total_timesteps=4000", run_dir=tmp_path / name)
        runs[name] = read_scalars(tmp_path / name)
    for tag in ("rollout/ep_rew_mean", "train/policy_loss", "train/value_loss", "train/grad_norm"):
        assert runs["a"][tag] == runs["b"][tag], tag
    assert runs["a"]["train/value_loss"] != runs["c"]["train/value_loss"]
    weights = [ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / n / "checkpoints"))["policy"] for n in "abc"]
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key])
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_rerunning_in_the_same_dir_resumes_and_continues_the_curves(run_training, tmp_path):
    run_dir = tmp_path / "run"
    first = run_training("total_timesteps=2000", "checkpoint.interval_steps=1000", run_dir=run_dir)
    second = run_training("total_timesteps=4000", "checkpoint.interval_steps=1000", run_dir=run_dir)
    assert second["timesteps"] == 4000 and second["updates"] == 100
    assert second["episodes"] > first["episodes"]
    assert second["wall_time_s"] > first["wall_time_s"]
    steps = [s for s, _ in read_scalars(run_dir)["train/value_loss"]]
    assert steps == sorted(steps) and steps[-1] == 4000 and min(steps) < 2000  # one continuous curve
    assert len(steps) == len(set(steps))  # no step logged twice
    # Re-running a finished run does no more work.
    assert run_training("total_timesteps=4000", run_dir=run_dir)["updates"] == 100


def test_resume_restores_optimizer_normalizers_and_counters(run_training, make_cfg, tmp_path):
    from rl_relax.trainer import Trainer

    run_dir = tmp_path / "run"
    run_training("env=Pendulum", "total_timesteps=1600", run_dir=run_dir)
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir / "checkpoints"))
    trainer = Trainer(make_cfg("env=Pendulum", "total_timesteps=1600"), run_dir)
    trainer.restore(saved, run_dir)
    assert trainer.global_step == 1600 and trainer.episodes == saved["counters"]["episodes"]
    np.testing.assert_allclose(trainer.env.obs_norm.obs_rms.mean, saved["normalizers"]["obs"]["mean"].numpy())
    assert saved["normalizers"]["obs"]["count"] > 1000  # the statistics really were updated
    assert trainer.learner.optimizer.state_dict()["state"]  # RMSprop's running averages came back
    trainer.env.close()


def test_a_checkpoint_from_another_architecture_or_env_is_refused(run_training, tmp_path):
    run_dir = tmp_path / "run"
    run_training("total_timesteps=400", run_dir=run_dir)
    before = sorted(p.read_bytes() for p in (run_dir / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match=r"architecture.*policy"):
        run_training("total_timesteps=800", "policy.hidden_sizes=[32]", run_dir=run_dir)
    with pytest.raises(CheckpointError, match="env id"):
        run_training("env=Acrobot", "total_timesteps=800", run_dir=run_dir)
    assert sorted(p.read_bytes() for p in (run_dir / "checkpoints").iterdir()) == before


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one_and_is_kept_aside(run_training, tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_training("total_timesteps=400", run_dir=run_dir)
    corrupt = run_dir / "checkpoints" / "ckpt_000000999999.pt"
    corrupt.write_bytes(b"\x00garbage")
    summary = run_training("total_timesteps=800", run_dir=run_dir)  # resumes from step 400, with a warning
    assert summary["timesteps"] == 800 and summary["updates"] == 20
    assert "ckpt_000000999999.pt is corrupt" in caplog.text and "resumed from" in caplog.text
    aside = corrupt.with_name(corrupt.name + ".corrupt")
    assert not corrupt.exists() and aside.read_bytes() == b"\x00garbage"  # kept for inspection, out of rotation
    assert [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")][-1] == "ckpt_000000000800.pt"


def test_when_every_checkpoint_is_corrupt_the_error_names_them_and_nothing_is_moved(run_training, tmp_path):
    run_dir = tmp_path / "run"
    run_training("total_timesteps=800", "checkpoint.interval_steps=400", run_dir=run_dir)
    files = ckpt.list_checkpoints(run_dir / "checkpoints")
    assert len(files) == 2
    for path in files:
        path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match=r"no intact checkpoint.*ckpt_000000000800.*ckpt_000000000400.*Fix"):
        run_training("total_timesteps=1200", run_dir=run_dir)
    assert ckpt.list_checkpoints(run_dir / "checkpoints") == files


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(run_training, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="non-finite at environment step") as info:
        run_training(*COUNTER, "env.make_kwargs={nan_after: 75}", "total_timesteps=2000",
                     "checkpoint.interval_steps=100", "learner.num_steps=10", run_dir=run_dir)  # fmt: skip
    step = int(str(info.value).split("environment step ")[1].split(" ")[0])
    assert 150 <= step <= 200  # each of the 2 envs turns NaN after 75 of its own steps
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    assert latest is not None and int(latest.stem.split("_")[1]) < step
    good = ckpt.load_checkpoint(latest)
    assert all(torch.isfinite(t).all() for t in good["policy"].values())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and not summary["finished"]


def test_evaluate_runs_episodes_with_the_saved_normalizer(run_training, tmp_path):
    run_training("env=Pendulum", "total_timesteps=1600")
    result = evaluate(tmp_path / "run", episodes=3)
    assert len(result["returns"]) == 3 and result["length_mean"] == 200  # Pendulum's time limit
    assert result["return_mean"] < 0
    stochastic = evaluate(tmp_path / "run", episodes=3, deterministic=False)
    assert stochastic["returns"] != result["returns"]


@pytest.mark.slow
def test_cartpole_actually_learns(run_training):
    """The default CartPole config solves CartPole-v1 (mean >= 475 over 100 episodes) within 350k steps.

    scripts/check_learning.py measured 229k-243k steps to solve for seeds 0-3 (results/).
    """
    summary = run_training("seed=0", "total_timesteps=350000", "stop_when_solved=true")
    assert summary["episodes_to_solve"] is not None, summary
    assert summary["final_return_mean"] >= 475


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sync_and_async_vector_envs_train(mode, run_training):
    summary = run_training(f"env.vectorization={mode}", "env.num_envs=2", "total_timesteps=400")
    assert summary["timesteps"] == 400 and summary["episodes"] > 0


GRAD_TAGS = {"grad/log_variance", "grad/pg_norm", "grad/log_variance_sampled"}
CV_TAGS = {"cv/loss", "grad/log_variance_sampled_baseline", "grad/variance_ratio_sampled"}


@pytest.mark.parametrize(
    ("env", "estimator", "extra_tags"),
    [
        ("CartPole", "baseline", set()),
        ("CartPole", "relax", CV_TAGS | {"cv/temperature"}),
        ("Pendulum", "lax", CV_TAGS),
        ("InvertedPendulum", "lax", CV_TAGS),
    ],
)
def test_estimators_train_and_write_every_metric(env, estimator, extra_tags, run_training, tmp_path):
    summary = run_training(f"env={env}", f"estimator={estimator}", "total_timesteps=2560",
                           "variance.interval_steps=1280", "variance.num_batches=5")  # fmt: skip
    assert summary["estimator"] == estimator and summary["timesteps"] == 2560
    scalars = read_scalars(tmp_path / "run")
    assert TB_TAGS | GRAD_TAGS | extra_tags <= scalars.keys()
    assert [s for s, _ in scalars["grad/log_variance_sampled"]] == [1280, 2560]
    assert all(np.isfinite(v) for _, v in scalars["grad/log_variance"][1:])
    if "cv/loss" in extra_tags:  # the ratio is the estimator's variance over the baseline's, same batches
        pairs = zip(scalars["grad/variance_ratio_sampled"], scalars["grad/log_variance_sampled"],
                    scalars["grad/log_variance_sampled_baseline"], strict=True)  # fmt: skip
        for (_, ratio), (_, mine), (_, base) in pairs:
            assert ratio == pytest.approx(np.exp(mine - base), rel=1e-5) and ratio != 1.0


def test_control_variate_state_survives_resume(run_training, tmp_path):
    run_dir = tmp_path / "run"
    run_training("estimator=relax", "total_timesteps=800", run_dir=run_dir)
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir / "checkpoints"))
    assert any(k.startswith("cv.") for k in saved["estimator"]) and "log_temperature" in saved["estimator"]
    assert saved["estimator_extra"]["cv_optimizer"]["state"]  # Adam moments of phi
    assert run_training("estimator=relax", "total_timesteps=1600", run_dir=run_dir)["timesteps"] == 1600


def test_wrong_estimator_for_the_action_space_is_a_clear_error(run_training):
    from rl_relax.errors import ConfigError

    with pytest.raises(ConfigError, match="use estimator=lax"):
        run_training("env=Pendulum", "estimator=relax", "total_timesteps=100")
    with pytest.raises(ConfigError, match="use estimator=relax"):
        run_training("env=CartPole", "estimator=lax", "total_timesteps=100")


@pytest.mark.parametrize("overrides", [["estimator.cv_steps=3"], ["estimator.cv_objective=dist_params"]])
def test_control_variate_options_train(overrides, run_training, tmp_path):
    summary = run_training("estimator=relax", "total_timesteps=800", *overrides)
    assert summary["timesteps"] == 800
    losses = [v for _, v in read_scalars(tmp_path / "run")["cv/loss"]]
    assert len(set(losses)) > 1 and all(np.isfinite(v) for v in losses)  # logged, and phi moved


# ----------------------------------------------------------------------------- run identity and resume (issue 16)
def _files(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_checkpoint_of_another_seed_is_refused(run_training, tmp_path):
    run_dir = tmp_path / "run"
    run_training("seed=7", "total_timesteps=400", run_dir=run_dir)
    before = _files(run_dir / "checkpoints")
    with pytest.raises(CheckpointError, match=r"different seed: 7, this run has 8\. Fix: use seed=7"):
        run_training("seed=8", "total_timesteps=800", run_dir=run_dir)
    assert _files(run_dir / "checkpoints") == before


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["policy.activation=relu"], r"policy\.activation='tanh' in the checkpoint, 'relu' in this run"),
        (["value.activation=elu"], r"value\.activation='tanh' in the checkpoint, 'elu' in this run"),
        (["estimator.activation=tanh"], r"estimator\.activation='relu' in the checkpoint, 'tanh' in this run"),
        (["estimator.learn_temperature=false"], r"frozen parameters=\[\] in the checkpoint"),
        (["learner.optimizer=adam"], r"different optimizer: 'rmsprop', this run has 'adam'"),
    ],
)
def test_an_architecture_or_optimizer_change_is_refused(overrides, message, run_training, tmp_path):
    run_dir = tmp_path / "run"
    run_training("estimator=relax", "total_timesteps=400", run_dir=run_dir)
    before = _files(run_dir)
    with pytest.raises(CheckpointError, match=message):
        run_training("estimator=relax", "total_timesteps=800", *overrides, run_dir=run_dir)
    assert _files(run_dir) == before  # nothing written, nothing lost


def test_resume_applies_the_configured_optimizer_hyperparameters(run_training, make_cfg, tmp_path):
    """The command line's lr, betas, eps and alpha reach the restored optimizers (the checkpoint's
    values used to win silently, while .hydra/config.yaml recorded the new ones)."""
    from rl_relax.trainer import Trainer

    run_dir = tmp_path / "run"
    run_training("estimator=relax", "learner.optimizer=adam", "total_timesteps=400", run_dir=run_dir)
    new = ["estimator=relax", "learner.optimizer=adam", "total_timesteps=800", "estimator.cv_lr=0.02",
           "estimator.cv_adam_betas=[0.5,0.6]", "learner.eps=0.001", "learner.adam_betas=[0.8,0.9]"]  # fmt: skip
    trainer = Trainer(make_cfg(*new), run_dir)
    path, payload = ckpt.load_latest_valid(run_dir / "checkpoints")
    moments = payload["estimator_extra"]["cv_optimizer"]["state"][0]["exp_avg"].clone()
    trainer.restore(payload, path)
    cv_group = trainer.estimator.cv_optimizer.param_groups[0]
    assert cv_group["lr"] == 0.02 and tuple(cv_group["betas"]) == (0.5, 0.6)
    learner_group = trainer.learner.optimizer.param_groups[0]
    assert learner_group["eps"] == 0.001 and tuple(learner_group["betas"]) == (0.8, 0.9)
    # ...while the optimizers' state (Adam's moments) is the checkpoint's.
    torch.testing.assert_close(trainer.estimator.cv_optimizer.state_dict()["state"][0]["exp_avg"], moments)
    trainer.env.close()
    run_training(*new, run_dir=run_dir)
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir / "checkpoints"))
    assert saved["estimator_extra"]["cv_optimizer"]["param_groups"][0]["lr"] == 0.02


def test_resume_applies_the_configured_rmsprop_alpha_and_eps(run_training, make_cfg, tmp_path):
    from rl_relax.trainer import Trainer

    run_dir = tmp_path / "run"
    run_training("total_timesteps=400", run_dir=run_dir)
    trainer = Trainer(make_cfg("total_timesteps=800", "learner.rmsprop_alpha=0.9", "learner.eps=1e-3"), run_dir)
    trainer.restore(*reversed(ckpt.load_latest_valid(run_dir / "checkpoints")))
    group = trainer.learner.optimizer.param_groups[0]
    assert group["alpha"] == 0.9 and group["eps"] == 1e-3
    trainer.env.close()


def test_resume_false_moves_the_earlier_run_aside_instead_of_mixing(run_training, tmp_path):
    """The old run's higher-step checkpoints used to win the keep_last rotation and delete the new
    run's own files; evaluate then loaded the old policy."""
    run_dir = tmp_path / "run"
    run_training("seed=1", "total_timesteps=1200", "checkpoint.interval_steps=400", run_dir=run_dir)
    old = _files(run_dir)
    summary = run_training("seed=2", "total_timesteps=400", "checkpoint.interval_steps=200", "checkpoint.resume=false",
                           run_dir=run_dir)  # fmt: skip
    assert summary["seed"] == 2 and summary["timesteps"] == 400
    assert [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")] == [
        "ckpt_000000000200.pt", "ckpt_000000000400.pt"]  # fmt: skip
    assert evaluate(run_dir, episodes=1)["checkpoint"].endswith("ckpt_000000000400.pt")
    (aside,) = (run_dir / "previous_runs").iterdir()
    assert {k: v for k, v in _files(aside).items()} == old_moved(old)
    steps = [s for s, _ in read_scalars(run_dir)["train/value_loss"]]
    assert steps[-1] == 400 and len(steps) == len(set(steps))  # only the new run's curve in run_dir


def old_moved(old: dict) -> dict:
    """The earlier run's files as they sit after moving: checkpoints, events and summary.json."""
    from pathlib import Path

    keep = {}
    for rel, data in old.items():
        top = rel.parts[0]
        if top == "checkpoints" or top.startswith("events.out.tfevents") or top == "summary.json":
            keep[Path(*rel.parts)] = data
    return keep


def test_rerunning_a_finished_run_writes_nothing(run_training, tmp_path):
    run_dir = tmp_path / "run"
    run_training("total_timesteps=400", run_dir=run_dir)
    before = _files(run_dir)
    summary = run_training("total_timesteps=400", run_dir=run_dir)
    after = _files(run_dir)
    after.pop(next(k for k in after if k.name == ".lock"), None)
    before.pop(next(k for k in before if k.name == ".lock"), None)
    assert after == before  # no new TensorBoard file, summary.json byte for byte the same
    assert summary["fps"] > 0 and summary["finished"]


def test_resume_keeps_the_point_at_the_resume_step_and_drops_a_crashed_process_ghosts(run_training, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "run"
    common = ["logging.interval_steps=40", "checkpoint.interval_steps=200"]
    run_training("total_timesteps=400", *common, run_dir=run_dir)
    # A process that crashed after the checkpoint at 400 had logged two more points.
    ghost = SummaryWriter(str(run_dir), filename_suffix=".ghost")
    for step in (440, 480):
        ghost.add_scalar("train/value_loss", 12345.0, step)
    ghost.close()
    run_training("total_timesteps=800", *common, run_dir=run_dir)
    for read in (read_scalars, read_scalars_as_served):  # the legacy reader (summarize) and TensorBoard's server
        points = read(run_dir)["train/value_loss"]
        steps = [s for s, _ in points]
        assert steps == list(range(40, 801, 40))  # every update once, including 400, the resume step
        assert 12345.0 not in [v for _, v in points]


def test_a_fresh_start_purges_the_points_of_an_attempt_that_never_checkpointed(run_training, tmp_path):
    """An attempt that crashed before its first checkpoint left only events: a fresh start in the directory
    hides them, for TensorBoard's server too (which ignores a run's first SessionLog.START, so every attempt
    must write one)."""
    common = ["total_timesteps=400", "logging.interval_steps=40", "checkpoint.interval_steps=100000"]
    crashed, clean = tmp_path / "run", tmp_path / "clean"
    run_training(*common, "seed=1", run_dir=crashed)
    shutil.rmtree(crashed / "checkpoints")  # as if it had died before writing one
    (crashed / "summary.json").unlink()
    run_training(*common, run_dir=crashed)
    run_training(*common, run_dir=clean)
    for read in (read_scalars, read_scalars_as_served):
        assert read(crashed)["train/value_loss"] == read(clean)["train/value_loss"]


def test_a_non_finite_control_variate_is_never_checkpointed(make_cfg, tmp_path):
    """A control variate that blows up between updates (finite loss, non-finite weights) must not
    reach a checkpoint: resuming from it would diverge at every attempt. The error names cv_lr."""
    from rl_relax.trainer import Trainer

    run_dir = tmp_path / "run"
    trainer = Trainer(make_cfg("estimator=relax", "total_timesteps=800", "checkpoint.interval_steps=200"), run_dir)
    update = trainer.learner.update

    def blowing_up(buf, global_step, diagnostics=False):
        stats = update(buf, global_step, diagnostics=diagnostics)
        if global_step == 400:  # right before the checkpoint at 400
            with torch.no_grad():
                next(trainer.estimator.cv.parameters()).fill_(float("inf"))
        return stats

    trainer.learner.update = blowing_up
    with pytest.raises(TrainingDivergedError, match=r"estimator\.cv\..*Fix: .*estimator\.cv_lr"):
        trainer.run()
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    assert latest.name == "ckpt_000000000200.pt"  # the last good one
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"


def test_a_non_finite_optimizer_state_names_the_learning_rate(make_cfg, tmp_path):
    from rl_relax.trainer import Trainer

    trainer = Trainer(make_cfg("total_timesteps=400", "checkpoint.interval_steps=200"), tmp_path / "run")
    update = trainer.learner.update

    def corrupting(buf, global_step, diagnostics=False):
        stats = update(buf, global_step, diagnostics=diagnostics)
        if global_step >= 200:
            for state in trainer.learner.optimizer.state.values():
                state["square_avg"][0] = float("nan")
        return stats

    trainer.learner.update = corrupting
    with pytest.raises(TrainingDivergedError, match=r"learner\.optimizer\.state.*learner\.lr"):
        trainer.run()
    assert not (tmp_path / "run" / "checkpoints").exists() or not ckpt.list_checkpoints(
        tmp_path / "run" / "checkpoints"
    )


def test_fps_counts_training_only_and_probe_and_eval_seconds_are_logged_apart(run_training, tmp_path, monkeypatch):
    """A probe and an evaluation that take 0.4 s each: fps leaves those seconds out, time/* reports them."""
    import time

    from rl_relax.evaluation import PeriodicEvaluation
    from rl_relax.variance import SampledVarianceProbe

    for cls, name in ((SampledVarianceProbe, "measure"), (PeriodicEvaluation, "evaluate")):
        original = getattr(cls, name)

        def slow(self, *args, _original=original, **kwargs):
            time.sleep(0.4)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, slow)
    summary = run_training("total_timesteps=800", "variance.interval_steps=400", "variance.num_batches=2",
                           "eval.interval_steps=400", "eval.episodes=1")  # fmt: skip
    scalars = read_scalars(tmp_path / "run")
    assert [s for s, _ in scalars["time/probe_s"]] == [400, 800] == [s for s, _ in scalars["time/eval_s"]]
    assert all(v >= 0.4 for _, v in scalars["time/probe_s"] + scalars["time/eval_s"])
    side = summary["probe_time_s"] + summary["eval_time_s"]
    assert side >= 1.6 and summary["probe_time_s"] == pytest.approx(sum(v for _, v in scalars["time/probe_s"]), 1e-4)
    # Training seconds = wall time - probe - evaluation (an fps over the wall time would be off by 1.6 s).
    assert summary["timesteps"] / summary["fps"] == pytest.approx(summary["wall_time_s"] - side, abs=0.25)
    step, fps = scalars["time/fps"][-1]
    assert step / fps < summary["wall_time_s"] - side + 0.25


def _hparams_records(run_dir):
    """The HParams plugin's records in a run's event files: [(tag, step, plugin content)], in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    records = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    records.append((value.tag, event.step, value.metadata.plugin_data.content))
    return records


def test_each_run_writes_its_hparams_and_final_metrics_for_the_hparams_tab(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, metadata

    from rl_relax.train import train
    from tests.conftest import compose_config

    overrides = ["estimator=relax", "learner.lr=0.001", "seed=2", "env.normalize_observation=true",
                 "variance.interval_steps=400", "variance.num_batches=2", "device=cpu", "hydra.run.dir=x"]  # fmt: skip
    summary = train(compose_config(*overrides[:-1], "total_timesteps=800"), tmp_path / "run", overrides)
    acc = EventAccumulator(str(tmp_path / "run"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hparams = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    # The overrides that define the run (typed values), plus env, estimator and seed; not device or hydra.*.
    assert hparams == {"env.id": "CartPole-v1", "estimator.name": "relax", "estimator": "relax", "seed": 2,
                       "learner.lr": 0.001, "env.normalize_observation": "true", "variance.interval_steps": 400,
                       "variance.num_batches": 2}  # fmt: skip
    assert start.hparams["learner.lr"].WhichOneof("kind") == "number_value"
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    assert metadata.EXPERIMENT_TAG not in content  # TensorBoard builds the experiment from every run's session
    scalars = read_scalars(tmp_path / "run")
    assert scalars["hparams/final_return"] == [(800, pytest.approx(summary["final_return_mean"]))]
    assert scalars["hparams/variance_ratio"] == [(800, pytest.approx(summary["variance_ratio_mean"]))]
    ratios = [v for _, v in scalars["grad/variance_ratio_sampled"]]
    assert summary["variance_ratio_mean"] == pytest.approx(float(np.exp(np.mean(np.log(ratios)))), rel=1e-5)
    assert "hparams/episodes_to_solve" not in scalars  # not solved: no value rather than a fake one


def test_hparams_session_starts_once_across_resume_and_a_finished_rerun_adds_nothing(run_training, tmp_path):
    run_training(*COUNTER, "env.make_kwargs={max_episode_steps: 4}", "env.solved_threshold=4",
                 "env.solved_window=3", "total_timesteps=400")  # fmt: skip
    run_training(
        *COUNTER,
        "env.make_kwargs={max_episode_steps: 4}",
        "env.solved_threshold=4",
        "env.solved_window=3",
        "total_timesteps=800",
    )  # fmt: skip  (resumes to 800)
    records = _hparams_records(tmp_path / "run")
    starts = [step for tag, step, _ in records if tag == "_hparams_/session_start_info"]
    assert starts == [0]
    assert read_scalars(tmp_path / "run")["hparams/episodes_to_solve"] == [(400, 3.0), (800, 3.0)]
    before = _files(tmp_path / "run")
    run_training(*COUNTER, "env.make_kwargs={max_episode_steps: 4}", "env.solved_threshold=4",
                 "env.solved_window=3", "total_timesteps=800")  # fmt: skip
    assert _files(tmp_path / "run") == before
