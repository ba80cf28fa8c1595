"""img2dataset runs: a list of (caption, url) rows -> webdataset shards, resumable, with live progress.

Output layout of a download (``output_dir`` is img2dataset's output folder)::

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
so rerunning the same call after an interruption continues where it stopped, without duplicates. A
rerun with other rows or other image options into the same folder is refused (``_source/request.json``).
img2dataset reads every top-level ``*.json`` of its output folder as a shard's stats, so a download
removes a stale ``sizes.json`` before it starts and writes it again at the end.

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
import inspect
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from otterlib.data.failures import classify_status_dict
from otterlib.data.manifest import MANIFEST_NAME, DownloadSummary

SOURCE_DIR: str = "_source"
"""Inside a download folder: the input rows, the request (to refuse a mismatched resume) and the log."""

_RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
_FIXED_IMG2DATASET_ARGS = frozenset({
    "url_list", "output_folder", "input_format", "url_col", "caption_col", "output_format", "enable_wandb",
    "wandb_project", "distributor", "incremental_mode", "save_additional_columns", "bbox_col",
})


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
    failures, examples = classify_status_dict(status_dict)
    per_shard = request["layout"]["number_sample_per_shard"]
    done = {int(p.name.split("_")[0]) for p in out.glob("[0-9]*_stats.json")}
    missing = [f"{i:05d}" for i in range(-(-request["n_rows"] // per_shard)) if i not in done]
    return DownloadSummary(n_rows=n_rows, successes=successes, failures_by_status=failures,
                           success_rate=successes / n_rows if n_rows else 0.0, shard_paths=shard_paths,
                           shard_sizes=shard_sizes, manifest_path=out / MANIFEST_NAME,
                           n_input_rows=request["n_rows"], failure_examples=examples, missing_shards=missing)
