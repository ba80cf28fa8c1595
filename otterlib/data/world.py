"""The synthetic world: objects with visual attributes, scenes, structured captions and their truth relation.

A **scene** holds 1–3 objects; each object has a shape, a colour, a fill pattern and a size, and sits at a
position in units of the image side (``x`` to the right, ``y`` down). Attribute values are drawn Zipf-like
(probability ∝ rank^-s in the listed order), so class frequencies in the eval sets are skewed.

A **caption** is rendered from a :class:`CaptionSpec`: which objects are mentioned with which attributes
(the shape always, colour / pattern / size optionally) and an optional spatial relation between two
mentions. A spec is **consistent** with a scene when its mentions can be matched to *distinct* objects of
the scene that agree on every mentioned attribute, and the stated relation holds between the matched
objects. :func:`truth_matrix` evaluates this for every (image, caption) pair at once.

Training pairs (:func:`generate_pairs`) carry a clean caption (every object, every attribute) and, for an
exact fraction of them, a noisy one: ``wrong`` (the clean caption of another image, inconsistent with this
scene) or ``partial`` (only part of the scene is described, still true of it).
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "heart", "cross", "crescent",
                           "arrow", "semicircle", "rectangle", "teardrop")
COLORS: tuple[str, ...] = ("red", "blue", "green", "yellow", "purple", "orange", "black", "cyan")
PATTERNS: tuple[str, ...] = ("solid", "striped", "hollow")
SIZES: tuple[str, ...] = ("large", "small")
ATTRIBUTES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "color": COLORS, "pattern": PATTERNS, "size": SIZES}
"""Every attribute with its values, most frequent first (the Zipf rank order)."""

COLOR_SYNONYMS: dict[str, str] = {"red": "scarlet", "blue": "azure", "green": "emerald", "purple": "violet"}
SHAPE_SYNONYMS: dict[str, str] = {"diamond": "rhombus", "cross": "plus sign", "teardrop": "droplet"}
SYNONYM_RATE: float = 0.2
"""Probability that a caption names a colour or shape by its synonym (so the text encoder sees both)."""

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
RELATION_MARGIN: float = 0.2
"""A relation holds when the centres differ by more than this (image sides) along its axis."""
CELLS: tuple[tuple[float, float], ...] = ((0.3, 0.3), (0.7, 0.3), (0.3, 0.7), (0.7, 0.7))
"""Centres of the layout cells of multi-object scenes (at most one object per cell)."""
JITTER: float = 0.04
"""Each object centre moves by up to this much (image sides) along each axis."""
OBJECT_COUNT_WEIGHTS: tuple[float, ...] = (0.45, 0.35, 0.2)
"""P(1, 2, 3 objects) of a scene."""
MAX_OBJECTS: int = len(OBJECT_COUNT_WEIGHTS)
NOISE_KINDS: tuple[str, ...] = ("wrong", "partial")


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene; ``x``/``y`` are its centre in units of the image side."""

    shape: str
    color: str
    pattern: str
    size: str
    x: float
    y: float


Scene = tuple[SceneObject, ...]


@dataclass(frozen=True)
class Mention:
    """An object as a caption mentions it; ``None`` means the attribute is not mentioned (matches anything)."""

    shape: str
    color: str | None = None
    pattern: str | None = None
    size: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        return all(v is None or v == getattr(obj, a) for a, v in self.attributes().items())

    def attributes(self) -> dict[str, str | None]:
        return {"shape": self.shape, "color": self.color, "pattern": self.pattern, "size": self.size}


