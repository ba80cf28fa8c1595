"""Process environment: offline switches, repository paths, provenance and device choice.

Import this module (or call :func:`configure_offline`) before importing img2dataset, transformers or
matplotlib in a process that must not reach the network.
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

REPO_ROOT: Path = Path(__file__).resolve().parents[1]
"""The checkout that holds ``otterlib/``, ``data/``, ``results/`` and ``notebooks/``."""

OFFLINE_ENV: dict[str, str] = {
    "NO_ALBUMENTATIONS_UPDATE": "1",  # img2dataset -> albumentations checks for updates over HTTPS otherwise
    "WANDB_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "no_proxy": "127.0.0.1,localhost",
    "TOKENIZERS_PARALLELISM": "false",
}
"""Variables every offline run sets (see ``shared/reference/environment.md``)."""

ALWAYS_ENV: dict[str, str] = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "WANDB_MODE": "disabled",
    "no_proxy": "127.0.0.1,localhost",
    "TOKENIZERS_PARALLELISM": "false",
}
"""Variables that are harmless online too and are always set."""


def configure_offline(offline: bool = True) -> dict[str, str]:
    """Set the offline (or always-safe) environment variables unless the user already set them.

    Returns the variables that this call set.
    """
    wanted = OFFLINE_ENV if offline else ALWAYS_ENV
    changed = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(changed)
    return changed


def git_sha(repo: Path = REPO_ROOT) -> str:
    """The checkout's HEAD commit, with ``+dirty`` when tracked files differ; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return device


def runtime_info() -> dict[str, Any]:
    """Versions and backend switches that a run records next to its metrics."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "num_threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info
