"""Fault injection for issue 16: what a cluster does to a run, counted.

    python scripts/fault_injection.py [--kills 10] [--pairs 5] [--out /work/notes/fault_injection.json]

Kinds (the issue's, scaled down): ``kill -9`` at random moments, every stop signal, corrupt and
hostile checkpoints, a full disk (monkeypatched write failures; a real tmpfs when it can be mounted),
two processes in one run directory, bad config values. Prints one line per kind with its counts and
writes them as JSON. CPU only, torch threads 1; a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rl_relax import checkpoint as ckpt  # noqa: E402
from rl_relax.errors import CheckpointError, ConfigError, StorageError  # noqa: E402

TRAIN = [sys.executable, "-m", "rl_relax.train", "logging.progress=never", "logging.interval_steps=400"]


def start(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*TRAIN, f"hydra.run.dir={run_dir}", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def wait_training(run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        log = run_dir / "train.log"
        if log.exists() and "training " in log.read_text():
            return True
        time.sleep(0.05)
    return False


def leftovers(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.rglob("*.tmp")]


def kill9(n: int, rng: np.random.Generator, base: Path) -> dict:
    """SIGKILL at random moments: never a torn checkpoint, never more than one interval lost."""
    counts = {"trials": n, "checkpoint_files": 0, "torn_checkpoints": 0, "temp_files_left": 0, "max_loss_steps": 0,
              "reruns_ok": 0}  # fmt: skip
    for i in range(n):
        run_dir = base / f"kill{i}"
        proc = start(run_dir, "total_timesteps=100000000", "checkpoint.interval_steps=2000")
        wait_training(run_dir, proc)
        time.sleep(float(rng.uniform(0.2, 3.0)))
        proc.kill()
        proc.communicate()
        counts["temp_files_left"] += len(leftovers(run_dir))
        files = ckpt.list_checkpoints(run_dir / "checkpoints")
        counts["checkpoint_files"] += len(files)
        for path in files:
            try:
                ckpt.load_checkpoint(path)
            except CheckpointError:
                counts["torn_checkpoints"] += 1
        found = ckpt.load_latest_valid(run_dir / "checkpoints")
        events = [s for s, _ in _scalars(run_dir)]
        saved = found[1]["counters"]["global_step"] if found else 0
        counts["max_loss_steps"] = max(counts["max_loss_steps"], (max(events) if events else 0) - saved)
        rerun = subprocess.run([*TRAIN, f"hydra.run.dir={run_dir}", f"total_timesteps={saved + 400}"], cwd=ROOT,
                               capture_output=True, text=True, check=False)  # fmt: skip
        counts["reruns_ok"] += rerun.returncode == 0
    return counts


def _scalars(run_dir: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("train/value_loss")] if "train/value_loss" in acc.Tags()[
        "scalars"] else []  # fmt: skip


def signals(rng: np.random.Generator, base: Path) -> dict:
    """Each stop signal at a random moment: exit 128+N, status interrupted, nothing finished is lost."""
    sigs = [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP]
    counts = {"signals": len(sigs), "clean_stop_with_checkpoint": 0, "tracebacks": 0, "resume_hint_lines": 0}
    for sig in sigs:
        run_dir = base / f"sig{sig.name}"
        proc = start(run_dir, "total_timesteps=100000000", "checkpoint.interval_steps=4000")
        wait_training(run_dir, proc)
        time.sleep(float(rng.uniform(0.0, 2.0)))
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
        counts["tracebacks"] += "Traceback" in out
        counts["resume_hint_lines"] += out.count("Resume with:")
        summary = json.loads((run_dir / "summary.json").read_text())
        latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
        events = [s for s, _ in _scalars(run_dir)]
        if (proc.returncode == 128 + sig and summary["status"] == "interrupted" and latest is not None
                and ckpt.checkpoint_step(latest) == summary["timesteps"] == max(events)):  # fmt: skip
            counts["clean_stop_with_checkpoint"] += 1
    return counts


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/rl_relax_fault_injection_pwned", "w"))


def hostile_checkpoints(rng: np.random.Generator, base: Path) -> dict:
    """22 corrupt or hostile files as the newest checkpoint of a run: each one refused (fallback to the
    previous intact one), none loaded with changed content, none ran code."""
    run_dir = base / "hostile"
    subprocess.run([*TRAIN, f"hydra.run.dir={run_dir}", "total_timesteps=800", "checkpoint.interval_steps=400"],
                   cwd=ROOT, capture_output=True, check=True)  # fmt: skip
    good = ckpt.latest_checkpoint(run_dir / "checkpoints")
    data = good.read_bytes()
    payload = ckpt.load_checkpoint(good)
    target = run_dir / "checkpoints" / "ckpt_000000999999.pt"
    variants: list[tuple[str, bytes | None]] = []
    for bit in rng.choice(len(data) * 8, size=12, replace=False):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        variants.append(("bit flip", bytes(flipped)))
    for frac in (0.1, 0.5, 0.9, 0.99):
        variants.append(("truncated", data[: int(len(data) * frac)]))
    variants += [("empty", b""), ("garbage", b"\x00" * 1000)]
    exploit = tempfile.NamedTemporaryFile(suffix=".pt", delete=False)  # noqa: SIM115
    torch.save({"format_version": ckpt.FORMAT_VERSION, "x": _Exploit()}, exploit, pickle_module=pickle)
    exploit.close()
    variants.append(("pickle exploit", Path(exploit.name).read_bytes()))
    forged = {**payload, "policy": {k: v.clone().fill_(float("nan")) for k, v in payload["policy"].items()}}
    forged["sha256"] = ckpt.content_digest(forged)
    variants.append(("forged NaN weights, valid checksum", _torch_bytes(forged)))
    other_seed = {**payload, "meta": {**payload["meta"], "seed": 99}}
    other_seed["sha256"] = ckpt.content_digest(other_seed)
    variants.append(("other seed", _torch_bytes(other_seed)))
    variants.append(("old format", _torch_bytes({"format_version": 1, "policy": payload["policy"]})))
    counts = {"files": len(variants), "refused_one_line": 0, "loaded_changed_content": 0, "code_executed": 0}
    digest = payload["sha256"]
    for kind, blob in variants:
        target.write_bytes(blob)
        try:
            loaded = ckpt.load_checkpoint(target)
        except CheckpointError as exc:
            counts["refused_one_line"] += "\n" not in str(exc)
        else:
            if kind == "other seed":
                try:
                    ckpt.check_compatible(loaded, payload["meta"], target)
                except CheckpointError:
                    counts["refused_one_line"] += 1
                    continue
            counts["loaded_changed_content"] += loaded.get("sha256") != digest
        counts["code_executed"] += os.path.exists("/tmp/rl_relax_fault_injection_pwned")
    # And through a real resume: the newest file corrupt, the run falls back and finishes.
    target.write_bytes(variants[0][1])
    proc = subprocess.run([*TRAIN, f"hydra.run.dir={run_dir}", "total_timesteps=1200"], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    counts["resume_falls_back_and_finishes"] = int(proc.returncode == 0 and "resumed from" in proc.stdout + proc.stderr)
    return counts


def _torch_bytes(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def full_disk(base: Path) -> dict:
    """Writes failing with ENOSPC at every write of a run (monkeypatched), and on a real tiny tmpfs."""
    from rl_relax.train import train
    from tests.conftest import compose_config

    counts = {"trials": 0, "one_line_storage_errors": 0, "partial_files_left": 0, "last_checkpoint_intact": 0}
    real_fdopen = os.fdopen
    for fail_at in range(1, 6):
        run_dir = base / f"disk{fail_at}"
        calls = []

        def failing(fd, mode="r", *args, _fail_at=fail_at, _calls=calls, **kwargs):
            _calls.append(1)
            if len(_calls) >= _fail_at:
                os.close(fd)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fdopen(fd, mode, *args, **kwargs)

        os.fdopen = failing
        counts["trials"] += 1
        try:
            train(compose_config("total_timesteps=2000", "checkpoint.interval_steps=400"), run_dir)
        except StorageError as exc:
            counts["one_line_storage_errors"] += "\n" not in str(exc) and "No space left" in str(exc)
        finally:
            os.fdopen = real_fdopen
        counts["partial_files_left"] += len(leftovers(run_dir))
        found = ckpt.load_latest_valid(run_dir / "checkpoints") if (run_dir / "checkpoints").exists() else None
        counts["last_checkpoint_intact"] += found is not None or fail_at == 1
    mount = base / "tiny"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                             check=False).returncode == 0  # fmt: skip
    counts["real_tmpfs"] = "not mountable here"
    if mounted:
        try:
            proc = subprocess.run([*TRAIN, f"hydra.run.dir={mount / 'run'}", "total_timesteps=200000",
                                   "checkpoint.interval_steps=400"], cwd=ROOT, capture_output=True, text=True,
                                  check=False)  # fmt: skip
            out = proc.stdout + proc.stderr
            counts["real_tmpfs"] = {"exit_code": proc.returncode, "traceback": "Traceback" in out,
                                    "error_lines": [x for x in out.splitlines() if "error:" in x][-1:],
                                    "partial_files_left": len(leftovers(mount))}  # fmt: skip
        finally:
            subprocess.run(["umount", str(mount)], check=False)
    return counts


def two_processes(n: int, base: Path) -> dict:
    """Two jobs (seeds 7 and 8) started together in one directory: one trains, the other stops with one line."""
    counts = {"trials": n, "exactly_one_ran": 0, "refusals_naming_pid": 0, "refusals_other_seed": 0,
              "crashes_or_tracebacks": 0, "mixed_seed_checkpoints": 0}  # fmt: skip
    for i in range(n):
        run_dir = base / f"pair{i}"
        a = start(run_dir, "seed=7", "total_timesteps=4000", "checkpoint.interval_steps=400")
        b = start(run_dir, "seed=8", "total_timesteps=4000", "checkpoint.interval_steps=400")
        outs = [p.communicate(timeout=300)[0] for p in (a, b)]
        codes = [a.returncode, b.returncode]
        counts["exactly_one_ran"] += sorted(codes) == [0, 2]
        counts["refusals_naming_pid"] += sum("in use by another training process (pid " in o for o in outs)
        # The second job started after the first had finished: it finds seed 7's checkpoint and refuses it.
        counts["refusals_other_seed"] += sum("different seed: " in o for o in outs)
        counts["crashes_or_tracebacks"] += sum("Traceback" in o for o in outs)
        seeds = {ckpt.load_checkpoint(p)["meta"]["seed"] for p in ckpt.list_checkpoints(run_dir / "checkpoints")}
        counts["mixed_seed_checkpoints"] += len(seeds) > 1
    return counts


BAD_VALUES = [
    "learner.rmsprop_alpha=2", "learner.eps=abc", "variance.ema_decay=abc", "variance.interval_steps=nan", "seed=1.5",
    "learner.num_steps=1000000000000", "learner.lr=-1", "learner.gamma=2", "learner.gae_lambda=-1", "env.num_envs=0",
    "total_timesteps=abc", "learner.max_grad_norm=0", "learner.adam_betas=[1,2]", "policy.hidden_sizes=abc",
    "policy.activation=sigmoid", "value.hidden_sizes=[0]", "learner.optimizer=sgd", "device=tpu",
    "checkpoint.keep_last=0", "checkpoint.interval_steps=-1", "logging.interval_steps=abc", "variance.num_batches=1",
    "env.vectorization=threads", "env.make_kwargs=5", "env.solved_window=0", "seed=-3", "torch_threads=0",
    "estimator=relax estimator.cv_lr=abc", "estimator=relax estimator.cv_objective=nope",
    "experiment=CartPole_relax estimator=baseline",
]  # fmt: skip


def bad_configs(base: Path) -> dict:
    """The 30 bad values, in-process (every one) and through the command line (every one)."""
    from rl_relax.trainer import Trainer
    from tests.conftest import compose_config

    counts = {"values": len(BAD_VALUES), "in_process_one_line_config_errors": 0, "cli_one_line_exit_2": 0}
    for i, value in enumerate(BAD_VALUES):
        try:
            Trainer(compose_config(*value.split()), base / f"cfg{i}").env.close()
        except ConfigError as exc:
            counts["in_process_one_line_config_errors"] += "\n" not in str(exc) and "Fix" in str(exc)
        except Exception:
            pass
    procs = [subprocess.Popen([*TRAIN, *v.split(), f"hydra.run.dir={base / f'cli{i}'}"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, v in enumerate(BAD_VALUES)]  # fmt: skip
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        lines = [x for x in out.splitlines() if x.strip()]
        counts["cli_one_line_exit_2"] += proc.returncode == 2 and "Traceback" not in out and len(lines) == 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    results = {}
    with tempfile.TemporaryDirectory(prefix="rl_relax_faults_") as tmp:
        base = Path(tmp)
        for name, run in [("kill -9", lambda: kill9(args.kills, rng, base)), ("signals", lambda: signals(rng, base)),
                          ("hostile checkpoints", lambda: hostile_checkpoints(rng, base)),
                          ("full disk", lambda: full_disk(base)),
                          ("two processes", lambda: two_processes(args.pairs, base)),
                          ("bad config values", lambda: bad_configs(base))]:  # fmt: skip
            results[name] = run()
            print(f"{name}: {results[name]}", flush=True)
    results["_meta"] = {"date": time.strftime("%Y-%m-%d %H:%M"), "seed": args.seed, "command": " ".join(sys.argv)}
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
