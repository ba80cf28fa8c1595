"""Target precision: how much of a method's soft-target mass lands on captions that really match.

For one batch, ``truth`` is the (B, B) bool matrix "caption j is true of image i" (:func:`otterlib.data.world.
truth_matrix`); image rows read it as is, text rows (caption i against the images j) read its transpose. Only
off-diagonal cells count: the diagonal is the pair itself, which every method targets with α anyway.

* **Precision** of a (B, B) row-stochastic target matrix M: ``Σ_{i≠j} M_ij·T_ij / Σ_{i≠j} M_ij``, the share of
  the off-diagonal mass on true matches; 0 when there is no off-diagonal mass (InfoNCE, by definition).
* **Chance**: ``mean_i (number of true j ≠ i) / (B − 1)``, the precision of a uniform off-diagonal spread
  (label smoothing). The same for both directions (the true cells are the same cells).
* **True / false mass**: the target mass per row (mean over rows and both directions) on off-diagonal pairs
  that match / do not match: what the target asks the student to pull together rightly / wrongly.
* **Wrong-caption rescue**: for the pairs whose caption is wrong, the target mass (of the whole row, which sums
  to 1) that lands on true matches, over the rows that have a true match in the batch: for an image, a caption
  in the batch that is true of it (its own clean caption or any other true one); for a wrong caption, an image
  it truly describes. Next to it, the mass a uniform spread of the same row's off-diagonal mass would put there.
"""
from __future__ import annotations

import numpy as np


def _check(targets: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m, t = np.asarray(targets, dtype=np.float64), np.asarray(truth, dtype=bool)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape != t.shape or m.shape[0] < 2:
        raise ValueError(f"targets and truth must both be (B, B) with B >= 2, got {m.shape} and {t.shape}")
    return m, t


def _off_diagonal(b: int) -> np.ndarray:
    return ~np.eye(b, dtype=bool)


def off_diagonal_precision(targets: np.ndarray, truth: np.ndarray) -> float:
    """Share of the off-diagonal mass of ``targets`` (B, B) on cells where ``truth`` (B, B) holds; 0 without
    off-diagonal mass."""
    m, t = _check(targets, truth)
    off = _off_diagonal(len(m))
    total = m[off].sum()
    return float(m[off & t].sum() / total) if total > 0 else 0.0


def chance_precision(truth: np.ndarray) -> float:
    """``mean_i |{j ≠ i : T_ij}| / (B − 1)``: the precision of a uniform off-diagonal target."""
    t = np.asarray(truth, dtype=bool)
    _check(t, t)
    return float((t & _off_diagonal(len(t))).sum(1).mean() / (len(t) - 1))


def off_diagonal_mass(targets: np.ndarray, truth: np.ndarray, true: bool) -> float:
    """Mean over rows of the target mass on off-diagonal cells where ``truth`` holds (``true``) or does not."""
    m, t = _check(targets, truth)
    return float((m * ((t == true) & _off_diagonal(len(m)))).sum(1).mean())


def rescue_rows(targets: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the selected ``rows`` (bool (B,)) that have a true off-diagonal match: the target mass on true
    off-diagonal cells, and what a uniform spread of the row's off-diagonal mass would put there. Both (R,)."""
    m, t = _check(targets, truth)
    true_off = t & _off_diagonal(len(m))
    keep = np.asarray(rows, dtype=bool) & true_off.any(1)
    off_mass = (m * _off_diagonal(len(m))).sum(1)
    on_truth = (m * true_off).sum(1)
    uniform = off_mass * true_off.sum(1) / (len(m) - 1)
    return on_truth[keep], uniform[keep]


def batch_statistics(targets_img: np.ndarray, targets_txt: np.ndarray, truth: np.ndarray,
                     wrong: np.ndarray) -> dict[str, float]:
    """Precision, true and false mass (means of the image and text directions), chance, and the wrong-caption
    rescue of one batch.

    ``targets_img``: (B, B) rows = images, columns = captions; ``targets_txt``: (B, B) rows = captions,
    columns = images; ``truth``: (B, B) image × caption; ``wrong``: (B,) bool, pairs with a wrong caption.
    The rescue entries are NaN when no wrong pair of the batch has a true match in it.
    """
    t = np.asarray(truth, dtype=bool)
    precision = 0.5 * (off_diagonal_precision(targets_img, t) + off_diagonal_precision(targets_txt, t.T))
    rescued_img, uniform_img = rescue_rows(targets_img, t, wrong)
    rescued_txt, uniform_txt = rescue_rows(targets_txt, t.T, wrong)
    rescued = np.concatenate([rescued_img, rescued_txt])
    uniform = np.concatenate([uniform_img, uniform_txt])
    return {"precision": precision, "chance": chance_precision(t),
            **{f"{kind}_mass": 0.5 * (off_diagonal_mass(targets_img, t, kind == "true")
                                      + off_diagonal_mass(targets_txt, t.T, kind == "true"))
               for kind in ("true", "false")},
            "wrong_rescue": float(rescued.mean()) if rescued.size else float("nan"),
            "wrong_rescue_uniform": float(uniform.mean()) if uniform.size else float("nan"),
            "wrong_rows": int(rescued.size)}
