"""Trivial baselines of the zero-shot multi-label protocol: what a number means before any model is trained.

* **Random ranking**: the classes in a uniformly random order. Its expected flat hit @ k is exact, with no
  sampling: an image with ``L`` distinct labels among ``C`` classes misses when all k retrieved classes are
  among the ``C - L`` others, so ``E[FH@k] = mean_i (1 - C(C - L_i, k) / C(C, k))`` (hypergeometric).
* **Best constant ranking**: every image gets the same list, the classes ordered by how many images of the
  eval set carry them (ties by the lower class id). It is what a model that ignores the image can reach at
  best with a frequency prior; label sets with ancestors (Tencent) make it strong.
* **mAP of the random ranking**, also exact: a class with ``R`` positives among ``N`` images, its images in a
  uniformly random order, has ``E[AP] = (H_N + (R - 1) / (N - 1) · (N - H_N)) / N`` (``H_N`` the N-th harmonic
  number; a positive at rank r has on average ``(r - 1)(R - 1)/(N - 1)`` positives above it). A constant
  ranking has no mAP of its own: it gives every image the same score for a class, so it orders no image
  above another (broken at random, its expected mAP is the random ranking's).

:func:`trivial_rows` writes both as :class:`otterlib.evaluate.EvalRow` s (``kind: "trivial"``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from otterlib.data.evalsets import MultiLabelEvalSet

TRIVIAL_METHODS: tuple[str, ...] = ("random", "constant")


def _distinct_counts(labels: Sequence[Sequence[int]]) -> np.ndarray:
    return np.array([len(set(row)) for row in labels], dtype=np.int64)


def random_ranking_hits(labels: Sequence[Sequence[int]], n_classes: int, k: int) -> np.ndarray:
    """Per-image probability (N,) that a uniformly random ranking of ``n_classes`` puts one of the image's
    labels in its first ``k``: ``1 - prod_{t<k} (C - L - t) / (C - t)`` (= ``1 - C(C-L, k) / C(C, k)``)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    counts = _distinct_counts(labels)
    if counts.size and counts.max() > n_classes:
        raise ValueError(f"an image has more distinct labels ({counts.max()}) than there are classes ({n_classes})")
    t = np.arange(min(k, n_classes), dtype=np.float64)
    miss = np.prod(np.clip(n_classes - counts[:, None] - t[None, :], 0, None) / (n_classes - t[None, :]), axis=1)
    return 1.0 - miss


def class_frequencies(labels: Sequence[Sequence[int]], n_classes: int) -> np.ndarray:
    """(C,) number of images that carry each class (a class repeated within an image counts once)."""
    counts = np.zeros(n_classes, dtype=np.int64)
    for row in labels:
        counts[list(set(row))] += 1
    return counts


def constant_ranking(labels: Sequence[Sequence[int]], n_classes: int) -> np.ndarray:
    """(C,) class ids by image frequency, most frequent first; ties by the lower class id."""
    counts = class_frequencies(labels, n_classes)
    return np.lexsort((np.arange(n_classes), -counts))


def constant_ranking_hits(labels: Sequence[Sequence[int]], n_classes: int, k: int) -> np.ndarray:
    """Per-image 0/1 hits (N,) of the best constant ranking at cut-off ``k``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rank = np.empty(n_classes, dtype=np.int64)
    rank[constant_ranking(labels, n_classes)] = np.arange(n_classes)
    best = np.array([rank[list(row)].min() if len(row) else n_classes for row in labels], dtype=np.int64)
    return (best < k).astype(np.float64)


def random_ranking_average_precisions(labels: Sequence[Sequence[int]], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(class_ids, E[AP])`` of every class with a positive image when the images are ranked in a uniformly
    random order per class (the formula in the module docstring); the mean of ``E[AP]`` is the random
    ranking's expected mAP as :func:`otterlib.evaluate.mean_average_precision` averages it."""
    n = len(labels)
    positives = class_frequencies(labels, n_classes)
    class_ids = np.flatnonzero(positives)
    if n == 0 or class_ids.size == 0:
        raise ValueError("the expected average precision needs at least one positive label")
    if n == 1:
        return class_ids, np.ones(class_ids.size)
    harmonic = float(np.sum(1.0 / np.arange(1, n + 1)))
    r = positives[class_ids].astype(np.float64)
    return class_ids, (harmonic + (r - 1) / (n - 1) * (n - harmonic)) / n


def trivial_metrics(eval_set: MultiLabelEvalSet, method: str, ks: Sequence[int]) -> dict[str, float]:
    """``{"fh@k": value}`` of ``random`` (exact expectation, and ``map``: its expected mAP) or ``constant``
    (best constant ranking; no mAP, see the module docstring)."""
    hits = {"random": random_ranking_hits, "constant": constant_ranking_hits}
    if method not in hits:
        raise ValueError(f"trivial method must be one of {TRIVIAL_METHODS}, got {method!r}")
    if eval_set.n_images == 0:
        raise ValueError(f"eval set {eval_set.name!r} has no images")
    metrics = {f"fh@{k}": float(hits[method](eval_set.labels, eval_set.n_classes, k).mean()) for k in ks}
    if method == "random":
        metrics["map"] = float(random_ranking_average_precisions(eval_set.labels, eval_set.n_classes)[1].mean())
    return metrics


def trivial_rows(eval_set: MultiLabelEvalSet, ks: Sequence[int], mode: str, **provenance: Any) -> list[dict[str, Any]]:
    """One :class:`otterlib.evaluate.EvalRow` per trivial method on ``eval_set`` (already in protocol
    ``mode``), with ``method``, ``kind="trivial"`` and the given provenance keys."""
    cardinality = sum(len(row) for row in eval_set.labels) / eval_set.n_images if eval_set.n_images else 0.0
    return [{"dataset": eval_set.name, "task": "zeroshot_multilabel", "mode": mode,
             "metrics": trivial_metrics(eval_set, method, ks), "n_images": eval_set.n_images, "n_skipped": 0,
             "n_classes": eval_set.n_classes, "label_cardinality": cardinality, "n_templates": 0,
             "method": method, "kind": "trivial", **provenance} for method in TRIVIAL_METHODS]


def gini(values: Sequence[float]) -> float:
    """Gini coefficient of non-negative values (0: all equal; (n-1)/n: one value holds everything)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    if x.size == 0 or x.sum() == 0:
        raise ValueError("gini needs at least one positive value")
    n = x.size
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def label_statistics(eval_set: MultiLabelEvalSet) -> dict[str, float]:
    """How the labels of an eval set are spread: labels per image, and the class-frequency skew (share of all
    label occurrences taken by the most frequent 1 % / 10 % of the candidate classes, Gini over all candidate
    classes, fraction of images carrying the most frequent class)."""
    sizes = _distinct_counts(eval_set.labels)
    freq = class_frequencies(eval_set.labels, eval_set.n_classes)
    ranked = np.sort(freq)[::-1]
    top = lambda fraction: float(ranked[:max(1, round(fraction * eval_set.n_classes))].sum() / ranked.sum())
    return {"n_images": eval_set.n_images, "n_classes": eval_set.n_classes,
            "n_classes_with_positives": int((freq > 0).sum()), "labels_per_image": float(sizes.mean()),
            "labels_per_image_min": int(sizes.min()), "labels_per_image_max": int(sizes.max()),
            "top1pct_classes_label_share": top(0.01), "top10pct_classes_label_share": top(0.10),
            "gini_class_frequency": gini(freq), "most_frequent_class_image_share": float(ranked[0] / eval_set.n_images)}
