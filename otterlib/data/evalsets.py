"""The two zero-shot multi-label eval sets of the paper, parsed from their official files.

* **Google Open Images V6 test (GOI)**: the class-description CSV (``LabelName,DisplayName``; the V6 file
  ``oidv6-class-descriptions.csv`` has a header row, the older ``class-descriptions.csv`` has none) and the
  human-verified image-level labels (``ImageID,Source,LabelName,Confidence``; positives are ``Confidence`` 1).
  Class id = row order of the class-description file, which is the order of the paper's ``goi_classes.txt``
  (19,994 rows, 12 names repeated; the paper says 19,958). The OTTER-format pair ``goi_classes.txt`` +
  ``goi_images.txt`` (the paper's own per-image labels) is read by :func:`load_goi_otter_format`; without
  ``goi_images.txt`` :func:`load_goi` rebuilds the labels under an explicit rule for repeated names.
* **Multi-label ImageNet-10K (Tencent ML-Images val)**: ``dictionary_and_semantic_hierarchy.txt`` (11,166
  classes, ``index\\twnid\\tparent\\tname, synonym, ...``) and ``val_image_id_from_imagenet.txt``
  (``wnid/file.JPEG\\tleaf\\tancestors...``, 50,000 rows). The copy shipped with OTTER has a malformed row 0
  (``0\\tn00002452\\t-1  thing``); it is parsed as parent -1, name ``thing`` and recorded in ``info``. The
  official parser (the last tab field is the name) calls it ``-1  thing``: ``bug_compatible=True`` keeps that
  name, so the official caption ``a photo of -1  thing.`` can be reproduced to the letter.

:func:`clean_variant` builds the ``clean`` protocol (duplicate names merged, leaf-only labels) from the
``paper`` one. :func:`fetch_metadata` downloads the official metadata files named in
``data/manifests/eval_metadata.json`` and checks their sha256.
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import logging
import re
import urllib.error
import urllib.request
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import to_tensor

from otterlib.env import REPO_ROOT
from otterlib.templates import join_synonyms

logger = logging.getLogger(__name__)

MANIFEST_PATH: Path = REPO_ROOT / "data" / "manifests" / "eval_metadata.json"
"""Official URLs and sha256 of the eval-set metadata files."""

GOI_V6_HEADER: tuple[str, str] = ("LabelName", "DisplayName")
TENCENT_HEADER_PREFIX: str = "category_index"

Transform = Callable[[Image.Image], torch.Tensor]
EvalItem = tuple[torch.Tensor, list[int]]

IMAGE_ALIGNED_INFO: tuple[str, ...] = ("leaf_ids",)
"""``info`` entries holding one value per image (aligned with ``image_paths``): they are checked for length and
follow every image selection (:meth:`MultiLabelEvalSet.subset`)."""


# --------------------------------------------------------------------------------------------------
# The eval-set container


class EvalImageDataset(Dataset):
    """Images of an eval set with their label ids.

    ``__getitem__`` returns ``(image_tensor, label_ids)``, or ``None`` when the image file is missing,
    truncated or not an image: such images are **skipped, never a crash**. Each skip is logged at WARNING
    level with its path; :func:`collate_padded` drops the ``None`` entries and, with ``return_kept=True``,
    reports which positions of the batch survived, which is how :func:`otterlib.evaluate.evaluate_zero_shot`
    counts them (``n_skipped``) and excludes them from the metrics. Counting happens in the collate function
    of the main process, so it is exact with any number of DataLoader workers.
    """

    def __init__(self, image_paths: Sequence[Path], labels: Sequence[Sequence[int]],
                 transform: Transform | None = None) -> None:
        self.image_paths = list(image_paths)
        self.labels = [list(row) for row in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> EvalItem | None:
        path = self.image_paths[index]
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")  # forces the full decode, so truncated files fail here
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            logger.warning("skipping unreadable eval image %s: %s", path, err)
            return None
        tensor = self.transform(rgb) if self.transform is not None else to_tensor(rgb)
        return tensor, self.labels[index]


def collate_padded(batch: Sequence[EvalItem | None], return_kept: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack images and pad label lists with ``-1`` (a value no class id matches).

    Args:
        batch: items of :class:`EvalImageDataset`; ``None`` (unreadable image) entries are dropped.
        return_kept: also return a BoolTensor ``(len(batch),)`` that is True where an item was kept.

    Returns:
        ``images`` (B, 3, H, W) float and ``labels`` (B, L) long, ``L`` = longest label list of the batch
        (``(0, 3, 0, 0)`` and ``(0, 0)`` when every item was dropped), plus ``kept`` if asked.
    """
    kept = torch.tensor([item is not None for item in batch], dtype=torch.bool)
    items = [item for item in batch if item is not None]
    if items:
        images = torch.stack([img for img, _ in items])
        width = max(len(lab) for _, lab in items)
        labels = torch.full((len(items), width), -1, dtype=torch.long)
        for row, (_, lab) in enumerate(items):
            labels[row, :len(lab)] = torch.as_tensor(lab, dtype=torch.long)
    else:
        images = torch.empty(0, 3, 0, 0)
        labels = torch.empty(0, 0, dtype=torch.long)
    return (images, labels, kept) if return_kept else (images, labels)


