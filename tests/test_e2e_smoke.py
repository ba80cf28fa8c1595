"""End to end: the smoke pipeline through papermill (reduced: one setting, tiny data, a few steps)."""
import json
import re

import pandas as pd
import pytest

from otterlib import runner
from otterlib.config import load_profile


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(tmp_path):
    overrides = {
        "results_dir": str(tmp_path / "results"),
        "data.root": str(tmp_path / "data" / "cc3m"),
        "data.synthetic": {"n_train": 200, "n_val": 48, "n_eval_goi": 40, "n_eval_in10k": 40},
        "eval.sets": [{"name": "goi", "metadata_dir": str(tmp_path / "eval" / "goi"),
                       "images_dir": str(tmp_path / "eval" / "goi" / "images")},
                      {"name": "in10k", "metadata_dir": str(tmp_path / "eval" / "in10k"),
                       "images_dir": str(tmp_path / "eval" / "in10k" / "images")}],
        "settings": [{"name": "tiny-scratch", "model": {"image_encoder": "tiny_cnn", "text_encoder": "tiny_bert",
                                                        "embed_dim": 64, "pretrained": False, "max_text_tokens": 32},
                      "train": {"epochs": 1, "max_steps_per_epoch": 3}}],
        "noise_study": {"noise_levels": [0.0, 0.5], "sizes": [64, 96], "seeds": [0, 1], "steps": 4, "batch_size": 32,
                        "embed_dim": 16, "record_every": 2, "n_boot": 100, "workers": 1,
                        "cache_dir": str(tmp_path / "data" / "features")},
    }
    lines = []
    assert runner.run("smoke", overrides, echo=lines.append) == 0, "\n".join(lines)
    profile = load_profile("smoke", overrides)
    root = profile.results_root

    sizes = json.loads((tmp_path / "data" / "cc3m" / "shards" / "train" / "sizes.json").read_text())
    assert sizes["total"] == 200 - 2  # 1 % of the rows are dead URLs (404), as in CC3M
    assert sizes["failures_by_status"] == {"HTTP Error 404": 2}
    assert json.loads((tmp_path / "data" / "cc3m" / "shards" / "val" / "sizes.json").read_text())["total"] == 48

    for method in profile.methods:
        run = root / "tiny-scratch" / method / "seed0"
        assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "latest.pt").is_file()
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["global_steps"] == 3 and metrics["method"] == method
        rows = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
        assert {r["dataset"] for r in rows} == {"goi", "in10k"}
        for r in rows:
            assert r["n_images"] == 40 and r["setting"] == "tiny-scratch" and r["method"] == method
            assert r["git"] and r["config_hash"] == metrics["config_hash"] and r["profile"] == "smoke"
            assert all(0.0 <= v <= 1.0 for v in r["metrics"].values())
            assert r["metrics"]["fh@1"] <= r["metrics"]["fh@5"] <= r["metrics"]["fh@10"]
        for nb in ("03_train.ipynb", "04_evaluate.ipynb"):
            assert (run / nb).is_file()

    table = pd.read_csv(root / "tables" / "comparison.csv", header=[0, 1, 2], index_col=0)
    assert list(table.index) == ["InfoNCE", "LS", "KD", "OTTER"]
    assert table.shape[1] == 2 * 3  # {GOI, IN10K} x {FH@1, FH@5, FH@10}
    assert (root / "tables" / "comparison.png").stat().st_size > 0
    assert (root / "tables" / "matching_tiny-scratch.png").stat().st_size > 0  # OTTER's target matrix figure
    assert (root / "tables" / "off_diag_tiny-scratch.png").stat().st_size > 0   # noisy-batch analysis
    tally = pd.read_csv(root / "tables" / "tally.csv")
    assert len(tally) == table.shape[1]  # one outcome per (setting, eval set, metric) cell
    assert set(tally["outcome"]) <= {"win", "tie", "loss"}
    # outcomes follow OTTER minus the best baseline (ties within 0.1 points; the csv rounds to 0.01 points)
    diff, outcome = tally["diff_points"], tally["outcome"]
    assert (diff[outcome == "win"] >= 0.095).all() and (diff[outcome == "loss"] <= -0.095).all()
    assert (diff[outcome == "tie"].abs() <= 0.105).all()
    assert (diff - (tally["otter"] - tally["best_baseline_value"])).abs().max() <= 0.02
    for _, cell in tally.iterrows():  # the tally's values are the table's (rounded to 0.1 there)
        column = ("tiny-scratch", {"goi": "GOI", "in10k": "IN10K"}[cell["eval_set"]], cell["metric"].upper())
        assert abs(table.loc["OTTER", column] - cell["otter"]) <= 0.06
        assert abs(table.drop(index="OTTER").loc[:, column].max() - cell["best_baseline_value"]) <= 0.06
    summary = [line for line in (root / "tables" / "comparison.md").read_text().splitlines() if line.strip()][-1]
    counts = [int(n) for n in re.findall(r"\d+", summary)[:4]]  # wins, ties, losses, cells
    assert counts == [*(int((tally["outcome"] == o).sum()) for o in ("win", "tie", "loss")), len(tally)]
    for nb in ("00_setup", "01_download_cc3m", "02_prepare_eval_sets", "05_results", "06_noise_study"):
        assert (root / f"{nb}.ipynb").is_file()
    study = json.loads((root / "noise_study" / "study.json").read_text())
    assert study["n_runs"] == 2 * 2 * 2 * len(profile.methods) and (root / "noise_study" / "closing.md").is_file()
    assert any(line.startswith("Comparison table: ") for line in lines)

    rerun = []  # idempotent: everything but set-up and the tables is skipped
    assert runner.run("smoke", overrides, echo=rerun.append) == 0
    skipped = [line for line in rerun if "outputs exist, skipped" in line]
    assert len(skipped) == 3 + 2 * len(profile.methods)
