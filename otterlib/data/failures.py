"""Why rows of an img2dataset download failed: img2dataset's raw error messages grouped into a few classes.

img2dataset records one message per failed row (``status_dict`` of a shard's ``*_stats.json``, e.g.
``HTTP Error 404: Not Found`` or ``<urlopen error [Errno -2] Name or service not known>``); the classes here
(:func:`classify_failure`) make the failure histogram of ``01`` readable.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from otterlib.data.manifest import DownloadSummary

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


def classify_status_dict(status_dict: dict[str, int]) -> tuple[dict[str, int], dict[str, str]]:
    """img2dataset's ``{message: rows}`` (``success`` included) -> (failed rows per class, most frequent
    first; one raw message per class)."""
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


def failure_histogram(summary: DownloadSummary) -> pd.DataFrame:
    """Failures per class as a table: columns ``status``, ``count`` (rows), ``fraction`` (of all processed
    rows) and ``example`` (one raw message), most frequent first."""
    rows = [{"status": k, "count": n, "fraction": n / summary.n_rows if summary.n_rows else 0.0,
             "example": summary.failure_examples.get(k, "")} for k, n in summary.failures_by_status.items()]
    return pd.DataFrame(rows, columns=["status", "count", "fraction", "example"])
