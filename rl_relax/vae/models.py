"""Sigmoid-belief-network VAEs with Bernoulli latent layers (the RELAX / REBAR paper's models).

Generative model p(x, b_1..b_L) = p(b_L) prod_l p(b_{l-1} | b_l) p(x | b_1) and inference model
q(b_1..b_L | x) = q(b_1 | x) prod_l q(b_l | b_{l-1}), every factor a product of Bernoullis given by
logits. The objective for one image is the single-sample ELBO

    f(x, b) = log p(x, b) - log q(b | x),      b ~ q(. | x),      ELBO(x) = E_q[f(x, b)] <= log p(x).

Architectures (Grathwohl et al. 2018, Sec. 6.1, after Tucker et al. 2017 / Mnih & Gregor 2014):

- ``linear1``: one stochastic layer, every map linear (x -> b_1 and b_1 -> x);
- ``linear2``: two stochastic layers, every map linear (x -> b_1 -> b_2 and back);
- ``nonlinear``: one stochastic layer, the maps x -> b_1 and b_1 -> x through two deterministic
  tanh layers (200 units each in the paper).

As in the paper's code, the encoder sees x - mean(x_train) and the layers above it 2b - 1; the
decoder's output bias starts at logit(mean(x_train)), and the prior's logits are learned.

Every factor also accepts *relaxed* values in (0, 1) in place of b (``log_prob`` is then the Bernoulli
cross-entropy formula evaluated at the relaxed value): REBAR's and RELAX's control variates evaluate f
on relaxed samples.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

MODELS = ("linear1", "linear2", "nonlinear")


def bernoulli_log_prob(b: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """sum_d b_d log sigmoid(l_d) + (1 - b_d) log sigmoid(-l_d), over the last axis (b may be relaxed)."""
    return (b * F.logsigmoid(logits) + (1.0 - b) * F.logsigmoid(-logits)).sum(-1)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class BernoulliVAE(nn.Module):
    """An L-layer Bernoulli VAE; ``hidden_sizes`` are the deterministic tanh layers of the x <-> b_1 maps."""

    def __init__(self, num_pixels: int, latent_sizes: Sequence[int], hidden_sizes: Sequence[int] = (),
                 pixel_mean: torch.Tensor | None = None):  # fmt: skip
        super().__init__()
        if not latent_sizes or any(int(n) < 1 for n in latent_sizes):
            raise ValueError(f"latent_sizes must be non-empty positive integers, got {list(latent_sizes)}")
        self.num_pixels, self.latent_sizes = int(num_pixels), [int(n) for n in latent_sizes]
        hidden = [int(h) for h in hidden_sizes]
        mean = torch.full((num_pixels,), 0.5) if pixel_mean is None else pixel_mean.detach().float().clone()
        self.register_buffer("pixel_mean", mean)
        # encoder[l]: input of layer l (x - mean, or 2 b_{l-1} - 1) -> logits of q(b_l | .)
        inputs = [self.num_pixels, *self.latent_sizes[:-1]]
        pairs = list(zip(inputs, self.latent_sizes, strict=True))  # (units below layer k, units of layer k)
        self.encoder = nn.ModuleList(
            [_mlp([below, *(hidden if k == 0 else []), units]) for k, (below, units) in enumerate(pairs)]
        )
        # decoder[l]: 2 b_{l+1} - 1 -> logits of p(b_l | b_{l+1}); decoder[0] produces the pixels' logits
        self.decoder = nn.ModuleList(
            [_mlp([units, *(hidden[::-1] if k == 0 else []), below]) for k, (below, units) in enumerate(pairs)]
        )
        self.prior_logits = nn.Parameter(torch.zeros(self.latent_sizes[-1]))
        with torch.no_grad():
            self.decoder[0][-1].bias.copy_(torch.logit(mean.clamp(1e-3, 1 - 1e-3)))

    @property
    def num_layers(self) -> int:
        return len(self.latent_sizes)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def encode(self, layer: int, previous: torch.Tensor) -> torch.Tensor:
        """Logits of q(b_layer | previous); ``previous`` is x for layer 0, else b_{layer-1} (hard or relaxed)."""
        inp = previous - self.pixel_mean if layer == 0 else 2.0 * previous - 1.0
        return self.encoder[layer](inp)

    def log_joint(self, x: torch.Tensor, samples: Sequence[torch.Tensor]) -> torch.Tensor:
        """log p(x, b_1..b_L) per image, shape (B,)."""
        total = bernoulli_log_prob(samples[-1], self.prior_logits)
        for k in range(self.num_layers):
            below = x if k == 0 else samples[k - 1]
            total = total + bernoulli_log_prob(below, self.decoder[k](2.0 * samples[k] - 1.0))
        return total

    def elbo_terms(self, x: torch.Tensor, samples: Sequence[torch.Tensor],
                   encoder_logits: Sequence[torch.Tensor]) -> torch.Tensor:  # fmt: skip
        """f(x, b) = log p(x, b) - sum_l log q(b_l | b_{l-1}) given the encoder's logits, shape (B,)."""
        log_q = sum(bernoulli_log_prob(b, logits) for b, logits in zip(samples, encoder_logits, strict=True))
        return self.log_joint(x, samples) - log_q

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A single-sample ELBO estimate per image (B,), with b ~ q(. | x) drawn from ``generator``."""
        samples, logits, previous = [], [], x
        for k in range(self.num_layers):
            layer_logits = self.encode(k, previous)
            u = torch.rand(layer_logits.shape, generator=generator, dtype=x.dtype, device=x.device)
            previous = (u < torch.sigmoid(layer_logits)).to(x.dtype)
            samples.append(previous)
            logits.append(layer_logits)
        return self.elbo_terms(x, samples, logits)


def build_model(name: str, num_pixels: int, latent_size: int, hidden_size: int,
                pixel_mean: torch.Tensor | None = None) -> BernoulliVAE:  # fmt: skip
    """One of :data:`MODELS`, with ``latent_size`` units per stochastic layer."""
    if name == "linear1":
        return BernoulliVAE(num_pixels, [latent_size], [], pixel_mean)
    if name == "linear2":
        return BernoulliVAE(num_pixels, [latent_size, latent_size], [], pixel_mean)
    if name == "nonlinear":
        return BernoulliVAE(num_pixels, [latent_size], [hidden_size, hidden_size], pixel_mean)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
