"""Many seeds in one process (``num_seeds=S``) vs S separate single-seed processes: total env-steps/s.

For CartPole-v1 (gymnasium's native vector env) and InvertedPendulum-v5 (one SyncVectorEnv per seed),
the baseline estimator and the env's control-variate estimator (``relax`` on CartPole, ``lax`` on
InvertedPendulum), torch_threads 1 and 2, and S = 1, 2, 4, 8, 16 seeds, each with 8 envs x 5 steps per
update on the CPU, two ways side by side:

- **group**: one process training seeds 0..S-1 together (``num_seeds=S``; S = 1 is a plain single run);
- **separate**: S single-seed processes (seeds 0..S-1) at once, on the same cores.

Every process imports, composes its config and builds its trainer, then waits; when all of a case's
processes are ready they start training together. Each records ``time.time()`` just before and after
``run()``, so start-up and imports are not timed. Total env-steps/s = all seeds' env steps / (last end
- first start). Peak memory is each process's peak resident set size (ru_maxrss); for the group it is
divided by S. Cases (and the two ways) alternate within every repeat, in reverse order on odd repeats,
so machine noise hits all alike; tables report medians over ``--runs`` repeats.

A second, in-process section measures where the time of a large group would go (for reasoning about S
= 256 on a GPU with 16 CPU cores): one step of the training's vector env of M sub-envs, the collection
(acting + env stepping) and the grouped A2C update of S seeds (CartPole, baseline, one torch thread),
and the bytes a CUDA update would copy between host and device (counted on the buffer, not timed).

Output: ``seeds.{md,csv}`` in a new ``outputs/bench_seeds/<date_time>/``, in ``--out DIR``, or with
``--update-committed`` in the committed ``results/``.

    python scripts/bench_seeds.py --runs 1 --scale 0.05                  # a quick look
    python scripts/bench_seeds.py --runs 3 --scale 1.0 --update-committed   # results/seeds.*

Needs the mujoco extra for InvertedPendulum: pip install -e ".[mujoco]" (or pass --envs CartPole).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import output_dir  # noqa: E402

COMMITTED = ROOT / "results"
# env option -> (gymnasium id, env steps per seed at --scale 1, the control-variate estimator for its actions)
ENVS = {"CartPole": ("CartPole-v1", 30_000, "relax"), "InvertedPendulum": ("InvertedPendulum-v5", 10_000, "lax")}
SEEDS = (1, 2, 4, 8, 16)
THREADS = (1, 2)
# The issue's targets (2-core machine, CartPole): S = 8 in one process vs one seed, per estimator.
TARGET_SEEDS, TARGETS = 8, {"baseline": 4.0, "relax": 3.0}
# Where the time goes: vector-env sizes per env, and group sizes for the update (CartPole, baseline).
PROFILE_ENV_SIZES = {"CartPole": (8, 64, 512, 2048), "InvertedPendulum": (8, 64)}
PROFILE_SEEDS = (1, 8, 64, 256)
NUM_ENVS, NUM_STEPS = 8, 5
MAX_SECONDS = 30.0  # training time per case and way at --scale 1 (only oversubscribed cases need it)


def overrides(option: str, estimator: str, seed: int, num_seeds: int, steps: int, threads: int) -> list[str]:
    """The training run's config overrides (as bench_throughput's, plus the group and the threads)."""
    return [f"env={option}", f"estimator={estimator}", f"seed={seed}", f"num_seeds={num_seeds}",
            f"env.num_envs={NUM_ENVS}", f"learner.num_steps={NUM_STEPS}", f"total_timesteps={steps}",
            f"torch_threads={threads}", "device=cpu", "logging.progress=never",
            "checkpoint.interval_steps=100000000"]  # fmt: skip


# One training process: build, report ready, wait for the go line on stdin, train, report the timing.
TRAIN = """
import json, resource, signal, sys, time
from hydra import compose, initialize_config_module
from rl_relax.errors import TrainingInterrupted
from rl_relax.seed_group import SeedGroupTrainer
from rl_relax.trainer import Trainer
overrides = json.loads(sys.argv[2])
with initialize_config_module("rl_relax.configs", version_base="1.3"):
    cfg = compose("train", overrides=overrides)
