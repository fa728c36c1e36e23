"""Stop signals: a flag checked once per update, a checkpoint, summary.json "interrupted", a resume
hint and exit code 128 + N; submitit's handlers are deferred (requeue) or kept (bypass)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rl_relax import checkpoint as ckpt
from rl_relax.signals import StopSignals
from tests.conftest import read_scalars

ROOT = Path(__file__).resolve().parents[1]


def start_training(run_dir: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rl_relax.train", "total_timesteps=100000000", "logging.interval_steps=400",
           "checkpoint.interval_steps=400", "logging.progress=never", f"hydra.run.dir={run_dir}", *args]  # fmt: skip
    with open(run_dir.parent / f"{run_dir.name}.out", "w") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_for_training(run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the process has logged its first TensorBoard point (the loop is running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, (run_dir.parent / f"{run_dir.name}.out").read_text()
        log = run_dir / "train.log"
        if any(run_dir.glob("events.out.tfevents.*")) and log.exists() and "training CartPole-v1" in log.read_text():
            return
        time.sleep(0.05)
    raise AssertionError("training did not start")


STOP_SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP]


def test_a_real_signal_at_a_random_moment_checkpoints_and_loses_at_most_one_update(tmp_path):
    """One training process per stop signal (run side by side), each signalled at a random moment."""
    procs = {sig: start_training(tmp_path / sig.name) for sig in STOP_SIGNALS}
    rng = np.random.default_rng(16)
    for sig, proc in procs.items():
        wait_for_training(tmp_path / sig.name, proc)
        time.sleep(float(rng.uniform(0.0, 1.0)))  # a random moment of the loop (updates, logging, checkpoints)
        proc.send_signal(sig)
    for sig, proc in procs.items():
        run_dir = tmp_path / sig.name
        assert proc.wait(timeout=120) == 128 + sig, sig  # the documented exit code
        out = (tmp_path / f"{sig.name}.out").read_text()
        assert "Traceback" not in out, out
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "interrupted" and not summary["finished"]
        latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
        assert ckpt.checkpoint_step(latest) == summary["timesteps"]
        # Every update the process finished is in the checkpoint: the last logged point is at its step.
        assert read_scalars(run_dir)["train/value_loss"][-1][0] == summary["timesteps"]
        lines = [line for line in out.splitlines() if "Resume with:" in line]
        assert len(lines) == 1 and f"stopped by {sig.name} at step" in lines[0], out
        assert f"hydra.run.dir={run_dir}" in lines[0]


def test_the_resume_hint_continues_the_run_on_one_step_axis(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_training(run_dir, "seed=3")
    wait_for_training(run_dir, proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    stopped_at = json.loads((run_dir / "summary.json").read_text())["timesteps"]
    hint = next(line for line in (tmp_path / "run.out").read_text().splitlines() if "Resume with:" in line)
    command = shlex.split(hint.split("Resume with: ")[1])
    assert command[:3] == ["python", "-m", "rl_relax.train"] and "seed=3" in command
    args = [a for a in command[3:] if not a.startswith("total_timesteps=")] + [f"total_timesteps={stopped_at + 400}"]
    done = subprocess.run([sys.executable, "-m", "rl_relax.train", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"at step {stopped_at}" in done.stderr + done.stdout  # "resumed from ... at step N"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["finished"] and summary["timesteps"] == stopped_at + 400
    steps = [s for s, _ in read_scalars(run_dir)["train/value_loss"]]
    # One counter, no point lost or doubled: every 400 steps, plus one at the stop step.
    assert steps == sorted({*range(400, stopped_at + 401, 400), stopped_at, stopped_at + 400})


def test_stop_signals_only_set_a_flag_and_restore_the_previous_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)  # a second, different signal changes nothing
        time.sleep(0.01)
        assert stop.requested and stop.signum == signal.SIGUSR1
        assert stop.successor() is None  # nothing to hand the signal to outside submitit
    assert {s: signal.getsignal(s) for s in before} == before


class FakeSubmititHandler:
    """Stands in for submitit.core.job_environment.SignalHandler (same module prefix and method names)."""

    __module__ = "submitit.core.job_environment"

    def __init__(self):
        self.calls = []

    def bypass(self, signum, frame=None):
        self.calls.append(("bypass", signum))

    def checkpoint_and_try_requeue(self, signum, frame=None):
        self.calls.append(("requeue", signum))


def test_submitit_requeue_is_deferred_until_after_the_checkpoint_and_bypass_stays_bypass():
    fake = FakeSubmititHandler()
    old_term = signal.signal(signal.SIGTERM, fake.bypass)
    old_usr2 = signal.signal(signal.SIGUSR2, fake.checkpoint_and_try_requeue)
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGTERM)  # SLURM's SIGTERM at preemption: submitit ignores it
            time.sleep(0.01)
            assert fake.calls == [("bypass", signal.SIGTERM)] and not stop.requested
            os.kill(os.getpid(), signal.SIGUSR2)  # the requeue signal: deferred, not run inside the loop
            time.sleep(0.01)
            assert stop.signum == signal.SIGUSR2 and fake.calls == [("bypass", signal.SIGTERM)]
        stop.hand_over()  # after the checkpoint: now submitit requeues
        assert fake.calls[-1] == ("requeue", signal.SIGUSR2)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGUSR2, old_usr2)


def test_a_second_ctrl_c_exits_at_once_with_130():
    code = ("import os, signal, time\nfrom rl_relax.signals import StopSignals\nwith StopSignals():\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(0.05)\n    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(5)\nprint('not reached')\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert proc.returncode == 130 and "second SIGINT" in proc.stderr and "not reached" not in proc.stdout


def test_a_signal_before_the_first_update_exits_cleanly_without_a_checkpoint(make_cfg, tmp_path):
    from rl_relax.errors import TrainingInterrupted
    from rl_relax.trainer import Trainer

    trainer = Trainer(make_cfg("total_timesteps=400"), tmp_path / "run")
    start = trainer.collector.start

    def signalled_start(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.01)
        return start(*args, **kwargs)

    trainer.collector.start = signalled_start
    with pytest.raises(TrainingInterrupted, match=r"stopped by SIGHUP at step 0 .*none: no update finished") as info:
        trainer.run()
    assert info.value.exit_code == 129
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "interrupted"
    assert re.fullmatch(r"[^\n]+", str(info.value))
