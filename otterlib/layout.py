"""Where every stage reads and writes (data and results), derived from a profile: one place, so stages agree."""
from __future__ import annotations

from pathlib import Path

from otterlib.config import DataConfig, EvalSetConfig, Profile
from otterlib.env import REPO_ROOT


def _abs(p: str | Path) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def data_root(data: DataConfig) -> Path:
    """The profile's training-data folder (``data/<...>``)."""
    return _abs(data.root)


def shard_dir(data: DataConfig, split: str) -> Path:
    """Webdataset shards of a split (``train`` or ``val``): img2dataset's output folder with ``sizes.json``."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if data.source == "webdataset" and split == "train":
        if not data.webdataset_dir:
            raise ValueError("data.source is 'webdataset' but data.webdataset_dir is not set")
        return _abs(data.webdataset_dir)
    return data_root(data) / "shards" / split


def manifest_path(data: DataConfig, split: str) -> Path:
    """``sizes.json`` written by the download stage; loaders read sample counts from it."""
    return shard_dir(data, split) / "sizes.json"


def eval_set_dir(eval_set: EvalSetConfig) -> Path:
    """Folder holding an eval set's metadata files."""
    return _abs(eval_set.metadata_dir)


def eval_images_dir(eval_set: EvalSetConfig) -> Path:
    """Folder holding an eval set's images."""
    return _abs(eval_set.images_dir)


def eval_prepared_marker(eval_set: EvalSetConfig) -> Path:
    """Written by the eval-set stage once an eval set's metadata (and images) are in place."""
    return eval_set_dir(eval_set) / "prepared.json"


def training_data_ready(profile: Profile) -> bool:
    """Both training and validation shards have their ``sizes.json``."""
    return all(manifest_path(profile.data, split).is_file() for split in ("train", "val"))


def eval_sets_ready(profile: Profile) -> bool:
    return all(eval_prepared_marker(s).is_file() for s in profile.eval.sets)


# --------------------------------------------------------------------------------------------------
# results/<profile>/...


def eval_rows_path(run_dir: Path, mode: str = "paper") -> Path:
    """JSON-lines eval rows of one run or reference model (one row per eval set): ``eval.jsonl`` for the
    paper protocol, ``eval_clean.jsonl`` for the clean one."""
    return Path(run_dir) / ("eval.jsonl" if mode == "paper" else f"eval_{mode}.jsonl")


def hits_path(run_dir: Path, eval_set: str, mode: str = "paper") -> Path:
    """Per-image hit vectors (``.npz``, one boolean array per k) for bootstrap confidence intervals."""
    return Path(run_dir) / (f"hits_{eval_set}.npz" if mode == "paper" else f"hits_{eval_set}_{mode}.npz")


def reference_dir(profile: Profile, reference: str) -> Path:
    return profile.results_root / "references" / reference


def trivial_dir(profile: Profile) -> Path:
    """Eval rows of the trivial baselines (random and best constant ranking) of every eval set:
    ``results/<profile>/trivial/eval.jsonl`` (paper protocol) and ``eval_clean.jsonl``."""
    return profile.results_root / "trivial"


def eval_thumbnails_path(profile: Profile) -> Path:
    """Example images of every eval set with their full label lists (written by stage 02)."""
    return profile.results_root / "eval_sets" / "thumbnails.png"


def tables_dir(profile: Profile) -> Path:
    return profile.results_root / "tables"


def table_path(profile: Profile) -> Path:
    """The final comparison table (Markdown); CSV and plots sit beside it."""
    return tables_dir(profile) / "comparison.md"
