"""One download path for every training source: a (caption, url) table -> webdataset shards + ``sizes.json``.

:func:`download_pairs` takes the pairs of any source (:mod:`otterlib.data.sources` parses each source's
official metadata into them) and runs img2dataset with the shared options (:class:`DownloadOptions`: 256 px,
``keep_ratio``, JPEG q95, resumable), then writes the manifest with the completeness check
(:mod:`otterlib.data.manifest`). Output layout (``output_dir`` is img2dataset's output folder)::

    output_dir/
      00000.tar           <key>.jpg, <key>.txt (caption), <key>.json (img2dataset metadata); failed rows absent
      00000.parquet       one row per input row: caption, url, key, status, error_message, width, height, ...
      00000_stats.json    count, successes, failed_to_download, failed_to_resize, status_dict, ...
      ...
      sizes.json          the manifest loaders read (:mod:`otterlib.data.manifest`)
      _source/urls.parquet, _source/request.json, _source/download.log

Keys are ``f"{shard:05d}{row_in_shard:0{digits}d}"`` with ``digits = ceil(log10(number_sample_per_shard))``,
so a key maps back to input row ``shard * number_sample_per_shard + row_in_shard`` (0-based).

Resuming: img2dataset skips every shard that has a ``*_stats.json`` (``incremental_mode="incremental"``),
so rerunning the same call after an interruption continues where it stopped, without duplicates. A rerun
with other rows (compared by their SHA-256) or other image options into the same folder is refused
(``_source/request.json``). img2dataset reads every top-level ``*.json`` of its output folder as a shard's
stats, so a download removes a stale ``sizes.json`` before it starts and writes it again at the end.

Console: img2dataset's own output goes only to ``_source/download.log``; the caller sees one progress line
(:mod:`otterlib.data.img2dataset_child`) and the outcome.

Beyond one machine: ``distributor="pyspark"`` hands the shards to img2dataset's Spark distributor, on the
cluster that ``spark_config`` names (e.g. ``{"spark.master": "spark://head:7077"}``; empty: a local
session of ``processes_count`` cores). ``output_dir`` must then be a folder every Spark worker sees at the same
path (a shared file system): the workers read the input shards img2dataset writes there and write the tars.
"""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else every img2dataset import phones home
os.environ.setdefault("WANDB_MODE", "disabled")

import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from otterlib.data.failures import classify_status_dict
from otterlib.data.img2dataset_child import ProgressLine, run_img2dataset
from otterlib.data.manifest import MANIFEST_NAME, DownloadSummary, write_manifest
from otterlib.data.preflight import EXPECTED_BYTES_PER_IMAGE, preflight
from otterlib.data.sources import PAIR_COLUMNS

SOURCE_DIR: str = "_source"
"""Inside a download folder: the input rows, the request (to refuse a mismatched resume) and the log."""

DISTRIBUTORS: tuple[str, ...] = ("multiprocessing", "pyspark")
"""img2dataset's ``distributor`` values offered here: processes on this machine, or a Spark cluster."""

_RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
_FIXED_IMG2DATASET_ARGS = frozenset({
    "url_list", "output_folder", "input_format", "url_col", "caption_col", "output_format", "enable_wandb",
    "wandb_project", "incremental_mode", "save_additional_columns", "bbox_col",
})


