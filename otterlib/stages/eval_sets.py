"""Stage 02: the zero-shot eval sets (official metadata, or synthetic files in the official formats)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from otterlib import layout
from otterlib.config import EvalSetConfig, Profile


def prepare_eval_sets(profile: Profile, force: bool = False) -> pd.DataFrame:
    """Put each eval set's metadata (and, for the smoke profile, its images) in place, parse it with the
    real parsers, and write ``prepared.json`` with its summary. Returns one summary row per set."""
    rows = []
    for set_cfg in profile.eval.sets:
        marker = layout.eval_prepared_marker(set_cfg)
        if marker.is_file() and not force:
            rows.append(json.loads(marker.read_text()))
            continue
        if profile.data.source == "synthetic":
            _write_synthetic_eval_set(profile, set_cfg)
        else:
            _fetch_eval_metadata(set_cfg)
        if set_cfg.download_images:
            _download_goi_images(set_cfg)
        summary = load_eval_set(set_cfg, mode="paper").summary()
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
            full = load_eval_set(set_cfg, mode=mode)
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
        es = load_eval_set(set_cfg).with_existing_images()
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
    "goi": ("goi_class_descriptions_v6", "goi_test_image_labels_v6", "otter_goi_classes"),
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


def load_eval_set(set_cfg: EvalSetConfig, mode: str = "paper"):
    """Parse an eval set from its metadata folder (official file names) -> ``MultiLabelEvalSet``.

    ``mode='clean'`` deduplicates names and keeps leaf labels only (see ``evalsets.clean_variant``).
    """
    from otterlib.data import evalsets

    d = layout.eval_set_dir(set_cfg)
    images = layout.eval_images_dir(set_cfg)
    if set_cfg.name == "goi":
        descriptions = _first_existing(d, ("oidv6-class-descriptions.csv", "class-descriptions.csv"))
        labels = _first_existing(d, ("test-annotations-human-imagelabels.csv",
                                     "oidv6-test-annotations-human-imagelabels.csv"))
        paper_classes = d / "goi_classes.txt"  # the paper's 19,994-name candidate list and class ids, when present
        eval_set = evalsets.load_goi(descriptions, labels, images,
                                     class_list=paper_classes if paper_classes.is_file() else None)
    elif set_cfg.name == "in10k":
        eval_set = evalsets.load_tencent_in10k(d / "dictionary_and_semantic_hierarchy.txt",
                                               d / "val_image_id_from_imagenet.txt", images)
    else:
        raise ValueError(f"unknown eval set {set_cfg.name!r}; known: goi, in10k")
    if mode == "clean":
        return evalsets.clean_variant(eval_set)
    if mode != "paper":
        raise ValueError(f"eval mode must be 'paper' or 'clean', got {mode!r}")
    return eval_set


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise FileNotFoundError(f"none of {list(names)} in {folder}; run 02_prepare_eval_sets first")
