"""The figures of 05 (PNG files; the notebook displays them).

* :func:`plot_comparison`: bars with interval whiskers per (setting, eval set), the chance and constant-ranking
  levels as lines, one y-scale and one legend.
* :func:`plot_difference_heatmap`: OTTER − best baseline per cell (points) with the verdict of each cell.
* :func:`plot_matching`: a target matrix with the images as thumbnails beside its rows, wrapped captions over
  its columns and a colour bar.
* :func:`plot_off_diagonal_histogram`: the official noisy-matching histogram.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from otterlib.plots import pyplot as _pyplot, save_figure as _save
from otterlib.report.grid import METHOD, TALLY_METRICS, label
from otterlib.report.matching import OFF_SIG_THRESHOLD

def plot_comparison(table: pd.DataFrame, path: Path, metrics: Sequence[str]) -> Path:
    """Grouped bars of the trained methods with their intervals as whiskers: one panel per (setting with a
    number, eval set), ``metrics`` on x; the random ranking (chance) and the best constant ranking as
    horizontal lines over each metric's group. ``table``: :func:`otterlib.report.tables.results_table`."""
    plt = _pyplot()
    trained = table[(table["kind"] == "trained") & table["metric"].isin(metrics)]
    settings = list(dict.fromkeys(trained.dropna(subset=["value"])["setting"]))
    eval_sets = list(dict.fromkeys(table["eval_set"]))
    methods = list(dict.fromkeys(trained["method"]))
    if not settings:
        raise ValueError("no trained numbers to plot")
    fig, axes = plt.subplots(len(settings), len(eval_sets), figsize=(4.6 * len(eval_sets), 3.2 * len(settings)),
                             squeeze=False, sharey=True)
    width = 0.8 / len(methods)
    x = np.arange(len(metrics))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, setting in zip(axes, settings):
        for ax, eval_set in zip(row, eval_sets):
            block = table[(table["eval_set"] == eval_set) & table["metric"].isin(metrics)]
            for j, method in enumerate(methods):
                line = block[(block["setting"] == setting) & (block["method"] == method)].set_index("metric")
                values = line["value"].reindex(metrics).to_numpy()
                error = np.abs(line[["low", "high"]].reindex(metrics).to_numpy().T - values)
                position = x + (j - (len(methods) - 1) / 2) * width
                ax.bar(position, values, width, yerr=np.nan_to_num(error), capsize=2, color=colours[j % len(colours)],
                       label=label(method), edgecolor="black" if method == METHOD else "none", linewidth=0.8)
                for missing in position[np.isnan(values)]:
                    ax.text(missing, 1, "missing", rotation=90, ha="center", va="bottom", fontsize=6, color="#555555")
            for method, style in (("random", ":"), ("constant", "--")):
                levels = block[block["method"] == method].set_index("metric")["value"].reindex(metrics)
                ax.hlines(levels, x - 0.45, x + 0.45, colors="black", linestyles=style, linewidth=1.1,
                          label=label(method))
            ax.set_xticks(x, [label(m) for m in metrics])
            ax.set_title(f"{setting} · {label(eval_set)}", fontsize=9)
            ax.set_ylabel("percent")
            ax.set_ylim(0, 100)
            ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.93 if len(settings) == 1 else 0.97))
    return _save(fig, path, tight=False)


def plot_difference_heatmap(t: pd.DataFrame, path: Path, metrics: Sequence[str], level: float = 0.95) -> Path:
    """OTTER − best baseline (points) per setting (rows) and (eval set, metric) (columns) of a tally
    (:func:`otterlib.report.tally.tally`): diverging colours around 0, each cell annotated with the difference,
    the verdict of the ``level`` interval (the fixed rule's, marked *, where there is no interval), missing cells
    hatched."""
    plt = _pyplot()
    settings = list(dict.fromkeys(t["setting"]))
    eval_sets = list(dict.fromkeys(t["eval_set"]))
    columns = [(e, m) for e in eval_sets for m in metrics]
    cells = t.set_index(["setting", "eval_set", "metric"])
    diff = np.array([[cells.loc[(s, e, m), "diff"] for e, m in columns] for s in settings], dtype=float)
    bound = max(float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 0.0, 0.5)
    fig, ax = plt.subplots(figsize=(1.5 + 1.25 * len(columns), 1.2 + 0.55 * len(settings)))
    ax.set_facecolor("#dddddd")
    image = ax.imshow(np.ma.masked_invalid(diff), cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    for i, s in enumerate(settings):
        for j, (e, m) in enumerate(columns):
            c = cells.loc[(s, e, m)]
            if c["status"] != "available":
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="#999999"))
                ax.text(j, i, "missing", ha="center", va="center", fontsize=7, color="#555555")
                continue
            verdict = c["verdict"] if pd.notna(c["verdict"]) else f"{c['fixed_verdict']}*"
            ax.text(j, i, f"{c['diff']:+.1f}\n{verdict}", ha="center", va="center", fontsize=7,
                    color="white" if abs(c["diff"]) > 0.6 * bound else "black",
                    fontweight="bold" if verdict != "tie" else "normal")
    ax.set_xticks(range(len(columns)), [f"{label(e)}\n{label(m)}" + ("" if m in TALLY_METRICS else "\n(not tallied)")
                                        for e, m in columns], fontsize=8)
    provenance = t.drop_duplicates("setting").set_index("setting")["provenance"]
    ax.set_yticks(range(len(settings)), [f"{s}\n({provenance[s]})" for s in settings], fontsize=7)
    for j in range(1, len(eval_sets)):
        ax.axvline(j * len(metrics) - 0.5, color="black", linewidth=1)
    fig.colorbar(image, ax=ax, fraction=0.04, label="OTTER − best baseline (points)")
    ax.set_title(f"OTTER − best baseline per cell (verdict: {100 * level:g} % paired-bootstrap interval; "
                 f"* fixed rule only)", fontsize=9)
    return _save(fig, path)