trainer = (SeedGroupTrainer if int(cfg.num_seeds) > 1 else Trainer)(cfg, sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # run() stops on it; a late one (after run()) must not kill the report
start = time.time()
try:
    result = trainer.run()
except TrainingInterrupted:  # the time limit: every seed checkpointed after its update in flight
    result = None
end = time.time()
seeds = getattr(trainer, "trainers", [trainer])
summaries = [] if result is None else result if isinstance(result, list) else [result]
print(json.dumps({"start": start, "end": end, "steps": sum(t.global_step for t in seeds), "stopped": result is None,
                  "fps_sum": sum(s["fps"] for s in summaries) if summaries else None,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@dataclass
class Case:
    """One row: (env, estimator, threads, S), measured both ways over the repeats."""

    option: str
    env_id: str
    estimator: str
    threads: int
    num_seeds: int
    steps: int  # per seed
    fps: dict[str, list[float]] = field(default_factory=lambda: {"group": [], "separate": []})
    rss_per_seed: dict[str, list[float]] = field(default_factory=lambda: {"group": [], "separate": []})
    group_fps_sum: list[float] = field(default_factory=list)  # the group's per-seed summary fps, summed
    stopped: dict[str, int] = field(default_factory=lambda: {"group": 0, "separate": 0})  # repeats cut by the limit

    def median(self, way: str) -> float:
        return statistics.median(self.fps[way])

    def rss_median(self, way: str) -> float:
        return statistics.median(self.rss_per_seed[way])

    def shown(self, way: str) -> str:
        """The median env-steps/s as the table shows it, marked when a repeat hit the time limit."""
        return f"{self.median(way):,.0f}{' †' if self.stopped[way] else ''}"


def build_cases(args: argparse.Namespace) -> list[Case]:
    out = []
    for option in args.envs:
        env_id, steps, cv_estimator = ENVS[option]
        for estimator in ("baseline", cv_estimator):
            for threads in args.threads:
                for num_seeds in args.seeds:
                    per_seed = max(NUM_ENVS * NUM_STEPS, int(steps * args.scale))
                    out.append(Case(option, env_id, estimator, threads, num_seeds, per_seed))
    return out


def run_way(case: Case, way: str, max_seconds: float) -> dict:
    """Train ``case`` one way; {"fps": total env-steps/s, "rss": [peak MiB per seed per process], ...}.

    Processes still training ``max_seconds`` after the start get SIGTERM: each finishes its update in
    flight, checkpoints and stops, and the rate is measured over the steps done ("stopped": True).
    """
    if way == "group":
        launches = [overrides(case.option, case.estimator, 0, case.num_seeds, case.steps, case.threads)]
    else:
        launches = [overrides(case.option, case.estimator, seed, 1, case.steps, case.threads)
                    for seed in range(case.num_seeds)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(case.threads)}
    procs: list[tuple[subprocess.Popen, Path]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for i, launch in enumerate(launches):
                err = Path(tmp) / f"stderr{i}.txt"
                with open(err, "w") as err_file:  # a file, not a pipe: a chatty process never blocks on it
                    command = [sys.executable, "-c", TRAIN, str(Path(tmp) / f"run{i}"), json.dumps(launch)]
                    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err_file,
                                            text=True, cwd=ROOT, env=env)  # fmt: skip
                procs.append((proc, err))
            for proc, err in procs:  # every process has imported and built its trainer
                while (line := proc.stdout.readline()) and line.strip() != "ready":
                    pass
                if not line:
                    _fail(case, way, proc, err)
            for proc, _ in procs:  # go
                proc.stdin.write("go\n")
                proc.stdin.close()
            deadline = time.monotonic() + max_seconds
            for proc, _ in procs:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    break
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            reports = []
            for proc, err in procs:
                out = proc.stdout.read()  # one short line at the end: it never fills the pipe
                if proc.wait() != 0:
                    _fail(case, way, proc, err)
                reports.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    steps = sum(r["steps"] for r in reports)
    elapsed = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    per_seed = case.num_seeds if way == "group" else 1
    return {"fps": steps / elapsed, "rss": [r["peak_rss_mib"] / per_seed for r in reports],
            "stopped": any(r["stopped"] for r in reports), "fps_sum": reports[0]["fps_sum"]}  # fmt: skip


def _fail(case: Case, way: str, proc: subprocess.Popen, err: Path) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    raise RuntimeError(f"benchmark subprocess failed ({case.option} {case.estimator} S={case.num_seeds} threads="
                       f"{case.threads} {way}, exit code {proc.returncode}):\n{err.read_text()[-3000:]}")  # fmt: skip


# --------------------------------------------------------------------------------------- where the time goes
def compose_cfg(option: str, estimator: str, num_seeds: int):
    from hydra import compose, initialize_config_module

    with initialize_config_module("rl_relax.configs", version_base="1.3"):
        return compose("train", overrides=overrides(option, estimator, 0, num_seeds, 100_000, 1))


def timed(fn, budget_s: float, min_calls: int = 3) -> tuple[float, float]:
    """Median wall and CPU seconds per call of ``fn`` over calls filling ``budget_s`` (at least ``min_calls``)."""
    walls, cpus = [], []
    start = time.perf_counter()
    while len(walls) < min_calls or time.perf_counter() - start < budget_s:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def profile_env_steps(options: list[str], budget_s: float) -> list[dict]:
    """Seconds per step of the training's vector env with M sub-envs (random actions, after a warm-up)."""
    from rl_relax.envs import make_vector_env, seed_vector_env

    rows = []
    for option in options:
        cfg = compose_cfg(option, "baseline", 1)
        for size in PROFILE_ENV_SIZES[option]:
            handle = make_vector_env(cfg.env, num_envs=size, reward_gamma=float(cfg.learner.gamma))
            try:
                seed_vector_env(handle, 0)
                actions = [handle.envs.action_space.sample() for _ in range(64)]
                calls = [0]

                def step(envs=handle.envs, actions=actions, calls=calls):
                    calls[0] += 1
                    envs.step(actions[calls[0] % len(actions)])

                timed(step, 0.0, min_calls=5)  # warm-up
                wall, _ = timed(step, budget_s, min_calls=20)
                kind = type(handle.envs.unwrapped).__name__
            finally:
                handle.close()
            rows.append({"env_id": cfg.env.id, "kind": kind, "num_envs": size, "step_s": wall})
    return rows


def profile_update(num_seeds: int, budget_s: float) -> dict:
    """One update of S seeds (CartPole, baseline, 8 x 5): collection and update times, and the copies a GPU needs."""
    import numpy as np
    import torch

    from rl_relax.seed_group import SeedGroupTrainer

    with tempfile.TemporaryDirectory() as tmp:
        trainer = SeedGroupTrainer(compose_cfg("CartPole", "baseline", num_seeds), Path(tmp))
        try:
            torch.set_num_threads(1)
            buf, learner = trainer.buffer, trainer.learner
            trainer.collector.start(trainer.env.reset(trainer.seeds, 0))
            for _ in range(3):  # warm-up (first-call allocations, lazy imports)
                trainer.collector.collect()
                learner.update(buf, 0)
            collect_wall, collect_cpu = timed(trainer.collector.collect, budget_s)
            update_wall, update_cpu = timed(lambda: learner.update(buf, 0), budget_s)
            # With device=cuda every array the update hands to torch goes through buf.tensor: one copy each.
            copies: list[int] = []
            tensor = buf.tensor

            def counting(array):
                copies.append(array.nbytes if isinstance(array, np.ndarray) else array.numel() * array.element_size())
                return tensor(array)

            buf.tensor = counting
            learner.update(buf, 0)
            del buf.tensor
            obs_step = buf.obs_np[:, 0]
            params_step = trainer.policy.params_numpy(obs_step)
        finally:
            trainer.close()
    return {
        "num_seeds": num_seeds, "collect_wall_s": collect_wall, "collect_cpu_s": collect_cpu,
        "update_wall_s": update_wall, "update_cpu_s": update_cpu, "h2d_bytes": sum(copies), "h2d_copies": len(copies),
        "d2h_bytes": num_seeds * (NUM_STEPS + 1) * NUM_ENVS * 4,  # V on all T + 1 observations, for GAE on the host
        "act_bytes": NUM_STEPS * (obs_step.nbytes + params_step.nbytes),  # per env step: obs in, params out
    }  # fmt: skip


# --------------------------------------------------------------------------------------- report
def speedup(cases: list[Case], case: Case, way: str) -> float | None:
    one = _find(cases, case.option, case.estimator, case.threads, 1)
    return None if one is None else case.median(way) / one.median(way)


def _find(cases: list[Case], option: str, estimator: str, threads: int, num_seeds: int) -> Case | None:
    key = (option, estimator, threads, num_seeds)
    return next((c for c in cases if (c.option, c.estimator, c.threads, c.num_seeds) == key), None)


def target_lines(cases: list[Case]) -> list[str]:
    lines = []
    for estimator, target in TARGETS.items():
        for threads in sorted({c.threads for c in cases}):
            case = _find(cases, "CartPole", estimator, threads, TARGET_SEEDS)
            one = _find(cases, "CartPole", estimator, threads, 1)
            if case is None or one is None:
                lines.append(f"- CartPole {estimator}, torch_threads={threads}: not measured in this run "
                             f"(needs --envs CartPole and --seeds with 1 and {TARGET_SEEDS}).")  # fmt: skip
                continue
            ratio = case.median("group") / one.median("group")
            verdict = "met" if ratio >= target else "not met"
            best_one = max(c.median("group") for c in cases
                           if (c.option, c.estimator, c.num_seeds) == ("CartPole", estimator, 1))  # fmt: skip
            lines.append(
                f"- CartPole {estimator}, torch_threads={threads}: S={TARGET_SEEDS} in one process reaches "
                f"**{ratio:.2f}x** one seed's env-steps/s (target {target:g}x: **{verdict}**); "
                f"{case.median('group') / best_one:.2f}x the fastest single-seed setting measured; "
                f"{case.median('group') / case.median('separate'):.2f}x {TARGET_SEEDS} separate processes."
            )
    return lines


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="repeats of every case (default 3)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every run's env steps per seed and the profile's time budgets")  # fmt: skip
    parser.add_argument("--envs", nargs="+", choices=list(ENVS), default=list(ENVS), help="envs to measure")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="group sizes S (default 1 2 4 8 16)")
    parser.add_argument("--threads", nargs="+", type=int, default=list(THREADS), help="torch threads (default 1 2)")
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                        help="training time limit per case and way at --scale 1 (scaled with --scale); processes "
                             "still training then are stopped and measured on the steps done (default 30)")  # fmt: skip
    parser.add_argument("--profile-seeds", nargs="*", type=int, default=list(PROFILE_SEEDS),
                        help="group sizes for the update profile (default 1 8 64 256; none to skip it)")  # fmt: skip
    output_dir.add_arguments(parser, COMMITTED)
    args = parser.parse_args()
    args.out = output_dir.resolve(parser, args, "bench_seeds", COMMITTED)
    if args.runs < 1 or args.scale <= 0 or args.max_seconds <= 0:
        parser.exit(2, f"{parser.prog}: error: --runs must be >= 1, --scale and --max-seconds > 0. "
                       "Fix: e.g. --runs 3 --scale 1.0 --max-seconds 30\n")  # fmt: skip
    if min(args.seeds + args.threads + args.profile_seeds) < 1:
        parser.exit(2, f"{parser.prog}: error: --seeds, --threads and --profile-seeds take integers >= 1. "
                       "Fix: e.g. --seeds 1 2 4 8 16 --threads 1 2\n")  # fmt: skip
    if "InvertedPendulum" in args.envs and importlib.util.find_spec("mujoco") is None:
        parser.exit(2, f'{parser.prog}: error: InvertedPendulum needs MuJoCo, which is not installed. '
                       'Fix: pip install -e ".[mujoco]", or pass --envs CartPole\n')  # fmt: skip
    args.seeds, args.threads = sorted(set(args.seeds)), sorted(set(args.threads))
    # The in-process profile runs single-threaded (BLAS/OpenMP read this when they load, later).
    os.environ["OMP_NUM_THREADS"] = "1"

    cases = build_cases(args)
    for repeat in range(args.runs):
        todo = [(case, way) for case in cases for way in ("group", "separate")]
        for case, way in todo if repeat % 2 == 0 else reversed(todo):
            result = run_way(case, way, args.max_seconds * args.scale)
            case.fps[way].append(result["fps"])
            case.rss_per_seed[way].extend(result["rss"])
            case.stopped[way] += result["stopped"]
            if way == "group" and result["fps_sum"] is not None:
                case.group_fps_sum.append(result["fps_sum"])
            print(f"run {repeat} {case.option:16s} {case.estimator:8s} threads {case.threads} S={case.num_seeds:<3d} "
                  f"{way:8s} {result['fps']:10,.0f} env-steps/s {statistics.median(result['rss']):6.0f} MiB/seed"
                  f"{' (stopped at the time limit)' if result['stopped'] else ''}", flush=True)  # fmt: skip

    budget = 0.5 * args.scale
    env_rows = profile_env_steps(args.envs, budget)
    update_rows = [profile_update(s, budget) for s in args.profile_seeds] if "CartPole" in args.envs else []

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "seeds.csv", cases)
    text = report(args, cases, env_rows, update_rows)
    (args.out / "seeds.md").write_text(text)
    print(text)
    print(f"wrote {args.out / 'seeds'}.{{md,csv}}")


