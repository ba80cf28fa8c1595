"""Conceptual Captions 3M: the official TSV -> img2dataset -> webdataset shards + a ``sizes.json`` manifest.

Input: Google's headerless ``caption<TAB>url`` files (``Train_GCC-training.tsv``, 3,318,333 rows;
``Validation_GCC-1.1.0-Validation.tsv``, 15,840 rows). Parsing rule: **the URL is the text after the
last TAB of a line and the caption is everything before it, kept verbatim** (quotes, unicode and any
TAB inside a caption survive; no CSV quoting is applied). Blank lines are skipped; a line without a
TAB is an error; a first line that reads exactly ``caption<TAB>url`` is taken as a header and skipped.

Output layout of :func:`download_cc3m` (``output_dir`` is img2dataset's output folder)::

    output_dir/
      00000.tar           <key>.jpg, <key>.txt (caption), <key>.json (img2dataset metadata); failed rows absent
      00000.parquet       one row per TSV row: caption, url, key, status, error_message, width, height, ...
      00000_stats.json    count, successes, failed_to_download, failed_to_resize, status_dict, ...
      ...
      sizes.json          the manifest loaders read (per-shard sample counts, total, source, options)
      _source/urls.parquet, _source/request.json, _source/download.log

Keys are ``f"{shard:05d}{row_in_shard:0{digits}d}"`` with ``digits = ceil(log10(number_sample_per_shard))``,
so a key maps back to TSV row ``shard * number_sample_per_shard + row_in_shard`` (0-based, blank lines
and a header not counted).

Resuming: img2dataset skips every shard that has a ``*_stats.json`` (``incremental_mode="incremental"``),
so rerunning the same call after an interruption continues where it stopped, without duplicates. A
rerun with another TSV or other image options into the same folder is refused (``_source/request.json``).
img2dataset reads every top-level ``*.json`` of its output folder as a shard's stats, so
:func:`download_cc3m` removes a stale ``sizes.json`` before it starts and writes it again at the end.

Live progress: img2dataset runs in a child process whose output (the shard progress bar and, every
5 s, lines like ``total - success: 0.880 - failed to download: 0.100 - ... - count: 40000``) is relayed
line by line to this process's ``sys.stdout`` -- in a notebook it appears under the running cell --
and appended to ``_source/download.log``. Running it as a child also keeps img2dataset's SIGINT handler
and worker processes out of a notebook kernel; interrupting the cell stops the child cleanly.
"""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else every img2dataset import phones home
os.environ.setdefault("WANDB_MODE", "disabled")

import codecs
import hashlib
import importlib.metadata
import inspect
import ipaddress
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from otterlib.data.shards import ShardReadError, index_tar

OFFICIAL_TRAIN_URL: str = "https://storage.googleapis.com/gcc-data/Train/GCC-training.tsv"
"""Google's download of ``Train_GCC-training.tsv`` (linked from the Conceptual Captions download page)."""
OFFICIAL_VALIDATION_URL: str = "https://storage.googleapis.com/gcc-data/Validation/GCC-1.1.0-Validation.tsv"
"""Google's download of ``Validation_GCC-1.1.0-Validation.tsv``."""
CC3M_DOWNLOAD_PAGE: str = "https://ai.google.com/research/ConceptualCaptions/download"
DNS_ADVICE_URL: str = "https://github.com/rom1504/img2dataset#setting-up-a-high-performance-dns-resolver"

MANIFEST_NAME: str = "sizes.json"
MANIFEST_FORMAT: str = "otterlib-sizes/1"
SOURCE_DIR: str = "_source"

EXPECTED_BYTES_PER_IMAGE: int = 25_000
"""Disk per *TSV row* at 256 px (keep_ratio, JPEG q95), tar + json + parquet included: full CC3M
(3.3M rows) at 256 px takes ~60-80 GB."""
LARGE_RUN_ROWS: int = 100_000
"""From this many rows on, :func:`preflight` gives img2dataset's DNS-resolver advice."""

_RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
_FIXED_IMG2DATASET_ARGS = frozenset({
    "url_list", "output_folder", "input_format", "url_col", "caption_col", "output_format", "enable_wandb",
    "wandb_project", "distributor", "incremental_mode", "save_additional_columns", "bbox_col",
})


# --------------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class DownloadOptions:
    """Keyword options of :func:`download_cc3m` (all plain values, so a notebook parameters cell can set them).

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
    """*layout*: TSV rows per shard (CC3M train -> 332 shards). The training loader splits whole shards
    among ranks x workers, so smaller shards balance them better."""
    min_image_size: int = 0
    """*layout*: drop images whose shorter side is below this (img2dataset ``min_image_size``)."""
    max_aspect_ratio: float | None = None
    """*layout*: drop images with ``long/short`` above this; None = no limit."""
    max_rows: int | None = None
    """*layout*: download only the first N rows of the TSV (e.g. a single-GPU subset); None = all."""
    compute_hash: str | None = "sha256"
    """*layout*: hash of the downloaded bytes stored in the parquet (``md5``/``sha256``/``sha512``/None)."""
    extract_exif: bool = False
    """*layout*: store EXIF as JSON in the parquet (img2dataset's default True; not needed here)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """*layout*: further keyword arguments of ``img2dataset.download`` passed through unchanged."""
    processes_count: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Download processes (default: all CPUs)."""
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
    """Relay img2dataset's output to ``sys.stdout`` (it is always kept in ``_source/download.log``)."""

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
        fixed = _FIXED_IMG2DATASET_ARGS.intersection(self.extra)
        if fixed:
            raise ValueError(f"extra may not set {sorted(fixed)}: download_cc3m fixes them")
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
            thread_count=self.thread_count, timeout=self.timeout, retries=self.retries,
            disallowed_header_directives=self.disallowed_header_directives, user_agent_token=self.user_agent_token,
        )
        if self.max_aspect_ratio is not None:
            kwargs["max_aspect_ratio"] = self.max_aspect_ratio
        kwargs.update(self.extra)
        return kwargs


# --------------------------------------------------------------------------------------------------
# Summary and manifest


@dataclass(frozen=True)
class DownloadSummary:
    """What a download (or an indexed copy) holds."""

    n_rows: int
    """Rows processed: the sum of the shards' ``count`` (equals ``n_input_rows`` once complete)."""
    successes: int
    """Samples stored in the tars."""
    failures_by_status: dict[str, int]
    """Failed rows per error class (see :func:`classify_failure`), most frequent first."""
    success_rate: float
    """``successes / n_rows`` (0.0 when nothing was processed)."""
    shard_paths: list[Path]
    """Tars holding at least one sample, in shard order."""
    shard_sizes: list[int]
    """Samples per tar, aligned with ``shard_paths``."""
    manifest_path: Path
    """``sizes.json`` (written by :func:`download_cc3m` / :func:`index_existing_shards`)."""
    n_input_rows: int
    """Rows of the source list (TSV rows for a download; ``n_rows`` for an indexed copy)."""
    failure_examples: dict[str, str] = field(default_factory=dict)
    """One raw error message per failure class."""
    missing_shards: list[str] = field(default_factory=list)
    """Shards of the input that have no stats file: never processed, or given up on by img2dataset."""

    @property
    def complete(self) -> bool:
        """Every input row has been processed (no shard left to download)."""
        return self.n_rows == self.n_input_rows

    def incompleteness(self) -> str | None:
        """What is missing and how to resume, in plain words (None when complete)."""
        return incompleteness_message(self.n_input_rows, self.n_input_rows - self.n_rows, self.missing_shards)

    @property
    def total(self) -> int:
        """Samples available to loaders (``sum(shard_sizes)``)."""
        return sum(self.shard_sizes)