@dataclass
class MultiLabelEvalSet:
    """A multi-label zero-shot eval set.

    Attributes:
        name: short name (``goi``, ``in10k``, ...).
        class_names: ``class_names[c]`` is the list of synonyms of class id ``c`` (GOI: one display name;
            Tencent: the comma-separated WordNet synonyms, split and stripped).
        image_paths: where each image is expected on disk (it may be missing: see :meth:`summary`).
        labels: ``labels[i]`` are the class ids of image ``i`` (ids in ``[0, n_classes)``).
        image_ids: a unique id per image (GOI: ``ImageID``; Tencent: ``wnid/file.JPEG``).
        info: provenance and parsing facts (row counts, quirks fixed, hierarchy for Tencent, ...).
    """

    name: str
    class_names: list[list[str]]
    image_paths: list[Path]
    labels: list[list[int]]
    image_ids: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.image_paths)
        if len(self.labels) != n or len(self.image_ids) != n:
            raise ValueError(f"eval set {self.name!r}: {n} image paths, {len(self.labels)} label rows and "
                             f"{len(self.image_ids)} image ids; they must be equally long")
        if not self.class_names:
            raise ValueError(f"eval set {self.name!r} has no classes")
        for c, synonyms in enumerate(self.class_names):
            if isinstance(synonyms, str) or not synonyms or not all(isinstance(s, str) and s.strip() for s in synonyms):
                raise ValueError(f"eval set {self.name!r}: class {c} must be a non-empty list of non-empty "
                                 f"names, got {synonyms!r}")
        for key in IMAGE_ALIGNED_INFO:
            if key in self.info and len(self.info[key]) != n:
                raise ValueError(f"eval set {self.name!r}: info[{key!r}] has {len(self.info[key])} entries for {n} "
                                 f"images; it must hold one per image")
        flat = list(itertools.chain.from_iterable(self.labels))
        if flat and (min(flat) < 0 or max(flat) >= len(self.class_names)):
            raise ValueError(f"eval set {self.name!r}: label ids must lie in [0, {len(self.class_names) - 1}], "
                             f"found {min(flat)}..{max(flat)}")

    @property
    def n_images(self) -> int:
        return len(self.image_paths)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def caption_names(self) -> list[str]:
        """Each class's synonyms joined with ``",or "``: the name that goes into the templates."""
        return [join_synonyms(s) for s in self.class_names]

    def missing_images(self) -> list[int]:
        """Indices of images whose file does not exist (one ``stat`` per image)."""
        return [i for i, p in enumerate(self.image_paths) if not p.is_file()]

    def subset(self, keep: Sequence[int], **info: Any) -> MultiLabelEvalSet:
        """The images at positions ``keep`` (in that order) with every per-image field, ``info`` entries of
        :data:`IMAGE_ALIGNED_INFO` included; the keyword arguments are added to ``info``."""
        merged = dict(self.info, **info)
        for key in IMAGE_ALIGNED_INFO:
            if key in merged:
                merged[key] = [merged[key][i] for i in keep]
        return MultiLabelEvalSet(self.name, self.class_names, [self.image_paths[i] for i in keep],
                                 [self.labels[i] for i in keep], [self.image_ids[i] for i in keep], merged)

    def with_existing_images(self) -> MultiLabelEvalSet:
        """The same set restricted to images present on disk (``info['n_dropped_missing']`` records how many
        were dropped)."""
        missing = set(self.missing_images())
        return self.subset([i for i in range(self.n_images) if i not in missing], n_dropped_missing=len(missing))

    def summary(self) -> dict[str, Any]:
        """Counts describing the set (it stats every image file to count the missing ones)."""
        sizes = [len(row) for row in self.labels]
        names = self.caption_names()
        used = set(itertools.chain.from_iterable(self.labels))
        n_missing = len(self.missing_images())
        return {
            "name": self.name,
            "variant": self.info.get("variant", "paper"),
            "n_images": self.n_images,
            "n_classes": self.n_classes,
            "n_unique_names": len(set(names)),
            "n_duplicate_name_ids": self.n_classes - len(set(names)),
            "n_classes_with_positives": len(used),
            "label_cardinality_mean": sum(sizes) / len(sizes) if sizes else 0.0,
            "label_cardinality_min": min(sizes, default=0),
            "label_cardinality_max": max(sizes, default=0),
            "n_images_without_labels": sum(1 for s in sizes if s == 0),
            "n_images_found": self.n_images - n_missing,
            "n_missing_images": n_missing,
            "notes": list(self.info.get("notes", [])),
        }

    def torch_dataset(self, transform: Transform | None = None) -> EvalImageDataset:
        """A Dataset yielding ``(transform(image), label_ids)``; unreadable images yield ``None`` (see
        :class:`EvalImageDataset`). Without ``transform`` images become float tensors in [0, 1]."""
        return EvalImageDataset(self.image_paths, self.labels, transform)


