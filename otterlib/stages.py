"""One function per notebook stage: what ``notebooks/0N_*.ipynb`` call, so the notebooks stay thin.

Each stage reads a :class:`~otterlib.config.Profile`, writes its outputs where :mod:`otterlib.layout`
says, and returns plain data (dicts, dataclasses, DataFrames) for the notebook to display.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from otterlib import layout
from otterlib.config import EvalSetConfig, Profile, load_profile, resolve_run, save_yaml
from otterlib.env import configure_offline, git_sha, resolve_device, runtime_info


def setup(profile_name: str, overrides: dict[str, Any] | None = None) -> tuple[Profile, dict[str, Any]]:
    """Load the profile, set the offline environment, write ``results/<profile>/profile.yaml``; returns
    the profile and a table of facts about this machine (versions, device, disk)."""
    profile = load_profile(profile_name, overrides)
    configure_offline(profile.offline)
    profile.results_root.mkdir(parents=True, exist_ok=True)
    save_yaml(profile, profile.results_root / "profile.yaml")
    data_root = layout.data_root(profile.data)
    data_root.mkdir(parents=True, exist_ok=True)
    facts = runtime_info() | {
        "profile": profile.name, "offline": profile.offline, "git": git_sha(),
        "settings": [s.name for s in profile.settings], "methods": profile.methods,
        "free_disk_gb (data)": round(shutil.disk_usage(data_root).free / 1e9, 1),
        "device (train)": str(resolve_device(profile.train.device)),
    }
    return profile, facts


# --------------------------------------------------------------------------------------------------
# 01: training pairs


def _download_options(profile: Profile) -> dict[str, Any]:
    """The profile's img2dataset options (``None`` fields left to :func:`otterlib.data.cc3m.download_cc3m`)."""
    return {k: v for k, v in asdict(profile.data.download).items() if v is not None}


def prepare_training_data(profile: Profile, force: bool = False) -> dict[str, Any]:
    """Download (or index) the training and validation pairs into webdataset shards with ``sizes.json``.

    ``synthetic``: render the shapes, serve them on a loopback HTTP server, write CC3M-format TSVs and run
    the real img2dataset path. ``cc3m``: the official TSVs (fetched when absent). ``webdataset``: index an
    existing folder of tars. Returns ``{split: DownloadSummary}``.
    """
    from otterlib.data import cc3m

    data = profile.data
    root = layout.data_root(data)
    if force:
        for split in ("train", "val"):
            if not (data.source == "webdataset" and split == "train"):  # never delete a user's own shards
                shutil.rmtree(layout.shard_dir(data, split), ignore_errors=True)
    options = _download_options(profile)
    if data.source == "synthetic":
        from otterlib.data.loopback import LoopbackImageServer
        from otterlib.data.synthetic import make_synthetic_cc3m, write_cc3m_tsv

        made = make_synthetic_cc3m(root, data.synthetic)
        summaries = {}
        with LoopbackImageServer(made["www"]) as server:
            for split, tsv_name in (("train", "Train_GCC-training.tsv"), ("val", "Validation_GCC-1.1.0-Validation.tsv")):
                out = layout.shard_dir(data, split)
                if layout.manifest_path(data, split).is_file():  # complete: reuse (force removed it above)
                    summaries[split] = cc3m.read_download_stats(out)
                    continue
                # An unfinished download's TSV named the previous server's port: the URLs changed, start over.
                shutil.rmtree(out, ignore_errors=True)
                tsv = root / tsv_name
                write_cc3m_tsv(made[split], server.url, split, tsv, seed=data.synthetic.seed)
                summaries[split] = cc3m.download_cc3m(tsv, out, **options)
        return summaries
    if data.source == "cc3m":
        summaries = {}
        for split, given, name, url in (
                ("train", data.train_tsv, "Train_GCC-training.tsv", cc3m.OFFICIAL_TRAIN_URL),
                ("val", data.val_tsv, "Validation_GCC-1.1.0-Validation.tsv", cc3m.OFFICIAL_VALIDATION_URL)):
            tsv = Path(given) if given else root / name
            if not tsv.is_file():
                cc3m.fetch_cc3m_tsv(tsv, url=url)
            max_rows = data.max_train_samples if split == "train" else None  # download_cc3m runs the preflight
            summaries[split] = cc3m.download_cc3m(tsv, layout.shard_dir(data, split), max_rows=max_rows, **options)
        return summaries
    if data.source == "webdataset":
        summaries = {"train": cc3m.index_existing_shards(layout.shard_dir(data, "train"))}
        val_tsv = Path(data.val_tsv) if data.val_tsv else root / "Validation_GCC-1.1.0-Validation.tsv"
        if not val_tsv.is_file():
            cc3m.fetch_cc3m_tsv(val_tsv, url=cc3m.OFFICIAL_VALIDATION_URL)
        summaries["val"] = cc3m.download_cc3m(val_tsv, layout.shard_dir(data, "val"), **options)
        return summaries
    raise ValueError(f"data.source must be synthetic, cc3m or webdataset, got {data.source!r}")


