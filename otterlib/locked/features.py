"""Locked-encoder features: a dataset encoded once by frozen pretrained encoders, cached on disk.

A cache file holds the pooled features together with what produced them: the **encoder identity**
(registry name, pretrained flag, input options and the sha256 of the encoder's weights) and the **sha256 of
the data**. :func:`cached_features` returns the stored features when both match, and recomputes them (and
rewrites the file) when either differs, so a changed encoder, changed weights or changed data never reuse
stale features.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from PIL import Image
from torch import nn

from otterlib.config import ModelConfig
from otterlib.data.transforms import eval_transform


def sha256_hex(parts: Iterable[bytes | str]) -> str:
    """sha256 (hex) of a sequence of byte strings or texts, each prefixed by its length (so the split between
    parts matters: ``["ab", "c"]`` and ``["a", "bc"]`` differ)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else bytes(part)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def weights_sha256(module: nn.Module) -> str:
    """sha256 of a module's state dict: every entry's name, dtype, shape and raw bytes, in state-dict order."""
    def parts() -> Iterable[bytes | str]:
        for name, tensor in module.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            yield f"{name}|{t.dtype}|{tuple(t.shape)}"
            yield t.reshape(-1).view(torch.uint8).numpy().tobytes()
    return sha256_hex(parts())


def cached_features(path: Path, identity: Mapping[str, Any], data_sha: str,
                    compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """The features stored at ``path`` when they were made by ``identity`` from data ``data_sha``; otherwise
    ``compute()`` (an (N, F) tensor), written to ``path`` (atomically) with both. Returns (features on the
    CPU, whether they were computed now)."""
    path = Path(path)
    key = {"identity": json.loads(json.dumps(identity, sort_keys=True)), "data_sha256": data_sha}
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if {k: stored.get(k) for k in key} == key:
            return stored["features"], False
    features = compute().detach().float().cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({**key, "features": features}, tmp)
    tmp.replace(path)
    return features, True


class LockedEncoders:
    """The image and text encoders of a setting, frozen and in eval mode, loaded on first use (random-init
    weights, e.g. ``tiny_cnn``, are drawn from seed 0).

    ``encode_images``: PIL images -> (N, F_img) pooled features (eval transform at ``image_size``);
    ``encode_texts``: captions -> (N, F_txt) masked-mean-pooled features. ``image_identity`` /
    ``text_identity`` name what produced them, for :func:`cached_features` (computed once per instance).
    """

    def __init__(self, model: ModelConfig, image_size: int, batch_size: int = 64,
                 device: str | torch.device = "cpu") -> None:
        if batch_size < 1:
            raise ValueError(f"feature batch_size must be >= 1, got {batch_size}")
        self.config = model
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = torch.device(device)

    @functools.cached_property
    def image_encoder(self) -> nn.Module:
        from otterlib.models import create_image_encoder

        return _locked(lambda: create_image_encoder(self.config.image_encoder, self.config.pretrained), self.device)

    @functools.cached_property
    def text_encoder(self) -> nn.Module:
        from otterlib.models import create_text_encoder

        return _locked(lambda: create_text_encoder(self.config.text_encoder, self.config.pretrained,
                                                   self.config.max_text_tokens), self.device)

    @functools.cached_property
    def image_identity(self) -> dict[str, Any]:
        """What makes the image features: encoder name, pretrained flag, input transform, weights hash."""
        return {"encoder": self.config.image_encoder, "pretrained": self.config.pretrained,
                "transform": f"eval_transform({self.image_size})", "weights_sha256": weights_sha256(self.image_encoder)}

    @functools.cached_property
    def text_identity(self) -> dict[str, Any]:
        """What makes the text features: encoder name, pretrained flag, token limit, weights hash."""
        return {"encoder": self.config.text_encoder, "pretrained": self.config.pretrained,
                "max_text_tokens": self.config.max_text_tokens, "weights_sha256": weights_sha256(self.text_encoder)}

    @torch.inference_mode()
    def encode_images(self, images: Iterable[Image.Image]) -> torch.Tensor:
        """(N, F_img) float32 features of the images, in order (streamed ``batch_size`` at a time)."""
        transform = eval_transform(self.image_size)
        out, batch = [], []
        for img in images:
            batch.append(transform(img))
            if len(batch) == self.batch_size:
                out.append(self.image_encoder(torch.stack(batch).to(self.device)).float().cpu())
                batch = []
        if batch:
            out.append(self.image_encoder(torch.stack(batch).to(self.device)).float().cpu())
        if not out:
            raise ValueError("no images to encode")
        return torch.cat(out)

    @torch.inference_mode()
    def encode_texts(self, captions: Sequence[str]) -> torch.Tensor:
        """(N, F_txt) float32 features of the captions, in input order. Batches are formed by caption length
        (less padding); masked mean pooling makes each feature independent of its batch mates."""
        if not captions:
            raise ValueError("no captions to encode")
        order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
        out = torch.empty(0)
        for s in range(0, len(order), self.batch_size):
            rows = order[s:s + self.batch_size]
            feats = self.text_encoder([captions[i] for i in rows]).float().cpu()
            if out.numel() == 0:
                out = torch.empty(len(captions), feats.shape[1])
            out[rows] = feats
        return out

    def image_features(self, path: Path, data_sha: str,
                       images: Callable[[], Iterable[Image.Image]]) -> tuple[torch.Tensor, bool]:
        """Cached :meth:`encode_images` of ``images()`` (called only when the cache is stale)."""
        return cached_features(path, self.image_identity, data_sha, lambda: self.encode_images(images()))

    def text_features(self, path: Path, captions: Sequence[str]) -> tuple[torch.Tensor, bool]:
        """Cached :meth:`encode_texts`; the data hash is that of the captions in order."""
        return cached_features(path, self.text_identity, sha256_hex(captions),
                               lambda: self.encode_texts(captions))


def _locked(build: Callable[[], nn.Module], device: torch.device) -> nn.Module:
    """Build an encoder (randomly initialised parts drawn from seed 0, without touching the global RNG, so a
    random-init encoder is the same in every process), freeze it and put it in eval mode on ``device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = build()
    encoder.requires_grad_(False)
    return encoder.eval().to(device)
