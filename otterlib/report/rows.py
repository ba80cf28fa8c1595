"""Reading what the evaluation wrote: eval rows (JSON lines), published numbers and per-unit score files.

Eval rows are the JSON lines of the evaluation stage (one per run × eval set, CLIP_benchmark style) with
values as fractions in [0, 1]. Beside each ``eval[_<mode>].jsonl`` lies one ``hits_<set>[_<mode>].npz`` per
eval set (:func:`save_hits`): the per-image hits at every k and the per-class average precisions, the
units that the intervals and the tally resample.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from otterlib import layout
from otterlib.env import REPO_ROOT

PUBLISHED_CSV: Path = REPO_ROOT / "data" / "published" / "otter_published.csv"
ROW_COLUMNS: tuple[str, ...] = ("setting", "method", "seed", "kind", "eval_set", "mode", "metric", "value", "run_dir")


def read_rows(paths: Iterable[Path]) -> pd.DataFrame:
    """Eval rows from JSON-lines files -> long table, one line per metric: ``setting, method, seed, kind,
    eval_set, mode, metric, value`` (a fraction) and ``run_dir`` (the folder of the file, where its score
    files lie). ``seed`` is the training seed of a trained run (None for reference and trivial rows)."""
    records = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for metric, value in row["metrics"].items():
                records.append({"setting": row["setting"], "method": row["method"], "seed": row.get("seed"),
                                "kind": row.get("kind", "trained"), "eval_set": row["dataset"],
                                "mode": row.get("mode", "paper"), "metric": metric, "value": float(value),
                                "run_dir": str(Path(path).parent)})
    return pd.DataFrame.from_records(records, columns=list(ROW_COLUMNS))


def collect_rows(results_root: Path) -> pd.DataFrame:
    """All eval rows under ``results/<profile>`` (trained runs, reference models, trivial baselines; every
    protocol mode)."""
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
    return df.assign(value=df["value"] / 100.0, kind="published", mode="paper")


@dataclass(frozen=True)
class HitVectors:
    """The per-unit scores of one evaluation (``hits_<set>[_<mode>].npz``).

    ``image_ids`` (N,) str: the eval set's image ids in evaluation order; ``hits[k]`` (N,) bool aligned with them
    (True where one of the top-k classes is a label of the image); ``ap_class_ids`` (P,) int and ``ap`` (P,)
    float: the average precision of every class with a positive image (None in files written before they
    were stored); ``source``: the file they came from.
    """

    image_ids: np.ndarray
    hits: dict[int, np.ndarray]
    source: str = ""
    ap_class_ids: np.ndarray | None = None
    ap: np.ndarray | None = None

    def __post_init__(self) -> None:
        ids = self.image_ids
        name = self.source or "hits"
        if ids.ndim != 1 or ids.dtype.kind != "U":
            raise ValueError(f"{name}: image_ids must be a 1-D str array, got {ids.dtype} {ids.shape}")
        if len(np.unique(ids)) != len(ids):
            values, counts = np.unique(ids, return_counts=True)
            raise ValueError(f"{name}: repeated image id(s) {values[counts > 1][:5].tolist()}")
        for k, h in self.hits.items():
            if h.shape != ids.shape or h.dtype != bool:
                raise ValueError(f"{name}: k{k} must be a bool array of the {len(ids)} image ids' "
                                 f"shape, got {h.dtype} {h.shape}")
        if (self.ap is None) != (self.ap_class_ids is None) or (
                self.ap is not None and (self.ap.ndim != 1 or self.ap.shape != self.ap_class_ids.shape)):
            raise ValueError(f"{name}: ap and ap_class_ids must be given together, as 1-D arrays of one shape")

    @property
    def ks(self) -> tuple[int, ...]:
        return tuple(sorted(self.hits))

    def at(self, k: int) -> np.ndarray:
        """The (N,) hit vector at ``k``."""
        if k not in self.hits:
            raise KeyError(f"{self.source or 'hits'} has no k={k}; it holds k = {', '.join(map(str, self.ks))}")
        return self.hits[k]

    def units(self, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(ids, scores)`` whose mean is ``metric``: the image ids and 0/1 hits for ``fh@k``, the class ids
        (as str) and per-class AP for ``map``; None when this file does not hold them."""
        if metric == "map":
            return None if self.ap is None else (self.ap_class_ids.astype(str), self.ap.astype(np.float64))
        k = int(metric.removeprefix("fh@"))
        return (self.image_ids, self.hits[k].astype(np.float64)) if k in self.hits else None


