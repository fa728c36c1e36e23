"""scripts/levers.py, the equal-budget search and 10-seed report of issue 13, on hand-built run directories.

No training: every run is a ``summary.json`` and a TensorBoard event file as the trainer writes them, laid
out as the script reads them (``<runs>/<env>/<row slug>/{search/<config slug>,report}/seed<k>/``).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from rl_relax.config import validate
from rl_relax.errors import ConfigError
from rl_relax.seed_group import check_num_seeds
from scripts import levers

THRESHOLD, BUDGET = 195.0, 250_000  # configs/experiment/paper_CartPole.yaml, read by the script
STEPS = [50_000, 100_000, 150_000, 200_000, 250_000]


# --------------------------------------------------------------------------------------- fake runs
def write_scalars(run_dir: Path, scalars: dict[str, list[tuple[int, float]]]) -> None:
    """A TensorBoard event file with these scalars (simple values, as SummaryWriter.add_scalar writes them)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(run_dir))
    for tag, points in scalars.items():
        for step, value in points:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    writer.close()


def fake_run(run_dir: Path, curve: list[tuple[int, float]], **summary) -> Path:
    """A seed's run directory (replaced if there): summary.json, a finished unsolved run unless told otherwise,
    and its scalars."""
    shutil.rmtree(run_dir, ignore_errors=True)  # a second event file would add to the first's scalars
    scalars = summary.pop("scalars", {})
    data = {"env_id": "CartPole-v0", "total_timesteps": BUDGET, "timesteps": BUDGET, "episodes": 1500,
            "solved_threshold": THRESHOLD, "solved_window": 100, "episodes_to_solve": None, "steps_to_solve": None,
            "final_return_mean": curve[-1][1] if curve else None, "finished": True, "status": "ok",
            **summary}  # fmt: skip
    write_scalars(run_dir, {"rollout/ep_rew_mean": curve, **scalars})
    (run_dir / "summary.json").write_text(json.dumps(data))
    return run_dir


def flat(value: float) -> list[tuple[int, float]]:
    """A return curve holding ``value`` over the whole budget: its area is value / THRESHOLD."""
    return [(step, value) for step in STEPS]


def config_dir(row_dir: Path, config: dict[str, str]) -> Path:
    return row_dir / "search" / levers.slug(",".join(f"{k}={v}" for k, v in config.items()))


def fake_search(row_dir: Path, estimator: str, best: int, best_value: float = 150.0, other: float = 100.0) -> None:
    """All 9 configurations on the 3 selection seeds; configuration ``best`` (grid order) has the largest area."""
    for i, config in enumerate(levers.configurations(estimator)):
        for seed in range(levers.SELECTION_SEED, levers.SELECTION_SEED + levers.SELECTION_COUNT):
            fake_run(config_dir(row_dir, config) / f"seed{seed}", flat(best_value if i == best else other), seed=seed)


def run_main(monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["levers.py", *argv])
    levers.main()


# --------------------------------------------------------------------------------------- area
def test_area_holds_each_point_since_the_previous_one_and_counts_a_run_cut_short_as_zero():
    run = {"scalars": {"rollout/ep_rew_mean": [(100, 10.0), (300, 20.0), (400, 40.0)]}}
    # 10 over [0, 100] (before the first point: the first point's value), 20 over (100, 300], 40 over (300, 400],
    # and 0 over the remaining 600 steps of the budget.
    expected = (100 * 10 + 200 * 20 + 100 * 40) / (1000 * 20)
    assert levers.area(run, threshold=20.0, budget=1000) == pytest.approx(expected) == pytest.approx(0.45)
    assert expected != pytest.approx(np.mean([10, 20, 40]) / 20)  # not the mean of the logged points
    forward_hold = (200 * 10 + 100 * 20 + 700 * 40) / (1000 * 20)  # each point held until the next / the end
    assert expected != pytest.approx(forward_hold)
    full = {"scalars": {"rollout/ep_rew_mean": [(500, 20.0), (1000, 20.0)]}}
    assert levers.area(full, threshold=20.0, budget=1000) == pytest.approx(1.0)  # solved from the start
    assert levers.area({"scalars": {}}, threshold=20.0, budget=1000) == 0.0  # never finished an episode
    # A negative threshold scales by its size (the sign of the returns is kept); no threshold: per step only.
    assert levers.area(full, threshold=-40.0, budget=1000) == pytest.approx(0.5)
    assert levers.area(full, threshold=0.0, budget=1000) == pytest.approx(20.0)


