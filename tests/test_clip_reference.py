"""OpenAI CLIP as the eval-only reference row: loads a saved checkpoint offline and runs the same protocol."""
import pytest
import torch

from otterlib.data import synthetic
from otterlib.data.evalsets import load_tencent_in10k
from otterlib.evaluate import evaluate_zero_shot
from otterlib.models import load_clip_reference
from otterlib.models.clip_reference import clip_module


def _tiny_clip_checkpoint(path):
    CLIP = clip_module().model.CLIP  # imported as the library does: without the pkg_resources warning

    torch.manual_seed(0)
    model = CLIP(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=2,
                 transformer_layers=2)
    torch.save(model.state_dict(), path)


def test_reference_clip_loads_offline_and_follows_the_protocol(tmp_path):
    _tiny_clip_checkpoint(tmp_path / "tiny_clip.pt")
    ref = load_clip_reference(str(tmp_path / "tiny_clip.pt"))
    captions = ["a photo of red circle,or scarlet circle.", "a photo of shape,or form."]
    emb = ref.encode_text(captions)
    assert emb.shape == (2, 32) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)

    files = synthetic.make_synthetic_in10k(tmp_path / "in10k", 12, 32, seed=0)
    eval_set = load_tencent_in10k(files["dictionary"], files["val_list"], files["images_root"])
    result = evaluate_zero_shot(ref, eval_set, ref.preprocess, ks=(1, 5), batch_size=4)
    assert result.n_images == 12 and result.n_classes == eval_set.n_classes
    assert 0.0 <= result.metrics["fh@1"] <= result.metrics["fh@5"] <= 1.0


def test_reference_names_are_checked_and_offline_download_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown CLIP reference"):
        load_clip_reference("clip_rn5000")
    with pytest.raises(RuntimeError, match="could not be downloaded"):
        load_clip_reference("clip_rn50", download_root=str(tmp_path))
