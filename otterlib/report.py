"""Comparison tables, OTTER's win/tie/loss tally, bootstrap intervals and plots, built from eval rows.

Eval rows are the JSON lines that the evaluation stage writes (one per run × eval set); everything here
is derived from them (CLIP_benchmark style), so a table can always be rebuilt from ``results/``.
Values are fractions in [0, 1] in the rows and percentages in the tables.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from otterlib.env import REPO_ROOT

METHOD_ORDER: tuple[str, ...] = ("infonce", "label_smoothing", "kd", "otter")
METHOD_LABELS: dict[str, str] = {"infonce": "InfoNCE", "label_smoothing": "LS", "kd": "KD", "otter": "OTTER",
                                 "clip_rn50": "CLIP RN50 (400M, reference)"}
TABLE_METRICS: tuple[str, ...] = ("fh@1", "fh@5", "fh@10")
EVAL_SET_LABELS: dict[str, str] = {"goi": "GOI", "in10k": "IN10K"}
PUBLISHED_CSV: Path = REPO_ROOT / "data" / "published" / "otter_published.csv"


def read_rows(paths: Iterable[Path]) -> pd.DataFrame:
    """Eval rows from JSON-lines files -> long table (setting, method, seed, kind, eval_set, mode, metric, value).

    ``seed`` is the training seed of a trained run (None for reference models); tables average over seeds."""
    records = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for metric, value in row["metrics"].items():
                records.append({"setting": row["setting"], "method": row["method"], "seed": row.get("seed"),
                                "kind": row.get("kind", "trained"), "eval_set": row["dataset"],
                                "mode": row.get("mode", "paper"), "metric": metric, "value": float(value)})
    columns = ["setting", "method", "seed", "kind", "eval_set", "mode", "metric", "value"]
    return pd.DataFrame.from_records(records, columns=columns)


def collect_rows(results_root: Path) -> pd.DataFrame:
    """All eval rows under ``results/<profile>`` (trained runs and reference models, every protocol mode)."""
    return read_rows(sorted(Path(results_root).rglob("eval*.jsonl")))


def eval_set_summary(results_root: Path, mode: str = "paper") -> pd.DataFrame:
    """Candidate-set size, images and label cardinality of each eval set, as the eval rows recorded them."""
    seen = {}
    for path in sorted(Path(results_root).rglob("eval*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip() else None
            if row and row.get("mode", "paper") == mode:
                seen[row["dataset"]] = {"mode": mode, "candidate classes": row["n_classes"],
                                        "images": row["n_images"],
                                        "labels per image": round(row["label_cardinality"], 2)}
    return pd.DataFrame.from_dict(seen, orient="index")


def read_published(path: Path = PUBLISHED_CSV) -> pd.DataFrame:
    """Published numbers (long format, percentages converted to fractions); add rows to the CSV to extend it."""
    df = pd.read_csv(path, comment="#")
    required = {"setting", "method", "eval_set", "metric", "value", "source"}
    if missing := required - set(df.columns):
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    df = df.assign(value=df["value"] / 100.0, kind="published", mode="paper")
    return df


def _method_sort_key(methods: Iterable[str]) -> list[str]:
    known = [m for m in METHOD_ORDER if m in set(methods)]
    return known + sorted(set(methods) - set(known))


def _model_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of trained runs and reference models: the trivial baselines (``kind == "trivial"``, one row
    per eval set for every setting at once) are presented separately."""
    return rows[rows["kind"] != "trivial"]


def comparison_table(rows: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS) -> pd.DataFrame:
    """One row per method, columns (setting, eval set, metric); values in percent, 1 decimal. Trivial
    baselines are left out (:func:`_model_rows`)."""
    df = _model_rows(rows)
    df = df[df["metric"].isin(metrics)]
    if df.empty:
        raise ValueError(f"no eval rows with metrics {list(metrics)}")
    wide = df.pivot_table(index="method", columns=["setting", "eval_set", "metric"], values="value", aggfunc="mean")
    wide = wide.reindex(_method_sort_key(wide.index))
    ordered = sorted(wide.columns, key=lambda c: (c[0], c[1], list(metrics).index(c[2])))
    wide = (wide[ordered] * 100).round(1)
    wide.index = [METHOD_LABELS.get(m, m) for m in wide.index]
    wide.columns = pd.MultiIndex.from_tuples([(s, EVAL_SET_LABELS.get(e, e), m.upper().replace("FH@", "FH@"))
                                              for s, e, m in wide.columns], names=["setting", "set", "metric"])
    return wide