# --------------------------------------------------------------------------------------- episodes_cost
def test_episodes_cost_is_the_episodes_to_solve_or_the_episodes_run_plus_one_window():
    assert levers.episodes_cost({"episodes_to_solve": 417, "episodes": 1483, "solved_window": 100}) == 417.0
    assert levers.episodes_cost({"episodes_to_solve": None, "episodes": 1483, "solved_window": 100}) == 1583.0
    assert levers.episodes_cost({"episodes": 900, "solved_window": 50}) == 950.0  # no key: unsolved
    # An unsolved run never ranks better than a run that solved in the episodes it ran.
    assert levers.episodes_cost({"episodes_to_solve": None, "episodes": 10, "solved_window": 100}) > 10


# --------------------------------------------------------------------------------------- bootstrap_ci
def test_bootstrap_ci_covers_the_true_difference_of_separated_samples_and_excludes_zero():
    rng = np.random.default_rng(123)
    a, b = list(rng.normal(10.0, 1.0, 10)), list(rng.normal(0.0, 1.0, 10))
    diff, low, high = levers.bootstrap_ci(a, b)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert low < 10.0 < high and low > 0
    # The percentile interval of a difference of means: about +/- 1.96 standard errors (the bootstrap's plug-in
    # variance, ddof=0). Resampling the pooled seeds, or the seeds' spread instead of the mean's, would not be.
    se = math.sqrt(np.var(a) / len(a) + np.var(b) / len(b))
    assert (high - low) / 2 == pytest.approx(1.96 * se, rel=0.12)
    assert low < diff < high


def test_bootstrap_ci_includes_zero_for_identical_distributions_and_is_deterministic():
    rng = np.random.default_rng(7)
    a, b = list(rng.normal(5.0, 2.0, 10)), list(rng.normal(5.0, 2.0, 10))
    diff, low, high = levers.bootstrap_ci(a, b)
    assert low < 0 < high and low < diff < high
    same, same_low, same_high = levers.bootstrap_ci(a, a)
    assert same == 0.0 and same_low < 0 < same_high
    assert levers.bootstrap_ci(a, b) == (diff, low, high)  # a fixed generator: the table does not change
    assert levers.bootstrap_ci([1.0], b) is None and levers.bootstrap_ci(a, []) is None
    assert levers.bootstrap_ci([1.0, 2.0], [0.0, 0.0]) is not None


# --------------------------------------------------------------------------------------- select
@pytest.fixture
def baseline_row(tmp_path: Path) -> Path:
    row_dir = tmp_path / "CartPole" / levers.slug("baseline")
    fake_search(row_dir, "baseline", best=5)
    return row_dir


def test_select_picks_the_configuration_with_the_largest_mean_area(baseline_row):
    best, ranked = levers.select("CartPole", "baseline", "baseline", baseline_row, THRESHOLD, BUDGET)
    configs = levers.configurations("baseline")
    assert {k: best[k] for k in configs[5]} == configs[5] == {"learner.lr": "0.001", "learner.ent_coef": "0.03"}
    assert best["area_mean"] == pytest.approx(150.0 / THRESHOLD) and best["solved"] == 0
    assert len(ranked) == 9 and ranked[0] is best
    assert [r["area_mean"] for r in ranked[1:]] == pytest.approx([100.0 / THRESHOLD] * 8)


def test_select_counts_a_diverged_run_as_area_zero(baseline_row):
    # Configuration 0 has the largest returns, but one of its seeds diverged: (190 + 190 + 0) / 3 < 150.
    config = levers.configurations("baseline")[0]
    for seed in (100, 101):
        fake_run(config_dir(baseline_row, config) / f"seed{seed}", flat(190.0), episodes_to_solve=400)
    fake_run(config_dir(baseline_row, config) / "seed102", flat(190.0), finished=False, status="diverged")
    best, ranked = levers.select("CartPole", "baseline", "baseline", baseline_row, THRESHOLD, BUDGET)
    assert best["learner.ent_coef"] == "0.03" and best["learner.lr"] == "0.001"
    diverged = next(r for r in ranked if all(r[k] == v for k, v in config.items()))
    assert diverged["area_mean"] == pytest.approx(2 * 190.0 / THRESHOLD / 3) and diverged["solved"] == 2


