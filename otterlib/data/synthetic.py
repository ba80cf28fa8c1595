"""Seeded synthetic captioned-shape data for the offline CPU profile.

Images hold one or two coloured shapes; captions are compositional ("a small red circle left of a
large blue square"). A chosen fraction of training pairs is *noisy* in the two ways web captions are:
half get the caption of another image (wrong), half mention only part of the image (partial). The
eval sets are written in the same on-disk formats as the real ones (Open Images class descriptions +
image-level labels; Tencent ML-Images dictionary + val list), so the real parsers run on them.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, ImageDraw

from otterlib.config import SyntheticConfig

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (240, 210, 30), "purple": (140, 50, 170), "orange": (245, 140, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: dict[str, float] = {"small": 0.13, "large": 0.24}
"""Shape radius as a fraction of the image side."""
COLOR_SYNONYMS: dict[str, str] = {"red": "scarlet", "green": "emerald", "blue": "azure",
                                  "yellow": "golden", "purple": "violet", "orange": "amber"}
SHAPE_GROUP: dict[str, str] = {"circle": "round shape", "square": "polygon", "triangle": "polygon",
                               "diamond": "polygon"}


@dataclass(frozen=True)
class ShapeSpec:
    """One shape of a scene; ``x``/``y`` are the centre in units of the image side."""

    shape: str
    color: str
    size: str
    x: float
    y: float

    def phrase(self, with_color: bool = True, with_size: bool = True) -> str:
        words = [self.size] * with_size + [self.color] * with_color + [self.shape]
        return " ".join(words)


@dataclass(frozen=True)
class SyntheticPair:
    """An image scene with its (possibly corrupted) caption."""

    key: str
    scene: tuple[ShapeSpec, ...]
    caption: str
    clean_caption: str
    noise: str
    """``none``, ``wrong`` (another image's caption) or ``partial`` (only part of the image)."""


def random_scene(rng: random.Random, n_shapes: int) -> tuple[ShapeSpec, ...]:
    """1 shape anywhere near the centre, or 2 shapes side by side (left, right)."""
    slots = [(0.5, 0.5)] if n_shapes == 1 else [(0.27, 0.5), (0.73, 0.5)]
    shapes = []
    for cx, cy in slots:
        shapes.append(ShapeSpec(shape=rng.choice(SHAPES), color=rng.choice(list(COLORS)),
                                size=rng.choice(list(SIZES)), x=cx + rng.uniform(-0.04, 0.04),
                                y=cy + rng.uniform(-0.12, 0.12)))
    return tuple(shapes)


def describe(scene: Sequence[ShapeSpec], rng: random.Random) -> str:
    """A compositional caption of the whole scene."""
    if len(scene) == 1:
        return rng.choice(["a {}", "a photo of a {}", "a {} on a plain background"]).format(scene[0].phrase())
    left, right = scene
    if rng.random() < 0.5:
        return f"a {left.phrase()} left of a {right.phrase()}"
    return f"a {right.phrase()} right of a {left.phrase()}"


def partial_caption(scene: Sequence[ShapeSpec], rng: random.Random) -> str:
    """A caption that mentions only part of the scene (one of two shapes, or a shape without its colour)."""
    if len(scene) == 2:
        return f"a {rng.choice(scene).phrase()}"
    return f"a {scene[0].phrase(with_color=False)}"


def generate_pairs(n: int, noise_fraction: float, seed: int, prefix: str = "") -> list[SyntheticPair]:
    """``n`` deterministic pairs; exactly ``round(noise_fraction * n)`` of them are noisy.

    Of the noisy pairs, half (rounded up) get a caption of another image that differs from their own, the
    rest a partial one.
    """
    if not 0.0 <= noise_fraction <= 1.0:
        raise ValueError(f"noise_fraction must be in [0, 1], got {noise_fraction}")
    if n < 2:
        raise ValueError(f"need at least 2 pairs, got {n}")
    rng = random.Random(seed)
    scenes = [random_scene(rng, rng.choice((1, 2))) for _ in range(n)]
    clean = [describe(s, rng) for s in scenes]
    n_noisy = round(noise_fraction * n)
    noisy = rng.sample(range(n), n_noisy)
    n_wrong = math.ceil(n_noisy / 2)
    kinds = {i: "wrong" for i in noisy[:n_wrong]} | {i: "partial" for i in noisy[n_wrong:]}
    pairs = []
    for i, (scene, cap) in enumerate(zip(scenes, clean)):
        kind = kinds.get(i, "none")
        if kind == "wrong":
            caption = _other_caption(clean, i, rng)
        elif kind == "partial":
            caption = partial_caption(scene, rng)
        else:
            caption = cap
        pairs.append(SyntheticPair(key=f"{prefix}{i:06d}", scene=scene, caption=caption, clean_caption=cap,
                                   noise=kind))
    return pairs


def _other_caption(captions: Sequence[str], i: int, rng: random.Random) -> str:
    """A caption of another image that differs from caption ``i`` (rejection sampling)."""
    if all(c == captions[i] for c in captions):
        raise ValueError("all captions are identical; cannot draw a wrong caption")
    while (c := captions[rng.randrange(len(captions))]) == captions[i]:
        pass
    return c


def render_scene(scene: Iterable[ShapeSpec], image_size: int, seed: int) -> Image.Image:
    """Draw the scene on a light, slightly textured background (RGB, ``image_size`` square pixels)."""
    rng = random.Random(seed)
    base = tuple(rng.randint(200, 250) for _ in range(3))
    img = Image.new("RGB", (image_size, image_size), base)
    draw = ImageDraw.Draw(img)
    for _ in range(6):  # faint texture so images are not trivially separable by background
        x0, y0 = rng.uniform(0, image_size), rng.uniform(0, image_size)
        r = rng.uniform(2, image_size / 6)
        shade = tuple(max(0, c - rng.randint(5, 20)) for c in base)
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=shade)
    for s in scene:
        cx, cy, r = s.x * image_size, s.y * image_size, SIZES[s.size] * image_size
        color = COLORS[s.color]
        if s.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        elif s.shape == "square":
            draw.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=color)
        elif s.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=color)
        elif s.shape == "diamond":
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=color)
        else:
            raise ValueError(f"unknown shape {s.shape!r}")
    return img


