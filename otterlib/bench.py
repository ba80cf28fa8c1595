"""Training-step benchmark: the trainer's own step per method, phase by phase, with ratios to InfoNCE.

Each method's modules come from :func:`otterlib.train.build_training` (the trainer's construction: teacher mode,
SyncBatchNorm order, channels-last, compile, optimizer kernel) and run :func:`otterlib.train.train_step` with a
:class:`otterlib.timing.PhaseTimer` on one synthetic batch (no data loading). After ``warmup`` steps per method,
``rounds`` rounds each run a block of ``block`` back-to-back steps of every method (the order rotates per round),
so the methods share the machine's state and the ratios come from one run. Per method: step time (median and
spread over rounds), the phases (median over steps), the step-time ratio to InfoNCE paired by round, and on CUDA
the peak memory (the method's resident weights, teacher and optimizer state, plus the step's transient peak).

``python -m otterlib.bench --image-encoder timm:resnet50 --text-encoder bert_base_random --batch 512
--image-size 224 --device cuda --json bench.json`` (paper shape); ``--ablation`` repeats it with one
optimisation knob changed at a time (:data:`ABLATIONS`); ``--torch-profile FILE`` writes ``torch.profiler``'s
op table of one step per method; ``--record docs/benchmarks.json`` appends throughput records for the compute
plans (:mod:`otterlib.benchmarks`).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from otterlib.benchmarks import BenchmarkRecord, append_records
from otterlib.config import LossConfig, ModelConfig, RunConfig, RunData, TrainConfig
from otterlib.env import git_sha, resolve_device, runtime_info
from otterlib.models.text import RANDOM_STAND_INS
from otterlib.timing import PhaseTimer, spread
from otterlib.train import (STEP_PHASES, TrainingParts, autocast_dtype, build_training, prepare_images, train_step,
                            uses_channels_last)

METHODS: tuple[str, ...] = ("infonce", "label_smoothing", "kd", "otter")
WORDS = ("red blue green small large circle square photo dog cat street house river tree car person beach "
         "mountain city night table food a the of on in with near").split()
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "compile": {"compile": True},
    "fused_optimizer": {"optimizer_impl": "fused"},
    "eager_attention": {"text_attention": "eager"},
    "teacher_inference_mode": {"teacher_inference_mode": True},
    "no_channels_last": {"channels_last": False},
}
"""Variants of ``--ablation``: each changes one ``TrainConfig`` field from its default (``baseline``)."""
MIB: int = 2**20


def synthetic_batch(batch: int, image_size: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """(batch, 3, S, S) standard-normal images and batch captions of 8–20 random words."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    captions = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))) for _ in range(batch)]
    return torch.randn(batch, 3, image_size, image_size, generator=g), captions


def bench_config(method: str, model_cfg: ModelConfig, batch: int, image_size: int, device: str, precision: str,
                 knobs: dict[str, Any]) -> RunConfig:
    """The run configuration the benchmark trains: the paper recipe (SGD) at this shape, plus ``knobs``
    (``TrainConfig`` fields; an unknown one is a ValueError)."""
    unknown = set(knobs) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {sorted(unknown)}")
    train_cfg = TrainConfig(batch_size=batch, image_size=image_size, precision=precision, device=device, **knobs)
    return RunConfig(profile="bench", setting="bench", method=method, model=model_cfg, train=train_cfg,
                     loss=LossConfig(), data=RunData(), run_dir="unused")


