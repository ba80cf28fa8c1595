"""Zero-shot multi-label evaluation: flat hit @ k (FH@k), chunked top-k scoring, mAP and class embeddings.

Protocol (official ``eval.py``, reference notes §5): every class gets one caption per template, captions and
images are L2-normalised, images retrieve classes by cosine similarity, and **FH@k** is the fraction of
images whose top-k retrieved classes intersect their label set. Scores are never materialised as an N x C
matrix: :func:`topk_chunked` walks image chunks x class chunks with a running top-k merge.

**Ties** are broken by the lower class id everywhere (a row is ranked by ``(score descending, class id
ascending)``), so the result is deterministic and does not depend on chunk sizes or on the order in which
``torch.topk`` happens to return equal values (it is only used to find candidates; ties that straddle the
k-th place are resolved with a stable sort).

Results are :class:`ZeroShotResult` objects; :func:`write_eval_rows` / :func:`read_eval_rows` store them as
JSON lines (one :class:`EvalRow` per (model, dataset, mode), CLIP_benchmark style).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from otterlib.data.evalsets import MultiLabelEvalSet, Transform, clean_variant, collate_padded
from otterlib.progress import progress_bar
from otterlib.templates import PAPER_TEMPLATES, class_captions

DEFAULT_KS: tuple[int, ...] = (1, 2, 5, 10)
"""The k of the official ``eval.py``; the paper reports 1, 5 and 10."""

MODES: tuple[str, ...] = ("paper", "clean")
"""``paper``: official candidate lists (all 19,994 GOI names, all 11,166 Tencent names, labels with ancestors).
``clean``: duplicate names merged and leaf-only IN10K labels (:func:`otterlib.data.evalsets.clean_variant`)."""

LabelsLike = Sequence[Sequence[int]] | torch.Tensor
"""Per-image label ids: a list of lists, or a LongTensor (N, L) padded with -1."""

_HIT_ROWS = 8192
"""Images per step in :func:`hits_at_k` (bounds its (rows, k, L) comparison tensor)."""

_MIN_GROUP = 4
"""Narrowest column group for which :func:`sorted_topk` uses the two-level search."""


# --------------------------------------------------------------------------------------------------
# Metrics


def pad_labels(labels: LabelsLike) -> torch.Tensor:
    """Labels as a LongTensor (N, L) padded with -1 (``L`` = longest row; 0 when every row is empty)."""
    if isinstance(labels, torch.Tensor):
        if labels.dim() != 2 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"label tensor must be an integer tensor (N, L) padded with -1, got "
                             f"{labels.dtype} of shape {tuple(labels.shape)}")
        return labels.long()
    lengths = torch.tensor([len(row) for row in labels], dtype=torch.long)
    flat = torch.tensor(list(itertools.chain.from_iterable(labels)), dtype=torch.long)
    out = torch.full((len(lengths), int(lengths.max()) if len(lengths) else 0), -1, dtype=torch.long)
    rows = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    starts = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    out[rows, torch.arange(flat.numel()) - starts] = flat
    return out


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = list(ks)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks!r}")
    return ks


def _order_ties(values: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder each row of a candidate set by (value descending, index ascending)."""
    indices, perm = torch.sort(indices, dim=1)
    values, perm = torch.sort(values.gather(1, perm), dim=1, descending=True, stable=True)
    return values, indices.gather(1, perm)


