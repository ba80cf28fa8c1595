"""EMA teacher for KD and OTTER: a frozen deep copy of the student whose parameters track the student's.

Official behaviour (``models/ema.py`` and ``DistillationModel.ema_step``): before every training step
the teacher's parameters become ``d·teacher + (1 − d)·student`` with the warm-up decay
``d_t = min(0.999, (1 + t) / (10 + t))``, where ``t`` counts the updates made so far including this one
(so the first update uses ``d_1 = 2/11``). Only parameters are averaged; buffers (BatchNorm running
statistics) are left as they are. The official teacher runs entirely in train mode (``model.train()``
recurses into it): dropout active, BatchNorm on batch statistics. That is ``mode="train"`` here, set on
every submodule whatever mode the student was in when it was copied (Hugging Face encoders come back
from ``from_pretrained`` in eval mode).
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

TEACHER_MODES: tuple[str, ...] = ("train", "eval")
"""``train``: the official teacher (dropout on, BatchNorm batch statistics); ``eval``: dropout off, BatchNorm on
the student's running statistics (a deviation, ``loss.teacher_mode: eval``)."""


class EMATeacher:
    """Frozen exponential-moving-average copy of a student network.

    ``module`` is the teacher network (same class and parameter names as the student, every parameter
    ``requires_grad=False``). It is deliberately not an ``nn.Module`` attribute of anything, so it can
    never end up in an optimizer, a DDP wrapper or the student's state dict by accident. Build it after
    moving the student to its device and dtype and after any layer conversion (SyncBatchNorm), and pass
    the unwrapped student (not the DDP wrapper) to :meth:`update`.

    ``mode`` (one of :data:`TEACHER_MODES`) applies to every submodule of the teacher, at construction and
    again at every forward through :meth:`__call__`. In ``eval`` mode :meth:`update` also copies the
    student's buffers (BatchNorm running statistics), which an eval-mode forward would otherwise never
    update; in ``train`` mode the teacher keeps its own buffers, as the official one does.

    ``inference_mode`` runs the forward under ``torch.inference_mode`` instead of ``torch.no_grad`` (less
    autograd bookkeeping; the values are the same). The mode's semantics stay: in ``train`` mode BatchNorm
    still updates the teacher's running statistics (normal tensors may be changed in place there). The
    returned embeddings are inference tensors: fine for computations without gradient (the soft targets, and
    what is computed from them outside inference mode is a normal tensor), an error if saved for backward.
    """

    def __init__(self, student: nn.Module, decay: float = 0.999, mode: str = "train",
                 inference_mode: bool = False) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if mode not in TEACHER_MODES:
            raise ValueError(f"teacher mode must be one of {list(TEACHER_MODES)}, got {mode!r}")
        self.decay: float = decay
        self.mode: str = mode
        self.inference_mode: bool = inference_mode
        self.num_updates: int = 0
        self.module: nn.Module = copy.deepcopy(student)
        self.module.requires_grad_(False)
        self.module.train(mode == "train")

    def __call__(self, *inputs: Any) -> Any:
        """The teacher's forward without gradient, every submodule in :attr:`mode` (e.g. images (B, 3, H, W)
        and B captions or their tokens -> (image (B, D), text (B, D)) for the dual encoder)."""
        self.module.train(self.mode == "train")
        with torch.inference_mode() if self.inference_mode else torch.no_grad():
            return self.module(*inputs)

    @staticmethod
    def decay_at(t: int, max_decay: float = 0.999) -> float:
        """Decay of the ``t``-th update: ``min(max_decay, (1 + t) / (10 + t))``.

        0.1 at t = 0, 2/11 at the first update (t = 1), 0.55 at t = 10, ``max_decay`` = 0.999 from t = 8990 on.
        """
        if t < 0:
            raise ValueError(f"update index t must be >= 0, got {t}")
        return min(max_decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, student: nn.Module) -> float:
        """Average the student's parameters into the teacher (in ``eval`` mode also copy its buffers); returns
        the decay used.

        Call once before every training step's forward, as the official code does.
        """
        teacher_params = _named(self.module.named_parameters(), student.named_parameters(), "parameters")
        student_params = dict(student.named_parameters())
        self.num_updates += 1
        decay = self.decay_at(self.num_updates, self.decay)
        names = list(teacher_params)
        torch._foreach_lerp_([teacher_params[n] for n in names], [student_params[n].detach() for n in names],
                             1.0 - decay)  # one fused kernel per device/dtype group instead of one per tensor
        if self.mode == "eval":
            student_buffers = dict(student.named_buffers())
            for name, buffer in _named(self.module.named_buffers(), student.named_buffers(), "buffers").items():
                buffer.copy_(student_buffers[name])
        return decay

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint: the teacher's full state dict, the update counter and the maximal decay."""
        return {"module": self.module.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint written by :meth:`state_dict`."""
        missing = {"module", "num_updates", "decay"} - state.keys()
        if missing:
            raise ValueError(f"EMA teacher checkpoint lacks {sorted(missing)}; save it with EMATeacher.state_dict()")
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state["decay"])


def _named(teacher: Iterator[tuple[str, torch.Tensor]], student: Iterator[tuple[str, torch.Tensor]],
           kind: str) -> dict[str, torch.Tensor]:
    """The teacher's tensors by name, after checking that the student has exactly the same names."""
    teacher_tensors, student_names = dict(teacher), {name for name, _ in student}
    if teacher_tensors.keys() != student_names:
        differing = sorted(teacher_tensors.keys() ^ student_names)[:5]
        raise ValueError(
            f"student {kind} do not match the teacher's (first differing names: {differing}); pass the same "
            "unwrapped model the teacher was copied from (model, not DDP(model))"
        )
    return teacher_tensors