def write_csv(path: Path, cases: list[Case]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["env", "estimator", "torch_threads", "num_seeds", "steps_per_seed", "num_envs", "num_steps",
                         "group_steps_per_sec_median", "separate_steps_per_sec_median", "group_speedup_vs_1",
                         "separate_speedup_vs_1", "group_over_separate", "group_peak_mib_per_seed",
                         "separate_peak_mib_per_seed", "runs", "group_all_runs", "separate_all_runs",
                         "group_summary_fps_sum_median", "group_stopped_runs", "separate_stopped_runs"])  # fmt: skip
        for c in cases:
            g, s = speedup(cases, c, "group"), speedup(cases, c, "separate")
            writer.writerow([c.env_id, c.estimator, c.threads, c.num_seeds, c.steps, NUM_ENVS, NUM_STEPS,
                             round(c.median("group")), round(c.median("separate")),
                             "" if g is None else round(g, 3), "" if s is None else round(s, 3),
                             round(c.median("group") / c.median("separate"), 3), round(c.rss_median("group")),
                             round(c.rss_median("separate")), len(c.fps["group"]),
                             " ".join(str(round(v)) for v in c.fps["group"]),
                             " ".join(str(round(v)) for v in c.fps["separate"]),
                             round(statistics.median(c.group_fps_sum)) if c.group_fps_sum else "",
                             c.stopped["group"], c.stopped["separate"]])  # fmt: skip


