"""Stage 02: the zero-shot eval sets (official metadata, or synthetic files in the official formats)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from otterlib import layout
from otterlib.config import EvalConfig, EvalSetConfig, Profile

if TYPE_CHECKING:
    from otterlib.data.evalsets import MultiLabelEvalSet
    from otterlib.data.goi_labels import GoiLabelCheck


def prepare_eval_sets(profile: Profile, force: bool = False) -> pd.DataFrame:
    """Put each eval set's metadata (and, for the smoke profile, its images) in place, parse it with the
    real parsers, and write ``prepared.json`` with its summary. Returns one summary row per set."""
    rows = []
    for set_cfg in profile.eval.sets:
        marker = layout.eval_prepared_marker(set_cfg)
        if marker.is_file() and not force:
            rows.append(json.loads(marker.read_text()))
            continue
        if profile.data.synthetic_world:
            _write_synthetic_eval_set(profile, set_cfg)
        else:
            _fetch_eval_metadata(set_cfg)
        if set_cfg.download_images:
            _download_goi_images(set_cfg)
        summary = summarize_eval_set(set_cfg, profile.eval)
        marker.write_text(json.dumps(summary, indent=2))
        rows.append(summary)
    return pd.DataFrame(rows).set_index("name")


TRIVIAL_SETTING: str = "all"
"""The ``setting`` of trivial-baseline rows: they do not depend on the model, so they hold for every setting."""


def trivial_baselines(profile: Profile) -> pd.DataFrame:
    """Random ranking (exact expectation) and best constant ranking on every eval set, in both protocol modes.

    Scored on the images present on disk (the images stage 04 evaluates), or on the whole label file when no
    image is there (e.g. the real IN10K without ImageNet). Writes ``results/<profile>/trivial/eval.jsonl``
    and ``eval_clean.jsonl`` (``kind: "trivial"``) and returns FH@k in percent, one row per (set, mode,
    method).
    """
    from otterlib.baselines import trivial_rows
    from otterlib.evaluate import MODES, write_eval_rows

    table = []
    for mode in MODES:
        rows = []
        for set_cfg in profile.eval.sets:
            full = load_eval_set(set_cfg, mode, profile.eval)
            present = full.with_existing_images()
            scored = present if present.n_images else full
            rows += trivial_rows(scored, profile.eval.ks, mode, setting=TRIVIAL_SETTING, profile=profile.name,
                                 n_images_missing=present.info["n_dropped_missing"],
                                 scored_on="images on disk" if present.n_images else "label file (no images on disk)")
        write_eval_rows(layout.eval_rows_path(layout.trivial_dir(profile), mode), rows)
        table += [{"eval set": r["dataset"], "mode": mode, "method": r["method"],
                   **{k.upper(): round(100 * v, 2) for k, v in r["metrics"].items()}} for r in rows]
    return pd.DataFrame(table).set_index(["eval set", "mode", "method"])


def eval_set_thumbnails(profile: Profile, n_per_set: int = 4) -> Path:
    """The first ``n_per_set`` images of every eval set with their full label lists (first synonym of each
    class), as ``results/<profile>/eval_sets/thumbnails.png``; returns its path."""
    from otterlib import report

    panels = []
    for set_cfg in profile.eval.sets:
        es = load_eval_set(set_cfg, eval_cfg=profile.eval).with_existing_images()
        panels.append([(es.image_paths[i], set_cfg.name, [es.class_names[c][0] for c in es.labels[i]])
                       for i in range(min(n_per_set, es.n_images))])
    return report.plot_thumbnails(panels, layout.eval_thumbnails_path(profile))


def _write_synthetic_eval_set(profile: Profile, set_cfg: EvalSetConfig) -> None:
    from otterlib.data import synthetic

    syn = profile.data.synthetic
    dest = layout.eval_set_dir(set_cfg)
    if set_cfg.name == "goi":
        synthetic.make_synthetic_goi(dest, syn.n_eval_goi, syn.image_size, seed=syn.seed + 101,
                                     zipf_exponent=syn.zipf_exponent)
    elif set_cfg.name == "in10k":
        synthetic.make_synthetic_in10k(dest, syn.n_eval_in10k, syn.image_size, seed=syn.seed + 202)
    else:
        raise ValueError(f"no synthetic generator for eval set {set_cfg.name!r} (goi, in10k)")


EVAL_METADATA: dict[str, tuple[str, ...]] = {
    "goi": ("goi_class_descriptions_v6", "goi_test_image_labels_v6", "otter_goi_classes", "otter_goi_images"),
    "in10k": ("tencent_dictionary", "tencent_val_list"),
}
"""Manifest entries (``data/manifests/eval_metadata.json``) each eval set needs."""


def _fetch_eval_metadata(set_cfg: EvalSetConfig) -> None:
    from otterlib.data.evalsets import fetch_metadata

    if set_cfg.name not in EVAL_METADATA:
        raise ValueError(f"unknown eval set {set_cfg.name!r}; known: {sorted(EVAL_METADATA)}")
    for name in EVAL_METADATA[set_cfg.name]:
        fetch_metadata(name, layout.eval_set_dir(set_cfg))


def _download_goi_images(set_cfg: EvalSetConfig) -> dict[str, int]:
    from otterlib.data.evalsets import fetch_metadata
    from otterlib.data.goi_images import download_goi_images

    if set_cfg.name != "goi":
        raise ValueError(f"download_images is only available for goi (Open Images); {set_cfg.name!r} images come "
                         "from a local folder (IN10K: your ImageNet-21k copy)")
    image_list = fetch_metadata("goi_test_image_list", layout.eval_set_dir(set_cfg))
    wanted = load_eval_set(set_cfg).image_ids
    counts = download_goi_images(image_list, layout.eval_images_dir(set_cfg), image_ids=wanted)
    print(f"Open Images test images: {counts}")
    return counts


GOI_CLASS_LIST = "goi_classes.txt"
"""The paper's GOI class list (19,994 display names; the line number is the class id)."""
GOI_OFFICIAL_LABELS = "goi_images.txt"
"""The paper's GOI per-image labels (image file, then ids into ``goi_classes.txt``)."""
GOI_DESCRIPTIONS = ("oidv6-class-descriptions.csv", "class-descriptions.csv")
GOI_IMAGE_LABELS = ("test-annotations-human-imagelabels.csv", "oidv6-test-annotations-human-imagelabels.csv")


