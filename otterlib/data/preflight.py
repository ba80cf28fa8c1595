"""Before a large download: is there disk for it, and will DNS keep up?"""
from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path

DNS_ADVICE_URL: str = "https://github.com/rom1504/img2dataset#setting-up-a-high-performance-dns-resolver"
EXPECTED_BYTES_PER_IMAGE: int = 25_000
"""Disk per *input row* at 256 px (keep_ratio, JPEG q95), tar + json + parquet included: full CC3M
(3.3M rows) at 256 px takes ~60-80 GB."""
LARGE_RUN_ROWS: int = 100_000
"""From this many rows on, :func:`preflight` gives img2dataset's DNS-resolver advice."""


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
