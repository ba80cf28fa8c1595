"""Reading the sources' metadata files: compressed or not, and captions kept on one line."""
from __future__ import annotations

import bz2
import gzip
from pathlib import Path
from typing import IO


def open_text(path: str | Path) -> IO[str]:
    """``path`` opened for reading UTF-8 text line by line, decompressing ``.gz`` and ``.bz2`` (the
    publishers' formats). Lines end at ``\\n`` only and keep it. A missing file is a FileNotFoundError
    naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metadata file at {path}")
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8", newline="\n")


def one_line(text: str) -> str:
    """Every run of whitespace (tabs and line breaks included) as one space, ends stripped: the caption a
    tokenizer sees is unchanged, and the pair tables stay one line per pair."""
    return " ".join(text.split())
