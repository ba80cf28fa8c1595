"""Webdataset loaders: the DDP-aware training stream and the in-order held-out (validation) loader.

Every shard is read in key order (:mod:`otterlib.data.shards`): the order img2dataset's threads happened to
write a shard in never reaches a batch. Training stream (:func:`build_train_loader`), for one rank and one
epoch:

1. **Shard order.** The manifest's shards are permuted by a ``random.Random`` seeded with ``(seed,
   epoch)``, the same on every rank. With each shard's samples in key order, this defines the epoch's
   stream of ``total`` samples (positions ``0 .. total - 1``; ``total`` and the per-shard counts come from
   ``sizes.json``, or from the tars' headers for a plain list of tars).
2. **Split by sample position** (:func:`plan_epoch`). Rank ``r`` of ``world_size`` owns positions
   ``[floor(r * total / world_size), floor((r + 1) * total / world_size))``: ranks differ by at most one
   sample, whatever the shard count and sizes. The rank's ``steps_per_epoch`` batches are shared among its
   ``max(num_workers, 1)`` workers as evenly as possible (batch counts differ by at most one), and worker
   ``w`` owns the next ``batch_size x its batches`` positions of the rank's range, so it reads exactly the
   samples of its batches: a contiguous run of neighbouring shards, the first and last possibly in part (the
   part before its start is skipped by offset, not read). Positions of a rank's range past its
   ``steps_per_epoch x batch_size`` are not used that epoch (fewer than one batch per rank with the default
   ``steps_per_epoch``; the next epoch's shard order puts other samples there). Readers never share a sample.
3. **Samples.** Each worker shuffles its samples with a buffer of ``shuffle_buffer`` raw (undecoded)
   samples seeded by ``(seed, epoch, rank, worker, pass)``, decodes the image with PIL (RGB) and the
   ``.txt`` caption (UTF-8), and applies ``transform`` with torch's CPU generator seeded from ``(seed,
   epoch, pass, shard name, key)`` and restored afterwards: the random crop of a sample does not depend
   on its position in the stream, on ``skip_batches`` or on the caller's RNG, and the caller's RNG
   state (CPU and CUDA) is left untouched. Transforms must draw their randomness from torch's CPU
   generator (torchvision's do).
   Samples that fail (undecodable bytes; keys without image or caption) are skipped and counted in
   :attr:`TrainLoader.stats`; a tar that cannot be read is counted and the rest of it skipped.
4. **Exact length.** Every rank yields exactly ``steps_per_epoch`` full batches (default
   ``floor(total / (batch_size * world_size))``), so DDP ranks never wait on each other. A worker whose
   samples run short (corrupt samples, or an explicit ``steps_per_epoch`` asking for more samples than the
   rank has) starts another *pass* over its own positions (new shuffle, new crops; counted in
   ``stats.extra_passes``); only then do samples repeat within an epoch.
5. **Workers.** torch's DataLoader collects the workers' batches round robin, passing over workers that
   have finished. That order is computed up front, which is what lets ``skip_batches`` resume at any batch
   with any number of workers.

Deterministic: for the same shard contents (not their member order), ``seed``, ``epoch``, ``rank``,
``world_size``, ``max(num_workers, 1)``, ``batch_size``, ``shuffle_buffer`` and transform, the batches
(captions and pixels) are identical run after run; ``num_workers=0`` and ``1`` give the same stream, other
worker counts give other (equally valid) orders. Another epoch gives another shard order, shuffle and crops.
``skip_batches=k`` yields exactly batches ``k, k+1, ...`` of that stream: the skipped samples are read and
decoded (to know which are corrupt) but not transformed.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.filters import shuffle

from otterlib.data.manifest import ShardManifest, load_manifest
from otterlib.data.shards import IMAGE_EXTENSIONS, ShardReadError, index_tar, read_samples

Transform = Callable[[Image.Image], torch.Tensor]
Batch = tuple[torch.Tensor, list[str]]


@dataclass
class LoaderStats:
    """Counters of one pass over a loader (reset at each ``iter``); with workers, summed over them."""

    batches: int = 0
    samples: int = 0
    """Samples yielded in batches."""
    corrupt_samples: int = 0
    """Samples skipped: bytes PIL / UTF-8 cannot decode, and keys without an image or a ``.txt``."""
    read_errors: int = 0
    """Tar-level errors (truncated or malformed tar); the rest of that tar is skipped."""
    extra_passes: int = 0
    """Times a worker restarted its positions to fill its batches (its samples then repeat)."""

    def add(self, counts: dict[str, int]) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + counts.get(f.name, 0))


def _resolve_shards(shards: str | Path | Sequence[str | Path]) -> tuple[list[str], list[int], ShardManifest | None]:
    """A manifest (``sizes.json`` or its folder) or an explicit list of tars -> (tar paths, samples per tar,
    manifest). Without a manifest the samples are counted from the tars' headers."""
    if isinstance(shards, (str, Path)):
        manifest = load_manifest(shards)
        return [str(p) for p in manifest.shard_paths], list(manifest.shard_sizes), manifest
    paths = [Path(s) for s in shards]
    if not paths:
        raise ValueError("no shards given: pass a sizes.json manifest or a non-empty list of .tar paths")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) not found, e.g. {missing[0]}")
    return [str(p) for p in paths], [len(index_tar(p)) for p in paths], None