@dataclass(frozen=True)
class Relation:
    """``mentions[first]`` is ``kind`` (one of :data:`RELATIONS`) ``mentions[second]``."""

    first: int
    kind: str
    second: int


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption says: the mentioned objects and an optional relation between two of them."""

    mentions: tuple[Mention, ...]
    relation: Relation | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.mentions) <= MAX_OBJECTS:
            raise ValueError(f"a caption mentions 1..{MAX_OBJECTS} objects, got {len(self.mentions)}")
        r = self.relation
        if r is not None and (r.kind not in RELATIONS or r.first == r.second
                              or not {r.first, r.second} <= set(range(len(self.mentions)))):
            raise ValueError(f"invalid relation {r} for {len(self.mentions)} mentions")


@dataclass(frozen=True)
class SyntheticPair:
    """A training image (its scene) with its possibly corrupted caption."""

    key: str
    scene: Scene
    caption: str
    caption_spec: CaptionSpec
    clean_caption: str
    noise: str
    """``none``, ``wrong`` (another image's caption) or ``partial`` (only part of the image)."""


# --------------------------------------------------------------------------------------------------
# Truth


def relation_holds(a: SceneObject, kind: str, b: SceneObject) -> bool:
    """Whether ``a`` is ``kind`` ``b`` (image coordinates: x to the right, y down)."""
    dx, dy = b.x - a.x, b.y - a.y
    return {"left of": dx > RELATION_MARGIN, "right of": -dx > RELATION_MARGIN,
            "above": dy > RELATION_MARGIN, "below": -dy > RELATION_MARGIN}[kind]


def consistent(scene: Scene, spec: CaptionSpec) -> bool:
    """True when the mentions match distinct objects of ``scene`` on every mentioned attribute and the stated
    relation holds between the matched objects (brute force over injective assignments)."""
    for chosen in itertools.permutations(range(len(scene)), len(spec.mentions)):
        if not all(m.matches(scene[o]) for m, o in zip(spec.mentions, chosen)):
            continue
        r = spec.relation
        if r is None or relation_holds(scene[chosen[r.first]], r.kind, scene[chosen[r.second]]):
            return True
    return False


_BIT: dict[tuple[str, str], int] = {(a, v): 1 << i for i, (a, v) in enumerate(
    (a, v) for a, values in ATTRIBUTES.items() for v in values)}
"""One bit per (attribute, value): an object sets four bits, a mention requires the bits it names."""


def _object_bits(scenes: Sequence[Scene]) -> np.ndarray:
    """(n, MAX_OBJECTS) int32 attribute bit sets; 0 for an empty slot (it matches no mention)."""
    out = np.zeros((len(scenes), MAX_OBJECTS), dtype=np.int32)
    for i, scene in enumerate(scenes):
        for o, obj in enumerate(scene):
            out[i, o] = sum(_BIT[a, getattr(obj, a)] for a in ATTRIBUTES)
    return out


def _relation_table(scenes: Sequence[Scene]) -> np.ndarray:
    """(n, MAX_OBJECTS * MAX_OBJECTS * len(RELATIONS)) bool: relation r holds from slot o1 to slot o2
    (column ``(o1 * MAX_OBJECTS + o2) * len(RELATIONS) + r``)."""
    out = np.zeros((len(scenes), MAX_OBJECTS, MAX_OBJECTS, len(RELATIONS)), dtype=bool)
    for i, scene in enumerate(scenes):
        for (o1, a), (o2, b) in itertools.permutations(enumerate(scene), 2):
            out[i, o1, o2] = [relation_holds(a, kind, b) for kind in RELATIONS]
    return out.reshape(len(scenes), -1)


def truth_matrix(scenes: Sequence[Scene], specs: Sequence[CaptionSpec]) -> np.ndarray:
    """``T[i, j]`` = :func:`consistent` (``scenes[i]``, ``specs[j]``), as a (n_images, n_captions) bool array.

    Vectorised over images with packed bit rows: objects and mentions become attribute bit sets (a mention
    matches an object when the object has every bit the mention requires; an empty mention slot requires
    nothing, an empty object slot has no bit). For every distinct mention and object slot, the images whose
    slot matches are one packed row; a caption's truth is the OR over the MAX_OBJECTS! injective slot
    assignments of the AND of its mentions' rows and of its relation's row.
    """
    n_images = len(scenes)
    obj = _object_bits(scenes)                                          # (I, S)
    req = np.zeros((len(specs), MAX_OBJECTS), dtype=np.int32)           # (J, S)
    rel_pair = np.zeros((len(specs), 2), dtype=np.int64)                # mention slots of the relation
    rel_kind = np.full(len(specs), -1, dtype=np.int64)                  # -1: no relation
    for j, spec in enumerate(specs):
        for k, m in enumerate(spec.mentions):
            req[j, k] = sum(_BIT[a, v] for a, v in m.attributes().items() if v is not None)
        if spec.relation is not None:
            rel_pair[j] = spec.relation.first, spec.relation.second
            rel_kind[j] = RELATIONS.index(spec.relation.kind)
    distinct, mention_id = np.unique(req, return_inverse=True)
    mention_id = mention_id.reshape(req.shape)                         # (J, S) index into ``distinct``
    rows = np.stack([np.packbits((obj[None, :, o] & distinct[:, None]) == distinct[:, None], axis=1)
                     for o in range(MAX_OBJECTS)], axis=1)              # (U, S, ceil(I/8)) uint8
    rel_rows = np.packbits(_relation_table(scenes).T, axis=1)           # (S*S*R, ceil(I/8))
    rel_rows = np.concatenate([rel_rows, np.full((1, rel_rows.shape[1]), 255, np.uint8)])  # last: no relation
    acc = np.zeros((len(specs), rows.shape[2]), dtype=np.uint8)
    for perm in itertools.permutations(range(MAX_OBJECTS)):
        p = np.asarray(perm)
        hit = rows[mention_id[:, 0], p[0]] & rows[mention_id[:, 1], p[1]] & rows[mention_id[:, 2], p[2]]
        column = (p[rel_pair[:, 0]] * MAX_OBJECTS + p[rel_pair[:, 1]]) * len(RELATIONS) + rel_kind
        hit &= rel_rows[np.where(rel_kind < 0, len(rel_rows) - 1, column)]
        acc |= hit
    return np.unpackbits(acc, axis=1, count=n_images).view(bool).T  # Fortran-ordered view: no 64M-cell copy


# --------------------------------------------------------------------------------------------------
# Drawing scenes


def zipf_weights(n: int, exponent: float) -> list[float]:
    """Unnormalised Zipf weights ``rank^-exponent`` for ranks 1..n."""
    return [(r + 1) ** -exponent for r in range(n)]


def random_object(rng: random.Random, x: float, y: float, zipf_exponent: float) -> SceneObject:
    """An object at (x, y) with Zipf-drawn attributes."""
    values = {a: rng.choices(vals, weights=zipf_weights(len(vals), zipf_exponent))[0]
              for a, vals in ATTRIBUTES.items()}
    return SceneObject(x=x, y=y, **values)


def random_scene(rng: random.Random, zipf_exponent: float, n_objects: int | None = None) -> Scene:
    """A scene of ``n_objects`` (drawn from :data:`OBJECT_COUNT_WEIGHTS` when None): one object near the
    centre, or several in distinct layout cells, each jittered by up to :data:`JITTER`."""
    if n_objects is None:
        n_objects = rng.choices(range(1, MAX_OBJECTS + 1), weights=OBJECT_COUNT_WEIGHTS)[0]
    if not 1 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"a scene holds 1..{MAX_OBJECTS} objects, got {n_objects}")
    centres = [(0.5, 0.5)] if n_objects == 1 else rng.sample(CELLS, n_objects)
    return tuple(random_object(rng, cx + rng.uniform(-JITTER, JITTER), cy + rng.uniform(-JITTER, JITTER),
                               zipf_exponent) for cx, cy in centres)


