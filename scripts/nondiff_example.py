"""The seed slides' non-differentiable model (Lee, Yu, Yang 2018): bias, variance and optimisation per estimator.

    z ~ N(0, 1);  if z > 0: observe 0 under N(3, 1)  else: observe 0 under N(-2, 1);   q_theta = N(theta, 1)

    python scripts/nondiff_example.py                      # a new outputs/nondiff_example/<date_time>/
    python scripts/nondiff_example.py --update-committed   # replaces the committed results/nondiff/
    python scripts/nondiff_example.py --out /tmp/nd --samples 20000 --steps 500

Estimators of d ELBO / d theta: the score function (REINFORCE, ``toolkit.reinforce``), the plain
reparameterization gradient (autograd through the `if`, ``toolkit.reparameterization``), Lee et al.'s
reparameterization + boundary term (``nondiff.reparameterization_with_boundary``) and LAX with a learned
control variate c(z) (``toolkit.lax``; RELAX is for discrete variables, so LAX is its continuous form here).

1. ``bias_variance.{md,csv}``: at several theta, ``--samples`` single-sample estimates per estimator:
   mean, the exact gradient -theta - 2.5 phi(theta) (checked against quadrature), bias, its standard error
   and z-score, and the per-sample variance. LAX's c is first trained at that theta on the variance objective.
2. ``optimisation.{md,csv}``, ``theta.png``: SGD on theta from theta_0 = 2 (one sample per step, lr 0.05,
   ``--steps`` steps, seeds 0-4), LAX training c alongside (Adam, lr 0.01); final theta and its ELBO
   against the optimum theta* (the root of the exact gradient).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import platform
import statistics
import sys
from pathlib import Path

import torch

from rl_relax import nondiff as nd
from rl_relax import toolkit as tk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import output_dir  # noqa: E402

COMMITTED = ROOT / "results" / "nondiff"
ESTIMATORS = ("score function", "plain reparameterization", "Lee et al. (reparam + boundary)", "LAX (learned c)")
THETAS = (-2.0, -1.0, -0.75, 0.0, 1.0, 2.0)
MODEL = nd.slide_example()


def control_variate() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def surrogate(name: str, mean: torch.Tensor, noise: tk.Noise, boundary: tk.Noise, cv: torch.nn.Module | None,
              reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    q = tk.Gaussian(mean, torch.zeros(1))
    f = nd.elbo_integrand(MODEL, q)
    if name == ESTIMATORS[0]:
        return tk.reinforce(f, q, noise, reduction=reduction)
    if name == ESTIMATORS[1]:
        return tk.reparameterization(f, q, noise, reduction=reduction)
    if name == ESTIMATORS[2]:
        return nd.reparameterization_with_boundary(MODEL, q, noise, boundary, reduction=reduction)
    return tk.lax(f, q, noise, lambda z: cv(z).squeeze(-1), reduction=reduction)


def train_control_variate(theta: float, steps: int, generator: torch.Generator) -> torch.nn.Module:
    """c trained at a fixed theta on the variance objective ||g||^2 (batches of 64)."""
    cv = control_variate()
    opt = torch.optim.Adam(cv.parameters(), lr=0.01)
    mean = torch.tensor([theta], requires_grad=True)
    for _ in range(steps):
        q = tk.Gaussian(mean, torch.zeros(1))
        loss, _ = tk.variance_loss(surrogate(ESTIMATORS[3], mean, q.noise(64, generator), {}, cv), [mean])
        opt.zero_grad()
        loss.backward(inputs=list(cv.parameters()))
        opt.step()
    return cv


def bias_variance(args: argparse.Namespace) -> list[dict]:
    rows = []
    for theta in THETAS:
        exact = nd.slide_example_exact_gradient(theta)
        _, quad, _ = nd.exact_elbo_gradient_1d(MODEL, theta, 0.0)
        for k, name in enumerate(ESTIMATORS):
            generator = torch.Generator().manual_seed(1000 + k)
            torch.manual_seed(k)
            cv = train_control_variate(theta, args.cv_steps, generator) if name == ESTIMATORS[3] else None
            n = args.samples
            mean = torch.full((n, 1), theta, requires_grad=True)
            noise = {"eps": torch.randn(n, 1, generator=generator)}
            boundary = nd.boundary_noise(tk.Gaussian(torch.tensor([theta]), torch.zeros(1)), MODEL, n, generator)
            (g,) = torch.autograd.grad(surrogate(name, mean, noise, boundary, cv, "none").sum(), [mean])
            g = g[:, 0].double()
            se = g.std().item() / math.sqrt(n)
            rows.append({"theta": theta, "estimator": name, "mean": g.mean().item(), "exact": exact, "quadrature": quad,
                         "bias": g.mean().item() - exact, "se": se, "z": (g.mean().item() - exact) / se,
                         "variance": g.var().item()})  # fmt: skip
            print(
                f"theta {theta:+.2f} {name:34s} bias {rows[-1]['bias']:+.4f} ± {se:.4f}  var {g.var():.3f}", flush=True
            )
    return rows


def optimum() -> float:
    lo, hi = -2.0, 0.0  # the exact gradient is positive at -2 and negative at 0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if nd.slide_example_exact_gradient(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def optimise(args: argparse.Namespace) -> list[dict]:
    rows = []
    for name in ESTIMATORS:
        for seed in args.seeds:
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            mean = torch.tensor([2.0], requires_grad=True)
            opt = torch.optim.SGD([mean], lr=args.lr)
            cv = control_variate() if name == ESTIMATORS[3] else None
            cv_opt = torch.optim.Adam(cv.parameters(), lr=0.01) if cv is not None else None
            for step in range(args.steps + 1):
                if step % args.record_every == 0:
                    rows.append({"estimator": name, "seed": seed, "step": step, "theta": mean.item()})
                if step == args.steps:
                    break
                q = tk.Gaussian(mean, torch.zeros(1))
                noise, boundary = q.noise(1, generator), nd.boundary_noise(q, MODEL, 1, generator)
                s = surrogate(name, mean, noise, boundary, cv)
                if cv is None:
                    (g,) = torch.autograd.grad(s, [mean])
                else:
                    loss, (g,) = tk.variance_loss(s, [mean])
                    cv_opt.zero_grad()
                    loss.backward(inputs=list(cv.parameters()))
                    cv_opt.step()
                mean.grad = -g  # ascend the ELBO
                opt.step()
        print(f"optimised with {name}", flush=True)
    return rows


def command_options(args: argparse.Namespace) -> str:
    defaults = {"samples": 100_000, "cv_steps": 1000, "steps": 2000, "lr": 0.05, "record_every": 20}
    parts = [f" --{k.replace('_', '-')} {getattr(args, k)}" for k, v in defaults.items() if getattr(args, k) != v]
    if args.seeds != [0, 1, 2, 3, 4]:
        parts.append(f" --seeds {' '.join(map(str, args.seeds))}")
    return "".join(parts) + output_dir.command_suffix(args)


def write(args: argparse.Namespace, bv: list[dict], opt_rows: list[dict]) -> None:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for path, rows in ((out / "bias_variance.csv", bv), (out / "optimisation.csv", opt_rows)):
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    theta_star = optimum()
    elbo_star = nd.exact_elbo_gradient_1d(MODEL, theta_star, 0.0)[0]
    head = [
        f"Command: `python scripts/nondiff_example.py{command_options(args)}`  ",
        f"Date: {dt.date.today().isoformat()}; machine: {platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}.",
        "",
    ]
    lines = [
        "# The slide example: bias and variance of d ELBO / d theta",
        "",
        *head,
        f"{args.samples} single-sample estimates per (theta, estimator), noise seeds 1000-1003; LAX's c "
        f"(MLP 1-16-1, tanh) trained {args.cv_steps} Adam steps at that theta first. Exact = -theta - 2.5 "
        "phi(theta) (quadrature agrees to 1e-7). z = bias / SE.",
        "",
        "| theta | estimator | mean | exact | bias | SE | z | variance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in bv:
        lines.append(f"| {r['theta']:+.2f} | {r['estimator']} | {r['mean']:.4f} | {r['exact']:.4f} | {r['bias']:+.4f} "
                     f"| {r['se']:.4f} | {r['z']:+.1f} | {r['variance']:.3f} |")  # fmt: skip
    (out / "bias_variance.md").write_text("\n".join(lines) + "\n")

    def late_average(name: str, seed: int) -> float:  # Polyak average over the last quarter of the run
        late = [
            r["theta"]
            for r in opt_rows
            if r["estimator"] == name and r["seed"] == seed and r["step"] >= 0.75 * args.steps
        ]
        return statistics.mean(late)

    final = {name: [late_average(name, seed) for seed in args.seeds] for name in ESTIMATORS}
    lines = ["# The slide example: optimising theta", "", *head,
             f"SGD (lr {args.lr}) on theta from theta_0 = 2, one sample per step, {args.steps} steps, seeds "
             f"{args.seeds}. Optimum theta* = {theta_star:.4f} (root of the exact gradient), ELBO(theta*) = "
             f"{elbo_star:.4f}. Final theta: per seed the average of theta over the last quarter of the steps; "
             "mean ± std over seeds. ELBO (exact, by quadrature) at that mean.", "",
             "| estimator | final theta | ELBO(final theta) | ELBO gap to optimum |", "|---|---|---|---|"]  # fmt: skip
    for name, thetas in final.items():
        mean_theta = statistics.mean(thetas)
        elbo = nd.exact_elbo_gradient_1d(MODEL, mean_theta, 0.0)[0]
        lines.append(f"| {name} | {mean_theta:.4f} ± {statistics.stdev(thetas):.4f} | {elbo:.4f} | "
                     f"{elbo - elbo_star:.4f} |")  # fmt: skip
    (out / "optimisation.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ESTIMATORS:
        steps = sorted({r["step"] for r in opt_rows if r["estimator"] == name})
        mean = [
            statistics.mean(r["theta"] for r in opt_rows if r["estimator"] == name and r["step"] == s) for s in steps
        ]
        ax.plot(steps, mean, label=name)
    ax.axhline(theta_star, color="k", ls="--", lw=1, label=f"optimum θ* = {theta_star:.3f}")
    ax.set(xlabel="SGD step", ylabel="θ (mean over seeds)", title="q = N(θ, 1) on the slides' `if` program")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "theta.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--cv-steps", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--record-every", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    output_dir.add_arguments(parser, COMMITTED)
    args = parser.parse_args()
    args.out = output_dir.resolve(parser, args, "nondiff_example", COMMITTED)
    torch.set_num_threads(1)
    write(args, bias_variance(args), optimise(args))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
