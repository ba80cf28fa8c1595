"""WIT's official TSVs -> pair tables: English rows, the reference description (else the attribution
description) as the caption.

Input (google-research-datasets/wit ``DATA.md``): the training set ``wit_v1.train.all-0000N-of-00010.tsv.gz``
(10 files, 37.13M rows over 108 languages) and the validation set ``wit_v1.val.all-0000N-of-00005.tsv.gz``
(5 files, 261.8K rows). Each is a gzipped TSV whose header row names the 17 columns of :data:`COLUMNS`;
fields holding tabs, line breaks or quotes are quoted with ``"`` (how the Hugging Face loader reads them:
``csv.DictReader(f, delimiter="\\t")``). An empty field is a missing value.

Rules, in this order; every dropped row is counted in :attr:`PairTables.counts`:

1. English rows: ``language == "en"``.
2. Images that PIL decodes: ``mime_type`` in :data:`IMAGE_MIME_TYPES` (WIT also lists SVG, TIFF, ...).
3. Caption: ``caption_reference_description`` (the caption under the image on the English page) when it is
   not empty, else ``caption_attribution_description`` (the Wikimedia Commons file description) without
   its leading ``English:`` language label; whitespace collapsed. Rows with neither are dropped; the alt
   text is not used.
4. A (caption, url) pair repeated within a split is kept once.

Subset size: ``DATA.md`` gives no per-language count, so the English subset is what :func:`pair_tables`
counts (its ``counts`` name the rows read, the rows each rule drops and the pairs kept). The held-out split
is WIT's own validation set under the same rules.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from otterlib.data.sources import PAIR_COLUMNS, PairTables
from otterlib.data.sources.textio import one_line

COLUMNS: tuple[str, ...] = (
    "language", "page_url", "image_url", "page_title", "section_title", "hierarchical_section_title",
    "caption_reference_description", "caption_attribution_description", "caption_alt_text_description",
    "mime_type", "original_height", "original_width", "is_main_image", "attribution_passes_lang_id",
    "page_changed_recently", "context_page_description", "context_section_description",
)
"""The 17 columns of a WIT TSV, in file order."""

URL_BASE: str = "https://storage.googleapis.com/gresearch/wit/"
"""Where Google serves the TSVs (``URL_BASE + file name``)."""
TRAIN_FILES: tuple[str, ...] = tuple(f"wit_v1.train.all-{i:05d}-of-00010.tsv.gz" for i in range(10))
VAL_FILES: tuple[str, ...] = tuple(f"wit_v1.val.all-{i:05d}-of-00005.tsv.gz" for i in range(5))
DOWNLOAD_PAGE: str = "https://github.com/google-research-datasets/wit/blob/main/DATA.md"

IMAGE_MIME_TYPES: frozenset[str] = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
"""Kept image types: those img2dataset (PIL) decodes."""

_USED = ("language", "image_url", "mime_type", "caption_reference_description", "caption_attribution_description")
_LANGUAGE_LABEL = re.compile(r"^\s*English\s*:\s*")
_CHUNK_ROWS = 500_000


def caption(reference: str, attribution: str) -> tuple[str, str]:
    """(caption, which description it came from: ``reference``, ``attribution`` or ``""`` when neither has text)."""
    text = one_line(reference)
    if text:
        return text, "reference"
    text = one_line(_LANGUAGE_LABEL.sub("", attribution))
    return (text, "attribution") if text else ("", "")


def read_wit(paths: Sequence[str | Path], split: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Official WIT TSVs -> (pairs with columns ``caption``, ``url``; counts prefixed with ``split``)."""
    if not paths:
        raise ValueError(f"no WIT {split} files given")
    counts = dict.fromkeys(("rows read", "dropped: not English", "dropped: not a decodable image type",
                            "dropped: no reference or attribution description", "captions from reference",
                            "captions from attribution", "dropped: repeated pair"), 0)
    frames = [pd.DataFrame({"caption": [], "url": []}, dtype=str)]
    for path in paths:
        for chunk in _chunks(Path(path)):
            counts["rows read"] += len(chunk)
            english = chunk[chunk["language"] == "en"]
            counts["dropped: not English"] += len(chunk) - len(english)
            images = english[english["mime_type"].isin(IMAGE_MIME_TYPES)]
            counts["dropped: not a decodable image type"] += len(english) - len(images)
            made = [caption(r, a) for r, a in zip(images["caption_reference_description"],
                                                  images["caption_attribution_description"])]
            which = pd.Series([w for _, w in made], index=images.index, dtype=str)
            counts["captions from reference"] += int((which == "reference").sum())
            counts["captions from attribution"] += int((which == "attribution").sum())
            counts["dropped: no reference or attribution description"] += int((which == "").sum())
            pairs = pd.DataFrame({"caption": [t for t, _ in made], "url": images["image_url"].str.strip()},
                                 index=images.index)
            frames.append(pairs[(which != "") & (pairs["url"] != "")])
    table = pd.concat(frames, ignore_index=True)[list(PAIR_COLUMNS)]
    unique = table.drop_duplicates(ignore_index=True)
    counts["dropped: repeated pair"] = len(table) - len(unique)
    counts["pairs"] = len(unique)
    return unique, {f"{split}: {name}": n for name, n in counts.items()}


def _chunks(path: Path):
    """The used columns of one TSV, as str DataFrames of up to ``_CHUNK_ROWS`` rows; a file without WIT's
    header, or with a malformed row, is a ValueError naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"no WIT file at {path}")
    header = pd.read_csv(path, sep="\t", nrows=0).columns
    missing = [c for c in _USED if c not in header]
    if missing:
        raise ValueError(f"{path} is not a WIT TSV: its header lacks {missing} (expected the 17 columns of "
                         f"google-research-datasets/wit DATA.md: {', '.join(COLUMNS[:4])}, ...)")
    try:
        yield from pd.read_csv(path, sep="\t", usecols=list(_USED), dtype=str, keep_default_na=False,
                               chunksize=_CHUNK_ROWS)
    except pd.errors.ParserError as err:
        raise ValueError(f"{path}: malformed WIT row ({err})") from err


def pair_tables(train_files: Sequence[str | Path], val_files: Sequence[str | Path]) -> PairTables:
    """WIT's training and validation TSVs -> :class:`PairTables` (English rows, see the module docstring)."""
    train, train_counts = read_wit(train_files, "train")
    val, val_counts = read_wit(val_files, "val")
    return PairTables(train, val, train_counts | val_counts)
