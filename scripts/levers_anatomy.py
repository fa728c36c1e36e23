"""The variance anatomy of levers reports in more detail than the levers tables' shares.

For each report directory (``runs/levers/<env>/<row>/report``), the first anatomy measurement of every seed
(mid-training): the state / action / trajectory shares, the action term Sigma_a with the learned V, with an
exact V and with the run's estimator (its full control variate), as means over the seeds, and on how many
seeds the estimator's Sigma_a is below the learned V's. The README's and results/README's anatomy numbers
of the levers rows come from this script:

    python scripts/levers_anatomy.py runs/levers/LunarLander/*/report
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl_relax.summarize import read_scalars

TERMS = ("share_state", "share_action", "share_trajectory", "action_learned_value", "action_exact_value", "action")


def first_measurements(report: Path) -> list[dict[str, float]]:
    """Each seed's first anatomy measurement: term -> value."""
    seeds = []
    for seed_dir in sorted(report.glob("seed*")):
        scalars = read_scalars(seed_dir, tuple(f"variance/{t}" for t in TERMS))
        if all(scalars.get(f"variance/{t}") for t in TERMS):
            seeds.append({t: scalars[f"variance/{t}"][0][1] for t in TERMS})
    return seeds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="levers report directories")
    for report in parser.parse_args(argv).reports:
        seeds = first_measurements(report)
        if not seeds:
            print(f"{report}: no anatomy measurements")
            continue
        mean = {t: statistics.mean(s[t] for s in seeds) for t in TERMS}
        below = sum(s["action"] < s["action_learned_value"] for s in seeds)
        print(
            f"{report}: {len(seeds)} seeds; shares {mean['share_state']:.0%} / {mean['share_action']:.0%} / "
            f"{mean['share_trajectory']:.0%}; Sigma_a learned V {mean['action_learned_value']:.3g}, exact V "
            f"{mean['action_exact_value']:.3g}, estimator {mean['action']:.3g} (below the learned V's on {below})"
        )


if __name__ == "__main__":
    main()
