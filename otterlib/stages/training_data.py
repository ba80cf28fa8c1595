"""Stage 01: the training pairs (CC3M via img2dataset, or the synthetic pairs over loopback)."""
from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from otterlib import layout
from otterlib.config import Profile


def _download_options(profile: Profile) -> dict[str, Any]:
    """The profile's img2dataset options (``None`` fields left to :func:`otterlib.data.sources.cc3m.download_cc3m`)."""
    return {k: v for k, v in asdict(profile.data.download).items() if v is not None}


def prepare_training_data(profile: Profile, force: bool = False) -> dict[str, Any]:
    """Download (or index) the training and validation pairs into webdataset shards with ``sizes.json``.

    ``synthetic``: render the shapes, serve them on a loopback HTTP server, write CC3M-format TSVs and run
    the real img2dataset path. ``cc3m``: the official TSVs (fetched when absent). ``webdataset``: index an
    existing folder of tars. Returns ``{split: DownloadSummary}``.
    """
    from otterlib.data.download import read_download_stats
    from otterlib.data.manifest import index_existing_shards, load_manifest
    from otterlib.data.sources import cc3m

    data = profile.data
    root = layout.data_root(data)
    if force:
        for split in ("train", "val"):
            if not (data.source == "webdataset" and split == "train"):  # never delete a user's own shards
                shutil.rmtree(layout.shard_dir(data, split), ignore_errors=True)
    options = _download_options(profile)
    if data.source == "synthetic":
        from otterlib.data.loopback import LoopbackImageServer
        from otterlib.data.synthetic import make_synthetic_cc3m, write_cc3m_tsv

        made = make_synthetic_cc3m(root, data.synthetic)
        summaries = {}
        with LoopbackImageServer(made["www"]) as server:
            for split, tsv_name in (("train", "Train_GCC-training.tsv"), ("val", "Validation_GCC-1.1.0-Validation.tsv")):
                out = layout.shard_dir(data, split)
                manifest = layout.manifest_path(data, split)
                if manifest.is_file() and load_manifest(manifest).complete:  # reuse (force removed it above)
                    summaries[split] = read_download_stats(out)
                    continue
                # An unfinished or incomplete download's TSV named the previous server's port: the URLs changed,
                # start over.
                shutil.rmtree(out, ignore_errors=True)
                tsv = root / tsv_name
                write_cc3m_tsv(made[split], server.url, split, tsv, seed=data.synthetic.seed)
                summaries[split] = cc3m.download_cc3m(tsv, out, **options)
        return summaries
    if data.source == "cc3m":
        summaries = {}
        for split, given, name, url in (
                ("train", data.train_tsv, "Train_GCC-training.tsv", cc3m.OFFICIAL_TRAIN_URL),
                ("val", data.val_tsv, "Validation_GCC-1.1.0-Validation.tsv", cc3m.OFFICIAL_VALIDATION_URL)):
            tsv = Path(given) if given else root / name
            if not tsv.is_file():
                cc3m.fetch_cc3m_tsv(tsv, url=url)
            max_rows = data.max_train_samples if split == "train" else None  # download_cc3m runs the preflight
            summaries[split] = cc3m.download_cc3m(tsv, layout.shard_dir(data, split), max_rows=max_rows, **options)
        return summaries
    if data.source == "webdataset":
        summaries = {"train": index_existing_shards(layout.shard_dir(data, "train"))}
        val_tsv = Path(data.val_tsv) if data.val_tsv else root / "Validation_GCC-1.1.0-Validation.tsv"
        if not val_tsv.is_file():
            cc3m.fetch_cc3m_tsv(val_tsv, url=cc3m.OFFICIAL_VALIDATION_URL)
        summaries["val"] = cc3m.download_cc3m(val_tsv, layout.shard_dir(data, "val"), **options)
        return summaries
    raise ValueError(f"data.source must be synthetic, cc3m or webdataset, got {data.source!r}")
