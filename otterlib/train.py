"""The trainer: one function for the notebook and the torchrun CLI.

``run_training(cfg)`` trains one (setting, method) run in this process, or, when ``cfg.train.nproc > 1`` or
``cfg.train.nnodes > 1``, launches ``torchrun -m otterlib.train --config <run_dir>/config.yaml``
(:func:`torchrun_command`) and streams its log.
``python -m otterlib.train --config ...`` (what torchrun starts) calls :func:`train` in every process.

Run folder contract (``results/<profile>/<setting>/<method>/``): ``config.yaml`` (resolved),
``log.jsonl`` (one JSON object per logged step / epoch), ``checkpoints/epoch_NNN.pt`` (student),
``checkpoints/latest.pt`` (everything needed to resume, atomically replaced), ``checkpoints/best.pt``
(best on the held-out validation split), ``metrics.json`` (final; written last, its presence means done).

Reproducibility (CPU): the same config and shards give bit-identical checkpoints (student, teacher,
temperatures, optimizer and RNG states) in any fresh process and after a kill and resume, provided the
torch thread count is the same (``runtime.num_threads`` in ``log.jsonl``): with 1 thread instead of 2 the
weights differ in the last bits (up to 1.3e-6 after 12 steps of the tiny test setting).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from otterlib import checkpoint as ckpt_io
from otterlib.config import LossConfig, RunConfig, TrainConfig, save_yaml
from otterlib import layout
from otterlib.data.loader import build_eval_pairs_loader, build_train_loader, require_complete, steps_per_epoch_from_manifest
from otterlib.data.transforms import eval_transform, train_transform
from otterlib.ema import EMATeacher
from otterlib.env import configure_offline, git_sha, resolve_device, runtime_info
from otterlib.losses import ContrastiveObjective, create_loss
from otterlib.models import create_model
from otterlib.timing import PhaseTimer, phase
from otterlib.validation import embed_pairs, retrieval_metrics


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf; the message names the step and the loss terms. ``latest.pt`` is left as it was."""


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]


class StudentWithLoss(nn.Module):
    """Student encoders and the objective (with its learnable temperatures) as one module, so that DDP
    all-reduces the temperatures' gradients too."""

    def __init__(self, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, images: torch.Tensor, captions: list[str] | dict[str, torch.Tensor],
                soft_targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Loss terms of a batch; ``soft_targets``: the teacher's (M̃^v, M̃^t) for KD and OTTER (None otherwise)."""
        img, txt = self.model(images, captions)
        if soft_targets is None:
            return self.loss(img, txt)
        return self.loss(img, txt, soft_targets=soft_targets)


def build_training_modules(model: nn.Module, loss_fn: ContrastiveObjective, loss_cfg: LossConfig, *,
                           sync_batchnorm: bool, teacher_inference_mode: bool = False
                           ) -> tuple[StudentWithLoss, EMATeacher | None]:
    """The student (encoders + objective as one module, to be wrapped in DDP by the caller) and, when the
    objective needs one, its EMA teacher (``loss_cfg.ema_decay``, ``loss_cfg.teacher_mode``; forward under
    ``torch.inference_mode`` when ``teacher_inference_mode``).

    ``sync_batchnorm`` converts the student's BatchNorm layers to SyncBatchNorm (CUDA DDP, as the official code).
    The teacher is copied from the converted student, so its BatchNorm normalises over the global batch too
    (as the official teacher, a copy of the converted model). It is no submodule of the returned student, so
    it never enters DDP, the optimizer or the student's state dict.
    """
    module = StudentWithLoss(model, loss_fn)
    if sync_batchnorm:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    teacher = (EMATeacher(module.model, decay=loss_cfg.ema_decay, mode=loss_cfg.teacher_mode,
                          inference_mode=teacher_inference_mode)
               if loss_fn.needs_teacher else None)
    return module, teacher


@dataclass
class TrainingParts:
    """What :func:`build_training` makes for one process: the student (``DistributedDataParallel`` around a
    :class:`StudentWithLoss` when ``world > 1``), the EMA teacher (None for InfoNCE and LS), the objective (inside
    the student), the optimizer and the autocast dtype (None: float32)."""

    module: nn.Module
    teacher: EMATeacher | None
    loss_fn: ContrastiveObjective
    optimizer: torch.optim.Optimizer
    amp_dtype: torch.dtype | None


def build_training(cfg: RunConfig, device: torch.device, world: int) -> TrainingParts:
    """The trainer's construction of a run's modules, shared with the benchmark (``otterlib.bench``).

    In order: the model (``train.text_attention``), channels-last image encoder (``train.channels_last``, CUDA),
    the objective, :func:`build_training_modules` (SyncBatchNorm under CUDA DDP, then the teacher copied from the
    converted student), ``torch.compile`` in place of student and teacher (``train.compile``), DDP when
    ``world > 1``, the optimizer (``train.optimizer_impl``) and the autocast dtype (``train.precision``). The
    student comes back entirely in train mode, whatever mode its encoders were loaded in (``from_pretrained``
    returns eval mode), so that every user of a training step (trainer, benchmark, equivalence and fidelity
    checks) times and computes the same step.
    """
    t = cfg.train
    model = create_model(cfg.model, attn_implementation=t.text_attention).to(device)
    if uses_channels_last(t, device):
        model.image_encoder.to(memory_format=torch.channels_last)
    loss_fn = create_loss(cfg.method, **loss_kwargs(cfg)).to(device)
    # the official code's SyncBN under DDP; PyTorch has no CPU SyncBatchNorm (BN stays per rank there)
    module, teacher = build_training_modules(model, loss_fn, cfg.loss,
                                             sync_batchnorm=world > 1 and device.type == "cuda",
                                             teacher_inference_mode=t.teacher_inference_mode)
    module.train()
    if t.compile:  # in place: parameter names, state dicts and the EMA pairing stay as they are
        module.compile()
        if teacher is not None:
            teacher.module.compile()
    if world > 1:
        module = nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)
    optimizer = create_optimizer([p for p in module.parameters() if p.requires_grad], t)
    return TrainingParts(module, teacher, loss_fn, optimizer, autocast_dtype(t.precision, device))