def write_image(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=92)


# --------------------------------------------------------------------------------------------------
# Training pairs served as "CC3M"


def make_synthetic_cc3m(root: Path, cfg: SyntheticConfig) -> dict[str, Path]:
    """Render the train and val splits under ``root/www/{train,val}/`` and write ``pairs.jsonl`` per split.

    Idempotent: images that exist are not redrawn. Returns ``{"train": jsonl, "val": jsonl, "www": dir}``.
    The CC3M-format TSVs need the server's URL and are written by :func:`write_cc3m_tsv`.
    """
    out = {}
    for split, n, offset in (("train", cfg.n_train, 0), ("val", cfg.n_val, 1)):
        pairs = generate_pairs(n, cfg.noise_fraction if split == "train" else 0.0, cfg.seed * 1000 + offset,
                               prefix=f"{split}-")
        jsonl = root / f"{split}_pairs.jsonl"
        for p in pairs:
            path = root / "www" / split / f"{p.key}.jpg"
            if not path.exists():
                write_image(render_scene(p.scene, cfg.image_size, seed=hash_key(p.key, cfg.seed)), path)
        _write_jsonl(jsonl, (asdict(p) for p in pairs))
        out[split] = jsonl
    out["www"] = root / "www"
    return out


def hash_key(key: str, seed: int) -> int:
    """A stable per-image seed (Python's ``hash`` is salted per process)."""
    return int.from_bytes(key.encode(), "little") % 2**31 + seed


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
# Eval sets in the official on-disk formats


def goi_class_names() -> list[str]:
    """Open Images-style display names: shapes, colour+shape, size+shape, unseen distractors and two
    repeated names (the real list repeats 12)."""
    names = [s.capitalize() for s in SHAPES]
    names += [f"{c.capitalize()} {s}" for c in COLORS for s in SHAPES]
    names += [f"{z.capitalize()} {s}" for z in SIZES for s in SHAPES]
    names += ["Hexagon", "Star", "Pink circle", "White square", "Black triangle", "Cloud", "Circle", "Red circle"]
    return names


def goi_labels_for(scene: Sequence[ShapeSpec], names: list[str]) -> set[str]:
    """The display names that are true of a scene (all ids of a repeated name are true)."""
    true = set()
    for s in scene:
        true |= {s.shape.capitalize(), f"{s.color.capitalize()} {s.shape}", f"{s.size.capitalize()} {s.shape}"}
    return {n for n in names if n in true}


