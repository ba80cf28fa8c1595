"""Tables, tally and bootstrap from eval rows (hand-made rows with known outcomes)."""
import json

import numpy as np
import pandas as pd
import pytest

from otterlib import report


def _rows(values: dict[tuple[str, str, str], dict[str, float]], setting="s1"):
    out = []
    for (method, dataset, _), metrics in values.items():
        out.append({"setting": setting, "method": method, "dataset": dataset, "mode": "paper", "metrics": metrics})
    return out


@pytest.fixture
def rows(tmp_path):
    data = {
        ("infonce", "goi", ""): {"fh@1": 0.20, "fh@5": 0.50, "fh@10": 0.60},
        ("label_smoothing", "goi", ""): {"fh@1": 0.21, "fh@5": 0.52, "fh@10": 0.70},
        ("kd", "goi", ""): {"fh@1": 0.19, "fh@5": 0.51, "fh@10": 0.61},
        ("otter", "goi", ""): {"fh@1": 0.25, "fh@5": 0.5205, "fh@10": 0.65},
    }
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(data)))
    return report.read_rows([path])


def test_read_rows_long_format(rows):
    assert len(rows) == 12 and set(rows.columns) >= {"setting", "method", "eval_set", "metric", "value"}


def test_seeds_are_kept_and_tables_average_over_them(tmp_path):
    base = {"setting": "s1", "dataset": "goi", "mode": "paper"}
    lines = [dict(base, method="otter", seed=0, metrics={"fh@1": 0.20}),
             dict(base, method="otter", seed=1, metrics={"fh@1": 0.30}),
             dict(base, method="infonce", seed=0, metrics={"fh@1": 0.10})]
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    rows = report.read_rows([path])
    assert sorted(rows[rows["method"] == "otter"]["seed"]) == [0, 1]
    table = report.comparison_table(rows, metrics=("fh@1",))
    assert table.loc["OTTER", ("s1", "GOI", "FH@1")] == 25.0


def test_comparison_table_is_percent_with_methods_in_paper_order(rows):
    table = report.comparison_table(rows)
    assert list(table.index) == ["InfoNCE", "LS", "KD", "OTTER"]
    assert table.loc["OTTER", ("s1", "GOI", "FH@1")] == 25.0
    assert [c[2] for c in table.columns] == ["FH@1", "FH@5", "FH@10"]


def test_tally_win_tie_loss_against_best_baseline(rows):
    t = report.tally(rows, tie_tol=0.1).set_index("metric")
    assert t.loc["fh@1", "outcome"] == "win" and t.loc["fh@1", "best_baseline"] == "label_smoothing"
    assert t.loc["fh@5", "outcome"] == "tie"      # 52.05 vs 52.0
    assert t.loc["fh@10", "outcome"] == "loss"    # 65 vs 70
    assert report.tally_summary(report.tally(rows)).startswith("OTTER wins 1, ties 1, loses 1 of 3")


