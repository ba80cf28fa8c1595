"""Locked-encoder mode: the feature cache and the heads' training step against the full trainer."""
import dataclasses

import pytest
import torch

from otterlib.config import ModelConfig, load_profile, resolve_run
from otterlib.ema import EMATeacher
from otterlib.locked import LockedEncoders, LockedTrainer, cached_features, locked_model, sha256_hex, weights_sha256
from otterlib.losses import create_loss
from otterlib.models import create_model
from otterlib.train import StudentWithLoss, create_optimizer, loss_kwargs, train_step

ENCODER = {"encoder": "tiny_cnn", "weights_sha256": "aa"}


class Counter:
    """A feature computation that counts its calls."""

    def __init__(self, value: float) -> None:
        self.calls, self.value = 0, value

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return torch.full((3, 2), self.value)


def test_cache_is_reused_when_nothing_changed(tmp_path):
    first, second = Counter(1.0), Counter(2.0)
    feats, rebuilt = cached_features(tmp_path / "f.pt", ENCODER, "data1", first)
    again, rebuilt_again = cached_features(tmp_path / "f.pt", dict(ENCODER), "data1", second)
    assert rebuilt and not rebuilt_again and (first.calls, second.calls) == (1, 0)
    assert torch.equal(again, feats) and float(again[0, 0]) == 1.0


@pytest.mark.parametrize("identity,data", [({"encoder": "tiny_cnn", "weights_sha256": "bb"}, "data1"),
                                          ({"encoder": "effnet", "weights_sha256": "aa"}, "data1"),
                                          (ENCODER, "data2")])
def test_cache_is_rebuilt_when_the_encoder_or_the_data_changed(tmp_path, identity, data):
    cached_features(tmp_path / "f.pt", ENCODER, "data1", Counter(1.0))
    changed = Counter(2.0)
    feats, rebuilt = cached_features(tmp_path / "f.pt", identity, data, changed)
    assert rebuilt and changed.calls == 1 and float(feats[0, 0]) == 2.0
    # the rewritten file now serves the new key
    assert not cached_features(tmp_path / "f.pt", identity, data, Counter(3.0))[1]


def test_weights_hash_follows_every_weight():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    before = weights_sha256(net)
    assert weights_sha256(net) == before
    with torch.no_grad():
        net[0].weight[1, 2] += 1e-6
    assert weights_sha256(net) != before
    net[0].weight.data.copy_(net[0].weight.data)  # unchanged value, unchanged hash
    moved = weights_sha256(net)
    net[1].running_mean += 1.0  # buffers count too
    assert weights_sha256(net) != moved


def test_sha256_hex_separates_parts():
    assert sha256_hex(["ab", "c"]) != sha256_hex(["a", "bc"]) and sha256_hex([b"x"]) == sha256_hex(["x"])


def test_locked_encoders_cache_and_keep_caption_order(tmp_path):
    enc = LockedEncoders(ModelConfig(image_encoder="tiny_cnn", text_encoder="tiny_bert", pretrained=False,
                                     max_text_tokens=16), image_size=32, batch_size=2)
    captions = ["a red circle", "a large striped blue square left of a small green star", "a star", "two"]
    feats, rebuilt = enc.text_features(tmp_path / "t.pt", captions)
    alone = torch.cat([enc.encode_texts([c]) for c in captions])
    assert rebuilt and feats.shape == (4, enc.text_encoder.out_dim)
    assert torch.allclose(feats, alone, atol=1e-5)  # batched by length, returned in input order
    assert not enc.text_features(tmp_path / "t.pt", captions)[1]
    assert enc.text_features(tmp_path / "t.pt", captions[::-1])[1]  # other data: rebuilt


@pytest.mark.parametrize("method", ["infonce", "label_smoothing", "kd", "otter"])
def test_locked_step_equals_the_full_trainer_with_frozen_encoders(method):
    """Two steps of the heads on cached features give the loss terms and head weights of the full trainer on a
    model whose encoders are frozen (eval mode), on the same batches."""
    profile = load_profile("smoke")
    cfg = resolve_run(profile, "tiny-scratch", method)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, optimizer="adamw", lr=0.01, grad_clip=1.0,
                                                             schedule="constant"),
                              model=dataclasses.replace(cfg.model, embed_dim=16))
    torch.manual_seed(0)
    full = create_model(cfg.model)
    for encoder in (full.image_encoder, full.text_encoder):
        encoder.requires_grad_(False)
        encoder.eval()
    teacher = EMATeacher(full, mode="eval") if create_loss(method).needs_teacher else None  # encoders locked: eval
    loss_fn = create_loss(method, **loss_kwargs(cfg))
    module = StudentWithLoss(full, loss_fn)
    optimizer = create_optimizer([p for p in module.parameters() if p.requires_grad], cfg.train)

    heads = locked_model(full.image_encoder.out_dim, full.text_encoder.out_dim, 16)
    heads.image_proj.load_state_dict(full.image_proj.state_dict())
    heads.text_proj.load_state_dict(full.text_proj.state_dict())
    locked = LockedTrainer(cfg, heads, total_steps=2)

    from otterlib.data.world import generate_pairs
    from otterlib.data.synthetic import render_scene
    from otterlib.data.transforms import eval_transform

    pairs = generate_pairs(16, 0.5, seed=3)
    images = torch.stack([eval_transform(32)(render_scene(p.scene, 32, seed=i)) for i, p in enumerate(pairs)])
    captions = [p.caption for p in pairs]
    for step, rows in enumerate((slice(0, 8), slice(8, 16))):
        full_terms = train_step(module, teacher, optimizer, images[rows], captions[rows], None, 1.0)
        with torch.no_grad():
            img_feats = full.image_encoder(images[rows])
            txt_feats = full.text_encoder(captions[rows])
        locked_terms = locked.step(img_feats, txt_feats)
        for key in ("contrastive", "distill", "loss"):
            assert torch.allclose(locked_terms[key], full_terms[key], atol=1e-5), (method, step, key)
    assert torch.allclose(locked.model.image_proj.weight, full.image_proj.weight, atol=1e-5)
    assert torch.allclose(locked.model.text_proj.weight, full.text_proj.weight, atol=1e-5)
    if teacher is not None:
        assert torch.allclose(locked.teacher.module.image_proj.weight, teacher.module.image_proj.weight, atol=1e-6)


def test_a_non_finite_locked_step_is_named_at_the_next_check():
    from otterlib.train import NonFiniteLossError

    cfg = resolve_run(load_profile("smoke"), "tiny-scratch", "otter")
    trainer = LockedTrainer.create(cfg, 6, 5, total_steps=3)
    good = torch.randn(4, 6), torch.randn(4, 5)
    trainer.step(*good)
    trainer.check()  # all finite so far
    trainer.step(torch.full((4, 6), float("nan")), good[1])
    trainer.step(*good)  # runs on; the check names the first bad step
    with pytest.raises(NonFiniteLossError, match="step 1"):
        trainer.check()
