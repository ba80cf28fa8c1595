"""Load the released facebookresearch/OTTER checkpoints (RN50 + DeCLUTR-Sci-base) into our dual encoder.

The official ``ImageTextModel`` state dict (``checkpoint["state_dict"]``, possibly with DDP's ``module.``
prefix, or a ``DistillationModel`` with ``student.`` / ``teacher.`` halves) maps onto
:class:`otterlib.models.ImageTextModel` key by key:

=====================================  ======================================  =====================================
official key                           ours                                    why
=====================================  ======================================  =====================================
``image_encoder.model.fc.{weight,b}``  ``image_proj.{weight,bias}``            timm classifier reset to 768 outputs
``image_encoder.model.<k>``            ``image_encoder.backbone.<k>``          the timm backbone itself
``text_encoder.model.pooler.*``        (dropped)                               unused: features are mean-pooled
``text_encoder.model.<k>``             ``text_encoder.transformer.<k>``        the Hugging Face model
``text_encoder.fc.{weight,bias}``      ``text_proj.{weight,bias}``             only when width != 768; the official
                                                                               per-token Linear before the masked
                                                                               mean equals ours after it (linear)
``contrastive_loss.T``                 returned as ``logit_scale_theta``       the InfoNCE temperature θ
``dist_loss.T_s``                      returned as ``distill_logit_scale_theta``
=====================================  ======================================  =====================================
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

OFFICIAL_CHECKPOINT_URLS: dict[str, str] = {
    "infonce": "https://onedrive.live.com/download?cid=CDD071074C65025E&resid=CDD071074C65025E%21872&authkey=APyQBYUHUiU2voc",
    "label_smoothing": "https://onedrive.live.com/download?cid=CDD071074C65025E&resid=CDD071074C65025E%21874&authkey=AHo06qdL59Mx39M",
    "kd": "https://onedrive.live.com/download?cid=CDD071074C65025E&resid=CDD071074C65025E%21873&authkey=AAETynOUaaHM7jQ",
    "otter": "https://onedrive.live.com/download?cid=CDD071074C65025E&resid=CDD071074C65025E%21871&authkey=ANIpSxwJ3x9MAao",
}
"""The released model zoo (``otter.py:_MODELS`` of facebookresearch/OTTER): OneDrive links that may be dead."""

_RULES: tuple[tuple[str, str], ...] = (
    ("image_encoder.model.fc.", "image_proj."),
    ("image_encoder.model.", "image_encoder.backbone."),
    ("text_encoder.fc.", "text_proj."),
    ("text_encoder.model.", "text_encoder.transformer."),
)
_SCALARS = {"contrastive_loss.T": "logit_scale_theta", "dist_loss.T_s": "distill_logit_scale_theta"}


def map_official_state_dict(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Official keys -> (our ``ImageTextModel`` state dict, the learned temperatures θ).

    Accepts an ``ImageTextModel`` state dict, with or without ``module.``, or a ``DistillationModel`` one
    (the ``student.`` half is used). Unknown keys raise ``ValueError`` naming them.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("student.") for k in state):
        state = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")
                 or k.startswith("dist_loss.")}
    mapped: dict[str, torch.Tensor] = {}
    scalars: dict[str, float] = {}
    unknown = []
    for key, value in state.items():
        if key in _SCALARS:
            scalars[_SCALARS[key]] = float(value)
            continue
        if key.startswith("text_encoder.model.pooler."):
            continue
        for src, dst in _RULES:
            if key.startswith(src):
                mapped[dst + key[len(src):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} key(s) of the checkpoint are not part of the official ImageTextModel "
                         f"layout, e.g. {unknown[:5]}")
    return mapped, scalars


def load_official_checkpoint(model: torch.nn.Module, path: str | Path) -> dict[str, float]:
    """Load a released ``<name>.pth.tar`` into ``model`` (built from the paper setting: ``timm:resnet50`` +
    ``declutr-sci-base``, 768-d). Strict: a missing or surplus key is an error listing them. Returns the θs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found. The released checkpoints are linked in facebookresearch/OTTER's otter.py "
            f"(OneDrive, see OFFICIAL_CHECKPOINT_URLS); download one by hand if the links still work.")
    ckpt: Any = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds no state dict (expected a dict with 'state_dict')")
    mapped, scalars = map_official_state_dict(state)
    result = model.load_state_dict(mapped, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path} does not fit this model: missing {result.missing_keys[:5]} "
                         f"({len(result.missing_keys)}), unexpected {result.unexpected_keys[:5]} "
                         f"({len(result.unexpected_keys)}); build it as ModelConfig('timm:resnet50', "
                         f"'declutr-sci-base', embed_dim=768)")
    return scalars