@dataclass(frozen=True)
class DownloadOptions:
    """Keyword options of :func:`download_pairs` (all plain values, so a notebook parameters cell can set them).

    Fields marked *layout* decide the shard contents and must not change between a run and its
    resumption; the others (processes, threads, timeout, retries, ...) may.
    """

    image_size: int = 256
    """*layout*: target size in px (img2dataset ``image_size``)."""
    resize_mode: str = "keep_ratio"
    """*layout*: ``keep_ratio`` resizes the shorter side to ``image_size`` and keeps the aspect ratio
    (img2dataset's default ``border`` would pad to a white square)."""
    resize_only_if_bigger: bool = False
    """*layout*: never upscale small images (default False: every stored image has shorter side = ``image_size``)."""
    encode_format: str = "jpg"
    """*layout*: image encoding in the tars (``jpg``, ``png``, ``webp``)."""
    encode_quality: int = 95
    """*layout*: JPEG quality."""
    number_sample_per_shard: int = 10_000
    """*layout*: input rows per shard (CC3M train -> 332 shards). The training loader splits whole shards
    among ranks x workers, so smaller shards balance them better."""
    min_image_size: int = 0
    """*layout*: drop images whose shorter side is below this (img2dataset ``min_image_size``)."""
    max_aspect_ratio: float | None = None
    """*layout*: drop images with ``long/short`` above this; None = no limit."""
    max_rows: int | None = None
    """*layout*: download only the first N rows of the table (e.g. a single-GPU subset); None = all."""
    compute_hash: str | None = "sha256"
    """*layout*: hash of the downloaded bytes stored in the parquet (``md5``/``sha256``/``sha512``/None)."""
    extract_exif: bool = False
    """*layout*: store EXIF as JSON in the parquet (img2dataset's default True; not needed here)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """*layout*: further keyword arguments of ``img2dataset.download`` passed through unchanged."""
    distributor: str = "multiprocessing"
    """img2dataset's ``distributor``: ``multiprocessing`` (``processes_count`` processes on this machine) or
    ``pyspark`` (a Spark cluster, see the module docstring; needs ``pip install pyspark``)."""
    spark_config: dict[str, str] = field(default_factory=dict)
    """With ``pyspark``: SparkSession builder settings (``spark.master``, ``spark.executor.memory``, ...) of the
    session img2dataset runs on; empty = a local session of ``processes_count`` cores."""
    processes_count: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Download processes (default: all CPUs); with ``pyspark`` and no ``spark.master``, local cores."""
    thread_count: int = 64
    """Download threads per process."""
    timeout: int = 10
    """Seconds per HTTP request."""
    retries: int = 2
    """Extra attempts per URL after a failed request."""
    incremental_mode: str = "incremental"
    """``incremental`` (resume: skip finished shards) or ``overwrite`` (delete ``output_dir`` first)."""
    disallowed_header_directives: list[str] | None = None
    """X-Robots-Tag directives that make a site's image skipped; None = img2dataset's default
    (``noai``, ``noimageai``, ``noindex``, ``noimageindex``); ``[]`` = ignore opt-outs."""
    user_agent_token: str | None = None
    """Token appended to the User-Agent (lets sites opt out of this crawler specifically)."""
    preflight: bool = True
    """Run :func:`preflight` (disk space, DNS advice) before downloading."""
    force: bool = False
    """Download even if the pre-flight checks fail (e.g. too little free disk)."""
    verbose: bool = True
    """Show one progress line and the outcome; img2dataset's own output goes only to ``_source/download.log``."""

    LAYOUT_FIELDS = ("image_size", "resize_mode", "resize_only_if_bigger", "encode_format", "encode_quality",
                     "number_sample_per_shard", "min_image_size", "max_aspect_ratio", "max_rows", "compute_hash",
                     "extract_exif", "extra")

    def __post_init__(self) -> None:
        positive = ("image_size", "number_sample_per_shard", "processes_count", "thread_count", "timeout")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}, got {self.resize_mode!r}")
        if self.incremental_mode not in ("incremental", "overwrite"):
            raise ValueError(f"incremental_mode must be 'incremental' (resume) or 'overwrite', "
                             f"got {self.incremental_mode!r}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1 or None, got {self.max_rows}")
        if self.distributor not in DISTRIBUTORS:
            raise ValueError(f"distributor must be one of {DISTRIBUTORS}, got {self.distributor!r}")
        if self.spark_config and self.distributor != "pyspark":
            raise ValueError("spark_config configures the Spark session of distributor='pyspark'; set that "
                             f"distributor or leave spark_config empty (distributor is {self.distributor!r})")
        fixed = _FIXED_IMG2DATASET_ARGS.intersection(self.extra)
        if fixed:
            raise ValueError(f"extra may not set {sorted(fixed)}: download_pairs fixes them")
        own = {f.name for f in fields(self)}.intersection(self.extra)
        if own:
            raise ValueError(f"set {sorted(own)} as options of their own, not inside extra")

    @classmethod
    def from_kwargs(cls, **options: Any) -> DownloadOptions:
        """Known fields set themselves; any other keyword must be an ``img2dataset.download`` argument
        and goes to ``extra``."""
        known = {f.name for f in fields(cls)}
        extra = dict(options.pop("extra", None) or {})
        extra.update({k: options.pop(k) for k in list(options) if k not in known})
        if extra:
            from img2dataset import download

            accepted = set(inspect.signature(download).parameters)
            unknown = sorted(set(extra) - accepted)
            if unknown:
                raise ValueError(f"unknown download option(s) {unknown}: use a field of DownloadOptions "
                                 f"({sorted(known)}) or an img2dataset.download argument")
        return cls(**options, extra=extra)

    def layout(self) -> dict[str, Any]:
        """The options that decide shard contents (recorded and compared on resume)."""
        return {name: getattr(self, name) for name in self.LAYOUT_FIELDS}

    def img2dataset_kwargs(self, url_list: Path, output_folder: Path) -> dict[str, Any]:
        """Arguments for ``img2dataset.download`` (webdataset output, wandb off, resumable)."""
        kwargs: dict[str, Any] = dict(
            url_list=str(url_list), output_folder=str(output_folder), input_format="parquet", url_col="url",
            caption_col="caption", output_format="webdataset", enable_wandb=False, incremental_mode="incremental",
            image_size=self.image_size, resize_mode=self.resize_mode, resize_only_if_bigger=self.resize_only_if_bigger,
            encode_format=self.encode_format, encode_quality=self.encode_quality,
            number_sample_per_shard=self.number_sample_per_shard, min_image_size=self.min_image_size,
            compute_hash=self.compute_hash, extract_exif=self.extract_exif, processes_count=self.processes_count,
            thread_count=self.thread_count, timeout=self.timeout, retries=self.retries, distributor=self.distributor,
            disallowed_header_directives=self.disallowed_header_directives, user_agent_token=self.user_agent_token,
        )
        if self.max_aspect_ratio is not None:
            kwargs["max_aspect_ratio"] = self.max_aspect_ratio
        kwargs.update(self.extra)
        return kwargs


