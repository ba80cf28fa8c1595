"""Stage 00: load a profile, set the environment and describe the machine."""
from __future__ import annotations

import shutil
from typing import Any

from otterlib import layout
from otterlib.config import Profile, load_profile, save_yaml
from otterlib.env import configure_offline, git_sha, resolve_device, runtime_info


def setup(profile_name: str, overrides: dict[str, Any] | None = None) -> tuple[Profile, dict[str, Any]]:
    """Load the profile, set the offline environment, write ``results/<profile>/profile.yaml``; returns
    the profile and a table of facts about this machine (versions, device, disk)."""
    profile = load_profile(profile_name, overrides)
    configure_offline(profile.offline)
    profile.results_root.mkdir(parents=True, exist_ok=True)
    save_yaml(profile, profile.results_root / "profile.yaml")
    facts = runtime_info() | {
        "profile": profile.name, "offline": profile.offline, "git": git_sha(),
        "settings": [s.name for s in profile.settings], "methods": profile.methods,
    }
    for name in profile.used_sources():
        root = layout.source_root(profile.data.source(name))
        root.mkdir(parents=True, exist_ok=True)
        facts[f"free_disk_gb ({name} data)"] = round(shutil.disk_usage(root).free / 1e9, 1)
    facts["device (train)"] = str(resolve_device(profile.train.device))
    return profile, facts
