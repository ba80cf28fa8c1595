"""Training refuses an incomplete download unless data.allow_partial says otherwise (issue 9.10)."""
import json
from pathlib import Path

import pytest

from otterlib.config import LossConfig, ModelConfig, RunConfig, RunData, TrainConfig
from otterlib.data.loader import IncompleteDownloadError

from conftest import write_pair_shards


def mark_incomplete(manifest: Path, missing_rows: int = 24) -> None:
    """Make ``sizes.json`` say what download_cc3m writes when img2dataset gave up on a shard of 24 rows."""
    data = json.loads(manifest.read_text())
    data.update(complete=False, n_input_rows=data["n_rows"] + missing_rows, missing_rows=missing_rows,
                missing_shards=["00009"])
    manifest.write_text(json.dumps(data))


def run_config(tmp_path: Path, allow_partial: bool) -> RunConfig:
    model = ModelConfig(image_encoder="tiny_cnn", text_encoder="tiny_bert", embed_dim=16, pretrained=False,
                        max_text_tokens=16)
    train = TrainConfig(epochs=1, batch_size=8, precision="fp32", device="cpu", num_workers=0, shuffle_buffer=8,
                        image_size=32, max_steps_per_epoch=1, channels_last=False)
    return RunConfig(profile="test", setting="tiny", method="infonce", model=model, train=train, loss=LossConfig(),
                     data=RunData(root=str(tmp_path / "data"), allow_partial=allow_partial),
                     run_dir=str(tmp_path / f"run_{allow_partial}"), offline=True)


def test_training_refuses_an_incomplete_download_unless_allowed(tmp_path):
    from otterlib.train import train

    manifest = write_pair_shards(tmp_path / "data" / "shards" / "train", 24, seed=1)
    write_pair_shards(tmp_path / "data" / "shards" / "val", 8, seed=2)
    mark_incomplete(manifest)
    with pytest.raises(IncompleteDownloadError, match=r"(?s)24 of 48 rows.*00009.*rerun 01_download_data"):
        train(run_config(tmp_path, allow_partial=False), progress=False)
    assert not (tmp_path / "run_False" / "checkpoints").exists()
    with pytest.warns(UserWarning, match="24 of 48 rows"):
        result = train(run_config(tmp_path, allow_partial=True), progress=False)
    assert result.metrics["global_steps"] == 1


def test_the_download_stage_counts_as_done_only_with_complete_readable_manifests(tmp_path):
    from otterlib import layout
    from otterlib.config import load_profile

    profile = load_profile("smoke", {"data.sources.cc3m.root": str(tmp_path)})
    assert not layout.training_data_ready(profile)  # nothing downloaded yet
    manifest = write_pair_shards(tmp_path / "shards" / "train", 24, seed=1)
    write_pair_shards(tmp_path / "shards" / "val", 8, seed=2)
    assert layout.training_data_ready(profile)
    mark_incomplete(manifest)
    assert not layout.training_data_ready(profile)  # ./run_all.sh reruns 01, which resumes
    profile.data.allow_partial = True
    assert layout.training_data_ready(profile)
    next(manifest.parent.glob("*.tar")).unlink()
    assert not layout.training_data_ready(profile)  # a listed tar is gone


def test_the_download_stage_is_done_when_every_source_of_the_selected_settings_is(tmp_path):
    from otterlib import layout
    from otterlib.config import load_profile

    profile = load_profile("paper", {f"data.sources.{n}.root": str(tmp_path / n) for n in ("cc3m", "yfcc15m", "wit")})
    cc3m, wit = "cc3m-rn50-declutr-sci-base", "wit-rn50-declutr-sci-base"
    for name in ("cc3m", "wit"):
        write_pair_shards(tmp_path / name / "shards" / "train", 24, seed=1)
        write_pair_shards(tmp_path / name / "shards" / "val", 8, seed=2)
    assert layout.training_data_ready(profile, [cc3m]) and layout.training_data_ready(profile, [cc3m, wit])
    assert not layout.training_data_ready(profile)  # yfcc15m's setting has nothing yet
    mark_incomplete(tmp_path / "wit" / "shards" / "val" / "sizes.json")
    assert not layout.training_data_ready(profile, [wit]) and layout.training_data_ready(profile, [cc3m])
