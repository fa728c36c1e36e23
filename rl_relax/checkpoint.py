"""Checkpoints of everything a run needs to resume: atomic, checksummed, finite, loaded without code.

A checkpoint holds networks, optimizers (the estimator's too), normaliser statistics, RNG states
and counters, plus metadata (env id, seed, spaces, parameter shapes, activations, optimizer) checked
before anything is restored. Guarantees:

- **Atomic**: the payload is serialised in memory, written to a temporary file with a unique name
  (``.<name>.<random>.tmp``), fsynced and renamed, so a crash, a full disk or a second writer never
  leaves a truncated or half-written ``ckpt_*.pt``; a failed write removes its temporary file.
- **Checksummed**: ``sha256`` is the SHA-256 of the payload's content (every tensor's dtype, shape
  and bytes, every key and value, in order), verified on load, so a flipped bit that changes what
  would be restored is detected instead of loaded.
- **Finite**: a payload holding a NaN or infinite floating-point tensor is refused before writing.
- **Safe**: loading uses ``torch.load(..., weights_only=True)``, which never unpickles code.
- **Rotation** keeps the newest ``keep_last`` files at or below the step just written and never
  deletes a file of a higher step (which would belong to another run).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import math
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rl_relax.errors import CheckpointError, StorageError, TrainingDivergedError

log = logging.getLogger("rl_relax")

FORMAT_VERSION = 2
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
CORRUPT_SUFFIX = ".corrupt"


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"ckpt_{step:012d}.pt"


def checkpoint_step(path: Path) -> int:
    match = _NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named ckpt_<step>.pt")
    return int(match.group(1))


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


# ----------------------------------------------------------------------------- content checks
def content_digest(payload: dict[str, Any]) -> str:
    """SHA-256 over the payload's content, ``sha256`` key excluded: what a load would restore.

    Walks dicts (keys in order), lists, tuples and tensors (dtype, shape, raw bytes) with a type tag
    before every value, so that no two different payloads share an input stream.
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "sha256"})
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)};".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, list | tuple):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)};".encode())
        for value in obj:
            _feed(h, value)
    elif isinstance(obj, bool) or obj is None:
        h.update(f"B{obj};".encode())
    elif isinstance(obj, int):
        h.update(f"I{obj};".encode())
    elif isinstance(obj, float):
        h.update(f"F{obj.hex()};".encode())
    elif isinstance(obj, str):
        data = obj.encode()
        h.update(f"S{len(data)};".encode() + data)
    elif isinstance(obj, bytes):
        h.update(f"Y{len(obj)};".encode() + obj)
    else:
        raise TypeError(f"cannot checkpoint a {type(obj).__name__}: use tensors, numbers, strings, lists and dicts")


def non_finite_entries(obj: Any, prefix: str = "") -> list[str]:
    """Paths (``policy.net.0.weight``, ``learner.optimizer.state.0.square_avg``, ...) of every
    floating-point tensor or float holding a NaN or an infinity."""
    found: list[str] = []
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            found.append(prefix)
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            found.append(prefix)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            found += non_finite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            found += non_finite_entries(value, f"{prefix}.{i}" if prefix else str(i))
    return found


# ----------------------------------------------------------------------------- writing
def storage_error(
    path: Path, exc: OSError, what: str, intact: Path | None = None, fix_dir: Path | None = None
) -> StorageError:
    """One line: which file could not be written, why, what is still intact, and the fix."""
    code = exc.errno
    cause = os.strerror(code) if code else str(exc)
    name = errno.errorcode.get(code, "") if code else ""
    if code in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space (or raise the quota), then re-run the same command to resume"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {fix_dir or path.parent} writable or choose another run directory (hydra.run.dir=...)"
    else:
        fix = "check the file system, then re-run the same command to resume"
    kept = f"; the last good checkpoint {intact} is intact" if intact is not None else ""
    return StorageError(
        f"cannot write {what} {path}: {cause}{f' ({name})' if name else ''}; nothing partial was left{kept}. "
        f"Fix: {fix}."
    )


def write_bytes_atomic(path: Path, data: bytes, what: str = "file", intact: Path | None = None) -> None:
    """Write ``data`` to ``path`` via a uniquely named temporary file, fsync, rename, fsync the directory.

    An ``OSError`` (disk full, read-only, permissions) removes the temporary file and becomes a
    one-line :class:`StorageError`; ``path`` keeps its previous content."""
    path = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_directory(path.parent)
    except OSError as exc:
        raise storage_error(path, exc, what, intact) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (a crash right after it must not bring the old file back)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not support fsync on directories
    finally:
        os.close(fd)


