"""Does the real training loader keep up with the training step? Samples/s of the webdataset loader per worker count.

The loader is the trainer's (:func:`otterlib.data.loader.build_train_loader` with the paper's train transform:
decode JPEG with PIL, resize the shorter side to 256, random crop 224, normalise). The shards are an existing
``sizes.json`` folder (``--shards``) or synthetic captioned shapes written as 256-px JPEG (quality 95, as
img2dataset writes CC3M) by :func:`write_jpeg_shards` (``--make N``). Per worker count: the first batch (worker
start-up) is timed apart, then ``batches`` batches give samples/s. ``--decode N`` also times JPEG decoding alone
on N images of the shards and on N synthetic images of ``--decode-px`` (default 1024, the size of Open Images
originals, which GOI evaluation decodes): PIL on one CPU core against ``torchvision.io.decode_jpeg`` on the
benchmark's device (batched; on CUDA, nvJPEG), and on CUDA the host-to-device copy of one batch from pageable and
from pinned memory.

``python -m otterlib.bench_loader --make 4096 --batch 512 --workers 4,8,16 --step-samples-per-s 3000``
"""
from __future__ import annotations

import argparse
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import torch

from otterlib.env import resolve_device
from otterlib.timing import spread

REQUIRED_MARGIN: float = 1.2
"""The loader must deliver at least this multiple of the training step's samples/s (issue 13)."""


def write_jpeg_shards(folder: Path, n: int, image_size: int = 256, per_shard: int = 512, seed: int = 0,
                      quality: int = 95, noise_fraction: float = 0.0) -> Path:
    """``n`` synthetic captioned shapes (``noise_fraction`` of them with corrupted captions) as webdataset tars of
    ``per_shard`` samples (``.jpg`` + ``.txt``, as img2dataset writes them) and their ``sizes.json``; returns the
    manifest's path."""
    import webdataset as wds

    from otterlib.data.manifest import index_existing_shards
    from otterlib.data.synthetic import generate_pairs

    if n < 1 or per_shard < 1:
        raise ValueError(f"need n >= 1 and per_shard >= 1, got {n}, {per_shard}")
    folder.mkdir(parents=True, exist_ok=True)
    pairs = generate_pairs(n, noise_fraction, seed)
    for start in range(0, n, per_shard):
        with wds.TarWriter(str(folder / f"{start // per_shard:05d}.tar")) as sink:
            for p in pairs[start:start + per_shard]:
                sink.write({"__key__": p.key, "jpg": _jpeg(p, image_size, seed, quality), "txt": p.caption})
    index_existing_shards(folder)
    return folder / "sizes.json"


def loader_throughput(manifest: Path, batch_size: int, image_size: int, num_workers: int, batches: int,
                      shuffle_buffer: int = 2048) -> dict[str, float | int]:
    """``first_batch_s`` (worker start-up and the first batch) and ``samples_per_s`` over ``batches`` batches of the
    trainer's loader with ``num_workers`` workers, after the first ``max(num_workers, 1)`` batches: each worker
    makes its first batch at the same time, so those arrive together and would inflate the rate."""
    from otterlib.data.loader import build_train_loader
    from otterlib.data.transforms import train_transform

    loader = build_train_loader(manifest, batch_size=batch_size, transform=train_transform(image_size), epoch=0,
                                seed=0, num_workers=num_workers, shuffle_buffer=shuffle_buffer,
                                steps_per_epoch=batches + max(num_workers, 1))
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    t1 = time.perf_counter()
    for _ in range(max(num_workers, 1) - 1):
        next(it)
    t2 = time.perf_counter()
    n = sum(len(captions) for _, captions in it)
    t3 = time.perf_counter()
    return {"num_workers": num_workers, "first_batch_s": t1 - t0, "samples_per_s": n / (t3 - t2), "samples": n}