# --------------------------------------------------------------------------------------------------
# 02: eval sets


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


def _write_synthetic_eval_set(profile: Profile, set_cfg: EvalSetConfig) -> None:
    from otterlib.data import synthetic

    syn = profile.data.synthetic
    dest = layout.eval_set_dir(set_cfg)
    if set_cfg.name == "goi":
        synthetic.make_synthetic_goi(dest, syn.n_eval_goi, syn.image_size, seed=syn.seed + 101)
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


# --------------------------------------------------------------------------------------------------
# 03: training


def train_run(profile: Profile, setting: str, method: str, force: bool = False):
    """Train (or resume) one (setting, method) run; ``force`` deletes the run folder first."""
    from otterlib.train import run_training

    cfg = resolve_run(profile, setting, method)
    run_dir = Path(cfg.run_dir)
    if force and run_dir.exists():
        for child in run_dir.iterdir():
            if child.name != "03_train.ipynb":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    return run_training(cfg)


def read_log(run_dir: Path) -> pd.DataFrame:
    """A run's ``log.jsonl`` step rows as a DataFrame (for loss curves)."""
    rows = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines() if line.strip()]
    return pd.DataFrame([r for r in rows if "step" in r and "event" not in r])


# --------------------------------------------------------------------------------------------------
# 04: evaluation


def evaluate_run(profile: Profile, setting: str | None = None, method: str | None = None,
                 reference: str | None = None, mode: str | None = None) -> list[dict[str, Any]]:
    """Zero-shot FH@k / mAP of a trained run's best checkpoint (or of a reference model) on every eval set.

    Writes ``eval.jsonl`` (one row per eval set, with provenance) and ``hits_<set>.npz`` in the run folder.
    """
    from otterlib.checkpoint import BEST, checkpoint_dir, load_student_weights
    from otterlib.data.transforms import eval_transform
    from otterlib.evaluate import evaluate_zero_shot, write_eval_rows
    from otterlib.models import create_model, load_clip_reference
    from otterlib.templates import get_templates

    device = resolve_device(profile.train.device)
    mode = mode or profile.eval.mode
    if reference is not None:
        out_dir = layout.reference_dir(profile, reference)
        model = load_clip_reference(reference, device=device)
        transform = model.preprocess
        provenance: dict[str, Any] = {"setting": "reference", "method": reference, "kind": "reference",
                                      "checkpoint": reference}
    elif setting and method:
        cfg = resolve_run(profile, setting, method)
        out_dir = Path(cfg.run_dir)
        model = create_model(cfg.model)
        ckpt = checkpoint_dir(out_dir) / BEST
        meta = load_student_weights(model, ckpt)
        model.to(device)
        transform = eval_transform(profile.eval.image_size)
        provenance = {"setting": setting, "method": method, "kind": "trained", "checkpoint": str(ckpt),
                      "checkpoint_epoch": meta.get("epoch"), "config_hash": cfg.config_hash()}
    else:
        raise ValueError("give either setting and method, or reference")
    model.eval()
    rows = []
    sha = git_sha()
    for set_cfg in profile.eval.sets:
        eval_set = load_eval_set(set_cfg).with_existing_images()
        t0 = time.time()
        result = evaluate_zero_shot(model, eval_set, transform, templates=get_templates(profile.eval.templates),
                                    ks=tuple(profile.eval.ks), batch_size=profile.eval.batch_size,
                                    num_workers=profile.eval.num_workers, device=device,
                                    chunk_size=profile.eval.chunk_size, mode=mode)
        np.savez_compressed(layout.hits_path(out_dir, set_cfg.name, mode),
                            **{f"k{k}": np.asarray(v, dtype=bool) for k, v in result.hits.items()})
        rows.append(result.to_row(**provenance, profile=profile.name, templates=profile.eval.templates,
                                  n_images_missing=eval_set.info.get("n_dropped_missing", 0), git=sha,
                                  eval_seconds=round(time.time() - t0, 2),
                                  created=time.strftime("%Y-%m-%dT%H:%M:%S%z")))
    write_eval_rows(layout.eval_rows_path(out_dir, mode), rows)
    return rows


# --------------------------------------------------------------------------------------------------
# 05: results


def build_results(profile: Profile) -> dict[str, Any]:
    """Collect every eval row of the profile, write the comparison table, tally and plot; returns them."""
    from otterlib import report

    mode = profile.eval.mode
    all_rows = report.collect_rows(profile.results_root)
    rows = all_rows[all_rows["mode"] == mode]
    if rows.empty:
        raise FileNotFoundError(f"no {mode}-mode eval rows under {profile.results_root}; run 04_evaluate first")
    paths = report.write_tables(rows, layout.tables_dir(profile), title=f"{profile.name} profile, {mode} protocol")
    tally = report.tally(rows)
    return {"rows": rows, "table": report.comparison_table(rows), "tally": tally,
            "summary": report.tally_summary(tally), "paths": paths,
            "eval_sets": report.eval_set_summary(profile.results_root, mode)}


