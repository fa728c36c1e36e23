"""Sweeps: Hydra multirun with the local launcher preset, summaries, resume after a kill, Optuna, GPU."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rl_relax.summarize import summarize
from rl_relax.train import SWEEP_PLUGINS, missing_sweep_extra, objective
from tests.conftest import read_scalars

ROOT = Path(__file__).resolve().parents[1]


def train_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rl_relax.train", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def test_local_launcher_runs_two_jobs_and_summarize_lists_both(tmp_path):
    sweep = tmp_path / "sweep"
    proc = train_cli("-m", "hydra/launcher=local", "seed=0,1", "total_timesteps=800", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "summary.json").is_file())
    assert jobs == ["seed=0,total_timesteps=800", "seed=1,total_timesteps=800"]  # named from the overrides
    text = summarize(sweep)
    assert "| CartPole-v1 | baseline | 0 1 |" in text and "did not finish" not in text
    rows = list(csv.DictReader((sweep / "summary.csv").read_text().splitlines()))
    assert len(rows) == 1 and rows[0]["seeds"] == "0 1" and rows[0]["runs"] == "2"
    assert (sweep / "returns.png").stat().st_size > 1000 and (sweep / "log_variance.png").stat().st_size > 1000


def test_a_failed_job_does_not_stop_the_sweep_and_summarize_reports_it(tmp_path):
    sweep = tmp_path / "sweep"
    proc = train_cli("-m", "learner.gamma=1.5,0.99", "total_timesteps=400", f"hydra.sweep.dir={sweep}")
    assert proc.returncode != 0  # the sweep itself reports the bad job...
    assert "learner.gamma=1.5 must be in (0, 1]" in proc.stderr and len(proc.stderr.splitlines()) < 12
    assert (sweep / "learner.gamma=0.99,total_timesteps=400" / "summary.json").is_file()  # ...after the next one ran
    text = summarize(sweep, plots=False)
    assert "| CartPole-v1 | baseline | 0 | 0/1 |" in text
    assert "failed:" in text and "learner.gamma=1.5" in text


def test_summarize_without_runs_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rl_relax.summarize", str(tmp_path)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert proc.returncode == 2 and "no runs" in proc.stderr and "Traceback" not in proc.stderr


def test_a_killed_job_relaunched_in_the_same_directory_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = ["total_timesteps=400000", "checkpoint.interval_steps=4000", f"hydra.run.dir={run_dir}"]
    job = subprocess.Popen([sys.executable, "-m", "rl_relax.train", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("ckpt_*.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)  # like a preempted cluster job: no chance to clean up
    job.wait()
    saved = max(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("ckpt_*.pt"))
    assert 0 < saved < 400000

    proc = train_cli(*args[:-1], "total_timesteps=" + str(saved + 8000), f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {run_dir / 'checkpoints'}" in proc.stdout + proc.stderr
    steps = [s for s, _ in read_scalars(run_dir)["train/value_loss"]]
    assert steps[-1] == saved + 8000 and steps == sorted(set(steps))  # one counter, no step twice


def test_optuna_sweeper_maximises_the_returned_objective(tmp_path):
    sweep = tmp_path / "sweep"
    proc = train_cli("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
                     "hydra.sweeper.direction=maximize", "learner.lr=interval(1e-4,1e-3)", "total_timesteps=400",
                     f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert "learner.lr" in result["best_params"] and result["best_value"] > 0


def test_objective_ranks_solved_runs_above_unsolved_ones():
    solved = {"episodes_to_solve": 300, "episodes": 500, "solved_window": 100, "final_return_mean": 480.0}
    unsolved = {"episodes_to_solve": None, "episodes": 350, "solved_window": 100, "final_return_mean": 200.0}
    assert objective(solved, "neg_episodes_to_solve") == -300.0
    assert objective(unsolved, "neg_episodes_to_solve") == -450.0
    assert objective(solved, "final_return") == 480.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_the_gpu(run_training, tmp_path):
    summary = run_training("device=cuda", "estimator=relax", "total_timesteps=2000", "variance.interval_steps=1000",
                           "variance.num_batches=4")  # fmt: skip
    assert summary["device"].startswith("cuda") and summary["timesteps"] == 2000


@pytest.mark.slow
def test_twenty_consecutive_submitit_timeout_requeues_complete_one_run_on_one_step_axis(tmp_path):
    """Hydra's submitit launcher (local executor): one job signalled and requeued 20 times in a row.

    Each attempt gets SIGUSR2, the signal the executor forwards to a job ``signal_delay_s`` before
    its time limit (and SLURM at preemption), sent here as soon as the attempt trains so that the
    test does not wait out a real limit. submitit's own handler runs after our checkpoint, requeues
    (exit code 3) and the executor restarts the job in the same directory. Arriving long before the
    limit, submitit files it as a preemption, which does not use up ``max_num_timeout`` (3 and not
    configurable for the local launcher); past the limit only that counter differs. The local
    executor restarts a job at most 5 times per submission, so the sweep command is launched again
    until the run is done, as a user would after a failed submission.
    """
    sweep = tmp_path / "sweep"
    job_dir = sweep / "job"
    args = ["-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job",
            "total_timesteps=150000", "logging.interval_steps=400", "checkpoint.interval_steps=1000000"]  # fmt: skip
    rng = np.random.default_rng(20)
    requeues, launches = 0, 0
    pids: list[int] = []
    while True:
        launcher = subprocess.Popen([sys.executable, "-m", "rl_relax.train", *args], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        launches += 1
        while launcher.poll() is None:
            pid = _training_attempt(job_dir, pids, launcher)
            if pid is None:
                continue
            pids.append(pid)
            if requeues < 20:
                time.sleep(float(rng.uniform(0.0, 0.2)))  # somewhere in the loop: an update, a log write
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR2)
                    requeues += 1
        launcher.wait()
        summary = json.loads((job_dir / "summary.json").read_text()) if (job_dir / "summary.json").exists() else {}
        if summary.get("finished"):
            break
        assert launches < 8, summary
    assert requeues == 20 and len(pids) == 21 and summary["status"] == "ok" and summary["timesteps"] >= 150000
    log = (job_dir / "train.log").read_text()
    stopped = [int(m.replace(",", "")) for m in re.findall(r"stopped by SIGUSR2 at step ([\d,]+)", log)]
    resumed = [int(m) for m in re.findall(r"resumed from .* at step (\d+)", log)]
    assert len(stopped) >= 15  # the others were signalled before their first update finished
    assert resumed == sorted(resumed) and set(stopped) <= set(resumed)  # every stop is where the next attempt began
    steps = [s for s, _ in read_scalars(job_dir)["train/value_loss"]]
    assert steps == sorted(set(steps)) and steps[-1] == summary["timesteps"]  # one continuous curve
    # No point lost: every logging step is there, plus one at each step where an attempt stopped.
    assert set(range(400, summary["timesteps"] + 1, 400)) <= set(steps)
    assert set(steps) - set(range(400, summary["timesteps"] + 1, 400)) <= set(stopped) | {summary["timesteps"]}


def _training_attempt(job_dir: Path, seen: list[int], launcher: subprocess.Popen) -> int | None:
    """The pid of a new job attempt once it trains (it holds the run-directory lock and has logged
    "training"), else None after a short wait."""
    time.sleep(0.05)
    lock, log = job_dir / ".lock", job_dir / "train.log"
    if not lock.exists() or not log.exists():
        return None
    match = re.match(r"pid (\d+) ", lock.read_text())
    if match is None or int(match.group(1)) in seen:
        return None
    if log.read_text().count("training CartPole-v1") <= len(seen):
        return None
    return int(match.group(1))


def _training_intervals(sweep: Path) -> list[tuple[float, float]]:
    """(start, end) of each job's training, from the timestamps of its first and last train.log lines."""
    from datetime import datetime

    intervals = []
    for log_file in sweep.glob("*/train.log"):
        stamps = [datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                  for line in log_file.read_text().splitlines() if line.startswith("[20")]  # fmt: skip
        intervals.append((stamps[0], stamps[-1]))
    return intervals


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    return max(sum(start <= t < end for start, end in intervals) for t, _ in intervals)


