"""YFCC15M, the YFCC100M subset that CLIP used, joined with the YFCC100M metadata -> pair tables.

Inputs, both from their publishers, tab-separated without quoting (``.bz2`` / ``.gz`` are read as they are):

* ``yfcc100m_subset_data.tsv`` (openai/CLIP ``data/yfcc100m.md``): 14,829,396 rows of
  ``line number<TAB>photo identifier<TAB>photo hash``, "the first three columns in the dataset's metadata
  TSV file". A first row of column names is skipped.
* ``yfcc100m_dataset`` (Yahoo Webscope, hosted in the multimedia-commons bucket as ``yfcc100m_dataset.bz2``):
  100M rows without a header, the 25 columns of :data:`METADATA_COLUMNS`. Title and description are
  URL-encoded with ``+`` for spaces.

Join: a metadata row belongs to the subset when its photo id is listed, and its line number must be the
listed one (a metadata file from another release would be misaligned: ValueError).

Caption: the official ``data/yfcc.py`` rule, ``yfcc_clean(title) + ". " + yfcc_clean(description)``, where
a field is URL-decoded (``+`` is a space) and stripped of HTML tags; here HTML entities are also decoded
and whitespace is collapsed to one space. Two deviations, both where the official rule yields junk: an
empty title or description is left out (the official code gives ``". description"`` or ``"title. "``),
and an encoded plus (``%2B``) stays ``+`` (the official code decodes it, then turns it into a space).

Dropped, each counted in :attr:`PairTables.counts`: listed photos absent from the metadata, videos
(marker 1), rows whose caption is empty, rows without a download URL.

Held-out split (YFCC has no official one): the photos whose id falls in the first ``val_per_mille`` of
1,000 SHA-1 buckets (:func:`held_out`), 0.1 % by default (~14.8k pairs, the size of CC3M's validation
set). The rule depends on the photo id only, so it is the same on every machine and every rerun.
"""
from __future__ import annotations

import hashlib
import html
import itertools
import re
from array import array
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote_plus

import numpy as np
import pandas as pd

from otterlib.data.sources import PAIR_COLUMNS, PairTables
from otterlib.data.sources.textio import one_line, open_text

SUBSET_ROWS: int = 14_829_396
"""Rows of OpenAI's subset list (openai/CLIP ``data/yfcc100m.md``)."""
SUBSET_FILE: str = "yfcc100m_subset_data.tsv.bz2"
SUBSET_URL: str = "https://openaipublic.azureedge.net/clip/data/yfcc100m_subset_data.tsv.bz2"
SUBSET_PAGE: str = "https://github.com/openai/CLIP/blob/main/data/yfcc100m.md"
METADATA_FILE: str = "yfcc100m_dataset"
"""The metadata's default name. Yahoo Webscope's parts ``yfcc100m_dataset-0.bz2`` .. ``-9.bz2`` concatenated
(``cat yfcc100m_dataset-?.bz2 > yfcc100m_dataset.bz2``: bz2 streams chain) read the same."""
METADATA_PAGE: str = "https://multimediacommons.wordpress.com/yfcc100m-core-dataset/"

METADATA_COLUMNS: tuple[str, ...] = (
    "line_number", "photo_id", "photo_hash", "user_nsid", "user_nickname", "date_taken", "date_uploaded",
    "capture_device", "title", "description", "user_tags", "machine_tags", "longitude", "latitude", "accuracy",
    "page_url", "download_url", "license_name", "license_url", "server_id", "farm_id", "secret",
    "secret_original", "extension_original", "marker",
)
"""The columns of ``yfcc100m_dataset``, in file order (``marker``: 0 photo, 1 video)."""

_LINE, _ID, _TITLE, _DESCRIPTION, _URL, _MARKER = (METADATA_COLUMNS.index(c) for c in (
    "line_number", "photo_id", "title", "description", "download_url", "marker"))
_TAG = re.compile(r"<[^>]*>")
_CHUNK_LINES = 200_000


def clean_field(text: str) -> str:
    """A URL-encoded YFCC title or description as plain one-line text (see the module docstring)."""
    return one_line(html.unescape(_TAG.sub("", unquote_plus(text))))


def caption(title: str, description: str) -> str:
    """``title + ". " + description``, both cleaned, an empty one left out ("" when both are empty)."""
    return ". ".join(part for part in (clean_field(title), clean_field(description)) if part)


