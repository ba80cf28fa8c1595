"""``sizes.json``: what a download folder holds, and whether every input row was processed.

img2dataset (or an existing webdataset copy indexed by :func:`index_existing_shards`) leaves tars in a folder;
``sizes.json`` beside them lists every tar with its sample count (what the loaders read, so they never open a
tar to count), the totals, the failure classes (:mod:`otterlib.data.failures`), where the rows came from and
the download options. img2dataset exits normally even after giving up on whole shards, so the manifest also
says whether the download is ``complete`` (every input row processed) and, when it is not, which rows and
shards are missing (:func:`incompleteness_message`); training refuses an incomplete download unless
``data.allow_partial`` (:func:`otterlib.data.loader.require_complete`).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otterlib.data.shards import ShardReadError, index_tar

MANIFEST_NAME: str = "sizes.json"
MANIFEST_FORMAT: str = "otterlib-sizes/1"


@dataclass(frozen=True)
class DownloadSummary:
    """What a download (or an indexed copy) holds."""

    n_rows: int
    """Rows processed: the sum of the shards' ``count`` (equals ``n_input_rows`` once complete)."""
    successes: int
    """Samples stored in the tars."""
    failures_by_status: dict[str, int]
    """Failed rows per error class (see :func:`otterlib.data.failures.classify_failure`), most frequent first."""
    success_rate: float
    """``successes / n_rows`` (0.0 when nothing was processed)."""
    shard_paths: list[Path]
    """Tars holding at least one sample, in shard order."""
    shard_sizes: list[int]
    """Samples per tar, aligned with ``shard_paths``."""
    manifest_path: Path
    """``sizes.json`` (written by :func:`otterlib.data.download.download_pairs` / :func:`index_existing_shards`)."""
    n_input_rows: int
    """Rows of the source list (TSV rows for a download; ``n_rows`` for an indexed copy)."""
    failure_examples: dict[str, str] = field(default_factory=dict)
    """One raw error message per failure class."""
    missing_shards: list[str] = field(default_factory=list)
    """Shards of the input that have no stats file: never processed, or given up on by img2dataset."""

    @property
    def complete(self) -> bool:
        """Every input row has been processed (no shard left to download)."""
        return self.n_rows == self.n_input_rows

    def incompleteness(self) -> str | None:
        """What is missing and how to resume, in plain words (None when complete)."""
        return incompleteness_message(self.n_input_rows, self.n_input_rows - self.n_rows, self.missing_shards)

    @property
    def total(self) -> int:
        """Samples available to loaders (``sum(shard_sizes)``)."""
        return sum(self.shard_sizes)


def incompleteness_message(n_input_rows: int, n_missing_rows: int, missing_shards: list[str]) -> str | None:
    """``The download is incomplete: ...`` with the missing rows and shards and how to resume; None if none."""
    if n_missing_rows == 0:
        return None
    shards = (f"{len(missing_shards)} shard{'s' * (len(missing_shards) != 1)}: "
              f"{', '.join(missing_shards[:10])}{', ...' * (len(missing_shards) > 10)}")
    return (f"The download is incomplete: {n_missing_rows:,} of {n_input_rows:,} rows ({shards}) were never "
            f"processed; img2dataset gave up on them and still exited normally. To resume, rerun 01_download_data "
            f"(./run_all.sh reruns it while the download is incomplete; download_pairs with the same arguments "
            f"does the same): finished shards are kept and only the missing ones are downloaded. To train on the "
            f"rows that are there anyway, set data.allow_partial: true.")


@dataclass(frozen=True)
class ShardManifest:
    """The part of ``sizes.json`` loaders need."""

    path: Path
    shard_paths: list[Path]
    """Absolute tar paths (``sizes.json`` stores them relative to its folder)."""
    shard_sizes: list[int]
    n_input_rows: int = 0
    """Rows of the download's input list (0 when unknown)."""
    n_missing_rows: int = 0
    """Input rows never processed (a shard img2dataset gave up on, or an interrupted download)."""
    missing_shards: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.shard_sizes)

    @property
    def complete(self) -> bool:
        return self.n_missing_rows == 0

    def incompleteness(self) -> str | None:
        """What is missing and how to resume, in plain words (None when complete)."""
        return incompleteness_message(self.n_input_rows, self.n_missing_rows, self.missing_shards)