def test_the_local_launcher_runs_at_most_n_jobs_at_once(tmp_path):
    """Three jobs, at most two at once (with hydra.launcher.n_jobs=3 all three overlap)."""
    sweep = tmp_path / "sweep"
    proc = train_cli("-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2", "seed=0,1,2", "total_timesteps=4000",
                     "logging.progress=never", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    intervals = _training_intervals(sweep)
    assert len(intervals) == 3 and _most_at_once(intervals) <= 2


def test_the_local_launcher_defaults_to_one_job_per_core():
    import joblib
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

    from rl_relax.api import compose_config

    launcher = compose_config(["hydra/launcher=local"]).hydra.launcher
    assert launcher._target_ == f"{JoblibLauncher.__module__}.{JoblibLauncher.__name__}"
    assert launcher.n_jobs == -1  # joblib: -1 = joblib.cpu_count() workers
    assert joblib.cpu_count() >= 1


@pytest.mark.parametrize("choice", sorted(SWEEP_PLUGINS))
def test_a_missing_launcher_or_sweeper_plugin_is_one_line_with_the_pip_fix(choice, monkeypatch):
    module, package, extra = SWEEP_PLUGINS[choice]
    assert missing_sweep_extra(["-m", choice, "seed=0,1"]) is None  # installed here
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it fails
    message = missing_sweep_extra(["-m", choice, "seed=0,1"])
    assert message is not None and package in message and f'pip install "rl-relax[{extra}]"' in message
    assert "\n" not in message


def test_every_mapped_launcher_and_sweeper_option_exists():
    """The options SWEEP_PLUGINS names are real Hydra options (with the plugins installed)."""
    from rl_relax.api import compose_config

    for choice in SWEEP_PLUGINS:
        group, _, option = choice.partition("=")
        assert compose_config([choice]).hydra.runtime.choices[group] == option


def test_the_command_line_names_the_missing_optuna_extra_instead_of_hydras_error(tmp_path):
    code = ("import sys, runpy; sys.modules['hydra_plugins.hydra_optuna_sweeper'] = None; "
            "sys.argv = ['rl_relax.train', '-m', 'hydra/sweeper=optuna', 'learner.lr=interval(1e-4,1e-3)']; "
            "runpy.run_module('rl_relax.train', run_name='__main__')")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "error: hydra/sweeper=optuna needs hydra-optuna-sweeper, which is not installed (the optuna extra). "
        'Fix: pip install "rl-relax[optuna]" (from a clone: pip install -e ".[optuna]").'
    )
    assert not list(tmp_path.iterdir())  # nothing written