def summarize_eval_set(set_cfg: EvalSetConfig, eval_cfg: EvalConfig) -> dict[str, Any]:
    """The ``prepared.json`` row of an eval set: counts (:meth:`MultiLabelEvalSet.summary`), notes, where the
    labels come from and, for GOI, the images' OriginalMD5 check (:func:`image_integrity`), how many labels the
    repeated-name rule decided and the cross-check of both rules' rebuilds against ``goi_images.txt``
    (``label_crosscheck``, one row per rule; empty without the file).
    Each rule's differing images are written to ``goi_label_differences_<rule>.csv`` in the metadata folder."""
    eval_set = load_eval_set(set_cfg, "paper", eval_cfg)
    summary = eval_set.summary() | {"label_source": eval_set.info.get("label_source", "official files")}
    if set_cfg.name == "goi":
        summary |= image_integrity(set_cfg, eval_set)
        checks = goi_label_checks(set_cfg)
        for check in checks:
            check.differences.to_csv(layout.eval_set_dir(set_cfg) / f"goi_label_differences_{check.rule}.csv",
                                     index=False)
        # the same count under both rules: positives whose display name several ids carry (unknown without CSVs)
        summary["n_repeated_name_labels"] = eval_set.info.get(
            "n_repeated_name_labels", checks[0].n_repeated_name_labels if checks else None)
        summary["label_crosscheck"] = [c.summary() for c in checks]
    return summary


