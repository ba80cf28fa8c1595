"""Stage 01: every training source's pairs as webdataset shards (training and held-out splits), via img2dataset.

For each source the (selected) settings train on, ``data.sources.<name>`` says where it lives and how its pairs
are obtained (:class:`otterlib.config.SourceData`): ``official`` metadata is parsed into (caption, url) tables
(:mod:`otterlib.data.sources`) and downloaded (:func:`otterlib.data.download.download_pairs`); the
``synthetic`` world's pairs are written as CC3M TSVs served on a loopback HTTP server and then take the same
path; ``webdataset`` training tars are indexed. Each split's folder gets its ``sizes.json``.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from otterlib import layout
from otterlib.config import Profile, SourceData

if TYPE_CHECKING:
    import pandas as pd

    from otterlib.data.manifest import DownloadSummary
    from otterlib.data.sources import PairTables

SPLITS: tuple[str, str] = ("train", "val")


def prepare_training_data(profile: Profile, force: bool = False,
                          settings: list[str] | None = None) -> dict[str, dict[str, DownloadSummary]]:
    """Shards with ``sizes.json`` for every source that ``settings`` (None: all the profile's) train on;
    returns ``{source: {split: DownloadSummary}}``. ``force`` downloads again from scratch (never deleting a
    ``webdataset`` source's own training tars); otherwise an interrupted or incomplete download resumes."""
    return {name: prepare_source(profile, name, force) for name in profile.used_sources(settings)}


def prepare_source(profile: Profile, name: str, force: bool = False) -> dict[str, DownloadSummary]:
    """One source's training and held-out shards (see :func:`prepare_training_data`)."""
    from otterlib.data.sources.from_profile import metadata_files, read_pairs

    data = profile.data.source(name)
    if force:
        for split in SPLITS:
            if not (data.origin == "webdataset" and split == "train"):
                shutil.rmtree(layout.shard_dir(data, split), ignore_errors=True)
    if data.origin == "synthetic":
        return _synthetic(profile, name, data)
    files = metadata_files(name, data)
    tables = read_pairs(name, data, files, profile.data.max_train_samples)
    return {split: _split_shards(profile, name, data, split, tables, files) for split in SPLITS}


def _split_shards(profile: Profile, name: str, data: SourceData, split: str, tables: PairTables,
                  files: dict[str, Any]) -> DownloadSummary:
    """One split: index the training tars of a ``webdataset`` source, else download the split's pairs."""
    from otterlib.data.download import download_pairs
    from otterlib.data.manifest import index_existing_shards

    out = layout.shard_dir(data, split)
    if data.origin == "webdataset" and split == "train":
        return index_existing_shards(out)
    source = {"source": name, "split": split, "origin": data.origin,
              "files": {role: [str(p) for p in paths] for role, paths in files.items()}, "parse counts": tables.counts}
    return download_pairs(getattr(tables, split), out, source=source, label=f"{name}/{split}",
                          **_download_options(profile))


def _synthetic(profile: Profile, name: str, data: SourceData) -> dict[str, DownloadSummary]:
    """The synthetic world's pairs: rendered, served on a loopback server, written as CC3M TSVs, downloaded.

    A split whose download is complete is kept; any other is started over, because its TSV named the previous
    server's port (the URLs changed).
    """
    from otterlib.data.download import read_download_stats
    from otterlib.data.loopback import LoopbackImageServer
    from otterlib.data.manifest import load_manifest
    from otterlib.data.sources import cc3m
    from otterlib.data.sources.from_profile import metadata_files, read_pairs
    from otterlib.data.synthetic import make_synthetic_cc3m, write_cc3m_tsv

    root = layout.source_root(data)
    made = make_synthetic_cc3m(root, profile.data.synthetic)
    summaries = {}
    with LoopbackImageServer(made["www"]) as server:
        for split, tsv_name in (("train", cc3m.TRAIN_FILE), ("val", cc3m.VAL_FILE)):
            write_cc3m_tsv(made[split], server.url, split, root / tsv_name, seed=profile.data.synthetic.seed)
        files = metadata_files(name, data)
        tables = read_pairs(name, data, files, profile.data.max_train_samples)
        for split in SPLITS:
            out, manifest = layout.shard_dir(data, split), layout.manifest_path(data, split)
            if manifest.is_file() and load_manifest(manifest).complete:
                summaries[split] = read_download_stats(out)
                continue
            shutil.rmtree(out, ignore_errors=True)
            summaries[split] = _split_shards(profile, name, data, split, tables, files)
    return summaries


def _download_options(profile: Profile) -> dict[str, Any]:
    """The profile's img2dataset options (``None`` fields left to :class:`otterlib.data.download.DownloadOptions`)."""
    return {k: v for k, v in asdict(profile.data.download).items() if v is not None}


# --------------------------------------------------------------------------------------------------
# What 01 shows


def download_table(summaries: dict[str, dict[str, DownloadSummary]]) -> pd.DataFrame:
    """One row per (source, split): rows in, rows processed, samples stored, success rate, shards, missing rows
    and shards, and the state in plain words (with how to resume when incomplete)."""
    import pandas as pd

    rows = []
    for name, splits in summaries.items():
        for split, s in splits.items():
            rows.append({"source": name, "split": split, "rows in": s.n_input_rows, "rows processed": s.n_rows,
                         "stored": s.successes, "success rate": round(s.success_rate, 4), "shards": len(s.shard_paths),
                         "missing rows": s.n_input_rows - s.n_rows, "missing shards": len(s.missing_shards),
                         "state": s.incompleteness() or f"complete: all {s.n_input_rows:,} rows processed"})
    return pd.DataFrame(rows).set_index(["source", "split"])


def failure_table(summaries: dict[str, dict[str, DownloadSummary]]) -> pd.DataFrame:
    """The failure histogram of every (source, split): ``status``, ``count`` (rows), ``fraction`` (of the split's
    processed rows) and one raw ``example`` message, most frequent first."""
    import pandas as pd

    from otterlib.data.failures import failure_histogram

    columns = ["source", "split", "status", "count", "fraction", "example"]
    rows = [{"source": name, "split": split, **row} for name, splits in summaries.items()
            for split, s in splits.items() for row in failure_histogram(s).to_dict("records")]
    return pd.DataFrame(rows, columns=columns).set_index(["source", "split", "status"])


def metadata_counts(summaries: dict[str, dict[str, DownloadSummary]]) -> pd.DataFrame:
    """How each source's metadata was reduced to its pairs (rows read, dropped by each rule, kept), as recorded
    in its ``sizes.json``: the subset sizes the downloads started from."""
    import pandas as pd

    rows = []
    for name, splits in summaries.items():
        for s in splits.values():
            counts = json.loads(s.manifest_path.read_text(encoding="utf-8")).get("source", {}).get("parse counts")
            if counts:
                rows += [{"source": name, "count": key, "rows": n} for key, n in counts.items()]
                break
    return pd.DataFrame(rows, columns=["source", "count", "rows"]).set_index(["source", "count"])
