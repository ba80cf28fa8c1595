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
from pathlib import Path
from typing import Any

import pandas as pd

from otterlib.data.download import download_pairs
from otterlib.data.manifest import DownloadSummary
from otterlib.data.sources import PairTables
from otterlib.data.sources.fetch import fetch_file

OFFICIAL_TRAIN_URL: str = "https://storage.googleapis.com/gcc-data/Train/GCC-training.tsv"
"""Google's download of ``Train_GCC-training.tsv`` (linked from the Conceptual Captions download page)."""
OFFICIAL_VALIDATION_URL: str = "https://storage.googleapis.com/gcc-data/Validation/GCC-1.1.0-Validation.tsv"
"""Google's download of ``Validation_GCC-1.1.0-Validation.tsv``."""
CC3M_DOWNLOAD_PAGE: str = "https://ai.google.com/research/ConceptualCaptions/download"
TRAIN_FILE: str = "Train_GCC-training.tsv"
"""Google's name of the training TSV (as the download page gives it)."""
VAL_FILE: str = "Validation_GCC-1.1.0-Validation.tsv"


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
    """Download Google's TSV to ``dest`` unless a non-empty file is already there; returns ``dest``.

    Use ``url=OFFICIAL_VALIDATION_URL`` for the validation split. Offline (or if Google's URL moved) this
    raises :class:`ConnectionError` saying where to get the file by hand.
    """
    return fetch_file(dest, url, CC3M_DOWNLOAD_PAGE, timeout)


def download_cc3m(tsv_path: str | Path, output_dir: str | Path, **options: Any) -> DownloadSummary:
    """Download the pairs of a CC3M-format TSV into webdataset shards with ``sizes.json``; returns the summary.

    ``options`` are :func:`otterlib.data.download.download_pairs`'s (``max_rows`` reads only the first rows of
    the TSV). The manifest records the TSV's path and SHA-256.
    """
    tsv = Path(tsv_path)
    if not tsv.is_file():
        raise FileNotFoundError(f"no TSV at {tsv}: fetch the official one with fetch_cc3m_tsv({str(tsv)!r})")
    rows = read_cc3m_tsv(tsv, options.get("max_rows"))
    return download_pairs(rows, output_dir, source={"tsv_path": str(tsv.resolve()), "sha256": _sha256(tsv)},
                          **options)


def pair_tables(train_tsv: str | Path, val_tsv: str | Path, max_train_rows: int | None = None) -> PairTables:
    """``Train_GCC-training.tsv`` and ``Validation_GCC-1.1.0-Validation.tsv`` -> :class:`PairTables`."""
    train = read_cc3m_tsv(train_tsv, max_train_rows)
    val = read_cc3m_tsv(val_tsv)
    return PairTables(train, val, {"train rows": len(train), "val rows": len(val)})