def report(args: argparse.Namespace, cases: list[Case], env_rows: list[dict], update_rows: list[dict]) -> str:
    command = (f"python scripts/bench_seeds.py --runs {args.runs} --scale {args.scale}"
               f"{_restrictions(args)}{output_dir.command_suffix(args)}")  # fmt: skip
    lines = [
        f"# Many seeds in one process vs separate processes ({NUM_ENVS} envs x {NUM_STEPS} steps per seed, CPU)",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.date.today().isoformat()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {_versions()}  ",
        f"Seeds: 0..S-1 in every case, both ways; {args.runs} repeat(s), cases and ways alternating in fresh "
        "processes; medians.  ",
        "Timing: `time.time()` just before and after `run()` in every process (imports and set-up excluded: a "
        "case's processes start training together once all are built); total env-steps/s = env steps of all "
        "seeds / (last end - first start).  ",
        "Peak memory: each process's peak resident set size (ru_maxrss), the group's divided by S; medians.  ",
        f"Time limit: {args.max_seconds * args.scale:g} s of training per case and way; processes still training "
        "then get SIGTERM (each checkpoints after its update in flight and stops) and the rate is measured over the "
        "steps done: † marks a median with such repeats.",
        "",
        "**group**: one process with `num_seeds=S`; **separate**: S single-seed processes at once on the same "
        f"{os.cpu_count()} cores. S = 1 is the same single run both ways (the reference). Speed-up: the group's "
        "env-steps/s over S = 1's, same estimator and threads.",
        "",
        "## Targets",
        "",
        *target_lines(cases),
    ]
    for option in args.envs:
        env_id, _, _ = ENVS[option]
        rows = [c for c in cases if c.option == option]
        lines += [
            "",
            f"## {env_id} ({rows[0].steps:,} env steps per seed)",
            "",
            "| estimator | threads | S | group env-steps/s | separate env-steps/s | group speed-up vs S=1 "
            "| group / separate | peak MiB per seed (group) | peak MiB per seed (separate) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in rows:
            lines.append(
                f"| {c.estimator} | {c.threads} | {c.num_seeds} | {c.shown('group')} | {c.shown('separate')} | "
                f"{_fmt(speedup(cases, c, 'group'), '.2f')}x | "
                f"{c.median('group') / c.median('separate'):.2f}x | {c.rss_median('group'):,.0f} | "
                f"{c.rss_median('separate'):,.0f} |"
            )
    lines += where_the_time_goes(env_rows, update_rows)
    return "\n".join(lines) + "\n"


def where_the_time_goes(env_rows: list[dict], update_rows: list[dict]) -> list[str]:
    lines = [
        "",
        "## Where the time goes",
        "",
        "Measured in one process on this machine (one thread; medians of repeated calls). Environment step: the "
        "training's vector env with M sub-envs, random actions.",
        "",
        "| env | vector env | M sub-envs | us per vector step | us per sub-env step | sub-env steps/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in env_rows:
        lines.append(f"| {r['env_id']} | {r['kind']} | {r['num_envs']} | {r['step_s'] * 1e6:,.1f} | "
                     f"{r['step_s'] * 1e6 / r['num_envs']:.2f} | {r['num_envs'] / r['step_s']:,.0f} |")  # fmt: skip
    if not update_rows:
        return lines
    cartpole_step = {r["num_envs"]: r["step_s"] for r in env_rows if r["env_id"] == "CartPole-v1"}
    lines += [
        "",
        f"One update of S seeds (CartPole-v1, baseline, {NUM_ENVS} envs x {NUM_STEPS} steps per seed, CPU): "
        "`collector.collect()` (batched NumPy acting + stepping one vector env of 8 S sub-envs) and "
        "`learner.update(buffer)` (the grouped A2C update), CPU time in ms; env stepping = "
        f"{NUM_STEPS} x the vector-env step above for M = 8 S. Ceiling: S x {NUM_ENVS * NUM_STEPS} env steps / "
        "(collect + update wall time).",
        "",
        "| S | collect (ms CPU) | of which env stepping (ms) | update (ms CPU) | update per seed (us) | "
        "ceiling env-steps/s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in update_rows:
        s = r["num_seeds"]
        env_step = cartpole_step.get(NUM_ENVS * s)
        env_ms = None if env_step is None else NUM_STEPS * env_step * 1e3
        lines.append(
            f"| {s} | {r['collect_cpu_s'] * 1e3:.2f} | {_fmt(env_ms, '.2f')} | {r['update_cpu_s'] * 1e3:.2f} | "
            f"{r['update_cpu_s'] * 1e6 / s:,.0f} | "
            f"{s * NUM_ENVS * NUM_STEPS / (r['collect_wall_s'] + r['update_wall_s']):,.0f} |"
        )
    lines += [
        "",
        "Host <-> device traffic per update with `device=cuda` (counted on the buffer, not timed): the update copies "
        "every array it hands to torch to the device (one copy each) and brings V back for GAE on the host; acting "
        f"on the GPU would add, per env step ({NUM_STEPS} per update), the observations in and the distribution "
        "parameters out.",
        "",
        "| S | update host->device (KiB, copies) | update device->host (KiB) | acting per update, both ways "
        f"(KiB, {2 * NUM_STEPS} copies) |",
        "|---:|---:|---:|---:|",
    ]
    for r in update_rows:
        lines.append(f"| {r['num_seeds']} | {r['h2d_bytes'] / 1024:,.1f} ({r['h2d_copies']}) | "
                     f"{r['d2h_bytes'] / 1024:,.1f} | {r['act_bytes'] / 1024:,.1f} |")  # fmt: skip
    return lines


def _restrictions(args: argparse.Namespace) -> str:
    """The matrix options that differ from the defaults, as they belong in the recorded command."""
    out = ""
    if args.envs != list(ENVS):
        out += " --envs " + " ".join(args.envs)
    if args.seeds != list(SEEDS):
        out += " --seeds " + " ".join(map(str, args.seeds))
    if args.threads != list(THREADS):
        out += " --threads " + " ".join(map(str, args.threads))
    if args.max_seconds != MAX_SECONDS:
        out += f" --max-seconds {args.max_seconds:g}"
    if args.profile_seeds != list(PROFILE_SEEDS):
        out += " --profile-seeds " + " ".join(map(str, args.profile_seeds))
    return out


def _versions() -> str:
    import gymnasium
    import torch

    versions = f"torch {torch.__version__}, gymnasium {gymnasium.__version__}"
    try:
        import mujoco

        versions += f", mujoco {mujoco.__version__}"
    except ImportError:
        versions += ", mujoco not installed"
    return versions


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"benchmark took {time.perf_counter() - t0:.0f} s")
