"""Tables (Markdown, CSV) and stacked-bar pictures of variance-anatomy results (:mod:`rl_relax.anatomy`).

The currency is a *row*: one estimator (``variant``) at one policy, with the three terms, their
standard errors, the total, the shares and the fraction of the no-baseline Sigma_a it removes
(:meth:`rl_relax.anatomy.AnatomyResult.rows`), plus whatever identifies the policy (``label``,
``env``, ``estimator``, ``seed``, ``stage``, ``step``, ...).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rl_relax.anatomy import VARIANT_LABELS, VARIANTS

TERM_COLUMNS = ["state", "state_se", "action", "action_se", "trajectory", "trajectory_se", "total",
                "share_state", "share_action", "share_trajectory", "action_removed"]  # fmt: skip
TERM_LABELS = {"state": "state Σs", "action": "action Σa", "trajectory": "trajectory Στ"}
TERM_COLORS = {"state": "#4c72b0", "action": "#dd8452", "trajectory": "#55a868"}


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.0f}%"


def write_csv(rows: Sequence[dict[str, Any]], path: Path, id_columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*id_columns, "variant", *TERM_COLUMNS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: Sequence[dict[str, Any]], id_columns: Sequence[str]) -> str:
    """One line per row: the terms as value ± standard error, shares and the removed fraction of Σa."""
    head = [*id_columns, "baseline / control variate", "Σs (state)", "Σa (action)", "Στ (trajectory)", "total",
            "shares s / a / τ", "Σa removed"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(id_columns) + "---|" + "---:|" * 6]
    for r in rows:
        terms = [f"{_num(r[t])} ± {_num(r[t + '_se'], 2)}" for t in ("state", "action", "trajectory")]
        shares = " / ".join(_pct(r[f"share_{t}"]) for t in ("state", "action", "trajectory"))
        ids = [_num(r.get(c)) for c in id_columns]
        lines.append(
            "| "
            + " | ".join(
                [*ids, VARIANT_LABELS[r["variant"]], *terms, _num(r["total"]), shares, _pct(r["action_removed"])]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot_stacked(panels: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path, title: str) -> None:
    """One panel per policy: a stacked bar (Σs, Σa, Στ) for each baseline, on the panel's own scale.

    The no-baseline estimator is usually orders of magnitude above the others, so its total is given in
    the panel's title instead of a bar that would flatten the rest.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(panels), 3)
    rows_of_panels = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4.6 * columns, 3.8 * rows_of_panels), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    short = {"no_baseline": "none", "learned_value": "learned V", "estimator": "estimator", "exact_value": "exact V"}
    for ax, (panel_title, rows) in zip(axes.flat, panels, strict=False):
        by_variant = {r["variant"]: r for r in rows}
        names = [v for v in VARIANTS if v in by_variant and v != "no_baseline"]
        if "no_baseline" in by_variant:
            panel_title += f"\n(no baseline: total {by_variant['no_baseline']['total']:.3g})"
        bottom = [0.0] * len(names)
        for term in ("state", "action", "trajectory"):
            heights = [max(by_variant[v][term], 0.0) for v in names]  # a negative estimate draws as 0
            ax.bar(range(len(names)), heights, bottom=bottom, color=TERM_COLORS[term], label=TERM_LABELS[term])
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_xticks(range(len(names)), [short[v] for v in names], fontsize=8)
        ax.set_title(panel_title, fontsize=9)
        ax.set_ylabel("per-step gradient variance\n(mean over policy parameters)", fontsize=8)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    axes.flat[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
