"""The paper's image transforms (official ``data/loader.py:build_transforms`` without ``--image_aug``).

* train: RGB -> ``Resize(resize_size, bicubic)`` (shorter side) -> ``RandomCrop(image_size)`` -> tensor
  -> CLIP normalisation. No flip, no colour jitter.
* eval: RGB -> ``Resize(resize_size, bicubic)`` -> ``CenterCrop(image_size)`` -> tensor -> CLIP normalisation.

The paper uses ``image_size=224``, ``resize_size=256``; other sizes keep the 256/224 ratio by default
(64 px -> 73 px) so the CPU smoke profile can train at 64 px. Outputs are float32 tensors of shape
``(3, image_size, image_size)``: ``(pixel / 255 - mean) / std`` per channel.
"""
from __future__ import annotations

from PIL import Image
from torchvision import transforms as T

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


class ConvertRGB:
    """Convert any PIL mode (L, P, RGBA, CMYK, ...) to RGB; a named class so transforms pickle into
    DataLoader workers."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def default_resize_size(image_size: int) -> int:
    """``round(image_size * 256 / 224)``: 224 -> 256, 64 -> 73, 128 -> 146."""
    return round(image_size * 256 / 224)


def _check_sizes(image_size: int, resize_size: int | None) -> int:
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    resize = default_resize_size(image_size) if resize_size is None else resize_size
    if resize < image_size:
        raise ValueError(f"resize_size ({resize}) must be >= image_size ({image_size}): the crop is taken "
                         "from the resized image")
    return resize


def _pipeline(image_size: int, resize_size: int | None, crop: type[T.RandomCrop] | type[T.CenterCrop]) -> T.Compose:
    resize = _check_sizes(image_size, resize_size)
    return T.Compose([
        ConvertRGB(),
        T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC),
        crop(image_size),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def train_transform(image_size: int = 224, resize_size: int | None = None) -> T.Compose:
    """``PIL image -> (3, image_size, image_size)`` float tensor with a random crop.

    The crop position comes from torch's global RNG (the training loader seeds it per sample).
    """
    return _pipeline(image_size, resize_size, T.RandomCrop)


def eval_transform(image_size: int = 224, resize_size: int | None = None) -> T.Compose:
    """``PIL image -> (3, image_size, image_size)`` float tensor, centre crop (deterministic)."""
    return _pipeline(image_size, resize_size, T.CenterCrop)