def incompleteness_message(n_input_rows: int, n_missing_rows: int, missing_shards: list[str]) -> str | None:
    """``The download is incomplete: ...`` with the missing rows and shards and how to resume; None if none."""
    if n_missing_rows == 0:
        return None
    shards = (f"{len(missing_shards)} shard{'s' * (len(missing_shards) != 1)}: "
              f"{', '.join(missing_shards[:10])}{', ...' * (len(missing_shards) > 10)}")
    return (f"The download is incomplete: {n_missing_rows:,} of {n_input_rows:,} rows ({shards}) were never "
            f"processed; img2dataset gave up on them and still exited normally. To resume, rerun 01_download_cc3m "
            f"(./run_all.sh reruns it while the download is incomplete; download_cc3m with the same arguments "
            f"does the same): finished shards are kept and only the missing ones are downloaded. To train on the "
            f"rows that are there anyway, set data.allow_partial: true.")


@dataclass(frozen=True)
class ShardManifest:
    """The part of ``sizes.json`` loaders need."""

    path: Path
    shard_paths: list[Path]
    """Absolute tar paths (``sizes.json`` stores them relative to its folder)."""
    shard_sizes: list[int]
    n_input_rows: int = 0
    """Rows of the download's input list (0 when unknown)."""
    n_missing_rows: int = 0
    """Input rows never processed (a shard img2dataset gave up on, or an interrupted download)."""
    missing_shards: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.shard_sizes)

    @property
    def complete(self) -> bool:
        return self.n_missing_rows == 0

    def incompleteness(self) -> str | None:
        """What is missing and how to resume, in plain words (None when complete)."""
        return incompleteness_message(self.n_input_rows, self.n_missing_rows, self.missing_shards)