@dataclass
class _MethodRun:
    parts: TrainingParts
    images: torch.Tensor
    captions: list[str]
    resident_bytes: int | None
    last_loss: torch.Tensor | None = None

    def step(self, timer: PhaseTimer | None = None) -> None:
        p = self.parts
        self.last_loss = train_step(p.module, p.teacher, p.optimizer, self.images, self.captions, p.amp_dtype, None,
                                    timer)["loss"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _allocated(device: torch.device) -> int | None:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else None


def _build(cfg: RunConfig, device: torch.device, warmup: int) -> _MethodRun:
    """A method's modules and batch, warmed up (compilation, cuDNN autotuning, the optimizer's state)."""
    before = _allocated(device)
    torch.manual_seed(0)
    parts = build_training(cfg, device, 1)
    images, captions = synthetic_batch(cfg.train.batch_size, cfg.train.image_size)
    run = _MethodRun(parts, prepare_images(images, device, uses_channels_last(cfg.train, device)), captions, None)
    for _ in range(warmup):
        run.step()
    _sync(device)
    run.resident_bytes = None if before is None else _allocated(device) - before
    return run


def benchmark(model_cfg: ModelConfig, batch: int, image_size: int, *, rounds: int = 5, block: int = 2,
              warmup: int = 2, device: str = "auto", precision: str = "auto", methods: tuple[str, ...] = METHODS,
              knobs: dict[str, Any] | None = None, profile_rows: int = 0) -> dict[str, dict[str, Any]]:
    """Per method (in ``methods`` order): ``ms_per_step`` and ``samples_per_s`` (medians over rounds),
    ``ms_per_step_spread`` (:func:`otterlib.timing.spread` over rounds, ms), ``phases_ms`` (phase -> spread over
    steps, ms), ``unaccounted_ms`` (median step time minus the phases' medians), ``ratio_to_infonce`` and its
    spread (per-round step-time ratios; absent without InfoNCE), ``peak_memory_mib`` (resident + the largest
    transient of a step; None on CPU), ``final_loss`` and, with ``profile_rows > 0``, ``profile_table``: that many
    rows of :func:`profile_table` for one more step."""
    if rounds < 1 or block < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1, block >= 1 and warmup >= 0, got {rounds}, {block}, {warmup}")
    dev = resolve_device(device)
    runs = {m: _build(bench_config(m, model_cfg, batch, image_size, str(dev), precision, knobs or {}), dev, warmup)
            for m in methods}
    step_ms: dict[str, list[float]] = {m: [] for m in methods}
    phases: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    transient: dict[str, int] = {m: 0 for m in methods}
    for r in range(rounds):
        for m in methods[r % len(methods):] + methods[:r % len(methods)]:
            run = runs[m]
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            base = _allocated(dev)
            timers = [PhaseTimer(dev) for _ in range(block)]
            _sync(dev)
            t0 = time.perf_counter()
            for timer in timers:
                run.step(timer)
            _sync(dev)
            step_ms[m].append((time.perf_counter() - t0) * 1e3 / block)
            if base is not None:
                transient[m] = max(transient[m], torch.cuda.max_memory_allocated(dev) - base)
            for timer in timers:
                for name, ms in timer.collect().items():
                    phases[m].setdefault(name, []).append(ms)
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        ms = spread(step_ms[m])
        phase_stats = {name: spread(phases[m][name]) for name in STEP_PHASES if name in phases[m]}
        resident = runs[m].resident_bytes
        out[m] = {"ms_per_step": ms["median"], "samples_per_s": batch * 1e3 / ms["median"], "ms_per_step_spread": ms,
                  "phases_ms": phase_stats,
                  "unaccounted_ms": ms["median"] - sum(s["median"] for s in phase_stats.values()),
                  "peak_memory_mib": None if resident is None else (resident + transient[m]) / MIB,
                  "final_loss": float(runs[m].last_loss) if runs[m].last_loss is not None else None}
        if "infonce" in methods:
            out[m]["ratio_to_infonce"] = spread([a / b for a, b in zip(step_ms[m], step_ms["infonce"])])
        if profile_rows > 0:
            out[m]["profile_table"] = profile_table(runs[m], dev, profile_rows)
    del runs
    _release(dev)
    return out


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def ablation(model_cfg: ModelConfig, batch: int, image_size: int, variants: dict[str, dict[str, Any]] = ABLATIONS,
             **kwargs: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`benchmark` once per variant (``name -> TrainConfig fields``), one after the other."""
    return {name: benchmark(model_cfg, batch, image_size, knobs=knobs, **kwargs) for name, knobs in variants.items()}


def profile_table(run: _MethodRun, device: torch.device, rows: int) -> str:
    """``torch.profiler``'s op table of one step (``rows`` rows, sorted by self time on the device that runs it);
    the phases are its ``phase:<name>`` rows."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run.step(PhaseTimer(device))
        _sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return f"sorted by {sort}\n" + prof.key_averages().table(sort_by=sort, row_limit=rows)


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the figures depend on: runtime versions, the device, CPU count and load average (1, 5, 15 min)."""
    info = runtime_info() | {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                             "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
                             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                             "git": git_sha()}
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
    return info


def to_records(model_cfg: ModelConfig, results: dict[str, dict[str, Any]], batch: int, image_size: int,
               device: str, precision: str, command: str) -> list[BenchmarkRecord]:
    """:func:`benchmark` results as throughput records (one GPU or CPU, ``batch`` samples, synthetic batches).

    A random stand-in encoder is recorded under the name of the encoder whose shape it has
    (:data:`otterlib.models.text.RANDOM_STAND_INS`: ``bert_base_random`` -> ``declutr-sci-base``): the compute plans
    match profiles on that name, and the weights' values do not change the speed."""
    dev = resolve_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    amp = "bf16" if autocast_dtype(precision, dev) is torch.bfloat16 else "fp32"
    text = RANDOM_STAND_INS.get(model_cfg.text_encoder, model_cfg.text_encoder)
    return [BenchmarkRecord(image_encoder=model_cfg.image_encoder, text_encoder=text, method=m, batch_per_gpu=batch,
                            image_size=image_size, precision=amp, device=name, gpus=1,
                            samples_per_s=round(float(r["samples_per_s"]), 3),
                            measured=datetime.date.today().isoformat(), command=command, git=git_sha())
            for m, r in results.items()]


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """One line per method: samples/s, ms/step (IQR), ratio to InfoNCE and the phases' medians (ms)."""
    lines = []
    for m, r in results.items():
        s = r["ms_per_step_spread"]
        ratio = f"x{r['ratio_to_infonce']['median']:.2f}" if "ratio_to_infonce" in r else "-"
        peak = "" if r["peak_memory_mib"] is None else f"  peak {r['peak_memory_mib']:.0f} MiB"
        ph = " ".join(f"{k}={v['median']:.1f}" for k, v in r["phases_ms"].items())
        lines.append(f"{m:>16}: {r['samples_per_s']:8.1f} samples/s {r['ms_per_step']:8.1f} ms/step "
                     f"(IQR {s['q1']:.1f}-{s['q3']:.1f}) {ratio:>6} of InfoNCE{peak} | {ph}")
    return "\n".join(lines)


def _knobs(a: argparse.Namespace) -> dict[str, Any]:
    knobs: dict[str, Any] = {"compile": a.compile, "teacher_inference_mode": a.teacher_inference_mode,
                             "channels_last": not a.no_channels_last}
    if a.optimizer_impl:
        knobs["optimizer_impl"] = a.optimizer_impl
    if a.text_attention:
        knobs["text_attention"] = a.text_attention
    return knobs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-encoder", default="tiny_cnn")
    p.add_argument("--text-encoder", default="tiny_bert")
    p.add_argument("--embed-dim", type=int, default=768)
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--freeze-image-blocks", type=int, default=0)
    p.add_argument("--freeze-text-layers", type=int, default=0)
    p.add_argument("--max-text-tokens", type=int, default=60)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (one block of steps per method each)")
    p.add_argument("--block", type=int, default=2, help="back-to-back steps per method and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--compile", action="store_true", help="train.compile")
    p.add_argument("--optimizer-impl", choices=("auto", "for_loop", "foreach", "fused"), help="train.optimizer_impl")
    p.add_argument("--text-attention", choices=("sdpa", "eager"), help="train.text_attention")
    p.add_argument("--teacher-inference-mode", action="store_true", help="train.teacher_inference_mode")
    p.add_argument("--no-channels-last", action="store_true", help="train.channels_last: false")
    p.add_argument("--ablation", action="store_true",
                   help=f"one run per variant of {list(ABLATIONS)} (the knob flags are then ignored)")
    p.add_argument("--variants", default=",".join(ABLATIONS), help="the --ablation variants to run, in order")
    p.add_argument("--torch-profile", type=Path, help="write torch.profiler's op table of one step per method here")
    p.add_argument("--profile-rows", type=int, default=30)
    p.add_argument("--json", type=Path, help="also write the results (and machine info) here")
    p.add_argument("--record", type=Path, help="append the rows as throughput records (e.g. docs/benchmarks.json)")
    a = p.parse_args(argv)
    cfg = ModelConfig(image_encoder=a.image_encoder, text_encoder=a.text_encoder, embed_dim=a.embed_dim,
                      pretrained=a.pretrained, max_text_tokens=a.max_text_tokens,
                      freeze_image_blocks=a.freeze_image_blocks, freeze_text_layers=a.freeze_text_layers)
    methods = tuple(a.methods.split(","))
    common = dict(rounds=a.rounds, block=a.block, warmup=a.warmup, device=a.device, precision=a.precision,
                  methods=methods)
    doc: dict[str, Any] = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                           "machine": machine_info(resolve_device(a.device))}
    if a.ablation:
        unknown = set(a.variants.split(",")) - set(ABLATIONS)
        if unknown:
            p.error(f"unknown variant(s) {sorted(unknown)}; valid: {list(ABLATIONS)}")
        doc["ablation"] = {}
        for name in a.variants.split(","):  # the file is rewritten after each variant: a killed run keeps its part
            doc["ablation"][name] = benchmark(cfg, a.batch, a.image_size, knobs=ABLATIONS[name], **common)
            print(f"-- {name} ({ABLATIONS[name] or 'defaults'})\n{format_table(doc['ablation'][name])}", flush=True)
            _write_json(a.json, doc)
    else:
        doc["knobs"] = _knobs(a)
        doc["results"] = benchmark(cfg, a.batch, a.image_size, knobs=doc["knobs"],
                                   profile_rows=a.profile_rows if a.torch_profile else 0, **common)
        print(format_table(doc["results"]), flush=True)
        if a.torch_profile:
            a.torch_profile.write_text("\n\n".join(f"== {m}: one step, {r.pop('profile_table')}"
                                                   for m, r in doc["results"].items()))
        _write_json(a.json, doc)
    if a.record:
        command = "python -m otterlib.bench " + " ".join(sys.argv[1:] if argv is None else argv)
        results = doc["ablation"].get("baseline") if a.ablation else doc["results"]
        if results is None:
            p.error("--record with --ablation needs the baseline variant")
        append_records(a.record, to_records(cfg, results, a.batch, a.image_size, a.device, a.precision, command))


def _write_json(path: Path | None, doc: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(doc, indent=2, default=str))


if __name__ == "__main__":
    main()
