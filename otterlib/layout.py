"""Where every stage reads and writes (data and results), derived from a profile: one place, so stages agree."""
from __future__ import annotations

from pathlib import Path

from otterlib.config import EvalSetConfig, Profile, SourceData
from otterlib.env import REPO_ROOT


def _abs(p: str | Path) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def source_root(data: SourceData) -> Path:
    """A training source's folder (``data.sources.<name>.root``): its metadata files and ``shards/``."""
    return _abs(data.root)


def shard_dir(data: SourceData, split: str) -> Path:
    """Webdataset shards of a source's split (``train`` or ``val``): img2dataset's output folder with
    ``sizes.json`` (for ``origin: webdataset`` the training tars' own folder)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if data.origin == "webdataset" and split == "train":
        return _abs(data.webdataset_dir)
    return source_root(data) / "shards" / split


def manifest_path(data: SourceData, split: str) -> Path:
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


def training_data_ready(profile: Profile, settings: list[str] | None = None) -> bool:
    """Every source the (selected) settings train on has training and validation shards with a readable
    ``sizes.json`` (its tars present) that says every input row was processed (or ``data.allow_partial``
    accepts a partial download)."""
    from otterlib.data.manifest import load_manifest

    for name in profile.used_sources(settings):
        for split in ("train", "val"):
            try:
                manifest = load_manifest(manifest_path(profile.data.source(name), split))
            except (FileNotFoundError, ValueError):  # none yet, a listed tar is gone, or not our manifest: redo it
                return False
            if not (manifest.complete or profile.data.allow_partial):
                return False
    return True


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


def training_curves_path(run_dir: Path) -> Path:
    """One run's loss, inverse-temperature and validation curves (PNG, drawn by 03)."""
    return Path(run_dir) / "training_curves.png"


def setting_curves_path(profile: Profile, setting: str) -> Path:
    """The training curves of every run of a setting in one figure (PNG, beside the tables)."""
    return tables_dir(profile) / f"training_{setting}.png"


def html_dir(profile: Profile) -> Path:
    """HTML copies of the executed notebooks (``<path under results/<profile>>.html``) and their index."""
    return profile.results_root / "html"


def html_index_path(profile: Profile) -> Path:
    """The page that links every executed notebook in stage order and shows the table, tally and plots."""
    return html_dir(profile) / "index.html"
