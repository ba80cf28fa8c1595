"""Stage 03: train one (setting, method, seed) run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from otterlib.config import Profile, resolve_run


def train_run(profile: Profile, setting: str, method: str, seed: int | None = None, force: bool = False):
    """Train (or resume) one (setting, method, seed) run (``seed`` None: the setting's first seed);
    ``force`` deletes the run folder first."""
    from otterlib.train import run_training

    cfg = resolve_run(profile, setting, method, seed)
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
