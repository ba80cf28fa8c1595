"""Every speed knob of the trainer computes the plain float32 step: loss terms and updated weights agree with the
plain path (SGD for-loop kernel, eager attention, no compile, teacher under no_grad) over 3 steps of the tiny
encoders, within the stated tolerance; deliberately wrong variants break that tolerance (so it can fail).

Dropout is set to 0 in both runs: SDPA and compiled kernels draw other dropout masks than eager PyTorch (the same
distribution, other random numbers), which is no difference in the computation.
"""
import random

import pytest
import torch
from torch import nn

from otterlib.config import DataConfig, LossConfig, ModelConfig, RunConfig, TrainConfig
from otterlib.train import build_training, train_step

TINY = ModelConfig(image_encoder="tiny_cnn", text_encoder="tiny_bert", embed_dim=32, pretrained=False,
                   max_text_tokens=16)
PLAIN = dict(batch_size=8, image_size=32, precision="fp32", device="cpu", optimizer="sgd", lr=0.05,
             channels_last=False, optimizer_impl="for_loop", text_attention="eager", compile=False,
             teacher_inference_mode=False)
TERMS_RTOL = 1e-5
"""Loss terms: |variant − plain| <= 1e-5·|plain| at every step. Measured: 0 (foreach, inference mode), <= 1e-6
(fused, SDPA, channels-last); lr·1.001 gives 1.5e-4 (InfoNCE) to 1e-3 (OTTER), bf16 autocast 4e-3 to 2.5e-2."""
PARAM_RTOL, PARAM_ATOL = 1e-5, 1e-6
"""Every student and teacher tensor (parameters and BatchNorm buffers) after 3 steps: max|variant − plain| <=
1e-5·max|plain| + 1e-6. Measured: <= 4.5e-6 on a tensor of max 2.7 (channels-last); lr·1.001 gives 2.7e-3."""
WORDS = "apple river stone cloud tiger violin carpet meadow engine harbor pencil garden red blue small".split()
STEPS = 3


def _batches(n: int, batch: int = 8, size: int = 32) -> list[tuple[torch.Tensor, list[str]]]:
    g, rng = torch.Generator().manual_seed(5), random.Random(5)
    return [(torch.randn(batch, 3, size, size, generator=g),
             [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(batch)]) for _ in range(n)]


def _run(method: str, channels_last: bool = False, loss: LossConfig | None = None, **train):
    """Per-step loss terms and the final student and teacher state of ``STEPS`` steps through the trainer's own
    construction (``build_training``) and step. ``channels_last`` converts as ``build_training`` does on CUDA."""
    cfg = RunConfig(profile="t", setting="t", method=method, model=TINY, train=TrainConfig(**(PLAIN | train)),
                    loss=loss or LossConfig(), data=DataConfig(), run_dir="unused")
    torch.manual_seed(0)
    parts = build_training(cfg, torch.device("cpu"), 1)
    models = [parts.module.model] + ([parts.teacher.module] if parts.teacher else [])
    for model in models:
        for sub in model.modules():
            if isinstance(sub, nn.Dropout):
                sub.p = 0.0
        if channels_last:
            model.image_encoder.to(memory_format=torch.channels_last)
    terms = []
    for i, (images, captions) in enumerate(_batches(STEPS)):
        torch.manual_seed(100 + i)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        out = train_step(parts.module, parts.teacher, parts.optimizer, images, captions, parts.amp_dtype, None)
        terms.append({k: float(v) for k, v in out.items()})
    state = {f"student.{k}": v.detach().clone() for k, v in parts.module.state_dict().items()}
    if parts.teacher is not None:
        state |= {f"teacher.{k}": v.detach().clone() for k, v in parts.teacher.module.state_dict().items()}
    return terms, state


def _differences(plain, variant) -> list[str]:
    """What exceeds the tolerances (empty: equivalent)."""
    bad = [f"step {i} {k}: {v[k]!r} vs {p[k]!r}" for i, (p, v) in enumerate(zip(plain[0], variant[0])) for k in p
           if abs(v[k] - p[k]) > TERMS_RTOL * abs(p[k])]
    assert plain[1].keys() == variant[1].keys()
    for k, ref in plain[1].items():
        if ref.is_floating_point():
            err = (variant[1][k].double() - ref.double()).abs().max().item()
            if err > PARAM_RTOL * ref.abs().max().item() + PARAM_ATOL:
                bad.append(f"{k}: max abs difference {err:.3g}")
        elif not torch.equal(ref, variant[1][k]):
            bad.append(f"{k}: differs")
    return bad


@pytest.fixture(scope="module")
def plain_runs():
    return {m: _run(m) for m in ("otter", "infonce")}


KNOBS = {
    "foreach optimizer": dict(optimizer_impl="foreach"),
    "fused optimizer": dict(optimizer_impl="fused"),
    "auto optimizer": dict(optimizer_impl="auto"),
    "sdpa attention": dict(text_attention="sdpa"),
    "teacher inference mode": dict(teacher_inference_mode=True),
    "channels-last": dict(channels_last=True),
}


@pytest.mark.parametrize("method", ["otter", "infonce"])
@pytest.mark.parametrize("knob", list(KNOBS))
def test_each_knob_computes_the_plain_float32_step(plain_runs, method, knob):
    assert _differences(plain_runs[method], _run(method, **KNOBS[knob])) == []


WRONG = {
    "lr x 1.001": dict(lr=PLAIN["lr"] * 1.001),
    "bf16 autocast": dict(precision="bf16"),
    "teacher in eval mode": dict(loss=LossConfig(teacher_mode="eval")),
}


@pytest.mark.parametrize("wrong", list(WRONG))
def test_a_deliberately_wrong_variant_breaks_the_tolerance(plain_runs, wrong):
    assert _differences(plain_runs["otter"], _run("otter", **WRONG[wrong]))


def test_teacher_inference_mode_keeps_train_mode_batchnorm():
    """Under inference_mode the teacher's BatchNorm still normalises with batch statistics and updates its running
    statistics, exactly as under no_grad (the state comparison above includes them; here they must have moved)."""
    _, plain = _run("otter")
    _, fast = _run("otter", teacher_inference_mode=True)
    key = "teacher.image_encoder.features.1.num_batches_tracked"
    assert plain[key].item() == fast[key].item() == STEPS
    assert torch.equal(plain["teacher.image_encoder.features.1.running_mean"],
                       fast["teacher.image_encoder.features.1.running_mean"])


@pytest.mark.slow
def test_compiled_student_and_teacher_compute_the_plain_step(plain_runs):
    """torch.compile (inductor, C++ on CPU) of the OTTER student and teacher: same terms and weights (about five
    minutes on a loaded 2-core machine; measured: terms 6.6e-7 relative, weights 4.4e-6)."""
    assert _differences(plain_runs["otter"], _run("otter", compile=True)) == []
