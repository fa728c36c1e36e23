"""Discrete VAE benchmark: Bernoulli-latent VAEs trained with the toolkit's gradient estimators.

``python -m rl_relax.vae model=nonlinear estimator=relax`` (configs in ``configs/vae/``); see
:mod:`rl_relax.vae.train` for what a run writes.
"""
