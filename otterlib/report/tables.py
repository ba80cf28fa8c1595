"""The comparison table: one block per eval set, one line per method, the metrics as columns (percent).

Each block holds the chance and reference lines (random ranking, best constant ranking, CLIP RN50) and then
every expected (setting, method) with its provenance; a number not measured is shown as "—", never dropped.
Trained numbers carry their interval; published numbers stand beside ours where the setting has them.
:func:`results_table` is the tidy form (the CSV), :func:`comparison_markdown` the readable one.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from otterlib.report.grid import (METHOD, TABLE_METRICS, TALLY_METRICS, TRIVIAL_ORDER, Grid, label, method_order)

TABLE_COLUMNS: tuple[str, ...] = ("eval_set", "kind", "setting", "provenance", "method", "metric", "n_seeds", "value",
                                  "low", "high", "units", "published")
"""The tidy table (percent): ``kind`` trivial / reference / trained; ``low``/``high`` the trained interval."""
SATURATION: float = 90.0
"""A metric saturates on an eval set when the best constant ranking, or every trained method, reaches this
many percent: it then says little about the methods, and FH@1 and mAP are the headline columns."""
MISSING: str = "—"


def _mean(rows: pd.DataFrame, **where: str) -> dict[str, float]:
    """Metric -> mean value (percent) of the rows matching ``where``."""
    mask = np.ones(len(rows), dtype=bool)
    for column, value in where.items():
        mask &= (rows[column] == value).to_numpy()
    return (rows[mask].groupby("metric")["value"].mean() * 100).to_dict()


def results_table(rows: pd.DataFrame, grid: Grid, intervals: pd.DataFrame, published: pd.DataFrame | None = None,
                  metrics: Sequence[str] = TABLE_METRICS) -> pd.DataFrame:
    """Every expected line × metric (:data:`TABLE_COLUMNS`, values in percent, NaN where not measured).

    ``rows``: eval rows of one protocol mode (:func:`~otterlib.report.rows.read_rows`); ``intervals``:
    :func:`~otterlib.report.intervals.method_intervals` of them; ``published``:
    :func:`~otterlib.report.rows.read_published` (or None)."""
    published = published if published is not None else rows.iloc[:0]
    by_cell = intervals.set_index(["setting", "method", "eval_set", "metric"])
    out = []
    for eval_set in grid.eval_sets:
        lines = [("trivial", "", m) for m in TRIVIAL_ORDER] + [("reference", "", m) for m in grid.references]
        lines += [("trained", s, m) for s in grid.settings for m in grid.methods]
        for kind, setting, method in lines:
            values = _mean(rows, kind=kind, method=method, eval_set=eval_set,
                           **({"setting": setting} if setting else {}))
            paper = _mean(published, setting=setting, method=method, eval_set=eval_set) if setting else {}
            for metric in metrics:
                line = {"eval_set": eval_set, "kind": kind, "setting": setting,
                        "provenance": grid.provenance.get(setting, ""), "method": method, "metric": metric,
                        "n_seeds": 0, "value": values.get(metric, np.nan), "low": np.nan, "high": np.nan,
                        "units": "", "published": paper.get(metric, np.nan)}
                key = (setting or kind, method, eval_set, metric)  # a reference model's rows say "reference"
                if key in by_cell.index:
                    cell = by_cell.loc[key]
                    line |= {"n_seeds": int(cell["n_seeds"]), "low": 100 * cell["low"], "high": 100 * cell["high"],
                             "units": cell["units"]}
                out.append(line)
    return pd.DataFrame(out, columns=list(TABLE_COLUMNS))


def saturated(table: pd.DataFrame, threshold: float = SATURATION) -> dict[str, list[str]]:
    """Per eval set, the FH@k metrics that saturate (:data:`SATURATION`): the best constant ranking reaches
    ``threshold`` percent, or every trained method with a number does."""
    out: dict[str, list[str]] = {}
    for eval_set, block in table.groupby("eval_set", sort=False):
        out[eval_set] = []
        for metric in TALLY_METRICS:
            rows = block[block["metric"] == metric]
            constant = rows[rows["method"] == "constant"]["value"].max()
            trained = rows[rows["kind"] == "trained"]["value"].dropna()
            if constant >= threshold or (not trained.empty and (trained >= threshold).all()):
                out[eval_set].append(metric)
    return out


def column_order(saturating: Sequence[str], metrics: Sequence[str] = TABLE_METRICS) -> list[str]:
    """The headline metrics first: those that do not saturate (FH@1, mAP, ...), then the saturated ones."""
    return [m for m in metrics if m not in saturating] + [m for m in metrics if m in saturating]


def _number(value: float, low: float = np.nan, high: float = np.nan) -> str:
    if np.isnan(value):
        return MISSING
    return f"{value:.1f}" if np.isnan(low) else f"{value:.1f} [{low:.1f}, {high:.1f}]"


def _markdown(header: Sequence[str], lines: Sequence[Sequence[str]], text_columns: int) -> str:
    """A Markdown table: the first ``text_columns`` left-aligned, the numbers right-aligned."""
    rule = ["---" if i < text_columns else "--:" for i in range(len(header))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [list(header), rule, *lines])


def eval_set_markdown(block: pd.DataFrame, saturating: Sequence[str]) -> str:
    """One eval set's block of :func:`results_table` as a Markdown table; published columns only when one of
    its settings has published numbers."""
    metrics = column_order(saturating, list(dict.fromkeys(block["metric"])))
    with_paper = bool(block["published"].notna().any())
    header = ["setting", "provenance", "method",
              *[label(m) + (" (saturated)" if m in saturating else "") for m in metrics],
              *([f"paper {label(m)}" for m in metrics if m in TALLY_METRICS] if with_paper else [])]
    lines, previous = [], None
    for (kind, setting, method), line in block.groupby(["kind", "setting", "method"], sort=False):
        by_metric = line.set_index("metric")
        group = setting if kind == "trained" else "chance and reference"
        first, previous = group != previous, group
        where = group if first else ""
        cells = [_number(*by_metric.loc[m, ["value", "low", "high"]]) for m in metrics]
        paper = [_number(by_metric.loc[m, "published"]) for m in metrics if m in TALLY_METRICS] if with_paper else []
        name = f"**{label(method)}**" if method == METHOD else label(method)
        lines.append([where, by_metric["provenance"].iloc[0] if first else "", name, *cells, *paper])
    return _markdown(header, lines, 3)


def table_caption(table: pd.DataFrame, level: float) -> str:
    """What the numbers of :func:`results_table` are, from its content (seeds, unevaluated references)."""
    trained = table[(table["kind"] == "trained") & table["value"].notna()]
    seeds = " or ".join(map(str, sorted(set(trained["n_seeds"])))) or "no"
    references = table[table["kind"] == "reference"].groupby("method", sort=False)["value"].count()
    unevaluated = [label(m) for m, n in references.items() if n == 0]
    return " ".join([
        f"Values in percent. Trained lines: the mean over {seeds} training seed(s) and its {100 * level:g} % "
        f"percentile-bootstrap interval [low, high] (reference models: the same, one run), resampling the eval "
        f"images (FH@k) or the classes with a positive image (mAP), and the seeds when there are several; no "
        f"interval where a score file is missing.",
        "Random ranking: its exact expectation. Best constant ranking (classes by image frequency, chosen on these "
        "labels): exact, no interval, and no mAP (it scores every image alike).",
        f"{MISSING}: not measured. \"(saturated)\": the constant ranking or every trained method reaches "
        f"{SATURATION:g} % there, so the column separates little; those columns come last.",
        *([f"{', '.join(unevaluated)}: not evaluated by this profile (see `eval.references`)."]
          if unevaluated else [])])


def cell_text(c: Mapping[str, object]) -> str:
    """``+2.2 [-1.0, +5.4] **tie** (fixed rule: win)`` for one tally cell: the difference in points, its
    interval and verdict, and the fixed rule's verdict where it differs or where there is no interval;
    ``— missing (...)`` for a missing cell."""
    if c["status"] != "available":
        return f"{MISSING} {c['status']}"
    if pd.isna(c["verdict"]):
        return f"{c['diff']:+.1f} **{c['fixed_verdict']}** (fixed rule only)"
    fixed = "" if c["verdict"] == c["fixed_verdict"] else f" (fixed rule: {c['fixed_verdict']})"
    return f"{c['diff']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}] **{c['verdict']}**{fixed}"


def tally_markdown(t: pd.DataFrame, metrics: Sequence[str], eval_sets: Sequence[str]) -> str:
    """The tally as a grid: one line per setting (with its provenance), one column per (eval set, metric),
    each cell :func:`cell_text`."""
    cells = t.set_index(["setting", "eval_set", "metric"])
    lines = [[setting, cells.loc[(setting, eval_sets[0], metrics[0]), "provenance"],
              *[cell_text(cells.loc[(setting, e, m)]) for e in eval_sets for m in metrics]]
             for setting in dict.fromkeys(t["setting"])]
    return _markdown(["setting", "provenance", *[f"{label(e)} {label(m)}" for e in eval_sets for m in metrics]],
                     lines, 2)


def published_markdown(published: pd.DataFrame) -> str:
    """The published numbers (percent) as a table: one line per (setting, method) with its source, columns
    eval set × metric."""
    wide = (published.assign(value=published["value"] * 100)
            .pivot_table(index=["setting", "method"], columns=["eval_set", "metric"], values="value"))
    columns = [(e, m) for e in dict.fromkeys(published["eval_set"]) for m in TALLY_METRICS if (e, m) in wide.columns]
    source = published.drop_duplicates("setting").set_index("setting")["source"]
    lines = [[setting, source[setting], label(method), *[_number(wide.loc[(setting, method), c]) for c in columns]]
             for setting in dict.fromkeys(published["setting"]) for method in method_order(wide.loc[setting].index)]
    return _markdown(["setting", "source", "method", *[f"{label(e)} {label(m)}" for e, m in columns]], lines, 3)
