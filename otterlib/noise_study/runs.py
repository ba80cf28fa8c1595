"""The study's runs: noise level × training-set size × seed tasks, each training every method on the same data.

Paired design: within a task every method starts from the same heads (``torch.manual_seed(seed)``) and sees
the same batches in the same order (:func:`batch_order`, seeded by (seed, size)); the noise levels of one
(size, seed) share the images and the order too. Each run trains locked-mode heads for a fixed number of
steps, records the target precision of its own teacher-side targets on the training batch every
``record_every`` steps, and is evaluated zero-shot on every eval set with :mod:`otterlib.evaluate`.
Tasks run in ``workers`` spawned processes, or in this process (the same results either way).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from otterlib.config import NoiseStudyConfig, Profile, RunConfig, TrainConfig, resolve_run
from otterlib.evaluate import encode_class_names, hits_at_k, topk_chunked
from otterlib.locked.train import LockedTrainer
from otterlib.noise_study.data import EvalFeatures, StudyData, torch_threads
from otterlib.noise_study.precision import batch_statistics


@dataclass(frozen=True)
class Task:
    """One (noise level, training-set size, seed) cell of the grid; ``figure`` keeps OTTER's last targets."""

    noise: float
    size: int
    seed: int
    figure: bool = False


@dataclass
class TaskResult:
    """Every method's run of one task: ``runs`` (one row per method and eval set), ``hits[(method, eval set,
    k)]`` (n_images,) bool, ``precision`` (one row per method and recorded step), ``figure`` (OTTER's last
    batch: its targets (B, B) and pair indices (B,)) when the task was asked for it."""

    task: Task
    runs: list[dict[str, Any]] = field(default_factory=list)
    hits: dict[tuple[str, str, int], np.ndarray] = field(default_factory=dict)
    precision: list[dict[str, Any]] = field(default_factory=list)
    figure: dict[str, np.ndarray] | None = None


def study_methods(profile: Profile, ns: NoiseStudyConfig) -> list[str]:
    """The study's objectives (``ns.methods``, else the profile's); OTTER and at least one baseline."""
    methods = list(ns.methods if ns.methods is not None else profile.methods)
    if "otter" not in methods or len(methods) < 2:
        raise ValueError(f"the noise study compares OTTER with baselines; methods {methods} must hold 'otter' and "
                         "at least one of infonce, label_smoothing, kd")
    return methods


def study_tasks(ns: NoiseStudyConfig) -> list[Task]:
    """Every (noise, size, seed), sizes then noise levels then seeds; the figure task is the highest noise
    level at the smallest size with the first seed."""
    figure = (max(ns.noise_levels), min(ns.sizes), ns.seeds[0])
    return [Task(float(p), n, s, (float(p), n, s) == figure) for n in ns.sizes for p in ns.noise_levels
            for s in ns.seeds]


def run_config(profile: Profile, ns: NoiseStudyConfig, method: str, seed: int) -> RunConfig:
    """The locked run's configuration: the setting's resolved run (objective and EMA knobs of the profile)
    with the study's batch size, seed, device, embedding width and ``ns.train`` overrides."""
    base = resolve_run(profile, ns.setting or profile.settings[0].name, method)
    unknown = set(ns.train) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"noise_study.train: unknown TrainConfig field(s) {sorted(unknown)}")
    train = dataclasses.replace(base.train, **ns.train, batch_size=ns.batch_size, seed=seed, device=ns.device)
    model = dataclasses.replace(base.model, embed_dim=ns.embed_dim or base.model.embed_dim)
    return dataclasses.replace(base, train=train, model=model, run_dir="")


