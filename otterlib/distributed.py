"""Process-group helpers: rank, world size and the all-gathers the losses use.

Every helper works with and without ``torch.distributed``: outside a process group the rank is 0, the
world size is 1 and a gather returns the local tensor. ``all_gather`` needs the same local batch size
on every rank (train with ``drop_last=True``); rows of the result are ordered by rank, so the sample
at local row ``i`` of rank ``r`` sits at global row ``r * B + i``.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank in the default group (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, without gradient.

    ``x``: (B, ...) on this rank, same shape on every rank. Returns (W·B, ...) detached, rows ordered by
    rank. This is the official ``concat_all_gather`` (``@torch.no_grad``) on W > 1 ranks; when not
    distributed it returns ``x.detach()``, so the gathered columns never carry gradient whatever the
    world size (the official no-op gather kept the gradient at W = 1; see ``docs/losses.md``).
    """
    if not is_distributed():
        return x.detach()
    with torch.no_grad():
        local = x.detach().contiguous()
        parts = [torch.empty_like(local) for _ in range(get_world_size())]
        dist.all_gather(parts, local)
        return torch.cat(parts, dim=0)


def all_gather_local_grad(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather_no_grad`, but this rank's own rows keep ``x``'s gradient.

    ``x``: (B, ...). Returns (W·B, ...) where rows ``rank·B .. rank·B+B-1`` are ``x`` itself (open_clip's
    default gather); the other ranks' rows carry no gradient. At W = 1 this is ``x``.
    """
    gathered = all_gather_no_grad(x)
    start = get_rank() * x.shape[0]
    return torch.cat([gathered[:start], x, gathered[start + x.shape[0]:]], dim=0)
