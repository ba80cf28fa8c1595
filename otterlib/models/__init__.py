"""Model registry: image encoders, text encoders, the dual encoder and eval-only reference models."""
from otterlib.models.clip_reference import REFERENCE_MODELS, ClipReference, load_clip_reference
from otterlib.models.hub import HubUnavailableError
from otterlib.models.image import IMAGE_ENCODERS, create_image_encoder
from otterlib.models.model import ImageTextModel, create_model
from otterlib.models.text import PAPER_TEXT_MODELS, create_text_encoder

__all__ = [
    "REFERENCE_MODELS", "ClipReference", "load_clip_reference", "HubUnavailableError", "IMAGE_ENCODERS",
    "create_image_encoder", "ImageTextModel", "create_model", "PAPER_TEXT_MODELS", "create_text_encoder",
]
