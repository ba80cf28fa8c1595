"""The trainer's fidelity fixes, checked on the device they matter on (CUDA; on a CPU what a CPU can run).

1. ``teacher_modes``: forward pre-hooks record the mode of every EMA-teacher submodule while a training step
   embeds a batch, for ``loss.teacher_mode`` train and eval; the student is entirely in train mode.
2. ``syncbn``: inside a 1-process group (NCCL on CUDA, gloo on CPU), :func:`otterlib.train.build_training_modules`
   with SyncBatchNorm (what CUDA DDP gets): the teacher has the student's layer types, SyncBatchNorm included; on
   CUDA a DDP step runs under bf16 autocast.
3. ``float32_logits``: at B = 512, D = 768 the loss terms are float32 under bf16 autocast, and the gradient of
   float32 embeddings under autocast equals the float32 one (bf16 embeddings: their own rounding, about 1 %).
4. ``sinkhorn``: OTTER's targets on the device in float32 against a float64 solve on the CPU.
5. ``knobs``: each speed knob against the plain float32 step (:mod:`otterlib.equivalence`) on the device, with
   TF32 off and deterministic cuDNN, on the tiny encoders (the same CUDA kernels: cuDNN convolutions, SDPA, the
   fused optimizer; a fraction of the construction time).

``python -m otterlib.fidelity_checks --json fidelity.json [--device cuda] [--small]``; every check reports
``ok`` and its numbers, and an exception in one is recorded as its ``error`` without stopping the others.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from otterlib.config import DataConfig, LossConfig, ModelConfig, RunConfig, TrainConfig
from otterlib.env import resolve_device

PAPER_MODEL = ModelConfig(image_encoder="timm:resnet50", text_encoder="bert_base_random", embed_dim=768,
                          pretrained=False, max_text_tokens=60)
SMALL_MODEL = ModelConfig(image_encoder="tiny_cnn", text_encoder="tiny_bert", embed_dim=32, pretrained=False,
                          max_text_tokens=16)
GRAD_RTOL_FP32_EMBEDDINGS: float = 1e-6
"""Relative gradient error allowed for float32 embeddings under bf16 autocast (the logits are float32: 0 expected)."""
SINKHORN_ATOL: float = 1e-6
"""Max |float32 device plan − float64 CPU plan| of the row-normalised OTTER targets (2.4e-10 measured on an H200)."""


def _config(model: ModelConfig, method: str, device: torch.device, batch: int, image_size: int,
            loss: LossConfig | None = None, **train: Any) -> RunConfig:
    t = TrainConfig(batch_size=batch, image_size=image_size, device=str(device), **train)
    return RunConfig(profile="check", setting="check", method=method, model=model, train=t, loss=loss or LossConfig(),
                     data=DataConfig(), run_dir="unused")


def teacher_modes(model: ModelConfig, device: torch.device, batch: int, image_size: int) -> dict[str, Any]:
    """Modes seen by the teacher's submodules (and the student's) during one step, per ``loss.teacher_mode``."""
    from otterlib.equivalence import synthetic_batches
    from otterlib.train import build_training, prepare_images, train_step, uses_channels_last

    out: dict[str, Any] = {"ok": True}
    for mode in ("train", "eval"):
        cfg = _config(model, "otter", device, batch, image_size, LossConfig(teacher_mode=mode))
        parts = build_training(cfg, device, 1)
        parts.module.train()
        seen: set[bool] = set()
        hooks = [m.register_forward_pre_hook(lambda mod, _: seen.add(mod.training))
                 for m in parts.teacher.module.modules()]
        images, captions = synthetic_batches(1, batch, image_size)[0]
        images = prepare_images(images, device, uses_channels_last(cfg.train, device))
        train_step(parts.module, parts.teacher, parts.optimizer, images, captions, parts.amp_dtype, None)
        for h in hooks:
            h.remove()
        student = {m.training for m in parts.module.modules()}
        out[mode] = {"teacher_modes_seen": sorted(seen), "student_modes": sorted(student)}
        out["ok"] &= seen == {mode == "train"} and student == {True}
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def syncbn(model: ModelConfig, device: torch.device, batch: int, image_size: int) -> dict[str, Any]:
    """Student and teacher layer types with SyncBatchNorm in a 1-process group; on CUDA one DDP step (bf16)."""
    from otterlib.equivalence import synthetic_batches
    from otterlib.losses import create_loss
    from otterlib.models import create_model
    from otterlib.train import autocast_dtype, build_training_modules, create_optimizer, prepare_images, train_step

    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", world_size=1, rank=0)
    try:
        module, teacher = build_training_modules(create_model(model).to(device), create_loss("otter").to(device),
                                                 LossConfig(), sync_batchnorm=True)
        student_types = {n: type(m).__name__ for n, m in module.model.named_modules()}
        teacher_types = {n: type(m).__name__ for n, m in teacher.module.named_modules()}
        out: dict[str, Any] = {"backend": backend,
                               "student_syncbn": sum(t == "SyncBatchNorm" for t in student_types.values()),
                               "teacher_syncbn": sum(t == "SyncBatchNorm" for t in teacher_types.values()),
                               "types_equal": student_types == teacher_types}
        out["ok"] = out["types_equal"] and out["student_syncbn"] > 0
        if device.type == "cuda":  # PyTorch's SyncBatchNorm has no CPU forward
            ddp = nn.parallel.DistributedDataParallel(module, device_ids=[device])
            optimizer = create_optimizer([p for p in ddp.parameters() if p.requires_grad], TrainConfig())
            images, captions = synthetic_batches(1, batch, image_size)[0]
            terms = train_step(ddp, teacher, optimizer, prepare_images(images, device, False), captions,
                               autocast_dtype("bf16", device), None)
            out["ddp_step_loss"] = float(terms["loss"])
            out["ok"] &= bool(torch.isfinite(terms["loss"]))
        return out
    finally:
        dist.destroy_process_group()


def float32_logits(device: torch.device, batch: int = 512, dim: int = 768) -> dict[str, Any]:
    """Loss dtype under bf16 autocast and the embedding gradient's relative error against float32."""
    from otterlib.losses import create_loss

    g = torch.Generator().manual_seed(0)
    base = [torch.nn.functional.normalize(torch.randn(batch, dim, generator=g), dim=-1).to(device) for _ in range(4)]
    out: dict[str, Any] = {"ok": True}
    for method in ("infonce", "otter"):
        loss_fn = create_loss(method).to(device)

        def grad(autocast: bool, bf16_embeddings: bool) -> tuple[torch.Tensor, torch.dtype]:
            img, txt = (x.clone().requires_grad_(True) for x in base[:2])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                a, b = (img.bfloat16(), txt.bfloat16()) if bf16_embeddings else (img, txt)
                terms = loss_fn(a, b, base[2], base[3]) if loss_fn.needs_teacher else loss_fn(a, b)
            terms["loss"].backward()
            return torch.cat([img.grad, txt.grad]), terms["loss"].dtype

        ref, _ = grad(False, False)
        g32, dtype = grad(True, False)
        gbf, _ = grad(True, True)
        row = {"loss_dtype": str(dtype),
               "grad_rel_err_fp32_embeddings": float((g32 - ref).norm() / ref.norm()),
               "grad_rel_err_bf16_embeddings": float((gbf - ref).norm() / ref.norm())}
        out[method] = row
        out["ok"] &= dtype == torch.float32 and row["grad_rel_err_fp32_embeddings"] <= GRAD_RTOL_FP32_EMBEDDINGS
    return out


