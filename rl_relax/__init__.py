"""rl_relax: A2C with swappable policy-gradient estimators (baseline, LAX, RELAX)."""

__version__ = "0.1.0"
