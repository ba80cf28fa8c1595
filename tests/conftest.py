"""Test-wide settings: offline environment, and the location of the shared real-scale metadata."""
import os
from pathlib import Path

import pytest

from otterlib.env import OFFLINE_ENV

os.environ.update(OFFLINE_ENV)

SHARED_METADATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "otter-metadata"


@pytest.fixture
def shared_metadata() -> Path:
    """``../shared/data/otter-metadata`` (public OTTER metadata); the test is skipped when it is absent."""
    if not SHARED_METADATA.is_dir():
        pytest.skip(f"{SHARED_METADATA} not present")
    return SHARED_METADATA