def sinkhorn(device: torch.device, batch: int = 512, dim: int = 768) -> dict[str, Any]:
    """Max |device float32 − CPU float64| of OTTER's row-normalised soft targets."""
    from otterlib.losses import create_loss

    g = torch.Generator().manual_seed(1)
    img, txt = (torch.nn.functional.normalize(torch.randn(batch, dim, generator=g, dtype=torch.float64), dim=-1)
                for _ in range(2))
    loss_fn = create_loss("otter")
    ref = loss_fn.soft_targets(img, txt)
    got = loss_fn.to(device).soft_targets(img.float().to(device), txt.float().to(device))
    err = max(float((a.double().cpu() - b).abs().max()) for a, b in zip(got, ref))
    return {"max_abs_diff": err, "ok": err <= SINKHORN_ATOL}


def knobs(model: ModelConfig, device: torch.device, batch: int, image_size: int) -> dict[str, Any]:
    """Each knob of ``TrainConfig`` against the plain float32 step (3 OTTER steps), on ``device``."""
    from otterlib.equivalence import differences, max_differences, synthetic_batches, trace_steps

    plain = dict(precision="fp32", optimizer_impl="for_loop", text_attention="eager", channels_last=False)
    variants = {"foreach": dict(optimizer_impl="foreach"), "fused": dict(optimizer_impl="fused"),
                "sdpa": dict(text_attention="sdpa"), "teacher_inference_mode": dict(teacher_inference_mode=True),
                "channels_last": dict(channels_last=True)}
    batches = synthetic_batches(3, batch, image_size)
    tf32, det, bench = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.deterministic, \
        torch.backends.cudnn.benchmark
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.deterministic = False, True
    torch.backends.cudnn.benchmark = False
    try:
        cfg = _config(model, "otter", device, batch, image_size, **plain)
        ref = trace_steps(cfg, batches, device)
        out: dict[str, Any] = {"ok": True}
        for name, change in variants.items():
            variant = trace_steps(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **change)), batches,
                                  device, channels_last=change.get("channels_last"))
            bad = differences(ref, variant)
            out[name] = max_differences(ref, variant) | {"ok": not bad, "first_differences": bad[:3]}
            out["ok"] &= not bad
        return out
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.deterministic = tf32, det
        torch.backends.cudnn.benchmark = bench


def run_checks(device: torch.device, small: bool) -> dict[str, Any]:
    """Every check (see the module docstring); ``small``: tiny encoders at 32 px instead of RN50 + BERT-base."""
    model, batch, size = (SMALL_MODEL, 8, 32) if small else (PAPER_MODEL, 16, 64)
    checks: dict[str, Callable[[], dict[str, Any]]] = {
        "teacher_modes": lambda: teacher_modes(model, device, batch, size),
        "syncbn": lambda: syncbn(model, device, batch, size),
        "float32_logits": lambda: float32_logits(device, 64 if small else 512, 32 if small else 768),
        "sinkhorn": lambda: sinkhorn(device, 64 if small else 512, 32 if small else 768),
        "knobs": lambda: knobs(SMALL_MODEL, device, 8, 32),
    }
    out: dict[str, Any] = {"device": str(device), "model": dataclasses.asdict(model)}
    for name, check in checks.items():
        try:
            out[name] = check()
        except Exception:  # noqa: BLE001 - recorded, the other checks still run
            out[name] = {"ok": False, "error": traceback.format_exc(limit=8)}
        print(f"{name}: {'ok' if out[name]['ok'] else 'FAILED'}", flush=True)
    out["ok"] = all(out[name]["ok"] for name in checks)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--small", action="store_true", help="tiny encoders (CPU smoke)")
    p.add_argument("--json", type=Path, required=True)
    a = p.parse_args(argv)
    result = run_checks(resolve_device(a.device), a.small)
    a.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
