"""Atomic checkpoints of everything a run needs to resume, loaded with ``weights_only=True``.

A checkpoint holds networks, optimizers (the estimator's too), normaliser statistics, RNG states
and counters, plus metadata (env id, spaces, parameter shapes) checked before anything is
restored. Files are written to a temporary name, fsynced, then renamed, so a crash mid-write never
leaves a truncated ``ckpt_*.pt``. Loading never unpickles code.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rl_relax.errors import CheckpointError

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"ckpt_{step:012d}.pt"


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


def save_checkpoint(payload: dict[str, Any], directory: Path, step: int, keep_last: int) -> Path:
    """Write ``payload`` atomically as ``ckpt_<step>.pt``; keep the newest ``keep_last`` files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, step)
    tmp = final.with_name(f".{final.name}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    for old in list_checkpoints(directory)[: -max(int(keep_last), 1)]:
        old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a corrupt or foreign file raises :class:`CheckpointError`."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist.") from None
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not an rl_relax checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Fix: delete it to resume from the previous "
            "checkpoint, or start a new run directory (hydra.run.dir=...)."
        ) from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} is not an rl_relax checkpoint of format {FORMAT_VERSION}. "
            "Fix: point at a checkpoint written by this version of rl_relax."
        )
    return payload


def check_compatible(payload: dict[str, Any], expected_meta: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint from another env, estimator or network architecture."""
    found = payload.get("meta", {})
    for key, want in expected_meta.items():
        have = found.get(key)
        if have != want:
            what = {"architecture": "network architecture"}.get(key, key.replace("_", " "))
            detail = _arch_diff(have, want) if key == "architecture" else f"{have!r}, this run has {want!r}"
            raise CheckpointError(
                f"checkpoint {path} was written with a different {what}: {detail}. "
                "Fix: use the same config as the run that wrote it, or a new run directory (hydra.run.dir=...)."
            )


def _arch_diff(have: dict | None, want: dict) -> str:
    have = have or {}
    for name in sorted(set(have) | set(want)):
        if have.get(name) != want.get(name):
            return f"parameter {name} has shape {have.get(name)} in the checkpoint, {want.get(name)} in this run"
    return "parameters differ"


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
