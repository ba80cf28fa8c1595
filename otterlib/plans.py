"""What a profile's grid will cost before anything runs: a compute plan per setting and a disk plan per source.

Shown by ``00_setup`` and by ``./run_all.sh --dry-run``.

Compute plan: samples per epoch (``sizes.json`` of downloaded shards when present, else the rows a started
download was asked for, else the source's documented row count as an upper bound, capped at
``data.max_train_samples``), full global batches per epoch
(drop_last) x epochs, and per method the GPU-hours the recorded throughput implies
(:mod:`otterlib.benchmarks`, matched on encoders, method, batch per GPU, image size and precision; one
estimate per GPU kind with a record, else ``unmeasured``). Assumption: every GPU trains at the recorded
per-GPU rate (no data-loading or communication cost), so the estimate is a lower bound.

Disk plan: rows a source's download fetches (both splits; on disk when known, as above) x
:data:`BYTES_PER_ROW_256` scaled by the image area, ``(data.download.image_size / 256)²``.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from otterlib import layout
from otterlib.benchmarks import BENCHMARKS_PATH, BenchmarkRecord, load_benchmarks
from otterlib.config import Profile, SettingConfig, TrainConfig, setting_train
from otterlib.data.manifest import load_manifest
from otterlib.data.preflight import EXPECTED_BYTES_PER_IMAGE
from otterlib.data.sources import training_source

BYTES_PER_ROW_256: int = EXPECTED_BYTES_PER_IMAGE
"""Disk per metadata row at 256 px (keep_ratio, JPEG q95; tar + json + parquet; failed rows included):
the figure the CC3M download's pre-flight check uses (full CC3M ≈ 60–80 GB). img2dataset's own CC12M
benchmark (``dataset_examples/cc12m.md``: 331 GB for 12M rows at 256 px) gives ≈ 28 kB per row."""


@dataclass(frozen=True)
class Samples:
    """Rows (or samples) of one split of a source, and where the number comes from."""

    count: int | None
    basis: str


def split_rows(profile: Profile, source: str, split: str) -> Samples | None:
    """What is known on disk about a source's split: the samples in its ``sizes.json`` (``measured``), else the
    rows its download was asked for (``_source/request.json``: the source's parsed and capped metadata, e.g.
    WIT's English pairs), else None."""
    from otterlib.data.download import requested_rows

    data = profile.data.source(source)
    manifest = layout.manifest_path(data, split)
    if manifest.is_file():
        loaded = load_manifest(manifest)
        return Samples(loaded.total, "measured (sizes.json)" if loaded.complete else
                       "measured, download incomplete (sizes.json)")
    requested = requested_rows(layout.shard_dir(data, split))
    return None if requested is None else Samples(requested, "<= parsed rows (_source/request.json)")


def planned_samples(profile: Profile, setting: SettingConfig) -> Samples:
    """Samples one epoch of ``setting`` sees (None when unknown before its metadata is parsed); the basis is
    ``measured``, ``unknown`` or ``<= <what bounds it>``."""
    known = split_rows(profile, setting.source, "train")
    if known is not None:
        return known
    data, cap = profile.data.source(setting.source), profile.data.max_train_samples
    if data.origin == "webdataset":
        return Samples(None, "unknown (index the shards)")
    if data.origin == "synthetic":
        return _capped(profile.data.synthetic.n_train, "<= synthetic pairs", cap)
    rows = training_source(setting.source).train_rows
    if rows is None:
        return Samples(cap, "<= data.max_train_samples") if cap else Samples(None, "unknown (see source notes)")
    return _capped(rows, "<= documented rows", cap)


def _capped(rows: int, basis: str, cap: int | None) -> Samples:
    if cap is not None and cap < rows:
        return Samples(cap, "<= data.max_train_samples")
    return Samples(rows, basis)


def planned_download_rows(profile: Profile, source: str) -> Samples:
    """Rows the download of ``source`` fetches (both splits): on disk when known, else the synthetic world's
    pairs or the documented rows (training part capped at ``data.max_train_samples``)."""
    known = [split_rows(profile, source, split) for split in ("train", "val")]
    if all(k is not None for k in known):
        return Samples(sum(k.count for k in known), " + ".join(dict.fromkeys(k.basis for k in known)))
    data, cap = profile.data.source(source), profile.data.max_train_samples
    if data.origin == "synthetic":
        return Samples(profile.data.synthetic.n_train + profile.data.synthetic.n_val, "synthetic train + val pairs")
    documented = training_source(source)
    if documented.download_rows is None:
        return Samples(None, "unknown")
    if cap is None or cap >= documented.train_rows:
        return Samples(documented.download_rows, "documented rows (train + val)")
    return Samples(cap + documented.download_rows - documented.train_rows, "<= data.max_train_samples + val rows")


def planned_precision(train: TrainConfig) -> str:
    """The autocast a GPU run of ``train`` uses: ``fp32`` when asked for (or on CPU), else ``bf16``."""
    return "fp32" if train.precision == "fp32" or train.device == "cpu" else "bf16"


def gpu_hours(samples_seen: int, matches: list[BenchmarkRecord]) -> str:
    """``samples_seen`` training samples at each matching record's per-GPU rate, in GPU-hours, per device."""
    if not matches:
        return "unmeasured"
    return " / ".join(f"{format_hours(samples_seen / r.samples_per_s_per_gpu / 3600)} ({r.device})" for r in matches)


def format_hours(hours: float) -> str:
    """GPU-hours to one decimal, or to two significant digits below 1 h (a short run is not ``0.0``)."""
    return f"{hours:.1f}" if hours >= 1 else f"{hours:.2g}"


def compute_plan(profile: Profile, settings: list[str] | None = None,
                 records: list[BenchmarkRecord] | None = None) -> pd.DataFrame:
    """One row per setting: source, provenance, samples, steps, GPUs and per method the estimated GPU-hours.

    ``records``: throughput records (default: ``docs/benchmarks.json``).
    """
    records = load_benchmarks(BENCHMARKS_PATH) if records is None else records
    rows = []
    for s in select_settings(profile, settings):
        t = setting_train(profile, s.name)
        samples = planned_samples(profile, s)
        gpus = t.nproc * t.nnodes
        steps = None if samples.count is None else samples.count // t.batch_size
        if steps is not None and t.max_steps_per_epoch:
            steps = min(steps, t.max_steps_per_epoch)
        row = {"setting": s.name, "source": s.source, "provenance": s.provenance,
               "samples/epoch": "?" if samples.count is None else f"{samples.count:,}", "basis": samples.basis,
               "batch": t.batch_size, "GPUs": f"{t.nnodes}x{t.nproc}",
               "steps": "?" if steps is None else f"{steps:,} x {t.epochs}"}
        for method in profile.methods:
            key = (s.model.image_encoder, s.model.text_encoder, method, t.batch_size // gpus, t.image_size,
                   planned_precision(t))
            matches = [r for r in records if r.key() == key]
            row[f"GPU-h {method}"] = "?" if steps is None else gpu_hours(steps * t.epochs * t.batch_size, matches)
        rows.append(row)
    return pd.DataFrame(rows)


def disk_plan(profile: Profile, settings: list[str] | None = None) -> pd.DataFrame:
    """One row per training source the (selected) settings use: rows to download and the expected disk."""
    per_row = BYTES_PER_ROW_256 * (profile.data.download.image_size / 256) ** 2
    selected = select_settings(profile, settings)
    rows = []
    for name in profile.used_sources([s.name for s in selected]):
        planned = planned_download_rows(profile, name)
        rows.append({"source": name, "settings": sum(s.source == name for s in selected),
                     "rows": "?" if planned.count is None else f"{planned.count:,}", "basis": planned.basis,
                     f"kB/row at {profile.data.download.image_size} px": round(per_row / 1e3, 1),
                     "GB": "?" if planned.count is None else f"{planned.count * per_row / 1e9:,.1f}",
                     "shards": f"{profile.data.source(name).root}/shards"})
    return pd.DataFrame(rows)


def source_notes(profile: Profile, settings: list[str] | None = None) -> list[str]:
    """Where each used source's row counts come from (one line per source), and the disk assumption."""
    names = profile.used_sources([s.name for s in select_settings(profile, settings)])
    lines = [f"{name}: " + ("the synthetic world's pairs (data.synthetic), as CC3M TSVs"
                            if profile.data.source(name).origin == "synthetic" else training_source(name).basis)
             for name in names]
    return lines + [f"disk: {BYTES_PER_ROW_256 / 1e3:.0f} kB per row at 256 px, scaled by (image_size / 256)^2 "
                    f"(otterlib.plans.BYTES_PER_ROW_256)"]


def select_settings(profile: Profile, names: list[str] | None) -> list[SettingConfig]:
    """The profile's settings in profile order, or only those ``names`` (None: all); an unknown name is a
    ValueError listing the valid ones."""
    if names is None:
        return list(profile.settings)
    valid = [s.name for s in profile.settings]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"profile {profile.name!r} has no setting {', '.join(map(repr, unknown))}; its settings: "
                         f"{', '.join(valid)}")
    return [s for s in profile.settings if s.name in names]
