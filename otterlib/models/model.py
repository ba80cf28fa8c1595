"""The dual encoder trained by every method: image and text encoders projected to one unit sphere."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from otterlib.config import ModelConfig
from otterlib.models.image import create_image_encoder
from otterlib.models.text import create_text_encoder


class ImageTextModel(nn.Module):
    """``encode_image``: (B, 3, H, W) -> (B, D); ``encode_text``: list of B captions -> (B, D); both L2-normalised.

    As in the official code, the image head is a new Linear(features -> D) and the text head is a
    Linear only when the text width differs from D (Identity otherwise).
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, embed_dim: int) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = nn.Linear(image_encoder.out_dim, embed_dim)
        self.text_proj: nn.Module = (nn.Identity() if text_encoder.out_dim == embed_dim
                                     else nn.Linear(text_encoder.out_dim, embed_dim))
        self.embed_dim = embed_dim

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.image_encoder(images)), dim=-1)

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask (B, T) each; tokenize a batch once when several models read it."""
        return self.text_encoder.tokenize(captions)

    def encode_text(self, captions: list[str] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text_encoder(captions)), dim=-1)

    def forward(self, images: torch.Tensor, captions: list[str] | Mapping[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) and B captions (or their tokens) -> (image (B, D), text (B, D)) embeddings."""
        return self.encode_image(images), self.encode_text(captions)


def create_model(cfg: ModelConfig, attn_implementation: str | None = None) -> ImageTextModel:
    """Build the dual encoder a profile's setting names, with the requested early layers frozen.

    ``attn_implementation``: the text encoder's attention kernel (``sdpa``, ``eager``; None: transformers' default).
    """
    image = create_image_encoder(cfg.image_encoder, cfg.pretrained)
    text = create_text_encoder(cfg.text_encoder, cfg.pretrained, cfg.max_text_tokens, attn_implementation)
    image.freeze_stages(cfg.freeze_image_blocks)
    text.freeze_layers(cfg.freeze_text_layers)
    return ImageTextModel(image, text, cfg.embed_dim)