# --------------------------------------------------------------------------------------------------
# Google Open Images


def read_goi_class_descriptions(path: str | Path) -> tuple[list[str], list[str], bool]:
    """Parse an Open Images class-description CSV.

    Returns ``(mids, display_names, had_header)`` in file order. Both the V6 file with its
    ``LabelName,DisplayName`` header and the older header-less ``class-descriptions.csv`` are accepted.
    """
    path = _existing(path, "Open Images class-description CSV (fetch_metadata('goi_class_descriptions_v6', ...))")
    mids: list[str] = []
    names: list[str] = []
    had_header = False
    with path.open(newline="", encoding="utf-8-sig") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            if line_no == 1 and tuple(c.strip() for c in row) == GOI_V6_HEADER:
                had_header = True
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise ValueError(f"{path}:{line_no}: expected 'LabelName,DisplayName', got {row!r}")
            mids.append(row[0].strip())
            names.append(row[1].strip())
    dupes = [m for m, n in Counter(mids).items() if n > 1]
    if dupes:
        raise ValueError(f"{path}: repeated LabelName(s) {dupes[:5]}; this is not an Open Images class file")
    if not mids:
        raise ValueError(f"{path}: no classes found")
    return mids, names, had_header


def read_goi_class_list(path: str | Path) -> list[str]:
    """Parse an OTTER-style ``goi_classes.txt`` (one display name per line; the line number is the id)."""
    path = _existing(path, "goi_classes.txt (fetch_metadata('otter_goi_classes', ...))")
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    names = [line.strip() for line in lines]
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if empty:
        raise ValueError(f"{path}: empty class name on line(s) {empty[:5]}; every line must hold one name")
    return names


REPEATED_NAME_RULES: tuple[str, ...] = ("first", "all")
"""How a GOI rebuild maps a positive whose display name several class ids carry: ``first`` -> the first such
id, ``all`` -> every such id (see :func:`load_goi` and ``docs/eval_sets.md``)."""