def pairs_sha256(pairs: pd.DataFrame, chunk_rows: int = 100_000) -> str:
    """SHA-256 of a pair table's rows as ``caption<TAB>url<LF>`` UTF-8 lines, in order: what makes a resumed
    download the same download."""
    digest = hashlib.sha256()
    for start in range(0, len(pairs), chunk_rows):
        chunk = pairs.iloc[start:start + chunk_rows]
        digest.update("".join(f"{c}\t{u}\n" for c, u in zip(chunk["caption"], chunk["url"])).encode("utf-8"))
    return digest.hexdigest()


def download_pairs(pairs: pd.DataFrame, output_dir: str | Path, *, source: Mapping[str, Any] | None = None,
                   label: str | None = None, **options: Any) -> DownloadSummary:
    """Download the rows of a ``caption``/``url`` table into webdataset shards; returns the summary.

    Args:
        pairs: one row per image-text pair, columns ``caption`` and ``url`` (str; other columns are ignored).
        output_dir: img2dataset's output folder (layout in the module docstring).
        source: where the rows come from (e.g. the metadata files and their parse counts), recorded in
            ``sizes.json`` with the row count and the rows' SHA-256.
        label: heads the progress line (default: the folder's name).
        options: the fields of :class:`DownloadOptions` (``image_size=256``, ``resize_mode="keep_ratio"``,
            ``distributor``, ``processes_count``, ``thread_count``, ``timeout``, ``retries``, ``max_rows``, ...)
            plus any other ``img2dataset.download`` argument.

    Resumable: rerun the same call after an interruption. img2dataset exits normally even after giving up on a
    shard (its shard retrier only prints), so the processed rows are compared with the input rows: a shortfall
    is marked in ``sizes.json`` (``complete: false``, ``missing_rows``, ``missing_shards``) and said in the
    outcome line, and training refuses such a manifest unless ``data.allow_partial``
    (:func:`otterlib.data.loader.require_complete`).
    """
    opts = DownloadOptions.from_kwargs(**options)
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"the pair table lacks column(s) {missing}; it needs {list(PAIR_COLUMNS)} "
                         f"(otterlib.data.sources parses each source into them)")
    if pairs.empty:
        raise ValueError(f"no pairs to download into {output_dir}")
    if opts.distributor == "pyspark" and importlib.util.find_spec("pyspark") is None:
        raise ModuleNotFoundError("distributor='pyspark' needs pyspark in this environment (pip install pyspark) "
                                  "and, for a cluster, spark_config naming its master (see otterlib.data.download)")
    out = Path(output_dir)
    if opts.incremental_mode == "overwrite" and out.exists():
        shutil.rmtree(out)
    source_dir = out / SOURCE_DIR
    source_dir.mkdir(parents=True, exist_ok=True)

    rows = pairs.loc[:, list(PAIR_COLUMNS)].head(opts.max_rows).reset_index(drop=True)
    request = {"pairs_sha256": pairs_sha256(rows), "n_rows": len(rows), "layout": opts.layout(),
               "source": dict(source or {})}
    request_path = source_dir / "request.json"
    if request_path.is_file():
        previous = json.loads(request_path.read_text(encoding="utf-8"))
        changed = [k for k in ("pairs_sha256", "n_rows", "layout") if previous.get(k) != request[k]]
        if changed:
            raise ValueError(f"{out} holds a download of other rows or with other options (differs in {changed}); "
                             "use a new output_dir or incremental_mode='overwrite'")
        done = read_download_stats(out) if (out / MANIFEST_NAME).is_file() else None
        if done is not None and done.complete:  # nothing left to download: spare img2dataset's start-up
            _say_outcome(out, done, opts, label, None)
            return done
    if opts.preflight:
        per_image = EXPECTED_BYTES_PER_IMAGE * (opts.image_size / 256) ** 2
        preflight(out, len(rows), per_image, force=opts.force, verbose=opts.verbose)

    urls_path = source_dir / "urls.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), urls_path)
    request_path.write_text(json.dumps(request, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # img2dataset would parse it as a shard's stats file

    progress = ProgressLine(label or out.name, len(rows)) if opts.verbose else None
    run_img2dataset(opts.img2dataset_kwargs(urls_path, out), source_dir / "download.log", progress, opts.spark_config)
    return _finish(out, request, opts, label, progress)


def _finish(out: Path, request: dict[str, Any], opts: DownloadOptions, label: str | None,
            progress: ProgressLine | None) -> DownloadSummary:
    """Summarise the download folder, write ``sizes.json`` and say the outcome."""
    summary = read_download_stats(out)
    write_manifest(summary, source={**request["source"], "n_rows": request["n_rows"],
                                    "pairs_sha256": request["pairs_sha256"]},
                   options=asdict(opts), img2dataset_version=importlib.metadata.version("img2dataset"))
    _say_outcome(out, summary, opts, label, progress)
    return summary


def _say_outcome(out: Path, summary: DownloadSummary, opts: DownloadOptions, label: str | None,
                 progress: ProgressLine | None) -> None:
    """The outcome line, in place of the progress line (or printed), unless ``opts.verbose`` is off."""
    if not opts.verbose:
        return
    line = outcome_line(label or out.name, summary, out / SOURCE_DIR / "download.log")
    if progress is None:
        print(line, flush=True)
    else:
        progress.finish(line)


def outcome_line(label: str, summary: DownloadSummary, log_path: Path) -> str:
    """``label: N of M rows processed, K stored (r %) in S shards; log: ...``, or what is missing."""
    stored = (f"{summary.successes:,} stored ({summary.success_rate:.1%}) in {len(summary.shard_paths)} "
              f"shard{'s' * (len(summary.shard_paths) != 1)}")
    if summary.complete:
        return f"{label}: all {summary.n_input_rows:,} rows processed, {stored}; img2dataset's log: {log_path}"
    return (f"{label}: INCOMPLETE, {summary.n_rows:,} of {summary.n_input_rows:,} rows processed "
            f"({len(summary.missing_shards)} shard(s) missing), {stored}; rerun to resume; log: {log_path}")


def requested_rows(output_dir: str | Path) -> int | None:
    """Rows a download into ``output_dir`` was started with (``_source/request.json``), or None if none was."""
    request_path = Path(output_dir) / SOURCE_DIR / "request.json"
    if not request_path.is_file():
        return None
    return int(json.loads(request_path.read_text(encoding="utf-8"))["n_rows"])


def read_download_stats(output_dir: str | Path) -> DownloadSummary:
    """Summarise a :func:`download_pairs` folder from every shard's ``*_stats.json`` and ``*.parquet``.

    Shards still being written (a tar without its stats file) are not counted; shards of the input without a
    stats file are listed in ``missing_shards``. Raises if a shard's parquet disagrees with its stats (delete
    that shard's three files and rerun the download).
    """
    out = Path(output_dir)
    request_path = out / SOURCE_DIR / "request.json"
    if not request_path.is_file():
        raise FileNotFoundError(f"{out} is not a download_pairs folder (no {SOURCE_DIR}/request.json); for a folder "
                                "of existing tars use index_existing_shards")
    request = json.loads(request_path.read_text(encoding="utf-8"))
    n_rows = successes = 0
    status_dict: dict[str, int] = {}
    shard_paths: list[Path] = []
    shard_sizes: list[int] = []
    for stats_path in sorted(out.glob("[0-9]*_stats.json")):
        shard = stats_path.name[: -len("_stats.json")]
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        tar_path, parquet_path = out / f"{shard}.tar", out / f"{shard}.parquet"
        if not tar_path.is_file() or not parquet_path.is_file():
            raise FileNotFoundError(f"shard {shard} has stats but no tar/parquet in {out}; delete {stats_path.name} "
                                    "and rerun the download to redo it")
        status = pq.read_table(parquet_path, columns=["status"]).column("status").to_pylist()
        ok = sum(s == "success" for s in status)
        if len(status) != stats["count"] or ok != stats["successes"]:
            raise ValueError(f"shard {shard}: parquet has {len(status)} rows / {ok} successes but stats say "
                             f"{stats['count']} / {stats['successes']}; delete its files and rerun the download")
        n_rows += stats["count"]
        successes += stats["successes"]
        for message, n in stats["status_dict"].items():
            status_dict[message] = status_dict.get(message, 0) + n
        if ok:
            shard_paths.append(tar_path)
            shard_sizes.append(ok)
    failures, examples = classify_status_dict(status_dict)
    per_shard = request["layout"]["number_sample_per_shard"]
    done = {int(p.name.split("_")[0]) for p in out.glob("[0-9]*_stats.json")}
    missing = [f"{i:05d}" for i in range(-(-request["n_rows"] // per_shard)) if i not in done]
    return DownloadSummary(n_rows=n_rows, successes=successes, failures_by_status=failures,
                           success_rate=successes / n_rows if n_rows else 0.0, shard_paths=shard_paths,
                           shard_sizes=shard_sizes, manifest_path=out / MANIFEST_NAME,
                           n_input_rows=request["n_rows"], failure_examples=examples, missing_shards=missing)
