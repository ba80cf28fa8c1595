"""Locked-encoder training: projection heads with their own EMA teacher, on cached pooled features.

The student is an :class:`~otterlib.models.model.ImageTextModel` whose encoders are :class:`FeatureInput`
stand-ins: its input already is the locked encoder's pooled feature, so the model is exactly the trainable
part of the full dual encoder (``image_proj``, ``text_proj`` and the L2 normalisation). A step is
:func:`otterlib.train.train_step` unchanged (EMA update, teacher forward, the objective from
:mod:`otterlib.losses`, backward, optimizer step), so every recipe knob (α, ε, λ, Sinkhorn iterations,
temperatures, EMA decay, optimizer) means what it means in the full trainer. Runs on any device.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import torch
from torch import nn

from otterlib.config import RunConfig
from otterlib.ema import EMATeacher
from otterlib.env import resolve_device
from otterlib.losses import create_loss
from otterlib.models.model import ImageTextModel
from otterlib.train import (FiniteGuard, StudentWithLoss, autocast_dtype, create_optimizer, loss_kwargs,
                            lr_at_epoch, train_step)


class FeatureInput(nn.Module):
    """A locked encoder whose output is given: ``forward`` returns the (B, out_dim) features it receives.

    ``tokenize`` wraps text features as the "tokens" the trainer passes around (``{"features": (B, F)}``).
    """

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.out_dim: int = out_dim

    def tokenize(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": features}

    def forward(self, features: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = features["features"] if isinstance(features, Mapping) else features
        if x.dim() != 2 or x.shape[1] != self.out_dim:
            raise ValueError(f"expected (B, {self.out_dim}) features, got shape {tuple(x.shape)}")
        return x


def locked_model(image_dim: int, text_dim: int, embed_dim: int) -> ImageTextModel:
    """The heads of the dual encoder on (B, image_dim) and (B, text_dim) pooled features -> (B, embed_dim)."""
    return ImageTextModel(FeatureInput(image_dim), FeatureInput(text_dim), embed_dim)


class LockedTrainer:
    """One locked-mode run of ``total_steps`` steps: the heads (``model``), the objective ``cfg.method`` with
    ``loss_kwargs(cfg)``, its EMA teacher over the heads (KD, OTTER; decay ``cfg.loss.ema_decay``), the optimizer
    of ``cfg.train`` and its schedule (the trainer's, with one step in the role of one epoch: ``cosine_epoch``
    anneals over the ``total_steps``). ``cfg.train.device``, ``precision`` and ``grad_clip`` apply as in the
    trainer."""

    def __init__(self, cfg: RunConfig, model: ImageTextModel, total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.schedule = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=total_steps))
        self.device = resolve_device(cfg.train.device)
        self.model = model.to(self.device)
        self.loss = create_loss(cfg.method, **loss_kwargs(cfg)).to(self.device)
        self.teacher = EMATeacher(self.model, decay=cfg.loss.ema_decay) if self.loss.needs_teacher else None
        self.module = StudentWithLoss(self.model, self.loss)
        self.optimizer = create_optimizer([p for p in self.module.parameters() if p.requires_grad], cfg.train)
        self.amp_dtype = autocast_dtype(cfg.train.precision, self.device)
        self.grad_clip = cfg.train.grad_clip
        self.steps = 0
        self.guard = FiniteGuard()

    @classmethod
    def create(cls, cfg: RunConfig, image_dim: int, text_dim: int, total_steps: int) -> "LockedTrainer":
        """Heads initialised from ``cfg.train.seed`` (the same initial heads for every method of a seed)."""
        torch.manual_seed(cfg.train.seed)
        return cls(cfg, locked_model(image_dim, text_dim, cfg.model.embed_dim), total_steps)

    def step(self, image_features: torch.Tensor, text_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimizer step on a batch of (B, F_img) and (B, F_txt) features; returns the loss terms (on the device).
        Non-finite terms are found by :meth:`check` (no host sync here)."""
        self.module.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at_epoch(self.schedule, self.steps)
        terms = train_step(self.module, self.teacher, self.optimizer, image_features.to(self.device),
                           text_features.to(self.device), self.amp_dtype, self.grad_clip)
        self.guard.add(0, self.steps, self.steps, terms)
        self.steps += 1
        return terms

    def check(self) -> None:
        """Raise :class:`otterlib.train.NonFiniteLossError` naming the first non-finite step since the last check."""
        self.guard.check()

    @torch.no_grad()
    def targets(self, image_features: torch.Tensor, text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective's (B, B) row-stochastic targets of the image and text rows of this batch, from the
        EMA teacher as it is now (after a step: the targets that step trained toward). InfoNCE and LS targets
        do not depend on embeddings; the student's are passed for their shape."""
        net = self.teacher.module if self.teacher is not None else self.model
        img, txt = net(image_features.to(self.device), text_features.to(self.device))
        return self.loss.targets(img, txt)

    @torch.no_grad()
    def embed(self, image_features: torch.Tensor | None = None, text_features: torch.Tensor | None = None
              ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The student's L2-normalised (N, D) embeddings of image and/or text features (None stays None)."""
        self.model.eval()
        img = None if image_features is None else self.model.encode_image(image_features.to(self.device))
        txt = None if text_features is None else self.model.encode_text(text_features.to(self.device))
        return img, txt
