"""Stage functions behind the notebooks: reruns of the smoke download stage."""
import json

import pytest

from otterlib import layout, stages
from otterlib.config import load_profile


@pytest.mark.slow
def test_smoke_download_stage_reruns_and_recovers_an_unfinished_download(tmp_path):
    profile = load_profile("smoke", {"data.sources.cc3m.root": str(tmp_path / "d"),
                                     "data.synthetic": {"n_train": 40, "n_val": 16}})
    first = stages.prepare_training_data(profile)["cc3m"]
    assert (first["train"].successes, first["val"].successes) == (40, 16)
    manifest = layout.manifest_path(profile.data.source("cc3m"), "train")
    before = manifest.stat().st_mtime_ns
    again = stages.prepare_training_data(profile)["cc3m"]  # a new server port, but nothing to download
    assert again["train"].successes == 40 and manifest.stat().st_mtime_ns == before
    manifest.unlink()  # as if the download had been interrupted before finishing
    resumed = stages.prepare_training_data(profile)["cc3m"]
    assert resumed["train"].successes == 40 and manifest.is_file()
    assert layout.training_data_ready(profile)

    data = json.loads(manifest.read_text())  # as download_cc3m writes it when img2dataset gave up on a shard
    manifest.write_text(json.dumps(data | {"complete": False, "n_input_rows": 80, "missing_rows": 40,
                                           "missing_shards": ["00001"]}))
    assert not layout.training_data_ready(profile), "01 must run again while the download is incomplete"
    profile.data.allow_partial = True
    assert layout.training_data_ready(profile)
    profile.data.allow_partial = False
    redone = stages.prepare_training_data(profile)["cc3m"]
    assert redone["train"].complete and json.loads(manifest.read_text())["complete"] is True


def test_results_figures_cover_the_settings_trained_so_far(tmp_path):
    """Settings trained on separate machines into one results/: 05 shows what has finished, nothing more."""
    profile = load_profile("paper", {"results_dir": str(tmp_path)})
    assert stages.trained_settings(profile, "otter") == []
    for setting, method in [("wit-rn50-declutr-sci-base", "otter"), ("cc3m-rn50-sbert-base", "otter"),
                            ("cc3m-rn50-sbert-base", "infonce")]:
        run_dir = profile.run_dir(setting, method, 0)
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text("{}")
    profile.run_dir("cc3m-rn50-declutr-sci-base", "otter", 0).mkdir(parents=True)  # still training
    assert stages.trained_settings(profile, "otter") == ["cc3m-rn50-sbert-base", "wit-rn50-declutr-sci-base"]
    assert stages.trained_settings(profile, "infonce") == ["cc3m-rn50-sbert-base"]
    assert stages.trained_settings(profile, "dino") == []
