"""The study's result files under ``results/<profile>/noise_study/`` and the tables read back from them.

Files: ``study.json`` (configuration, grid axes, timings, machine load), ``runs.csv`` (one row per run and
eval set: FH@k, steps/s, final loss terms), ``precision.csv`` (target precision per run and recorded step),
``hits.npz`` (per eval set and k: bool hits of shape (noise, size, method, seed, image)) and
``figure_batch.npz`` (OTTER's targets on its last training batch with that batch's truth and captions).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from otterlib import stats
from otterlib.config import NoiseStudyConfig
from otterlib.noise_study.data import StudyData
from otterlib.noise_study.runs import TaskResult

RESULT_FILES: tuple[str, ...] = ("study.json", "runs.csv", "precision.csv", "hits.npz", "figure_batch.npz")
BASELINES: tuple[str, ...] = ("infonce", "label_smoothing", "kd")
METHOD: str = "otter"


def write_results(out_dir: Path, ns: NoiseStudyConfig, methods: list[str], data: StudyData,
                  results: list[TaskResult], meta: dict[str, Any]) -> Path:
    """Write every result file; ``study.json`` last (its presence means the study is complete)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([r for res in results for r in res.runs]).to_csv(out_dir / "runs.csv", index=False)
    pd.DataFrame([r for res in results for r in res.precision]).to_csv(out_dir / "precision.csv", index=False)
    shape = (len(ns.noise_levels), len(ns.sizes), len(methods), len(ns.seeds))
    hits: dict[str, np.ndarray] = {}
    for es in data.eval_sets:
        for k in ns.ks:
            arr = np.zeros(shape + (len(es.image_ids),), dtype=bool)
            for res in results:
                t = res.task
                for m, method in enumerate(methods):
                    arr[ns.noise_levels.index(t.noise), ns.sizes.index(t.size), m, ns.seeds.index(t.seed)] = \
                        res.hits[(method, es.name, k)]
            hits[f"{es.name}_k{k}"] = arr
    np.savez_compressed(out_dir / "hits.npz", **hits)
    shown = next((res for res in results if res.figure is not None), None)
    if shown is not None:
        idx, noise = shown.figure["indices"], shown.task.noise
        np.savez_compressed(out_dir / "figure_batch.npz", targets=shown.figure["targets"],
                            truth=data.batch_truth(noise, idx), wrong=data.wrong[noise][idx],
                            captions=np.array([data.captions[c] for c in data.caption_index[noise][idx]]),
                            noise=noise, size=shown.task.size, seed=shown.task.seed)
    info = {"config": dataclasses.asdict(ns), "methods": methods, "axes": ["noise", "size", "method", "seed", "image"],
            "eval_sets": {es.name: len(es.image_ids) for es in data.eval_sets}, "data": data.info,
            "load_average": os.getloadavg(), "cpu_count": os.cpu_count(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta}
    (out_dir / "study.json").write_text(json.dumps(info, indent=2, default=str))
    return out_dir


@dataclass
class StudyResults:
    """The result files of one study, read back (see the module docstring)."""

    info: dict[str, Any]
    runs: pd.DataFrame
    precision: pd.DataFrame
    hits: dict[str, np.ndarray]
    figure: dict[str, np.ndarray] | None

    @property
    def config(self) -> dict[str, Any]:
        return self.info["config"]

    @property
    def methods(self) -> list[str]:
        return list(self.info["methods"])

    @property
    def eval_sets(self) -> list[str]:
        return list(self.info["eval_sets"])

    def scores(self, eval_set: str, k: int, noise: float, size: int) -> dict[str, np.ndarray]:
        """``{method: (n_seeds, n_images) float}`` FH@k hits of one cell."""
        arr = self.hits[f"{eval_set}_k{k}"]
        i, j = self.config["noise_levels"].index(noise), self.config["sizes"].index(size)
        return {m: arr[i, j, n].astype(np.float64) for n, m in enumerate(self.methods)}

    def cells(self) -> list[tuple[str, int, float]]:
        """Every (eval set, size, noise), in table order."""
        return [(e, n, p) for e in self.eval_sets for n in self.config["sizes"] for p in self.config["noise_levels"]]


def read_results(out_dir: Path) -> StudyResults:
    """Load a finished study (raises ``FileNotFoundError`` when ``study.json`` is missing)."""
    info = json.loads((out_dir / "study.json").read_text())
    with np.load(out_dir / "hits.npz") as f:
        hits = {k: f[k] for k in f.files}
    figure = None
    if (out_dir / "figure_batch.npz").is_file():
        with np.load(out_dir / "figure_batch.npz") as f:
            figure = {k: f[k] for k in f.files}
    return StudyResults(info=info, runs=pd.read_csv(out_dir / "runs.csv"),
                        precision=pd.read_csv(out_dir / "precision.csv"), hits=hits, figure=figure)


def metric_table(res: StudyResults, k: int = 1, level: float = 0.95) -> pd.DataFrame:
    """FH@k in points per (eval set, size, noise, method): mean over seeds and its Student-t interval over
    seeds (eval images fixed), long format."""
    rows = []
    for eval_set, size, noise in res.cells():
        for method, hits in res.scores(eval_set, k, noise, size).items():
            mean, low, high = stats.seed_interval(100 * hits.mean(axis=1), level)
            rows.append({"eval_set": eval_set, "size": size, "noise": noise, "method": method, "mean": mean,
                         "low": low, "high": high})
    return pd.DataFrame(rows)


def formatted_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`metric_table` as ``mean ± half-width`` strings, one column per method."""
    cells = table.assign(value=[f"{m:.1f} ± {(h - l) / 2:.1f}" for m, l, h in zip(table["mean"], table["low"],
                                                                                  table["high"])])
    wide = cells.pivot(index=["eval_set", "size", "noise"], columns="method", values="value")
    return wide[list(dict.fromkeys(table["method"]))]


def verdict_table(res: StudyResults, ks: list[int] | None = None) -> pd.DataFrame:
    """OTTER − best baseline per (eval set, size, noise, FH@k), in points, with the paired hierarchical
    bootstrap interval and both verdicts (statistical and the fixed ``tie_tolerance``)."""
    cfg = res.config
    baselines = [b for b in BASELINES if b in res.methods]
    rows = []
    for k in ks or cfg["ks"]:
        for eval_set, size, noise in res.cells():
            c = stats.compare_to_best(res.scores(eval_set, k, noise, size), METHOD, baselines,
                                      tolerance=cfg["tie_tolerance"] / 100, n_boot=cfg["n_boot"])
            rows.append({"eval_set": eval_set, "size": size, "noise": noise, "metric": f"fh@{k}",
                         "otter": 100 * c.method_mean, "best_baseline": c.best_baseline,
                         "baseline": 100 * c.baseline_mean, "diff": 100 * c.difference, "low": 100 * c.low,
                         "high": 100 * c.high, "verdict": c.verdict, "fixed_rule": c.fixed_verdict,
                         "seeds": c.n_seeds, "images": c.n_images})
    return pd.DataFrame(rows)


def precision_table(res: StudyResults) -> pd.DataFrame:
    """Per (noise, size, method): target precision at the first and last recorded step (mean over seeds),
    the end interval over seeds, chance, the true and false mass and the wrong-caption rescue (next to its
    uniform value) at the end."""
    df = res.precision
    first, last = df["step"].min(), df["step"].max()
    rows = []
    for (noise, size, method), g in df.groupby(["noise", "size", "method"], sort=False):
        end = g[g["step"] == last]
        mean, low, high = stats.seed_interval(end["precision"].to_numpy())
        rows.append({"noise": noise, "size": size, "method": method,
                     "start": g[g["step"] == first]["precision"].mean(), "end": mean, "end_low": low,
                     "end_high": high, "chance": end["chance"].mean(), "true_mass": end["true_mass"].mean(),
                     "false_mass": end["false_mass"].mean(),
                     "wrong_rescue": end["wrong_rescue"].mean(),
                     "wrong_rescue_uniform": end["wrong_rescue_uniform"].mean()})
    return pd.DataFrame(rows)


def timing_table(res: StudyResults) -> pd.DataFrame:
    """Per method: runs, median training steps per second of wall clock (the steps alone; other jobs on the
    machine slow it) and per second of this process's CPU time (what one free core would do), median wall
    seconds of the steps and median CPU seconds of a whole run (steps, precision records, evaluation)."""
    runs = res.runs.drop_duplicates(["noise", "size", "method", "seed"])
    return runs.groupby("method", sort=False).agg(runs=("steps", "size"), median_steps_per_s=("steps_per_s", "median"),
                                                  median_steps_per_cpu_s=("steps_per_cpu_s", "median"),
                                                  median_train_s=("train_s", "median"),
                                                  median_run_cpu_s=("run_cpu_s", "median"))


def timing_summary(res: StudyResults) -> dict[str, Any]:
    """The grid's wall time and runs/s as measured, its CPU seconds (sum over runs) and what that makes on
    ``workers`` cores of their own (CPU seconds / workers: the wall time without other jobs on the machine),
    the feature stage's wall and CPU seconds, and the machine's load average at the end."""
    runs = res.runs.drop_duplicates(["noise", "size", "method", "seed"])
    cpu = float(runs["run_cpu_s"].sum())
    workers = max(1, int(res.config["workers"]))
    return {"runs": int(res.info["n_runs"]), "grid_wall_s": res.info["grid_wall_s"],
            "runs_per_s": res.info["runs_per_s"],
            "grid_cpu_s": round(cpu, 1), "workers": workers, "grid_wall_on_free_cores_s": round(cpu / workers, 1),
            "features_wall_s": res.info["data"].get("wall_s"), "features_cpu_s": res.info["data"].get("cpu_s"),
            "study_wall_s": res.info["study_wall_s"], "load_average": res.info["load_average"],
            "cpu_count": res.info["cpu_count"]}
