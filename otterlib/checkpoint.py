"""Checkpoints: atomic writes, the run folder's checkpoint names, and loading weights for evaluation."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LATEST = "latest.pt"
BEST = "best.pt"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def epoch_checkpoint(run_dir: Path, epoch: int) -> Path:
    """Student weights after ``epoch`` (1-based)."""
    return checkpoint_dir(run_dir) / f"epoch_{epoch:03d}.pt"


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: a crash never leaves a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by this package (plain tensors, dicts and numbers)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=map_location, weights_only=False)


def load_student_weights(model: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Load the student's ``model`` state dict from any of this package's checkpoints; returns the checkpoint's
    metadata (epoch, step, config hash)."""
    ckpt = load(path)
    model.load_state_dict(ckpt["model"])
    return {k: v for k, v in ckpt.items() if k in ("epoch", "global_step", "config_hash", "method", "val")}
