"""OTTER against the best baseline in every expected (setting, eval set, metric) cell, by two rules.

* **Interval rule** (the table's): the 95 % paired-bootstrap interval of OTTER − best baseline
  (:func:`otterlib.stats.compare_to_best`; eval images, or classes for mAP, resampled with the same draw for
  both methods, and the seeds that every method of the cell has): a tie when it contains 0.
* **Fixed rule** (paper-style): a tie when the difference is within ``tolerance`` points.

Cells without an OTTER run or without any baseline run are kept as ``missing``; a cell whose score files are
absent (e.g. published numbers) gets the fixed rule only. Values are in percent (points).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from otterlib import stats
from otterlib.report.grid import METHOD, TABLE_METRICS, TALLY_METRICS, Grid
from otterlib.report.intervals import resampled_units
from otterlib.report.rows import align, seed_units

COLUMNS: tuple[str, ...] = ("setting", "provenance", "eval_set", "metric", "tallied", "status", "otter",
                            "best_baseline", "baseline", "diff", "low", "high", "n_seeds", "n_units", "units",
                            "verdict", "fixed_verdict")


@dataclass(frozen=True)
class TieRules:
    """How a cell is decided: the interval's ``level`` and bootstrap replicates ``n_boot`` (and its RNG
    ``seed``), and the fixed rule's ``tolerance`` in points."""

    level: float = 0.95
    n_boot: int = 2000
    tolerance: float = 0.1
    seed: int = 0


def _paired(cell: pd.DataFrame, methods: Sequence[str], metric: str, mode: str) -> dict[str, np.ndarray] | None:
    """(n_common_seeds, U) aligned scores per method, or None without every method's score files."""
    per_method = {m: seed_units(cell[cell["method"] == m], metric, mode) for m in methods}
    if any(u is None for u in per_method.values()):
        return None
    common = sorted(set.intersection(*(set(u) for u in per_method.values())))
    if not common:
        return None
    matrix = align([per_method[m][s] for m in methods for s in common]).reshape(len(methods), len(common), -1)
    return {m: matrix[i] for i, m in enumerate(methods)}


def compare_cell(cell: pd.DataFrame, baselines: Sequence[str], metric: str, rules: TieRules,
                 mode: str = "paper") -> dict[str, object]:
    """OTTER − best baseline in one cell (its eval rows, one per method × seed): the fields of :data:`COLUMNS`
    from ``otter`` on (status ``available``), or ``status: missing`` without OTTER or any baseline."""
    present = [b for b in baselines if b in set(cell["method"])]
    if METHOD not in set(cell["method"]) or not present:
        lacking = "OTTER" if METHOD not in set(cell["method"]) else "every baseline"
        return {"status": f"missing ({lacking})"}
    scores = _paired(cell, [METHOD, *present], metric, mode)
    if scores is not None:
        c = stats.compare_to_best(scores, METHOD, present, rules.tolerance / 100, rules.n_boot, rules.level, rules.seed)
        return {"status": "available", "otter": 100 * c.method_mean, "best_baseline": c.best_baseline,
                "baseline": 100 * c.baseline_mean, "diff": 100 * c.difference, "low": 100 * c.low,
                "high": 100 * c.high, "n_seeds": c.n_seeds, "n_units": c.n_images, "units": resampled_units(metric),
                "verdict": c.verdict, "fixed_verdict": c.fixed_verdict}
    means = cell.groupby("method")["value"].mean() * 100
    best = max(present, key=lambda b: (means[b], -present.index(b)))
    diff = float(means[METHOD] - means[best])
    return {"status": "available", "otter": float(means[METHOD]), "best_baseline": best,
            "baseline": float(means[best]), "diff": diff,
            "fixed_verdict": stats.fixed_rule_verdict(diff, rules.tolerance)}


def tally(rows: pd.DataFrame, grid: Grid, rules: TieRules = TieRules(), metrics: Sequence[str] = TABLE_METRICS,
          mode: str = "paper") -> pd.DataFrame:
    """One line per expected cell (settings × eval sets × ``metrics``, in the grid's order), missing ones
    included; ``tallied`` marks the paper's FH@1/5/10. Columns :data:`COLUMNS` (values in percent)."""
    rows = rows[rows["method"].isin([METHOD, *grid.baselines])]
    groups = {key: cell for key, cell in rows.groupby(["setting", "eval_set", "metric"])}
    out = []
    for setting in grid.settings:
        for eval_set in grid.eval_sets:
            for metric in metrics:
                cell = groups.get((setting, eval_set, metric), rows.iloc[:0])
                out.append({"setting": setting, "provenance": grid.provenance.get(setting, ""), "eval_set": eval_set,
                            "metric": metric, "tallied": metric in TALLY_METRICS,
                            **compare_cell(cell, grid.baselines, metric, rules, mode)})
    return pd.DataFrame(out, columns=list(COLUMNS))


def counted(t: pd.DataFrame) -> pd.DataFrame:
    """The cells of a tally that the paper's count holds and that are available."""
    return t[t["tallied"] & (t["status"] == "available")]


def verdict_counts(cells: pd.DataFrame, column: str) -> dict[str, int]:
    """``{"win": W, "tie": T, "loss": L}`` of a verdict column (``verdict`` or ``fixed_verdict``) over ``cells``."""
    return {v: int((cells[column] == v).sum()) for v in stats.VERDICTS}


PLURALS: dict[str, str] = {"win": "wins", "tie": "ties", "loss": "losses"}


def counts_text(counts: Mapping[str, int]) -> str:
    """``"3 wins, 1 tie, 0 losses"``."""
    return ", ".join(f"{counts[v]} {v if counts[v] == 1 else PLURALS[v]}" for v in stats.VERDICTS)


def tally_summary(t: pd.DataFrame, rules: TieRules = TieRules()) -> str:
    """``k of N evaluations available`` and the win/tie/loss counts of OTTER by both rules (tallied cells)."""
    available = counted(t)
    without = int(available["verdict"].isna().sum())
    interval = (f"interval rule ({100 * rules.level:g} % paired bootstrap): "
                f"{counts_text(verdict_counts(available, 'verdict'))}"
                + (f", {without} without score files" if without else ""))
    return (f"{len(available)} of {int(t['tallied'].sum())} evaluations available. OTTER vs the best baseline, "
            f"{interval}; fixed rule (±{rules.tolerance:g} points): "
            f"{counts_text(verdict_counts(available, 'fixed_verdict'))}.")
