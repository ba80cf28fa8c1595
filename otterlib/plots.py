"""Training-curve figures from ``log.jsonl`` (one run, or every run of a setting), and the PNG helpers.

Every figure is written to a PNG that notebooks display and the HTML index links; nothing is drawn only on
screen. Loss terms and inverse temperatures are plotted against the optimizer step, held-out validation
retrieval against the epoch (``epoch_end`` rows), with the chance level of retrieval among N pairs (k/N).
The learnable scales ``s = exp θ`` that multiply the cosine similarities are inverse temperatures
(CLIP's "logit scale"); the plots name them so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

SCALE_LABELS: dict[str, str] = {"logit_scale": "contrastive s", "distill_logit_scale": "distillation s_d"}
"""Logged inverse temperatures (log.jsonl column -> legend label)."""

LOSS_LABELS: dict[str, str] = {"loss": "total", "contrastive": "contrastive", "distill": "distillation"}
"""Logged loss terms (log.jsonl column -> legend label)."""

RECALL_LABELS: dict[str, str] = {"i2t_r@1": "image→text", "t2i_r@1": "text→image", "mean_r@1": "mean"}
"""Validation R@1 columns of the ``epoch_end`` rows -> legend label."""

INVERSE_TEMPERATURE = "inverse temperature s = exp θ\n(logit scale)"
"""y-axis label of every inverse-temperature panel."""


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only; notebooks display the saved PNGs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, tight: bool = True) -> Path:
    """Save a figure as a 120-dpi PNG cropped to its content (creating the folder) and close it; returns ``path``.

    ``tight`` also runs ``tight_layout`` first (off for figures that place their own axes)."""
    if tight:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path


def _n_pairs(epochs: pd.DataFrame) -> int | None:
    """Validation pairs N of the last epoch row (None without one)."""
    return int(epochs["n"].iloc[-1]) if "n" in epochs and not epochs.empty else None


def _finish(fig, axes, titles: tuple[str, str], val_ylabel: str, epochs: pd.DataFrame, path: Path,
            title: str) -> Path:
    """Label the three panels (loss, inverse temperature per step; validation per epoch with the chance level
    of the last epoch row's N), add legends and the title, save the PNG."""
    ax_loss, ax_scale, ax_val = axes
    ax_loss.set(xlabel="optimizer step", ylabel="training loss (nats)", title=titles[0])
    ax_scale.set(xlabel="optimizer step", ylabel=INVERSE_TEMPERATURE, title=titles[1])
    if n_pairs := _n_pairs(epochs):
        ax_val.axhline(100.0 / n_pairs, color="grey", linestyle=":", linewidth=1, label=f"chance (1/{n_pairs})")
    ax_val.set(xlabel="epoch", ylabel=val_ylabel, title="held-out retrieval per epoch")
    if not epochs.empty:
        ax_val.set_xticks(sorted(epochs["epoch"].unique()))
    for ax in axes:
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_run_curves(steps: pd.DataFrame, epochs: pd.DataFrame, path: Path, title: str = "") -> Path:
    """One run in three panels: loss terms and inverse temperatures per optimizer step (``steps``: the logged
    step rows), validation R@1 (%) per epoch with its chance level (``epochs``: one row per ``epoch_end``, with
    the ``val`` fields as columns). Terms that stay 0 (no distillation) or equal the total are left out. Saves a
    PNG."""
    fig, axes = pyplot().subplots(1, 3, figsize=(13, 3.4))
    ax_loss, ax_scale, ax_val = axes
    for column, label in LOSS_LABELS.items():
        same_as_total = column != "loss" and "loss" in steps and steps[column].equals(steps["loss"])
        if column in steps and steps[column].abs().sum() > 0 and not same_as_total:
            ax_loss.plot(steps["step"], steps[column], label=label)
    for column, label in SCALE_LABELS.items():
        if column in steps:
            ax_scale.plot(steps["step"], steps[column], label=label)
    for column, label in RECALL_LABELS.items():
        if column in epochs:
            ax_val.plot(epochs["epoch"], 100 * epochs[column], marker="o", label=label)
    return _finish(fig, axes, ("loss terms", "learnable inverse temperatures"), "validation R@1 (%)", epochs,
                   path, title)


def plot_setting_curves(runs: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]], path: Path, title: str = "",
                        colors: Mapping[str, str] | None = None) -> Path:
    """Every run of a setting in one figure: total training loss and the contrastive inverse temperature per
    optimizer step, mean validation R@1 (%) per epoch with its chance level. ``runs`` maps a legend label to
    that run's (step rows, epoch rows), in legend order; ``colors`` optionally maps labels to colours (runs
    of one method in one colour). Saves a PNG."""
    fig, axes = pyplot().subplots(1, 3, figsize=(13, 3.6))
    ax_loss, ax_scale, ax_val = axes
    for label, (steps, epochs) in runs.items():
        style = {"label": label, "color": (colors or {}).get(label)}
        if "loss" in steps:
            ax_loss.plot(steps["step"], steps["loss"], **style)
        if "logit_scale" in steps:
            ax_scale.plot(steps["step"], steps["logit_scale"], **style)
        if "mean_r@1" in epochs:
            ax_val.plot(epochs["epoch"], 100 * epochs["mean_r@1"], marker="o", **style)
    all_epochs = pd.concat([epochs for _, epochs in runs.values() if not epochs.empty] or [pd.DataFrame()])
    return _finish(fig, axes, ("total loss", "contrastive inverse temperature"), "validation mean R@1 (%)",
                   all_epochs, path, title)