def _jpeg_bytes(manifest: Path, n: int) -> list[bytes]:
    """The first ``n`` JPEG payloads of the manifest's shards."""
    out: list[bytes] = []
    for tar_path in sorted(manifest.parent.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.name.endswith(".jpg"):
                    out.append(tar.extractfile(member).read())  # type: ignore[union-attr]
                    if len(out) == n:
                        return out
    if not out:
        raise ValueError(f"no .jpg members in the shards next to {manifest}")
    return out


def _jpeg(pair: Any, size: int, seed: int, quality: int) -> bytes:
    """A synthetic pair's scene rendered at ``size`` px (texture seeded by its key), JPEG-encoded."""
    from otterlib.data.synthetic import image_seed, render_scene

    buf = io.BytesIO()
    render_scene(pair.scene, size, seed=image_seed(pair.key, seed)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def rendered_jpegs(n: int, size: int, seed: int = 0, quality: int = 95) -> list[bytes]:
    """``n`` synthetic scenes rendered at ``size`` px, JPEG-encoded."""
    from otterlib.data.synthetic import generate_pairs

    return [_jpeg(p, size, seed, quality) for p in generate_pairs(n, 0.0, seed)]


def decode_throughput(payloads: list[bytes], image_size: int, device: torch.device,
                      repeats: int = 3) -> dict[str, Any]:
    """Images/s (median of ``repeats``) of decoding ``payloads`` + the train transform with PIL on one core, and of
    batched ``torchvision.io.decode_jpeg`` + resize + crop on ``device``; on CUDA also the host-to-device copy (ms)
    of a (n, 3, S, S) float32 batch from pageable and from pinned memory."""
    from PIL import Image
    from torchvision.io import decode_jpeg
    from torchvision.transforms import v2

    from otterlib.data.transforms import default_resize_size, train_transform

    transform = train_transform(image_size)
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in payloads]
    resize = v2.Compose([v2.Resize(default_resize_size(image_size), antialias=True), v2.RandomCrop(image_size)])

    def pil() -> None:
        for b in payloads:
            transform(Image.open(io.BytesIO(b)))

    def device_decode() -> None:
        images = decode_jpeg(tensors, device=device)
        torch.stack([resize(img) for img in images])
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    out: dict[str, Any] = {"images": len(payloads), "device": str(device)}
    for name, fn in (("pil_one_core_images_per_s", pil), ("decode_jpeg_images_per_s", device_decode)):
        fn()  # warm-up (nvJPEG handles, kernels)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = len(payloads) / spread(times)["median"]
    if device.type == "cuda":
        batch = torch.randn(len(payloads), 3, image_size, image_size)
        for name, host in (("h2d_pageable_ms", batch), ("h2d_pinned_ms", batch.pin_memory())):
            times = []
            for _ in range(repeats + 1):
                torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                host.to(device, non_blocking=True)
                torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
            out[name] = spread(times[1:])["median"] * 1e3
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", type=Path, help="a folder with sizes.json and its tars")
    src.add_argument("--make", type=int, metavar="N", help="write N synthetic 256-px samples to --workdir first")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/otter-bench-shards"))
    p.add_argument("--shard-size", type=int, default=256, help="pixels of the written shards' images")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    p.add_argument("--batches", type=int, default=4, help="timed batches per worker count (after one per worker)")
    p.add_argument("--step-samples-per-s", type=float, help="the training step's rate; the loader must reach "
                                                             f"{REQUIRED_MARGIN} x this")
    p.add_argument("--decode", type=int, metavar="N", help="also time JPEG decoding of N images")
    p.add_argument("--decode-px", type=int, default=1024, help="size of the rendered images --decode also times")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    manifest = a.shards / "sizes.json" if a.shards else write_jpeg_shards(a.workdir, a.make, a.shard_size)
    rows = []
    for w in (int(x) for x in a.workers.split(",")):
        row = loader_throughput(manifest, a.batch, a.image_size, w, a.batches)
        if a.step_samples_per_s:
            row["ratio_to_step"] = row["samples_per_s"] / a.step_samples_per_s
        rows.append(row)
        print(f"workers {w:>3}: {row['samples_per_s']:9.1f} samples/s (first batch {row['first_batch_s']:.1f} s)"
              + (f"  x{row['ratio_to_step']:.2f} of the step (need x{REQUIRED_MARGIN})" if a.step_samples_per_s
                 else ""), flush=True)
    doc: dict[str, Any] = {"manifest": str(manifest), "batch": a.batch, "image_size": a.image_size, "loader": rows}
    if a.decode:
        dev = resolve_device(a.device)
        doc["decode"] = {"shards": decode_throughput(_jpeg_bytes(manifest, a.decode), a.image_size, dev),
                         f"rendered_{a.decode_px}px": decode_throughput(rendered_jpegs(a.decode, a.decode_px),
                                                                         a.image_size, dev)}
        print("decode:", json.dumps(doc["decode"]), flush=True)
    if a.json:
        a.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
