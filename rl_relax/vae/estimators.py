"""Per-layer gradient estimators for a Bernoulli VAE, built on :mod:`rl_relax.toolkit`.

For an L-layer model the ELBO gradient splits into (Tucker et al. 2017; the RELAX paper's
``binary_vae_multilayer_per_layer.py``):

    d E_q[f] = E_q[ d f(x, b) ]                          (decoder, prior, and the encoder's direct -log q term)
             + sum_l E_q[ g_l(x, b) . d logits_l ]        (the encoder, through the sampled layers)

where g_l estimates d E_{b_l ~ q(b_l | b_{l-1})}[f] / d logits_l with everything upstream held fixed and
everything downstream resampled: a toolkit estimator on one Bernoulli layer, per image. The images of a
batch are the toolkit's "samples" (one noise draw per image), so every image gets its own learning
signal f(x_i, b_i), and g_l is back-propagated into the encoder weights through logits_l.

=========  =====================================================================================  ========
estimator  g_l (per image)                                                                          unbiased
=========  =====================================================================================  ========
reinforce  (f(b) - c_l(x, b_{<l})) d log q(b_l);  c_l = EMA of f + MLP(x, b_{<l})  (NVIL-style)     yes
concrete   d f(b_{<l}, sigma_lambda(z_l), relaxed downstream);  lambda fixed                         no
rebar      RELAX with c_l(z) = eta_l f_relaxed,l(sigma_lambda(z))                                     yes
relax      RELAX with c_l(z) = eta_l f_relaxed,l(sigma_lambda(z)) + r_l(x, sigma_lambda(z), b_{<l})   yes
disarm     1/2 (f(b) - f(b~)) (-1)^{b~} 1[b != b~] sigmoid(|logits_l|),  b~ from the antithetic 1-u    yes
=========  =====================================================================================  ========

f_relaxed,l evaluates the ELBO with layer l relaxed and the layers below it computed from relaxed
samples driven by the *same* noise u_{>l} as the hard pass (REBAR's construction): independent of
(u_l, v_l), so it keeps RELAX unbiased. RELAX with z~ ~ q(z | b) uses the toolkit's exact conditional
sampler. DisARM (Dong, Mnih, Tucker 2020) needs no control variate.

Control-variate parameters (eta, lambda, r, the NVIL baseline) are trained on the variance objective
sum_l mean_i ||g_{l,i}||^2 (Grathwohl et al. 2018, Sec. 3.3), computed with ``toolkit.variance_loss``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from rl_relax import toolkit as tk
from rl_relax.vae.models import BernoulliVAE

ESTIMATORS = ("reinforce", "concrete", "rebar", "relax", "disarm")
UNBIASED = ("reinforce", "rebar", "relax", "disarm")


@dataclasses.dataclass
class Estimate:
    """One estimate on a batch.

    ``surrogate``: scalar whose gradient w.r.t. the model's parameters estimates d mean_i ELBO(x_i)
    (ascend it). ``variance_loss``: scalar whose gradient w.r.t. the estimator's parameters is that
    of the variance objective (None when there is nothing to train). ``elbo``: f(x_i, b_i), detached.
    """

    surrogate: torch.Tensor
    variance_loss: torch.Tensor | None
    elbo: torch.Tensor


def _mlp(sizes: Sequence[int], zero_last: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if zero_last:  # start from the estimator without the learned term (REBAR for RELAX, the EMA for NVIL)
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


class LayerControlVariate(nn.Module):
    """Learned parts of one layer's control variate: eta, the temperature lambda and an optional net r."""

    def __init__(self, net_inputs: int | None, hidden_sizes: Sequence[int], temperature_init: float):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature_init)))
        self.eta = nn.Parameter(torch.tensor(1.0))
        self.net = None if net_inputs is None else _mlp([net_inputs, *hidden_sizes, 1])

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()