def load_manifest(path: str | Path) -> ShardManifest:
    """Read ``sizes.json`` (``path`` is the file or the folder holding it) and check its tars exist."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: run download_cc3m(...) or index_existing_shards(folder) "
                                "to write it")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not an otterlib manifest (format {data.get('format')!r}, "
                         f"expected {MANIFEST_FORMAT!r})")
    shard_paths = [(path.parent / s["path"]).resolve() for s in data["shards"]]
    sizes = [int(s["samples"]) for s in data["shards"]]
    missing = [str(p) for p in shard_paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{path} lists {len(missing)} missing tar(s), e.g. {missing[0]}; rerun the download "
                                "or index_existing_shards on the folder")
    if sum(sizes) != data["total"]:
        raise ValueError(f"{path}: per-shard counts sum to {sum(sizes)} but total says {data['total']}")
    n_input = int(data.get("n_input_rows") or 0)
    return ShardManifest(path=path, shard_paths=shard_paths, shard_sizes=sizes, n_input_rows=n_input,
                         n_missing_rows=n_input - int(data.get("n_rows") or n_input),
                         missing_shards=list(data.get("missing_shards", [])))


def _write_manifest(summary: DownloadSummary, source: dict[str, Any] | None, options: dict[str, Any] | None,
                    img2dataset_version: str | None) -> Path:
    root = summary.manifest_path.parent
    manifest = {
        "format": MANIFEST_FORMAT,
        "total": summary.total,
        "shards": [{"path": os.path.relpath(p, root), "samples": n}
                   for p, n in zip(summary.shard_paths, summary.shard_sizes)],
        "complete": summary.complete,
        "n_rows": summary.n_rows,
        "n_input_rows": summary.n_input_rows,
        "missing_rows": summary.n_input_rows - summary.n_rows,
        "missing_shards": summary.missing_shards,
        "successes": summary.successes,
        "success_rate": summary.success_rate,
        "failures_by_status": summary.failures_by_status,
        "source": source,
        "options": options,
        "img2dataset_version": img2dataset_version,
        "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = summary.manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(summary.manifest_path)
    return summary.manifest_path


# --------------------------------------------------------------------------------------------------
# Failure classes

_FAILURE_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("timed out", "timeout"), "timeout"),
    (("image decoding error",), "Image decoding error"),
    (("name or service not known", "temporary failure in name resolution", "nodename nor servname",
      "no address associated with hostname", "getaddrinfo failed"), "DNS error"),
    (("connection refused",), "connection refused"),
    (("connection reset", "remote end closed connection", "connection aborted", "broken pipe"), "connection reset"),
    (("ssl", "certificate"), "SSL error"),
    (("x-robots-tag",), "opted out (X-Robots-Tag)"),
    (("unknown url type", "no host given", "url can't contain control characters"), "invalid URL"),
    (("image too small",), "image too small"),
    (("image area too large",), "image area too large"),
    (("aspect ratio too large",), "aspect ratio too large"),
    (("hash mismatch",), "hash mismatch"),
)


def classify_failure(message: str) -> str:
    """Map one img2dataset error message to a class: ``HTTP Error 404``, ``timeout``, ``Image decoding
    error``, ``DNS error``, ``connection refused``, ``connection reset``, ``SSL error``, ``invalid URL``,
    ... or ``other``."""
    http = re.search(r"HTTP Error (\d{3})", message)
    if http:
        return f"HTTP Error {http.group(1)}"
    lower = message.lower()
    for needles, name in _FAILURE_RULES:
        if any(n in lower for n in needles):
            return name
    return "other"


def _classify_status_dict(status_dict: dict[str, int]) -> tuple[dict[str, int], dict[str, str]]:
    counts: dict[str, int] = {}
    examples: dict[str, str] = {}
    for message, n in status_dict.items():
        if message == "success":
            continue
        name = classify_failure(message)
        counts[name] = counts.get(name, 0) + n
        examples.setdefault(name, message)
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return ordered, examples


def failure_histogram(summary: DownloadSummary | str | Path) -> pd.DataFrame:
    """Failures per class as a table: columns ``status``, ``count``, ``fraction`` (of all processed rows)
    and ``example`` (one raw message), most frequent first. Accepts a summary or a download folder."""
    if not isinstance(summary, DownloadSummary):
        summary = read_download_stats(summary)
    rows = [{"status": k, "count": n, "fraction": n / summary.n_rows if summary.n_rows else 0.0,
             "example": summary.failure_examples.get(k, "")} for k, n in summary.failures_by_status.items()]
    return pd.DataFrame(rows, columns=["status", "count", "fraction", "example"])


# --------------------------------------------------------------------------------------------------
# The TSV


def read_cc3m_tsv(tsv_path: str | Path, max_rows: int | None = None) -> pd.DataFrame:
    """Google's headerless ``caption<TAB>url`` file -> DataFrame with columns ``caption``, ``url`` (str).

    See the module docstring for the parsing rule (URL after the last TAB, caption verbatim).
    """
    tsv_path = Path(tsv_path)
    captions: list[str] = []
    urls: list[str] = []
    try:
        with tsv_path.open(encoding="utf-8", newline="\n") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line or (lineno == 1 and line.lower() == "caption\turl"):
                    continue
                caption, tab, url = line.rpartition("\t")
                url = url.strip()
                if not tab or not url:
                    raise ValueError(f"{tsv_path}:{lineno}: expected 'caption<TAB>url' (Google's headerless CC3M "
                                     f"TSV), got {line[:120]!r}")
                captions.append(caption)
                urls.append(url)
                if max_rows is not None and len(urls) >= max_rows:
                    break
    except UnicodeDecodeError as err:
        raise ValueError(f"{tsv_path} is not UTF-8 text ({err}); pass Google's TSV unchanged") from err
    if not urls:
        raise ValueError(f"{tsv_path} has no 'caption<TAB>url' rows")
    return pd.DataFrame({"caption": captions, "url": urls})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_cc3m_tsv(dest: str | Path, url: str = OFFICIAL_TRAIN_URL, timeout: float = 60.0) -> Path:
    """Download the official TSV to ``dest`` unless a non-empty file is already there; returns ``dest``.

    Use ``url=OFFICIAL_VALIDATION_URL`` for the validation split. Offline (or if Google's URL moved) this
    raises :class:`ConnectionError` saying where to get the file by hand.
    """
    dest = Path(dest)
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError) as err:
        part.unlink(missing_ok=True)
        raise ConnectionError(
            f"could not download {url} ({err}). If this machine is offline, download the file on a machine with "
            f"internet (see {CC3M_DOWNLOAD_PAGE}) and copy it to {dest}") from err
    part.replace(dest)
    return dest


# --------------------------------------------------------------------------------------------------
# Pre-flight


class PreflightError(RuntimeError):
    """A pre-flight check failed hard (e.g. not enough free disk); pass ``force=True`` to go ahead anyway."""


def _nameservers(resolv_conf: Path) -> list[str]:
    servers = []
    for line in resolv_conf.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            servers.append(parts[1])
    return servers


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def preflight(output_dir: str | Path, n_rows: int, expected_bytes_per_image: float = EXPECTED_BYTES_PER_IMAGE, *,
              force: bool = False, resolv_conf: str | Path = "/etc/resolv.conf", verbose: bool = True) -> list[str]:
    """Check free disk and DNS set-up before downloading ``n_rows`` URLs into ``output_dir``.

    Disk: needs ``n_rows * expected_bytes_per_image`` bytes minus the tars already in ``output_dir`` (a
    resumed run); less free space is a hard error, less than 1.2x that is a warning. DNS (from
    ``LARGE_RUN_ROWS`` rows on): img2dataset's README recommends a local caching resolver (knot-resolver
    or bind9) because a large run makes thousands of lookups per second and upstream resolvers throttle,
    which shows up as ``DNS error`` failures; warns when ``resolv_conf`` names no loopback resolver.

    Returns the warnings (printed too when ``verbose``); raises :class:`PreflightError` on a hard error
    unless ``force`` (then the error is returned as a warning).
    """
    if n_rows < 0 or expected_bytes_per_image <= 0:
        raise ValueError(f"need n_rows >= 0 and expected_bytes_per_image > 0, got {n_rows}, {expected_bytes_per_image}")
    out = Path(output_dir).resolve()
    existing = out
    while not existing.exists():
        existing = existing.parent
    warnings: list[str] = []
    errors: list[str] = []
    if not os.access(existing, os.W_OK):
        errors.append(f"{existing} is not writable: choose another output_dir")
    present = sum(p.stat().st_size for p in out.glob("*.tar")) if out.is_dir() else 0
    need = max(0.0, n_rows * expected_bytes_per_image - present)
    free = shutil.disk_usage(existing).free
    gb = 1e9
    if need > free:
        errors.append(f"not enough disk: {n_rows:,} rows need ~{need / gb:.1f} GB more, {free / gb:.1f} GB free at "
                      f"{existing}; free space, pick another output_dir or a smaller image_size")
    elif need * 1.2 > free:
        warnings.append(f"disk is tight: ~{need / gb:.1f} GB needed, {free / gb:.1f} GB free at {existing}")
    if n_rows >= LARGE_RUN_ROWS:
        resolv = Path(resolv_conf)
        servers = _nameservers(resolv) if resolv.is_file() else []
        if not servers:
            warnings.append(f"no nameserver found in {resolv}; img2dataset needs working DNS for {n_rows:,} URLs "
                            f"(see {DNS_ADVICE_URL})")
        elif not any(_is_loopback(s) for s in servers):
            warnings.append(f"DNS: {resolv} names {', '.join(servers)} and no local caching resolver. For "
                            f"{n_rows:,} URLs img2dataset recommends running knot-resolver or bind9 locally and "
                            f"pointing resolv.conf at 127.0.0.1, otherwise many rows fail as 'DNS error' "
                            f"(see {DNS_ADVICE_URL})")
    if errors and not force:
        raise PreflightError("; ".join(errors) + " (or pass force=True)")
    warnings = errors + warnings
    if verbose:
        for w in warnings:
            print(f"[preflight] {w}")
    return warnings


# --------------------------------------------------------------------------------------------------
# Download


def run_img2dataset(kwargs: dict[str, Any], log_path: Path, verbose: bool) -> None:
    """Run ``img2dataset.download(**kwargs)`` in a child process, relaying its output (see module docstring)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # line-by-line output through the pipe; offline vars set above
    code = "import json, sys; from img2dataset import download; download(**json.loads(sys.argv[1]))"
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = ""
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n=== img2dataset {time.strftime('%Y-%m-%d %H:%M:%S')} {json.dumps(kwargs)}\n")
        proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(kwargs)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        assert proc.stdout is not None
        try:
            for chunk in iter(lambda: proc.stdout.read1(1 << 14), b""):
                text = decoder.decode(chunk)
                log.write(text)
                tail = (tail + text)[-4000:]
                if verbose:
                    sys.stdout.write(text)
                    sys.stdout.flush()
            returncode = proc.wait()
        except BaseException:
            # Interrupted (e.g. a notebook's stop button): let img2dataset clean up, then make sure it is gone.
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
    if returncode != 0:
        raise RuntimeError(f"img2dataset exited with status {returncode}; rerun the same call to resume. Last "
                           f"output (full log in {log_path}):\n{tail}")


