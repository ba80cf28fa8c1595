"""Intervals of every tabulated number of a trained method, from the score files beside its eval rows.

FH@k: the 0/1 hits of the eval images; mAP: the average precision of each class with a positive image. The
interval is the percentile interval of the hierarchical bootstrap of :mod:`otterlib.stats` (eval units
resampled, and the training seeds where a cell has several): :func:`otterlib.stats.bootstrap_interval`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from otterlib import stats
from otterlib.report.rows import align, seed_units

UNITS: dict[str, str] = {"map": "classes"}
"""What a metric's bootstrap resamples (``images`` unless listed)."""


def resampled_units(metric: str) -> str:
    """``images`` for FH@k, ``classes`` for mAP."""
    return UNITS.get(metric, "images")


def method_intervals(rows: pd.DataFrame, mode: str = "paper", level: float = 0.95, n_boot: int = 2000,
                     seed: int = 0) -> pd.DataFrame:
    """One line per (setting, method, eval set, metric) of the trained and reference rows (the setting of a
    reference model is ``reference``): ``n_seeds`` (training seeds; 0 for a reference model), ``value`` (the
    mean over seeds, a fraction), ``low`` and ``high`` (its interval at ``level``; NaN when a score file is
    missing) and ``units`` (what was resampled)."""
    measured = rows[rows["kind"].isin(["trained", "reference"])]
    out = []
    for (setting, method, eval_set, metric), runs in measured.groupby(["setting", "method", "eval_set", "metric"]):
        units = seed_units(runs, metric, mode)
        low = high = float("nan")
        if units:
            _, low, high = stats.bootstrap_interval(align(list(units.values())), n_boot, level, seed)
        out.append({"setting": setting, "method": method, "eval_set": eval_set, "metric": metric,
                    "n_seeds": int(runs["seed"].nunique()), "value": float(runs["value"].mean()),
                    "low": low, "high": high, "units": resampled_units(metric)})
    columns = ["setting", "method", "eval_set", "metric", "n_seeds", "value", "low", "high", "units"]
    return pd.DataFrame(out, columns=columns).astype({"low": np.float64, "high": np.float64})
