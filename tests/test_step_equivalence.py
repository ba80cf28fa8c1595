"""Every speed knob of the trainer computes the plain float32 step: loss terms and updated weights agree with the
plain path (SGD for-loop kernel, eager attention, no compile, teacher under no_grad) over 3 steps of the tiny
encoders, within the tolerances of :mod:`otterlib.equivalence`; deliberately wrong variants break them (so the
comparison can fail)."""
import dataclasses

import pytest
import torch

from otterlib.config import DataConfig, LossConfig, ModelConfig, RunConfig, TrainConfig
from otterlib.equivalence import differences, max_differences, synthetic_batches, trace_steps

TINY = ModelConfig(image_encoder="tiny_cnn", text_encoder="tiny_bert", embed_dim=32, pretrained=False,
                   max_text_tokens=16)
PLAIN = TrainConfig(batch_size=8, image_size=32, precision="fp32", device="cpu", optimizer="sgd", lr=0.05,
                    channels_last=False, optimizer_impl="for_loop", text_attention="eager", compile=False,
                    teacher_inference_mode=False)
BATCHES = synthetic_batches(3, 8, 32)


def _trace(method, channels_last=False, loss=None, **train):
    cfg = RunConfig(profile="t", setting="t", method=method, model=TINY, train=dataclasses.replace(PLAIN, **train),
                    loss=loss or LossConfig(), data=DataConfig(), run_dir="unused")
    return trace_steps(cfg, BATCHES, torch.device("cpu"), channels_last=channels_last)


@pytest.fixture(scope="module")
def plain_runs():
    return {m: _trace(m) for m in ("otter", "infonce")}


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
    assert differences(plain_runs[method], _trace(method, **KNOBS[knob])) == []


WRONG = {
    "lr x 1.001": dict(lr=PLAIN.lr * 1.001),
    "bf16 autocast": dict(precision="bf16"),
    "teacher in eval mode": dict(loss=LossConfig(teacher_mode="eval")),
}


@pytest.mark.parametrize("wrong", list(WRONG))
def test_a_deliberately_wrong_variant_breaks_the_tolerance(plain_runs, wrong):
    variant = _trace("otter", **WRONG[wrong])
    assert differences(plain_runs["otter"], variant)
    assert max_differences(plain_runs["otter"], variant)["state_vs_tolerance"] > 10  # far outside, not at the edge (lr x 1.001: 97)


def test_the_repeated_plain_run_is_bit_identical(plain_runs):
    assert max_differences(plain_runs["otter"], _trace("otter")) == {"terms_rel": 0.0, "state_abs": 0.0,
                                                                   "state_vs_tolerance": 0.0}


def test_teacher_inference_mode_keeps_train_mode_batchnorm(plain_runs):
    """Under inference_mode the teacher's BatchNorm still normalises with batch statistics and updates its running
    statistics, exactly as under no_grad (the comparison above includes them; here they must also have moved)."""
    fast = _trace("otter", teacher_inference_mode=True).state
    plain = plain_runs["otter"].state
    key = "teacher.image_encoder.features.1."
    assert plain[key + "num_batches_tracked"].item() == fast[key + "num_batches_tracked"].item() == len(BATCHES)
    assert torch.equal(plain[key + "running_mean"], fast[key + "running_mean"])
    assert plain[key + "running_mean"].abs().max() > 0


@pytest.mark.slow
def test_compiled_student_and_teacher_compute_the_plain_step(plain_runs):
    """torch.compile (inductor, C++ on CPU) of the OTTER student and teacher: same terms and weights (about five
    minutes on a loaded 2-core machine; measured: terms 6.6e-7 relative, weights 4.4e-6 absolute)."""
    assert differences(plain_runs["otter"], _trace("otter", compile=True)) == []