def load_manifest(path: str | Path) -> ShardManifest:
    """Read ``sizes.json`` (``path`` is the file or the folder holding it) and check its tars exist."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: run download_pairs(...) or index_existing_shards(folder) "
                                "to write it")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not an otterlib manifest (format {data.get('format')!r}, "
                         f"expected {MANIFEST_FORMAT!r})")
    shard_paths = [(path.parent / s["path"]).resolve() for s in data["shards"]]
    sizes = [int(s["samples"]) for s in data["shards"]]
    missing = [str(p) for p in shard_paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{path} lists {len(missing)} missing tar(s), e.g. {missing[0]}; rerun the download "
                                "or index_existing_shards on the folder")
    if sum(sizes) != data["total"]:
        raise ValueError(f"{path}: per-shard counts sum to {sum(sizes)} but total says {data['total']}")
    n_input = int(data.get("n_input_rows") or 0)
    return ShardManifest(path=path, shard_paths=shard_paths, shard_sizes=sizes, n_input_rows=n_input,
                         n_missing_rows=n_input - int(data.get("n_rows") or n_input),
                         missing_shards=list(data.get("missing_shards", [])))


def write_manifest(summary: DownloadSummary, source: dict[str, Any] | None, options: dict[str, Any] | None,
                    img2dataset_version: str | None) -> Path:
    """Write ``summary.manifest_path`` (atomically) with the summary, the rows' ``source`` and the download
    ``options``; returns its path."""
    root = summary.manifest_path.parent
    manifest = {
        "format": MANIFEST_FORMAT,
        "total": summary.total,
        "shards": [{"path": os.path.relpath(p, root), "samples": n}
                   for p, n in zip(summary.shard_paths, summary.shard_sizes)],
        "complete": summary.complete,
        "n_rows": summary.n_rows,
        "n_input_rows": summary.n_input_rows,
        "missing_rows": summary.n_input_rows - summary.n_rows,
        "missing_shards": summary.missing_shards,
        "successes": summary.successes,
        "success_rate": summary.success_rate,
        "failures_by_status": summary.failures_by_status,
        "source": source,
        "options": options,
        "img2dataset_version": img2dataset_version,
        "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = summary.manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(summary.manifest_path)
    return summary.manifest_path


# --------------------------------------------------------------------------------------------------
# An existing webdataset copy


def index_existing_shards(folder: str | Path, pattern: str = "*.tar") -> DownloadSummary:
    """Count the samples of every tar in ``folder`` (an existing webdataset copy of CC3M) and write
    ``folder/sizes.json`` so loaders can use it.

    A sample is a key with an image (``.jpg``/``.jpeg``/``.png``/``.webp``) and a ``.txt`` caption
    (:func:`otterlib.data.shards.index_tar`, the loaders' own reading); keys lacking either are reported in
    ``failures_by_status`` and not counted. Rows that failed when
    the copy was made are unknown, so ``n_rows`` counts only the keys present.
    """
    from otterlib.progress import progress_bar

    folder = Path(folder)
    tars = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if not tars:
        raise FileNotFoundError(f"no {pattern} files in {folder}: pass the folder that holds the webdataset tars")
    shard_paths: list[Path] = []
    shard_sizes: list[int] = []
    no_image = no_text = 0
    for tar_path in progress_bar(tars, desc=f"indexing {folder.name}", unit="tar"):
        try:
            index = index_tar(tar_path)
        except ShardReadError as err:
            raise ValueError(f"{err}; re-download it or remove it from the folder") from err
        if index.error is not None:
            raise ValueError(f"{tar_path} is not a readable tar ({index.error}); re-download it or remove it from "
                             f"the folder")
        no_image += index.n_no_image
        no_text += index.n_no_text
        if len(index):
            shard_paths.append(tar_path)
            shard_sizes.append(len(index))
    successes = sum(shard_sizes)
    failures = {k: v for k, v in (("no image", no_image), ("no caption (.txt)", no_text)) if v}
    n_rows = successes + no_image + no_text
    summary = DownloadSummary(n_rows=n_rows, successes=successes, failures_by_status=failures,
                              success_rate=successes / n_rows if n_rows else 0.0, shard_paths=shard_paths,
                              shard_sizes=shard_sizes, manifest_path=folder / MANIFEST_NAME, n_input_rows=n_rows)
    write_manifest(summary, source={"indexed_folder": str(folder.resolve()), "pattern": pattern}, options=None,
                    img2dataset_version=None)
    return summary