@pytest.mark.parametrize("problem", ["missing seed", "interrupted", "still running"])
def test_select_refuses_a_search_that_lacks_finished_runs(baseline_row, problem):
    config = levers.configurations("baseline")[7]
    seed_dir = config_dir(baseline_row, config) / "seed101"
    if problem == "missing seed":
        shutil.rmtree(seed_dir)
    else:  # interrupted: the stop signal's summary; still running: the summary written at each checkpoint
        status = "interrupted" if problem == "interrupted" else "ok"
        fake_run(seed_dir, flat(100.0), finished=False, status=status)
    with pytest.raises(SystemExit) as info:
        levers.select("CartPole", "baseline", "baseline", baseline_row, THRESHOLD, BUDGET)
    assert info.value.code == (
        f"error: the search of CartPole / baseline lacks finished runs for {config}; run it first (without "
        "--tabulate-only)."
    )


# --------------------------------------------------------------------------------------- mean_curve
def test_mean_curve_is_the_mean_and_standard_error_over_the_seeds_that_reached_each_step():
    budget = 10 * (levers.CURVE_POINTS - 1)  # the curve's steps: 0, 10, 20, ...
    runs = [
        {"scalars": {"rollout/ep_rew_mean": [(500, 10.0), (1000, 20.0), (budget, 30.0)]}},
        {"scalars": {"rollout/ep_rew_mean": [(500, 20.0), (1000, 40.0), (budget, 60.0)]}},
        {"scalars": {"rollout/ep_rew_mean": [(500, 30.0), (1000, 60.0)]}},  # cut short after step 1000
    ]
    steps, mean, sem = levers.mean_curve(runs, budget)
    assert steps == pytest.approx(np.arange(0, budget + 1, 10))
    at = {int(s): i for i, s in enumerate(steps)}
    # Each point holds since the previous one (as in area): step 500 still shows the first point.
    for step in (0, 250, 500):
        assert mean[at[step]] == pytest.approx(20.0) and sem[at[step]] == pytest.approx(10.0 / math.sqrt(3))
    for step in (510, 1000):
        assert mean[at[step]] == pytest.approx(40.0) and sem[at[step]] == pytest.approx(20.0 / math.sqrt(3))
    # After step 1000 the third seed no longer contributes (counting it as 0 would give a mean of 30).
    for step in (1010, budget):
        assert mean[at[step]] == pytest.approx(45.0)
        assert sem[at[step]] == pytest.approx(statistics.stdev([30.0, 60.0]) / math.sqrt(2)) == pytest.approx(15.0)


def test_mean_curve_of_one_seed_has_no_spread_and_a_seed_without_points_is_left_out():
    budget = 10 * (levers.CURVE_POINTS - 1)
    one = {"scalars": {"rollout/ep_rew_mean": [(budget, 7.0)]}}
    _, mean, sem = levers.mean_curve([one], budget)
    assert mean == pytest.approx(np.full(levers.CURVE_POINTS, 7.0)) and not sem.any()
    _, mean, _ = levers.mean_curve([one, one, {"scalars": {}}], budget)
    assert mean == pytest.approx(np.full(levers.CURVE_POINTS, 7.0))


# --------------------------------------------------------------------------------------- rows and grid
@pytest.mark.parametrize("env", sorted(levers.CV_ESTIMATOR))
def test_every_searched_row_gets_the_same_9_configurations_budget(env):
    rows = levers.rows_for(env)
    searched = {row: spec for row, spec in rows.items() if not levers.is_paper_faithful(row)}
    assert {"baseline", levers.CV_ESTIMATOR[env], f"{levers.CV_ESTIMATOR[env]} + all levers"} <= set(searched)
    for row, (estimator, _) in searched.items():
        configs = levers.configurations(estimator)
        assert len(configs) == 9 and len({tuple(c.items()) for c in configs}) == 9, row
        assert set(configs[0]) == set(levers.grid(estimator)) and "learner.lr" in configs[0]
        assert ("estimator.cv_lr" in configs[0]) == (estimator != "baseline"), row
    # Every row has its own directory, a name Hydra's override grammar accepts in hydra.run.dir.
    slugs = [levers.slug(row) for row in rows]
    assert len(set(slugs)) == len(rows)
    assert all(s and not set(s) & set("=, '\"") for s in slugs)


