"""Statistics of method comparisons on per-image hits: intervals, the paired test and the tie rules.

Inputs are aligned per-image scores of shape (n_seeds, n_images): row s holds one training seed's score on
every eval image (e.g. FH@1 hits, 0/1), the same images in the same order for every seed and every method.

* :func:`paired_bootstrap` (the statistical tie rule of the results table): the 95 % interval of
  ``mean(a) − mean(b)`` from a hierarchical paired bootstrap. Each replicate resamples the eval images
  (with replacement, the same draw for both methods and every seed, which keeps the pairing) and, when
  there are several, the seeds (the same seeds for both methods). A cell is a **tie** when the interval
  contains 0, a **win** when it lies above 0, a **loss** when below (:func:`interval_verdict`).
* :func:`fixed_rule_verdict`: the paper-style rule, a tie when the difference is within a fixed tolerance.
* :func:`bootstrap_interval`: the interval of one method's mean score under the same resampling.
* :func:`seed_interval`: mean and Student-t interval over seeds of a per-seed score (eval images fixed).
* :func:`compare_to_best`: a method against the best of several baselines in one cell, with both rules.

All values are in the units of the inputs (fractions for 0/1 hits); tolerances use the same units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

VERDICTS: tuple[str, ...] = ("win", "tie", "loss")
_BLOCK_CELLS: int = 1 << 22
"""Replicates × units drawn per block of the bootstrap (bounds its memory at ~100 MB: the draws, their counts
and the weights, 8 bytes each)."""
_FEW_PATTERNS: int = 4096
"""Up to this many distinct per-image difference patterns, the bootstrap draws over the patterns."""


def _aligned(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(f"paired scores must be non-empty (n_seeds, n_images) arrays of one shape, got "
                         f"{a.shape} and {b.shape}")
    return a, b


def _resample_counts(rng: np.random.Generator, n: int, inverse: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(n, K) counts: in each of ``n`` resamples of the units with replacement, how many drawn units show each of
    the K distinct score patterns (``inverse[i]``: the pattern of unit i; ``counts``: units per pattern).

    Few patterns (0/1 hits: at most 3^n_seeds paired differences): one multinomial over them, exactly the same
    distribution as drawing the units and far cheaper. Many (continuous scores): the units are drawn and
    counted with one bincount (``rng.multinomial`` runs one binomial per category, slow at 100k)."""
    n_units, k = len(inverse), len(counts)
    if k <= _FEW_PATTERNS:
        return rng.multinomial(n_units, counts / n_units, size=n)
    draws = inverse[rng.integers(0, n_units, size=(n, n_units))] + np.arange(n)[:, None] * k
    return np.bincount(draws.ravel(), minlength=n * k).reshape(n, k)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(mean(a) − mean(b), low, high)``: the observed difference and its percentile interval.

    ``a``, ``b``: (n_seeds, n_images) or (n_images,) paired scores. Replicate r draws image weights
    ``w_r`` (multinomial counts / n_images) and seed weights ``v_r`` (the same over seeds; all 1 with one
    seed) and takes ``Σ_s v_rs Σ_i w_ri (a − b)_si``. Images with the same differences on every seed are
    interchangeable, so the draw is made over their distinct patterns (:func:`_resample_counts`).
    """
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got {n_boot} and {level}")
    a, b = _aligned(a, b)
    diff = a - b
    n_seeds, n_images = diff.shape
    patterns, inverse, counts = np.unique(diff.T, axis=0, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    block = max(1, _BLOCK_CELLS // (len(counts) if len(counts) <= _FEW_PATTERNS else n_images))
    for start in range(0, n_boot, block):
        n = min(block, n_boot - start)
        image_w = _resample_counts(rng, n, inverse.ravel(), counts) / n_images
        seed_w = (rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n) / n_seeds if n_seeds > 1
                  else np.ones((n, 1)))
        stats[start:start + n] = ((image_w @ patterns) * seed_w).sum(1)
    low, high = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(diff.mean()), float(low), float(high)


def bootstrap_interval(x: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float, float]:
    """``(mean(x), low, high)``: the percentile interval of one method's mean score under the same
    resampling as :func:`paired_bootstrap` (eval units and, when there are several, seeds); ``x``:
    (n_seeds, n_units) or (n_units,)."""
    x = np.asarray(x, dtype=np.float64)
    return paired_bootstrap(x, np.zeros_like(x), n_boot, level, seed)


def interval_verdict(low: float, high: float) -> str:
    """``win`` when the interval of (method − baseline) lies above 0, ``loss`` below, ``tie`` when it holds 0."""
    if low > high:
        raise ValueError(f"interval low {low} > high {high}")
    return "win" if low > 0 else "loss" if high < 0 else "tie"


def fixed_rule_verdict(difference: float, tolerance: float) -> str:
    """The paper-style rule: ``win`` when the difference exceeds ``tolerance``, ``tie`` within it, else ``loss``."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    return "win" if difference > tolerance else "tie" if difference >= -tolerance else "loss"


def seed_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of per-seed values with a Student-t interval (``low = high = mean`` for one seed)."""
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"need a non-empty 1-D array of per-seed values, got shape {x.shape}")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    half = float(student_t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Comparison:
    """A method against the best baseline of one cell (values in the units of the scores)."""

    method: str
    best_baseline: str
    method_mean: float
    baseline_mean: float
    difference: float
    low: float
    high: float
    verdict: str
    """By the interval (:func:`interval_verdict`)."""
    fixed_verdict: str
    """By the fixed tolerance (:func:`fixed_rule_verdict`)."""
    n_seeds: int
    n_images: int


def compare_to_best(scores: Mapping[str, np.ndarray], method: str, baselines: Sequence[str], tolerance: float,
                    n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Comparison:
    """``method`` − the baseline with the highest mean score, both rules.

    ``scores[name]``: (n_seeds, n_images) aligned scores. The best baseline is chosen on the same data
    (observed means, ties broken by the order of ``baselines``).
    """
    present = [b for b in baselines if b in scores]
    if method not in scores or not present:
        raise ValueError(f"need scores of {method!r} and of at least one of {list(baselines)}, got {sorted(scores)}")
    best = max(present, key=lambda name: (float(np.mean(scores[name])), -present.index(name)))
    a, b = _aligned(scores[method], scores[best])
    diff, low, high = paired_bootstrap(a, b, n_boot, level, seed)
    return Comparison(method=method, best_baseline=best, method_mean=float(a.mean()), baseline_mean=float(b.mean()),
                      difference=diff, low=low, high=high, verdict=interval_verdict(low, high),
                      fixed_verdict=fixed_rule_verdict(diff, tolerance), n_seeds=a.shape[0], n_images=a.shape[1])
