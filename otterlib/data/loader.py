"""Webdataset loaders: the DDP-aware training stream and the in-order held-out (validation) loader.

Training stream (:func:`build_train_loader`), for one rank and one epoch:

1. **Shard order.** The manifest's shards are permuted by a ``random.Random`` seeded with ``(seed,
   epoch)``, the same on every rank.
2. **Split.** There are ``units = world_size * max(num_workers, 1)`` readers; reader ``u = rank *
   max(num_workers, 1) + worker`` takes shards ``order[u::units]``. With fewer shards than readers,
   every reader walks all shards in that order and keeps the samples whose position ``i`` in the
   concatenated stream has ``i % units == u``. Either way the readers' samples are disjoint, and their
   union over all ranks and workers is the whole manifest.
3. **Samples.** Each reader shuffles its samples with a buffer of ``shuffle_buffer`` raw (undecoded)
   samples seeded by ``(seed, epoch, rank, worker, pass)``, decodes the image with PIL (RGB) and the
   ``.txt`` caption (UTF-8), and applies ``transform`` with torch's CPU generator seeded from ``(seed,
   epoch, pass, shard name, key)`` and restored afterwards: the random crop of a sample does not depend
   on its position in the stream, on ``skip_batches`` or on the caller's RNG, and the caller's RNG
   state (CPU and CUDA) is left untouched. Transforms must draw their randomness from torch's CPU
   generator (torchvision's do).
   Samples that fail (no image, no caption, undecodable bytes) are skipped and counted in
   :attr:`TrainLoader.stats`; a tar that cannot be read is counted and the rest of it skipped.
4. **Exact length.** Every rank yields exactly ``steps_per_epoch`` full batches (default
   ``floor(total / (batch_size * world_size))`` from ``sizes.json``), so DDP ranks never wait on each
   other. A reader that runs out of samples starts another *pass* over its own subset (new shuffle, new
   crops; counted in ``stats.extra_passes``); samples past its last batch are dropped. With shard-level
   splitting ranks differ by up to one shard, so an epoch repeats or drops up to about one shard per rank.
5. **Workers.** A rank's batches are shared among its workers in proportion to their readers' sample
   counts (from ``sizes.json``; shard counts for a plain list of tars), and torch's DataLoader collects
   them round robin, passing over workers that have finished. That order is computed up front, which
   is what lets ``skip_batches`` resume at any batch with any number of workers.

Deterministic: for the same shard list, ``seed``, ``epoch``, ``rank``, ``world_size``,
``max(num_workers, 1)``, ``batch_size``, ``shuffle_buffer`` and transform, the batches (captions and
pixels) are identical run after run; ``num_workers=0`` and ``1`` give the same stream, other worker
counts give other (equally valid) orders. Another epoch gives another shard order, shuffle and crops.
``skip_batches=k`` yields exactly batches ``k, k+1, ...`` of that stream: the skipped samples are read and
decoded (to know which are corrupt) but not transformed.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.filters import shuffle
from webdataset.tariterators import tarfile_samples

from otterlib.data.cc3m import IMAGE_EXTENSIONS, ShardManifest, load_manifest

Transform = Callable[[Image.Image], torch.Tensor]
Batch = tuple[torch.Tensor, list[str]]


@dataclass
class LoaderStats:
    """Counters of one pass over a loader (reset at each ``iter``); with workers, summed over them."""

    batches: int = 0
    samples: int = 0
    """Samples yielded in batches."""
    corrupt_samples: int = 0
    """Samples skipped: no image member, no ``.txt``, or bytes PIL / UTF-8 cannot decode."""
    read_errors: int = 0
    """Tar-level errors (missing, truncated or malformed tar); the rest of that tar is skipped. (A tar cut
    exactly between two members reads as a shorter tar, without an error.)"""
    extra_passes: int = 0
    """Times a reader restarted its subset to fill ``steps_per_epoch`` batches (its samples then repeat)."""

    def add(self, counts: dict[str, int]) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + counts.get(f.name, 0))


def _resolve_shards(shards: str | Path | Sequence[str | Path]) -> tuple[list[str], ShardManifest | None]:
    """A manifest (``sizes.json`` or its folder) or an explicit list of tars -> (tar paths, manifest)."""
    if isinstance(shards, (str, Path)):
        manifest = load_manifest(shards)
        return [str(p) for p in manifest.shard_paths], manifest
    paths = [Path(s) for s in shards]
    if not paths:
        raise ValueError("no shards given: pass a sizes.json manifest or a non-empty list of .tar paths")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) not found, e.g. {missing[0]}")
    return [str(p) for p in paths], None


def steps_per_epoch_from_manifest(manifest: str | Path | ShardManifest, batch_size: int, world_size: int = 1) -> int:
    """``floor(total / (batch_size * world_size))``: full global batches per epoch (drop_last)."""
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"batch_size and world_size must be >= 1, got {batch_size}, {world_size}")
    if not isinstance(manifest, ShardManifest):
        manifest = load_manifest(manifest)
    steps = manifest.total // (batch_size * world_size)
    if steps < 1:
        raise ValueError(f"{manifest.path}: {manifest.total} samples are fewer than one global batch of "
                         f"{batch_size} x {world_size} ranks; lower the batch size")
    return steps


def _decode(sample: dict[str, Any]) -> tuple[Image.Image, str] | None:
    """Raw webdataset sample -> (RGB image, caption), or None when it cannot be used."""
    data = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
    text = sample.get("txt")
    if data is None or text is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            image = im.convert("RGB")
        caption = text.decode("utf-8")
    except Exception:  # noqa: BLE001 - any failure of PIL or UTF-8 on downloaded bytes means a corrupt sample
        return None
    return image, caption


def _raw_samples(shards: Sequence[str], stride: int, offset: int, counts: dict[str, int]) -> Iterator[dict[str, Any]]:
    """Undecoded samples of ``shards`` in order, keeping positions ``i`` with ``i % stride == offset``."""

    def on_error(_: Exception) -> bool:
        counts["read_errors"] += 1
        return True

    stream = tarfile_samples(iter([{"url": s} for s in shards]), handler=on_error)
    for i, sample in enumerate(stream):
        if i % stride == offset:
            yield sample


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


@dataclass(frozen=True)
class _Reader:
    """What one logical worker of a rank reads: ``shards`` in order, keeping stream positions
    ``i % stride == offset``; ``weight`` is its expected sample count (shard count without a manifest)."""

    shards: tuple[str, ...]
    stride: int
    offset: int
    weight: int


def _plan_readers(order: list[str], sizes: dict[str, int] | None, rank: int, world_size: int,
                  n_workers: int) -> list[_Reader]:
    units = world_size * n_workers
    readers = []
    for worker in range(n_workers):
        unit = rank * n_workers + worker
        if len(order) >= units:
            shards = tuple(order[unit::units])
            readers.append(_Reader(shards, 1, 0, sum(sizes[s] for s in shards) if sizes else len(shards)))
        else:
            total = sum(sizes.values()) if sizes else units
            readers.append(_Reader(tuple(order), units, unit, len(range(unit, total, units))))
    return readers


def _quotas(steps: int, weights: list[int]) -> list[int]:
    """Split ``steps`` batches in proportion to ``weights`` (largest remainder, ties to the lower index)."""
    total = sum(weights)
    floors = [steps * w // total for w in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(steps * weights[i] % total), i))
    for i in by_remainder[: steps - sum(floors)]:
        floors[i] += 1
    return floors


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


class _TrainStream(IterableDataset):
    """One rank's batches, made by ``n_workers`` logical workers (module docstring)."""

    def __init__(self, shard_order: list[str], sizes: dict[str, int] | None, transform: Transform, *,
                 batch_size: int, steps: int, skip: int, seed: int, epoch: int, rank: int, world_size: int,
                 n_workers: int, shuffle_buffer: int) -> None:
        super().__init__()
        self.transform = transform
        self.batch_size, self.steps, self.skip = batch_size, steps, skip
        self.seed, self.epoch, self.rank = seed, epoch, rank
        self.n_workers, self.shuffle_buffer = n_workers, shuffle_buffer
        self.readers = _plan_readers(shard_order, sizes, rank, world_size, n_workers)
        weights = [r.weight for r in self.readers]
        if sum(weights) == 0:
            raise ValueError(f"rank {rank} gets no samples: {sum(sizes.values()) if sizes else 0} samples for "
                             f"{world_size} ranks x {n_workers} workers; use fewer ranks or workers")
        self.quotas = _quotas(steps, weights)
        self.owners = _owners(self.quotas)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str], dict[str, int]]]:
        info = get_worker_info()
        slot = 0 if info is None else info.id
        # DataLoader polls slot 0 first; map slots so that slot 0 is the worker owning batch `skip`.
        first = self.owners[self.skip] if self.skip < self.steps else 0
        return self.worker_batches((first + slot) % self.n_workers)

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
            raw = _raw_samples(reader.shards, reader.stride, reader.offset, totals)
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
                                   f"{len(reader.shards)} shard(s) (e.g. {reader.shards[0]}); check the data")


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

    ``shards``: a ``sizes.json`` manifest (or its folder), or a list of tars (then ``steps_per_epoch``
    is required). ``batch_size`` is per rank. ``skip_batches`` resumes mid-epoch: the loader then
    yields batches ``skip_batches .. steps_per_epoch - 1``.
    """
    paths, manifest = _resolve_shards(shards)
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
    if num_workers < 0 or shuffle_buffer < 0 or epoch < 0:
        raise ValueError(f"num_workers, shuffle_buffer and epoch must be >= 0, got {num_workers}, {shuffle_buffer}, "
                         f"{epoch}")
    if steps_per_epoch is None:
        if manifest is None:
            raise ValueError("steps_per_epoch is needed with a list of tars; pass it or pass the sizes.json manifest")
        steps_per_epoch = steps_per_epoch_from_manifest(manifest, batch_size, world_size)
    if steps_per_epoch < 1 or not 0 <= skip_batches <= steps_per_epoch:
        raise ValueError(f"need steps_per_epoch >= 1 and 0 <= skip_batches <= steps_per_epoch, got "
                         f"{steps_per_epoch}, {skip_batches}")
    order = list(paths)
    random.Random(f"otterlib-shards:{seed}:{epoch}").shuffle(order)
    sizes = dict(zip(paths, manifest.shard_sizes)) if manifest is not None else None
    stream = _TrainStream(order, sizes, transform, batch_size=batch_size, steps=steps_per_epoch, skip=skip_batches,
                          seed=seed, epoch=epoch, rank=rank, world_size=world_size, n_workers=max(num_workers, 1),
                          shuffle_buffer=shuffle_buffer)
    return TrainLoader(stream, num_workers, manifest)


class EvalPairsLoader:
    """Iterable of ``(images (b, 3, H, W), captions)`` over every sample in shard order and tar order;
    all batches have ``batch_size`` samples except possibly the last. Corrupt samples are skipped and
    counted in :attr:`stats`."""

    def __init__(self, shards: list[str], batch_size: int, transform: Transform,
                 manifest: ShardManifest | None) -> None:
        self.shards, self.batch_size, self.transform, self.manifest = shards, batch_size, transform, manifest
        self.stats = LoaderStats()

    def __iter__(self) -> Iterator[Batch]:
        self.stats = LoaderStats()
        counts = {"read_errors": 0}
        images: list[torch.Tensor] = []
        captions: list[str] = []
        for sample in _raw_samples(self.shards, 1, 0, counts):
            decoded = _decode(sample)
            if decoded is None:
                self.stats.corrupt_samples += 1
                continue
            images.append(self.transform(decoded[0]))
            captions.append(decoded[1])
            if len(captions) == self.batch_size:
                yield self._emit(images, captions, counts)
                images, captions = [], []
        if captions:
            yield self._emit(images, captions, counts)
        self.stats.read_errors = counts["read_errors"]

    def _emit(self, images: list[torch.Tensor], captions: list[str], counts: dict[str, int]) -> Batch:
        self.stats.batches += 1
        self.stats.samples += len(captions)
        self.stats.read_errors = counts["read_errors"]
        return torch.stack(images), captions


def build_eval_pairs_loader(shards: str | Path | Sequence[str | Path], batch_size: int,
                            transform: Transform) -> EvalPairsLoader:
    """All image-caption pairs of held-out shards (e.g. CC3M validation), in a fixed order, no shuffle."""
    paths, manifest = _resolve_shards(shards)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return EvalPairsLoader(paths, batch_size, transform, manifest)
