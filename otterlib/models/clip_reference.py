"""OpenAI CLIP (via clip-anytorch) as an eval-only reference model with the suite's model interface."""
from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

REFERENCE_MODELS: dict[str, str] = {"clip_rn50": "RN50", "clip_vit_b32": "ViT-B/32"}
"""Reference-row name -> clip-anytorch model name (or a path to a saved CLIP state dict)."""


def clip_module() -> ModuleType:
    """``import clip`` (clip-anytorch) without its "pkg_resources is deprecated" warning: clip imports
    ``pkg_resources``, which setuptools < 81 (pinned for it) still ships and announces on every import."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import clip
    return clip


class ClipReference(nn.Module):
    """Wraps ``clip.model.CLIP``: ``encode_image`` (B,3,H,W) -> (B,D) and ``encode_text`` (list of B str) -> (B,D),
    both L2-normalised; ``preprocess`` is CLIP's own eval transform (PIL -> tensor)."""

    def __init__(self, clip_model: nn.Module, preprocess) -> None:
        super().__init__()
        self.clip = clip_model.float().eval()
        self.preprocess = preprocess

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(images).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        clip = clip_module()
        device = next(self.clip.parameters()).device
        tokens = clip.tokenize(list(captions), truncate=True).to(device)
        return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)


def load_clip_reference(name: str = "clip_rn50", device: str | torch.device = "cpu",
                        download_root: str | None = None) -> ClipReference:
    """Load a reference CLIP by row name (``clip_rn50``), clip model name (``RN50``) or a saved state-dict path.

    Offline, the download fails fast; the error says how to pre-fetch the weights.
    """
    clip = clip_module()

    model_name = REFERENCE_MODELS.get(name, name)
    if not Path(model_name).is_file() and model_name not in clip.available_models():
        raise ValueError(f"unknown CLIP reference {name!r}; valid: {sorted(REFERENCE_MODELS)}, "
                         f"{clip.available_models()} or a path to a CLIP checkpoint")
    try:
        model, preprocess = clip.load(model_name, device=device, jit=False, download_root=download_root)
    except OSError as err:  # urllib's URLError is an OSError
        raise RuntimeError(
            f"OpenAI CLIP {model_name!r} weights are not cached and could not be downloaded ({err}). On a machine "
            f"with internet run: python -c \"import clip; clip.load('{model_name}')\" (cache ~/.cache/clip), "
            f"then copy the .pt file here and pass its path.") from None
    return ClipReference(model, preprocess)
