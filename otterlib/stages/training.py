"""Stage 03: train one (setting, method, seed) run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from otterlib import layout
from otterlib.config import Profile, resolve_run
from otterlib.plots import SCALE_LABELS, plot_run_curves, plot_setting_curves

RETRIEVAL_LABELS: dict[str, str] = {"i2t_r@1": "image→text R@1", "t2i_r@1": "text→image R@1",
                                    "mean_r@1": "mean R@1 (chooses the best epoch)",
                                    "i2t_r@5": "image→text R@5", "t2i_r@5": "text→image R@5"}
"""Validation retrieval fields -> row labels of :func:`retrieval_table`."""


def train_run(profile: Profile, setting: str, method: str, seed: int | None = None, force: bool = False):
    """Train (or resume) one (setting, method, seed) run (``seed`` None: the setting's first seed);
    ``force`` deletes the run folder first."""
    from otterlib.train import run_training

    cfg = resolve_run(profile, setting, method, seed)
    run_dir = Path(cfg.run_dir)
    if force and run_dir.exists():
        for child in run_dir.iterdir():
            if child.name != "03_train.ipynb":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    return run_training(cfg)


def _log_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_log(run_dir: Path) -> pd.DataFrame:
    """A run's ``log.jsonl`` step rows as a DataFrame (loss terms, inverse temperatures, lr, timings per step)."""
    return pd.DataFrame([r for r in _log_rows(run_dir) if "step" in r and "event" not in r])


def read_epochs(run_dir: Path) -> pd.DataFrame:
    """A run's held-out validation after each epoch (``epoch_end`` rows of ``log.jsonl``): ``epoch``,
    ``elapsed_s`` and the validation fields (fractions ``i2t_r@1`` ..., ``loss``, ``n`` pairs). A resumed run
    repeats no epoch: the last row of an epoch wins."""
    rows = [{"epoch": r["epoch"], "elapsed_s": r.get("elapsed_s"), **r["val"]}
            for r in _log_rows(run_dir) if r.get("event") == "epoch_end" and r.get("val")]
    epochs = pd.DataFrame(rows, columns=None if rows else ["epoch", "elapsed_s", "n"])
    return epochs.drop_duplicates("epoch", keep="last").reset_index(drop=True)


def retrieval_table(run_dir: Path) -> pd.DataFrame:
    """Held-out validation retrieval of a run in percent (1 decimal): the last epoch, the best epoch (highest
    mean R@1, the checkpoint ``best.pt``) and chance (k/N: the true caption among the N validation pairs at
    random ranks)."""
    epochs = read_epochs(run_dir)
    if epochs.empty:
        raise FileNotFoundError(f"{run_dir}/log.jsonl has no finished epoch yet")
    last, best = epochs.iloc[-1], epochs.loc[epochs["mean_r@1"].idxmax()]
    n = int(last["n"])
    fields = [f for f in RETRIEVAL_LABELS if f in epochs]
    table = pd.DataFrame({
        f"epoch {int(last['epoch'])} (last)": [100 * last[f] for f in fields],
        f"epoch {int(best['epoch'])} (best)": [100 * best[f] for f in fields],
        f"chance (k/{n})": [100 * int(f.split("@")[1]) / n for f in fields],
    }, index=[RETRIEVAL_LABELS[f] for f in fields])
    table.index.name = f"validation retrieval (%), {n} pairs"
    return table.round(1)


def run_facts(run_dir: Path) -> pd.Series:
    """What else a finished run reports: epochs, optimizer steps, training time, the validation loss of the
    last epoch, and the final learnable inverse temperatures (logit scales ``s = exp θ``)."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    facts = {"epochs": metrics["epochs"], "optimizer steps": metrics["global_steps"],
             "training time (min)": round(metrics["train_wall_s"] / 60, 1),
             "validation loss, last epoch (nats)": round(metrics["val_last"]["loss"], 3)}
    for name, value in metrics["scales"].items():
        facts[f"inverse temperature (logit scale), {SCALE_LABELS.get(name, name)}, final"] = round(value, 2)
    return pd.Series(facts, name=f"{metrics['setting']} / {metrics['method']}", dtype=object)


def run_curves(run_dir: Path, title: str = "") -> Path:
    """Draw one run's loss terms, inverse temperatures and per-epoch validation R@1 to ``training_curves.png``
    in the run folder; returns the PNG."""
    return plot_run_curves(read_log(run_dir), read_epochs(run_dir), layout.training_curves_path(run_dir), title)


def setting_curves(profile: Profile, setting: str) -> Path:
    """Draw the training curves of every run of ``setting`` that has a ``log.jsonl`` (all methods, all seeds;
    one colour per method) to ``results/<profile>/tables/training_<setting>.png``; returns the PNG."""
    from otterlib.report import METHOD_LABELS

    seeds = profile.seeds_of(setting)
    runs, colors = {}, {}
    for i, method in enumerate(profile.methods):
        for seed in seeds:
            run_dir = profile.run_dir(setting, method, seed)
            if not (run_dir / "log.jsonl").is_file():
                continue
            label = METHOD_LABELS.get(method, method) + (f" (seed {seed})" if len(seeds) > 1 else "")
            runs[label] = (read_log(run_dir), read_epochs(run_dir))
            colors[label] = f"C{i}"
    if not runs:
        raise FileNotFoundError(f"no run of setting {setting!r} has a log.jsonl under {profile.results_root}")
    return plot_setting_curves(runs, layout.setting_curves_path(profile, setting), f"setting {setting}", colors)