def tally(rows: pd.DataFrame, method: str = "otter", baselines: Sequence[str] = ("infonce", "label_smoothing", "kd"),
          metrics: Sequence[str] = TABLE_METRICS, tie_tol: float = 0.1) -> pd.DataFrame:
    """OTTER against the best baseline in every (setting, eval set, metric) cell.

    ``win``: OTTER beats every baseline by more than ``tie_tol`` points; ``tie``: within ``tie_tol`` of the best
    baseline; ``loss`` otherwise (the paper counts wins and ties: "outperforms (32) or ties (2) ... in 34 of 42").
    Cells where OTTER or every baseline is missing are left out.
    """
    df = rows[rows["metric"].isin(metrics) & rows["method"].isin([method, *baselines])]
    out = []
    for (setting, eval_set, metric), cell in df.groupby(["setting", "eval_set", "metric"], sort=True):
        values = cell.groupby("method")["value"].mean() * 100
        present = [b for b in baselines if b in values]
        if method not in values or not present:
            continue
        best = max(present, key=lambda b: values[b])
        diff = values[method] - values[best]
        outcome = "win" if diff > tie_tol else ("tie" if diff >= -tie_tol else "loss")
        out.append({"setting": setting, "eval_set": eval_set, "metric": metric, method: round(values[method], 2),
                    "best_baseline": best, "best_baseline_value": round(values[best], 2),
                    "diff_points": round(diff, 2), "outcome": outcome})
    order = {m: i for i, m in enumerate(metrics)}
    return pd.DataFrame(out).sort_values(["setting", "eval_set", "metric"], key=lambda c: c.map(order)
                                         if c.name == "metric" else c, ignore_index=True) if out else pd.DataFrame(out)


def tally_summary(t: pd.DataFrame) -> str:
    """``OTTER wins W, ties T, loses L of N evaluations (wins or ties W+T/N)``."""
    if t.empty:
        return "no complete (setting, metric) cells to compare"
    counts = t["outcome"].value_counts()
    w, ti, lo = (int(counts.get(k, 0)) for k in ("win", "tie", "loss"))
    return (f"OTTER wins {w}, ties {ti}, loses {lo} of {len(t)} evaluations "
            f"(wins or ties {w + ti}/{len(t)}; the paper: 34/42)")


