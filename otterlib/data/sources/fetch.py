"""Fetching a publisher's metadata file once, resumably safe (a ``.part`` file until it is complete)."""
from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path


def fetch_file(dest: str | Path, url: str, by_hand: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` unless a non-empty file is already there; returns ``dest``.

    Offline (or if the URL moved) this raises :class:`ConnectionError` naming ``by_hand``, the page that says
    where to get the file, and where to put it. ``timeout`` is in seconds per network operation.
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
            f"internet (see {by_hand}) and copy it to {dest}") from err
    part.replace(dest)
    return dest
