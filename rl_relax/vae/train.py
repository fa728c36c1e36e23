"""Training a discrete VAE with one gradient estimator: config -> data, model, estimator -> steps -> logs.

Per step: a minibatch, one estimate (:meth:`VaeEstimator.estimate`), an Adam step on the model with
the ELBO gradient estimate and an Adam step on the estimator's parameters with the variance objective
(the paper's Alg. 1; both Adams with beta2 = 0.99999 as in its code). Every ``eval.interval`` steps:
the ELBO on the whole training and validation sets (one sample per image, a fixed evaluation noise
seed), and the encoder gradient's log-variance (``eval.variance_samples`` estimates on one fixed
training batch, model frozen). At the end: the test ELBO and ``summary.json``.

Outputs in the run directory: TensorBoard events, ``metrics.csv`` (one row per evaluation),
``summary.json`` (best training and validation ELBO, mean log-variance, time per step) and
``model.pt`` (model and estimator state dicts).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rl_relax.errors import ConfigError, TrainingDivergedError
from rl_relax.logger import TensorBoardLogger
from rl_relax.vae.data import Splits, load_digits, load_file
from rl_relax.vae.estimators import ESTIMATORS, VaeEstimator, encoder_gradient_log_variance
from rl_relax.vae.models import MODELS, BernoulliVAE, build_model

log = logging.getLogger("rl_relax")
METRIC_FIELDS = ("step", "train_elbo", "valid_elbo", "encoder_log_variance", "temperature", "seconds")
EVAL_SEED = 1_000_003  # the same evaluation noise for every run, so ELBOs compare across estimators


def _positive(value: Any, key: str, example: str, integer: bool = True) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{key}={value!r} must be {kind}. Fix: e.g. {key}={example}.")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the fix for the first invalid value."""
    if cfg.model.name not in MODELS:
        raise ConfigError(f"model={cfg.model.name!r} is not one of {', '.join(MODELS)}. Fix: model=nonlinear.")
    if cfg.estimator.name not in ESTIMATORS:
        raise ConfigError(
            f"estimator={cfg.estimator.name!r} is not one of {', '.join(ESTIMATORS)}. Fix: estimator=relax."
        )
    if cfg.data.name not in ("digits", "file"):
        raise ConfigError(f"data.name={cfg.data.name!r} must be digits or file. Fix: data.name=digits.")
    if cfg.data.name == "file" and not cfg.data.path:
        raise ConfigError(
            "data.name=file needs data.path. Fix: data.path=/path/to/binarized_mnist (a directory or file)."
        )
    integers = (("steps", "20000"), ("batch_size", "24"), ("model.latent_size", "200"),
                ("model.hidden_size", "200"), ("eval.interval", "1000"), ("eval.batch_size", "24"))  # fmt: skip
    for key, example in integers:
        _positive(OmegaConf.select(cfg, key), key, example)
    if cfg.eval.variance_samples < 2:
        raise ConfigError("eval.variance_samples must be >= 2 to estimate a variance. Fix: eval.variance_samples=20.")
    for key, example in (("lr", "1e-3"), ("estimator.cv_lr_scale", "1"), ("estimator.temperature", "0.5")):
        _positive(OmegaConf.select(cfg, key), key, example, integer=False)
    if cfg.estimator.weight_decay < 0:
        raise ConfigError("estimator.weight_decay must be >= 0. Fix: estimator.weight_decay=0.001.")
    if cfg.logging.progress not in ("auto", "always", "never"):
        raise ConfigError(f"logging.progress={cfg.logging.progress!r} must be auto, always or never.")
    if not 0 < cfg.adam_beta2 < 1:
        raise ConfigError(f"adam_beta2={cfg.adam_beta2} must be in (0, 1). Fix: adam_beta2=0.99999.")


def load_data(cfg: DictConfig) -> Splits:
    if cfg.data.name == "digits":
        return load_digits(cfg.data.binarize, int(cfg.data.threshold), int(cfg.data.binarize_seed))
    return load_file(cfg.data.path)


@torch.no_grad()
def dataset_elbo(model: BernoulliVAE, images: torch.Tensor, seed: int = EVAL_SEED, chunk: int = 4096) -> float:
    """Mean single-sample ELBO over ``images`` (nats per image), with a fixed noise seed."""
    generator = torch.Generator(device=images.device).manual_seed(seed)
    total = sum(model.elbo(part, generator).sum().item() for part in images.split(chunk))
    return total / images.shape[0]


