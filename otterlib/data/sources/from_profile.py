"""A profile's ``data.sources.<name>`` -> that source's metadata files on disk -> its pair tables.

A file the profile leaves unnamed (None) is the publisher's file under the source's ``root``; when it is
absent it is fetched from the publisher if the publisher serves it (CC3M's two TSVs, OpenAI's YFCC100M subset
list, WIT's 15 TSVs), otherwise (the YFCC100M metadata) the error says where to get it. A file the profile
names (relative to ``root`` unless absolute) must exist.
"""
from __future__ import annotations

from pathlib import Path

from otterlib.config import Cc3mData, SourceData, WitData, Yfcc15mData
from otterlib.data.sources import PairTables, cc3m, wit, yfcc15m
from otterlib.data.sources.fetch import fetch_file
from otterlib.env import REPO_ROOT

Files = dict[str, list[Path]]
"""Metadata files by role (``train``, ``val``, ``subset``, ``metadata``), each a list of paths."""


def metadata_files(name: str, data: SourceData) -> Files:
    """The metadata files of source ``name`` configured by ``data``, fetched where absent and possible."""
    root = Path(data.root).expanduser()
    root = root if root.is_absolute() else REPO_ROOT / root
    key = f"data.sources.{name}"
    if isinstance(data, Cc3mData):
        return {"train": [_file(root, data.train_tsv, cc3m.TRAIN_FILE, cc3m.OFFICIAL_TRAIN_URL, cc3m.CC3M_DOWNLOAD_PAGE,
                                f"{key}.train_tsv")],
                "val": [_file(root, data.val_tsv, cc3m.VAL_FILE, cc3m.OFFICIAL_VALIDATION_URL, cc3m.CC3M_DOWNLOAD_PAGE,
                              f"{key}.val_tsv")]}
    if isinstance(data, Yfcc15mData):
        return {"subset": [_file(root, data.subset_list, yfcc15m.SUBSET_FILE, yfcc15m.SUBSET_URL, yfcc15m.SUBSET_PAGE,
                                 f"{key}.subset_list")],
                "metadata": [_file(root, data.metadata, yfcc15m.METADATA_FILE, None, yfcc15m.METADATA_PAGE,
                                   f"{key}.metadata")]}
    if isinstance(data, WitData):
        return {split: [_file(root, given, official, wit.URL_BASE + official, wit.DOWNLOAD_PAGE, f"{key}.{split}_files")
                        for given, official in _wit_names(names, defaults)]
                for split, names, defaults in (("train", data.train_files, wit.TRAIN_FILES),
                                               ("val", data.val_files, wit.VAL_FILES))}
    raise TypeError(f"{key}: no metadata reader for {type(data).__name__}")


def _wit_names(given: list[str] | None, official: tuple[str, ...]) -> list[tuple[str | None, str]]:
    """(name given in the profile or None, the publisher's name it stands for) per file."""
    if given is None:
        return [(None, name) for name in official]
    return [(name, Path(name).name) for name in given]


def read_pairs(name: str, data: SourceData, files: Files, max_train_rows: int | None = None) -> PairTables:
    """Parse the metadata ``files`` of source ``name`` into its pair tables; the training table keeps its first
    ``max_train_rows`` pairs (None: all)."""
    if isinstance(data, Cc3mData):
        return cc3m.pair_tables(files["train"][0], files["val"][0], max_train_rows)
    if isinstance(data, Yfcc15mData):
        tables = yfcc15m.pair_tables(files["subset"][0], files["metadata"][0], data.val_per_mille)
    elif isinstance(data, WitData):
        tables = wit.pair_tables(files["train"], files["val"])
    else:
        raise TypeError(f"data.sources.{name}: no metadata reader for {type(data).__name__}")
    if max_train_rows is not None and max_train_rows < len(tables.train):
        tables.train = tables.train.head(max_train_rows)
        tables.counts["train pairs kept (data.max_train_samples)"] = max_train_rows
    return tables


def _file(root: Path, given: str | None, official: str, url: str | None, page: str, key: str) -> Path:
    """One metadata file (see the module docstring)."""
    if given is not None:
        path = Path(given).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise FileNotFoundError(f"{key} names {path}, which does not exist (the publisher's file {official!r}: "
                                    f"{page})")
        return path
    path = root / official
    if path.is_file():
        return path
    if url is None:
        raise FileNotFoundError(f"{path} is missing: {official} has no public download; get it as {page} says and "
                                f"put it there, or name its path in {key}")
    return fetch_file(path, url, page)