def test_run_directory_names_stay_as_the_runs_already_trained_have_them():
    # A renamed directory would make an interrupted batch start over instead of resuming.
    assert levers.slug("baseline + V steps") == "baseline_V_steps"
    assert levers.slug("relax + cv warm-up") == "relax_cv_warm-up"
    assert levers.slug("paper-faithful relax, released code's biased sampler") == (
        "paper-faithful_relax_released_code_s_biased_sampler"
    )
    assert levers.slug("learner.lr=0.001,estimator.cv_lr=0.003") == "learner.lr-0.001_estimator.cv_lr-0.003"


@pytest.mark.parametrize("env", sorted(levers.CV_ESTIMATOR))
def test_each_control_variate_row_is_matched_with_the_baseline_row_of_the_same_value_function(env):
    rows, cv = levers.rows_for(env), levers.CV_ESTIMATOR[env]
    matched = {row: levers.matched_baseline(row, rows) for row in rows}
    assert matched[cv] == "baseline"
    for lever in levers.VALUE_LEVERS:
        assert matched[f"{cv} + {lever}"] == f"baseline + {lever}"
    for lever in levers.CV_LEVERS:  # the control variate's own levers leave V as the plain baseline's
        assert matched[f"{cv} + {lever}"] == "baseline"
    assert matched[f"{cv} + all levers"] == "baseline + all value levers"
    assert all(matched[row] == "paper-faithful baseline" for row in rows
               if levers.is_paper_faithful(row) and rows[row][0] != "baseline")  # fmt: skip
    assert all(matched[row] is None for row, (estimator, _) in rows.items() if estimator == "baseline")
    # every control-variate row has a match, and the match runs the same value-function overrides
    for row, baseline in matched.items():
        if rows[row][0] != "baseline":
            assert baseline is not None, row
            cv_only = {o for levers_ in levers.CV_LEVERS.values() for o in levers_}
            assert [o for o in rows[row][1] if o not in cv_only] == rows[baseline][1] or levers.is_paper_faithful(row)


def test_the_control_variate_rows_use_the_envs_estimator():
    assert {est for est, _ in levers.rows_for("InvertedPendulum").values()} == {"baseline", "lax"}
    assert {est for est, _ in levers.rows_for("CartPole").values()} == {"baseline", "relax"}
    assert {est for est, _ in levers.rows_for("LunarLander").values()} == {"baseline", "relax"}
    lax_rows = [row for row, (est, _) in levers.rows_for("InvertedPendulum").items() if est == "lax"]
    assert "lax" in lax_rows and "lax + all levers" in lax_rows and "paper-faithful lax" in lax_rows
    assert not any("relax" in row for row in levers.rows_for("InvertedPendulum"))


def commands_of(
    monkeypatch, tmp_path: Path, env: str, every_row: bool = True
) -> tuple[list[list[str]], list[list[str]]]:
    """The search and report commands ``main`` would run for every row, or (``every_row=False``) for the rows
    it runs without ``--rows`` (nothing is trained)."""
    batches: list[list[list[str]]] = []
    monkeypatch.setattr(levers, "run_groups", lambda commands, jobs: batches.append(commands))
    monkeypatch.setattr(levers, "select", lambda env, row, estimator, *_: ({**levers.configurations(estimator)[4]}, []))
    rows = ["--rows", *levers.rows_for(env)] if every_row else []
    run_main(monkeypatch, "--env", env, "--train-only", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "out"),
             *rows)  # fmt: skip
    assert len(batches) == 2 and not (tmp_path / "out").exists()
    return batches[0], batches[1]


@pytest.mark.parametrize("env", sorted(levers.CV_ESTIMATOR))
def test_without_rows_every_row_runs_except_on_lunarlander_where_the_compute_plan_picks_seven(
    monkeypatch, tmp_path, capsys, env
):
    _, report = commands_of(monkeypatch, tmp_path, env, every_row=False)
    ran = {row_dir_of(command).name for command in report}
    if env != "LunarLander":
        assert ran == {levers.slug(row) for row in levers.rows_for(env)}
        return
    # The tuned baseline, relax, the paper-faithful rows, the best lever (V steps) with its matched baseline, and
    # the baseline with all value levers.
    expected = ["baseline", "relax", "baseline + V steps", "relax + V steps", "baseline + all value levers",
                "paper-faithful baseline", "paper-faithful relax"]  # fmt: skip
    assert levers.default_rows(env) == expected and ran == {levers.slug(row) for row in expected}
    assert levers.matched_baseline("relax + V steps", levers.rows_for(env)) == "baseline + V steps"
    capsys.readouterr()
    run_main(monkeypatch, "--env", env, "--list")
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(levers.rows_for(env))
    assert sum(line.endswith("(only with --rows)") for line in listed) == len(levers.rows_for(env)) - len(expected)