def batch_order(size: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """(steps, batch_size) pair indices: epochs of a random permutation of ``range(size)`` seeded by
    (seed, size), the last incomplete batch of each epoch dropped."""
    per_epoch = size // batch_size
    if per_epoch < 1:
        raise ValueError(f"training-set size {size} is smaller than one batch of {batch_size}")
    rng = np.random.default_rng([seed, size])
    epochs = [rng.permutation(size)[:per_epoch * batch_size].reshape(per_epoch, batch_size)
              for _ in range(math.ceil(steps / per_epoch))]
    return np.concatenate(epochs)[:steps]


class _CachedClassCaptions:
    """``encode_text`` of class captions through the trainer's text head, from their cached features."""

    def __init__(self, trainer: LockedTrainer, eval_set: EvalFeatures) -> None:
        self.trainer = trainer
        self.features = eval_set.caption_features
        self.row = {c: i for i, c in enumerate(eval_set.captions)}

    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        return self.trainer.embed(text_features=self.features[[self.row[c] for c in captions]])[1]


def zero_shot_hits(trainer: LockedTrainer, eval_set: EvalFeatures, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """Per-image FH@k hits (n_images,) bool of the student heads on one eval set (paper protocol: class
    captions from the templates, one embedding per class, top-k retrieval)."""
    class_emb = encode_class_names(_CachedClassCaptions(trainer, eval_set), eval_set.class_names,
                                   eval_set.templates, device=trainer.device)
    image_emb, _ = trainer.embed(image_features=eval_set.image_features)
    _, top = topk_chunked(image_emb, class_emb, max(ks), device=trainer.device)
    return {k: v.numpy() for k, v in hits_at_k(top, eval_set.labels, ks).items()}


def run_method(data: StudyData, cfg: RunConfig, task: Task, order: np.ndarray, ns: NoiseStudyConfig,
               result: TaskResult) -> None:
    """Train and evaluate one method of a task; appends its rows, hits and precision records to ``result``."""
    cpu0 = time.process_time()
    trainer = LockedTrainer.create(cfg, data.image_features.shape[1], data.text_features.shape[1], len(order))
    captions = torch.from_numpy(data.caption_index[task.noise])
    wrong = data.wrong[task.noise]
    train_s = train_cpu_s = 0.0
    terms: dict[str, torch.Tensor] = {}
    for step, idx in enumerate(order):
        rows = torch.from_numpy(idx)
        img, txt = data.image_features[rows], data.text_features[captions[rows]]
        t0, c0 = time.perf_counter(), time.process_time()
        terms = trainer.step(img, txt)
        train_s += time.perf_counter() - t0
        train_cpu_s += time.process_time() - c0
        if step % ns.record_every == 0 or step == len(order) - 1:
            trainer.check()
            t_img, t_txt = (t.cpu().numpy() for t in trainer.targets(img, txt))
            result.precision.append({"noise": task.noise, "size": task.size, "method": cfg.method,
                                     "seed": task.seed, "step": step + 1,
                                     **batch_statistics(t_img, t_txt, data.batch_truth(task.noise, idx), wrong[idx])})
            if task.figure and cfg.method == "otter" and step == len(order) - 1:
                result.figure = {"targets": t_img, "indices": idx.copy()}
    base = {"noise": task.noise, "size": task.size, "method": cfg.method, "seed": task.seed, "steps": len(order),
            "train_s": round(train_s, 3), "steps_per_s": round(len(order) / train_s, 1),
            "steps_per_cpu_s": round(len(order) / max(train_cpu_s, 1e-9), 1),
            **{k: round(float(v), 5) for k, v in terms.items()}, **trainer.loss.scales()}
    hits = {eval_set.name: zero_shot_hits(trainer, eval_set, ns.ks) for eval_set in data.eval_sets}
    base["run_cpu_s"] = round(time.process_time() - cpu0, 3)  # this process's CPU time: training, records, eval
    for name, by_k in hits.items():
        result.hits.update({(cfg.method, name, k): v for k, v in by_k.items()})
        result.runs.append(base | {"eval_set": name, **{f"fh@{k}": float(v.mean()) for k, v in by_k.items()}})


def run_task(data: StudyData, configs: dict[str, RunConfig], task: Task, ns: NoiseStudyConfig) -> TaskResult:
    """Every method of ``configs`` (method -> its run configuration for ``task.seed``) on one task."""
    result = TaskResult(task)
    order = batch_order(task.size, ns.batch_size, ns.steps, task.seed)
    for method, cfg in configs.items():
        run_method(data, cfg, task, order, ns, result)
    return result


_WORKER_DATA: StudyData | None = None


def _init_worker(data: StudyData, threads: int, log_path: str) -> None:
    """Keep the study's data in the worker, set its torch threads and send its stdout and stderr (progress bars
    of the evaluation functions, which go to stdout in a headless kernel; warnings) to ``log_path``, so that
    they never reach the runner's console; exceptions still reach the parent through the futures."""
    global _WORKER_DATA
    _WORKER_DATA = data
    torch.set_num_threads(threads)
    sys.stdout = sys.stderr = open(log_path, "a", buffering=1)  # noqa: SIM115 (lives as long as the worker)


def _run_in_worker(configs: dict[str, RunConfig], task: Task, ns: NoiseStudyConfig) -> TaskResult:
    assert _WORKER_DATA is not None, "worker not initialised"
    return run_task(_WORKER_DATA, configs, task, ns)


def run_grid(profile: Profile, ns: NoiseStudyConfig, data: StudyData, log_path: Path | None = None,
             progress: Callable[[TaskResult], None] | None = None) -> list[TaskResult]:
    """Run every task of :func:`study_tasks`; results in task order.

    ``ns.workers`` >= 1: that many spawned processes, each on ``ns.threads`` torch threads, their stderr
    appended to ``log_path`` (default: discarded). 0: in this process (its torch threads set for the call;
    the evaluation functions' progress bars show here).
    """
    methods = study_methods(profile, ns)
    configs = {seed: {m: run_config(profile, ns, m, seed) for m in methods} for seed in ns.seeds}
    tasks = study_tasks(ns)
    results: list[TaskResult] = []
    if ns.workers == 0:
        with torch_threads(ns.threads):
            for task in tasks:
                results.append(run_task(data, configs[task.seed], task, ns))
                if progress:
                    progress(results[-1])
        return results
    with ProcessPoolExecutor(ns.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(data, ns.threads, str(log_path or os.devnull))) as pool:
        futures = [pool.submit(_run_in_worker, configs[task.seed], task, ns) for task in tasks]
        for future in futures:
            results.append(future.result())
            if progress:
                progress(results[-1])
    return results
