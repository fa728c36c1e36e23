"""Where a script in scripts/ writes: a new directory by default, the committed results only when asked.

Every script takes

- ``--out DIR``: write there (created if needed);
- ``--update-committed``: write to the committed location instead (``results/...``, and for the search
  also ``configs/experiment/``), replacing the files there;

and without either writes to a new ``outputs/<script>/<date_time>/`` (git-ignored), so running a script
never changes a committed file by accident. ``--out`` pointing into ``results/`` or
``configs/experiment/`` needs ``--update-committed`` too. A table with no rows is never written: the
script stops with an error instead (:func:`refuse_empty`), so an empty runs directory cannot replace a
committed table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sized
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_DIRS = (ROOT / "results", ROOT / "configs" / "experiment")


def add_arguments(parser: argparse.ArgumentParser, committed: Path) -> None:
    """``--out`` and ``--update-committed``, with ``committed`` (the committed output directory) in the help."""
    shown = committed.relative_to(ROOT)
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: a new outputs/<script>/<date_time>/, never a committed "
                             f"file); writing into {shown}/ needs --update-committed")  # fmt: skip
    parser.add_argument("--update-committed", action="store_true",
                        help=f"write to the committed {shown}/, replacing its files")  # fmt: skip


def is_committed(path: Path) -> bool:
    """Whether ``path`` lies in a directory of committed results (results/, configs/experiment/)."""
    path = Path(path).resolve()
    return any(path.is_relative_to(d.resolve()) for d in COMMITTED_DIRS)


def resolve(parser: argparse.ArgumentParser, args: argparse.Namespace, script: str, committed: Path) -> Path:
    """The directory to write to, checked before any work starts (a bad choice exits with code 2).

    Remembers the ``--out`` as given for :func:`command_suffix` (scripts replace ``args.out`` with the result).
    """
    args.out_as_given = args.out
    if args.update_committed:
        if args.out is not None and Path(args.out).resolve() != committed.resolve():
            _usage_error(parser, f"--update-committed writes to {committed.relative_to(ROOT)}/. Fix: leave out --out.")
        return committed
    if args.out is None:
        stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        return ROOT / "outputs" / script / stamp
    if is_committed(args.out):
        _usage_error(parser, f"--out {args.out} holds committed results. Fix: add --update-committed to replace "
                             "them, or choose another directory.")  # fmt: skip
    return Path(args.out)


def _usage_error(parser: argparse.ArgumentParser, message: str) -> None:
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def refuse_empty(rows: Sized, what: str, fix: str) -> None:
    """Stop with a one-line error (exit 1) instead of writing a table without rows."""
    if len(rows) == 0:
        print(f"error: no {what}, so there is nothing to write (no file was changed). Fix: {fix}", file=sys.stderr)
        sys.exit(1)


def command_suffix(args: argparse.Namespace) -> str:
    """The output options as they belong in a result file's recorded command."""
    if args.update_committed:
        return " --update-committed"
    out = getattr(args, "out_as_given", args.out)
    return "" if out is None else f" --out {out}"