def bootstrap_ci(hits: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a per-image 0/1 hit vector (N,)."""
    hits = np.asarray(hits, dtype=np.float64)
    if hits.ndim != 1 or hits.size == 0:
        raise ValueError("hits must be a non-empty 1-D array")
    rng = np.random.default_rng(seed)
    means = hits[rng.integers(0, hits.size, size=(n_boot, hits.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def paired_bootstrap_pvalue(hits_a: np.ndarray, hits_b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> float:
    """One-sided p-value that method A is not better than B on the same images (paired resampling)."""
    a, b = np.asarray(hits_a, np.float64), np.asarray(hits_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired hits must have the same shape, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    diffs = (a[idx] - b[idx]).mean(axis=1)
    return float((diffs <= 0).mean())


def _pyplot():
    """matplotlib.pyplot on the Agg backend (files only; notebooks display the saved PNGs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Save a figure as a 120-dpi PNG (creating the folder) and close it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_comparison(rows: pd.DataFrame, path: Path, metrics: Sequence[str] = TABLE_METRICS) -> Path:
    """Grouped bars: one panel per (setting, eval set), metrics on x, one bar per method. Saves a PNG."""
    plt = _pyplot()

    df = _model_rows(rows)
    df = df[df["metric"].isin(metrics)]
    panels = sorted(df.groupby(["setting", "eval_set"]).groups)
    methods = _method_sort_key(df["method"].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    for ax, (setting, eval_set) in zip(axes[0], panels):
        cell = df[(df["setting"] == setting) & (df["eval_set"] == eval_set)]
        for j, m in enumerate(methods):
            vals = [cell[(cell["method"] == m) & (cell["metric"] == k)]["value"].mean() * 100 for k in metrics]
            ax.bar(np.arange(len(metrics)) + (j - (len(methods) - 1) / 2) * width, vals, width,
                   label=METHOD_LABELS.get(m, m))
        ax.set_xticks(np.arange(len(metrics)), [k.upper() for k in metrics])
        ax.set_title(f"{setting}\n{EVAL_SET_LABELS.get(eval_set, eval_set)}", fontsize=9)
        ax.set_ylabel("flat hit (%)")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def batch_matching_stats(probs: np.ndarray, threshold: float = 0.2) -> dict[str, float]:
    """Statistics of one batch's image->text match probabilities P (B, B), rows softmax-normalised, as the
    official ``dataset_analysis.py``: mean diagonal, mean off-diagonal (divided by all B² entries, the
    diagonal counted as 0), mean row maximum off the diagonal, and the number of off-diagonal P ≥ ``threshold``."""
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"probs must be a square (B, B) matrix, got {p.shape}")
    off = p * (1.0 - np.eye(len(p)))
    return {"on_diag_avg": float(np.diag(p).mean()), "off_diag_avg": float(off.mean()),
            "off_diag_max_avg": float(off.max(axis=1).mean()), "off_sig": int((off >= threshold).sum())}


def plot_off_diagonal_histogram(off_diagonal: np.ndarray, path: Path, title: str = "") -> Path:
    """Density histogram (100 bins, log y) of off-diagonal match probabilities, as the official analysis."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(np.asarray(off_diagonal, dtype=float).ravel(), bins=100, range=(0.0, 1.0), density=True, log=True)
    ax.set_xlabel("off-diagonal image->text probability")
    ax.set_ylabel("density (log)")
    ax.set_title(title or "how much a batch's non-paired captions match", fontsize=9)
    return _save(fig, path)


def plot_matching(targets: np.ndarray, captions: Sequence[str], path: Path, title: str = "") -> Path:
    """Heat map of a (B, B) target matrix (rows: images, columns: captions), as the paper's matching figure.

    ``targets`` rows sum to 1 (e.g. OTTER's ``α·I + (1−α)·M̃``); each cell is annotated with its value."""
    plt = _pyplot()

    targets = np.asarray(targets, dtype=float)
    if targets.ndim != 2 or targets.shape[0] != targets.shape[1] or targets.shape[0] != len(captions):
        raise ValueError(f"targets must be (B, B) with B = {len(captions)} captions, got {targets.shape}")
    b = len(captions)
    fig, ax = plt.subplots(figsize=(3 + 0.6 * b, 1 + 0.5 * b))
    ax.imshow(targets, cmap="viridis", vmin=0.0, vmax=1.0)
    for i in range(b):
        for j in range(b):
            ax.text(j, i, f"{targets[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if targets[i, j] > 0.5 else "white")
    labels = [c if len(c) <= 48 else c[:45] + "..." for c in captions]
    ax.set_yticks(range(b), [f"image {i}" for i in range(b)], fontsize=7)
    ax.set_xticks(range(b), [f"{j}: {c}" for j, c in enumerate(labels)], fontsize=7, rotation=40, ha="right")
    ax.set_title(title or "target matrix (rows: images, columns: captions)", fontsize=9)
    return _save(fig, path)


def write_tables(rows: pd.DataFrame, out_dir: Path, tie_tol: float = 0.1, title: str = "") -> dict[str, Path]:
    """Write ``comparison.{csv,md}``, ``tally.csv`` and ``comparison.png``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = comparison_table(rows)
    t = tally(rows, tie_tol=tie_tol)
    paths = {"csv": out_dir / "comparison.csv", "md": out_dir / "comparison.md", "tally": out_dir / "tally.csv",
             "plot": out_dir / "comparison.png"}
    table.to_csv(paths["csv"])
    t.to_csv(paths["tally"], index=False)
    flat = table.copy()
    flat.columns = [" ".join(c) for c in flat.columns]
    heading = f"# Zero-shot flat hit@k (%){': ' + title if title else ''}\n\n"
    paths["md"].write_text(f"{heading}{flat.to_markdown()}\n\n{tally_summary(t)}\n")
    plot_comparison(rows, paths["plot"])
    return paths


def plot_thumbnails(panels: Sequence[Sequence[tuple[Path, str, Sequence[str]]]], path: Path,
                    width_chars: int = 30) -> Path:
    """A grid of example images, one row per eval set: each panel is ``(image path, eval set, label names)``
    and is titled with the eval set and its **full** label list, wrapped at ``width_chars``. Saves a PNG."""
    import textwrap

    from PIL import Image

    plt = _pyplot()
    titles = [[textwrap.fill(f"{name}: " + "; ".join(labels), width_chars) for _, name, labels in row]
              for row in panels]
    heights = [2.2 + 0.12 * max((t.count("\n") + 1 for t in row), default=1) for row in titles]
    n_cols = max(len(row) for row in panels)
    fig, axes = plt.subplots(len(panels), n_cols, squeeze=False, figsize=(2.3 * n_cols, sum(heights)),
                             gridspec_kw={"height_ratios": heights})
    for ax_row, row, row_titles in zip(axes, panels, titles):
        for ax in ax_row:
            ax.set_axis_off()
        for ax, (image, _, _), title in zip(ax_row, row, row_titles):
            with Image.open(image) as img:
                ax.imshow(img.convert("RGB"))
            ax.set_title(title, fontsize=6, loc="left")
    return _save(fig, path)