def plot_matching(targets: np.ndarray, captions: Sequence[str], path: Path, images: np.ndarray | None = None,
                  title: str = "") -> Path:
    """Heat map of a (B, B) target matrix, rows = images (shown as thumbnails when ``images`` (B, H, W, 3) in
    [0, 1] is given), columns = captions (wrapped, above the columns), each cell annotated, with a colour bar.

    ``targets`` rows sum to 1 (e.g. OTTER's ``α·I + (1−α)·M̃``)."""
    plt = _pyplot()
    targets = np.asarray(targets, dtype=float)
    b = len(captions)
    if targets.ndim != 2 or targets.shape != (b, b):
        raise ValueError(f"targets must be (B, B) with B = {b} captions, got {targets.shape}")
    if images is not None and (images.ndim != 4 or images.shape[0] != b or images.shape[-1] != 3):
        raise ValueError(f"images must be (B, H, W, 3) with B = {b}, got {images.shape}")
    thumbs = 0 if images is None else 1
    fig = plt.figure(figsize=(2.2 + 1.05 * b + thumbs, 2.4 + 0.8 * b))
    grid = fig.add_gridspec(b, 2 + thumbs, width_ratios=[0.9] * thumbs + [b, 0.25], wspace=0.05, hspace=0.08)
    ax = fig.add_subplot(grid[:, thumbs])
    image = ax.imshow(targets, cmap="viridis", vmin=0.0, vmax=1.0)
    for i in range(b):
        for j in range(b):
            ax.text(j, i, f"{targets[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if targets[i, j] > 0.5 else "white")
    wrapped = ["\n".join(textwrap.wrap(f"{j}: {c}", 16, max_lines=5, placeholder=" …"))
               for j, c in enumerate(captions)]
    ax.xaxis.tick_top()
    ax.set_xticks(range(b), wrapped, fontsize=6, va="bottom")
    ax.set_yticks(range(b), [f"image {i}" for i in range(b)], fontsize=7)
    ax.set_xlabel("captions (column j = the caption of image j)", fontsize=8)
    if images is not None:
        ax.set_yticks(range(b), [f"{i}" for i in range(b)], fontsize=7)
        for i in range(b):
            thumb = fig.add_subplot(grid[i, 0])
            thumb.imshow(np.clip(images[i], 0, 1))
            thumb.set_axis_off()
    fig.colorbar(image, cax=fig.add_subplot(grid[:, -1]), label="target probability")
    fig.suptitle(title or "target matrix (rows: images, columns: captions)", fontsize=9)
    return _save(fig, path, tight=False)


def plot_off_diagonal_histogram(off_diagonal: np.ndarray, path: Path, title: str = "") -> Path:
    """Density histogram (100 bins, log y) of off-diagonal match probabilities, as the official analysis, with the
    threshold that ``off_sig`` counts from."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(np.asarray(off_diagonal, dtype=float).ravel(), bins=100, range=(0.0, 1.0), density=True, log=True)
    ax.axvline(OFF_SIG_THRESHOLD, color="black", linestyle="--", linewidth=1,
               label=f"off_sig threshold ({OFF_SIG_THRESHOLD:g})")
    ax.legend(fontsize=7)
    ax.set_xlabel("off-diagonal image→text probability")
    ax.set_ylabel("density (log)")
    ax.set_title(title or "how much a batch's non-paired captions match", fontsize=9)
    return _save(fig, path)


def plot_thumbnails(panels: Sequence[Sequence[tuple[Path, str, Sequence[str]]]], path: Path,
                    width_chars: int = 30) -> Path:
    """A grid of example images, one row per eval set: each panel is ``(image path, eval set, label names)``
    and is titled with the eval set and its **full** label list, wrapped at ``width_chars``. Saves a PNG."""
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
