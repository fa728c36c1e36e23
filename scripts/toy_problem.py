"""The RELAX paper's toy problem: minimise E_{b ~ Bernoulli(theta)}[(b - t)^2] with t = 0.499.

The optimum is theta = 0 (loss 0.249001 vs 0.251001 at theta = 1): the signal is tiny next to the
noise, so REINFORCE and REBAR stall near theta = 0.5 while RELAX, whose control variate is trained to
minimise the estimator's variance, drives theta to 0 (Grathwohl et al. 2018, Fig. 1 and 3).

Settings follow the paper's code (rebar_toy.py; its figure ran 10000 steps): theta = sigmoid(logit),
the logit starts at 0, one sample per step, Adam(lr 0.01) for theta and for the control variate; every
10 steps the log-variance of the gradient estimate (w.r.t. the logit) is measured from 1000 fresh
samples. Estimators: REINFORCE (no baseline), Concrete (temperature 0.5, biased), REBAR (eta and
temperature learned), RELAX (a learned control variate c(z) = s * NN(sigma_lambda(z)), s starting at 0).

    python scripts/toy_problem.py                       # writes a new outputs/toy_problem/<date_time>/
    python scripts/toy_problem.py --update-committed    # replaces the committed results/toy/
    python scripts/toy_problem.py --steps 500 --out /tmp/toy

Outputs: toy_t0499.csv (step, estimator, theta, loss, log_variance), loss.png, log_variance.png,
relaxations.png (the learned control variates against the relaxed variable, the paper's Fig. 3).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import platform
import sys
from pathlib import Path

import torch

from rl_relax import toolkit as tk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import output_dir  # noqa: E402

COMMITTED = ROOT / "results" / "toy"
ESTIMATORS = ("REINFORCE", "Concrete", "REBAR", "RELAX")


def exact_loss(theta: float, t: float) -> float:
    return theta * (1 - t) ** 2 + (1 - theta) * t**2


class Problem:
    def __init__(self, name: str, t: float, seed: int):
        torch.manual_seed(seed)
        self.name, self.t = name, t
        self.f = lambda b: (b - t).square().reshape(b.shape[0], -1).sum(-1)
        self.logit = torch.zeros(1, requires_grad=True)
        self.theta_opt = torch.optim.Adam([self.logit], lr=0.01)
        self.cv: torch.nn.Module | None = None
        if name == "RELAX":
            self.cv = tk.ControlVariate(1, "bernoulli", f=None, hidden=10, temperature_init=0.5)
        elif name == "REBAR":
            self.cv = tk.ControlVariate(1, "bernoulli", f=self.f, temperature_init=0.5)
            self.cv.scale.requires_grad_(False)  # REBAR: only eta and the temperature are learned
        self.cv_opt = None if self.cv is None else torch.optim.Adam(
            [p for p in self.cv.parameters() if p.requires_grad], lr=0.01
        )  # fmt: skip

    def surrogate(self, logit: torch.Tensor, noise: tk.Noise, reduction: str = "mean") -> torch.Tensor:
        """S with dS/dlogit = the estimate of dE[f]/dlogit (minimised by descending it)."""
        dist = tk.Bernoulli(logit)
        if self.name == "REINFORCE":
            return tk.reinforce(self.f, dist, noise, reduction=reduction)
        if self.name == "Concrete":
            return tk.concrete(self.f, dist, noise, temperature=0.5, reduction=reduction)
        return tk.relax(self.f, dist, noise, self.cv, reduction=reduction)  # RELAX and REBAR: c = self.cv

    def step(self, generator: torch.Generator) -> None:
        noise = tk.Bernoulli(self.logit).noise(1, generator)
        surrogate = self.surrogate(self.logit, noise)
        self.theta_opt.zero_grad()
        if self.cv is None:
            surrogate.backward()
        else:
            loss, grads = tk.variance_loss(surrogate, [self.logit])
            phi = [p for p in self.cv.parameters() if p.requires_grad]
            self.cv_opt.zero_grad()
            for p, g in zip(phi, torch.autograd.grad(loss, phi, allow_unused=True), strict=True):
                p.grad = g
            self.cv_opt.step()
            self.logit.grad = grads[0]
        self.theta_opt.step()

    def log_variance(self, generator: torch.Generator, samples: int = 1000) -> float:
        """log Var of the per-sample gradient estimate w.r.t. the logit, from fresh samples."""
        # One copy of the logit per sample, so that d(sum of per-sample surrogates) gives per-sample gradients.
        logits = self.logit.detach().expand(samples, 1).clone().requires_grad_()
        noise = tk.Bernoulli(self.logit.detach()).noise(samples, generator)
        per_sample = self.surrogate(logits, noise, reduction="none")
        (grads,) = torch.autograd.grad(per_sample.sum(), logits)
        return grads.var().log().item()

    @property
    def theta(self) -> float:
        return torch.sigmoid(self.logit).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--target", type=float, default=0.499)
    parser.add_argument("--seed", type=int, default=0)
    output_dir.add_arguments(parser, COMMITTED)
    args = parser.parse_args()
    args.out = output_dir.resolve(parser, args, "toy_problem", COMMITTED)
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    problems = {name: Problem(name, args.target, args.seed) for name in ESTIMATORS}
    for name, problem in problems.items():
        train_gen = torch.Generator().manual_seed(args.seed)
        eval_gen = torch.Generator().manual_seed(args.seed + 1)
        for step in range(args.steps + 1):
            if step % 10 == 0:
                rows.append({"step": step, "estimator": name, "theta": problem.theta,
                             "loss": exact_loss(problem.theta, args.target),
                             "log_variance": problem.log_variance(eval_gen)})  # fmt: skip
            if step < args.steps:
                problem.step(train_gen)
        print(f"{name:10s} final theta {problem.theta:.4f}, loss {exact_loss(problem.theta, args.target):.6f}")

    stem = f"toy_t{str(args.target).replace('.', '')}"
    with open(args.out / f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_curves(rows, args)
    plot_relaxations(problems, args.out / "relaxations.png")
    finals = {name: problems[name].theta for name in ESTIMATORS}
    (args.out / "README.md").write_text(
        "\n".join(
            [
                f"# Toy problem: minimise E[(b - {args.target})^2], b ~ Bernoulli(theta)",
                "",
                f"Command: `python scripts/toy_problem.py --steps {args.steps} --target {args.target} "
                f"--seed {args.seed}{output_dir.command_suffix(args)}`  ",
                f"Date: {dt.date.today().isoformat()}  ",
                f"Machine: {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, CPU  ",
                f"Seed: {args.seed} (training noise), {args.seed + 1} (variance measurements)",
                "",
                "Files: `" + stem + ".csv` (every 10 steps: theta, exact loss, log-variance of the gradient estimate "
                "w.r.t. the logit from 1000 fresh samples), `loss.png`, `log_variance.png`, `relaxations.png`.",
                "",
                "| estimator | final theta | final loss |",
                "|---|---:|---:|",
                *[f"| {n} | {finals[n]:.4f} | {exact_loss(finals[n], args.target):.6f} |" for n in ESTIMATORS],
                "",
                f"The optimum is theta = 0 (loss {exact_loss(0.0, args.target):.6f}).",
                "",
            ]
        )
    )
    print(f"wrote {args.out}")


def plot_curves(rows: list[dict], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, ylabel, filename in (
        ("loss", "E[(b - t)^2]", "loss.png"),
        ("log_variance", "log Var(g)", "log_variance.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in ESTIMATORS:
            data = [(r["step"], r[key]) for r in rows if r["estimator"] == name]
            ax.plot([s for s, _ in data], [v for _, v in data], label=name)
        if key == "loss":
            ax.axhline(exact_loss(0.0, args.target), color="k", ls=":", lw=1, label="optimum")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_title(f"t = {args.target}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out / filename, dpi=100)
        plt.close(fig)


def plot_relaxations(problems: dict[str, Problem], path: Path) -> None:
    """c(z) of REBAR and RELAX against the relaxed variable sigma(z), with f at the hard values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = torch.linspace(-8, 8, 400).reshape(-1, 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in zip(axes, ("REBAR", "RELAX"), strict=True):
        problem = problems[name]
        with torch.no_grad():
            c = problem.cv(z).numpy()
            relaxed = problem.cv.relaxed_sample(z).squeeze(-1).numpy()
        ax.plot(relaxed, c, label="learned c(z)")
        ax.scatter([0, 1], [problem.t**2, (1 - problem.t) ** 2], color="k", zorder=3, label="f(b), b in {0, 1}")
        ax.set_xlabel("relaxed sample sigma(z / lambda)")
        ax.set_title(f"{name} (theta = {problem.theta:.3f})")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