def load_goi(class_descriptions_csv: str | Path, image_labels_csv: str | Path, images_dir: str | Path,
             class_list: Sequence[str] | str | Path | None = None, image_ext: str = ".jpg",
             repeated_names: str = "first") -> MultiLabelEvalSet:
    """Rebuild the Google Open Images test set from the official CSVs (the paper's ``goi_images.txt`` is read by
    :func:`load_goi_otter_format`; :func:`otterlib.data.goi_labels.compare_goi_labels` cross-checks the two).

    Args:
        class_descriptions_csv: ``oidv6-class-descriptions.csv`` (header) or ``class-descriptions.csv`` (none).
        image_labels_csv: human-verified image-level labels, ``ImageID,Source,LabelName,Confidence`` (header
            optional). Rows with Confidence 1 are positives; Confidence 0 (verified negatives) are dropped.
        images_dir: folder holding ``<ImageID><image_ext>``.
        class_list: the class ids as display names (a list, or a ``goi_classes.txt`` path); default: the
            display names of the class-description file in row order.
        image_ext: file extension of the images (Open Images test images are ``<ImageID>.jpg``).
        repeated_names: a positive MID is mapped to its display name and the name to class ids; a name that
            several ids carry (12 in the paper's list) gives the ``first`` of them or ``all`` of them
            (:data:`REPEATED_NAME_RULES`). MIDs whose name is not in the class list are dropped.

    Only images with at least one positive label in the class set are kept (the others can never be hit);
    ``info`` records every dropped row and image, the rule, and how many distinct (image, MID) positives it
    decided (``n_repeated_name_labels``, over ``n_images_with_repeated_name_labels`` images).
    """
    if repeated_names not in REPEATED_NAME_RULES:
        raise ValueError(f"repeated_names must be one of {REPEATED_NAME_RULES}, got {repeated_names!r}")
    mids, display_names, had_header = read_goi_class_descriptions(class_descriptions_csv)
    info: dict[str, Any] = {"format": "open-images-csv", "class_descriptions_header": had_header,
                            "n_class_description_rows": len(mids), "repeated_names": repeated_names,
                            "label_source": f"rebuilt (repeated names: {repeated_names})"}
    if class_list is None:
        class_names = display_names
    else:
        class_names = read_goi_class_list(class_list) if isinstance(class_list, (str, Path)) else list(class_list)
    name_to_ids: dict[str, list[int]] = {}
    for i, n in enumerate(class_names):
        name_to_ids.setdefault(n, []).append(i)
    mid_to_ids = {m: name_to_ids.get(n, []) for m, n in zip(mids, display_names)}
    info["n_class_descriptions_not_in_class_list"] = sum(1 for ids in mid_to_ids.values() if not ids)
    labels_path = _existing(image_labels_csv, "Open Images human-verified image-level labels CSV "
                                              "(fetch_metadata('goi_test_image_labels_v6', ...))")
    per_image: dict[str, set[str]] = {}  # image -> positive MIDs inside the class list
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    with labels_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        first = next(reader, None)
        if first is None:
            raise ValueError(f"{labels_path}: empty file")
        if first and first[0].strip() == "ImageID":
            header = [c.strip() for c in first]
            missing = {"ImageID", "LabelName", "Confidence"} - set(header)
            if missing:
                raise ValueError(f"{labels_path}: header lacks {sorted(missing)}; expected "
                                 f"'ImageID,Source,LabelName,Confidence'")
            col_img, col_mid, col_conf = (header.index(c) for c in ("ImageID", "LabelName", "Confidence"))
            col_src = header.index("Source") if "Source" in header else None
            rows: Any = reader
        else:
            col_img, col_src, col_mid, col_conf = 0, 1, 2, 3
            rows = itertools.chain([first], reader)
        width = max(col_img, col_mid, col_conf) + 1
        for line_no, row in enumerate(rows, start=2 if rows is reader else 1):
            if not row:
                continue
            if len(row) < width:
                raise ValueError(f"{labels_path}:{line_no}: expected 'ImageID,Source,LabelName,Confidence', got {row!r}")
            try:
                confidence = float(row[col_conf])
            except ValueError:
                raise ValueError(f"{labels_path}:{line_no}: Confidence {row[col_conf]!r} is not a number") from None
            image_id = row[col_img].strip()
            seen.add(image_id)
            if col_src is not None:
                sources[row[col_src].strip()] += 1
            if confidence != 1.0:
                counts["negative_rows_dropped" if confidence == 0.0 else "other_confidence_rows_dropped"] += 1
                continue
            mid = row[col_mid].strip()
            if mid not in mid_to_ids:
                counts["unknown_mid_rows_dropped"] += 1
                continue
            if not mid_to_ids[mid]:
                counts["rows_outside_class_list_dropped"] += 1
                continue
            counts["positive_rows"] += 1
            per_image.setdefault(image_id, set()).add(mid)
    images_dir = Path(images_dir)
    image_ids = list(per_image)
    width = None if repeated_names == "all" else 1
    labels = [sorted({c for m in per_image[i] for c in mid_to_ids[m][:width]}) for i in image_ids]
    repeated = [sum(len(mid_to_ids[m]) > 1 for m in per_image[i]) for i in image_ids]
    info.update({
        "n_positive_rows": counts["positive_rows"],
        "n_negative_rows_dropped": counts["negative_rows_dropped"],
        "n_other_confidence_rows_dropped": counts["other_confidence_rows_dropped"],
        "n_unknown_mid_rows_dropped": counts["unknown_mid_rows_dropped"],
        "n_rows_outside_class_list_dropped": counts["rows_outside_class_list_dropped"],
        "n_repeated_name_labels": sum(repeated),
        "n_images_with_repeated_name_labels": sum(n > 0 for n in repeated),
        "n_images_in_label_file": len(seen),
        "n_images_without_positive_dropped": len(seen) - len(image_ids),
        "sources": dict(sources),
    })
    eval_set = MultiLabelEvalSet(
        name="goi", class_names=[[n] for n in class_names],
        image_paths=[images_dir / f"{i}{image_ext}" for i in image_ids],
        labels=labels, image_ids=image_ids, info=info)
    _record_found(eval_set)
    return eval_set


