"""scripts/levers_anatomy.py, the per-seed anatomy numbers of the levers rows, on hand-built report directories.

Each seed directory holds a TensorBoard event file with the ``variance/*`` scalars the trainer logs at each
anatomy measurement; the script reads the first (mid-training) measurement of each seed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import levers_anatomy
from tests.test_levers_script import write_scalars


def anatomy_seed(report: Path, seed: int, first: dict[str, float], later: dict[str, float] | None = None) -> None:
    """A seed whose first measurement (step 1000) has these terms, and a later one (step 2000) if given."""
    points = {f"variance/{term}": [(1000, value)] for term, value in first.items()}
    for term, value in (later or {}).items():
        points[f"variance/{term}"].append((2000, value))
    write_scalars(report / f"seed{seed}", points)


def terms(shares: tuple[float, float, float], learned: float, exact: float, estimator: float) -> dict[str, float]:
    return dict(zip(levers_anatomy.TERMS, (*shares, learned, exact, estimator), strict=True))


def run_script(capsys: pytest.CaptureFixture[str], *reports: Path) -> str:
    levers_anatomy.main([str(report) for report in reports])
    return capsys.readouterr().out


def test_first_measurements_reads_each_seeds_mid_training_measurement_and_skips_seeds_without_one(tmp_path):
    report = tmp_path / "report"
    anatomy_seed(report, 0, terms((0.1, 0.3, 0.6), 4.0, 1.0, 3.0), later=terms((0.5, 0.5, 0.0), 9.0, 9.0, 9.0))
    anatomy_seed(report, 1, terms((0.0, 0.5, 0.5), 2.0, 0.5, 2.5))
    write_scalars(report / "seed2", {"rollout/ep_rew_mean": [(1000, 10.0)]})  # a run without the anatomy

    seeds = levers_anatomy.first_measurements(report)

    assert len(seeds) == 2
    assert seeds[0] == pytest.approx(terms((0.1, 0.3, 0.6), 4.0, 1.0, 3.0))
    assert seeds[1]["action"] == pytest.approx(2.5)


def test_prints_means_over_seeds_and_counts_the_seeds_where_the_estimator_leaves_less_action_variance(tmp_path, capsys):
    report = tmp_path / "report"
    anatomy_seed(report, 0, terms((0.1, 0.3, 0.6), 4.0, 1.0, 3.0), later=terms((0.5, 0.5, 0.0), 9.0, 9.0, 9.0))
    anatomy_seed(report, 1, terms((0.0, 0.5, 0.5), 2.0, 0.5, 2.5))
    anatomy_seed(report, 2, terms((0.2, 0.4, 0.4), 6.0, 1.5, 5.5))

    out = run_script(capsys, report)

    # Means of the first measurements: shares 10/40/50 %, Sigma_a 4, 1, 3.67; the estimator below V on 2 of 3.
    assert f"{report}: 3 seeds; shares 10% / 40% / 50%;" in out
    assert "Sigma_a learned V 4, exact V 1, estimator 3.67 (below the learned V's on 2)" in out


def test_a_report_without_anatomy_measurements_is_named_and_the_others_still_printed(tmp_path, capsys):
    empty, report = tmp_path / "empty", tmp_path / "report"
    write_scalars(empty / "seed0", {"rollout/ep_rew_mean": [(1000, 10.0)]})
    anatomy_seed(report, 0, terms((0.0, 1.0, 0.0), 1.0, 1.0, 1.0))

    out = run_script(capsys, empty, report)

    assert f"{empty}: no anatomy measurements" in out
    assert f"{report}: 1 seeds;" in out