class IncompleteDownloadError(RuntimeError):
    """The training shards' ``sizes.json`` says the download did not process every input row."""


def require_complete(manifest: str | Path | ShardManifest, allow_partial: bool) -> ShardManifest:
    """The manifest, if its download processed every input row; otherwise raise
    :class:`IncompleteDownloadError` saying what is missing and how to resume, or, with ``allow_partial``
    (``data.allow_partial``), warn and return it."""
    if not isinstance(manifest, ShardManifest):
        manifest = load_manifest(manifest)
    message = manifest.incompleteness()
    if message is not None:
        if not allow_partial:
            raise IncompleteDownloadError(f"{manifest.path}: {message}")
        warnings.warn(f"{manifest.path}: training on a partial download (data.allow_partial). {message}",
                      stacklevel=2)
    return manifest


def steps_per_epoch_from_manifest(manifest: str | Path | ShardManifest, batch_size: int, world_size: int = 1) -> int:
    """``floor(total / (batch_size * world_size))``: full global batches per epoch (drop_last)."""
    if not isinstance(manifest, ShardManifest):
        manifest = load_manifest(manifest)
    return _full_batches(manifest.total, batch_size, world_size, str(manifest.path))


def _full_batches(total: int, batch_size: int, world_size: int, where: str) -> int:
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"batch_size and world_size must be >= 1, got {batch_size}, {world_size}")
    steps = total // (batch_size * world_size)
    if steps < 1:
        raise ValueError(f"{where}: {total} samples are fewer than one global batch of {batch_size} x "
                         f"{world_size} ranks; lower the batch size")
    return steps


def _decode(sample: dict[str, Any]) -> tuple[Image.Image, str] | None:
    """Raw webdataset sample -> (RGB image, caption), or None when it cannot be used."""
    data = next(sample[e] for e in IMAGE_EXTENSIONS if e in sample)
    try:
        with Image.open(io.BytesIO(data)) as im:
            image = im.convert("RGB")
        caption = sample["txt"].decode("utf-8")
    except Exception:  # noqa: BLE001 - any failure of PIL or UTF-8 on downloaded bytes means a corrupt sample
        return None
    return image, caption


def _sample_seed(*parts: object) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _seeded(transform: Transform, image: Image.Image, seed: int) -> torch.Tensor:
    """``transform(image)`` with torch's CPU generator seeded to ``seed``, then restored (CUDA RNGs untouched)."""
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        return transform(image)
    finally:
        generator.set_state(state)


# --------------------------------------------------------------------------------------------------
# The epoch plan


@dataclass(frozen=True)
class ReaderPlan:
    """What one worker of one rank reads in an epoch: ``slices`` ``(shard, start, stop)`` = samples
    ``start .. stop - 1`` (key order) of the ``shard``-th shard of the epoch's order, and ``batches``, its
    share of the rank's batches."""

    slices: tuple[tuple[int, int, int], ...]
    batches: int

    @property
    def n_samples(self) -> int:
        return sum(stop - start for _, start, stop in self.slices)


