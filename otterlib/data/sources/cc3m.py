"""CC3M's official metadata -> pair tables: Google's two headerless ``caption<TAB>url`` TSVs.

The parsing rule is :func:`otterlib.data.cc3m.read_cc3m_tsv`'s (URL after the last TAB, caption
verbatim). The held-out split is Google's validation file (15,840 rows); the training split is the
training file (3,318,333 rows), optionally only its first ``max_train_rows``.
"""
from __future__ import annotations

from pathlib import Path

from otterlib.data.cc3m import read_cc3m_tsv
from otterlib.data.sources import PairTables


def pair_tables(train_tsv: str | Path, val_tsv: str | Path, max_train_rows: int | None = None) -> PairTables:
    """``Train_GCC-training.tsv`` and ``Validation_GCC-1.1.0-Validation.tsv`` -> :class:`PairTables`."""
    train = read_cc3m_tsv(train_tsv, max_train_rows)
    val = read_cc3m_tsv(val_tsv)
    return PairTables(train, val, {"train rows": len(train), "val rows": len(val)})
