"""Does a speed knob still compute the plain float32 step? A few trainer steps of two configurations, compared.

:func:`trace_steps` builds a run through the trainer's own construction (:func:`otterlib.train.build_training`)
and runs :func:`otterlib.train.train_step` on fixed synthetic batches, recording each step's loss terms and, at
the end, every student and teacher tensor (parameters and buffers). :func:`differences` lists what differs
beyond the tolerances below. Dropout is set to 0: SDPA and compiled kernels draw other dropout masks than eager
PyTorch (the same distribution, other random numbers), which is no difference in the computation.

Used by ``tests/test_step_equivalence.py`` (CPU, tiny encoders) and by ``python -m otterlib.gpu_check`` (CUDA).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn

from otterlib.config import RunConfig
from otterlib.train import build_training, prepare_images, train_step, uses_channels_last

TERMS_RTOL: float = 1e-5
"""Loss terms: |variant − plain| <= 1e-5·|plain| at every step. Measured on CPU (tiny encoders, 3 SGD steps): 0 for
foreach and the teacher under inference_mode, <= 1e-6 for fused, SDPA, channels-last and torch.compile; the
deliberately wrong lr·1.001 gives 1.5e-4 (InfoNCE) to 1e-3 (OTTER), bf16 autocast 4e-3 to 2.5e-2."""
PARAM_RTOL: float = 1e-5
PARAM_ATOL: float = 1e-6
"""Every tensor after the steps: max|variant − plain| <= 1e-5·max|plain| + 1e-6. Measured on CPU: <= 4.5e-6 on a
tensor of max 2.7 (channels-last, compile); lr·1.001 gives 2.7e-3, the teacher in eval mode 7.6e-2."""
WORDS = "apple river stone cloud tiger violin carpet meadow engine harbor pencil garden red blue small".split()


@dataclass
class StepTrace:
    """Loss terms of each step and the final ``student.*`` / ``teacher.*`` tensors (on the CPU)."""

    terms: list[dict[str, float]]
    state: dict[str, torch.Tensor]


def synthetic_batches(n: int, batch: int, image_size: int, seed: int = 5) -> list[tuple[torch.Tensor, list[str]]]:
    """``n`` batches of (batch, 3, S, S) standard-normal images and captions of 3–9 words."""
    g, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    return [(torch.randn(batch, 3, image_size, image_size, generator=g),
             [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(batch)])
            for _ in range(n)]


def trace_steps(cfg: RunConfig, batches: list[tuple[torch.Tensor, list[str]]], device: torch.device,
                channels_last: bool | None = None) -> StepTrace:
    """Run ``batches`` through the trainer's step with dropout off (seed 0 for the weights, 100 + i before step i).

    ``channels_last``: None as the trainer decides (:func:`otterlib.train.uses_channels_last`); True converts the
    image encoders and images also on the CPU (what the trainer does on CUDA)."""
    torch.manual_seed(0)
    parts = build_training(cfg, device, 1)
    models = [parts.module.model] + ([parts.teacher.module] if parts.teacher is not None else [])
    convert = uses_channels_last(cfg.train, device) if channels_last is None else channels_last
    for model in models:
        for sub in model.modules():
            if isinstance(sub, nn.Dropout):
                sub.p = 0.0
        if convert:
            model.image_encoder.to(memory_format=torch.channels_last)
    terms = []
    for i, (images, captions) in enumerate(batches):
        torch.manual_seed(100 + i)
        out = train_step(parts.module, parts.teacher, parts.optimizer, prepare_images(images, device, convert),
                         captions, parts.amp_dtype, None)
        terms.append({k: float(v) for k, v in out.items()})
    state = {f"student.{k}": v.detach().cpu().clone() for k, v in parts.module.state_dict().items()}
    if parts.teacher is not None:
        state |= {f"teacher.{k}": v.detach().cpu().clone() for k, v in parts.teacher.module.state_dict().items()}
    return StepTrace(terms, state)


def max_differences(plain: StepTrace, variant: StepTrace, param_rtol: float = PARAM_RTOL,
                    param_atol: float = PARAM_ATOL) -> dict[str, float]:
    """``terms_rel``: the largest |variant − plain| / |plain| of a loss term; ``state_abs``: the largest
    max|variant − plain| of a floating-point tensor; ``state_vs_tolerance``: the largest such difference over its
    allowance ``param_rtol·max|plain| + param_atol`` (<= 1: within the tolerance)."""
    if plain.state.keys() != variant.state.keys():
        raise ValueError("the traces hold different tensors; compare runs of the same method and model")
    terms = max((abs(v[k] - p[k]) / max(abs(p[k]), 1e-30) for p, v in zip(plain.terms, variant.terms) for k in p),
                default=0.0)
    errs = [((variant.state[k].double() - ref.double()).abs().max().item(), ref.abs().max().item())
            for k, ref in plain.state.items() if ref.is_floating_point()]
    return {"terms_rel": terms, "state_abs": max((e for e, _ in errs), default=0.0),
            "state_vs_tolerance": max((e / (param_rtol * m + param_atol) for e, m in errs), default=0.0)}


def differences(plain: StepTrace, variant: StepTrace, terms_rtol: float = TERMS_RTOL, param_rtol: float = PARAM_RTOL,
                param_atol: float = PARAM_ATOL) -> list[str]:
    """What differs beyond the tolerances (empty: equivalent): one line per loss term of a step or tensor."""
    if plain.state.keys() != variant.state.keys():
        raise ValueError("the traces hold different tensors; compare runs of the same method and model")
    bad = [f"step {i} {k}: {v[k]!r} vs {p[k]!r}" for i, (p, v) in enumerate(zip(plain.terms, variant.terms))
           for k in p if abs(v[k] - p[k]) > terms_rtol * abs(p[k])]
    for k, ref in plain.state.items():
        if ref.is_floating_point():
            err = (variant.state[k].double() - ref.double()).abs().max().item()
            if err > param_rtol * ref.abs().max().item() + param_atol:
                bad.append(f"{k}: max abs difference {err:.3g}")
        elif not torch.equal(ref, variant.state[k]):
            bad.append(f"{k}: differs")
    return bad
