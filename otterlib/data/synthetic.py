"""Writers of the synthetic world (:mod:`otterlib.data.world`) for the offline CPU profile.

* **Rendering**: every object is drawn as a mask of its shape (12 shapes), filled with its colour
  ``solid``, with diagonal stripes inside its outline (``striped``) or as an outline only (``hollow``); a
  ``large`` object has radius 0.18, a ``small`` one 0.11 of the image side; on a light, faintly tinted and
  textured background.
* **Training pairs served as "CC3M"**: rendered images plus a headerless ``caption<TAB>url`` TSV.
* **Eval sets in the official on-disk formats**, drawn from the same world, so the real parsers run on them:
  a GOI-like set (Open Images class descriptions + human-verified image-level labels; flat display names
  ``Red square``, ``Striped red square``, ``Large red square``; scenes of 1-3 objects drawn like the training
  scenes) and an IN10K-like set (Tencent dictionary + val list; a tree ``red square`` → ``striped red square``
  whose ancestors are labels, as Tencent's; one object per image and balanced leaves, as ImageNet's
  validation set).
"""
from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from otterlib.config import SyntheticConfig
from otterlib.data.world import (ATTRIBUTES, COLOR_SYNONYMS, JITTER, SHAPE_SYNONYMS, Scene, SceneObject,
                                 SyntheticPair, generate_pairs, random_scene)

WORLD_VERSION: int = 7
"""Bumped whenever drawing or sampling changes, so stale rendered images are never reused."""

COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "blue": (35, 75, 215), "green": (30, 150, 50), "yellow": (235, 200, 20),
    "purple": (130, 45, 170), "orange": (240, 130, 20), "black": (25, 25, 25), "cyan": (0, 185, 205)}
RADIUS: dict[str, float] = {"large": 0.18, "small": 0.11}
"""Object radius as a fraction of the image side."""
COLOR_JITTER: int = 12
"""Each object's colour channels move by up to this much (0-255 scale)."""

Point = tuple[float, float]


def _regular(n: int, cx: float, cy: float, r: float, turn: float = 0.0) -> list[Point]:
    """Vertices of a regular n-gon of circumradius ``r``, the first one straight up (rotated by ``turn``)."""
    return [(cx + r * math.sin(2 * math.pi * (i + turn) / n), cy - r * math.cos(2 * math.pi * (i + turn) / n))
            for i in range(n)]


def _star(cx: float, cy: float, r: float) -> list[Point]:
    outer, inner = _regular(5, cx, cy, r), _regular(5, cx, cy, 0.42 * r, turn=0.5)
    return [p for pair in zip(outer, inner) for p in pair]


def _box(cx: float, cy: float, half_w: float, half_h: float) -> list[float]:
    return [cx - half_w, cy - half_h, cx + half_w, cy + half_h]