class VaeEstimator(nn.Module):
    """One of :data:`ESTIMATORS` for every stochastic layer of ``model``, with its trainable parameters."""

    def __init__(self, name: str, model: BernoulliVAE, hidden_sizes: Sequence[int] = (200, 200),
                 temperature: float = 0.5, baseline_decay: float = 0.99):  # fmt: skip
        super().__init__()
        if name not in ESTIMATORS:
            raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
        self.name, self.temperature_value, self.baseline_decay = name, float(temperature), float(baseline_decay)
        sizes = model.latent_sizes
        upstream = [model.num_pixels + sum(sizes[:k]) for k in range(model.num_layers)]  # x and b_{<l}
        self.baselines = nn.ModuleList()
        self.control_variates = nn.ModuleList()
        if name == "reinforce":
            self.baselines.extend(_mlp([n, *hidden_sizes, 1]) for n in upstream)
            self.register_buffer("f_mean_raw", torch.zeros(()))
            self.register_buffer("f_mean_count", torch.zeros(()))
        elif name in ("rebar", "relax"):
            self.control_variates.extend(
                LayerControlVariate(n + sizes[k] if name == "relax" else None, hidden_sizes, temperature)
                for k, n in enumerate(upstream)
            )

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def net_parameters(self) -> list[nn.Parameter]:
        """The networks' weights (weight decay applies to these), as opposed to eta and lambda."""
        nets = [cv.net for cv in self.control_variates if cv.net is not None] + list(self.baselines)
        return [p for net in nets for p in net.parameters()]

    def temperatures(self) -> list[float]:
        if self.name in ("rebar", "relax"):
            return [cv.temperature.item() for cv in self.control_variates]
        return [self.temperature_value] if self.name == "concrete" else []

    def estimate(self, model: BernoulliVAE, x: torch.Tensor, generator: torch.Generator | None = None,
                 update_statistics: bool = True) -> Estimate:  # fmt: skip
        """The estimate on batch x; ``update_statistics=False`` leaves NVIL's running mean of f unchanged."""
        batch = x.shape[0]
        noises, logits, samples = [], [], []
        previous = x
        for k in range(model.num_layers):
            layer_logits = model.encode(k, previous)
            dist = tk.Bernoulli(layer_logits.detach())
            noise = {key: value[0] for key, value in dist.noise(1, generator).items()}  # one draw per image
            previous = dist.hard(dist.relaxed(noise))
            noises.append(noise)
            logits.append(layer_logits)
            samples.append(previous)
        f_b = model.elbo_terms(x, samples, logits)  # live: exact gradient for the decoder, encoder's direct term
        surrogate = f_b.mean()
        variance_losses = []
        for k in range(model.num_layers):
            leaf = logits[k].detach().requires_grad_()
            per_image = self._layer_surrogate(model, x, k, leaf, noises, logits, samples, f_b.detach())
            if self.trainable and self.name != "concrete":
                loss, (g,) = tk.variance_loss(per_image.sum(), [leaf])
                variance_losses.append(loss / batch)
            else:
                (g,) = torch.autograd.grad(per_image.sum(), [leaf])
            surrogate = surrogate + (g.detach() * logits[k]).sum() / batch
        if self.name == "reinforce" and update_statistics:
            self._update_mean(f_b.detach().mean())
        variance_loss = torch.stack(variance_losses).sum() if variance_losses else None
        return Estimate(surrogate, variance_loss, f_b.detach())

    # -- per-layer estimators --------------------------------------------------------------------------------

    def _layer_surrogate(self, model: BernoulliVAE, x: torch.Tensor, layer: int, leaf: torch.Tensor,
                         noises: list[tk.Noise], logits: list[torch.Tensor], samples: list[torch.Tensor],
                         f_b: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Per image, a surrogate whose gradient w.r.t. ``leaf`` (= logits_layer) is g_layer."""
        dist, noise = tk.Bernoulli(leaf), noises[layer]
        upstream = [x - model.pixel_mean, *(2.0 * b - 1.0 for b in samples[:layer])]

        def relaxed_f(soft: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
            return self._relaxed_elbo(model, x, layer, soft, noises, logits, samples, temperature)

        if self.name == "reinforce":
            baseline = self.f_mean + self.baselines[layer](torch.cat(upstream, -1)).squeeze(-1)
            return (f_b - baseline) * dist.log_prob(samples[layer])
        if self.name == "concrete":
            return tk.concrete(lambda soft: relaxed_f(soft, self.temperature_value), dist, noise,
                               self.temperature_value, reduction="none")  # fmt: skip
        if self.name == "disarm":
            return self._disarm(model, x, layer, leaf, noises, logits, samples, f_b)
        cv = self.control_variates[layer]

        def control_variate(z: torch.Tensor) -> torch.Tensor:
            soft = dist.soft(z, cv.temperature)
            value = cv.eta * relaxed_f(soft, cv.temperature)
            if cv.net is not None:
                value = value + cv.net(torch.cat([*upstream, 2.0 * soft - 1.0], -1)).squeeze(-1)
            return value

        # The toolkit recomputes b_layer from the same noise and logits: f of it is f_b.
        return tk.relax(lambda _b: f_b, dist, noise, control_variate, reduction="none")

    def _relaxed_elbo(self, model: BernoulliVAE, x: torch.Tensor, layer: int, soft: torch.Tensor,
                      noises: list[tk.Noise], logits: list[torch.Tensor],
                      samples: list[torch.Tensor], temperature: torch.Tensor | float) -> torch.Tensor:  # fmt: skip
        """f with b_{<layer} hard, b_layer = ``soft``, and the layers below relaxed with their hard-pass noise."""
        relaxed = [*samples[:layer], soft]
        # theta reaches f_relaxed only through the sample: the direct -log q term is in f_b's gradient already,
        # and a direct path in c(z~) would leak into RELAX's score weight.
        relaxed_logits = [*(g.detach() for g in logits[: layer + 1])]
        for k in range(layer + 1, model.num_layers):
            dist = tk.Bernoulli(model.encode(k, relaxed[-1]))
            relaxed.append(dist.soft(dist.relaxed(noises[k]), temperature))
            relaxed_logits.append(dist.logits)
        return model.elbo_terms(x, relaxed, relaxed_logits)

    @torch.no_grad()
    def _hard_elbo(self, model: BernoulliVAE, x: torch.Tensor, layer: int, b_layer: torch.Tensor,
                   noises: list[tk.Noise], logits: list[torch.Tensor],
                   samples: list[torch.Tensor]) -> torch.Tensor:  # fmt: skip
        """f with b_layer replaced and the layers below resampled with the same noise."""
        hard, hard_logits = [*samples[:layer], b_layer], list(logits[: layer + 1])
        for k in range(layer + 1, model.num_layers):
            dist = tk.Bernoulli(model.encode(k, hard[-1]))
            hard.append(dist.hard(dist.relaxed(noises[k])))
            hard_logits.append(dist.logits)
        return model.elbo_terms(x, hard, hard_logits)

    def _disarm(self, model: BernoulliVAE, x: torch.Tensor, layer: int, leaf: torch.Tensor,
                noises: list[tk.Noise], logits: list[torch.Tensor], samples: list[torch.Tensor],
                f_b: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """DisARM: b = 1[u > sigmoid(-a)] (the hard sample) and its antithetic b~ = 1[1 - u > sigmoid(-a)]."""
        antithetic = {"u": 1.0 - noises[layer]["u"]}
        dist = tk.Bernoulli(leaf.detach())
        b, b_anti = samples[layer], dist.hard(dist.relaxed(antithetic))
        f_anti = self._hard_elbo(model, x, layer, b_anti, noises, logits, samples)
        sign = 1.0 - 2.0 * b_anti  # (-1)^{b~}
        weight = 0.5 * (f_b - f_anti).unsqueeze(-1) * sign * (b != b_anti) * torch.sigmoid(leaf.detach().abs())
        return (weight * leaf).sum(-1)

    @property
    def f_mean(self) -> torch.Tensor:
        """NVIL's signal centring: a bias-corrected EMA of the batch-mean learning signal of earlier batches."""
        if self.f_mean_count.item() == 0:
            return self.f_mean_raw
        return self.f_mean_raw / (1.0 - self.baseline_decay**self.f_mean_count)

    def _update_mean(self, value: torch.Tensor) -> None:
        self.f_mean_count += 1
        self.f_mean_raw.mul_(self.baseline_decay).add_((1.0 - self.baseline_decay) * value)


def encoder_gradient_log_variance(model: BernoulliVAE, estimator: VaeEstimator, x: torch.Tensor,
                                  num_samples: int, generator: torch.Generator | None = None) -> float:  # fmt: skip
    """mean_p log Var(g_p) over the encoder's parameters p, from ``num_samples`` estimates on the batch x.

    Model and estimator are frozen (no updates); the variance is over the estimator's noise only.
    """
    params = model.encoder_parameters()
    grads = []
    for _ in range(num_samples):
        est = estimator.estimate(model, x, generator, update_statistics=False)
        g = torch.autograd.grad(est.surrogate, params)
        grads.append(torch.cat([t.reshape(-1) for t in g]))
    var = torch.stack(grads).var(0)
    return torch.log(var.clamp_min(1e-30)).mean().item()