def overrides_of(command: list[str]) -> dict[str, str]:
    assert command[:3] == [sys.executable, "-m", "rl_relax.train"]
    return dict(o.split("=", 1) for o in command[3:])


@pytest.mark.parametrize("env", ["CartPole", "InvertedPendulum", "LunarLander"])
def test_the_search_runs_9_configurations_per_row_on_the_selection_seeds_and_skips_paper_faithful_rows(
    monkeypatch, tmp_path, env
):
    search, report = commands_of(monkeypatch, tmp_path, env)
    rows = levers.rows_for(env)
    by_row: dict[str, list[dict[str, str]]] = {}
    for command in search:
        o = overrides_of(command)
        assert Path(o["hydra.run.dir"]).parent.name == "search" and row_dir_of(command).parent == tmp_path / env
        by_row.setdefault(row_dir_of(command).name, []).append(o)
        assert (o["experiment"], o["seed"], o["num_seeds"]) == (f"paper_{env}", "100", "3")
        assert o["variance.interval_steps"] == "0"  # no variance probes in the search: the same cost per row
    searched = {levers.slug(r) for r in rows if not levers.is_paper_faithful(r)}
    assert set(by_row) == searched  # the paper's own protocol is not searched
    for row, (estimator, lever_overrides) in rows.items():
        if levers.is_paper_faithful(row):
            continue
        configs = by_row[levers.slug(row)]
        assert len(configs) == 9 and len({o["hydra.run.dir"] for o in configs}) == 9, row
        assert all(o["estimator"] == estimator for o in configs)
        assert all(dict(x.split("=", 1) for x in lever_overrides).items() <= o.items() for o in configs), row
        assert sorted(tuple(o[k] for k in levers.grid(estimator)) for o in configs) == sorted(
            itertools.product(*levers.grid(estimator).values())
        )

    reported: dict[str, list[dict[str, str]]] = {}
    for command in report:
        o = overrides_of(command)
        reported.setdefault(row_dir_of(command).name, []).append(o)
    assert set(reported) == {levers.slug(r) for r in rows}
    for row, (estimator, _) in rows.items():
        group = reported[levers.slug(row)]
        if levers.is_paper_faithful(row):  # one process per seed, the paper's protocol, seeds 0-9
            assert sorted(int(o["seed"]) for o in group) == list(range(10)) and all("num_seeds" not in o for o in group)
            assert all(o["experiment"] == f"paper_faithful_{env}" and o["estimator"] == estimator for o in group)
            assert all(Path(o["hydra.run.dir"]).name == f"seed{o['seed']}" for o in group)
            budget = levers.env_protocol(env)[1]  # the anatomy at mid-training, as in the searched rows
            assert all(o["variance.anatomy_interval_steps"] == f"{budget // 2}" for o in group)
        else:  # one group of seeds 0-9, disjoint from the selection seeds, with the selected configuration
            (o,) = group
            assert (o["seed"], o["num_seeds"], o["experiment"]) == ("0", "10", f"paper_{env}")
            assert {k: o[k] for k in levers.grid(estimator)} == levers.configurations(estimator)[4]
            budget = levers.env_protocol(env)[1]  # variance ratio 5 times, the anatomy at mid-training
            assert (o["variance.interval_steps"], o["variance.anatomy_interval_steps"]) == (
                f"{budget // 5}",
                f"{budget // 2}",
            )