# --------------------------------------------------------------------------------------------------
# Captions


def complete_spec(scene: Scene, rng: random.Random) -> CaptionSpec:
    """Every object with every attribute, in random order; with two or more objects, usually (p = 0.7) a
    relation that holds between the first two mentions."""
    order = rng.sample(range(len(scene)), len(scene))
    mentions = tuple(Mention(scene[o].shape, scene[o].color, scene[o].pattern, scene[o].size) for o in order)
    relation = None
    if len(scene) > 1 and rng.random() < 0.7:
        true_kinds = [k for k in RELATIONS if relation_holds(scene[order[0]], k, scene[order[1]])]
        relation = Relation(0, rng.choice(true_kinds), 1)
    return CaptionSpec(mentions, relation)


def partial_spec(scene: Scene, rng: random.Random) -> CaptionSpec:
    """A strictly smaller description that is still true of ``scene``: with several objects, some may go
    unmentioned (p = 0.5); each kept mention drops each optional attribute with p = 0.5, and at least one
    attribute is dropped when every object is still mentioned."""
    full = complete_spec(scene, rng)
    keep = list(range(len(full.mentions)))
    if len(keep) > 1 and rng.random() < 0.5:
        keep = sorted(rng.sample(keep, rng.randint(1, len(keep) - 1)))
    optional = ("color", "pattern", "size")
    drops = {(k, a) for k in keep for a in optional if rng.random() < 0.5}
    if len(keep) == len(full.mentions) and not drops:
        drops = {(rng.choice(keep), rng.choice(optional))}
    mentions = tuple(Mention(**{a: (None if (k, a) in drops else v)
                                for a, v in full.mentions[k].attributes().items()}) for k in keep)
    r = full.relation
    relation = (Relation(keep.index(r.first), r.kind, keep.index(r.second))
                if r is not None and r.first in keep and r.second in keep else None)
    return CaptionSpec(mentions, relation)


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def mention_phrase(m: Mention, rng: random.Random) -> str:
    """``size pattern colour shape`` with the unmentioned attributes left out, e.g. ``large striped red square``;
    colours and shapes with a synonym use it with probability :data:`SYNONYM_RATE`."""
    color = m.color and (COLOR_SYNONYMS[m.color] if m.color in COLOR_SYNONYMS and rng.random() < SYNONYM_RATE
                         else m.color)
    shape = SHAPE_SYNONYMS[m.shape] if m.shape in SHAPE_SYNONYMS and rng.random() < SYNONYM_RATE else m.shape
    return " ".join(w for w in (m.size, m.pattern, color, shape) if w)