def download_cc3m(tsv_path: str | Path, output_dir: str | Path, **options: Any) -> DownloadSummary:
    """Download the pairs of a CC3M-format TSV into webdataset shards; returns the summary.

    ``options`` are the fields of :class:`DownloadOptions` (``image_size=256``, ``resize_mode="keep_ratio"``,
    ``processes_count``, ``thread_count``, ``timeout``, ``retries``, ``max_rows``, ...) plus any other
    ``img2dataset.download`` argument. Resumable: rerun the same call after an interruption. Writes
    ``output_dir/sizes.json`` after the download (see :func:`read_download_stats` for the numbers).

    img2dataset exits normally even after giving up on a shard (its shard retrier only prints), so the
    processed rows are compared with the input rows: a shortfall is marked in ``sizes.json`` (``complete:
    false``, ``missing_rows``, ``missing_shards``), printed in plain words with how to resume
    (:meth:`DownloadSummary.incompleteness`), and training refuses such a manifest unless
    ``data.allow_partial`` (:func:`otterlib.data.loader.require_complete`).
    """
    opts = DownloadOptions.from_kwargs(**options)
    tsv = Path(tsv_path)
    if not tsv.is_file():
        raise FileNotFoundError(f"no TSV at {tsv}: fetch the official one with fetch_cc3m_tsv({str(tsv)!r})")
    out = Path(output_dir)
    if opts.incremental_mode == "overwrite" and out.exists():
        shutil.rmtree(out)
    source_dir = out / SOURCE_DIR
    source_dir.mkdir(parents=True, exist_ok=True)

    rows = read_cc3m_tsv(tsv, opts.max_rows)
    request = {"tsv_path": str(tsv.resolve()), "sha256": _sha256(tsv), "n_rows": len(rows), "layout": opts.layout()}
    request_path = source_dir / "request.json"
    if request_path.is_file():
        previous = json.loads(request_path.read_text(encoding="utf-8"))
        changed = [k for k in ("sha256", "n_rows", "layout") if previous.get(k) != request[k]]
        if changed:
            raise ValueError(f"{out} holds a download of another TSV or with other options (differs in {changed}); "
                             "use a new output_dir or incremental_mode='overwrite'")
    if opts.preflight:
        per_image = EXPECTED_BYTES_PER_IMAGE * (opts.image_size / 256) ** 2
        preflight(out, len(rows), per_image, force=opts.force, verbose=opts.verbose)

    urls_path = source_dir / "urls.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), urls_path)
    request_path.write_text(json.dumps(request, indent=2), encoding="utf-8")
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # img2dataset would parse it as a shard's stats file

    run_img2dataset(opts.img2dataset_kwargs(urls_path, out), source_dir / "download.log", opts.verbose)

    summary = read_download_stats(out)
    _write_manifest(summary, source={k: request[k] for k in ("tsv_path", "sha256", "n_rows")},
                    options={**asdict(opts)}, img2dataset_version=importlib.metadata.version("img2dataset"))
    if not summary.complete:
        print(f"[download_cc3m] {out}: {summary.incompleteness()}")
    return summary