def load_goi_otter_format(classes_txt: str | Path, images_txt: str | Path, images_dir: str | Path) -> MultiLabelEvalSet:
    """Google Open Images in the official OTTER files: ``goi_classes.txt`` (one name per line) and
    ``goi_images.txt`` (``<image file>\\t<id>\\t<id>...``, ids index ``goi_classes.txt``). Image ``i`` is read
    from ``images_dir / <image file>``; its id is the file stem."""
    class_names = read_goi_class_list(classes_txt)
    images_path = _existing(images_txt, "goi_images.txt (fetch_metadata('otter_goi_images', ...))")
    images_dir = Path(images_dir)
    paths, labels, ids = [], [], []
    for line_no, line in enumerate(images_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        labels.append(_parse_ids(fields[1:], images_path, line_no, len(class_names)))
        paths.append(images_dir / fields[0])
        ids.append(Path(fields[0]).stem)
    eval_set = MultiLabelEvalSet("goi", [[n] for n in class_names], paths, labels, ids,
                                 {"format": "otter-goi-txt", "n_class_rows": len(class_names),
                                  "label_source": "official goi_images.txt"})
    _record_found(eval_set)
    return eval_set


# --------------------------------------------------------------------------------------------------
# Tencent ML-Images (multi-label ImageNet-10K)

_QUIRK_ROW = re.compile(r"^(-?\d+)\s+(\S.*)$")


@dataclass(frozen=True)
class TencentDictionary:
    """Tencent ML-Images classes: ``wnids[c]``, ``parents[c]`` (-1 for the 4 roots), ``names[c]`` (synonyms)
    and the malformed rows that were repaired while parsing (``index``, ``line``, ``raw``, ``parent``, the
    repaired ``name``, the ``official_name`` that the official parser reads and the ``name_used``)."""

    wnids: list[str]
    parents: list[int]
    names: list[list[str]]
    quirks_fixed: list[dict[str, Any]]

    def ancestors(self, class_id: int) -> list[int]:
        """Ancestors of ``class_id``, nearest first (see :func:`tencent_ancestors`)."""
        return tencent_ancestors(self.parents, class_id)


def tencent_ancestors(parents: Sequence[int], class_id: int) -> list[int]:
    """All ancestors of ``class_id`` in a parent array (``-1`` = root), nearest first; the class itself is
    not included. A cycle raises ValueError."""
    out: list[int] = []
    node = parents[class_id]
    while node != -1:
        out.append(node)
        if len(out) > len(parents):
            raise ValueError(f"the parent array has a cycle through class {class_id}")
        node = parents[node]
    return out


def read_tencent_dictionary(path: str | Path, bug_compatible: bool = False) -> TencentDictionary:
    """Parse ``dictionary_and_semantic_hierarchy.txt`` (header, then ``index\\twnid\\tparent\\tnames``).

    A row whose parent and name are separated by spaces instead of a tab (row 0 of OTTER's copy,
    ``0\\tn00002452\\t-1  thing``) is repaired (parent -1, name ``thing``) and listed in ``quirks_fixed``;
    with ``bug_compatible`` its name is the official parser's, the whole last field (``-1  thing``). Indices
    must run 0, 1, 2, ...
    """
    path = _existing(path, "Tencent dictionary (fetch_metadata('tencent_dictionary', ...))")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].startswith(TENCENT_HEADER_PREFIX):
        raise ValueError(f"{path}: first line must be the header 'category_index\\tcategory_id\\t"
                         f"index_of_parent_category\\tcategory name'")
    wnids, parents, names, quirks = [], [], [], []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) == 3 and (m := _QUIRK_ROW.match(fields[2])):
            official = fields[2].strip()
            used = official if bug_compatible else m.group(2)
            quirks.append({"index": fields[0].strip(), "line": line_no, "raw": line, "parent": int(m.group(1)),
                           "name": m.group(2), "official_name": official, "name_used": used})
            fields = [fields[0], fields[1], m.group(1), used]
        if len(fields) != 4:
            raise ValueError(f"{path}:{line_no}: expected 'index\\twnid\\tparent\\tnames', got {line!r}")
        try:
            index, parent = int(fields[0]), int(fields[2])
        except ValueError:
            raise ValueError(f"{path}:{line_no}: index and parent must be integers, got {line!r}") from None
        if index != len(wnids):
            raise ValueError(f"{path}:{line_no}: class index {index} out of order (expected {len(wnids)})")
        synonyms = [s.strip() for s in fields[3].split(",") if s.strip()]
        if not synonyms:
            raise ValueError(f"{path}:{line_no}: class {index} has no name")
        wnids.append(fields[1].strip())
        parents.append(parent)
        names.append(synonyms)
    bad = [(c, p) for c, p in enumerate(parents) if p < -1 or p >= len(parents) or p == c]
    if bad:
        raise ValueError(f"{path}: invalid parent index for class(es) {bad[:5]}")
    for c in range(len(parents)):
        tencent_ancestors(parents, c)  # raises on cycles
    return TencentDictionary(wnids, parents, names, quirks)


