"""Zero-shot evaluation at GOI scale (125,436 images x 19,994 classes): scoring, top-k and hits, and the encoders.

Scoring: synthetic unit embeddings (``images`` x ``dim`` on the host, as :func:`otterlib.evaluate.encode_images`
returns them; ``classes`` x ``dim``) through the suite's own :func:`otterlib.evaluate.topk_chunked` (k = 10 on
``device``) and :func:`otterlib.evaluate.hits_at_k` (1–12 labels per image, -1 padded); reported as seconds and
image-class scores per second. ``--encode`` adds the encoders' rates at the evaluation batch: images/s of the image
encoder (eval mode, fp32 as ``encode_images`` runs it now, and bf16 autocast) and captions/s of the text encoder
over the class prompts, so the end-to-end time of the full set can be estimated with the loader's decode rate
(:mod:`otterlib.bench_loader`): decoding overlaps encoding in the DataLoader, scoring follows.

``python -m otterlib.bench_eval --device cuda --encode`` (full scale); on a CPU pass ``--images 4096 --classes
2000`` and compare scores/s.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from otterlib.config import ModelConfig
from otterlib.env import resolve_device
from otterlib.evaluate import hits_at_k, topk_chunked

GOI_IMAGES: int = 125_436
"""Images of the Open Images V6 test split the paper evaluates (GOI)."""
GOI_CLASSES: int = 19_994
"""Class names of the paper's GOI candidate list."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_eval(n_images: int, n_classes: int, dim: int, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, D) and (C, D) unit float32 embeddings on the host and (N, 12) label ids (1–12 per image, -1 padded)."""
    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    classes = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)
    labels = torch.randint(0, n_classes, (n_images, 12), generator=g)
    count = torch.randint(1, 13, (n_images, 1), generator=g)
    labels[torch.arange(12)[None, :] >= count] = -1
    return images, classes, labels


def scoring_time(n_images: int, n_classes: int, dim: int, device: torch.device, chunk_size: int = 4096,
                 k: int = 10) -> dict[str, float]:
    """Seconds of top-k (``topk_chunked``) and of hits (``hits_at_k``, ks 1, 2, 5, 10), warm (after one run on
    a slice), and image-class scores per second."""
    images, classes, labels = synthetic_eval(n_images, n_classes, dim)
    topk_chunked(images[:chunk_size], classes, k, chunk_size, device)  # warm-up: kernels, allocator
    _sync(device)
    t0 = time.perf_counter()
    _, idx = topk_chunked(images, classes, k, chunk_size, device)
    _sync(device)
    t1 = time.perf_counter()
    hits = hits_at_k(idx.to(device), labels, (1, 2, 5, 10))
    _sync(device)
    t2 = time.perf_counter()
    return {"images": n_images, "classes": n_classes, "dim": dim, "topk_s": t1 - t0, "hits_s": t2 - t1,
            "scores_per_s": n_images * n_classes / (t1 - t0), "hit@1": hits[1].float().mean().item()}


def encoder_rates(model_cfg: ModelConfig, batch: int, image_size: int, device: torch.device, n_classes: int,
                  repeats: int = 3) -> dict[str, float]:
    """Images/s of the image encoder (eval mode, no grad) in fp32 and, on CUDA, under bf16 autocast; captions/s of
    the text encoder over ``n_classes`` prompts ``a photo of <word>.`` (batches of ``batch``)."""
    from otterlib.models import create_model

    torch.manual_seed(0)
    model = create_model(model_cfg).to(device).eval()
    images = torch.randn(batch, 3, image_size, image_size, device=device)
    prompts = [f"a photo of class{i}." for i in range(n_classes)]
    out: dict[str, float] = {}
    precisions = [("fp32", None)] + ([("bf16", torch.bfloat16)] if device.type == "cuda" else [])
    with torch.no_grad():
        for name, dtype in precisions:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                model.encode_image(images)
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(repeats):
                    model.encode_image(images)
                _sync(device)
                out[f"image_{name}_per_s"] = repeats * batch / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for s in range(0, n_classes, batch):
            model.encode_text(prompts[s:s + batch])
        _sync(device)
        out["text_fp32_per_s"] = n_classes / (time.perf_counter() - t0)
    return out


def estimate_total_s(n_images: int, n_classes: int, decode_per_s: float, image_per_s: float, text_per_s: float,
                     scoring_s: float) -> float:
    """Seconds for the whole set: decoding overlaps image encoding (the slower sets the pace), then class prompts
    are encoded and the scores, top-k and hits computed."""
    return max(n_images / decode_per_s, n_images / image_per_s) + n_classes / text_per_s + scoring_s


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=GOI_IMAGES)
    p.add_argument("--classes", type=int, default=GOI_CLASSES)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--chunk-size", type=int, default=4096)
    p.add_argument("--device", default="auto")
    p.add_argument("--encode", action="store_true", help="also time the encoders")
    p.add_argument("--image-encoder", default="timm:resnet50")
    p.add_argument("--text-encoder", default="bert_base_random")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--decode-per-s", action="append", default=[], metavar="NAME=RATE",
                   help="a decode rate (images/s, e.g. from bench_loader) to estimate the full set with; repeatable")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    dev = resolve_device(a.device)
    doc: dict[str, Any] = {"scoring": scoring_time(a.images, a.classes, a.dim, dev, a.chunk_size)}
    print("scoring:", json.dumps(doc["scoring"]), flush=True)
    if a.encode:
        cfg = ModelConfig(image_encoder=a.image_encoder, text_encoder=a.text_encoder, embed_dim=a.dim,
                          pretrained=False)
        doc["encoders"] = enc = encoder_rates(cfg, a.batch, a.image_size, dev, a.classes)
        print("encoders:", json.dumps(enc), flush=True)
        score_s = doc["scoring"]["topk_s"] + doc["scoring"]["hits_s"]
        best = max(v for k, v in enc.items() if k.startswith("image_"))
        doc["estimate_s"] = {}
        for item in a.decode_per_s:
            name, _, rate = item.partition("=")
            if not rate:
                p.error(f"--decode-per-s takes NAME=RATE, got {item!r}")
            for encode, per_s in (("fp32_as_now", enc["image_fp32_per_s"]), ("fastest", best)):
                doc["estimate_s"][f"decode_{name}+encode_{encode}"] = estimate_total_s(
                    a.images, a.classes, float(rate), per_s, enc["text_fp32_per_s"], score_s)
        print("estimate (s):", json.dumps(doc["estimate_s"]), flush=True)
    if a.json:
        a.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
