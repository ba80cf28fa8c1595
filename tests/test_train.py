"""Trainer: every method learns on a fixed batch, the teacher's mode and BatchNorm, kill-and-resume equality,
bit-identical runs in a fresh process, NaN guard, torchrun DDP."""
import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from otterlib import checkpoint as ckpt_io
from otterlib import train as train_module
from otterlib.config import LossConfig, ModelConfig, RunConfig, RunData, TrainConfig, save_yaml
from otterlib.ema import EMATeacher
from otterlib.losses import create_loss
from otterlib.models import create_model
from otterlib.train import (NonFiniteLossError, build_training_modules, loss_kwargs, run_training, train,
                            train_step)

METHODS = ["infonce", "label_smoothing", "kd", "otter"]
TINY = ModelConfig(image_encoder="tiny_cnn", text_encoder="tiny_bert", embed_dim=32, pretrained=False,
                   max_text_tokens=16)


def run_config(tmp_path: Path, data_root: Path, method: str = "otter", **train) -> RunConfig:
    t = TrainConfig(epochs=2, batch_size=16, lr=0.05, precision="fp32", device="cpu", num_workers=0,
                    shuffle_buffer=32, image_size=32, log_every=1, channels_last=False, seed=3)
    return RunConfig(profile="test", setting="tiny", method=method, model=TINY,
                     train=dataclasses.replace(t, **train), loss=LossConfig(),
                     data=RunData(root=str(data_root)), run_dir=str(tmp_path / method),
                     offline=True)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_overfits_a_fixed_batch(method):
    """60 steps of the trainer's step (EMA update, teacher forward, loss, backward, update) on one batch.

    AdamW makes the test fast; the paper's SGD needs far more steps from a random init. The teacher's
    parameters must follow a float64 EMA of the student's kept here (buffers are left out: BatchNorm running
    statistics change on every train-mode forward, EMA or not)."""
    torch.manual_seed(0)
    cfg = RunConfig(profile="t", setting="t", method=method, model=TINY, train=TrainConfig(), loss=LossConfig(),
                    data=RunData(), run_dir="unused")
    model = create_model(TINY)
    module, teacher = build_training_modules(model, create_loss(method, **loss_kwargs(cfg)), cfg.loss,
                                             sync_batchnorm=False)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.0)
    images = torch.randn(12, 3, 32, 32)
    words = "apple river stone cloud tiger violin carpet meadow engine harbor pencil garden".split()
    captions = [f"a photo of a {w}" for w in words]
    expected = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    losses = []
    for i in range(60):
        decay = EMATeacher.decay_at(i + 1)  # the update before step i is the (i + 1)-th
        for n, p in model.named_parameters():
            expected[n].mul_(decay).add_(p.detach().double(), alpha=1.0 - decay)
        losses.append(float(train_step(module, teacher, opt, images, captions, None, None)["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    if teacher is not None:  # the EMA teacher moved with the student but received no gradient
        assert teacher.num_updates == 60
        params = dict(teacher.module.named_parameters())
        assert params.keys() == expected.keys()
        for n, p in params.items():
            torch.testing.assert_close(p.double(), expected[n], rtol=1e-5, atol=1e-6, msg=lambda m: f"{n}: {m}")
        assert all(p.grad is None for p in teacher.module.parameters())
        assert max((params[n].double() - p.double()).abs().max() for n, p in model.named_parameters()) > 1e-3


def _pretrained_like(real_create):
    """``create_model`` whose text encoder comes back in eval mode, as ``from_pretrained`` returns it."""
    def create(cfg, **kwargs):
        model = real_create(cfg, **kwargs)
        model.text_encoder.eval()
        return model
    return create


@pytest.mark.parametrize("teacher_mode", ["train", "eval"])
def test_every_teacher_submodule_is_in_the_configured_mode_during_training(tmp_path, tiny_data_root, monkeypatch,
                                                                          teacher_mode):
    """Through ``train()``: forward pre-hooks record each teacher submodule's mode while the teacher embeds a
    batch, on every step of the run; the student is entirely in train mode."""
    monkeypatch.setattr(train_module, "create_model", _pretrained_like(train_module.create_model))
    seen: dict[str, set[bool]] = {"teacher": set(), "student": set()}
    real_step = train_module.train_step

    def spying_step(module, teacher, *args):
        hooks = [m.register_forward_pre_hook(lambda mod, _: seen["teacher"].add(mod.training))
                 for m in teacher.module.modules()]
        seen["student"] |= {m.training for m in module.modules()}
        try:
            return real_step(module, teacher, *args)
        finally:
            for h in hooks:
                h.remove()

    monkeypatch.setattr(train_module, "train_step", spying_step)
    cfg = run_config(tmp_path, tiny_data_root, method="otter", epochs=1)
    if teacher_mode != "train":  # "train" is the default (the official teacher)
        cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, teacher_mode=teacher_mode))
    train(cfg, progress=False, stop_after_steps=2)
    assert seen == {"teacher": {teacher_mode == "train"}, "student": {True}}


def test_build_training_returns_the_student_in_train_mode(tmp_path, tiny_data_root, monkeypatch):
    """The benchmark and the equivalence/fidelity checks step what ``build_training`` returns without the
    trainer's per-epoch ``module.train()``: a text encoder loaded in eval mode must not stay there (the benchmark
    then timed a student without dropout against a train-mode teacher)."""
    monkeypatch.setattr(train_module, "create_model", _pretrained_like(train_module.create_model))
    parts = train_module.build_training(run_config(tmp_path, tiny_data_root, method="otter"), torch.device("cpu"), 1)
    assert {m.training for m in parts.module.modules()} == {True}
    assert {m.training for m in parts.teacher.module.modules()} == {True}


@pytest.mark.parametrize("sync_batchnorm", [False, True])
def test_teacher_batchnorm_is_the_students_and_the_teacher_stays_outside(sync_batchnorm):
    """CUDA DDP converts the student's BatchNorm to SyncBatchNorm; the teacher must get the same layers (the
    official teacher is a copy of the converted model). SyncBatchNorm is built on CPU without a process group
    (it then normalises like BatchNorm)."""
    module, teacher = build_training_modules(create_model(TINY), create_loss("otter"), LossConfig(),
                                             sync_batchnorm=sync_batchnorm)
    student_types = {n: type(m) for n, m in module.model.named_modules()}
    teacher_types = {n: type(m) for n, m in teacher.module.named_modules()}
    assert teacher_types == student_types
    norms = [t for t in teacher_types.values() if issubclass(t, nn.modules.batchnorm._BatchNorm)]
    assert norms == [nn.SyncBatchNorm if sync_batchnorm else nn.BatchNorm2d] * 3
    # the teacher is no submodule of the student (so never in DDP, the optimizer or the student's state dict)
    assert not {id(p) for p in module.parameters()} & {id(p) for p in teacher.module.parameters()}
    assert not any(k.startswith("teacher") for k in module.state_dict())
    img, txt = teacher(torch.randn(4, 3, 32, 32), ["a red circle", "a cat", "two dogs", "a blue square"])
    assert img.shape == txt.shape == (4, TINY.embed_dim) and not img.requires_grad
    assert build_training_modules(create_model(TINY), create_loss("infonce"), LossConfig(),
                                  sync_batchnorm=sync_batchnorm)[1] is None


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, tiny_data_root):
    full = run_config(tmp_path / "a", tiny_data_root, checkpoint_every_steps=2)
    result = train(full, progress=False)
    assert result.metrics["global_steps"] == 12  # 2 epochs x floor(96 / 16)

    killed = run_config(tmp_path / "b", tiny_data_root, checkpoint_every_steps=2)
    partial = train(killed, progress=False, stop_after_steps=9)  # dies in epoch 2, 1 step after a checkpoint
    assert partial.metrics == {"stopped_after_steps": 9}
    latest = ckpt_io.load(Path(killed.run_dir) / "checkpoints" / "latest.pt")
    assert (latest["epoch"], latest["step_in_epoch"], latest["global_step"]) == (1, 2, 8)
    assert latest["teacher"]["num_updates"] == 8
    resumed = train(killed, progress=False)
    assert resumed.metrics["global_steps"] == 12

    a = ckpt_io.load(Path(full.run_dir) / "checkpoints" / "latest.pt")
    b = ckpt_io.load(Path(killed.run_dir) / "checkpoints" / "latest.pt")
    for part in ("model", "loss"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    for k in a["teacher"]["module"]:
        assert torch.equal(a["teacher"]["module"][k], b["teacher"]["module"][k]), f"teacher.{k} differs"
    assert a["teacher"]["num_updates"] == b["teacher"]["num_updates"] == 12


def _tensors(tree, prefix=""):
    """Every tensor of a nested checkpoint by path (``model.image_proj.weight``, ``optimizer.state.3.step``)."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return {k: v for key, sub in items for k, v in _tensors(sub, f"{prefix}.{key}" if prefix else str(key)).items()}


@pytest.mark.slow
def test_a_fresh_process_writes_the_same_checkpoints_bit_for_bit(tmp_path, tiny_data_root):
    """The same config and shards, trained by ``python -m otterlib.train`` in a new process (its own hash seed)
    and by ``train()`` in this one (after whatever ran before in it), with the same number of threads: the
    student, teacher, temperatures, optimizer state and RNG states are bit-identical."""
    package_root = str(Path(train_module.__file__).resolve().parents[1])  # the otterlib under test
    env = os.environ | {"PYTHONHASHSEED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads()),
                        "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    fresh, here = (run_config(tmp_path / name, tiny_data_root, method="otter", epochs=1) for name in ("a", "b"))
    Path(fresh.run_dir).mkdir(parents=True)
    save_yaml(fresh.to_dict(), Path(fresh.run_dir) / "config.yaml")
    subprocess.run([sys.executable, "-m", "otterlib.train", "--config", str(Path(fresh.run_dir) / "config.yaml"),
                    "--no-progress"], check=True, env=env)
    torch.manual_seed(12345), random.seed(12345), np.random.seed(12345)  # a state no fresh process starts with
    train(here, progress=False)
    runs = [Path(cfg.run_dir) / "checkpoints" for cfg in (fresh, here)]
    for name in ("epoch_001.pt", "latest.pt"):
        a, b = (_tensors(ckpt_io.load(run / name)) for run in runs)
        assert a.keys() == b.keys()
        differing = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differing, f"{name}: {differing[:5]}"
    assert {"loss.logit_scale", "loss.distill_logit_scale", "teacher.module.image_proj.weight",
            "optimizer.state.0.momentum_buffer", "rng.torch"} <= a.keys()  # latest.pt holds all of them
    assert ckpt_io.load(runs[0] / "latest.pt")["teacher"]["num_updates"] == 6


def test_resume_refuses_a_changed_configuration(tmp_path, tiny_data_root):
    cfg = run_config(tmp_path, tiny_data_root, method="infonce", checkpoint_every_steps=2)
    train(cfg, progress=False, stop_after_steps=2)
    changed = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, logit_scale_init=2.0))
    with pytest.raises(ValueError, match="another configuration"):
        train(changed, progress=False)


def test_run_folder_contract(tmp_path, tiny_data_root):
    cfg = run_config(tmp_path, tiny_data_root, method="kd", epochs=1)
    train(cfg, progress=False)
    run = Path(cfg.run_dir)
    assert RunConfig.from_dict(__import__("yaml").safe_load((run / "config.yaml").read_text())) == cfg
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "step" in r and "event" not in r]
    assert len(steps) == 6 and {"loss", "contrastive", "distill", "lr", "samples_per_s", "data_time_s",
                                "logit_scale", "distill_logit_scale"} <= set(steps[0])
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["val_last"]["mean_r@1"] <= 1.0 and metrics["val_last"]["n"] == 32
    assert metrics["best"]["epoch"] == 1 and metrics["config_hash"] == cfg.config_hash()
    for name in ("epoch_001.pt", "best.pt", "latest.pt"):
        assert (run / "checkpoints" / name).is_file()
    model = create_model(TINY)
    meta = ckpt_io.load_student_weights(model, run / "checkpoints" / "best.pt")
    assert meta["epoch"] == 1 and meta["method"] == "kd"


def test_cosine_schedule_is_stepped_per_epoch(tmp_path, tiny_data_root):
    cfg = run_config(tmp_path, tiny_data_root, method="infonce", epochs=2, lr=0.04)
    train(cfg, progress=False)
    rows = [json.loads(line) for line in (Path(cfg.run_dir) / "log.jsonl").read_text().splitlines()]
    lrs = {r["epoch"]: r["lr"] for r in rows if "lr" in r}
    assert lrs == {0: pytest.approx(0.04), 1: pytest.approx(0.02)}  # 0.5 * lr * (1 + cos(pi * e / 2))


def test_non_finite_loss_stops_with_the_step_and_terms_and_keeps_latest(tmp_path, tiny_data_root, monkeypatch):
    cfg = run_config(tmp_path, tiny_data_root, method="infonce", checkpoint_every_steps=2)
    train(cfg, progress=False, stop_after_steps=3)
    latest = Path(cfg.run_dir) / "checkpoints" / "latest.pt"
    before = latest.read_bytes()
    from otterlib import losses

    original = losses.InfoNCE.forward

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        return {k: v * float("nan") for k, v in out.items()}

    monkeypatch.setattr(losses.InfoNCE, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 0 step 2 .*'contrastive': nan"):
        train(cfg, progress=False)
    assert latest.read_bytes() == before


@pytest.mark.slow
def test_two_process_run_goes_through_torchrun_and_keeps_ranks_identical(tmp_path, tiny_data_root, monkeypatch):
    """The notebook path: nproc > 1 launches ``torchrun -m otterlib.train`` (gloo on CPU) and streams its log."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = run_config(tmp_path, tiny_data_root, method="otter", epochs=1, nproc=2)
    lines = []
    result = run_training(cfg, echo=lines.append)
    assert lines[0].startswith("$ ") and "--nproc_per_node=2" in lines[0] and "-m otterlib.train" in lines[0]
    metrics = result.metrics
    assert metrics["world_size"] == 2 and metrics["global_steps"] == 6  # floor(96 / (8 per rank x 2 ranks))
    a, b = metrics["rank_param_checksums"]
    assert a == b
    assert (Path(cfg.run_dir) / "config.yaml").is_file() and (Path(cfg.run_dir) / "checkpoints" / "best.pt").is_file()


def test_a_non_finite_step_between_checks_is_named_at_the_next_check_and_latest_is_kept(tmp_path, tiny_data_root,
                                                                                       monkeypatch):
    """No host sync per step: the terms are checked at logged steps and before checkpoints. With log_every=100 the
    bad step 4 is found after step 5 (the epoch's last, logged) ran; the error still names step 4."""
    cfg = run_config(tmp_path, tiny_data_root, method="infonce", checkpoint_every_steps=4, log_every=100)
    train(cfg, progress=False, stop_after_steps=4)
    latest = Path(cfg.run_dir) / "checkpoints" / "latest.pt"
    before = latest.read_bytes()
    from otterlib import losses

    original, calls = losses.InfoNCE.forward, []

    def poisoned_once(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append(1)
        return {k: v * float("nan") for k, v in out.items()} if len(calls) == 1 else out

    monkeypatch.setattr(losses.InfoNCE, "forward", poisoned_once)
    with pytest.raises(NonFiniteLossError, match=r"epoch 0 step 4 \(global step 4\).*'loss': nan"):
        train(cfg, progress=False)
    assert len(calls) == 2  # step 5 ran before the check
    assert latest.read_bytes() == before