def bootstrap_table(profile: Profile, k: int = 1, n_boot: int = 1000) -> pd.DataFrame:
    """FH@k with a 95% percentile-bootstrap interval per (setting, method, eval set), and the paired-bootstrap
    p-value that OTTER is not better than that method on the same images."""
    from otterlib import report

    hits: dict[tuple[str, str, str], np.ndarray] = {}
    for s in profile.settings:
        for m in profile.methods:
            for set_cfg in profile.eval.sets:
                path = layout.hits_path(profile.run_dir(s.name, m), set_cfg.name, profile.eval.mode)
                if path.is_file():
                    hits[(s.name, m, set_cfg.name)] = np.load(path)[f"k{k}"]
    rows = []
    for (setting, method, eval_set), h in hits.items():
        lo, hi = report.bootstrap_ci(h, n_boot=n_boot)
        otter = hits.get((setting, "otter", eval_set))
        p = (report.paired_bootstrap_pvalue(otter, h, n_boot=n_boot)
             if otter is not None and method != "otter" else float("nan"))
        rows.append({"setting": setting, "method": method, "eval_set": eval_set, f"fh@{k} %": 100 * h.mean(),
                     "ci95_low %": 100 * lo, "ci95_high %": 100 * hi, "p(OTTER not better)": p})
    return pd.DataFrame(rows).round(3)


def otter_matching(profile: Profile, setting: str, n: int = 9) -> tuple[np.ndarray, list[str], Path]:
    """OTTER's target matrix ``α·I + (1−α)·M̃`` for the first ``n`` held-out validation pairs, computed with the
    run's final EMA teacher (eval mode), as in the paper's matching figure. Returns (targets (n, n), the n
    captions, the PNG written to ``results/<profile>/tables/matching_<setting>.png``)."""
    from otterlib import report
    from otterlib.checkpoint import LATEST, checkpoint_dir, load
    from otterlib.data.loader import build_eval_pairs_loader
    from otterlib.data.transforms import eval_transform
    from otterlib.losses import create_loss
    from otterlib.models import create_model
    from otterlib.train import loss_kwargs

    cfg = resolve_run(profile, setting, "otter")
    ckpt = load(checkpoint_dir(Path(cfg.run_dir)) / LATEST)
    teacher = create_model(cfg.model)
    teacher.load_state_dict(ckpt["teacher"]["module"])
    teacher.eval()
    loader = build_eval_pairs_loader(layout.manifest_path(cfg.data, "val"), batch_size=n,
                                     transform=eval_transform(cfg.train.image_size))
    images, captions = next(iter(loader))
    with torch.no_grad():
        t_img, t_txt = teacher(images, list(captions))
        targets, _ = create_loss("otter", **loss_kwargs(cfg)).targets(t_img, t_txt)
    path = report.plot_matching(targets.numpy(), captions, layout.tables_dir(profile) / f"matching_{setting}.png",
                                title=f"OTTER targets, {setting} (EMA teacher, held-out pairs)")
    return targets.numpy(), list(captions), path


def noisy_matching_analysis(profile: Profile, setting: str, method: str = "infonce", n_batches: int = 10,
                            scale: float = 100.0) -> tuple[pd.DataFrame, Path]:
    """The paper's motivation, measured with a trained run: on training batches of the global batch size,
    P = softmax(scale · v·tᵀ) of the run's best checkpoint; per batch the official ``dataset_analysis.py``
    statistics (mean paired probability, best non-paired probability, ...). Returns the table (one row per
    batch plus the mean) and a histogram of all off-diagonal probabilities (``tables/off_diag_<setting>.png``)."""
    from otterlib import report
    from otterlib.checkpoint import BEST, checkpoint_dir, load_student_weights
    from otterlib.data.loader import build_eval_pairs_loader
    from otterlib.data.transforms import eval_transform
    from otterlib.models import create_model

    cfg = resolve_run(profile, setting, method)
    model = create_model(cfg.model)
    load_student_weights(model, checkpoint_dir(Path(cfg.run_dir)) / BEST)
    model.eval()
    loader = build_eval_pairs_loader(layout.manifest_path(cfg.data, "train"), batch_size=cfg.train.batch_size,
                                     transform=eval_transform(cfg.train.image_size))
    rows, off_diagonal = [], []
    with torch.no_grad():
        for i, (images, captions) in enumerate(loader):
            if i == n_batches or len(captions) < cfg.train.batch_size:
                break
            img, txt = model(images, list(captions))
            probs = torch.softmax(scale * img @ txt.T, dim=1).numpy()
            rows.append(report.batch_matching_stats(probs))
            off_diagonal.append(probs[~np.eye(len(probs), dtype=bool)])
    if not rows:
        raise ValueError(f"fewer than {cfg.train.batch_size} training pairs: no full batch to analyse")
    table = pd.DataFrame(rows)
    table.loc["mean"] = table.mean()
    png = report.plot_off_diagonal_histogram(
        np.concatenate(off_diagonal), layout.tables_dir(profile) / f"off_diag_{setting}.png",
        title=f"{setting} / {method}: batches of {cfg.train.batch_size} training pairs")
    return table.round(4), png
