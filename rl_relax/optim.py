"""Optimizers for the learner: TensorFlow-style RMSprop (A2C's classic choice) and Adam."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer

from rl_relax.errors import ConfigError

OPTIMIZERS = ("rmsprop", "adam")


class RMSpropTFLike(Optimizer):
    r"""RMSprop as TensorFlow computes it, which A2C's published settings assume:

        v <- alpha * v + (1 - alpha) * g^2,    v_0 = 1
        p <- p - lr * g / sqrt(v + eps)

    ``torch.optim.RMSprop`` instead starts from v_0 = 0 and puts eps outside the square root,
    which destabilises A2C with eps = 1e-5 (stable-baselines3 PR #110 matched its CartPole curves
    only after switching to this form). No momentum, no weight decay, no centering.
    """

    def __init__(self, params: Iterable, lr: float = 7e-4, alpha: float = 0.99, eps: float = 1e-5):
        if lr <= 0 or not 0.0 <= alpha < 1.0 or eps < 0:
            raise ValueError(f"invalid RMSprop settings lr={lr}, alpha={alpha}, eps={eps}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer.step
        loss = None if closure is None else closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            square_avgs = []
            for p in params:
                state = self.state[p]
                if "square_avg" not in state:
                    state["square_avg"] = torch.ones_like(p)
                square_avgs.append(state["square_avg"])
            alpha = group["alpha"]
            torch._foreach_mul_(square_avgs, alpha)
            torch._foreach_addcmul_(square_avgs, grads, grads, value=1.0 - alpha)
            denom = torch._foreach_add(square_avgs, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])
        return loss


def make_optimizer(params: Iterable, learner_cfg) -> Optimizer:
    """The optimizer named by ``learner.optimizer``."""
    name = learner_cfg.optimizer
    if name == "rmsprop":
        return RMSpropTFLike(params, lr=learner_cfg.lr, alpha=learner_cfg.rmsprop_alpha, eps=learner_cfg.eps)
    if name == "adam":
        return torch.optim.Adam(params, lr=learner_cfg.lr, betas=tuple(learner_cfg.adam_betas), eps=learner_cfg.eps)
    raise ConfigError(f"learner.optimizer={name!r} is not one of {', '.join(OPTIMIZERS)}.")