def save_checkpoint(payload: dict[str, Any], directory: Path, step: int, keep_last: int) -> Path:
    """Write ``payload`` atomically as ``ckpt_<step>.pt`` with its checksum; rotate old files.

    Refuses (``TrainingDivergedError``) a payload with a non-finite entry, writing nothing.
    Rotation keeps the newest ``keep_last`` checkpoints with a step <= ``step``; files of higher
    steps are never deleted.
    """
    directory = Path(directory)
    final = checkpoint_path(directory, step)
    bad = non_finite_entries(payload)
    if bad:
        raise TrainingDivergedError(
            f"refusing to write checkpoint {final}: non-finite values in {', '.join(bad[:3])}"
            f"{' and more' if len(bad) > 3 else ''}. The last good checkpoint is kept."
        )
    intact = latest_checkpoint(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(directory, exc, "checkpoint directory") from None
    payload = {**payload, "sha256": content_digest(payload)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(final, buffer.getvalue(), "checkpoint", intact)
    ours = [p for p in list_checkpoints(directory) if checkpoint_step(p) <= step]
    for old in ours[: -max(int(keep_last), 1)]:
        try:
            old.unlink(missing_ok=True)
        except OSError as exc:  # a stale file is harmless; the new checkpoint is written
            log.warning("could not delete old checkpoint %s: %s", old, exc)
    return final


# ----------------------------------------------------------------------------- reading
def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely and verify its checksum; a corrupt or foreign file raises
    :class:`CheckpointError`."""
    path = Path(path)
    fix = "Fix: delete it to resume from the previous checkpoint, or start a new run directory (hydra.run.dir=...)."
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist.") from None
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not an rl_relax checkpoint ({type(exc).__name__}"
            f"{': ' + _first_sentence(str(exc)) if str(exc).strip() else ''}). {fix}"
        ) from None
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if version != FORMAT_VERSION:
        older = isinstance(version, int) and version < FORMAT_VERSION
        raise CheckpointError(
            f"checkpoint {path} is not an rl_relax checkpoint of format {FORMAT_VERSION}"
            f"{f' (format {version}, written by an older rl_relax without checksums)' if older else ''}. "
            "Fix: point at a checkpoint written by this version of rl_relax, or start a new run directory."
        )
    try:
        digest = content_digest(payload)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt ({exc}). {fix}") from None
    if payload.get("sha256") != digest:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its content does not match its sha256 checksum "
            f"(a damaged or modified file). {fix}"
        )
    bad = non_finite_entries(payload)
    if bad:  # never written by rl_relax: a forged or hand-edited file
        raise CheckpointError(f"checkpoint {path} holds non-finite values ({', '.join(bad[:3])}). {fix}")
    return payload


def _first_sentence(text: str) -> str:
    line = text.strip().splitlines()[0]
    return line.split(". ")[0].rstrip(".")


def load_latest_valid(directory: Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that loads and passes its checksum.

    A corrupt newer checkpoint is renamed to ``<name>.corrupt`` (kept for inspection, out of the
    rotation) with a warning, and the previous one is tried. ``None`` if there are no checkpoints;
    :class:`CheckpointError` naming every file if none is intact (then nothing is renamed).
    """
    candidates = list_checkpoints(directory)
    if not candidates:
        return None
    errors: list[tuple[Path, CheckpointError]] = []
    for path in reversed(candidates):
        try:
            payload = load_checkpoint(path, map_location=map_location)
        except CheckpointError as exc:
            errors.append((path, exc))
            continue
        for bad, exc in errors:
            aside = bad.with_name(bad.name + CORRUPT_SUFFIX)
            try:
                os.replace(bad, aside)
                log.warning("%s; moved it to %s and resumed from %s instead.", str(exc).split(" Fix:")[0], aside, path)
            except OSError:
                log.warning("%s; resumed from %s instead.", str(exc).split(" Fix:")[0], path)
        return path, payload
    if len(errors) == 1:
        raise errors[0][1]
    raise CheckpointError(
        f"no intact checkpoint in {directory}: "
        + "; ".join(str(exc).split(" Fix:")[0] for _, exc in errors)
        + ". Fix: start a new run directory (hydra.run.dir=...), or checkpoint.resume=false to start over here "
        "(the old files are moved aside)."
    )


_META_LABELS = {
    "env_id": ("env id", "env.id"),
    "estimator": ("estimator", "estimator"),
    "seed": ("seed", "seed"),
    "observation_shape": ("observation shape", None),
    "action_space": ("action space", None),
    "architecture": ("network architecture", None),
    "network": ("network setting", None),
    "optimizer": ("optimizer", "learner.optimizer"),
}


def check_compatible(payload: dict[str, Any], expected_meta: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint of another run: another env, estimator, seed, network architecture
    (parameter shapes, trainable parameters, activations) or optimizer."""
    found = payload.get("meta", {})
    for key, want in expected_meta.items():
        have = found.get(key)
        if have == want:
            continue
        what, override = _META_LABELS.get(key, (key.replace("_", " "), None))
        if key == "architecture":
            detail = _arch_diff(have, want)
        elif isinstance(want, dict):
            detail = _setting_diff(have, want)
        else:
            detail = f"{have!r}, this run has {want!r}"
        fix = (
            f"use {override}={have} to continue that run, or"
            if override and have is not None
            else "use the same config as the run that wrote it, or"
        )
        raise CheckpointError(
            f"checkpoint {path} was written with a different {what}: {detail}. "
            f"Fix: {fix} a new run directory (hydra.run.dir=...)."
        )


def _first_difference(have: dict | None, want: dict, describe) -> str:
    """``describe(name, in_checkpoint, in_this_run)`` for the first key whose values differ."""
    have = have or {}
    for name in sorted(set(have) | set(want)):
        if have.get(name) != want.get(name):
            return describe(name, have.get(name), want.get(name))
    return "they differ"


def _setting_diff(have: dict | None, want: dict) -> str:
    return _first_difference(have, want, lambda n, a, b: f"{n}={a!r} in the checkpoint, {b!r} in this run")


def _arch_diff(have: dict | None, want: dict) -> str:
    return _first_difference(
        have, want, lambda n, a, b: f"parameter {n} has shape {a} in the checkpoint, {b} in this run"
    )


def parameter_shapes(**modules: torch.nn.Module) -> dict[str, list[int]]:
    """``{"policy.net.0.weight": [64, 4], ...}``: the architecture fingerprint stored in ``meta``."""
    return {
        f"{prefix}.{name}": list(t.shape)
        for prefix, module in modules.items()
        for name, t in module.state_dict().items()
    }


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a form ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))  # fmt: skip
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x
