"""Open Images test images: download the official image list's URLs with img2dataset, named ``<ImageID>.jpg``.

The official list (``test-images-with-rotation.csv``; columns ``ImageID, Subset, OriginalURL, ...``) gives
each test image's original URL. img2dataset (``output_format="files"``, keep-ratio resize of the shorter
side to ``image_size``) downloads them into ``<images_dir>/_img2dataset``; each success is then moved to
``<images_dir>/<ImageID>.jpg``, the layout :func:`otterlib.data.evalsets.load_goi` reads. Rerunning skips
images already in place, so an interrupted download resumes.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from otterlib.data.cc3m import run_img2dataset

STAGING = "_img2dataset"


def read_image_list(csv_path: str | Path, image_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """``ImageID`` and ``OriginalURL`` of the official list, restricted to ``image_ids`` when given."""
    df = pd.read_csv(csv_path, usecols=["ImageID", "OriginalURL"], dtype=str)
    if df["OriginalURL"].isna().any():
        raise ValueError(f"{csv_path}: {int(df['OriginalURL'].isna().sum())} rows without OriginalURL")
    if image_ids is not None:
        wanted = set(image_ids)
        df = df[df["ImageID"].isin(wanted)]
    return df.reset_index(drop=True)


def download_goi_images(image_list_csv: str | Path, images_dir: str | Path, image_ids: Iterable[str] | None = None,
                        *, image_size: int = 256, processes_count: int = 4, thread_count: int = 32,
                        timeout: int = 10, retries: int = 1, verbose: bool = True,
                        **img2dataset_options: Any) -> dict[str, int]:
    """Download the test images that are not yet in ``images_dir``; returns counts
    (``requested``, ``already_present``, ``downloaded``, ``failed``)."""
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    todo = read_image_list(image_list_csv, image_ids)
    requested = len(todo)
    present = todo["ImageID"].map(lambda i: (images_dir / f"{i}.jpg").is_file())
    todo = todo[~present]
    counts = {"requested": requested, "already_present": int(present.sum()), "downloaded": 0, "failed": 0}
    if todo.empty:
        return counts
    staging = images_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    urls = staging / "urls.parquet"
    todo.rename(columns={"OriginalURL": "url", "ImageID": "image_id"}).to_parquet(urls, index=False)
    kwargs = {"url_list": str(urls), "input_format": "parquet", "url_col": "url",
              "save_additional_columns": ["image_id"], "output_format": "files",
              "output_folder": str(staging / "out"), "image_size": image_size, "resize_mode": "keep_ratio",
              "resize_only_if_bigger": True, "processes_count": processes_count, "thread_count": thread_count,
              "timeout": timeout, "retries": retries, "enable_wandb": False, "extract_exif": False,
              **img2dataset_options}
    run_img2dataset(kwargs, staging / "download.log", verbose)
    for meta in (staging / "out").rglob("*.json"):
        if meta.name.endswith("_stats.json"):
            continue
        info = json.loads(meta.read_text())
        image = meta.with_suffix(".jpg")
        if info.get("status") == "success" and image.is_file():
            os.replace(image, images_dir / f"{info['image_id']}.jpg")
            counts["downloaded"] += 1
    counts["failed"] = len(todo) - counts["downloaded"]
    shutil.rmtree(staging)
    return counts
