"""The noisy-matching statistics of the official ``dataset_analysis.py``, and the text that defines them.

On a batch of B training pairs, ``P = softmax_row(scale · v·tᵀ)`` (image → text probabilities, rows sum to 1).
The official footer reports them for CLIP ViT-B/32 on CC3M at batches of 512, 1,024 and 2,048
(:data:`CLIP_CC3M_FOOTER`); a batch of another size is not comparable with those numbers.
"""
from __future__ import annotations

import numpy as np

OFF_SIG_THRESHOLD: float = 0.2
"""``off_sig`` counts the off-diagonal probabilities at or above this value (the official threshold)."""
CLIP_CC3M_FOOTER: dict[int, dict[str, float]] = {
    512: {"on_diag_avg": 0.565, "off_diag_avg": 0.001, "off_diag_max_avg": 0.215},
    1024: {"on_diag_avg": 0.480, "off_diag_avg": 0.001, "off_diag_max_avg": 0.230},
    2048: {"on_diag_avg": 0.398, "off_diag_avg": 0.000, "off_diag_max_avg": 0.238},
}
"""CLIP ViT-B/32 on CC3M training pairs, from the footer of the official ``dataset_analysis.py``."""


def batch_matching_stats(probs: np.ndarray, threshold: float = OFF_SIG_THRESHOLD) -> dict[str, float]:
    """Statistics of one batch's image->text match probabilities P (B, B), rows softmax-normalised, as the
    official ``dataset_analysis.py``: mean diagonal, mean off-diagonal (divided by all B² entries, the
    diagonal counted as 0), mean row maximum off the diagonal, and the number of off-diagonal P ≥ ``threshold``."""
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"probs must be a square (B, B) matrix, got {p.shape}")
    off = p * (1.0 - np.eye(len(p)))
    return {"on_diag_avg": float(np.diag(p).mean()), "off_diag_avg": float(off.mean()),
            "off_diag_max_avg": float(off.max(axis=1).mean()), "off_sig": int((off >= threshold).sum())}


def statistics_markdown(batch_size: int, scale: float) -> str:
    """Markdown that defines each statistic and says how our batch size stands to the footer's."""
    footer = "; ".join(f"batch {b:,}: on_diag_avg {s['on_diag_avg']:.3f}, off_diag_max_avg {s['off_diag_max_avg']:.3f}"
                       for b, s in CLIP_CC3M_FOOTER.items())
    uniform = 1 / batch_size
    return (
        f"Per batch of B = {batch_size} training pairs, P = softmax over each row of {scale:g} · v·tᵀ (the "
        f"probability that image i goes with caption j; each row sums to 1):\n\n"
        f"- **on_diag_avg**: the mean of P_ii, the probability the model gives to the image's own caption;\n"
        f"- **off_diag_avg**: the mean of all B² entries with the diagonal set to 0 (the official divisor), about "
        f"(1 − on_diag_avg) / B;\n"
        f"- **off_diag_max_avg**: the mean over rows of the largest non-paired probability, how strongly the best "
        f"other caption matches;\n"
        f"- **off_sig**: the number of non-paired probabilities ≥ {OFF_SIG_THRESHOLD:g} in the batch (of B(B − 1) "
        f"= {batch_size * (batch_size - 1):,}).\n\n"
        f"The official footer measured CLIP ViT-B/32 on CC3M ({footer}). Our batches hold {batch_size} pairs: with "
        f"fewer captions competing in each row the paired caption keeps more probability (a uniform row gives "
        f"{uniform:.3f} to each caption, against {1 / 512:.4f} at 512), and the footer shows on_diag_avg falling "
        f"as the batch grows. Our numbers are therefore not comparable with CLIP's, even before the model and the "
        f"data differ; they describe how noisy our own training batches look to our own model.")
