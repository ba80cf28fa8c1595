"""Training-step throughput of each method on synthetic batches (no data loading): the cost of the EMA
teacher's extra forward (KD, OTTER) and of the OT targets (OTTER) relative to InfoNCE.

``python -m otterlib.bench --image-encoder tiny_cnn --text-encoder tiny_bert --batch 32 --image-size 64``
prints one row per method (samples/s, ms/step, ratio to InfoNCE) and can write them as JSON; ``--record
docs/benchmarks.json`` appends them to the throughput records compute plans read (:mod:`otterlib.benchmarks`).
"""
from __future__ import annotations

import argparse
import datetime
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from otterlib.benchmarks import BenchmarkRecord, append_records
from otterlib.config import LossConfig, ModelConfig, RunConfig, RunData, TrainConfig
from otterlib.ema import EMATeacher
from otterlib.env import git_sha, resolve_device, runtime_info
from otterlib.losses import create_loss
from otterlib.models import create_model
from otterlib.train import StudentWithLoss, autocast_dtype, create_optimizer, loss_kwargs, train_step

WORDS = ("red blue green small large circle square photo dog cat street house river tree car person beach "
         "mountain city night table food a the of on in with near").split()


def synthetic_batch(batch: int, image_size: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """(batch, 3, S, S) standard-normal images and batch captions of 8–20 random words."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    captions = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))) for _ in range(batch)]
    return torch.randn(batch, 3, image_size, image_size, generator=g), captions


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark_method(method: str, model_cfg: ModelConfig, batch: int, image_size: int, steps: int, warmup: int,
                     device: torch.device, precision: str) -> dict[str, float | str]:
    """Median step time of the trainer's own step function for one method."""
    train_cfg = TrainConfig(batch_size=batch, image_size=image_size, precision=precision)
    cfg = RunConfig(profile="bench", setting="bench", method=method, model=model_cfg, train=train_cfg,
                    loss=LossConfig(), data=RunData(), run_dir="unused")
    torch.manual_seed(0)
    model = create_model(model_cfg).to(device)
    if device.type == "cuda":
        model.image_encoder.to(memory_format=torch.channels_last)
    loss = create_loss(method, **loss_kwargs(cfg)).to(device)
    module = StudentWithLoss(model, loss)
    teacher = EMATeacher(model) if loss.needs_teacher else None
    optimizer = create_optimizer([p for p in module.parameters() if p.requires_grad], train_cfg)
    images, captions = synthetic_batch(batch, image_size)
    images = images.to(device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    amp = autocast_dtype(precision, device)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        terms = train_step(module, teacher, optimizer, images, captions, amp, None, i, 0, i)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"method": method, "samples_per_s": batch / step, "ms_per_step": 1000 * step,
            "final_loss": float(terms["loss"])}


def benchmark(model_cfg: ModelConfig, batch: int, image_size: int, steps: int = 5, warmup: int = 2,
              device: str = "auto", precision: str = "auto",
              methods: tuple[str, ...] = ("infonce", "label_smoothing", "kd", "otter")) -> list[dict]:
    """One row per method, with ``ratio_to_infonce`` (step-time ratio) when InfoNCE is among the methods."""
    dev = resolve_device(device)
    rows = [benchmark_method(m, model_cfg, batch, image_size, steps, warmup, dev, precision) for m in methods]
    base = next((r["ms_per_step"] for r in rows if r["method"] == "infonce"), None)
    for r in rows:
        r["ratio_to_infonce"] = r["ms_per_step"] / base if base else float("nan")
    return rows


def to_records(model_cfg: ModelConfig, rows: list[dict], batch: int, image_size: int, device: str, precision: str,
               command: str) -> list[BenchmarkRecord]:
    """:func:`benchmark` rows as throughput records (one GPU or CPU, ``batch`` samples, synthetic batches)."""
    dev = resolve_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    amp = "bf16" if autocast_dtype(precision, dev) is torch.bfloat16 else "fp32"
    return [BenchmarkRecord(image_encoder=model_cfg.image_encoder, text_encoder=model_cfg.text_encoder,
                            method=r["method"], batch_per_gpu=batch, image_size=image_size, precision=amp,
                            device=name, gpus=1, samples_per_s=round(float(r["samples_per_s"]), 3),
                            measured=datetime.date.today().isoformat(), command=command, git=git_sha())
            for r in rows]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-encoder", default="tiny_cnn")
    p.add_argument("--text-encoder", default="tiny_bert")
    p.add_argument("--embed-dim", type=int, default=768)
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--freeze-image-blocks", type=int, default=0)
    p.add_argument("--freeze-text-layers", type=int, default=0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    p.add_argument("--methods", default="infonce,label_smoothing,kd,otter")
    p.add_argument("--json", type=Path, help="also write the rows (and runtime info) here")
    p.add_argument("--record", type=Path, help="append the rows as throughput records (e.g. docs/benchmarks.json)")
    a = p.parse_args(argv)
    cfg = ModelConfig(image_encoder=a.image_encoder, text_encoder=a.text_encoder, embed_dim=a.embed_dim,
                      pretrained=a.pretrained, freeze_image_blocks=a.freeze_image_blocks,
                      freeze_text_layers=a.freeze_text_layers)
    rows = benchmark(cfg, a.batch, a.image_size, a.steps, a.warmup, a.device, a.precision,
                     tuple(a.methods.split(",")))
    for r in rows:
        print(f"{r['method']:>16}: {r['samples_per_s']:9.1f} samples/s  {r['ms_per_step']:9.1f} ms/step  "
              f"x{r['ratio_to_infonce']:.2f} of InfoNCE")
    if a.json:
        a.json.write_text(json.dumps({"args": vars(a) | {"json": str(a.json)}, "runtime": runtime_info(),
                                      "rows": rows}, indent=2, default=str))
    if a.record:
        command = "python -m otterlib.bench " + " ".join(sys.argv[1:] if argv is None else argv)
        append_records(a.record, to_records(cfg, rows, a.batch, a.image_size, a.device, a.precision, command))


if __name__ == "__main__":
    main()