def uses_channels_last(t: TrainConfig, device: torch.device) -> bool:
    """Whether images and the image encoder are channels-last: ``train.channels_last`` on a CUDA device."""
    return t.channels_last and device.type == "cuda"


def prepare_images(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """(B, 3, H, W) images on ``device`` (non-blocking copy), channels-last when asked."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


class FiniteGuard:
    """Detects non-finite loss terms without a host sync per step.

    :meth:`add` keeps each step's detached terms on the device; :meth:`check` (the trainer calls it at every
    logged step, before every checkpoint, at the end of an epoch and before returning) reads them all with one
    synchronisation and raises :class:`NonFiniteLossError` for the first non-finite step since the last check,
    naming its epoch, step and terms. The steps after it have already run (their parameters may be NaN), but no
    checkpoint has been written since, so ``latest.pt`` holds the last good state.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[int, int, int, dict[str, torch.Tensor]]] = []

    def add(self, epoch: int, step: int, global_step: int, terms: dict[str, torch.Tensor]) -> None:
        """Keep one step's terms (scalars on the device) until the next :meth:`check`."""
        self.pending.append((epoch, step, global_step, terms))

    def check(self) -> None:
        """Raise :class:`NonFiniteLossError` for the first pending step with a non-finite term; then forget them."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        values = torch.stack([torch.stack([v.float() for v in terms.values()]) for *_, terms in pending])
        finite = torch.isfinite(values).all(dim=1).tolist()  # the one host sync
        if all(finite):
            return
        epoch, step, global_step, terms = pending[finite.index(False)]
        raise NonFiniteLossError(f"non-finite loss at epoch {epoch} step {step} (global step {global_step}): "
                                 f"{ {k: float(v) for k, v in terms.items()} }; latest.pt holds the last good state")


def loss_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """The objective's constructor arguments for this run's method (only those the method uses)."""
    lc = cfg.loss
    common = {"logit_scale_init": lc.logit_scale_init}
    if cfg.method == "infonce":
        return common
    if cfg.method == "label_smoothing":
        return common | {"epsilon": lc.epsilon}
    distill = common | {"alpha": lc.alpha}
    if cfg.method == "kd":
        return distill | {"teacher_temperature": lc.teacher_temperature, "kd_variant": lc.kd_variant}
    if cfg.method == "otter":
        return distill | {"sinkhorn_lambda": lc.sinkhorn_lambda, "sinkhorn_iter": lc.sinkhorn_iter,
                          "vv_coef": lc.vv_coef, "tt_coef": lc.tt_coef, "remove_diag": lc.remove_diag,
                          "global_ot": lc.global_ot, "bug_compatible": lc.bug_compatible}
    raise ValueError(f"unknown method {cfg.method!r}")


def step_seed(seed: int, epoch: int, step: int) -> int:
    """The torch seed set before fetching batch ``step`` of ``epoch``: augmentation and dropout depend only on
    (seed, epoch, step), so a resumed run repeats an uninterrupted one exactly."""
    return (seed * 1_000_003 + epoch * 100_003 + step) % 2**63


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


OPTIMIZER_IMPLS: dict[str, dict[str, bool]] = {"auto": {}, "for_loop": {"foreach": False},
                                               "foreach": {"foreach": True}, "fused": {"fused": True}}
"""``train.optimizer_impl`` -> the torch optimizer's keyword (``auto``: torch's own choice, foreach on CUDA)."""


def create_optimizer(params: list[nn.Parameter], t: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or AdamW; weight decay applies to every parameter (the official code,
    with wd = 0, has a single parameter group). ``train.optimizer_impl`` picks the kernel (:data:`OPTIMIZER_IMPLS`)."""
    if t.optimizer_impl not in OPTIMIZER_IMPLS:
        raise ValueError(f"train.optimizer_impl must be one of {list(OPTIMIZER_IMPLS)}, got {t.optimizer_impl!r}")
    impl = OPTIMIZER_IMPLS[t.optimizer_impl]
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, **impl)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, **impl)
    raise ValueError(f"train.optimizer must be sgd or adamw, got {t.optimizer!r}")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` (None = no autocast): ``auto`` is bf16 on CUDA, fp32 elsewhere."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision in ("auto", "bf16"):
        return torch.bfloat16
    raise ValueError(f"train.precision must be auto, bf16 or fp32, got {precision!r}")


def lr_at_epoch(cfg: RunConfig, epoch: int) -> float:
    """CosineAnnealingLR(T_max=epochs, eta_min=0) stepped per epoch (0-based epoch), as the official code."""
    t = cfg.train
    if t.schedule == "constant":
        return t.lr
    if t.schedule == "cosine_epoch":
        return 0.5 * t.lr * (1 + math.cos(math.pi * epoch / t.epochs))
    raise ValueError(f"train.schedule must be cosine_epoch or constant, got {t.schedule!r}")


def _init_distributed(device_req: str) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE/RANK env); NCCL on GPU, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, resolve_device(device_req)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_req)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


class RunLog:
    """Appends JSON lines to ``log.jsonl`` (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, **row: Any) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


def train(cfg: RunConfig, *, progress: bool = True, stop_after_steps: int | None = None) -> TrainResult:
    """Train one run in this process (one rank under torchrun). Resumes from ``latest.pt`` when present.

    ``stop_after_steps`` ends the process's work after that many optimizer steps of this call (used to
    simulate a killed run in tests); it leaves ``latest.pt`` as a real crash would after a checkpoint.
    """
    configure_offline(cfg.offline)
    t_cfg = cfg.train
    rank, world, device = _init_distributed(t_cfg.device)
    if t_cfg.batch_size % world:
        raise ValueError(f"global batch {t_cfg.batch_size} is not divisible by {world} processes")
    local_batch = t_cfg.batch_size // world
    run_dir = Path(cfg.run_dir)
    is_main = rank == 0
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg.to_dict(), run_dir / "config.yaml")
    if t_cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    set_seed(t_cfg.seed)

    parts = build_training(cfg, device, world)
    module, teacher, loss_fn, optimizer, amp_dtype = (parts.module, parts.teacher, parts.loss_fn, parts.optimizer,
                                                      parts.amp_dtype)
    channels_last = uses_channels_last(t_cfg, device)

    train_manifest = layout.manifest_path(cfg.data, "train")
    require_complete(train_manifest, cfg.data.allow_partial)
    steps_per_epoch = steps_per_epoch_from_manifest(train_manifest, local_batch, world)
    if t_cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, t_cfg.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(f"{train_manifest}: too few samples for one global batch of {t_cfg.batch_size}")

    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": None}
    latest = ckpt_io.checkpoint_dir(run_dir) / ckpt_io.LATEST
    if latest.is_file():
        state = _restore(latest, module, teacher, optimizer, device, cfg.config_hash())
    log = RunLog(run_dir / "log.jsonl", is_main)
    log.write(event="start", resumed_from=state if latest.is_file() else None, world_size=world,
              steps_per_epoch=steps_per_epoch, config_hash=cfg.config_hash(), git=git_sha(),
              runtime=runtime_info())

    bar = _progress_bar(progress and is_main, t_cfg.epochs * steps_per_epoch, state["global_step"], cfg)
    steps_this_call = 0
    guard = FiniteGuard()
    t_start = time.time()
    for epoch in range(state["epoch"], t_cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at_epoch(cfg, epoch)
        skip = state["step_in_epoch"]
        torch.manual_seed(step_seed(t_cfg.seed, epoch, -1))
        loader = build_train_loader(train_manifest, batch_size=local_batch,
                                    transform=train_transform(t_cfg.image_size), epoch=epoch, seed=t_cfg.seed,
                                    rank=rank, world_size=world, num_workers=t_cfg.num_workers,
                                    shuffle_buffer=t_cfg.shuffle_buffer, steps_per_epoch=steps_per_epoch,
                                    skip_batches=skip)
        batches = iter(loader)
        module.train()
        interval_start, interval_steps = time.time(), 0
        for step in range(skip, steps_per_epoch):
            t0 = time.time()
            torch.manual_seed(step_seed(t_cfg.seed, epoch, step))
            images, captions = next(batches)
            images = prepare_images(images, device, channels_last)
            data_time = time.time() - t0
            terms = train_step(module, teacher, optimizer, images, captions, amp_dtype, t_cfg.grad_clip)
            guard.add(epoch, step, state["global_step"], terms)
            state["global_step"] += 1
            state["step_in_epoch"] = step + 1
            steps_this_call += 1
            interval_steps += 1
            bar.update(1)
            if step % t_cfg.log_every == 0 or step == steps_per_epoch - 1:
                guard.check()  # the host syncs of a step happen here only, every log_every steps
                if is_main:
                    # wall time of the steps since the last log, read after the sync: the device's pace
                    dt = (time.time() - interval_start) / interval_steps
                    row = {"step": state["global_step"], "epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                           **{k: float(v) for k, v in terms.items()}, **loss_fn.scales(),
                           "samples_per_s": t_cfg.batch_size / max(dt, 1e-9), "data_time_s": data_time,
                           "step_time_s": dt}
                    log.write(**row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}")
                interval_start, interval_steps = time.time(), 0
            if t_cfg.checkpoint_every_steps and state["global_step"] % t_cfg.checkpoint_every_steps == 0:
                guard.check()
                _save_latest(latest, module, teacher, optimizer, state, cfg, is_main)
            if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                guard.check()
                bar.close()
                return TrainResult(run_dir, {"stopped_after_steps": steps_this_call})
        guard.check()
        state["epoch"], state["step_in_epoch"] = epoch + 1, 0
        val = validate(_unwrap(module).model, cfg, device, loss_fn.scales().get("logit_scale", 100.0)) \
            if is_main else {}
        if is_main:
            log.write(event="epoch_end", epoch=epoch + 1, val=val, elapsed_s=time.time() - t_start)
            student = _unwrap(module).model.state_dict()
            meta = {"epoch": epoch + 1, "global_step": state["global_step"], "config_hash": cfg.config_hash(),
                    "method": cfg.method, "val": val}
            if t_cfg.keep_epoch_checkpoints:
                ckpt_io.save_atomic({"model": student, **meta}, ckpt_io.epoch_checkpoint(run_dir, epoch + 1))
            if state["best"] is None or val["mean_r@1"] > state["best"]["mean_r@1"]:
                state["best"] = {"epoch": epoch + 1, "mean_r@1": val["mean_r@1"]}
                ckpt_io.save_atomic({"model": student, **meta}, ckpt_io.checkpoint_dir(run_dir) / ckpt_io.BEST)
        _save_latest(latest, module, teacher, optimizer, state, cfg, is_main)
    bar.close()
    checksums = _rank_checksums(_unwrap(module).model, world)
    metrics = {}
    if is_main:
        last_val = _last_val(run_dir)
        metrics = {"method": cfg.method, "setting": cfg.setting, "profile": cfg.profile,
                   "config_hash": cfg.config_hash(), "git": git_sha(), "epochs": t_cfg.epochs,
                   "global_steps": state["global_step"], "world_size": world, "rank_param_checksums": checksums,
                   "val_last": last_val,
                   "best": state["best"], "scales": loss_fn.scales(), "train_wall_s": time.time() - t_start}
        tmp = run_dir / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2))
        tmp.replace(run_dir / "metrics.json")
    if world > 1:
        dist.barrier()
    return TrainResult(run_dir, metrics)


STEP_PHASES: tuple[str, ...] = ("tokenize", "ema_update", "teacher_forward", "targets", "student_forward",
                                 "backward", "optimizer")
"""The phases of :func:`train_step`, in order (the teacher's three only for KD and OTTER)."""


def train_step(module: nn.Module, teacher: EMATeacher | None, optimizer: torch.optim.Optimizer,
               images: torch.Tensor, captions: list[str], amp_dtype: torch.dtype | None,
               grad_clip: float | None, timer: PhaseTimer | None = None) -> dict[str, torch.Tensor]:
    """One optimizer step; returns the detached loss terms, still on the device.

    Phases (:data:`STEP_PHASES`, timed by ``timer`` when given): tokenize the captions once (student and teacher
    read the same tokens), EMA update, teacher forward (no grad, autocast), the teacher's soft targets (float32),
    student forward (autocast; logits and loss in float32), backward, gradient clipping and optimizer step. Nothing
    here waits for the device: the caller checks the terms for NaN/Inf (:class:`FiniteGuard`).
    """
    inner = _unwrap(module)
    amp = torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)
    with phase(timer, "tokenize"):
        tokens = {k: v.to(images.device, non_blocking=True) for k, v in inner.model.tokenize(captions).items()}
    soft_targets = None
    if teacher is not None:
        with phase(timer, "ema_update"):
            teacher.update(inner.model)
        with phase(timer, "teacher_forward"), amp:
            teacher_img, teacher_txt = teacher(images, tokens)
        with phase(timer, "targets"):
            soft_targets = inner.loss.soft_targets(teacher_img, teacher_txt)
    with phase(timer, "student_forward"), amp:
        terms = module(images, tokens, soft_targets)
    with phase(timer, "backward"):
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
    with phase(timer, "optimizer"):
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
        optimizer.step()
    return {k: v.detach() for k, v in terms.items()}


def _rank_checksums(model: nn.Module, world: int) -> list[float]:
    """Sum of every student parameter (float64) on each rank: equal values mean the ranks stayed in sync."""
    local = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    if world == 1:
        return [local.item()]
    gathered = [torch.zeros_like(local) for _ in range(world)]  # on the parameters' device (NCCL needs CUDA)
    dist.all_gather(gathered, local)
    return [g.item() for g in gathered]


def _unwrap(module: nn.Module) -> StudentWithLoss:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _save_latest(path: Path, module: nn.Module, teacher: EMATeacher | None, optimizer: torch.optim.Optimizer,
                 state: dict[str, Any], cfg: RunConfig, is_main: bool) -> None:
    if not is_main:
        return
    inner = _unwrap(module)
    ckpt_io.save_atomic({
        "model": inner.model.state_dict(), "loss": inner.loss.state_dict(),
        "teacher": teacher.state_dict() if teacher is not None else None,
        "optimizer": optimizer.state_dict(), "scaler": None, "rng": _rng_state(),
        "config_hash": cfg.config_hash(), "method": cfg.method, **state,
    }, path)


def _restore(path: Path, module: nn.Module, teacher: EMATeacher | None, optimizer: torch.optim.Optimizer,
             device: torch.device, config_hash: str) -> dict[str, Any]:
    ck = ckpt_io.load(path, map_location=device)
    if ck["config_hash"] != config_hash:
        raise ValueError(f"{path} was written with another configuration (hash {ck['config_hash']}, now "
                         f"{config_hash}); resuming would mix the two. Start over with force=True in 03_train "
                         f"(./run_all.sh --force), or use another results_dir")
    inner = _unwrap(module)
    inner.model.load_state_dict(ck["model"])
    inner.loss.load_state_dict(ck["loss"])
    if teacher is not None:
        if ck["teacher"] is None:
            raise ValueError(f"{path} has no EMA teacher but this method needs one (was it written by another method?)")
        teacher.load_state_dict(ck["teacher"])
    optimizer.load_state_dict(ck["optimizer"])
    rng = ck["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    return {k: ck[k] for k in ("epoch", "step_in_epoch", "global_step", "best")}


def _last_val(run_dir: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    ends = [r for r in rows if r.get("event") == "epoch_end"]
    return ends[-1]["val"] if ends else {}


def validate(model: nn.Module, cfg: RunConfig, device: torch.device, logit_scale: float) -> dict[str, float]:
    """Retrieval R@1/5 and loss of the student on the held-out validation shards (eval transform)."""
    loader = build_eval_pairs_loader(layout.manifest_path(cfg.data, "val"), batch_size=cfg.train.batch_size,
                                     transform=eval_transform(cfg.train.image_size))
    was_training = model.training
    model.eval()
    img, txt = embed_pairs(model, loader, device)
    model.train(was_training)
    return retrieval_metrics(img, txt, logit_scale=logit_scale, batch_size=cfg.train.batch_size)


def _progress_bar(enabled: bool, total: int, initial: int, cfg: RunConfig):
    from otterlib.progress import progress_bar

    return progress_bar(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                        desc=f"{cfg.setting}/{cfg.method}")


def torchrun_command(cfg: RunConfig, config_path: Path, torchrun: str = "torchrun") -> list[str]:
    """The ``torchrun`` command line that trains ``cfg`` from its resolved ``config_path``.

    One node (``train.nnodes == 1``): ``torchrun --standalone --nproc_per_node P -m otterlib.train --config ...``.
    Several: ``torchrun --nnodes N --rdzv-backend B --rdzv-endpoint host:port --rdzv-id ID --nproc_per_node P
    -m otterlib.train --config ...``, the same on every node (torchrun's own rendezvous assigns the ranks).
    ``ID`` is ``train.rdzv_id``, else ``<profile>-<setting>-<method>-seed<seed>``. A missing or malformed
    endpoint is a ValueError.
    """
    t = cfg.train
    if t.nproc < 1 or t.nnodes < 1:
        raise ValueError(f"train.nproc and train.nnodes must be >= 1, got {t.nproc} and {t.nnodes}")
    tail = [f"--nproc_per_node={t.nproc}", "-m", "otterlib.train", "--config", str(config_path)]
    if t.nnodes == 1:
        return [torchrun, "--standalone", *tail]
    host, _, port = (t.rdzv_endpoint or "").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"train.nnodes={t.nnodes} needs train.rdzv_endpoint as 'host:port' (a node every node "
                         f"reaches, e.g. the first of the allocation), got {t.rdzv_endpoint!r}")
    rdzv_id = t.rdzv_id or f"{cfg.profile}-{cfg.setting}-{cfg.method}-seed{t.seed}"
    return [torchrun, f"--nnodes={t.nnodes}", f"--rdzv-backend={t.rdzv_backend}",
            f"--rdzv-endpoint={t.rdzv_endpoint}", f"--rdzv-id={rdzv_id}", *tail]


def run_training(cfg: RunConfig, *, progress: bool = True, echo: Callable[[str], None] = print) -> TrainResult:
    """Notebook entry point: in-process on one process, else :func:`torchrun_command` with its log streamed to
    ``echo``. With ``train.nnodes > 1`` this node's torchrun waits at the rendezvous for the other nodes,
    which run the same command (``python -m otterlib.launch``, ``docs/slurm_train_setting.sbatch``)."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.nproc <= 1 and cfg.train.nnodes <= 1:
        return train(cfg, progress=progress)
    config_path = run_dir / "config.yaml"
    save_yaml(cfg.to_dict(), config_path)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = torchrun_command(cfg, config_path, torchrun)
    echo("$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    for line in proc.stdout:
        echo(line.rstrip("\n"))
    if proc.wait() != 0:
        raise RuntimeError(f"torchrun exited with {proc.returncode}; see the log above and {run_dir / 'log.jsonl'}")
    return TrainResult(run_dir, json.loads((run_dir / "metrics.json").read_text()))


def main(argv: list[str] | None = None) -> None:
    """CLI for torchrun: ``python -m otterlib.train --config results/.../config.yaml``."""
    import yaml

    parser = argparse.ArgumentParser(description="Train one OTTER-suite run from a resolved config.yaml")
    parser.add_argument("--config", required=True, type=Path, help="a run's resolved config.yaml")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = RunConfig.from_dict(yaml.safe_load(args.config.read_text()))
    try:
        train(cfg, progress=not args.no_progress)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