class ProgressLine:
    """``step 1,200/20,000 (6%) | 4.1 ms/step | batch ELBO -23.41 | eta 0:01:17``: live on a terminal, else a log
    line every ``interval_s`` seconds; ``mode="never"`` silences it."""

    def __init__(self, total: int, mode: str, interval_s: float):
        self.total, self.stream = total, sys.stderr
        self.live = mode == "always" or (mode == "auto" and self.stream.isatty())
        self.enabled, self.interval = mode != "never", 0.5 if self.live else interval_s
        self.last = time.monotonic()

    def update(self, step: int, seconds_per_step: float, batch_elbo: float) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < self.interval:
            return
        self.last = now
        eta = int((self.total - step) * seconds_per_step)
        line = (
            f"step {step:,}/{self.total:,} ({100 * step / self.total:.0f}%) | {1000 * seconds_per_step:.1f} ms/step"
            f" | batch ELBO {batch_elbo:.2f} | eta {eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}"
        )
        if self.live:
            self.stream.write("\r" + line.ljust(80))
            self.stream.flush()
        else:
            log.info(line)

    def close(self) -> None:
        if self.live and self.enabled:
            self.stream.write("\n")


class VaeTrainer:
    """One run in ``run_dir``."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        validate(cfg)
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(int(cfg.torch_threads))
        torch.manual_seed(int(cfg.seed))
        self.data = load_data(cfg)
        self.model = build_model(cfg.model.name, self.data.num_pixels, int(cfg.model.latent_size),
                                 int(cfg.model.hidden_size), self.data.train_mean())  # fmt: skip
        est = cfg.estimator
        self.estimator = VaeEstimator(est.name, self.model, list(est.hidden_sizes), float(est.temperature),
                                      float(est.baseline_decay))  # fmt: skip
        betas = (0.9, float(cfg.adam_beta2))
        self.model_opt = torch.optim.Adam(self.model.parameters(), lr=float(cfg.lr), betas=betas)
        self.cv_opt = None
        if self.estimator.trainable:
            nets = {id(p) for p in self.estimator.net_parameters()}
            groups = [
                {"params": [p for p in self.estimator.parameters() if id(p) in nets], "weight_decay": est.weight_decay},
                {"params": [p for p in self.estimator.parameters() if id(p) not in nets], "weight_decay": 0.0},
            ]
            groups = [g for g in groups if g["params"]]
            self.cv_opt = torch.optim.Adam(groups, lr=float(cfg.lr) * float(est.cv_lr_scale), betas=betas)
        self.generator = torch.Generator().manual_seed(int(cfg.seed))
        self.variance_batch = self.data.train[: int(cfg.eval.batch_size)]

    def _batches(self):
        n, size = self.data.train.shape[0], int(self.cfg.batch_size)
        while True:
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n - size + 1, size):
                yield self.data.train[order[start : start + size]]

    def step(self, x: torch.Tensor) -> tuple[float, float]:
        """One model step and one control-variate step; returns (batch ELBO, variance objective)."""
        estimate = self.estimator.estimate(self.model, x, self.generator)
        model_params = list(self.model.parameters())
        grads = torch.autograd.grad(estimate.surrogate, model_params, retain_graph=estimate.variance_loss is not None)
        variance = math.nan
        if estimate.variance_loss is not None and self.cv_opt is not None:
            phi = [p for p in self.estimator.parameters() if p.requires_grad]
            phi_grads = torch.autograd.grad(estimate.variance_loss, phi, allow_unused=True)
            for p, g in zip(phi, phi_grads, strict=True):
                p.grad = g
            variance = estimate.variance_loss.item()
            if not math.isfinite(variance) or not all(torch.isfinite(g).all() for g in phi_grads if g is not None):
                raise TrainingDivergedError(
                    f"the control variate's variance objective became {variance} (or its gradient non-finite). "
                    "Fix: lower lr or estimator.cv_lr_scale."
                )
            self.cv_opt.step()
        for p, g in zip(model_params, grads, strict=True):
            p.grad = -g  # ascend the ELBO
        self.model_opt.step()
        return estimate.elbo.mean().item(), variance

    def evaluate(self) -> dict[str, float]:
        log_var = encoder_gradient_log_variance(self.model, self.estimator, self.variance_batch,
                                                int(self.cfg.eval.variance_samples),
                                                torch.Generator().manual_seed(EVAL_SEED))  # fmt: skip
        temps = self.estimator.temperatures()
        return {
            "train_elbo": dataset_elbo(self.model, self.data.train),
            "valid_elbo": dataset_elbo(self.model, self.data.valid),
            "encoder_log_variance": log_var,
            "temperature": sum(temps) / len(temps) if temps else math.nan,
        }

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        steps, interval = int(cfg.steps), int(cfg.eval.interval)
        writer = TensorBoardLogger(self.run_dir)
        writer.config(cfg)
        progress = ProgressLine(steps, cfg.logging.progress, float(cfg.logging.progress_interval_s))
        log.info("VAE %s, estimator %s, data %s (%d train images of %d pixels), %d steps, run dir %s",
                 cfg.model.name, cfg.estimator.name, self.data.name, self.data.train.shape[0],
                 self.data.num_pixels, steps, self.run_dir)  # fmt: skip
        rows: list[dict[str, float]] = []
        metrics_path = self.run_dir / "metrics.csv"
        with metrics_path.open("w", newline="") as handle:
            csv.DictWriter(handle, METRIC_FIELDS).writeheader()
        train_seconds, recent_elbo, recent_var, recent_time = 0.0, [], [], 0.0
        batches = self._batches()
        for step in range(steps + 1):
            if step % interval == 0 or step == steps:
                row = {"step": step, **self.evaluate(), "seconds": train_seconds}
                if not all(math.isfinite(row[k]) for k in ("train_elbo", "valid_elbo")):
                    raise TrainingDivergedError(f"the ELBO became {row['train_elbo']} at step {step}. "
                                                "Fix: lower lr (e.g. lr=3e-4).")  # fmt: skip
                rows.append(row)
                with metrics_path.open("a", newline="") as handle:
                    csv.DictWriter(handle, METRIC_FIELDS).writerow(row)
                scalars = {"eval/train_elbo": row["train_elbo"], "eval/valid_elbo": row["valid_elbo"],
                           "grad/encoder_log_variance": row["encoder_log_variance"]}  # fmt: skip
                if recent_elbo:
                    scalars |= {"train/batch_elbo": sum(recent_elbo) / len(recent_elbo),
                                "time/step_ms": 1000.0 * recent_time / len(recent_elbo)}  # fmt: skip
                    finite = [v for v in recent_var if math.isfinite(v)]
                    if finite:
                        scalars["cv/variance_objective"] = sum(finite) / len(finite)
                for k, temp in enumerate(self.estimator.temperatures()):
                    scalars[f"estimator/temperature_{k}"] = temp
                for k, cv in enumerate(self.estimator.control_variates):
                    scalars[f"estimator/eta_{k}"] = cv.eta.item()
                writer.scalars(scalars, step)
                recent_elbo, recent_var, recent_time = [], [], 0.0
                log.info("step %d: train ELBO %.3f, valid ELBO %.3f, encoder log-variance %.2f",
                         step, row["train_elbo"], row["valid_elbo"], row["encoder_log_variance"])  # fmt: skip
            if step == steps:
                break
            start = time.perf_counter()
            elbo, variance = self.step(next(batches))
            elapsed = time.perf_counter() - start
            if not math.isfinite(elbo):
                raise TrainingDivergedError(
                    f"the batch ELBO became {elbo} at step {step}. Fix: lower lr (e.g. lr=3e-4)."
                )
            train_seconds += elapsed
            recent_time += elapsed
            recent_elbo.append(elbo)
            recent_var.append(variance)
            progress.update(step + 1, train_seconds / (step + 1), elbo)
        progress.close()
        writer.close()
        torch.save({"model": self.model.state_dict(), "estimator": self.estimator.state_dict(),
                    "config": OmegaConf.to_container(cfg, resolve=True)}, self.run_dir / "model.pt")  # fmt: skip
        best_train = max(rows, key=lambda r: r["train_elbo"])
        best_valid = max(rows, key=lambda r: r["valid_elbo"])
        summary = {
            "model": cfg.model.name, "estimator": cfg.estimator.name, "seed": int(cfg.seed), "steps": steps,
            "data": self.data.name, "best_train_elbo": best_train["train_elbo"], "best_train_step": best_train["step"],
            "best_valid_elbo": best_valid["valid_elbo"], "best_valid_step": best_valid["step"],
            "final_test_elbo": dataset_elbo(self.model, self.data.test),
            "mean_encoder_log_variance": sum(r["encoder_log_variance"] for r in rows[1:]) / max(1, len(rows) - 1),
            "seconds_per_step": train_seconds / max(1, steps),
        }  # fmt: skip
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        log.info("done: best train ELBO %.3f, best valid ELBO %.3f", summary["best_train_elbo"],
                 summary["best_valid_elbo"])  # fmt: skip
        return summary