def _draw_heart(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    for sx in (-1, 1):
        d.ellipse(_box(cx + sx * 0.45 * r, cy - 0.35 * r, 0.5 * r, 0.5 * r), fill=255)
    d.polygon([(cx - 0.93 * r, cy - 0.2 * r), (cx + 0.93 * r, cy - 0.2 * r), (cx, cy + r)], fill=255)


def _draw_crescent(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.ellipse(_box(cx, cy, r, r), fill=255)
    d.ellipse(_box(cx + 0.5 * r, cy - 0.15 * r, 0.8 * r, 0.8 * r), fill=0)


def _draw_teardrop(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.ellipse(_box(cx, cy + 0.3 * r, 0.65 * r, 0.65 * r), fill=255)
    d.polygon([(cx, cy - r), (cx - 0.6 * r, cy + 0.1 * r), (cx + 0.6 * r, cy + 0.1 * r)], fill=255)


def _draw_cross(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.rectangle(_box(cx, cy, r, 0.3 * r), fill=255)
    d.rectangle(_box(cx, cy, 0.3 * r, r), fill=255)


def _polygon(vertices: Callable[[float, float, float], list[Point]]) -> Callable[..., None]:
    return lambda d, cx, cy, r: d.polygon(vertices(cx, cy, r), fill=255)


SHAPE_DRAWERS: dict[str, Callable[[ImageDraw.ImageDraw, float, float, float], None]] = {
    "circle": lambda d, cx, cy, r: d.ellipse(_box(cx, cy, r, r), fill=255),
    "square": lambda d, cx, cy, r: d.rectangle(_box(cx, cy, 0.82 * r, 0.82 * r), fill=255),
    "triangle": _polygon(lambda cx, cy, r: [(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)]),
    "star": _polygon(_star),
    "diamond": _polygon(lambda cx, cy, r: [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)]),
    "heart": _draw_heart,
    "cross": _draw_cross,
    "crescent": _draw_crescent,
    "arrow": _polygon(lambda cx, cy, r: [(cx - r, cy - 0.28 * r), (cx + 0.1 * r, cy - 0.28 * r),
                                         (cx + 0.1 * r, cy - 0.75 * r), (cx + r, cy), (cx + 0.1 * r, cy + 0.75 * r),
                                         (cx + 0.1 * r, cy + 0.28 * r), (cx - r, cy + 0.28 * r)]),
    "rectangle": lambda d, cx, cy, r: d.rectangle(_box(cx, cy, r, 0.5 * r), fill=255),
    "semicircle": lambda d, cx, cy, r: d.pieslice(_box(cx, cy + 0.45 * r, r, r), 180, 360, fill=255),
    "teardrop": _draw_teardrop,
}


def object_mask(obj: SceneObject, image_size: int) -> np.ndarray:
    """(image_size, image_size) bool mask of the object's shape."""
    mask = Image.new("L", (image_size, image_size), 0)
    r = RADIUS[obj.size] * image_size
    SHAPE_DRAWERS[obj.shape](ImageDraw.Draw(mask), obj.x * image_size, obj.y * image_size, r)
    return np.asarray(mask) > 127


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels of ``mask`` within ``width`` pixels of its border."""
    eroded = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(2 * width + 1))
    return mask & ~(np.asarray(eroded) > 127)


def render_scene(scene: Iterable[SceneObject], image_size: int, seed: int) -> Image.Image:
    """Draw the scene (RGB, ``image_size`` square pixels) on a light, faintly textured background; ``seed``
    fixes the background and the colour jitter."""
    rng = random.Random(seed)
    base = tuple(rng.randint(200, 250) for _ in range(3))
    img = Image.new("RGB", (image_size, image_size), base)
    draw = ImageDraw.Draw(img)
    for _ in range(6):  # faint texture so images are not trivially separable by background
        x0, y0 = rng.uniform(0, image_size), rng.uniform(0, image_size)
        r = rng.uniform(2, image_size / 6)
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=tuple(c - rng.randint(5, 20) for c in base))
    pixels = np.array(img)
    line = max(1, round(image_size / 32))
    yy, xx = np.mgrid[:image_size, :image_size]
    stripes = ((xx + yy) // (2 * line)) % 2 == 0
    for obj in scene:
        mask = object_mask(obj, image_size)
        if obj.pattern == "striped":
            mask = (mask & stripes) | _outline(mask, line)
        elif obj.pattern == "hollow":
            mask = _outline(mask, line)
        elif obj.pattern != "solid":
            raise ValueError(f"unknown pattern {obj.pattern!r}")
        color = [min(255, max(0, c + rng.randint(-COLOR_JITTER, COLOR_JITTER))) for c in COLOR_RGB[obj.color]]
        pixels[mask] = color
    return Image.fromarray(pixels)


def write_image(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=92)


def image_seed(key: str, seed: int) -> int:
    """A stable per-image seed (CRC-32 of the key; Python's ``hash`` is salted per process)."""
    return zlib.crc32(key.encode()) + seed


def _reset_if_stale(folder: Path, fingerprint: dict, generated: Sequence[str]) -> None:
    """Delete the ``generated`` sub-folders of ``folder`` unless its ``world.json`` equals ``fingerprint``
    (world version, image size, seed, skew), then record the fingerprint: images drawn for another world are
    never reused."""
    stamp = folder / "world.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == fingerprint:
        return
    for name in generated:
        shutil.rmtree(folder / name, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(fingerprint))


def _fingerprint(image_size: int, seed: int, zipf_exponent: float) -> dict:
    return {"world_version": WORLD_VERSION, "image_size": image_size, "seed": seed, "zipf_exponent": zipf_exponent}


# --------------------------------------------------------------------------------------------------
# Training pairs served as "CC3M"

SPLIT_SEED_OFFSET: dict[str, int] = {"train": 0, "val": 1}


def split_pairs(cfg: SyntheticConfig, split: str) -> list[SyntheticPair]:
    """The pairs of a split exactly as :func:`make_synthetic_cc3m` writes them (keys ``<split>-NNNNNN``;
    the validation split is clean)."""
    n = {"train": cfg.n_train, "val": cfg.n_val}[split]
    noise = cfg.noise_fraction if split == "train" else 0.0
    return generate_pairs(n, noise, cfg.seed * 1000 + SPLIT_SEED_OFFSET[split], prefix=f"{split}-",
                          zipf_exponent=cfg.zipf_exponent, noise_kinds=cfg.noise_kinds)


def make_synthetic_cc3m(root: Path, cfg: SyntheticConfig) -> dict[str, Path]:
    """Render the train and val splits under ``root/www/{train,val}/`` and write ``<split>_pairs.jsonl``.

    Idempotent: images that exist are not redrawn (unless ``www/world.json`` shows they belong to another
    world version, image size, seed or skew). Returns ``{"train": jsonl, "val": jsonl, "www": dir}``. The
    CC3M-format TSVs need the server's URL and are written by :func:`write_cc3m_tsv`.
    """
    www = root / "www"
    _reset_if_stale(www, _fingerprint(cfg.image_size, cfg.seed, cfg.zipf_exponent), tuple(SPLIT_SEED_OFFSET))
    out = {}
    for split in SPLIT_SEED_OFFSET:
        pairs = split_pairs(cfg, split)
        for p in pairs:
            path = www / split / f"{p.key}.jpg"
            if not path.exists():
                write_image(render_scene(p.scene, cfg.image_size, seed=image_seed(p.key, cfg.seed)), path)
        out[split] = root / f"{split}_pairs.jsonl"
        _write_jsonl(out[split], (asdict(p) for p in pairs))
    out["www"] = www
    return out


def read_pairs(jsonl: Path) -> list[dict]:
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]


def write_cc3m_tsv(pairs_jsonl: Path, base_url: str, split: str, tsv_path: Path, dead_fraction: float = 0.01,
                   seed: int = 0) -> dict[str, int]:
    """Write a headerless ``caption<TAB>url`` TSV exactly like Google's ``Train_GCC-training.tsv``.

    ``dead_fraction`` of the rows (deterministic) point at missing files, so the download stage sees
    real 404s, as with CC3M's rotting URLs. Returns ``{"rows": n, "dead": k}``.
    """
    pairs = read_pairs(pairs_jsonl)
    rng = random.Random(seed)
    dead = set(rng.sample(range(len(pairs)), round(dead_fraction * len(pairs))))
    lines = []
    for i, p in enumerate(pairs):
        name = f"{p['key']}.jpg" if i not in dead else f"missing-{p['key']}.jpg"
        caption = p["caption"].replace("\t", " ").replace("\n", " ")
        lines.append(f"{caption}\t{base_url.rstrip('/')}/{split}/{name}")
    tsv_path.parent.mkdir(parents=True, exist_ok=True)
    tsv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"rows": len(pairs), "dead": len(dead)}


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------
# GOI-like eval set (Open Images V6 formats)

GOI_CLASS_KINDS: tuple[tuple[str, ...], ...] = (("color", "shape"), ("pattern", "color", "shape"),
                                                ("size", "color", "shape"))
"""The attribute combinations that name a GOI-like class, e.g. ``Red square``, ``Striped red square``,
``Large red square`` (12·8 + 12·8·3 + 12·8·2 = 576 classes). Every class names a colour and a shape: coarser
classes (``Square``, ``Large square``) would let a constant guess hit most multi-object images."""
GOI_REPEATED: tuple[str, ...] = ("Red circle", "Striped blue square")
"""Names listed twice under different MIDs, as the real list repeats 12 names; both ids of a true name are
labels."""


def _display_name(words: Sequence[str]) -> str:
    text = " ".join(words)
    return text[0].upper() + text[1:]


def goi_class_names() -> list[str]:
    """The GOI-like display names in class-id order (:data:`GOI_CLASS_KINDS`, then :data:`GOI_REPEATED`)."""
    names = [_display_name(combo) for kind in GOI_CLASS_KINDS
             for combo in itertools.product(*(ATTRIBUTES[a] for a in kind))]
    return names + list(GOI_REPEATED)


def goi_labels_for(scene: Scene) -> set[str]:
    """The display names that are true of a scene: every class kind of every object."""
    return {_display_name([getattr(obj, a) for a in kind]) for obj in scene for kind in GOI_CLASS_KINDS}


def make_synthetic_goi(dest: Path, n_images: int, image_size: int, seed: int,
                       zipf_exponent: float = 1.0) -> dict[str, Path]:
    """Write an Open Images V6-style test set of world scenes (1-3 objects): ``oidv6-class-descriptions.csv``
    (``LabelName,DisplayName`` with header), ``test-annotations-human-imagelabels.csv``
    (``ImageID,Source,LabelName,Confidence``: the positives and one verified negative per image) and
    ``images/<ImageID>.jpg``."""
    _reset_if_stale(dest, _fingerprint(image_size, seed, zipf_exponent), ("images",))
    rng = random.Random(seed)
    names = goi_class_names()
    mids = [f"/m/0syn{i:04x}" for i in range(len(names))]
    rows = ["ImageID,Source,LabelName,Confidence"]
    for i in range(n_images):
        image_id = f"{rng.getrandbits(64):016x}"
        scene = random_scene(rng, zipf_exponent)
        true = goi_labels_for(scene)
        rows += [f"{image_id},verification,{mid},1" for mid, name in zip(mids, names) if name in true]
        negatives = [m for m, n in zip(mids, names) if n not in true]
        rows.append(f"{image_id},verification,{rng.choice(negatives)},0")
        path = dest / "images" / f"{image_id}.jpg"
        if not path.exists():
            write_image(render_scene(scene, image_size, seed=seed + i), path)
    class_csv = dest / "oidv6-class-descriptions.csv"
    labels_csv = dest / "test-annotations-human-imagelabels.csv"
    class_csv.write_text("LabelName,DisplayName\n" + "".join(f"{m},{n}\n" for m, n in zip(mids, names)))
    labels_csv.write_text("\n".join(rows) + "\n")
    return {"class_descriptions": class_csv, "image_labels": labels_csv, "images_dir": dest / "images"}


# --------------------------------------------------------------------------------------------------
# IN10K-like eval set (Tencent ML-Images formats)

IN10K_LEVELS: tuple[tuple[str, ...], ...] = (("color", "shape"), ("pattern", "color", "shape"))
"""The tree, root to leaf: ``red square`` → ``striped red square`` (96 + 288 = 384 classes); an image's labels
are its leaf and the leaf's ancestor. Size is not labelled (a nuisance, as scale in ImageNet). The 96 roots
split the images finely enough that no constant guess covers many: a root per shape alone would put 10 of the
12 shapes in a constant top 10. A size level between them (``large red square``) lowered a trained smoke
model's FH@1 from 15 % to 9 % and left the trivial baselines where they were."""


def _synonyms(obj: dict[str, str]) -> list[str]:
    """``"striped red diamond"`` and its variants with the colour or the shape synonym."""
    words = [obj.get(a) for a in ("size", "pattern", "color", "shape")]
    variants = [words]
    if obj.get("color") in COLOR_SYNONYMS:
        variants.append(words[:2] + [COLOR_SYNONYMS[obj["color"]], words[3]])
    if obj["shape"] in SHAPE_SYNONYMS:
        variants.append(words[:3] + [SHAPE_SYNONYMS[obj["shape"]]])
    return [" ".join(w for w in v if w) for v in variants]


def in10k_hierarchy() -> list[tuple[str, int, list[str]]]:
    """Tencent-style classes ``(wnid, parent index, synonyms)`` in index order, level by level
    (:data:`IN10K_LEVELS`)."""
    rows: list[tuple[str, int, list[str]]] = []
    index: dict[tuple[str, ...], int] = {}
    for level, kind in enumerate(IN10K_LEVELS):
        for combo in itertools.product(*(ATTRIBUTES[a] for a in kind)):
            values = dict(zip(kind, combo))
            parent = index[tuple(values[a] for a in IN10K_LEVELS[level - 1])] if level else -1
            index[combo] = len(rows)
            rows.append((f"n9{len(rows):07d}", parent, _synonyms(values)))
    return rows


def in10k_leaf(obj: SceneObject) -> int:
    """The class index of an object's leaf (the attributes of the last level of :data:`IN10K_LEVELS`)."""
    n_upper = sum(math.prod(len(ATTRIBUTES[a]) for a in kind) for kind in IN10K_LEVELS[:-1])
    position = 0
    for a in IN10K_LEVELS[-1]:
        position = position * len(ATTRIBUTES[a]) + ATTRIBUTES[a].index(getattr(obj, a))
    return n_upper + position


def balanced_leaf_objects(n: int, rng: random.Random) -> list[dict[str, str]]:
    """Attributes of ``n`` objects whose leaves are balanced, as ImageNet's validation images are: every leaf
    once in a random order, then again, so leaf counts differ by at most one. Attributes that no level
    names (the size) are drawn uniformly."""
    leaves = [dict(zip(IN10K_LEVELS[-1], combo))
              for combo in itertools.product(*(ATTRIBUTES[a] for a in IN10K_LEVELS[-1]))]
    out: list[dict[str, str]] = []
    while len(out) < n:
        out += rng.sample(leaves, len(leaves))
    unlabelled = [a for a in ATTRIBUTES if a not in IN10K_LEVELS[-1]]
    return [leaf | {a: rng.choice(ATTRIBUTES[a]) for a in unlabelled} for leaf in out[:n]]


def make_synthetic_in10k(dest: Path, n_images: int, image_size: int, seed: int) -> dict[str, Path]:
    """Write a Tencent ML-Images-style set: ``dictionary_and_semantic_hierarchy.txt`` (header, then
    ``index\\twnid\\tparent\\tnames``; row 0 space-separated like the real file),
    ``val_image_id_from_imagenet.txt`` (``wnid/wnid_N.JPEG\\tleaf\\tancestors...``) and
    ``images/<wnid>/<file>.JPEG`` (ImageNet-21k layout). Each image shows one object near the centre; the
    leaves are balanced (:func:`balanced_leaf_objects`)."""
    _reset_if_stale(dest, _fingerprint(image_size, seed, zipf_exponent=0.0), ("images",))
    rng = random.Random(seed)
    rows = in10k_hierarchy()
    lines = []
    for i, attributes in enumerate(balanced_leaf_objects(n_images, rng)):
        centre = [0.5 + rng.uniform(-JITTER, JITTER) for _ in range(2)]
        scene = (SceneObject(x=centre[0], y=centre[1], **attributes),)
        leaf = in10k_leaf(scene[0])
        chain = [leaf]
        while rows[chain[-1]][1] != -1:
            chain.append(rows[chain[-1]][1])
        wnid = rows[leaf][0]
        fname = f"{wnid}/{wnid}_{i}.JPEG"
        lines.append("\t".join([fname] + [str(c) for c in chain]))
        path = dest / "images" / fname
        if not path.exists():
            write_image(render_scene(scene, image_size, seed=seed + i), path)
    header = "category_index\tcategory_id\tindex_of_parent_category\tcategory name\n"
    body = [f"0\t{rows[0][0]}\t{rows[0][1]}  {', '.join(rows[0][2])}"]  # the real file's malformed row 0
    body += [f"{i}\t{w}\t{p}\t{', '.join(n)}" for i, (w, p, n) in enumerate(rows) if i > 0]
    dictionary = dest / "dictionary_and_semantic_hierarchy.txt"
    val_list = dest / "val_image_id_from_imagenet.txt"
    dictionary.write_text(header + "\n".join(body) + "\n")
    val_list.write_text("\n".join(lines) + "\n")
    return {"dictionary": dictionary, "val_list": val_list, "images_root": dest / "images"}
