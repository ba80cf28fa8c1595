"""End to end: the smoke pipeline through papermill (reduced: one setting, tiny data, a few steps)."""
import json
import re

import nbformat
import pandas as pd
import pytest

from otterlib import runner
from otterlib.config import load_profile


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(tmp_path):
    overrides = {
        "results_dir": str(tmp_path / "results"),
        "data.sources.cc3m.root": str(tmp_path / "data" / "cc3m"),
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

    table = pd.read_csv(root / "tables" / "comparison.csv")  # tidy: one line per (set, line, metric), percent
    trained = table[table["kind"] == "trained"]
    assert list(dict.fromkeys(trained["method"])) == ["infonce", "label_smoothing", "kd", "otter"]
    assert set(table["metric"]) == {"fh@1", "fh@5", "fh@10", "map"} and set(table["eval_set"]) == {"goi", "in10k"}
    assert trained["value"].notna().all() and (trained["low"] <= trained["value"] + 1e-9).all()
    assert (trained["value"] <= trained["high"] + 1e-9).all()  # every trained number has its interval
    trivial = table[table["kind"] == "trivial"].set_index(["eval_set", "method", "metric"])["value"]
    assert trivial[("goi", "random", "fh@1")] < trivial[("goi", "constant", "fh@1")]  # chance, then a frequency prior
    assert table[table["method"] == "clip_rn50"]["value"].isna().all()  # not evaluated offline, shown as missing
    assert (root / "tables" / "comparison.png").stat().st_size > 0
    assert (root / "tables" / "difference.png").stat().st_size > 0   # OTTER − best baseline per cell
    assert (root / "tables" / "matching_tiny-scratch.png").stat().st_size > 0  # OTTER's target matrix figure
    assert (root / "tables" / "off_diag_tiny-scratch.png").stat().st_size > 0   # noisy-batch analysis
    assert (root / "trivial" / "eval.jsonl").is_file()  # written by 02
    tally = pd.read_csv(root / "tables" / "tally.csv")
    counted = tally[tally["tallied"]]
    assert len(counted) == 2 * 3  # one outcome per (setting, eval set, FH@k) cell; mAP beside
    assert set(counted["verdict"]) <= {"win", "tie", "loss"} and set(counted["fixed_verdict"]) <= {"win", "tie", "loss"}
    # the interval rule follows the interval of OTTER minus the best baseline; the fixed rule the difference
    for _, c in tally.iterrows():
        assert c["verdict"] == ("win" if c["low"] > 0 else "loss" if c["high"] < 0 else "tie")
        assert c["fixed_verdict"] == ("win" if c["diff"] > 0.1 else "loss" if c["diff"] < -0.1 else "tie")
        assert abs(c["diff"] - (c["otter"] - c["baseline"])) <= 0.002
        line = trained[(trained["eval_set"] == c["eval_set"]) & (trained["metric"] == c["metric"])].set_index("method")
        assert abs(line.loc["otter", "value"] - c["otter"]) <= 0.002  # the tally's values are the table's
        assert abs(line.drop(index="otter")["value"].max() - c["baseline"]) <= 0.002
    summary = (root / "tables" / "tally.md").read_text().splitlines()[0]
    counts = [int(n) for n in re.findall(r"\d+", summary)]
    assert counts[:2] == [len(counted), len(counted)]  # "6 of 6 evaluations available"
    assert counts[3:6] == [int((counted["verdict"] == o).sum()) for o in ("win", "tie", "loss")]
    closing = (root / "tables" / "closing.md").read_text()
    assert "not evidence about that claim" in closing and "synthetic" in closing and "34 of 42" in closing
    assert closing.strip() in (root / "tables" / "comparison.md").read_text()
    for nb in ("00_setup", "01_download_data", "02_prepare_eval_sets", "05_results", "06_noise_study"):
        assert (root / f"{nb}.ipynb").is_file()
    study = json.loads((root / "noise_study" / "study.json").read_text())
    assert study["n_runs"] == 2 * 2 * 2 * len(profile.methods) and (root / "noise_study" / "closing.md").is_file()
    download = next(c for c in nbformat.read(root / "01_download_data.ipynb", as_version=4).cells
                    if "prepare_training_data(" in c.source)  # img2dataset's chatter stays in the logs: one line a split
    assert [o["data"]["text/plain"].split(": all ")[0] for o in download.outputs] == ["cc3m/train", "cc3m/val"]
    assert any(line.startswith("Comparison table: ") for line in lines)

    # the console: a header, one line per step, then the table, the HTML index, the tally (and nothing else)
    assert len(lines) == 1 + len(runner.plan(profile)) + 4, "\n".join(lines)
    index = root / "html" / "index.html"
    assert f"HTML index: {index}" in lines and f"Tally: {summary}" in lines
    page = index.read_text()
    assert "<table" in page and "OTTER" in page and summary in page and 'src="figures/training_tiny-scratch.png"' in page
    executed = sorted(root.rglob("*.ipynb"))
    for nb_path in executed:  # every executed notebook has its HTML copy, linked from the index
        rel = nb_path.relative_to(root).with_suffix(".html").as_posix()
        assert (root / "html" / rel).is_file() and f'href="{rel}"' in page
        outputs = [o for c in nbformat.read(nb_path, as_version=4).cells for o in c.get("outputs", [])]
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), nb_path
    train_nb = nbformat.read(root / "tiny-scratch" / "otter" / "seed0" / "03_train.ipynb", as_version=4)
    bars = [o.text for c in train_nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout"]
    assert any(text.startswith("tiny-scratch/otter: 100%") and "3/3" in text for text in bars), bars

    rerun = []  # idempotent: everything but set-up and the tables is skipped
    assert runner.run("smoke", overrides, echo=rerun.append) == 0
    skipped = [line for line in rerun if "outputs exist, skipped" in line]
    assert len(skipped) == 3 + 2 * len(profile.methods)