def load_tencent_in10k(dictionary_txt: str | Path, val_list_txt: str | Path, images_root: str | Path, *,
                       leaf_only: bool = False, flat_layout: bool = False,
                       bug_compatible: bool = False) -> MultiLabelEvalSet:
    """Multi-label ImageNet-10K: the Tencent ML-Images validation images taken from ImageNet.

    Args:
        dictionary_txt: ``dictionary_and_semantic_hierarchy.txt`` (11,166 classes).
        val_list_txt: ``val_image_id_from_imagenet.txt`` (``wnid/file.JPEG\\tleaf\\tancestors...``).
        images_root: ImageNet-21k layout ``<images_root>/<wnid>/<file>.JPEG``, or with ``flat_layout``
            ``<images_root>/<file>.JPEG`` (the layout of the official OTTER loader).
        leaf_only: keep only the first (leaf) label of each row (the ``clean`` protocol).
        bug_compatible: name the malformed row 0 as the official parser does (``-1  thing``, see
            :func:`read_tencent_dictionary`).

    ``info['notes']`` says, for each malformed row, which name is used and how the official one differs. ``info`` holds ``parents`` and ``wnids`` (per class), ``leaf_ids`` (per image), the repaired dictionary
    rows and two consistency counts: rows whose labels are not exactly leaf + its ancestors, and rows whose
    folder wnid differs from the leaf's wnid (both 0 on the official files).
    """
    dictionary = read_tencent_dictionary(dictionary_txt, bug_compatible)
    val_path = _existing(val_list_txt, "Tencent val list (fetch_metadata('tencent_val_list', ...))")
    images_root = Path(images_root)
    n_classes = len(dictionary.wnids)
    ancestors: dict[int, list[int]] = {}
    paths, labels, ids, leaves = [], [], [], []
    n_not_hierarchy = n_wnid_mismatch = 0
    for line_no, line in enumerate(val_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        row = _parse_ids(fields[1:], val_path, line_no, n_classes)
        if not row:
            raise ValueError(f"{val_path}:{line_no}: image {fields[0]!r} has no label")
        leaf = row[0]
        if leaf not in ancestors:
            ancestors[leaf] = tencent_ancestors(dictionary.parents, leaf)
        n_not_hierarchy += set(row) != {leaf, *ancestors[leaf]}
        rel = fields[0].strip()
        n_wnid_mismatch += rel.split("/")[0] != dictionary.wnids[leaf]
        paths.append(images_root / (Path(rel).name if flat_layout else rel))
        labels.append([leaf] if leaf_only else row)
        ids.append(rel)
        leaves.append(leaf)
    info: dict[str, Any] = {
        "format": "tencent-ml-images",
        "label_mode": "leaf" if leaf_only else "leaf+ancestors",
        "quirks_fixed": dictionary.quirks_fixed,
        "notes": [_quirk_note(q, dictionary.wnids[int(q["index"])], bug_compatible) for q in dictionary.quirks_fixed],
        "n_rows_not_leaf_plus_ancestors": n_not_hierarchy,
        "n_rows_wnid_mismatch": n_wnid_mismatch,
        "parents": dictionary.parents,
        "wnids": dictionary.wnids,
        "leaf_ids": leaves,
    }
    eval_set = MultiLabelEvalSet("in10k", dictionary.names, paths, labels, ids, info)
    _record_found(eval_set)
    return eval_set


def _quirk_note(quirk: dict[str, Any], wnid: str, bug_compatible: bool) -> str:
    """One line for the eval-set notes: the name used for a malformed dictionary row and the other reading."""
    where = f"Tencent class {quirk['index']} ({wnid}), malformed row {quirk['raw']!r}"
    if bug_compatible:
        return (f"{where}: the official name {quirk['official_name']!r} (caption 'a photo of "
                f"{quirk['official_name']}.'), as eval.bug_compatible asks; the repaired name is {quirk['name']!r}")
    return (f"{where}: repaired name {quirk['name']!r} (caption 'a photo of {quirk['name']}.'); the official parser "
            f"reads {quirk['official_name']!r} (caption 'a photo of {quirk['official_name']}.'), set "
            f"eval.bug_compatible: true to use it")


# --------------------------------------------------------------------------------------------------
# The clean protocol

_CLASS_ALIGNED_KEYS = ("parents", "wnids")


def clean_variant(eval_set: MultiLabelEvalSet, *, dedupe_names: bool = True, leaf_only: bool = True) -> MultiLabelEvalSet:
    """The ``clean`` protocol of an eval set (the ``paper`` protocol is the set as loaded).

    * ``dedupe_names``: classes whose caption name (synonyms joined with ``",or "``) is identical are merged
      into the first id carrying it; labels are remapped and deduplicated. GOI has 12 repeated names (19,994
      -> 19,982 ids); the Tencent dictionary has 293 (11,166 -> 10,873), e.g. two ``currant`` synsets.
    * ``leaf_only``: sets loaded with a hierarchy (``info['leaf_ids']``, Tencent) keep only the leaf label.

    ``info['class_id_map'][old] = new`` maps paper ids to clean ids. Applying it to a clean set returns it
    unchanged.
    """
    if eval_set.info.get("variant") == "clean":
        return eval_set
    names = eval_set.caption_names()
    old_to_new: list[int] = []
    first_of: dict[str, int] = {}
    class_names: list[list[str]] = []
    for c, name in enumerate(names):
        if dedupe_names and name in first_of:
            old_to_new.append(first_of[name])
            continue
        first_of[name] = len(class_names)
        old_to_new.append(len(class_names))
        class_names.append(list(eval_set.class_names[c]))
    leaf_ids = eval_set.info.get("leaf_ids")
    rows = [[leaf] for leaf in leaf_ids] if (leaf_only and leaf_ids is not None) else eval_set.labels
    labels = [sorted({old_to_new[c] for c in row}) for row in rows]
    groups: dict[str, list[int]] = {}
    for c, name in enumerate(names):
        groups.setdefault(name, []).append(c)
    merged = {n: ids for n, ids in groups.items() if len(ids) > 1}
    info = {k: v for k, v in eval_set.info.items() if k not in _CLASS_ALIGNED_KEYS}
    info.update(variant="clean", class_id_map=old_to_new, n_merged_ids=len(names) - len(class_names),
                merged_names=merged if dedupe_names else {})
    if leaf_ids is not None:
        info["leaf_ids"] = [old_to_new[c] for c in leaf_ids]
        if leaf_only:
            info["label_mode"] = "leaf"
    return MultiLabelEvalSet(eval_set.name, class_names, list(eval_set.image_paths), labels,
                             list(eval_set.image_ids), info)


# --------------------------------------------------------------------------------------------------
# Official metadata download


def load_manifest(path: str | Path = MANIFEST_PATH) -> dict[str, dict[str, Any]]:
    """The ``files`` table of the metadata manifest: name -> {filename, url, sha256, ...}."""
    path = _existing(path, "metadata manifest")
    return json.loads(path.read_text(encoding="utf-8"))["files"]


def sha256_file(path: str | Path, block_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_metadata(name: str, dest_dir: str | Path, *, url: str | None = None,
                   expected_sha256: str | None = None, verify: bool = True,
                   manifest_path: str | Path = MANIFEST_PATH, timeout: float = 120.0) -> Path:
    """Download one official metadata file named in the manifest and verify its sha256.

    Args:
        name: a key of the manifest (e.g. ``goi_class_descriptions_v6``, ``tencent_dictionary``).
        dest_dir: folder to write ``<filename>`` into.
        url: download from here instead of the manifest URL (a mirror, or a loopback server in tests).
        expected_sha256: use this hash instead of the manifest's (to accept a legitimately changed file).
        verify: False skips every hash check.
        manifest_path: the manifest to read.
        timeout: socket timeout in seconds.

    An existing file with the expected hash is not downloaded again. A mismatch raises ValueError naming
    the file, the expected and the actual hash and how to override; the rejected download is kept next to
    the target as ``<filename>.rejected``. When the manifest has no hash (``null``: none could be established
    from public material) the observed hash is written to ``<filename>.sha256`` and a warning is issued
    (trust on first use); later calls verify against that sidecar.
    """
    files = load_manifest(manifest_path)
    if name not in files:
        raise ValueError(f"unknown metadata file {name!r}; the manifest {manifest_path} lists {sorted(files)}")
    entry = files[name]
    source = url or entry["url"]
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / entry["filename"]
    sidecar = target.with_name(target.name + ".sha256")
    pinned = expected_sha256 or entry.get("sha256")
    if pinned is not None and not re.fullmatch(r"[0-9a-f]{64}", pinned):
        raise ValueError(f"sha256 for {name!r} must be 64 lowercase hex digits, got {pinned!r}")
    tofu = sidecar.read_text(encoding="utf-8").split()[0] if (pinned is None and sidecar.is_file()) else None
    expected = pinned or tofu
    if target.is_file():
        if not verify:
            return target
        actual = sha256_file(target)
        if expected is None:
            _trust_on_first_use(target, sidecar, actual, name)
            return target
        if actual == expected:
            return target
        logger.warning("%s has sha256 %s, expected %s: downloading it again from %s", target, actual, expected, source)
    actual = _download(source, target, name, timeout)
    if verify and expected is not None and actual != expected:
        rejected = target.with_name(target.name + ".rejected")
        target.replace(rejected)
        origin = (f"the sidecar {sidecar} recorded on first use (delete it to trust the new file)" if tofu
                  else f"the manifest {manifest_path}" if expected_sha256 is None else "expected_sha256=")
        raise ValueError(
            f"sha256 mismatch for {entry['filename']} ({name}) downloaded from {source}: expected {expected} "
            f"(from {origin}), got {actual}. The download was kept at {rejected}. If the upstream file changed "
            f"legitimately, accept it with fetch_metadata({name!r}, {str(dest_dir)!r}, expected_sha256={actual!r}) "
            f"or verify=False, and update the manifest entry.")
    if verify and expected is None:
        _trust_on_first_use(target, sidecar, actual, name)
    return target


def _download(source: str, target: Path, name: str, timeout: float) -> str:
    """Stream ``source`` into ``target`` (via ``<target>.part``) and return its sha256."""
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(source, timeout=timeout) as response, part.open("wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        part.unlink(missing_ok=True)
        raise ConnectionError(f"could not download {name} from {source}: {err}. Check the network, or pass "
                              f"url= to a mirror (see the manifest note).") from err
    part.replace(target)
    return digest.hexdigest()


def _trust_on_first_use(target: Path, sidecar: Path, actual: str, name: str) -> None:
    sidecar.write_text(f"{actual}  {target.name}\n", encoding="utf-8")
    warnings.warn(f"no published sha256 for {name}; recorded the observed sha256 {actual} of {target} in "
                  f"{sidecar} (trust on first use). Later fetches are checked against it.", stacklevel=3)


# --------------------------------------------------------------------------------------------------
# helpers


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found at {path}")
    return path


def _parse_ids(fields: Sequence[str], path: Path, line_no: int, n_classes: int) -> list[int]:
    try:
        ids = [int(x) for x in fields if x.strip()]
    except ValueError:
        raise ValueError(f"{path}:{line_no}: label ids must be integers, got {list(fields)!r}") from None
    bad = [i for i in ids if not 0 <= i < n_classes]
    if bad:
        raise ValueError(f"{path}:{line_no}: label id(s) {bad} outside [0, {n_classes - 1}] of the class list")
    return ids


def _record_found(eval_set: MultiLabelEvalSet) -> None:
    missing = len(eval_set.missing_images())
    eval_set.info["n_images_found"] = eval_set.n_images - missing
    logger.info("%s: %d of %d images found on disk", eval_set.name, eval_set.n_images - missing, eval_set.n_images)