def test_tally_skips_incomplete_cells(rows):
    only_otter = rows[rows["method"] == "otter"]
    assert report.tally(only_otter).empty


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.random(100) < 0.3, rng.random(10000) < 0.3
    lo_s, hi_s = report.bootstrap_ci(small)
    lo_l, hi_l = report.bootstrap_ci(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5
    with pytest.raises(ValueError):
        report.bootstrap_ci(np.array([]))


def test_paired_bootstrap_pvalue_detects_a_clear_difference():
    rng = np.random.default_rng(1)
    b = rng.random(2000) < 0.3
    a = b | (rng.random(2000) < 0.2)   # A hits wherever B does, and more
    assert report.paired_bootstrap_pvalue(a, b) < 0.01
    assert report.paired_bootstrap_pvalue(b, a) > 0.99


def test_hit_vectors_roundtrip_with_image_ids(tmp_path):
    hits = {1: np.array([True, False, False]), 5: np.array([True, True, False])}
    path = report.save_hits(tmp_path / "hits_goi.npz", ["b", "a", "c"], hits)
    with np.load(path, allow_pickle=False) as raw:
        assert sorted(raw.files) == ["image_ids", "k1", "k5"] and raw["image_ids"].dtype.kind == "U"
    loaded = report.load_hits(path)
    assert loaded.image_ids.tolist() == ["b", "a", "c"] and loaded.ks == (1, 5)
    assert loaded.at(5).tolist() == [True, True, False]
    with pytest.raises(KeyError, match="k=10.*1, 5"):
        loaded.at(10)
    with pytest.raises(ValueError, match="repeated image id"):
        report.save_hits(tmp_path / "x.npz", ["a", "a"], {1: np.array([True, False])})
    with pytest.raises(ValueError, match="2 image ids"):
        report.save_hits(tmp_path / "x.npz", ["a", "b"], {1: np.array([True])})


def test_hits_pair_by_image_id_whatever_their_order(tmp_path):
    rng = np.random.default_rng(2)
    ids = [f"img{i}" for i in range(500)]
    b = rng.random(500) < 0.3
    a = b | (rng.random(500) < 0.2)
    perm = rng.permutation(500)
    ha = report.save_hits(tmp_path / "a.npz", ids, {1: a})
    hb = report.save_hits(tmp_path / "b.npz", [ids[i] for i in perm], {1: b[perm]})  # another order
    x, y = report.pair_hits(report.load_hits(ha), report.load_hits(hb), k=1)
    assert x.tolist() == a.tolist() and y.tolist() == b.tolist()
    assert report.paired_bootstrap_pvalue(x, y) == report.paired_bootstrap_pvalue(a, b) < 0.01


def test_pairing_hits_of_different_image_sets_is_an_error(tmp_path):
    a = report.load_hits(report.save_hits(tmp_path / "a.npz", ["x", "y", "z"], {1: np.ones(3, bool)}))
    b = report.load_hits(report.save_hits(tmp_path / "b.npz", ["x", "y", "w"], {1: np.ones(3, bool)}))
    with pytest.raises(ValueError, match=r"(?s)different image sets.*1 only in .*a.npz.*\['z'\].*1 only in .*b.npz"):
        report.pair_hits(a, b, k=1)
    np.savez_compressed(tmp_path / "old.npz", k1=np.ones(3, bool))  # written before image ids were stored
    with pytest.raises(ValueError, match="no image_ids.*rerun 04_evaluate"):
        report.load_hits(tmp_path / "old.npz")


def test_published_csv_holds_the_readme_row():
    pub = report.read_published()
    assert len(pub) == 24
    otter = pub[(pub["method"] == "otter") & (pub["eval_set"] == "goi") & (pub["metric"] == "fh@1")]
    assert otter["value"].item() == pytest.approx(0.291)
    assert report.tally_summary(report.tally(pub)).startswith("OTTER wins 6, ties 0, loses 0 of 6")


def test_write_tables_writes_every_artefact(rows, tmp_path):
    paths = report.write_tables(rows, tmp_path / "tables")
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    md = paths["md"].read_text()
    assert "OTTER" in md and "wins 1, ties 1" in md
    assert pd.read_csv(paths["tally"]).shape[0] == 3


def test_plot_matching_checks_shapes_and_writes_a_png(tmp_path):
    targets = np.full((3, 3), 0.25) + np.eye(3) * 0.25
    path = report.plot_matching(targets, ["a", "b", "c"], tmp_path / "m.png")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match=r"\(B, B\)"):
        report.plot_matching(targets, ["a", "b"], tmp_path / "bad.png")


def test_batch_matching_stats_follow_the_official_definitions(tmp_path):
    probs = np.array([[0.6, 0.3, 0.1],
                      [0.2, 0.7, 0.1],
                      [0.05, 0.05, 0.9]])
    stats = report.batch_matching_stats(probs)
    assert stats["on_diag_avg"] == pytest.approx((0.6 + 0.7 + 0.9) / 3)
    assert stats["off_diag_avg"] == pytest.approx((0.3 + 0.1 + 0.2 + 0.1 + 0.05 + 0.05) / 9)  # B² divisor
    assert stats["off_diag_max_avg"] == pytest.approx((0.3 + 0.2 + 0.05) / 3)
    assert stats["off_sig"] == 2  # 0.3 and 0.2 reach the 0.2 threshold
    assert report.plot_off_diagonal_histogram(probs[~np.eye(3, dtype=bool)], tmp_path / "h.png").is_file()
    with pytest.raises(ValueError, match="square"):
        report.batch_matching_stats(np.ones((2, 3)))
