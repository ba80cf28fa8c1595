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
    import io

    import webdataset as wds

    from otterlib.data.manifest import index_existing_shards
    from otterlib.data.synthetic import generate_pairs, render_scene

    folder.mkdir(parents=True, exist_ok=True)
    pairs = generate_pairs(n, 0.2, seed)
    for start in range(0, n, per_shard):
        with wds.TarWriter(str(folder / f"{start // per_shard:05d}.tar")) as sink:
            for p in pairs[start:start + per_shard]:
                buf = io.BytesIO()
                render_scene(p.scene, image_size, seed=seed).save(buf, format="JPEG")
                sink.write({"__key__": p.key, "jpg": buf.getvalue(), "txt": p.caption})
    index_existing_shards(folder)
    return folder / "sizes.json"


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    """A data root with ``shards/train`` (96 pairs) and ``shards/val`` (32 pairs), 32 px."""
    root = tmp_path_factory.mktemp("pairs")
    write_pair_shards(root / "shards" / "train", 96, seed=1)
    write_pair_shards(root / "shards" / "val", 32, seed=2)
    return root
