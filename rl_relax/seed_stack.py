"""S independent copies of a module as one module whose parameters carry a leading seed dimension.

Training many seeds in one process (:mod:`rl_relax.seed_group`) runs every seed's networks as one
stacked network: a layer's weight (out, in) becomes (S, out, in) and its forward pass one batched
matrix product, so the per-operation overhead that dominates small-MLP updates is paid once for S
seeds. Seeds stay independent because every operation acts on each seed's slice alone; a loss that
is the sum of the seeds' losses has, in seed k's slice, exactly seed k's gradient.

Seed k's slice of a stacked parameter holds what the single module's parameter holds: parameters
that meet per-state tensors by broadcasting (a Gaussian log-std, a temperature) get singleton
dimensions after the seed dimension (``seed_broadcast`` on the owning module), and
:func:`copy_seed_to` / :func:`copy_seed_from` reshape between the two. That is how a seed's
checkpoint is written in the ordinary single-run format, and how a resumed seed is loaded.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    prefix, _, leaf = name.rpartition(".")
    return (module.get_submodule(prefix) if prefix else module), leaf


def stacked_shape(module: nn.Module, name: str, shape: torch.Size, num_seeds: int) -> tuple[int, ...]:
    """The shape of parameter ``name`` of ``module`` stacked over ``num_seeds`` seeds."""
    owner, leaf = _owner(module, name)
    singletons = getattr(owner, "seed_broadcast", {}).get(leaf, 0)
    return (num_seeds, *([1] * singletons), *shape)


def stack_modules(modules: Sequence[nn.Module]) -> nn.Module:
    """One module computing all of ``modules`` (identical architectures) at once, seed k = ``modules[k]``.

    The result is a copy of ``modules[0]`` whose parameters are the stacked parameters of all of
    them, and whose submodules that know about stacking (those with a ``num_seeds`` attribute) are
    told the number of seeds. Gradients do not flow back into ``modules``.
    """
    if not modules:
        raise ValueError("stack_modules needs at least one module")
    num_seeds = len(modules)
    stacked = copy.deepcopy(modules[0])
    per_module = [dict(m.named_parameters()) for m in modules]
    for name, param in list(stacked.named_parameters()):
        shape = stacked_shape(stacked, name, param.shape, num_seeds)
        if any(p[name].shape != param.shape for p in per_module):
            raise ValueError(f"parameter {name} differs in shape between the modules to stack")
        data = torch.stack([p[name].detach() for p in per_module]).reshape(shape).clone()
        owner, leaf = _owner(stacked, name)
        setattr(owner, leaf, nn.Parameter(data, requires_grad=param.requires_grad))
    for submodule in stacked.modules():
        if hasattr(submodule, "num_seeds"):
            submodule.num_seeds = num_seeds
    after = getattr(stacked, "after_stacking", None)
    if callable(after):  # e.g. an estimator rebuilds its optimizer on the stacked parameters
        after()
    return stacked


@torch.no_grad()
def copy_seed_to(stacked: nn.Module, seed: int, single: nn.Module) -> None:
    """Write seed ``seed``'s parameters of ``stacked`` into the single module ``single`` (in place)."""
    singles = dict(single.named_parameters())
    for name, param in stacked.named_parameters():
        singles[name].copy_(param[seed].reshape(singles[name].shape))


@torch.no_grad()
def copy_seed_from(stacked: nn.Module, seed: int, single: nn.Module) -> None:
    """Write the single module's parameters into seed ``seed``'s slice of ``stacked`` (in place)."""
    singles = dict(single.named_parameters())
    for name, param in stacked.named_parameters():
        param[seed].copy_(singles[name].detach().reshape(param.shape[1:]))
