"""Conceptual Captions 3M: Google's TSVs -> pair tables, and the download of a CC3M-format TSV.

Input: Google's headerless ``caption<TAB>url`` files (``Train_GCC-training.tsv``, 3,318,333 rows;
``Validation_GCC-1.1.0-Validation.tsv``, 15,840 rows). Parsing rule: **the URL is the text after the
last TAB of a line and the caption is everything before it, kept verbatim** (quotes, unicode and any
TAB inside a caption survive; no CSV quoting is applied). Blank lines are skipped; a line without a
TAB is an error; a first line that reads exactly ``caption<TAB>url`` is taken as a header and skipped.
Keys of the shards map back to TSV rows (blank lines and a header not counted, see :mod:`otterlib.data.download`).

The held-out split is Google's validation file; the training split is the training file, optionally only
its first ``max_train_rows``.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from otterlib.data.download import SOURCE_DIR, DownloadOptions, read_download_stats, run_img2dataset
from otterlib.data.manifest import MANIFEST_NAME, DownloadSummary, write_manifest
from otterlib.data.preflight import EXPECTED_BYTES_PER_IMAGE, preflight
from otterlib.data.sources import PairTables

OFFICIAL_TRAIN_URL: str = "https://storage.googleapis.com/gcc-data/Train/GCC-training.tsv"
"""Google's download of ``Train_GCC-training.tsv`` (linked from the Conceptual Captions download page)."""
OFFICIAL_VALIDATION_URL: str = "https://storage.googleapis.com/gcc-data/Validation/GCC-1.1.0-Validation.tsv"
"""Google's download of ``Validation_GCC-1.1.0-Validation.tsv``."""
CC3M_DOWNLOAD_PAGE: str = "https://ai.google.com/research/ConceptualCaptions/download"


def read_cc3m_tsv(tsv_path: str | Path, max_rows: int | None = None) -> pd.DataFrame:
    """Google's headerless ``caption<TAB>url`` file -> DataFrame with columns ``caption``, ``url`` (str).

    See the module docstring for the parsing rule (URL after the last TAB, caption verbatim).
    """
    tsv_path = Path(tsv_path)
    captions: list[str] = []
    urls: list[str] = []
    try:
        with tsv_path.open(encoding="utf-8", newline="\n") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line or (lineno == 1 and line.lower() == "caption\turl"):
                    continue
                caption, tab, url = line.rpartition("\t")
                url = url.strip()
                if not tab or not url:
                    raise ValueError(f"{tsv_path}:{lineno}: expected 'caption<TAB>url' (Google's headerless CC3M "
                                     f"TSV), got {line[:120]!r}")
                captions.append(caption)
                urls.append(url)
                if max_rows is not None and len(urls) >= max_rows:
                    break
    except UnicodeDecodeError as err:
        raise ValueError(f"{tsv_path} is not UTF-8 text ({err}); pass Google's TSV unchanged") from err
    if not urls:
        raise ValueError(f"{tsv_path} has no 'caption<TAB>url' rows")
    return pd.DataFrame({"caption": captions, "url": urls})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_cc3m_tsv(dest: str | Path, url: str = OFFICIAL_TRAIN_URL, timeout: float = 60.0) -> Path:
    """Download the official TSV to ``dest`` unless a non-empty file is already there; returns ``dest``.

    Use ``url=OFFICIAL_VALIDATION_URL`` for the validation split. Offline (or if Google's URL moved) this
    raises :class:`ConnectionError` saying where to get the file by hand.
    """
    dest = Path(dest)
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError) as err:
        part.unlink(missing_ok=True)
        raise ConnectionError(
            f"could not download {url} ({err}). If this machine is offline, download the file on a machine with "
            f"internet (see {CC3M_DOWNLOAD_PAGE}) and copy it to {dest}") from err
    part.replace(dest)
    return dest


def download_cc3m(tsv_path: str | Path, output_dir: str | Path, **options: Any) -> DownloadSummary:
    """Download the pairs of a CC3M-format TSV into webdataset shards; returns the summary.

    ``options`` are the fields of :class:`DownloadOptions` (``image_size=256``, ``resize_mode="keep_ratio"``,
    ``processes_count``, ``thread_count``, ``timeout``, ``retries``, ``max_rows``, ...) plus any other
    ``img2dataset.download`` argument. Resumable: rerun the same call after an interruption. Writes
    ``output_dir/sizes.json`` after the download (see :func:`read_download_stats` for the numbers).

    img2dataset exits normally even after giving up on a shard (its shard retrier only prints), so the
    processed rows are compared with the input rows: a shortfall is marked in ``sizes.json`` (``complete:
    false``, ``missing_rows``, ``missing_shards``), printed in plain words with how to resume
    (:meth:`DownloadSummary.incompleteness`), and training refuses such a manifest unless
    ``data.allow_partial`` (:func:`otterlib.data.loader.require_complete`).
    """
    opts = DownloadOptions.from_kwargs(**options)
    tsv = Path(tsv_path)
    if not tsv.is_file():
        raise FileNotFoundError(f"no TSV at {tsv}: fetch the official one with fetch_cc3m_tsv({str(tsv)!r})")
    out = Path(output_dir)
    if opts.incremental_mode == "overwrite" and out.exists():
        shutil.rmtree(out)
    source_dir = out / SOURCE_DIR
    source_dir.mkdir(parents=True, exist_ok=True)

    rows = read_cc3m_tsv(tsv, opts.max_rows)
    request = {"tsv_path": str(tsv.resolve()), "sha256": _sha256(tsv), "n_rows": len(rows), "layout": opts.layout()}
    request_path = source_dir / "request.json"
    if request_path.is_file():
        previous = json.loads(request_path.read_text(encoding="utf-8"))
        changed = [k for k in ("sha256", "n_rows", "layout") if previous.get(k) != request[k]]
        if changed:
            raise ValueError(f"{out} holds a download of another TSV or with other options (differs in {changed}); "
                             "use a new output_dir or incremental_mode='overwrite'")
    if opts.preflight:
        per_image = EXPECTED_BYTES_PER_IMAGE * (opts.image_size / 256) ** 2
        preflight(out, len(rows), per_image, force=opts.force, verbose=opts.verbose)

    urls_path = source_dir / "urls.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), urls_path)
    request_path.write_text(json.dumps(request, indent=2), encoding="utf-8")
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # img2dataset would parse it as a shard's stats file

    run_img2dataset(opts.img2dataset_kwargs(urls_path, out), source_dir / "download.log", opts.verbose)

    summary = read_download_stats(out)
    write_manifest(summary, source={k: request[k] for k in ("tsv_path", "sha256", "n_rows")},
                    options={**asdict(opts)}, img2dataset_version=importlib.metadata.version("img2dataset"))
    if not summary.complete:
        print(f"[download_cc3m] {out}: {summary.incompleteness()}")
    return summary


def pair_tables(train_tsv: str | Path, val_tsv: str | Path, max_train_rows: int | None = None) -> PairTables:
    """``Train_GCC-training.tsv`` and ``Validation_GCC-1.1.0-Validation.tsv`` -> :class:`PairTables`."""
    train = read_cc3m_tsv(train_tsv, max_train_rows)
    val = read_cc3m_tsv(val_tsv)
    return PairTables(train, val, {"train rows": len(train), "val rows": len(val)})