def read_download_stats(output_dir: str | Path) -> DownloadSummary:
    """Summarise a :func:`download_cc3m` folder from every shard's ``*_stats.json`` and ``*.parquet``.

    Shards still being written (a tar without its stats file) are not counted; shards of the input without a
    stats file are listed in ``missing_shards``. Raises if a shard's parquet disagrees with its stats (delete
    that shard's three files and rerun the download).
    """
    out = Path(output_dir)
    request_path = out / SOURCE_DIR / "request.json"
    if not request_path.is_file():
        raise FileNotFoundError(f"{out} is not a download_cc3m folder (no {SOURCE_DIR}/request.json); for a folder "
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
                                    "and rerun download_cc3m to redo it")
        status = pq.read_table(parquet_path, columns=["status"]).column("status").to_pylist()
        ok = sum(s == "success" for s in status)
        if len(status) != stats["count"] or ok != stats["successes"]:
            raise ValueError(f"shard {shard}: parquet has {len(status)} rows / {ok} successes but stats say "
                             f"{stats['count']} / {stats['successes']}; delete its files and rerun download_cc3m")
        n_rows += stats["count"]
        successes += stats["successes"]
        for message, n in stats["status_dict"].items():
            status_dict[message] = status_dict.get(message, 0) + n
        if ok:
            shard_paths.append(tar_path)
            shard_sizes.append(ok)
    failures, examples = _classify_status_dict(status_dict)
    per_shard = request["layout"]["number_sample_per_shard"]
    done = {int(p.name.split("_")[0]) for p in out.glob("[0-9]*_stats.json")}
    missing = [f"{i:05d}" for i in range(-(-request["n_rows"] // per_shard)) if i not in done]
    return DownloadSummary(n_rows=n_rows, successes=successes, failures_by_status=failures,
                           success_rate=successes / n_rows if n_rows else 0.0, shard_paths=shard_paths,
                           shard_sizes=shard_sizes, manifest_path=out / MANIFEST_NAME,
                           n_input_rows=request["n_rows"], failure_examples=examples, missing_shards=missing)


# --------------------------------------------------------------------------------------------------
# An existing webdataset copy


def index_existing_shards(folder: str | Path, pattern: str = "*.tar") -> DownloadSummary:
    """Count the samples of every tar in ``folder`` (an existing webdataset copy of CC3M) and write
    ``folder/sizes.json`` so loaders can use it.

    A sample is a key with an image (``.jpg``/``.jpeg``/``.png``/``.webp``) and a ``.txt`` caption
    (:func:`otterlib.data.shards.index_tar`, the loaders' own reading); keys lacking either are reported in
    ``failures_by_status`` and not counted. Rows that failed when
    the copy was made are unknown, so ``n_rows`` counts only the keys present.
    """
    from otterlib.progress import progress_bar

    folder = Path(folder)
    tars = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if not tars:
        raise FileNotFoundError(f"no {pattern} files in {folder}: pass the folder that holds the webdataset tars")
    shard_paths: list[Path] = []
    shard_sizes: list[int] = []
    no_image = no_text = 0
    for tar_path in progress_bar(tars, desc=f"indexing {folder.name}", unit="tar"):
        try:
            index = index_tar(tar_path)
        except ShardReadError as err:
            raise ValueError(f"{err}; re-download it or remove it from the folder") from err
        if index.error is not None:
            raise ValueError(f"{tar_path} is not a readable tar ({index.error}); re-download it or remove it from "
                             f"the folder")
        no_image += index.n_no_image
        no_text += index.n_no_text
        if len(index):
            shard_paths.append(tar_path)
            shard_sizes.append(len(index))
    successes = sum(shard_sizes)
    failures = {k: v for k, v in (("no image", no_image), ("no caption (.txt)", no_text)) if v}
    n_rows = successes + no_image + no_text
    summary = DownloadSummary(n_rows=n_rows, successes=successes, failures_by_status=failures,
                              success_rate=successes / n_rows if n_rows else 0.0, shard_paths=shard_paths,
                              shard_sizes=shard_sizes, manifest_path=folder / MANIFEST_NAME, n_input_rows=n_rows)
    _write_manifest(summary, source={"indexed_folder": str(folder.resolve()), "pattern": pattern}, options=None,
                    img2dataset_version=None)
    return summary
