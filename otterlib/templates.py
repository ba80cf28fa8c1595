"""Prompt templates and class captions for zero-shot evaluation.

The paper's protocol (official ``eval.py``) uses one template, ``a photo of {}.``, and one caption per class:
the synonyms of a class are joined with ``",or "`` into a single name (``"a photo of object,or physical
object."``). The 80 CLIP ImageNet templates (Radford et al., 2021, prompt-engineering notebook) are also
provided; with several templates the evaluator averages the caption embeddings per class (CLIP-style
ensemble) instead of the official code's one-kNN-entry-per-caption, whose label mapping was wrong (reference
notes §9 item 7).
"""
from __future__ import annotations

from typing import Sequence

import torch

SYNONYM_JOINER: str = ",or "
"""How the official code chains the synonyms of one class into one name (no space before ``or``)."""

PAPER_TEMPLATES: tuple[str, ...] = ("a photo of {}.",)
"""The single template of the paper's protocol (official ``get_templates(simple=True)``)."""

CLIP_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)
"""The 80 ImageNet prompt templates of CLIP (also listed in the official OTTER ``get_templates``)."""

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"paper": PAPER_TEMPLATES, "clip80": CLIP_IMAGENET_TEMPLATES}
"""Named template sets, selected by ``EvalConfig.templates``."""


def get_templates(name: str) -> tuple[str, ...]:
    """The template set called ``name`` (``paper`` or ``clip80``)."""
    if name not in TEMPLATE_SETS:
        raise ValueError(f"unknown template set {name!r}; choose one of {sorted(TEMPLATE_SETS)}")
    return TEMPLATE_SETS[name]


def join_synonyms(synonyms: Sequence[str]) -> str:
    """One class name from its synonyms, chained with ``",or "`` as the official code does.

    ``["object", "physical object"]`` -> ``"object,or physical object"``.
    """
    if isinstance(synonyms, str):
        raise ValueError(f"a class is a list of synonyms, got the bare string {synonyms!r}; wrap it as [{synonyms!r}]")
    names = [s.strip() for s in synonyms]
    if not names or any(not s for s in names):
        raise ValueError(f"a class needs at least one non-empty name, got {list(synonyms)!r}")
    return SYNONYM_JOINER.join(names)


def _check_templates(templates: Sequence[str]) -> None:
    if isinstance(templates, str):
        raise ValueError(f"templates must be a sequence of strings, got the bare string {templates!r}")
    if len(templates) == 0:
        raise ValueError("templates is empty; use PAPER_TEMPLATES or CLIP_IMAGENET_TEMPLATES")
    for t in templates:
        if t.count("{}") != 1:
            raise ValueError(f"template {t!r} must contain exactly one '{{}}' placeholder for the class name")


def class_captions(class_names: Sequence[Sequence[str]],
                   templates: Sequence[str] = PAPER_TEMPLATES) -> tuple[list[str], torch.Tensor]:
    """Every (class, template) caption, class-major, with the class id of each caption.

    Args:
        class_names: ``class_names[c]`` is the list of synonyms of class ``c``; they are joined with
            ``",or "`` into one name, so each class gets exactly one caption per template.
        templates: format strings with one ``{}``.

    Returns:
        ``captions`` (``C * T`` strings; caption ``c * T + t`` is ``templates[t]`` filled with class ``c``) and
        ``class_ids``, a LongTensor of shape ``(C * T,)`` with the class id of each caption.
    """
    _check_templates(templates)
    names = [join_synonyms(syn) for syn in class_names]
    captions = [t.format(name) for name in names for t in templates]
    class_ids = torch.arange(len(names), dtype=torch.long).repeat_interleave(len(templates))
    return captions, class_ids