def _plain_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sorted_topk` by one ``torch.topk`` over whole rows (k < C)."""
    values, indices = torch.topk(scores, k + 1, dim=1)
    straddling = values[:, k - 1] == values[:, k]
    values, indices = values[:, :k], indices[:, :k]
    if bool(straddling.any()):
        rows = straddling.nonzero().squeeze(1)
        v, i = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        values[rows], indices[rows] = v[:, :k], i[:, :k]
    return _order_ties(values, indices)


def _grouped_topk(scores: torch.Tensor, k: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sorted_topk` in two levels: the maxima of column groups of width ``group`` pick the k best groups,
    then the exact top-k runs on those groups' columns (plus the < ``group`` trailing columns).

    Exact: when the k-th best group maximum is strictly above the (k+1)-th, every column outside the chosen
    groups scores strictly below k columns inside them. Rows where those two maxima tie fall back to
    :func:`_plain_topk`. Candidates are kept in ascending column order, so the tie rule is unchanged.
    """
    rows, n_cols = scores.shape
    n_groups = n_cols // group
    main = n_groups * group
    group_max = scores[:, :main].reshape(rows, n_groups, group).amax(2)
    gv, gi = torch.topk(group_max, k + 1, dim=1)
    offsets = torch.arange(group, device=scores.device)
    cols = (torch.sort(gi[:, :k], dim=1).values[:, :, None] * group + offsets).reshape(rows, k * group)
    if main < n_cols:
        cols = torch.cat([cols, torch.arange(main, n_cols, device=scores.device).expand(rows, -1)], 1)
    values, position = _plain_topk(scores.gather(1, cols), k)
    indices = cols.gather(1, position)
    tied = gv[:, k - 1] == gv[:, k]
    if bool(tied.any()):
        tied_rows = tied.nonzero().squeeze(1)
        values[tied_rows], indices[tied_rows] = _plain_topk(scores[tied_rows], k)
    return values, indices


def sorted_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each row of ``scores`` (B, C) ranked by (score descending, column ascending).

    ``k`` larger than C is clamped to C. Returns ``values`` and ``indices`` of shape (B, min(k, C)).
    ``torch.topk`` only proposes candidates: a row whose k-th and (k+1)-th values are equal has a tie across
    the cut and is re-ranked with a stable sort, so the lowest column ids win. Wide rows (C >= 16 (k + 1))
    are first narrowed to the k best groups of 2^floor(log2 sqrt(C / (k + 1))) columns
    (:func:`_grouped_topk`), which reads each score once with a vectorised max instead of a ``topk`` pass.
    """
    n_cols = scores.shape[1]
    k = min(k, n_cols)
    if k == n_cols:
        return torch.sort(scores, dim=1, descending=True, stable=True)
    width = math.isqrt(n_cols // (k + 1))
    group = 1 << (width.bit_length() - 1) if width else 0  # a power of two: its max reduction vectorises
    if group >= _MIN_GROUP:
        return _grouped_topk(scores, k, group)
    return _plain_topk(scores, k)


def hits_at_k(topk_idx: torch.Tensor, labels: LabelsLike, ks: Sequence[int] = DEFAULT_KS) -> dict[int, torch.Tensor]:
    """Per-image hit vectors.

    Args:
        topk_idx: (N, K) retrieved class ids, best first (from :func:`topk_chunked` or :func:`sorted_topk`).
        labels: per-image label ids (lists, or (N, L) padded with -1; -1 never matches).
        ks: cut-offs; a k larger than K is clamped to K (K = min(max k, C) when produced by this module).

    Returns:
        ``{k: BoolTensor (N,)}``, True where one of the first k retrieved ids is a label of the image. Images
        without labels are never hits.
    """
    ks = _check_ks(ks)
    if topk_idx.dim() != 2:
        raise ValueError(f"topk_idx must be (N, K), got shape {tuple(topk_idx.shape)}")
    lab = pad_labels(labels).to(topk_idx.device)
    n, width = topk_idx.shape
    if width == 0:
        raise ValueError("topk_idx has no columns; retrieve at least one class per image")
    if lab.shape[0] != n:
        raise ValueError(f"{n} rows of retrieved ids but {lab.shape[0]} label rows")
    first_hit = torch.full((n,), width, dtype=torch.long, device=topk_idx.device)
    for s in range(0, n, _HIT_ROWS):
        match = (topk_idx[s:s + _HIT_ROWS, :, None] == lab[s:s + _HIT_ROWS, None, :]).any(2)  # (rows, K)
        position = match.to(torch.uint8).argmax(1)  # first True (argmax returns the first maximum)
        first_hit[s:s + _HIT_ROWS] = torch.where(match.any(1), position, torch.full_like(position, width))
    return {k: (first_hit < min(k, width)).cpu() for k in ks}


def flat_hit_at_k(scores: torch.Tensor, labels: LabelsLike, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Flat hit @ k: the fraction of images whose top-k classes intersect their label set.

    Args:
        scores: (N, C) image-class similarities (finite).
        labels: per-image label ids, lists or an (N, L) LongTensor padded with -1. Repeated ids (e.g. two
            ids with the same name) are fine; an empty row counts as a miss.
        ks: cut-offs; k > C is clamped to C.

    Ties are broken by the lower class id (see the module docstring), so the result is deterministic.
    """
    ks = _check_ks(ks)
    if scores.dim() != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (N, C) matrix, got shape {tuple(scores.shape)}")
    if not _all_finite(scores):
        raise ValueError("scores contain NaN or inf; check the embeddings")
    _, idx = sorted_topk(scores, max(ks))
    hits = hits_at_k(idx, labels, ks)
    return {k: hits[k].float().mean().item() for k in ks}


def _all_finite(x: torch.Tensor) -> bool:
    """No NaN or inf in a non-empty tensor (one min/max pass: NaN and inf both reach the extremes)."""
    low, high = torch.aminmax(x)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _check_embeddings(image_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.dtype:
    if image_emb.dim() != 2 or class_emb.dim() != 2 or image_emb.shape[1] != class_emb.shape[1]:
        raise ValueError(f"need image_emb (N, D) and class_emb (C, D) with the same D, got "
                         f"{tuple(image_emb.shape)} and {tuple(class_emb.shape)}")
    if image_emb.shape[0] == 0 or class_emb.shape[0] == 0:
        raise ValueError("image_emb and class_emb must both have at least one row")
    dtype = torch.promote_types(image_emb.dtype, class_emb.dtype)
    if not dtype.is_floating_point:
        raise ValueError(f"embeddings must be floating point, got {image_emb.dtype} and {class_emb.dtype}")
    if not (_all_finite(image_emb) and _all_finite(class_emb)):
        raise ValueError("embeddings contain NaN or inf; check the encoders")
    return dtype


def topk_chunked(image_emb: torch.Tensor, class_emb: torch.Tensor, k: int, chunk_size: int = 4096,
                 device: str | torch.device = "cpu", class_chunk_size: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k classes of every image without materialising the N x C score matrix.

    Args:
        image_emb: (N, D) image embeddings (any device; moved to ``device`` one chunk at a time).
        class_emb: (C, D) class embeddings (moved to ``device`` once).
        k: classes to keep per image (clamped to C).
        chunk_size: images per chunk.
        device: where the matmuls run (``cpu``, ``cuda``, ``cuda:1`` ...).
        class_chunk_size: classes per block; ``None`` scores all C classes of an image chunk at once. The
            largest score block is ``chunk_size x class_chunk_size`` (or ``chunk_size x C``).

    Returns:
        ``values`` and ``indices``, (N, min(k, C)), on the CPU, ranked by (score desc, class id asc). The
        result is identical for every choice of chunk sizes (up to float rounding of the matmul).
    """
    if k < 1 or chunk_size < 1 or (class_chunk_size is not None and class_chunk_size < 1):
        raise ValueError(f"k, chunk_size and class_chunk_size must be positive, got {k}, {chunk_size}, {class_chunk_size}")
    dtype = _check_embeddings(image_emb, class_emb)
    dev = torch.device(device)
    n, n_classes = image_emb.shape[0], class_emb.shape[0]
    k = min(k, n_classes)
    step = n_classes if class_chunk_size is None else class_chunk_size
    classes = class_emb.to(dev, dtype)
    out_values = torch.empty(n, k, dtype=dtype)
    out_indices = torch.empty(n, k, dtype=torch.long)
    with torch.no_grad():
        for s in progress_bar(range(0, n, chunk_size), desc="top-k", leave=False, disable=n <= chunk_size):
            images = image_emb[s:s + chunk_size].to(dev, dtype)
            best_v, best_i = sorted_topk(images @ classes[:step].T, k)
            for c0 in range(step, n_classes, step):
                v, i = sorted_topk(images @ classes[c0:c0 + step].T, k)
                # running entries have lower class ids and come first: a stable sort keeps id order in ties
                merged_v, perm = torch.sort(torch.cat([best_v, v], 1), dim=1, descending=True, stable=True)
                best_i = torch.cat([best_i, i + c0], 1).gather(1, perm[:, :k])
                best_v = merged_v[:, :k]
            out_values[s:s + chunk_size] = best_v.cpu()
            out_indices[s:s + chunk_size] = best_i.cpu()
    return out_values, out_indices


def average_precisions(image_emb: torch.Tensor, class_emb: torch.Tensor, labels: LabelsLike,
                       chunk_size: int = 256, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Per-class average precision (the mean, over a class's positive images, of the precision at the
    positive's rank among all N images) of every class with at least one positive image.

    Returns ``class_ids`` (P,) int64 ascending and ``ap`` (P,) float64 in [0, 1]; their mean is
    :func:`mean_average_precision`. Computed in class chunks (an (N, chunk_size) block at a time). Images tied
    in score are ranked by image index (stable sort); with distinct scores this equals
    ``sklearn.metrics.average_precision_score`` per class, as used for CLIP_benchmark's multi-label mAP.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    dtype = _check_embeddings(image_emb, class_emb)
    dev = torch.device(device)
    n, n_classes = image_emb.shape[0], class_emb.shape[0]
    lab = pad_labels(labels)
    if lab.shape[0] != n:
        raise ValueError(f"{n} image embeddings but {lab.shape[0]} label rows")
    rows, cols = (lab >= 0).nonzero(as_tuple=True)
    pair_cls = lab[rows, cols]
    if pair_cls.numel() and int(pair_cls.max()) >= n_classes:
        raise ValueError(f"label id {int(pair_cls.max())} >= number of classes {n_classes}")
    pair_img = rows.to(dev)
    pair_cls = pair_cls.to(dev)
    positive_classes = torch.unique(pair_cls)
    if positive_classes.numel() == 0:
        raise ValueError("mAP needs at least one positive label")
    images = image_emb.to(dev, dtype)
    classes = class_emb.to(dev, dtype)
    rank = torch.arange(1, n + 1, device=dev, dtype=torch.float64)[:, None]
    column_of = torch.full((n_classes,), -1, dtype=torch.long, device=dev)
    ap = torch.empty(positive_classes.numel(), dtype=torch.float64)
    with torch.no_grad():
        for s in range(0, positive_classes.numel(), chunk_size):
            chunk = positive_classes[s:s + chunk_size]
            column_of[chunk] = torch.arange(chunk.numel(), device=dev)
            inside = column_of[pair_cls] >= 0
            target = torch.zeros(n, chunk.numel(), dtype=torch.bool, device=dev)
            target[pair_img[inside], column_of[pair_cls[inside]]] = True
            column_of[chunk] = -1
            order = torch.argsort(images @ classes[chunk].T, dim=0, descending=True, stable=True)
            hit = target.gather(0, order).to(torch.float64)
            precision = hit.cumsum(0) / rank
            ap[s:s + chunk.numel()] = ((precision * hit).sum(0) / hit.sum(0)).cpu()
    return positive_classes.cpu().numpy(), ap.numpy()


def mean_average_precision(image_emb: torch.Tensor, class_emb: torch.Tensor, labels: LabelsLike,
                           chunk_size: int = 256, device: str | torch.device = "cpu") -> float:
    """Multi-label mAP: the mean of :func:`average_precisions` over the classes with a positive image."""
    return float(average_precisions(image_emb, class_emb, labels, chunk_size, device)[1].mean())


# --------------------------------------------------------------------------------------------------
# Embeddings


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Put an nn.Module in eval mode for the block and restore its previous mode afterwards."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_model_device(model: Any, device: torch.device) -> None:
    if isinstance(model, nn.Module):
        param = next(model.parameters(), None)
        if param is not None and param.device.type != device.type:
            raise ValueError(f"the model's parameters are on {param.device} but device={str(device)!r}; "
                             f"move the model first (model.to({str(device)!r}))")


def encode_class_names(model: Any, class_names: Sequence[Sequence[str]], templates: Sequence[str] = PAPER_TEMPLATES,
                       batch_size: int = 512, device: str | torch.device = "cpu") -> torch.Tensor:
    """Class embeddings (C, D), L2-normalised, on ``device``.

    Each caption (one per class and template, see :func:`otterlib.templates.class_captions`) is encoded with
    ``model.encode_text(list_of_str) -> (n, D)`` and L2-normalised; with several templates the caption
    embeddings of a class are averaged *by class id* and renormalised (CLIP-style ensemble). Captions are
    streamed in batches, so C x templates x D is never held at once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(class_names) == 0:
        raise ValueError("class_names is empty")
    dev = torch.device(device)
    captions, class_ids = class_captions(class_names, templates)
    n_classes = len(class_names)
    sums: torch.Tensor | None = None
    with _eval_mode(model), torch.no_grad():
        for s in progress_bar(range(0, len(captions), batch_size), desc="class captions", leave=False):
            batch = captions[s:s + batch_size]
            emb = model.encode_text(batch)
            if emb.dim() != 2 or emb.shape[0] != len(batch):
                raise ValueError(f"encode_text returned shape {tuple(emb.shape)} for {len(batch)} captions; "
                                 f"expected ({len(batch)}, D)")
            emb = F.normalize(emb.float(), dim=-1).to(dev)
            if sums is None:
                sums = torch.zeros(n_classes, emb.shape[1], device=dev)
            sums.index_add_(0, class_ids[s:s + batch_size].to(dev), emb)
    assert sums is not None  # class_captions guarantees at least one caption
    counts = torch.bincount(class_ids, minlength=n_classes).to(dev, sums.dtype)
    return F.normalize(sums / counts[:, None], dim=-1)


def encode_images(model: Any, eval_set: MultiLabelEvalSet, transform: Transform | None, batch_size: int = 256,
                  num_workers: int = 0, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image embeddings of the readable images, in eval-set order.

    Returns ``embeddings`` (N_kept, D) float32 on the CPU and ``kept``, a BoolTensor (N,) that is False for
    images that could not be read (they are skipped, see :class:`otterlib.data.evalsets.EvalImageDataset`).
    """
    dev = torch.device(device)
    loader = DataLoader(eval_set.torch_dataset(transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=functools.partial(collate_padded, return_kept=True))
    embeddings, kept_all = [], []
    with _eval_mode(model), torch.no_grad():
        for images, _, kept in progress_bar(loader, desc=f"{eval_set.name} images", leave=False):
            kept_all.append(kept)
            if images.shape[0] == 0:
                continue
            emb = model.encode_image(images.to(dev))
            embeddings.append(F.normalize(emb.float(), dim=-1).cpu())
    kept = torch.cat(kept_all) if kept_all else torch.zeros(0, dtype=torch.bool)
    if not embeddings:
        raise ValueError(f"none of the {eval_set.n_images} images of {eval_set.name!r} could be read; "
                         f"check the images folder (eval_set.summary() counts the missing files)")
    return torch.cat(embeddings), kept


# --------------------------------------------------------------------------------------------------
# The evaluation


class EvalRow(TypedDict):
    """One JSON line of results (CLIP_benchmark style). Notebooks add provenance keys (``model``,
    ``method``, ``setting``, ``checkpoint``, ``git_sha`` ...) next to these required ones."""

    dataset: str
    task: str
    mode: str
    metrics: dict[str, float]
    n_images: int
    n_skipped: int
    n_classes: int
    label_cardinality: float
    n_templates: int


EVAL_ROW_KEYS: frozenset[str] = frozenset(EvalRow.__required_keys__)


@dataclass
class ZeroShotResult:
    """The outcome of :func:`evaluate_zero_shot` on one eval set.

    ``hits[k]`` is a bool array over the evaluated images (aligned with ``image_ids``) for bootstrap CIs;
    ``metrics`` holds ``fh@k`` for every k and ``map`` when it was computed, and then ``ap_class_ids`` /
    ``ap`` hold the per-class average precisions whose mean it is (for intervals over classes).
    """

    dataset: str
    mode: str
    metrics: dict[str, float]
    hits: dict[int, np.ndarray]
    image_ids: list[str]
    n_images: int
    n_skipped: int
    n_classes: int
    label_cardinality: float
    n_templates: int
    ap_class_ids: np.ndarray | None = None
    ap: np.ndarray | None = None

    def to_row(self, **provenance: Any) -> dict[str, Any]:
        """This result as an :class:`EvalRow` plus the given provenance keys."""
        row: dict[str, Any] = {"dataset": self.dataset, "task": "zeroshot_multilabel", "mode": self.mode,
                               "metrics": dict(self.metrics), "n_images": self.n_images,
                               "n_skipped": self.n_skipped, "n_classes": self.n_classes,
                               "label_cardinality": self.label_cardinality, "n_templates": self.n_templates}
        clash = set(provenance) & set(row)
        if clash:
            raise ValueError(f"provenance keys {sorted(clash)} would overwrite result fields")
        row.update(provenance)
        return row


def evaluate_zero_shot(model: Any, eval_set: MultiLabelEvalSet, transform: Transform | None, *,
                       templates: Sequence[str] = PAPER_TEMPLATES, ks: Sequence[int] = DEFAULT_KS,
                       batch_size: int = 256, num_workers: int = 0, device: str | torch.device = "cpu",
                       chunk_size: int = 4096, class_chunk_size: int | None = None, mode: str = "paper",
                       compute_map: bool = True, text_batch_size: int = 512) -> ZeroShotResult:
    """Zero-shot multi-label evaluation of ``model`` (``encode_text(list[str])``, ``encode_image(images)``).

    Args:
        model: already on ``device``; put in eval mode for the call and restored afterwards.
        eval_set: a paper-protocol set from :mod:`otterlib.data.evalsets`.
        transform: PIL image -> (3, H, W) tensor (the eval preprocessing of the image encoder).
        templates: caption templates (the paper uses the single ``a photo of {}.``).
        ks: FH@k cut-offs.
        mode: ``paper`` or ``clean`` (the set is converted with :func:`clean_variant`).
        compute_map: also compute mAP (sorts N scores per class; costly on a CPU at full scale).
        chunk_size, class_chunk_size: score-block sizes of :func:`topk_chunked`.

    Unreadable images are skipped, counted in ``n_skipped`` and excluded from every metric.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "paper" and eval_set.info.get("variant") == "clean":
        raise ValueError("this eval set is already the clean variant; pass mode='clean' or the set as loaded")
    ks = _check_ks(ks)
    dev = torch.device(device)
    _check_model_device(model, dev)
    data = clean_variant(eval_set) if mode == "clean" else eval_set
    class_emb = encode_class_names(model, data.class_names, templates, text_batch_size, dev)
    image_emb, kept = encode_images(model, data, transform, batch_size, num_workers, dev)
    kept_idx = kept.nonzero().squeeze(1).tolist()
    labels = [data.labels[i] for i in kept_idx]
    _, top = topk_chunked(image_emb, class_emb, max(ks), chunk_size, dev, class_chunk_size)
    hits = hits_at_k(top, labels, ks)
    metrics = {f"fh@{k}": hits[k].float().mean().item() for k in ks}
    ap_class_ids = ap = None
    if compute_map:
        ap_class_ids, ap = average_precisions(image_emb, class_emb, labels, device=dev)
        metrics["map"] = float(ap.mean())
    return ZeroShotResult(
        dataset=data.name, mode=mode, metrics=metrics, hits={k: v.numpy() for k, v in hits.items()},
        image_ids=[data.image_ids[i] for i in kept_idx], n_images=len(kept_idx),
        n_skipped=data.n_images - len(kept_idx), n_classes=data.n_classes,
        label_cardinality=sum(len(r) for r in labels) / len(labels), n_templates=len(templates),
        ap_class_ids=ap_class_ids, ap=ap)


# --------------------------------------------------------------------------------------------------
# JSON lines


def _validate_row(row: Mapping[str, Any], where: str) -> None:
    missing = EVAL_ROW_KEYS - set(row)
    if missing:
        raise ValueError(f"{where}: eval row lacks {sorted(missing)} (required: {sorted(EVAL_ROW_KEYS)})")
    if not isinstance(row["metrics"], Mapping):
        raise ValueError(f"{where}: 'metrics' must be a mapping of metric name to value")


def write_eval_rows(path: str | Path, rows: Sequence[Mapping[str, Any]], append: bool = False) -> Path:
    """Write eval rows as JSON lines (sorted keys); ``append`` adds to an existing file, otherwise the file is
    replaced atomically. Each row needs the :class:`EvalRow` keys and must be JSON-serialisable."""
    path = Path(path)
    lines = []
    for i, row in enumerate(rows):
        _validate_row(row, f"row {i}")
        try:
            lines.append(json.dumps(row, sort_keys=True, allow_nan=False))
        except (TypeError, ValueError) as err:
            raise ValueError(f"row {i} is not JSON-serialisable ({err}); convert tensors/arrays to numbers") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(line + "\n" for line in lines)
    if append:
        with path.open("a", encoding="utf-8") as f:
            f.write(text)
    else:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def read_eval_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read the JSON-lines file written by :func:`write_eval_rows` (blank lines are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"eval rows file not found at {path}")
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{line_no}: not valid JSON ({err})") from None
        _validate_row(row, f"{path}:{line_no}")
        rows.append(row)
    return rows
