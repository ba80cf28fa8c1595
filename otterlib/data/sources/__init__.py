"""The paper's three training sources and what each one's official metadata turns into.

Every source ends as the same two tables that img2dataset reads, one row per image-text pair with the
columns ``caption`` and ``url``: ``train`` and a held-out ``val`` split for checkpoint selection
(:class:`PairTables`). Parsing is per source, one module each:

========  ===========================================  ==============================================
source    official metadata                            held-out validation split
========  ===========================================  ==============================================
cc3m      Google's headerless ``caption<TAB>url`` TSVs  Google's validation TSV (15,840 rows)
          (:mod:`.cc3m`)
yfcc15m   OpenAI's YFCC100M subset list joined with     1 in 1,000 photo ids (SHA-1 rule, :mod:`.yfcc15m`)
          the YFCC100M metadata (:mod:`.yfcc15m`)
wit       WIT's 17-column TSVs, English rows            WIT's official validation TSVs, English rows
          (:mod:`.wit`)
========  ===========================================  ==============================================

This package only declares the sources (:data:`SOURCES`); importing it loads no parser (nor pandas).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

PAIR_COLUMNS: tuple[str, str] = ("caption", "url")
"""The columns of every pair table (what img2dataset's ``caption_col`` / ``url_col`` name)."""


@dataclass(frozen=True)
class TrainingSource:
    """What is known, before any download, about one training source."""

    name: str
    title: str
    train_rows: int | None
    """Rows of the training split as documented by the source's publishers: an upper bound of the samples
    a download yields (dead links drop some). None where no official number exists."""
    download_rows: int | None
    """Rows of both splits together (what the download fetches; the disk plan), likewise."""
    basis: str
    """Where the row counts come from."""


SOURCES: dict[str, TrainingSource] = {s.name: s for s in (
    TrainingSource(
        "cc3m", "Conceptual Captions 3M", 3_318_333, 3_318_333 + 15_840,
        "Google's Train_GCC-training.tsv / Validation_GCC-1.1.0-Validation.tsv row counts; the OTTER README "
        "reports 2,911,810 valid training pairs"),
    TrainingSource(
        "yfcc15m", "YFCC15M (the YFCC100M subset CLIP used)", 14_829_396, 14_829_396,
        "openai/CLIP data/yfcc100m.md: 14,829,396 images with English titles and/or descriptions; the "
        "held-out split (1 photo id in 1,000) is carved out of them"),
    TrainingSource(
        "wit", "Wikipedia-based Image Text (WIT), English rows", None, None,
        "google-research-datasets/wit DATA.md documents 37.13M training rows (261.8K validation) over 108 "
        "languages, not the English share: the English rows are counted when the TSVs are parsed"),
)}
"""The sources a setting may name (``settings[i].source``)."""


def training_source(name: str) -> TrainingSource:
    """The source called ``name``; an unknown name is a ValueError listing the valid ones."""
    if name not in SOURCES:
        raise ValueError(f"unknown training source {name!r}; valid: {sorted(SOURCES)}")
    return SOURCES[name]


@dataclass
class PairTables:
    """A source's parsed metadata: the pairs img2dataset downloads, per split, and how they were counted."""

    train: pd.DataFrame
    """Columns :data:`PAIR_COLUMNS` (str)."""
    val: pd.DataFrame
    """Columns :data:`PAIR_COLUMNS` (str): the held-out split for checkpoint selection."""
    counts: dict[str, int] = field(default_factory=dict)
    """Named row counts of the parse (rows read, kept, dropped by each rule): the subset size it ends with."""