def make_synthetic_goi(dest: Path, n_images: int, image_size: int, seed: int) -> dict[str, Path]:
    """Write an Open Images V6-style test set: ``oidv6-class-descriptions.csv`` (``LabelName,DisplayName``
    with header), ``test-annotations-human-imagelabels.csv`` (``ImageID,Source,LabelName,Confidence``,
    positives and verified negatives) and ``images/<ImageID>.jpg``."""
    rng = random.Random(seed)
    names = goi_class_names()
    mids = [f"/m/0syn{i:03x}" for i in range(len(names))]
    class_csv = dest / "oidv6-class-descriptions.csv"
    labels_csv = dest / "test-annotations-human-imagelabels.csv"
    images = dest / "images"
    rows = ["ImageID,Source,LabelName,Confidence"]
    for i in range(n_images):
        image_id = f"{rng.getrandbits(64):016x}"
        scene = random_scene(rng, rng.choice((1, 2)))
        true = goi_labels_for(scene, names)
        for mid, name in zip(mids, names):
            if name in true:
                rows.append(f"{image_id},verification,{mid},1")
        negatives = [m for m, n in zip(mids, names) if n not in true]
        rows.append(f"{image_id},verification,{rng.choice(negatives)},0")
        path = images / f"{image_id}.jpg"
        if not path.exists():
            write_image(render_scene(scene, image_size, seed=seed + i), path)
    dest.mkdir(parents=True, exist_ok=True)
    class_csv.write_text("LabelName,DisplayName\n" + "".join(f"{m},{n}\n" for m, n in zip(mids, names)))
    labels_csv.write_text("\n".join(rows) + "\n")
    return {"class_descriptions": class_csv, "image_labels": labels_csv, "images_dir": images}


def in10k_hierarchy() -> list[tuple[str, int, str]]:
    """Tencent-style classes ``(wnid, parent_index, "name, synonym")`` in index order: WordNet-like roots,
    shape groups, shapes, then colour+shape leaves with a synonym each."""
    rows: list[tuple[str, int, str]] = [("n90000000", -1, "thing"), ("n90000001", -1, "matter"),
                                        ("n90000002", -1, "object, physical object"),
                                        ("n90000003", 2, "shape, form")]
    group_idx = {}
    for g in ("round shape", "polygon"):
        group_idx[g] = len(rows)
        rows.append((f"n9{len(rows):07d}", 3, g))
    shape_idx = {}
    for s in SHAPES:
        shape_idx[s] = len(rows)
        rows.append((f"n9{len(rows):07d}", group_idx[SHAPE_GROUP[s]], s))
    for c in COLORS:
        for s in SHAPES:
            rows.append((f"n9{len(rows):07d}", shape_idx[s], f"{c} {s}, {COLOR_SYNONYMS[c]} {s}"))
    return rows


def make_synthetic_in10k(dest: Path, n_images: int, image_size: int, seed: int) -> dict[str, Path]:
    """Write a Tencent ML-Images-style set: ``dictionary_and_semantic_hierarchy.txt`` (header, then
    ``index\\twnid\\tparent\\tnames``; row 0 space-separated like the real file), ``val_image_id_from_imagenet.txt``
    (``wnid/wnid_N.JPEG\\tleaf\\tancestors...``) and ``images/<wnid>/<file>.JPEG`` (ImageNet-21k layout).
    Each image shows one object (the leaf) plus, sometimes, a small unlabelled distractor, as ImageNet does."""
    rng = random.Random(seed)
    rows = in10k_hierarchy()
    parents = [p for _, p, _ in rows]
    leaf_ids = [i for i, (_, _, n) in enumerate(rows) if "," in n and i > 3]
    dictionary = dest / "dictionary_and_semantic_hierarchy.txt"
    val_list = dest / "val_image_id_from_imagenet.txt"
    images = dest / "images"
    lines = []
    for i in range(n_images):
        leaf = rng.choice(leaf_ids)
        wnid, _, names = rows[leaf]
        color, shape = names.split(",")[0].split()
        main = ShapeSpec(shape, color, "large", 0.5 + rng.uniform(-0.08, 0.08), 0.5 + rng.uniform(-0.08, 0.08))
        scene: tuple[ShapeSpec, ...] = (main,)
        ancestors, node = [], parents[leaf]
        while node != -1:
            ancestors.append(node)
            node = parents[node]
        fname = f"{wnid}/{wnid}_{i}.JPEG"
        lines.append("\t".join([fname, str(leaf)] + [str(a) for a in ancestors]))
        path = images / fname
        if not path.exists():
            write_image(render_scene(scene, image_size, seed=seed + i), path)
    dest.mkdir(parents=True, exist_ok=True)
    header = "category_index\tcategory_id\tindex_of_parent_category\tcategory name\n"
    body = [f"0\t{rows[0][0]}\t{rows[0][1]}  {rows[0][2]}"]  # the real file's malformed row 0
    body += [f"{i}\t{w}\t{p}\t{n}" for i, (w, p, n) in enumerate(rows) if i > 0]
    dictionary.write_text(header + "\n".join(body) + "\n")
    val_list.write_text("\n".join(lines) + "\n")
    return {"dictionary": dictionary, "val_list": val_list, "images_root": images}
