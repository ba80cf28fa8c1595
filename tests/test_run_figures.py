"""Stage 03's read-outs: validation retrieval in percent with chance, run facts, and the training-curve figures."""
import json

import pytest

from otterlib import layout, plots, stages
from otterlib.config import load_profile


def _val(r1: float, n: int = 200) -> dict:
    return {"i2t_r@1": r1, "t2i_r@1": r1 / 2, "mean_r@1": 0.75 * r1, "i2t_r@5": 2 * r1, "t2i_r@5": r1,
            "loss": 5.0, "n": n}


def _fake_run(run_dir, method, val_r1=(0.05, 0.10, 0.08), resumed_epoch=None):
    """log.jsonl (step rows, epoch rows; a resumed run repeats ``resumed_epoch``) and metrics.json."""
    rows = [{"event": "start"}]
    for epoch, r1 in enumerate(val_r1, 1):
        distill = 0.0 if method == "infonce" else 1.0
        for step in (2 * epoch - 1, 2 * epoch):
            rows.append({"step": step, "epoch": epoch - 1, "loss": 8.0 - step + distill, "contrastive": 8.0 - step,
                         "distill": distill, "logit_scale": 50.0 - step / 10,
                         **({} if method == "infonce" else {"distill_logit_scale": 49.0})})
        rows.append({"event": "epoch_end", "epoch": epoch, "val": _val(0.01 if epoch == resumed_epoch else r1)})
        if epoch == resumed_epoch:
            rows.append({"event": "epoch_end", "epoch": epoch, "val": _val(r1)})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scales = {"logit_scale": 49.4} | ({} if method == "infonce" else {"distill_logit_scale": 49.0})
    (run_dir / "metrics.json").write_text(json.dumps({
        "setting": "s", "method": method, "epochs": len(val_r1), "global_steps": 2 * len(val_r1),
        "train_wall_s": 90.0, "val_last": _val(val_r1[-1]), "scales": scales}))
    return run_dir


def test_retrieval_table_is_in_percent_with_the_best_epoch_and_chance(tmp_path):
    run = _fake_run(tmp_path / "run", "otter", resumed_epoch=2)
    table = stages.retrieval_table(run)
    assert list(table.columns) == ["epoch 3 (last)", "epoch 2 (best)", "chance (k/200)"]
    assert table.loc["image→text R@1"].tolist() == [8.0, 10.0, 0.5]
    assert table.loc["text→image R@5"].tolist() == [8.0, 10.0, 2.5]
    assert table.index.name == "validation retrieval (%), 200 pairs"
    assert stages.read_epochs(run)["epoch"].tolist() == [1, 2, 3]  # the resumed epoch counts once, last row wins


def test_run_facts_name_the_inverse_temperatures(tmp_path):
    facts = stages.run_facts(_fake_run(tmp_path / "run", "kd"))
    assert facts["training time (min)"] == 1.5 and facts["optimizer steps"] == 6
    assert facts["inverse temperature (logit scale), contrastive s, final"] == 49.4
    assert facts["inverse temperature (logit scale), distillation s_d, final"] == 49.0


@pytest.fixture
def drawn(monkeypatch):
    """The axes of every figure saved through :func:`otterlib.plots.save_figure` (titles, labels, legends)."""
    seen = []
    save = plots.save_figure

    def spy(fig, path):
        seen.append([{"x": ax.get_xlabel(), "y": ax.get_ylabel(), "title": ax.get_title(),
                      "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []}
                     for ax in fig.axes])
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", spy)
    return seen


def test_run_curves_label_every_axis_and_draw_the_chance_level(tmp_path, drawn):
    run = _fake_run(tmp_path / "run", "infonce")
    png = stages.run_curves(run, "s / infonce")
    assert png == layout.training_curves_path(run) and png.stat().st_size > 0
    loss, scale, val = drawn[0]
    assert all(ax["y"] and ax["x"] for ax in drawn[0])
    assert "inverse temperature" in scale["y"] and "logit scale" in scale["y"]
    assert loss["legend"] == ["total"]  # InfoNCE: no distillation term, the contrastive term is the total
    assert val["x"] == "epoch" and "chance (1/200)" in val["legend"]


def test_setting_curves_draw_every_method_with_a_log(tmp_path, drawn):
    profile = load_profile("smoke", {"results_dir": str(tmp_path)})
    for method in ("otter", "infonce"):
        _fake_run(profile.run_dir("tiny-scratch", method, 0), method)
    stages.run_curves(_fake_run(tmp_path / "kd", "kd"))
    png = stages.setting_curves(profile, "tiny-scratch")
    assert png == layout.setting_curves_path(profile, "tiny-scratch") and png.stat().st_size > 0
    assert drawn[0][0]["legend"] == ["total", "contrastive", "distillation"]  # KD: all three terms
    loss, scale, val = drawn[1]
    assert loss["legend"] == scale["legend"] == ["InfoNCE", "OTTER"]
    assert "inverse temperature" in scale["y"] and val["y"] == "validation mean R@1 (%)"
    with pytest.raises(FileNotFoundError, match="lite0-minilm"):
        stages.setting_curves(profile, "lite0-minilm")
