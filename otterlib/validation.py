"""Held-out validation on CC3M's validation split: image<->text retrieval and the contrastive loss.

Checkpoint selection uses these numbers only, never the zero-shot test sets (GOI / IN10K).
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F


@torch.no_grad()
def embed_pairs(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, list[str]]],
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode every (images, captions) batch -> (N, D) image and (N, D) text embeddings on the CPU, float32."""
    imgs, txts = [], []
    for images, captions in batches:
        imgs.append(model.encode_image(images.to(device)).float().cpu())
        txts.append(model.encode_text(captions).float().cpu())
    if not imgs:
        raise ValueError("the validation split is empty")
    return torch.cat(imgs), torch.cat(txts)


def retrieval_metrics(img: torch.Tensor, txt: torch.Tensor, ks: tuple[int, ...] = (1, 5),
                      logit_scale: float = 100.0, batch_size: int = 512) -> dict[str, float]:
    """Recall@k of paired retrieval (pair i matches only i) and the mean bidirectional InfoNCE.

    ``img``, ``txt``: (N, D) L2-normalised. Ranks count strictly higher scores, so ties favour the true pair.
    The loss is the sum of both directions (as the training objective) averaged over consecutive batches of
    ``batch_size`` pairs, at ``logit_scale``.
    """
    if img.shape != txt.shape:
        raise ValueError(f"image and text embeddings differ in shape: {tuple(img.shape)} vs {tuple(txt.shape)}")
    sims = img @ txt.T
    pos = sims.diagonal()
    rank_i2t = (sims > pos[:, None]).sum(1)
    rank_t2i = (sims > pos[None, :]).sum(0)
    out = {}
    for k in ks:
        out[f"i2t_r@{k}"] = (rank_i2t < k).float().mean().item()
        out[f"t2i_r@{k}"] = (rank_t2i < k).float().mean().item()
    out["mean_r@1"] = (out.get("i2t_r@1", 0.0) + out.get("t2i_r@1", 0.0)) / 2 if 1 in ks else float("nan")
    losses = []
    for start in range(0, len(img) - 1, batch_size):
        i, t = img[start:start + batch_size], txt[start:start + batch_size]
        if len(i) < 2:
            break
        logits = logit_scale * i @ t.T
        target = torch.arange(len(i))
        losses.append((F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)).item())
    out["loss"] = sum(losses) / len(losses)
    out["n"] = len(img)
    return out
