"""Gradient-variance summaries: what grad/log_variance and grad/log_variance_sampled compute."""

import math

import pytest
import torch

from rl_relax.variance import OnlineGradientVariance, sampled_log_variance


def test_sampled_log_variance_is_the_mean_log_of_per_parameter_sample_variances():
    grads = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 16.0]])
    # per-parameter sample variances (ddof 1): [4, 12]
    assert sampled_log_variance(grads) == pytest.approx((math.log(4.0) + math.log(12.0)) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        sampled_log_variance(grads[:1])


def test_online_estimate_tracks_a_known_variance():
    torch.manual_seed(0)
    stds = torch.tensor([0.1, 1.0, 5.0])
    tracker = OnlineGradientVariance(3, decay=0.99)
    assert math.isnan(tracker.log_variance())
    for _ in range(3000):
        tracker.update(torch.randn(3) * stds + torch.tensor([1.0, -2.0, 0.5]))
    expected = torch.log(stds.square()).mean().item()
    # An EMA with decay 0.99 averages ~200 samples: log-variance error ~ sqrt(2/200) per parameter.
    assert tracker.log_variance() == pytest.approx(expected, abs=0.3)
    # Power: a tracker fed 10x the noise reports ~log(100) more.
    louder = OnlineGradientVariance(3, decay=0.99)
    for _ in range(3000):
        louder.update(torch.randn(3) * stds * 10)
    assert louder.log_variance() - tracker.log_variance() == pytest.approx(math.log(100.0), abs=0.5)


def test_online_estimate_is_bias_corrected_early():
    tracker = OnlineGradientVariance(1, decay=0.99)
    tracker.update(torch.tensor([1.0]))
    tracker.update(torch.tensor([3.0]))
    # Two samples, bias-corrected weights ~(0.497, 0.503): variance ~1, not the ~0.02 of raw EMAs.
    assert tracker.log_variance() == pytest.approx(0.0, abs=0.05)


def test_online_state_round_trip():
    a = OnlineGradientVariance(2)
    for x in ([1.0, 2.0], [2.0, 0.0], [0.0, 1.0]):
        a.update(torch.tensor(x))
    b = OnlineGradientVariance(2)
    b.load_state_dict(a.state_dict())
    assert b.log_variance() == a.log_variance() and b.count == 3


# ----------------------------------------------------------------------------------------- the anatomy in use
ANATOMY = ["variance.anatomy_interval_steps=400", "variance.anatomy_states=2", "variance.anatomy_actions=3",
           "variance.anatomy_continuations=2"]  # fmt: skip
# An env replay cannot restore (tests/toy_envs.py): its random walk uses NumPy's global random state.
GLOBAL_NOISE_ENV = ["env=CartPole", "env.id=RlRelaxTest/GlobalNoise-v0", "env.import_module=tests.toy_envs"]


def test_the_anatomy_during_training_logs_its_scalars_and_leaves_training_unchanged(tmp_path):
    from rl_relax.train import train
    from tests.conftest import compose_config, read_scalars

    common = ["env=CartPole", "estimator=relax", "total_timesteps=800", "checkpoint.interval_steps=400"]
    with_probe = train(compose_config(*common, *ANATOMY), tmp_path / "on")
    without = train(compose_config(*common), tmp_path / "off")
    scalars = read_scalars(tmp_path / "on")
    assert [s for s, _ in scalars["variance/action_removed_by_cv"]] == [400, 800]
    assert {"variance/state", "variance/action", "variance/trajectory", "variance/share_action"} <= set(scalars)
    assert not any(tag.startswith("variance/") for tag in read_scalars(tmp_path / "off"))
    # The probe has its own envs and generator: the training run is the same with or without it.
    assert with_probe["final_return_mean"] == without["final_return_mean"]
    on, off = read_scalars(tmp_path / "on"), read_scalars(tmp_path / "off")
    assert on["train/policy_loss"] == off["train/policy_loss"]


def test_the_anatomy_runs_on_a_box2d_env_restored_by_replay(tmp_path):
    from rl_relax.train import train
    from tests.conftest import compose_config, read_scalars

    cfg = compose_config("env=LunarLander", "total_timesteps=400", "env.num_envs=2", "learner.num_steps=2", *ANATOMY)
    train(cfg, tmp_path / "run")
    scalars = read_scalars(tmp_path / "run")
    assert [s for s, _ in scalars["variance/action"]] == [400]
    assert all(math.isfinite(v) for tag in ("variance/state", "variance/action", "variance/trajectory")
               for _, v in scalars[tag])  # fmt: skip


@pytest.mark.parametrize("seeds", [[], ["num_seeds=2"]], ids=["one seed", "seed group"])
def test_an_env_the_anatomy_cannot_restore_is_refused_before_any_training(tmp_path, seeds):
    from rl_relax.env_state import StateNotRestorableError
    from rl_relax.train import train
    from tests.conftest import compose_config

    # The anatomy is due at step 400 and a checkpoint every 100 steps: refused at the start, nothing is trained.
    cfg = compose_config(*GLOBAL_NOISE_ENV, "total_timesteps=800", "env.num_envs=2", "learner.num_steps=2",
                         "checkpoint.interval_steps=100", *ANATOMY, *seeds)  # fmt: skip
    with pytest.raises(StateNotRestorableError, match=r"GlobalNoise-v0 cannot be restored by replaying.*Fix"):
        train(cfg, tmp_path / "run")
    assert not list(tmp_path.rglob("ckpt_*.pt"))


def test_the_entry_point_writes_table_csv_and_picture_for_chosen_checkpoints(tmp_path, capsys):
    from rl_relax.train import train
    from rl_relax.variance import main
    from tests.conftest import compose_config

    run = tmp_path / "run"
    train(compose_config("env=CartPole", "estimator=relax", "total_timesteps=800", "checkpoint.interval_steps=400",
                         "checkpoint.keep_last=3"), run)  # fmt: skip
    out = tmp_path / "anatomy"
    code = main([str(run), "--steps", "all", "--initial", "--states", "3", "--actions", "3", "--continuations", "2",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "env steps" in captured.err and "state 3/3" in captured.err  # cost and progress
    rows = (out / "variance_anatomy.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 4  # steps 0, 400, 800 x four estimators
    assert rows[1].startswith("0,initial,no_baseline")
    assert (out / "variance_anatomy.png").stat().st_size > 1000
    assert "| 800 | estimator's full control variate |" in (out / "variance_anatomy.md").read_text()


def test_the_entry_point_refuses_a_missing_run_and_an_unrestorable_env_in_one_line(tmp_path, capsys):
    from rl_relax.train import train
    from rl_relax.variance import main
    from tests.conftest import compose_config

    assert main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    run = tmp_path / "global_noise"
    train(compose_config(*GLOBAL_NOISE_ENV, "total_timesteps=40", "env.num_envs=2", "learner.num_steps=2"), run)
    assert main([str(run), "--states", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: RlRelaxTest/GlobalNoise-v0 cannot be restored") and err.count("\n") == 1
    assert not (run / "variance_anatomy").exists()  # nothing written
