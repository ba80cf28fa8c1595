"""The study's figures (PNG files; the notebook displays them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from otterlib.report import EVAL_SET_LABELS, METHOD_LABELS, _pyplot, _save


def plot_metric_vs_noise(table: pd.DataFrame, path: Path, metric: str = "FH@1") -> Path:
    """``metric`` (points) against the noise level, one line per method with its interval band; one row of
    panels per eval set, one column per training-set size. ``table``: :func:`results.metric_table`."""
    plt = _pyplot()
    sets, sizes = list(dict.fromkeys(table["eval_set"])), sorted(table["size"].unique())
    fig, axes = plt.subplots(len(sets), len(sizes), figsize=(4.2 * len(sizes), 3.2 * len(sets)), squeeze=False,
                             sharey="row")
    for row, eval_set in zip(axes, sets):
        for ax, size in zip(row, sizes):
            cell = table[(table["eval_set"] == eval_set) & (table["size"] == size)]
            for method, g in cell.groupby("method", sort=False):
                g = g.sort_values("noise")
                line, = ax.plot(g["noise"], g["mean"], marker="o", label=METHOD_LABELS.get(method, method))
                ax.fill_between(g["noise"], g["low"], g["high"], color=line.get_color(), alpha=0.2)
            ax.set_title(f"{EVAL_SET_LABELS.get(eval_set, eval_set)}, {size:,} pairs", fontsize=9)
            ax.set_xlabel("noise fraction p")
            ax.set_ylabel(f"{metric} (%)")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def plot_precision_curves(precision: pd.DataFrame, path: Path) -> Path:
    """Target precision against the training step (mean over seeds) per method with the chance line; one row
    of panels per training-set size, one column per noise level. InfoNCE (0 by definition) is left out."""
    plt = _pyplot()
    sizes, levels = sorted(precision["size"].unique()), sorted(precision["noise"].unique())
    fig, axes = plt.subplots(len(sizes), len(levels), figsize=(3.6 * len(levels), 2.9 * len(sizes)), squeeze=False,
                             sharey=True)
    for row, size in zip(axes, sizes):
        for ax, noise in zip(row, levels):
            cell = precision[(precision["size"] == size) & (precision["noise"] == noise)]
            for method, g in cell[cell["method"] != "infonce"].groupby("method", sort=False):
                curve = g.groupby("step")["precision"].mean()
                ax.plot(curve.index, curve.values, label=METHOD_LABELS.get(method, method))
            chance = cell.groupby("step")["chance"].mean()
            ax.plot(chance.index, chance.values, color="black", linestyle="--", linewidth=1, label="chance")
            ax.set_title(f"p = {noise:g}, {size:,} pairs", fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel("target precision")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def figure_indices(truth: np.ndarray, wrong: np.ndarray, n: int = 12) -> list[int]:
    """Up to ``n`` batch positions that show the truth: pairs with the most true off-diagonal matches
    (wrong-caption pairs first) followed by their true partners, then the remaining pairs in order."""
    t = np.asarray(truth, dtype=bool)
    off = t & ~np.eye(len(t), dtype=bool)
    degree = off.sum(0) + off.sum(1)
    chosen: list[int] = []
    for i in sorted(range(len(t)), key=lambda i: (-bool(wrong[i] and degree[i]), -degree[i], i)):
        for j in [i, *np.flatnonzero(off[i] | off[:, i])]:
            if len(chosen) < n and int(j) not in chosen:
                chosen.append(int(j))
    return chosen


def plot_target_matrix(targets: np.ndarray, truth: np.ndarray, wrong: np.ndarray, captions: list[str],
                       path: Path, n: int = 12, title: str = "") -> Path:
    """OTTER's (B, B) target matrix on a training batch, restricted to :func:`figure_indices`: rows are images,
    columns captions; true matches are outlined, wrong-caption pairs are marked in the row labels."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    sel = figure_indices(truth, wrong, n)
    sub, true = np.asarray(targets)[np.ix_(sel, sel)], np.asarray(truth, dtype=bool)[np.ix_(sel, sel)]
    fig, ax = plt.subplots(figsize=(3 + 0.55 * len(sel), 1.5 + 0.45 * len(sel)))
    image = ax.imshow(sub, cmap="viridis", vmin=0.0, vmax=max(float(sub.max()), 1e-9))
    for i in range(len(sel)):
        for j in range(len(sel)):
            ax.text(j, i, f"{sub[i, j]:.2f}", ha="center", va="center", fontsize=6, color="white")
            if true[i, j]:
                ax.add_patch(Rectangle((j - 0.42, i - 0.42), 0.84, 0.84, fill=False, edgecolor="red", linewidth=1.4))
    ax.set_yticks(range(len(sel)), [f"image {k}{' (wrong caption)' if wrong[k] else ''}" for k in sel], fontsize=7)
    labels = [captions[k] if len(captions[k]) <= 44 else captions[k][:41] + "..." for k in sel]
    ax.set_xticks(range(len(sel)), [f"{k}: {c}" for k, c in zip(sel, labels)], fontsize=6, rotation=40, ha="right")
    fig.colorbar(image, ax=ax, fraction=0.03)
    ax.set_title(title or "OTTER targets (red: caption true of the image)", fontsize=9)
    return _save(fig, path)
