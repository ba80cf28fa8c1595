"""Cross-check of rebuilt GOI labels against the paper's own per-image label file ``goi_images.txt``.

The rebuild (:func:`otterlib.data.evalsets.load_goi`) maps the human-verified positives of the Open Images test
labels through display names onto the class list, deciding repeated names by a rule; the paper's file
(:func:`otterlib.data.evalsets.load_goi_otter_format`) is what the paper evaluated on. Whenever both exist,
:func:`compare_goi_labels` says which images and labels differ, so the rule (and any other difference) is
measured instead of assumed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from otterlib.data.evalsets import MultiLabelEvalSet

OFFICIAL_SOURCE = "official goi_images.txt"


@dataclass(frozen=True)
class GoiLabelCheck:
    """How a rebuilt GOI label set differs from the official one.

    ``differences`` has one row per image whose labels differ or that only one side has: ``image_id``,
    ``only_official`` and ``only_rebuilt`` (labels as ``name (id)``, ``"; "``-joined), sorted by image id.
    Label counts are over the images both sides have.
    """

    rule: str
    n_images_official: int
    n_images_rebuilt: int
    only_official: list[str]
    only_rebuilt: list[str]
    n_images_with_other_labels: int
    n_labels_only_official: int
    n_labels_only_rebuilt: int
    n_repeated_name_labels: int
    same_class_list: bool
    differences: pd.DataFrame

    def summary(self) -> dict[str, Any]:
        """The counts, as one JSON-friendly row."""
        return {"rule": self.rule, "n_images_official": self.n_images_official,
                "n_images_rebuilt": self.n_images_rebuilt, "n_images_only_official": len(self.only_official),
                "n_images_only_rebuilt": len(self.only_rebuilt),
                "n_images_with_other_labels": self.n_images_with_other_labels,
                "n_labels_only_official": self.n_labels_only_official,
                "n_labels_only_rebuilt": self.n_labels_only_rebuilt,
                "n_repeated_name_labels": self.n_repeated_name_labels, "same_class_list": self.same_class_list}


def _names(eval_set: MultiLabelEvalSet, ids: set[int]) -> str:
    return "; ".join(f"{eval_set.class_names[c][0]} ({c})" for c in sorted(ids))


def compare_goi_labels(rebuilt: MultiLabelEvalSet, official: MultiLabelEvalSet) -> GoiLabelCheck:
    """Compare a :func:`~otterlib.data.evalsets.load_goi` rebuild with the set read from ``goi_images.txt``."""
    if not str(rebuilt.info.get("label_source", "")).startswith("rebuilt"):
        raise ValueError(f"the first set must be rebuilt by load_goi, its labels come from "
                         f"{rebuilt.info.get('label_source')!r}")
    if official.info.get("label_source") != OFFICIAL_SOURCE:
        raise ValueError(f"the second set must be read from goi_images.txt, its labels come from "
                         f"{official.info.get('label_source')!r}")
    mine = {i: set(lab) for i, lab in zip(rebuilt.image_ids, rebuilt.labels)}
    theirs = {i: set(lab) for i, lab in zip(official.image_ids, official.labels)}
    rows = []
    n_other = n_only_official = n_only_rebuilt = 0
    for image_id in sorted(mine.keys() | theirs.keys()):
        a, b = mine.get(image_id, set()), theirs.get(image_id, set())
        if a == b:
            continue
        if image_id in mine and image_id in theirs:
            n_other += 1
            n_only_official += len(b - a)
            n_only_rebuilt += len(a - b)
        rows.append({"image_id": image_id, "only_official": _names(official, b - a),
                     "only_rebuilt": _names(rebuilt, a - b)})
    return GoiLabelCheck(
        rule=rebuilt.info["repeated_names"], n_images_official=official.n_images, n_images_rebuilt=rebuilt.n_images,
        only_official=sorted(theirs.keys() - mine.keys()), only_rebuilt=sorted(mine.keys() - theirs.keys()),
        n_images_with_other_labels=n_other, n_labels_only_official=n_only_official,
        n_labels_only_rebuilt=n_only_rebuilt, n_repeated_name_labels=rebuilt.info["n_repeated_name_labels"],
        same_class_list=rebuilt.class_names == official.class_names,
        differences=pd.DataFrame(rows, columns=["image_id", "only_official", "only_rebuilt"]))