def image_integrity(set_cfg: EvalSetConfig, eval_set: MultiLabelEvalSet) -> dict[str, int]:
    """How many of the set's images passed or failed the OriginalMD5 check of the GOI download, and how many
    on disk were never checked (:func:`otterlib.data.goi_images.integrity_counts`)."""
    from otterlib.data.goi_images import integrity_counts

    return integrity_counts(layout.eval_images_dir(set_cfg), dict(zip(eval_set.image_ids, eval_set.image_paths)))


def goi_label_checks(set_cfg: EvalSetConfig) -> list[GoiLabelCheck]:
    """Each repeated-name rule's rebuild compared with ``goi_images.txt``; empty unless both can be read."""
    from otterlib.data.evalsets import REPEATED_NAME_RULES, load_goi_otter_format
    from otterlib.data.goi_labels import compare_goi_labels

    d = layout.eval_set_dir(set_cfg)
    if not ((d / GOI_OFFICIAL_LABELS).is_file() and _has_any(d, GOI_DESCRIPTIONS) and _has_any(d, GOI_IMAGE_LABELS)):
        return []
    official = load_goi_otter_format(d / GOI_CLASS_LIST, d / GOI_OFFICIAL_LABELS, layout.eval_images_dir(set_cfg))
    return [compare_goi_labels(_rebuild_goi(set_cfg, rule), official) for rule in REPEATED_NAME_RULES]


def load_eval_set(set_cfg: EvalSetConfig, mode: str = "paper", eval_cfg: EvalConfig | None = None):
    """Parse an eval set from its metadata folder (official file names) -> ``MultiLabelEvalSet``.

    GOI labels come from the paper's ``goi_images.txt`` when it is there; otherwise they are rebuilt from the
    Open Images CSVs under ``eval_cfg.goi_repeated_names`` (``info['label_source']`` says which).
    ``mode='clean'`` deduplicates names and keeps leaf labels only (see ``evalsets.clean_variant``). ``eval_cfg``
    (default: :class:`EvalConfig` defaults) gives the protocol options (``bug_compatible``, ``goi_repeated_names``).
    """
    from otterlib.data import evalsets

    eval_cfg = eval_cfg or EvalConfig()
    d = layout.eval_set_dir(set_cfg)
    images = layout.eval_images_dir(set_cfg)
    if set_cfg.name == "goi" and (d / GOI_OFFICIAL_LABELS).is_file():
        eval_set = evalsets.load_goi_otter_format(d / GOI_CLASS_LIST, d / GOI_OFFICIAL_LABELS, images)
    elif set_cfg.name == "goi":
        eval_set = _rebuild_goi(set_cfg, eval_cfg.goi_repeated_names)
    elif set_cfg.name == "in10k":
        eval_set = evalsets.load_tencent_in10k(d / "dictionary_and_semantic_hierarchy.txt",
                                               d / "val_image_id_from_imagenet.txt", images,
                                               bug_compatible=eval_cfg.bug_compatible)
    else:
        raise ValueError(f"unknown eval set {set_cfg.name!r}; known: goi, in10k")
    if mode == "clean":
        return evalsets.clean_variant(eval_set)
    if mode != "paper":
        raise ValueError(f"eval mode must be 'paper' or 'clean', got {mode!r}")
    return eval_set


def _rebuild_goi(set_cfg: EvalSetConfig, repeated_names: str):
    """GOI labels rebuilt from the Open Images CSVs onto ``goi_classes.txt`` (the description file's names
    when it is absent) with the given repeated-name rule."""
    from otterlib.data.evalsets import load_goi

    d = layout.eval_set_dir(set_cfg)
    paper_classes = d / GOI_CLASS_LIST
    return load_goi(_first_existing(d, GOI_DESCRIPTIONS), _first_existing(d, GOI_IMAGE_LABELS),
                    layout.eval_images_dir(set_cfg), class_list=paper_classes if paper_classes.is_file() else None,
                    repeated_names=repeated_names)


def _has_any(folder: Path, names: tuple[str, ...]) -> bool:
    return any((folder / n).is_file() for n in names)


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise FileNotFoundError(f"none of {list(names)} in {folder}; run 02_prepare_eval_sets first")