@pytest.mark.parametrize("env", ["CartPole", "InvertedPendulum", "LunarLander"])
def test_every_run_of_an_env_goes_to_its_budget_without_stopping_when_solved(monkeypatch, tmp_path, env):
    search, report = commands_of(monkeypatch, tmp_path, env)
    threshold, budget = levers.env_protocol(env)
    if env == "LunarLander":  # the paper's 5M steps with early stop -> the goal's 2M, every run to the end
        assert (threshold, budget) == (200.0, 2_000_000)
        expected = {"total_timesteps": "2000000", "stop_when_solved": "false"}
    else:  # the experiment configs' own budget (250k / 1M), which never stop early
        assert budget == {"CartPole": 250_000, "InvertedPendulum": 1_000_000}[env]
        expected = {"total_timesteps": None, "stop_when_solved": None}
    for command in [*search, *report]:  # the paper-faithful rows included
        o = overrides_of(command)
        assert {key: o.get(key) for key in expected} == expected, command
    with initialize_config_module("rl_relax.configs", version_base="1.3"):
        for command in (search[0], report[-1]):  # what the trainer composes: the budget, no early stop
            o = overrides_of(command)
            cfg = compose("train", overrides=[f"{k}={v}" for k, v in o.items() if not k.startswith("hydra.")])
            assert (cfg.total_timesteps, cfg.stop_when_solved) == (budget, False)


def row_dir_of(command: list[str]) -> Path:
    run_dir = Path(overrides_of(command)["hydra.run.dir"])  # <row>/search/<config>, <row>/report[/seed<k>]
    return run_dir.parent if run_dir.name == "report" else run_dir.parents[1]


def invalid_configs(commands: list[list[str]]) -> list[str]:
    """The training config each command composes (Hydra's overrides minus hydra.*), and the one-line error of each
    that the trainer would refuse."""
    problems = []
    with initialize_config_module("rl_relax.configs", version_base="1.3"):
        for command in commands:
            o = overrides_of(command)
            cfg = compose("train", overrides=[f"{k}={v}" for k, v in o.items() if not k.startswith("hydra.")])
            try:
                validate(cfg)
                check_num_seeds(cfg)
            except ConfigError as exc:
                problems.append(f"{o['hydra.run.dir']}: {exc}")
    return problems


@pytest.mark.parametrize(
    "env",
    [
        "CartPole",
        "InvertedPendulum",
        "LunarLander",
    ],
)
def test_every_command_is_a_valid_training_config(monkeypatch, tmp_path, env):
    _, report = commands_of(monkeypatch, tmp_path, env)
    # One report command per row: its lever overrides and a configuration of the grid, as the search has them.
    one_per_row = {row_dir_of(command): command for command in report}
    assert len(one_per_row) == len(levers.rows_for(env))
    problems = invalid_configs(list(one_per_row.values()))
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------- tabulate
BASE_AREAS = [0.40 + 0.01 * k for k in range(10)]
RELAX_AREAS = [0.60 + 0.01 * k for k in range(10)]


@pytest.fixture(scope="module")
def cartpole_runs(tmp_path_factory) -> Path:
    """CartPole's baseline and relax rows, searched and reported: relax's area is 0.2 larger on every seed."""
    runs = tmp_path_factory.mktemp("runs")
    base_dir, relax_dir = runs / "CartPole" / "baseline", runs / "CartPole" / "relax"
    fake_search(base_dir, "baseline", best=8)  # learner.lr=0.0003 learner.ent_coef=0.03
    fake_search(relax_dir, "relax", best=4)  # learner.lr=0.001 estimator.cv_lr=0.003
    for k in range(10):  # baseline: seeds 0-5 solve; relax: seeds 0-8
        solved = {"episodes_to_solve": 400 + 10 * k, "steps_to_solve": 40_000} if k < 6 else {"episodes": 1500}
        fake_run(base_dir / "report" / f"seed{k}", flat(THRESHOLD * BASE_AREAS[k]), seed=k, **solved)
        solved = {"episodes_to_solve": 300 + 10 * k, "steps_to_solve": 30_000} if k < 9 else {"episodes": 1400}
        ratios = [(10_000, 0.5), (20_000, 0.8), (60_000, 100.0)]  # the last after solving, unless unsolved
        anatomy = {"variance/share_state": [(125_000, 0.6), (250_000, 0.9)], "variance/share_action": [(125_000, 0.3)],
                   "variance/share_trajectory": [(125_000, 0.1)]}  # fmt: skip
        fake_run(relax_dir / "report" / f"seed{k}", flat(THRESHOLD * RELAX_AREAS[k]), seed=k,
                 scalars={"grad/variance_ratio_sampled": ratios, **anatomy}, **solved)  # fmt: skip
    return runs


def parse_ci(text: str) -> tuple[float, float, float]:
    diff, interval = text.split(" [")
    low, high = interval.split("]")[0].split(", ")
    return float(diff.replace(",", "")), float(low.replace(",", "")), float(high.replace(",", ""))