def held_out(photo_id: int, val_per_mille: int = 1) -> bool:
    """True for the photos of the held-out split: the first 8 bytes of SHA-1(decimal id), mod 1,000, are
    below ``val_per_mille``."""
    digest = hashlib.sha1(str(photo_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 1000 < val_per_mille


def read_subset(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """OpenAI's subset list -> (photo ids ascending, their metadata line numbers), int64 arrays of equal length.

    A photo listed twice, or a row that is not ``line number<TAB>photo id<TAB>...``, is a ValueError
    naming the line.
    """
    ids, lines = array("q"), array("q")
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if fields == [""]:
                continue
            if len(fields) < 2 or not (fields[0].isdigit() and fields[1].isdigit()):
                if lineno == 1:
                    continue  # the column names
                raise ValueError(f"{path}:{lineno}: expected 'line number<TAB>photo id<TAB>photo hash' (OpenAI's "
                                 f"yfcc100m_subset_data.tsv), got {line[:120]!r}")
            lines.append(int(fields[0]))
            ids.append(int(fields[1]))
    if not ids:
        raise ValueError(f"{path} lists no photos")
    photo_ids, line_numbers = np.frombuffer(ids, dtype=np.int64), np.frombuffer(lines, dtype=np.int64)
    order = np.argsort(photo_ids, kind="stable")
    photo_ids, line_numbers = photo_ids[order], line_numbers[order]
    repeated = photo_ids[1:][photo_ids[1:] == photo_ids[:-1]]
    if repeated.size:
        raise ValueError(f"{path} lists {repeated.size} photo id(s) twice, e.g. {int(repeated[0])}")
    return photo_ids, line_numbers


def listed_rows(metadata_path: str | Path, photo_ids: np.ndarray, line_numbers: np.ndarray
                ) -> Iterator[tuple[int, list[str]]]:
    """The metadata rows of the listed photos, in file order, as (index into ``photo_ids``, 25 fields).

    Only the first two fields of every line are parsed until a photo id matches (the file has 100M rows).
    A line that is not 25 tab-separated fields, or whose line number disagrees with the list, is a
    ValueError naming the line.
    """
    with open_text(metadata_path) as f:
        for start in itertools.count(0, _CHUNK_LINES):
            chunk = list(itertools.islice(f, _CHUNK_LINES))
            if not chunk:
                return
            ids = np.array([_photo_id(line, metadata_path, start + i + 1) for i, line in enumerate(chunk)],
                           dtype=np.int64)
            pos = np.minimum(np.searchsorted(photo_ids, ids), len(photo_ids) - 1)
            for i in np.flatnonzero(photo_ids[pos] == ids):
                fields = chunk[i].rstrip("\r\n").split("\t")
                where = f"{metadata_path}:{start + i + 1}"
                if len(fields) != len(METADATA_COLUMNS):
                    raise ValueError(f"{where}: {len(fields)} fields, the YFCC100M metadata has "
                                     f"{len(METADATA_COLUMNS)} ({', '.join(METADATA_COLUMNS[:3])}, ...)")
                if int(fields[_LINE]) != line_numbers[pos[i]]:
                    raise ValueError(f"{where}: photo {fields[_ID]} is line {fields[_LINE]} here but line "
                                     f"{line_numbers[pos[i]]} in the subset list: another release of the metadata?")
                yield int(pos[i]), fields


def _photo_id(line: str, path: str | Path, lineno: int) -> int:
    head = line.split("\t", 2)
    if len(head) < 3 or not head[1].isdigit():
        raise ValueError(f"{path}:{lineno}: expected 'line number<TAB>photo id<TAB>...' (the YFCC100M metadata, "
                         f"{len(METADATA_COLUMNS)} columns), got {line[:120]!r}")
    return int(head[1])


def pair_tables(subset_path: str | Path, metadata_path: str | Path, val_per_mille: int = 1) -> PairTables:
    """OpenAI's subset list + the YFCC100M metadata -> :class:`PairTables` (``val``: the held-out photos).

    Memory: the list as two int64 arrays (~240 MB for 14.8M photos) plus the kept pairs as Python strings.
    """
    if not 1 <= val_per_mille < 1000:
        raise ValueError(f"val_per_mille must be in [1, 999], got {val_per_mille}")
    photo_ids, line_numbers = read_subset(subset_path)
    seen = np.zeros(len(photo_ids), dtype=bool)
    columns: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "val": ([], [])}
    dropped = {"video": 0, "empty caption": 0, "no download URL": 0}
    for index, fields in listed_rows(metadata_path, photo_ids, line_numbers):
        if seen[index]:
            raise ValueError(f"{metadata_path}: photo {fields[_ID]} appears twice")
        seen[index] = True
        text, url = caption(fields[_TITLE], fields[_DESCRIPTION]), fields[_URL].strip()
        reason = "video" if fields[_MARKER] != "0" else "empty caption" if not text else \
            "no download URL" if not url else None
        if reason:
            dropped[reason] += 1
            continue
        captions, urls = columns["val" if held_out(int(fields[_ID]), val_per_mille) else "train"]
        captions.append(text)
        urls.append(url)
    tables = {split: pd.DataFrame(dict(zip(PAIR_COLUMNS, cols)), dtype=str) for split, cols in columns.items()}
    counts = {"listed in the subset": len(photo_ids), "dropped: absent from the metadata": int((~seen).sum()),
              **{f"dropped: {reason}": n for reason, n in dropped.items()},
              "train pairs": len(tables["train"]), "val pairs": len(tables["val"])}
    return PairTables(tables["train"], tables["val"], counts)
