"""Test-wide settings: offline environment, and the location of the shared real-scale metadata."""
import os
from pathlib import Path

import pytest

from otterlib.env import OFFLINE_ENV

os.environ.update(OFFLINE_ENV)
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED_METADATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "otter-metadata"


@pytest.fixture
def shared_metadata() -> Path:
    """``../shared/data/otter-metadata`` (public OTTER metadata); the test is skipped when it is absent."""
    if not SHARED_METADATA.is_dir():
        pytest.skip(f"{SHARED_METADATA} not present")
    return SHARED_METADATA


def write_pair_shards(folder: Path, n: int, seed: int, image_size: int = 32, per_shard: int = 24) -> Path:
    """Webdataset tars of synthetic captioned shapes (as img2dataset writes them) + ``sizes.json``."""
    from otterlib.bench_loader import write_jpeg_shards

    return write_jpeg_shards(folder, n, image_size, per_shard, seed, noise_fraction=0.2)


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    """A data root with ``shards/train`` (96 pairs) and ``shards/val`` (32 pairs), 32 px."""
    root = tmp_path_factory.mktemp("pairs")
    write_pair_shards(root / "shards" / "train", 96, seed=1)
    write_pair_shards(root / "shards" / "val", 32, seed=2)
    return root