def test_tabulate_writes_the_table_plot_and_headline_with_the_differences_to_the_baseline(
    monkeypatch, tmp_path, cartpole_runs
):
    out = tmp_path / "out"
    run_main(monkeypatch, "--env", "CartPole", "--rows", "baseline", "relax", "--tabulate-only", "--runs-dir",
             str(cartpole_runs), "--out", str(out))  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["levers.md", "levers_CartPole.csv", "levers_CartPole.md",
                                                     "levers_CartPole.png"]  # fmt: skip
    assert (out / "levers_CartPole.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "levers_CartPole.csv", newline="") as fh:
        base, relax = csv.DictReader(fh)
    assert (base["row"], relax["row"]) == ("baseline", "relax")
    assert base["selected"] == "learner.lr=0.0003 learner.ent_coef=0.03"
    assert relax["selected"] == "learner.lr=0.001 estimator.cv_lr=0.003"
    assert (base["solved"], relax["solved"]) == ("6/10", "9/10")
    assert base["episodes_to_solve"] == f"425.0 ± {statistics.stdev(range(400, 460, 10)):.1f}" == "425.0 ± 18.7"
    assert relax["episodes_to_solve"] == "340.0 ± 27.4" and relax["steps_to_solve"] == "30,000 ± 0"
    assert base["area"] == f"0.445 ± {statistics.stdev(BASE_AREAS):.3f}"
    assert base["d_area"] == base["d_episodes_cost"] == base["variance_ratio"] == base["share_state"] == "-"

    diff, low, high = parse_ci(relax["d_area"])
    assert diff == pytest.approx(0.2) and 0 < low < 0.2 < high and relax["d_area"].endswith("] *")
    diff, low, high = parse_ci(relax["d_final_return"])
    assert diff == pytest.approx(0.2 * THRESHOLD, abs=0.05) and low > 0
    # Unsolved seeds cost the episodes they ran plus one window: baseline 4 x 1600, relax 1 x 1500.
    base_cost = (sum(range(400, 460, 10)) + 4 * 1600) / 10
    relax_cost = (sum(range(300, 390, 10)) + 1500) / 10
    diff, low, high = parse_ci(relax["d_episodes_cost"])
    assert diff == pytest.approx(relax_cost - base_cost) == pytest.approx(-439.0) and low < 0 < high
    assert not relax["d_episodes_cost"].endswith("*")  # the unsolved seeds' spread: an interval that includes 0
    # relax's matched baseline is the plain baseline: the same differences, in the dm_* columns
    assert (relax["matched_baseline"], base["matched_baseline"]) == ("baseline", "-")
    assert (relax["dm_area"], relax["dm_episodes_cost"]) == (relax["d_area"], relax["d_episodes_cost"])
    # The variance ratio before each seed solved (seed 9 never did: all its points), as a geometric mean.
    expected_ratio = math.exp((10 * math.log(0.5) + 10 * math.log(0.8) + math.log(100.0)) / 21)
    assert relax["variance_ratio"] == f"{expected_ratio:.3f}" == "0.805"
    # The anatomy's first measurement (mid-training), not a later one.
    assert (relax["share_state"], relax["share_action"], relax["share_trajectory"]) == ("60%", "30%", "10%")

    table = (out / "levers_CartPole.md").read_text()
    assert "| relax | relax | - | learner.lr=0.001 estimator.cv_lr=0.003 | 9/10 | 340.0 ± 27.4 |" in table
    assert f"Command: `python scripts/levers.py --env CartPole --rows 'baseline' 'relax' --out {out}`" in table
    headline = (out / "levers.md").read_text()
    assert "## CartPole ([all rows](levers_CartPole.md))" in headline
    assert f"| relax | 9/10 | 340.0 ± 27.4 | {relax['final_return']} | {relax['area']} | 0.805 |" in headline
    assert "| baseline | 6/10 |" in headline
    # next to each row, the paper's Table 2 entry for the estimator it runs (its A2C for baseline)
    lines = {line.split(" | ")[0]: line for line in headline.splitlines() if line.startswith("| ")}
    assert lines["| baseline"].endswith("| 1,152 ± 90 |") and lines["| relax"].endswith("| 472 ± 114 |")
    assert "## InvertedPendulum\n\nNot run" in headline and "## LunarLander\n\nNot run" in headline


@pytest.mark.parametrize("remove", ["relax/report/seed3", "baseline/report/seed9"])
def test_tabulate_refuses_a_row_without_10_reported_seeds_and_writes_nothing(
    monkeypatch, tmp_path, cartpole_runs, remove
):
    runs = tmp_path / "runs"
    shutil.copytree(cartpole_runs, runs)
    shutil.rmtree(runs / "CartPole" / remove)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        run_main(monkeypatch, "--env", "CartPole", "--rows", "relax", "--tabulate-only", "--runs-dir", str(runs),
                 "--out", str(out))  # fmt: skip
    row = remove.split("/")[0]
    assert info.value.code == (
        f"error: rows without 10 finished reported seeds: [{row!r}]; nothing was written. Fix: run them (without "
        "--tabulate-only; interrupted runs resume)."
    )  # a string: Python prints it as one line and exits with status 1
    assert not out.exists()


def test_tabulate_counts_a_diverged_reported_seed(monkeypatch, tmp_path, cartpole_runs):
    runs = tmp_path / "runs"
    shutil.copytree(cartpole_runs, runs)
    seed = runs / "CartPole" / "relax" / "report" / "seed0"
    fake_run(seed, [(50_000, 150.0)], finished=False, status="diverged", episodes=300)
    out = tmp_path / "out"
    run_main(monkeypatch, "--env", "CartPole", "--rows", "relax", "--tabulate-only", "--runs-dir", str(runs),
             "--out", str(out))  # fmt: skip
    with open(out / "levers_CartPole.csv", newline="") as fh:
        _, relax = csv.DictReader(fh)
    assert relax["solved"] == "8/10"


def test_tabulate_refuses_reported_seeds_that_have_not_finished(monkeypatch, tmp_path, cartpole_runs):
    runs = tmp_path / "runs"
    shutil.copytree(cartpole_runs, runs)
    seed = runs / "CartPole" / "relax" / "report" / "seed4"
    fake_run(seed, flat(150.0)[:2], finished=False, status="ok", timesteps=100_000)  # written at a checkpoint
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        run_main(monkeypatch, "--env", "CartPole", "--rows", "relax", "--tabulate-only", "--runs-dir", str(runs),
                 "--out", str(out))  # fmt: skip
    assert "rows without 10 finished reported seeds: ['relax']" in str(info.value.code)
    assert not out.exists()


def test_the_headline_is_the_best_control_variate_row_with_its_matched_baseline_and_the_best_row():
    def row(name: str, estimator: str, d_area: str, matched: str = "-") -> dict:
        return {"row": name, "estimator": estimator, "d_area": d_area, "matched_baseline": matched}

    table = [
        row("baseline", "baseline", "-"),
        row("lax", "lax", "+0.075 [-0.080, +0.257]", "baseline"),
        row("baseline + V steps", "baseline", "+0.221 [+0.075, +0.396] *"),
        row("lax + V steps", "lax", "+0.196 [+0.055, +0.364] *", "baseline + V steps"),
        row("baseline + horizon-aware V", "baseline", "+0.157 [+0.014, +0.328] *"),
        row("lax + horizon-aware V", "lax", "+0.010 [-0.1, +0.1]", "baseline + horizon-aware V"),
        row("lax + cv warm-up", "lax", "-0.033 [-0.256, +0.191]", "baseline"),
        row("paper-faithful baseline", "baseline", "-0.136 [-0.277, +0.031]"),
        row("paper-faithful lax", "lax", "-0.159 [-0.301, +0.008]", "paper-faithful baseline"),
    ]
    assert levers.headline_rows("InvertedPendulum", table) == [
        "baseline", "lax", "baseline + V steps", "lax + V steps", "paper-faithful baseline", "paper-faithful lax",
    ]  # fmt: skip
    # A control-variate row that beats every other row is the best of all as well: listed once.
    table[6] = row("lax + cv warm-up", "lax", "+0.300 [+0.1, +0.5] *", "baseline")
    assert levers.headline_rows("InvertedPendulum", table) == [
        "baseline", "lax", "lax + cv warm-up", "paper-faithful baseline", "paper-faithful lax",
    ]  # fmt: skip
    # Rows not in the table are never named (a matched baseline that was not run).
    assert levers.headline_rows("InvertedPendulum", [table[0], table[3]]) == ["baseline", "lax + V steps"]
