"""Scripts never lose a committed result: they write to a new directory unless told to update the
committed files (``--update-committed``), and never replace a table with an empty one."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import output_dir

ROOT = Path(__file__).resolve().parents[1]
# What these scripts would write when updating the committed results (other results/ files are not theirs).
COMMITTED = ["results/toy/*", "results/learning_*", "results/throughput*", "results/paper_table.*", "results/paper/*",
             "results/search/*", "results/seeds.*", "results/levers*", "configs/experiment/*"]  # fmt: skip
# The cheapest invocation of each script (they all check where they will write before any work).
SCRIPTS = {
    "toy_problem": ["--steps", "1"],
    "check_learning": ["--env", "CartPole", "--seeds", "0"],
    "bench_throughput": ["--runs", "1", "--scale", "0.01"],
    "bench_seeds": ["--runs", "1", "--scale", "0.01", "--envs", "CartPole", "--seeds", "1", "--threads", "1",
                    "--profile-seeds"],
    "paper_table": ["--tabulate-only"],
    "search_hparams": ["--env", "CartPole", "--estimator", "relax", "--select-only"],
    "levers": ["--env", "CartPole", "--tabulate-only"],
}  # fmt: skip


def committed_digests() -> dict[Path, str]:
    files = [p for pattern in COMMITTED for p in sorted(ROOT.glob(pattern)) if p.is_file()]
    assert len(files) > 30  # the committed results are there to protect
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"scripts/{name}.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def test_the_result_scripts_take_the_output_options():
    for name in SCRIPTS:
        text = (ROOT / "scripts" / f"{name}.py").read_text()
        assert "output_dir.add_arguments(" in text and "output_dir.resolve(" in text, name


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_out_into_committed_results_needs_update_committed(name, tmp_path):
    before = committed_digests()
    committed = "configs/experiment" if name == "search_hparams" else "results"
    takes_runs_dir = ("check_learning", "paper_table", "search_hparams", "levers")
    runs_dir = ["--runs-dir", str(tmp_path)] if name in takes_runs_dir else []
    proc = script(name, *SCRIPTS[name], *runs_dir, "--out", committed)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"--out {committed} holds committed results. Fix: add --update-committed" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert committed_digests() == before


def test_paper_table_refuses_to_replace_the_committed_table_with_an_empty_one(tmp_path):
    before = committed_digests()
    proc = script("paper_table", "--tabulate-only", "--runs-dir", str(tmp_path / "no_runs"), "--update-committed")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: no finished runs in {tmp_path / 'no_runs'}, so there is nothing to write (no file was changed). "
        "Fix: train the rows first (without --tabulate-only), or pass --runs-dir."
    )
    assert committed_digests() == before


def test_search_refuses_to_select_from_missing_runs_and_writes_nothing(tmp_path):
    before = committed_digests()
    proc = script(*["search_hparams", *SCRIPTS["search_hparams"]], "--runs-dir", str(tmp_path), "--out",
                  str(tmp_path / "out"))  # fmt: skip
    assert proc.returncode == 1 and "9 configurations lack runs" in proc.stderr and "nothing was written" in proc.stderr
    assert not (tmp_path / "out").exists() and committed_digests() == before


def test_a_throughput_comparison_against_an_unknown_revision_is_refused_before_any_run(tmp_path):
    proc = script("bench_throughput", "--against", "no-such-revision", "--runs", "1", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: --against no-such-revision: not a commit of this repository. Fix: name a commit, tag or branch "
        "(git log --oneline lists them)."
    ]
    assert not (tmp_path / "out").exists()


def test_by_default_a_script_writes_a_new_directory_under_outputs():
    before = committed_digests()
    proc = script("toy_problem", "--steps", "10")
    assert proc.returncode == 0, proc.stderr
    written = Path(proc.stdout.strip().splitlines()[-1].removeprefix("wrote "))
    try:
        assert written.parent == ROOT / "outputs" / "toy_problem" and written.name[:4].isdigit()
        assert {p.name for p in written.iterdir()} == {"toy_t0499.csv", "loss.png", "log_variance.png",
                                                       "relaxations.png", "README.md"}  # fmt: skip
        assert "--steps 10 --target 0.499 --seed 0`" in (written / "README.md").read_text()
    finally:
        shutil.rmtree(written, ignore_errors=True)
    assert committed_digests() == before


def _parse(*argv: str) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="x")
    output_dir.add_arguments(parser, ROOT / "results" / "toy")
    return parser, parser.parse_args(list(argv))


def test_output_resolution_and_the_recorded_command(tmp_path):
    committed = ROOT / "results" / "toy"
    parser, args = _parse()
    args.out = output_dir.resolve(parser, args, "toy_problem", committed)
    assert args.out.parent == ROOT / "outputs" / "toy_problem" and output_dir.command_suffix(args) == ""
    parser, args = _parse("--update-committed")
    assert output_dir.resolve(parser, args, "toy_problem", committed) == committed
    assert output_dir.command_suffix(args) == " --update-committed"
    parser, args = _parse("--out", str(tmp_path))
    args.out = output_dir.resolve(parser, args, "toy_problem", committed)  # as the scripts do
    assert args.out == tmp_path and output_dir.command_suffix(args) == f" --out {tmp_path}"
    parser, args = _parse("--out", str(tmp_path), "--update-committed")
    with pytest.raises(SystemExit) as info:
        output_dir.resolve(parser, args, "toy_problem", committed)
    assert info.value.code == 2
    assert output_dir.is_committed(ROOT / "configs" / "experiment" / "x.yaml")
    assert not output_dir.is_committed(ROOT / "outputs" / "x") and not output_dir.is_committed(ROOT / "configs")


def test_a_throughput_benchmark_of_an_uncommitted_change_says_so(tmp_path):
    from scripts.bench_throughput import code_version

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "rl_relax").mkdir()
    (tmp_path / "rl_relax" / "learner.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("a\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", "commit", "-qm", "c")
    head = git("rev-parse", "--short", "HEAD")
    (tmp_path / "notes.txt").write_text("b\n")  # outside the package: the measured code is the commit's
    assert code_version(tmp_path) == f"commit {head}"
    (tmp_path / "rl_relax" / "learner.py").write_text("x = 2\n")
    assert code_version(tmp_path) == f"commit {head} with uncommitted changes to rl_relax/ or configs/"