def render_caption(spec: CaptionSpec, rng: random.Random) -> str:
    """The caption text of a spec (the related pair first, then the other mentions joined with ``and``)."""
    order = list(range(len(spec.mentions)))
    r = spec.relation
    if r is not None:
        order = [r.first, r.second] + [k for k in order if k not in (r.first, r.second)]
    phrases = [_article(mention_phrase(spec.mentions[k], rng)) for k in order]
    head = f"{phrases[0]} {r.kind} {phrases[1]}" if r is not None else phrases[0]
    rest = phrases[2:] if r is not None else phrases[1:]
    text = " and ".join([head] + rest)
    if len(spec.mentions) == 1:
        return rng.choice(("{}", "a photo of {}", "{} on a plain background")).format(text)
    return text


# --------------------------------------------------------------------------------------------------
# Training pairs


def generate_pairs(n: int, noise_fraction: float, seed: int, prefix: str = "", zipf_exponent: float = 1.0,
                   noise_kinds: Sequence[str] = NOISE_KINDS) -> list[SyntheticPair]:
    """``n`` deterministic pairs; exactly ``round(noise_fraction * n)`` of them are noisy.

    The noisy pairs are split as evenly as possible between ``noise_kinds`` (earlier kinds get the extra
    ones): ``wrong`` takes the clean caption of another image that is not consistent with this scene,
    ``partial`` a strictly smaller description of this scene (:func:`partial_spec`).
    """
    if not 0.0 <= noise_fraction <= 1.0:
        raise ValueError(f"noise_fraction must be in [0, 1], got {noise_fraction}")
    if n < 2:
        raise ValueError(f"need at least 2 pairs, got {n}")
    unknown = set(noise_kinds) - set(NOISE_KINDS)
    if unknown or not noise_kinds:
        raise ValueError(f"noise_kinds must be a non-empty subset of {NOISE_KINDS}, got {list(noise_kinds)}")
    rng = random.Random(seed)
    scenes = [random_scene(rng, zipf_exponent) for _ in range(n)]
    clean_specs = [complete_spec(s, rng) for s in scenes]
    clean = [render_caption(s, rng) for s in clean_specs]
    noisy = rng.sample(range(n), round(noise_fraction * n))
    kinds: dict[int, str] = {}
    for j, kind in enumerate(noise_kinds):
        share = noisy[j * len(noisy) // len(noise_kinds):(j + 1) * len(noisy) // len(noise_kinds)]
        kinds.update(dict.fromkeys(share, kind))
    pairs = []
    for i, scene in enumerate(scenes):
        kind = kinds.get(i, "none")
        spec, caption = clean_specs[i], clean[i]
        if kind == "wrong":
            spec, caption = _wrong_caption(scene, clean_specs, clean, i, rng)
        elif kind == "partial":
            spec = partial_spec(scene, rng)
            caption = render_caption(spec, rng)
        pairs.append(SyntheticPair(key=f"{prefix}{i:06d}", scene=scene, caption=caption, caption_spec=spec,
                                   clean_caption=clean[i], noise=kind))
    return pairs


def _wrong_caption(scene: Scene, specs: Sequence[CaptionSpec], captions: Sequence[str], i: int,
                   rng: random.Random) -> tuple[CaptionSpec, str]:
    """The clean spec and caption of another image that is not consistent with ``scene`` (rejection sampling,
    then a scan of every other image in order)."""
    draws = (rng.randrange(len(specs)) for _ in range(64))
    for j in itertools.chain(draws, range(len(specs))):
        if j != i and not consistent(scene, specs[j]):
            return specs[j], captions[j]
    raise ValueError(f"every other caption is true of image {i}; cannot draw a wrong caption")
