"""``python -m rl_relax.evaluate``: episodes, videos, run lookup and device errors from the command line."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl_relax import evaluate as evaluate_module
from rl_relax.evaluate import evaluate, main

ROOT = Path(__file__).resolve().parents[1]


def evaluate_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rl_relax.evaluate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """``python -m rl_relax.evaluate`` in-process: exit code, stdout, stderr."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_failure(code: int, err: str, *needles: str) -> None:
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def run_dir(run_training, tmp_path) -> Path:
    path = tmp_path / "runs" / "CartPole-v1__baseline__seed0" / "2026-01-01_00-00-00"
    run_training("total_timesteps=2000", run_dir=path)
    return path


def test_video_writes_one_mp4_per_episode_of_the_same_episodes(run_dir, tmp_path):
    videos = tmp_path / "videos"
    proc = evaluate_cli(str(run_dir), "--episodes", "2", "--video", str(videos))
    assert proc.returncode == 0, proc.stderr
    assert f"videos: 2 MP4 files in {videos}" in proc.stdout
    files = sorted(videos.glob("*.mp4"))
    assert [f.name for f in files] == ["CartPole-v1-episode-0.mp4", "CartPole-v1-episode-1.mp4"]
    for f in files:
        data = f.read_bytes()
        assert len(data) > 1000 and data[4:8] == b"ftyp"  # an ISO base media (MP4) file
    # Recording does not change what is evaluated: same returns as without video.
    plain = evaluate(run_dir, episodes=2)
    recorded = evaluate(run_dir, episodes=2, video_dir=tmp_path / "again")
    assert recorded["returns"] == plain["returns"] and len(recorded["videos"]) == 2


def test_video_without_the_video_extra_is_a_one_line_error_with_the_fix(run_dir, tmp_path, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(evaluate_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "moviepy" else real_find_spec(name, *a))  # fmt: skip
    code, _, err = run_main(capsys, str(run_dir), "--video", str(tmp_path / "v"))
    assert_one_line_failure(code, err, "--video needs moviepy", 'Fix: pip install "rl-relax[video]"')
    assert not (tmp_path / "v").exists()


def test_the_runs_parent_directory_is_accepted_when_it_holds_one_run(run_dir, capsys):
    code, out, err = run_main(capsys, str(run_dir.parent), "--episodes", "1")
    assert code == 0, err
    assert "CartPole-v1: return" in out and str(run_dir / "checkpoints") in out


def test_a_parent_directory_with_several_runs_lists_them(run_dir, capsys):
    shutil.copytree(run_dir, run_dir.parent / "2026-01-02_00-00-00")
    code, _, err = run_main(capsys, str(run_dir.parent.parent))
    assert_one_line_failure(code, err, "holds 2 runs", "2026-01-01_00-00-00", "2026-01-02_00-00-00", "Fix: pass one")


@pytest.mark.parametrize("device", ["cuda", "cuda:99"])
def test_a_missing_gpu_is_reported_as_a_device_problem_and_the_checkpoint_is_untouched(run_dir, device, capsys):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (run_dir / "checkpoints").iterdir()}
    code, _, err = run_main(capsys, str(run_dir), "--device", device)
    assert_one_line_failure(code, err, f"device '{device}'", "CUDA", "Fix: --device")
    assert "corrupt" not in err and "delete" not in err
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (run_dir / "checkpoints").iterdir()} == digests