def save_hits(path: Path, image_ids: Sequence[str], hits: Mapping[int, np.ndarray],
              ap_class_ids: np.ndarray | None = None, ap: np.ndarray | None = None) -> Path:
    """Write ``image_ids``, one bool array ``k<k>`` per cut-off and, when given, the per-class average
    precisions (``ap_class_ids``, ``ap``) as a compressed ``.npz``; returns ``path``."""
    vectors = HitVectors(np.asarray(list(image_ids), dtype=str),
                         {int(k): np.asarray(v, dtype=bool) for k, v in hits.items()}, str(path),
                         None if ap_class_ids is None else np.asarray(ap_class_ids, dtype=np.int64),
                         None if ap is None else np.asarray(ap, dtype=np.float64))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if vectors.ap is None else {"ap_class_ids": vectors.ap_class_ids, "ap": vectors.ap}
    np.savez_compressed(path, image_ids=vectors.image_ids, **{f"k{k}": v for k, v in vectors.hits.items()}, **extra)
    return path


def load_hits(path: Path) -> HitVectors:
    """Read a file written by :func:`save_hits`."""
    with np.load(path, allow_pickle=False) as data:
        if "image_ids" not in data.files:
            raise ValueError(f"{path} has no image_ids (written before hit files stored them): rerun 04_evaluate for "
                             f"this run to pair its hits by image")
        hits = {int(m.group(1)): data[name] for name in data.files if (m := re.fullmatch(r"k(\d+)", name))}
        ap = (data["ap_class_ids"], data["ap"]) if "ap" in data.files else (None, None)
        return HitVectors(data["image_ids"], hits, str(path), *ap)


@dataclass(frozen=True)
class Units:
    """The per-unit scores of one evaluation for one metric: ``ids`` (U,) str and ``scores`` (U,) whose mean is
    the metric (images and 0/1 hits for FH@k, classes and AP for mAP); ``source``: the file."""

    ids: np.ndarray
    scores: np.ndarray
    source: str


def align(units: Sequence[Units]) -> np.ndarray:
    """Stack the scores of several evaluations into one (n, U) array, every row in the first one's unit order
    (units matched by id).

    Raises ValueError when two hold different unit sets (e.g. evaluated with other images missing): pairing
    them would compare methods on different images."""
    reference = units[0]
    out = np.empty((len(units), len(reference.ids)), dtype=np.float64)
    for row, u in enumerate(units):
        only_ref, only_this = np.setdiff1d(reference.ids, u.ids), np.setdiff1d(u.ids, reference.ids)
        if only_ref.size or only_this.size:
            raise ValueError(f"scores of different image (or class) sets cannot be paired: {only_ref.size} only in "
                             f"{reference.source} (e.g. {only_ref[:3].tolist()}), {only_this.size} only in {u.source} "
                             f"(e.g. {only_this[:3].tolist()}); evaluate both runs on the same images")
        position = {unit: i for i, unit in enumerate(u.ids.tolist())}
        out[row] = u.scores[[position[i] for i in reference.ids.tolist()]]
    return out


def seed_units(runs: pd.DataFrame, metric: str, mode: str = "paper") -> dict[int, Units] | None:
    """The per-unit scores of one (setting, method, eval set) per training seed, from the score files beside
    its eval rows (``runs``: one row per seed, with ``seed``, ``run_dir`` and ``eval_set``; a reference model
    without a seed counts as seed 0). None when a seed's file is missing or does not hold ``metric`` (the cell
    then has no interval)."""
    if runs.empty or "run_dir" not in runs:
        return None
    found: dict[int, Units] = {}
    for _, run in runs.drop_duplicates("seed").sort_values("seed").iterrows():
        path = layout.hits_path(Path(run["run_dir"]), run["eval_set"], mode)
        units = load_hits(path).units(metric) if path.is_file() else None
        if units is None:
            return None
        found[0 if pd.isna(run["seed"]) else int(run["seed"])] = Units(*units, str(path))
    return found
