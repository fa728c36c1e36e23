"""The code base stays ruff-clean (lint and format), as the README promises, and off its libraries' internals."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_lint_and_format_are_clean():
    for args in (["check", "."], ["format", "--check", "."]):
        proc = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


#: Library internals the package once leaned on for speed (issue 11): nn.Module's parameter/module/buffer dicts,
#: SummaryWriter's private writer getter, unwrapped or pre-marked ("hooked") optimizer steps. (SummaryWriter's
#: ``file_writer`` attribute stays, for the HParams session records only: rl_relax/logger.py says why.)
INTERNALS = re.compile(r"\._(parameters|modules|buffers)\b|_get_file_writer|__wrapped__|\.hooked\b")


def test_the_package_reaches_no_library_internals():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "rl_relax").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if INTERNALS.search(line)
    ]
    assert not found, "library internals used:\n" + "\n".join(found)
