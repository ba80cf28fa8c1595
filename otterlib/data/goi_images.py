"""Open Images test images: download the official image list's URLs with img2dataset, named ``<ImageID>.jpg``,
keeping only images whose bytes match the list's ``OriginalMD5``.

The official list (``test-images-with-rotation.csv``; columns ``ImageID, Subset, OriginalURL, ...,
OriginalSize, OriginalMD5, ...``) gives each test image's original URL (mostly Flickr) and the MD5 of the
original file (base64 of the digest). A deleted Flickr photo can come back with status 200 as a placeholder
image, so a successful download proves nothing: img2dataset (``output_format="files"``, ``compute_hash="md5"``
of the downloaded bytes, keep-ratio resize of the shorter side to ``image_size``) downloads into
``<images_dir>/_img2dataset``, and only images whose MD5 equals ``OriginalMD5`` are moved to
``<images_dir>/<ImageID>.jpg``, the layout :func:`otterlib.data.evalsets.load_goi` reads. The others are
dropped and recorded, with the two hashes, in ``<images_dir>/_integrity.json`` (:func:`read_integrity`), which
also lists the verified images; :func:`integrity_counts` turns it into the counts shown in 02 and in the eval
rows. Rerunning skips images already in place (an interrupted download resumes) and retries the rejected ones.

Images copied from the official mirror instead (CVDF, see the README) are re-encoded copies: their MD5 is not
``OriginalMD5``, they are not in the record and count as ``unverified``.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from otterlib.data.img2dataset_child import ProgressLine, run_img2dataset

STAGING = "_img2dataset"
INTEGRITY_FILE = "_integrity.json"
"""In the images folder: ``{"verified": [ImageID...], "rejected": {ImageID: reason}}``."""


def _md5_hex(original_md5: object) -> str | None:
    """``OriginalMD5`` (base64 of the 16-byte digest) as 32 hex digits, or None when it is not one."""
    try:
        digest = base64.b64decode(str(original_md5), validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 16 else None


def read_image_list(csv_path: str | Path, image_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """``ImageID``, ``OriginalURL`` and ``md5`` (``OriginalMD5`` as hex) of the official list, restricted to
    ``image_ids`` when given. Rows without a URL or a valid ``OriginalMD5`` are an error (nothing to check)."""
    df = pd.read_csv(csv_path, usecols=["ImageID", "OriginalURL", "OriginalMD5"], dtype=str)
    if image_ids is not None:
        df = df[df["ImageID"].isin(set(image_ids))]
    if df["OriginalURL"].isna().any():
        raise ValueError(f"{csv_path}: {int(df['OriginalURL'].isna().sum())} rows without OriginalURL")
    df = df.assign(md5=df["OriginalMD5"].map(_md5_hex)).drop(columns="OriginalMD5")
    bad = df.loc[df["md5"].isna(), "ImageID"].tolist()
    if bad:
        raise ValueError(f"{csv_path}: {len(bad)} row(s) without a valid OriginalMD5 (base64 of an MD5 digest), "
                         f"e.g. {bad[:5]}; the download checks every image against it")
    return df.reset_index(drop=True)


@dataclass
class IntegrityRecord:
    """What the MD5 check decided per ImageID: ``verified`` ids and ``rejected`` ids with the reason."""

    verified: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)


def read_integrity(images_dir: str | Path) -> IntegrityRecord:
    """The record of ``images_dir`` (empty when no download wrote one)."""
    path = Path(images_dir) / INTEGRITY_FILE
    if not path.is_file():
        return IntegrityRecord()
    data = json.loads(path.read_text(encoding="utf-8"))
    return IntegrityRecord(set(data["verified"]), dict(data["rejected"]))


def record_integrity(images_dir: str | Path, verified: Iterable[str], rejected: Mapping[str, str]) -> IntegrityRecord:
    """Merge new outcomes into the record (a later outcome replaces an earlier one) and write it atomically."""
    record = read_integrity(images_dir)
    record.verified = (record.verified - set(rejected)) | set(verified)
    record.rejected = {k: v for k, v in record.rejected.items() if k not in record.verified} | dict(rejected)
    path = Path(images_dir) / INTEGRITY_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"check": "md5 of the downloaded bytes == OriginalMD5 of the official image list",
                               "verified": sorted(record.verified), "rejected": dict(sorted(record.rejected.items()))},
                              indent=1), encoding="utf-8")
    tmp.replace(path)
    return record


def integrity_counts(images_dir: str | Path, images: Mapping[str, Path]) -> dict[str, int]:
    """For an eval set's images (ImageID -> expected file): how many on disk passed the MD5 check, how many
    were downloaded but rejected by it (so absent), and how many on disk were never checked (e.g. mirror
    copies; every image of a set without a record, such as IN10K)."""
    record = read_integrity(images_dir)
    ids = set(images)
    present = {i for i, path in images.items() if Path(path).is_file()}
    return {"n_images_md5_verified": len(present & record.verified),
            "n_images_md5_rejected": len((ids - present) & set(record.rejected)),
            "n_images_unverified": len(present - record.verified)}


def download_goi_images(image_list_csv: str | Path, images_dir: str | Path, image_ids: Iterable[str] | None = None,
                        *, image_size: int = 256, processes_count: int = 4, thread_count: int = 32,
                        timeout: int = 10, retries: int = 1, verbose: bool = True,
                        **img2dataset_options: Any) -> dict[str, int]:
    """Download the test images that are not yet in ``images_dir`` and keep those matching ``OriginalMD5``;
    returns counts (``requested``, ``already_present``, ``downloaded`` (verified), ``rejected_md5``, ``failed``)."""
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    todo = read_image_list(image_list_csv, image_ids)
    requested = len(todo)
    present = todo["ImageID"].map(lambda i: (images_dir / f"{i}.jpg").is_file())
    todo = todo[~present]
    counts = {"requested": requested, "already_present": int(present.sum()), "downloaded": 0, "rejected_md5": 0,
              "failed": 0}
    if todo.empty:
        return counts
    staging = images_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    urls = staging / "urls.parquet"
    todo.rename(columns={"OriginalURL": "url", "ImageID": "image_id", "md5": "original_md5"}).to_parquet(
        urls, index=False)
    kwargs = {"url_list": str(urls), "input_format": "parquet", "url_col": "url",
              "save_additional_columns": ["image_id", "original_md5"], "output_format": "files",
              "output_folder": str(staging / "out"), "image_size": image_size, "resize_mode": "keep_ratio",
              "resize_only_if_bigger": True, "processes_count": processes_count, "thread_count": thread_count,
              "timeout": timeout, "retries": retries, "enable_wandb": False, "extract_exif": False,
              "compute_hash": "md5", **img2dataset_options}
    progress = ProgressLine("GOI test images", len(todo)) if verbose else None
    run_img2dataset(kwargs, staging / "download.log", progress)
    verified, rejected = [], {}
    for meta in (staging / "out").rglob("*.json"):
        if meta.name.endswith("_stats.json"):
            continue
        info = json.loads(meta.read_text())
        image = meta.with_suffix(".jpg")
        if info.get("status") != "success" or not image.is_file():
            continue
        if info["md5"] == info["original_md5"]:
            os.replace(image, images_dir / f"{info['image_id']}.jpg")
            verified.append(info["image_id"])
        else:
            rejected[info["image_id"]] = (f"md5 of the downloaded bytes {info['md5']} != OriginalMD5 "
                                          f"{info['original_md5']} (e.g. a placeholder for a deleted photo)")
    record_integrity(images_dir, verified, rejected)
    counts.update(downloaded=len(verified), rejected_md5=len(rejected), failed=len(todo) - len(verified) - len(rejected))
    shutil.rmtree(staging)
    return counts