def _slices(sizes: Sequence[int], offsets: Sequence[int], start: int, stop: int) -> tuple[tuple[int, int, int], ...]:
    """Stream positions ``[start, stop)`` as per-shard ``(shard, first, end)`` slices (``offsets`` = cumsum)."""
    out = []
    for shard, (first, size) in enumerate(zip(offsets, sizes)):
        lo, hi = max(start, first), min(stop, first + size)
        if lo < hi:
            out.append((shard, lo - first, hi - first))
    return tuple(out)


def plan_epoch(shard_sizes: Sequence[int], *, world_size: int, n_workers: int, batch_size: int,
               steps: int) -> list[list[ReaderPlan]]:
    """Who reads what in one epoch: ``plan[rank][worker]`` (module docstring, step 2).

    Args:
        shard_sizes: samples per shard, in the epoch's shard order.
        world_size, n_workers: ranks, and workers per rank (``max(num_workers, 1)``).
        batch_size: per-rank batch; ``steps``: batches per rank.

    Rank ranges are ``floor(r * total / world_size)`` boundaries; worker ``w``'s range ends at
    ``min(batch_size * b_w, floor(N_r * b_w / steps))`` past the rank's start, where ``b_w`` counts the batches
    of workers ``0..w`` and ``N_r`` the rank's samples: exactly its batches' samples when the rank has enough,
    otherwise a share of the rank's range in proportion to its batches (it then makes extra passes).
    """
    if steps < 1 or batch_size < 1 or world_size < 1 or n_workers < 1:
        raise ValueError(f"steps, batch_size, world_size and n_workers must be >= 1, got {steps}, {batch_size}, "
                         f"{world_size}, {n_workers}")
    offsets = list(itertools.accumulate(shard_sizes, initial=0))
    total = offsets.pop()
    batches = [steps // n_workers + (w < steps % n_workers) for w in range(n_workers)]
    ends = list(itertools.accumulate(batches, initial=0))
    plan = []
    for rank in range(world_size):
        first, last = rank * total // world_size, (rank + 1) * total // world_size
        bounds = [first + min(batch_size * b, (last - first) * b // steps) for b in ends]
        workers = [ReaderPlan(_slices(shard_sizes, offsets, lo, hi), n) for lo, hi, n in zip(bounds, bounds[1:], batches)]
        for worker, reader in enumerate(workers):
            if reader.batches and not reader.n_samples:
                raise ValueError(f"rank {rank} worker {worker} gets no samples: {total} samples for {world_size} "
                                 f"ranks x {n_workers} workers and {steps} batches; use fewer ranks or workers")
        plan.append(workers)
    return plan


def _owners(quotas: list[int]) -> list[int]:
    """The worker of each batch position when workers are polled round robin and exhausted ones are
    passed over (what torch's DataLoader does with an IterableDataset)."""
    left, owners, worker = list(quotas), [], 0
    while len(owners) < sum(quotas):
        if left[worker]:
            owners.append(worker)
            left[worker] -= 1
        worker = (worker + 1) % len(quotas)
    return owners


# --------------------------------------------------------------------------------------------------
# Reading


def _read_slices(shards: Sequence[str], slices: Sequence[tuple[int, int, int | None]],
                 counts: dict[str, int]) -> Iterator[dict[str, Any]]:
    """Raw samples of the given shard slices ``(shard, start, stop)`` in key order (``stop`` None: to the end). Keys without an image or caption are counted as
    corrupt by the slice that starts the shard; a tar that cannot be read counts one read error and the rest
    of it is skipped."""
    for shard, start, stop in slices:
        try:
            index = index_tar(shards[shard])
            if start == 0:
                counts["corrupt_samples"] += index.n_no_image + index.n_no_text
            counts["read_errors"] += index.error is not None
            yield from read_samples(index, start, stop)
        except ShardReadError:
            counts["read_errors"] += 1


class _TrainStream(IterableDataset):
    """One rank's batches, made by its workers (module docstring)."""

    def __init__(self, shard_order: list[str], readers: list[ReaderPlan], transform: Transform, *,
                 batch_size: int, skip: int, seed: int, epoch: int, rank: int, shuffle_buffer: int) -> None:
        super().__init__()
        self.shards, self.readers, self.transform = shard_order, readers, transform
        self.batch_size, self.skip = batch_size, skip
        self.seed, self.epoch, self.rank = seed, epoch, rank
        self.shuffle_buffer = shuffle_buffer
        self.quotas = [r.batches for r in readers]
        self.steps = sum(self.quotas)
        self.owners = _owners(self.quotas)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str], dict[str, int]]]:
        info = get_worker_info()
        slot = 0 if info is None else info.id
        # DataLoader polls slot 0 first; map slots so that slot 0 is the worker owning batch `skip`.
        first = self.owners[self.skip] if self.skip < self.steps else 0
        return self.worker_batches((first + slot) % len(self.readers))

    def worker_batches(self, worker: int) -> Iterator[tuple[torch.Tensor, list[str], dict[str, int]]]:
        n_batches = self.quotas[worker]
        n_skip = self.owners[: self.skip].count(worker)
        reader = self.readers[worker]
        totals = {"corrupt_samples": 0, "read_errors": 0, "extra_passes": 0}  # reported as deltas per batch
        reported = dict(totals)
        done = 0  # batches completed (skipped or yielded)
        images: list[torch.Tensor] = []
        captions: list[str] = []
        in_batch = 0
        if n_skip >= n_batches:
            return
        for pass_idx in itertools.count():
            totals["extra_passes"] += pass_idx > 0
            rng = random.Random(f"otterlib-samples:{self.seed}:{self.epoch}:{self.rank}:{worker}:{pass_idx}")
            raw = _read_slices(self.shards, reader.slices, totals)
            if self.shuffle_buffer > 1:
                raw = shuffle(bufsize=self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(raw)
            good = 0
            for sample in raw:
                decoded = _decode(sample)
                if decoded is None:
                    totals["corrupt_samples"] += 1
                    continue
                good += 1
                if done >= n_skip:
                    image, caption = decoded
                    name = f"{Path(sample['__url__']).name}/{sample['__key__']}"
                    seed = _sample_seed(self.seed, self.epoch, pass_idx, name)
                    images.append(_seeded(self.transform, image, seed))
                    captions.append(caption)
                in_batch += 1
                if in_batch < self.batch_size:
                    continue
                in_batch = 0
                done += 1
                if images:
                    yield torch.stack(images), captions, {k: v - reported[k] for k, v in totals.items()}
                    images, captions, reported = [], [], dict(totals)
                if done == n_batches:
                    return
            if good == 0:
                raise RuntimeError(f"rank {self.rank} worker {worker}: no readable sample in its "
                                   f"{len(reader.slices)} shard slice(s) (e.g. "
                                   f"{self.shards[reader.slices[0][0]]}); check the data")


class TrainLoader:
    """Iterable of ``(images (B, 3, H, W) float32, captions list[str])``: exactly :meth:`__len__` batches.

    Iterating again replays the same epoch. :attr:`stats` holds the counters of the latest iteration.
    """

    def __init__(self, stream: _TrainStream, num_workers: int, manifest: ShardManifest | None) -> None:
        self._stream = stream
        self.num_workers = num_workers
        self.manifest = manifest
        self.steps_per_epoch = stream.steps
        self.stats = LoaderStats()

    def __len__(self) -> int:
        """Batches this loader yields: ``steps_per_epoch - skip_batches``."""
        return self._stream.steps - self._stream.skip

    def __iter__(self) -> Iterator[Batch]:
        self.stats = LoaderStats()
        if self.num_workers == 0:
            source: Any = iter(self._stream)
        else:
            source = DataLoader(self._stream, batch_size=None, num_workers=self.num_workers, persistent_workers=False)
        for images, captions, counts in source:
            self.stats.add({**counts, "batches": 1, "samples": len(captions)})
            yield images, captions
        if self.stats.batches != len(self):
            raise RuntimeError(f"loader produced {self.stats.batches} batches instead of {len(self)}")


def build_train_loader(shards: str | Path | Sequence[str | Path], *, batch_size: int, transform: Transform,
                       epoch: int, seed: int, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                       shuffle_buffer: int = 1000, steps_per_epoch: int | None = None,
                       skip_batches: int = 0) -> TrainLoader:
    """The training stream of one rank for one epoch (see the module docstring for what is deterministic).

    ``shards``: a ``sizes.json`` manifest (or its folder), or a list of tars (their samples are then counted
    from the tar headers). ``batch_size`` is per rank. ``steps_per_epoch`` defaults to
    ``floor(total / (batch_size * world_size))``. ``skip_batches`` resumes mid-epoch: the loader then yields
    batches ``skip_batches .. steps_per_epoch - 1``.
    """
    paths, sizes, manifest = _resolve_shards(shards)
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
    if num_workers < 0 or shuffle_buffer < 0 or epoch < 0:
        raise ValueError(f"num_workers, shuffle_buffer and epoch must be >= 0, got {num_workers}, {shuffle_buffer}, "
                         f"{epoch}")
    if steps_per_epoch is None:
        steps_per_epoch = _full_batches(sum(sizes), batch_size, world_size, str(manifest.path if manifest else paths))
    if steps_per_epoch < 1 or not 0 <= skip_batches <= steps_per_epoch:
        raise ValueError(f"need steps_per_epoch >= 1 and 0 <= skip_batches <= steps_per_epoch, got "
                         f"{steps_per_epoch}, {skip_batches}")
    order = list(range(len(paths)))
    random.Random(f"otterlib-shards:{seed}:{epoch}").shuffle(order)
    plan = plan_epoch([sizes[i] for i in order], world_size=world_size, n_workers=max(num_workers, 1),
                      batch_size=batch_size, steps=steps_per_epoch)
    stream = _TrainStream([paths[i] for i in order], plan[rank], transform, batch_size=batch_size,
                          skip=skip_batches, seed=seed, epoch=epoch, rank=rank, shuffle_buffer=shuffle_buffer)
    return TrainLoader(stream, num_workers, manifest)


class EvalPairsLoader:
    """Iterable of ``(images (b, 3, H, W), captions)`` over every sample in shard order and key order;
    all batches have ``batch_size`` samples except possibly the last. Corrupt samples are skipped and
    counted in :attr:`stats`."""

    def __init__(self, shards: list[str], batch_size: int, transform: Transform,
                 manifest: ShardManifest | None) -> None:
        self.shards, self.batch_size, self.transform, self.manifest = shards, batch_size, transform, manifest
        self.stats = LoaderStats()

    def __iter__(self) -> Iterator[Batch]:
        self.stats = LoaderStats()
        counts = {"corrupt_samples": 0, "read_errors": 0}
        images: list[torch.Tensor] = []
        captions: list[str] = []
        for sample in _read_slices(self.shards, [(i, 0, None) for i in range(len(self.shards))], counts):
            decoded = _decode(sample)
            if decoded is None:
                counts["corrupt_samples"] += 1
                continue
            images.append(self.transform(decoded[0]))
            captions.append(decoded[1])
            if len(captions) == self.batch_size:
                yield self._emit(images, captions, counts)
                images, captions = [], []
        if captions:
            yield self._emit(images, captions, counts)
        self.stats.corrupt_samples, self.stats.read_errors = counts["corrupt_samples"], counts["read_errors"]

    def _emit(self, images: list[torch.Tensor], captions: list[str], counts: dict[str, int]) -> Batch:
        self.stats.batches += 1
        self.stats.samples += len(captions)
        self.stats.corrupt_samples, self.stats.read_errors = counts["corrupt_samples"], counts["read_errors"]
        return torch.stack(images), captions


def build_eval_pairs_loader(shards: str | Path | Sequence[str | Path], batch_size: int,
                            transform: Transform) -> EvalPairsLoader:
    """All image-caption pairs of held-out shards (e.g. CC3M validation), in a fixed order, no shuffle."""
    paths, _, manifest = _resolve_shards(shards)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return EvalPairsLoader(paths, batch_size, transform, manifest)
