"""Webdataset tars read in key order, whatever order their members were written in.

img2dataset writes the samples of a shard in the order its download threads finish, so two downloads of the
same TSV hold the same samples in different orders. Everything that reads shards here (the training and
held-out loaders, :func:`otterlib.data.manifest.index_existing_shards`) goes through :func:`index_tar`, which lists
a tar's members from their headers (no image bytes are read), groups them by key as webdataset does
(``base_plus_ext``: ``dir/00001234.jpg`` -> key ``dir/00001234``, extension ``jpg``) and sorts the keys, and
:func:`read_samples`, which then reads the members of a range of those keys by offset. The sample order of a
shard is therefore a function of its contents only. Memory: one ``TarInfo`` per member (about 30,000 per CC3M
shard of 10,000 samples), never the shard's bytes; reading needs a seekable local file.

A *sample* is a key with an image member (``jpg``, ``jpeg``, ``png`` or ``webp``, any case) and a ``txt``
caption: exactly what ``sizes.json`` counts. Keys lacking either are counted, not returned.
"""
from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webdataset.tariterators import base_plus_ext

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
"""Sample members that count as the image, in order of preference."""


class ShardReadError(OSError):
    """A tar whose headers or members cannot be read (truncated, or not a tar)."""


@dataclass(frozen=True)
class TarIndex:
    """The samples of one tar in key order (``samples[i] = (key, {extension: TarInfo})``, extensions lower
    case), the keys without an image or without a caption, and the header error that ended the listing early
    (``None`` when the whole tar was listed)."""

    path: Path
    samples: list[tuple[str, dict[str, tarfile.TarInfo]]]
    n_no_image: int = 0
    n_no_text: int = 0
    error: str | None = field(default=None)

    def __len__(self) -> int:
        return len(self.samples)


def index_tar(path: str | Path) -> TarIndex:
    """List the samples of ``path`` in key order from its member headers (see the module docstring).

    A tar that ends inside a header or a member is listed up to there and the error is kept in ``error``; a file
    that is not a tar at all raises :class:`ShardReadError`.
    """
    path = Path(path)
    members: dict[str, dict[str, tarfile.TarInfo]] = {}
    error = None
    try:
        with tarfile.open(path, mode="r:") as tar:
            try:
                listed = tar.getmembers()
            except (tarfile.TarError, OSError) as err:  # truncated: keep what was listed before the error
                listed, error = tar.members, f"{type(err).__name__}: {err}"
    except (tarfile.TarError, OSError) as err:
        raise ShardReadError(f"{path} is not a readable tar ({err})") from err
    for info in listed:
        if not info.isreg() or Path(info.name).name.startswith("__"):
            continue
        key, ext = base_plus_ext(info.name)
        if key is not None:
            members.setdefault(key, {})[ext.lower()] = info
    samples, no_image, no_text = [], 0, 0
    for key in sorted(members):
        exts = members[key]
        has_image = any(e in exts for e in IMAGE_EXTENSIONS)
        no_image += not has_image
        no_text += has_image and "txt" not in exts
        if has_image and "txt" in exts:
            samples.append((key, exts))
    return TarIndex(path, samples, no_image, no_text, error)


def read_samples(index: TarIndex, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
    """Samples ``start .. stop - 1`` of a tar, in key order, as webdataset raw samples: ``{"__key__": key,
    "__url__": path, extension: bytes, ...}``. A member whose bytes run past the end of the file raises
    :class:`ShardReadError` (the samples before it have been yielded)."""
    with index.path.open("rb") as f:
        for key, members in index.samples[start:stop]:
            sample: dict[str, Any] = {"__key__": key, "__url__": str(index.path)}
            for ext, info in members.items():
                f.seek(info.offset_data)
                data = f.read(info.size)
                if len(data) != info.size:
                    raise ShardReadError(f"{index.path}: member {info.name} is cut short ({len(data)} of "
                                         f"{info.size} bytes); the tar is truncated")
                sample[ext] = data
            yield sample
