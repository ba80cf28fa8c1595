"""Tables, intervals, the statistical tally and the closing paragraph, from fabricated results folders whose
outcome is known (eval rows + score files written here, as the evaluation stage writes them)."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from otterlib import report
from otterlib.config import load_profile

N_BOOT = 400


def write_run(run_dir: Path, setting: str, method: str, seed: int | None, sets: dict[str, np.ndarray],
              kind: str = "trained", ap: dict[str, np.ndarray] | None = None) -> None:
    """One run folder: ``eval.jsonl`` (a row per eval set, FH@1/5/10 and mAP from the given hits) and
    ``hits_<set>.npz``. ``sets[name]``: (N,) 0/1 hits at every k (FH@5 = FH@10 = FH@1 here); ``ap[name]``:
    per-class AP (default: the hits of the first 10 images)."""
    rows = []
    for name, hits in sets.items():
        hits = np.asarray(hits, dtype=bool)
        class_ap = (ap or {}).get(name, hits[:10].astype(float))
        report.save_hits(run_dir / f"hits_{name}.npz", [f"{name}{i}" for i in range(len(hits))],
                         {k: hits for k in (1, 5, 10)}, np.arange(len(class_ap)), class_ap)
        metrics = {f"fh@{k}": float(hits.mean()) for k in (1, 5, 10)} | {"map": float(np.mean(class_ap))}
        rows.append({"setting": setting, "method": method, "seed": seed, "kind": kind, "dataset": name,
                     "mode": "paper", "metrics": metrics, "n_classes": 50, "n_images": len(hits),
                     "label_cardinality": 1.5})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_trivial(root: Path, sets: dict[str, dict[str, float]]) -> None:
    rows = [{"setting": "trivial", "method": m, "kind": "trivial", "dataset": name, "mode": "paper",
             "metrics": values, "n_classes": 50, "n_images": 200, "label_cardinality": 1.5}
            for name, per_method in sets.items() for m, values in per_method.items()]
    (root / "trivial").mkdir(parents=True, exist_ok=True)
    (root / "trivial" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def near_tie(n: int = 1000, gained: int = 12, lost: int = 10, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Hits of a baseline and of a method that gains ``gained`` images and loses ``lost``: +0.2 points."""
    base = np.random.default_rng(seed).integers(0, 2, size=n).astype(bool)
    other = base.copy()
    other[np.flatnonzero(~base)[:gained]] = True
    other[np.flatnonzero(base)[:lost]] = False
    return other, base


@pytest.fixture
def three_cells(tmp_path) -> tuple[pd.DataFrame, report.Grid]:
    """Settings ``win`` (OTTER hits every image, baselines half), ``tie`` (OTTER = the best baseline, image by
    image) and ``near`` (OTTER +0.2 points over the best baseline on 1,000 images), one seed, GOI only."""
    rng = np.random.default_rng(0)
    near_otter, near_base = near_tie()
    cells = {"win": (np.ones(1000, bool), rng.random(1000) < 0.5),
             "tie": (near_base, near_base), "near": (near_otter, near_base)}
    for setting, (otter, best) in cells.items():
        for method in report.METHOD_ORDER:
            hits = otter if method == "otter" else best if method == "kd" else best & (rng.random(1000) < 0.8)
            write_run(tmp_path / setting / method / "seed0", setting, method, 0, {"goi": hits})
    grid = report.Grid(settings=tuple(cells), provenance={s: "reconstructed" for s in cells}, eval_sets=("goi",))
    return report.collect_rows(tmp_path), grid


def test_read_rows_keeps_seeds_kinds_and_the_run_folder(three_cells):
    rows, _ = three_cells
    assert len(rows) == 3 * 4 * 4  # settings x methods x {FH@1, FH@5, FH@10, mAP}
    assert set(rows["kind"]) == {"trained"} and set(rows["seed"]) == {0}
    assert all((Path(d) / "hits_goi.npz").is_file() for d in rows["run_dir"])


def test_statistical_tally_win_exact_tie_and_near_tie(three_cells):
    rows, grid = three_cells
    t = report.tally(rows, grid, report.TieRules(n_boot=N_BOOT)).set_index(["setting", "metric"])
    win, tie, near = (t.loc[(s, "fh@1")] for s in ("win", "tie", "near"))
    assert win["best_baseline"] == "kd" and win["low"] > 0 and (win["verdict"], win["fixed_verdict"]) == ("win", "win")
    assert (tie["diff"], tie["low"], tie["high"]) == (0.0, 0.0, 0.0)
    assert (tie["verdict"], tie["fixed_verdict"]) == ("tie", "tie")
    assert near["diff"] == pytest.approx(0.2) and near["low"] < 0 < near["high"]
    assert (near["verdict"], near["fixed_verdict"]) == ("tie", "win")  # the fixed rule calls noise a win
    assert near["n_units"] == 1000 and near["units"] == "images" and t.loc[("near", "map"), "units"] == "classes"
    assert report.tally_summary(report.tally(rows, grid, report.TieRules(n_boot=N_BOOT))) == (
        "9 of 9 evaluations available. OTTER vs the best baseline, interval rule (95 % paired bootstrap): 3 wins, "
        "6 ties, 0 losses; fixed rule (±0.1 points): 6 wins, 3 ties, 0 losses.")  # FH@5, FH@10 = FH@1 here


def test_tally_resamples_the_seeds_a_cell_has(tmp_path):
    """Two seeds whose OTTER − KD differences have opposite signs: a tie, although each seed alone is a win or
    a loss by a wide margin on its images."""
    for seed, (otter, kd) in enumerate([(np.ones(400, bool), np.zeros(400, bool)),
                                        (np.zeros(400, bool), np.r_[np.ones(360, bool), np.zeros(40, bool)])]):
        for method, hits in (("otter", otter), ("kd", kd)):
            write_run(tmp_path / method / f"seed{seed}", "s", method, seed, {"goi": hits})
    grid = report.Grid(("s",), {"s": "reconstructed"}, ("goi",), methods=("kd", "otter"))
    cell = report.tally(report.collect_rows(tmp_path), grid, report.TieRules(n_boot=N_BOOT)).iloc[0]
    assert cell["n_seeds"] == 2 and cell["low"] < 0 < cell["high"] and cell["verdict"] == "tie"


def test_hits_align_by_id_whatever_their_order_and_refuse_other_sets(tmp_path):
    rng = np.random.default_rng(2)
    ids = [f"img{i}" for i in range(50)]
    hits = rng.random(50) < 0.3
    perm = rng.permutation(50)
    a = report.load_hits(report.save_hits(tmp_path / "a.npz", ids, {1: hits}))
    b = report.load_hits(report.save_hits(tmp_path / "b.npz", [ids[i] for i in perm], {1: hits[perm]}))
    aligned = report.align([report.Units(*a.units("fh@1"), "a"), report.Units(*b.units("fh@1"), "b")])
    assert (aligned[0] == aligned[1]).all() and aligned[0].tolist() == hits.astype(float).tolist()
    c = report.load_hits(report.save_hits(tmp_path / "c.npz", ids[:-1] + ["other"], {1: hits}))
    with pytest.raises(ValueError, match=r"(?s)different image.*1 only in a.*\['img49'\].*1 only in c"):
        report.align([report.Units(*a.units("fh@1"), "a"), report.Units(*c.units("fh@1"), "c")])
    assert a.units("map") is None  # a file without per-class AP has no mAP units


def test_hit_files_roundtrip_with_image_ids_and_per_class_ap(tmp_path):
    hits = {1: np.array([True, False, False]), 5: np.array([True, True, False])}
    path = report.save_hits(tmp_path / "hits_goi.npz", ["b", "a", "c"], hits, np.array([3, 7]), np.array([0.5, 1.0]))
    with np.load(path, allow_pickle=False) as raw:
        assert sorted(raw.files) == ["ap", "ap_class_ids", "image_ids", "k1", "k5"]
    loaded = report.load_hits(path)
    assert loaded.image_ids.tolist() == ["b", "a", "c"] and loaded.ks == (1, 5)
    assert loaded.at(5).tolist() == [True, True, False]
    ids, ap = loaded.units("map")
    assert ids.tolist() == ["3", "7"] and ap.tolist() == [0.5, 1.0]
    with pytest.raises(KeyError, match="k=10.*1, 5"):
        loaded.at(10)
    with pytest.raises(ValueError, match="repeated image id"):
        report.save_hits(tmp_path / "x.npz", ["a", "a"], {1: np.array([True, False])})
    with pytest.raises(ValueError, match="2 image ids"):
        report.save_hits(tmp_path / "x.npz", ["a", "b"], {1: np.array([True])})
    np.savez_compressed(tmp_path / "old.npz", k1=np.ones(3, bool))  # written before image ids were stored
    with pytest.raises(ValueError, match="no image_ids.*rerun 04_evaluate"):
        report.load_hits(tmp_path / "old.npz")


def test_published_csv_holds_the_readme_row_and_wins_by_the_fixed_rule():
    pub = report.read_published()
    assert len(pub) == 24
    otter = pub[(pub["method"] == "otter") & (pub["eval_set"] == "goi") & (pub["metric"] == "fh@1")]
    assert otter["value"].item() == pytest.approx(0.291)
    setting = pub["setting"].iloc[0]
    grid = report.Grid((setting,), {setting: "published"}, ("goi", "in10k"))
    t = report.tally(pub, grid, metrics=report.TALLY_METRICS)  # no score files: the fixed rule only
    assert (t["fixed_verdict"] == "win").all() and t["verdict"].isna().all()
    assert t.set_index(["eval_set", "metric"]).loc[("goi", "fh@1"), "diff"] == pytest.approx(29.1 - 26.8)


@pytest.fixture
def paper_folder(tmp_path) -> tuple[Path, report.Grid]:
    """The paper profile's 7 settings × 4 methods × {GOI, IN10K} with cells missing: no run of the WIT setting,
    YFCC15M's OTTER evaluated on GOI only; CLIP RN50 on GOI only; the trivial baselines on both sets."""
    grid = report.Grid.from_profile(load_profile("paper"))
    rng = np.random.default_rng(3)
    for i, setting in enumerate(grid.settings):
        if setting.startswith("wit"):
            continue
        for j, method in enumerate(grid.methods):
            sets = {s: rng.random(60) < 0.2 + 0.02 * i + 0.05 * j for s in grid.eval_sets}
            if setting.startswith("yfcc15m") and method == "otter":
                del sets["in10k"]
            write_run(tmp_path / setting / method / "seed0", setting, method, 0, sets)
    write_run(tmp_path / "references" / "clip_rn50", "reference", "clip_rn50", None, {"goi": rng.random(60) < 0.4},
              kind="reference")
    write_trivial(tmp_path, {s: {"random": {"fh@1": 0.001, "fh@5": 0.004, "fh@10": 0.009, "map": 0.002},
                                 "constant": {"fh@1": 0.05, "fh@5": 0.12, "fh@10": 0.2}} for s in grid.eval_sets})
    return tmp_path, grid


SYNTHETIC = report.RunFacts(profile="smoke", synthetic=True, sources=("cc3m",), train_pairs=1520, steps=(40, 40),
                            batch_size=32, seeds=1, protocol="paper")


def test_the_42_cell_table_and_tally_from_a_folder_with_missing_cells(paper_folder):
    root, grid = paper_folder
    rows = report.collect_rows(root)
    out = report.write_tables(rows, grid, root / "tables", SYNTHETIC, report.TieRules(n_boot=N_BOOT),
                              report.read_published(), title="paper profile")
    assert grid.n_evaluations == 42
    t = out.tally[out.tally["tallied"]]
    assert len(t) == 42 and (t["status"] == "available").sum() == 42 - 6 - 3
    assert out.summary.startswith("33 of 42 evaluations available.")
    assert set(t[t["status"] != "available"]["status"]) == {"missing (OTTER)"}
    table = out.table
    assert len(table) == 2 * (2 + 1 + 7 * 4) * 4  # sets x (trivial + reference + settings x methods) x metrics
    wit = table[table["setting"].str.startswith("wit")]
    assert len(wit) == 2 * 4 * 4 and wit["value"].isna().all()  # shown, as missing
    trained = table[(table["kind"] == "trained") & table["value"].notna()]
    assert (trained["low"] <= trained["value"]).all() and (trained["value"] <= trained["high"]).all()
    clip = table[table["method"] == "clip_rn50"].set_index(["eval_set", "metric"])
    assert clip.loc[("goi", "fh@1"), "value"] > 0 and np.isnan(clip.loc[("in10k", "fh@1"), "value"])
    assert clip.loc[("goi", "fh@1"), "low"] < clip.loc[("goi", "fh@1"), "high"]  # a reference has its interval
    readme = table[(table["method"] == "otter") & (table["provenance"] == "published")]
    readme = readme.set_index(["eval_set", "metric"])
    assert readme.loc[("goi", "fh@1"), "published"] == pytest.approx(29.1)
    assert readme.loc[("in10k", "fh@10"), "published"] == pytest.approx(42.1)

    md = out.paths["comparison.md"].read_text()
    assert "33 of 42 evaluations available" in md
    assert "| cc3m-rn50-declutr-sci-base | published | InfoNCE |" in md
    assert "| yfcc15m-rn50-declutr-sci-base | reconstructed | InfoNCE |" in md
    assert md.count("| wit-rn50-declutr-sci-base | reconstructed | InfoNCE | — | — | — | — |") == 2
    assert md.count("CLIP RN50 (400M pairs, reference)") == 2 and md.count("random ranking (chance, exact)") == 2
    assert "paper FH@1" in md and "| 29.1 |" in md and "Published numbers (FH@k" not in md
    assert md.count("— missing (OTTER)") == 6 + 3 + 2 + 1  # FH grid: WIT 6, YFCC15M IN10K 3; mAP grid: 2 + 1
    assert "34 of 42" in md and "The abstract reports" in md
    for name in ("comparison.csv", "tally.csv", "table.md", "tally.md", "closing.md", "comparison.png",
                 "difference.png"):
        assert out.paths[name].stat().st_size > 0
    csv = pd.read_csv(out.paths["comparison.csv"])
    assert set(csv["metric"]) == {"fh@1", "fh@5", "fh@10", "map"} and len(csv) == len(table)


def test_saturated_metrics_follow_the_constant_ranking_or_every_method():
    lines = []
    for metric, constant, trained in (("fh@1", 20, (30, 40)), ("fh@5", 95, (96, 97)), ("fh@10", 50, (91, 99))):
        lines.append({"eval_set": "goi", "kind": "trivial", "method": "constant", "metric": metric, "value": constant})
        lines += [{"eval_set": "goi", "kind": "trained", "method": m, "metric": metric, "value": v}
                  for m, v in zip(("kd", "otter"), trained)]
    assert report.saturated(pd.DataFrame(lines)) == {"goi": ["fh@5", "fh@10"]}


def test_closing_paragraph_says_what_the_numbers_say(three_cells):
    rows, grid = three_cells
    rules = report.TieRules(n_boot=N_BOOT)
    t = report.tally(rows, grid, rules)
    table = report.results_table(rows, grid, report.method_intervals(rows, n_boot=N_BOOT))
    text = report.closing_paragraph(t, table, report.saturated(table), SYNTHETIC, grid, rules)
    assert "OTTER has 3 wins, 6 ties, 0 losses" in text
    assert "fixed rule (a tie within ±0.1 points) 6 wins, 3 ties" in text
    assert "near GOI FH@1: win by the fixed rule, tie by the interval" in text  # a near-tie is not called a win
    assert "win GOI FH@1: OTTER 100.0 %" in text  # the largest effect first, with its interval
    assert "34 of 42" in text and "not evidence about that claim" in text and "synthetic" in text
    assert "at most 40 optimizer steps at batch 32" in text and "1,520 training pairs" in text
    assert "with one seed the intervals cover the eval sample only" in text

    paper_scale = report.RunFacts(profile="paper", synthetic=False, sources=("cc3m",), train_pairs=2_900_000,
                                  steps=(56_000,), batch_size=512, seeds=3, protocol="paper")
    text = report.closing_paragraph(t, table, report.saturated(table), paper_scale, grid, rules)
    assert "are evidence about its claim (3 seeds per run; 3 of the 3 settings are reconstructed" in text
    assert "Data: real (CC3M)" in text


def test_plot_matching_checks_shapes_and_draws_thumbnails(tmp_path):
    targets = np.full((3, 3), 0.25) + np.eye(3) * 0.25
    images = np.random.default_rng(0).random((3, 8, 8, 3))
    path = report.plot_matching(targets, ["a long caption " * 4, "b", "c"], tmp_path / "m.png", images=images)
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match=r"\(B, B\)"):
        report.plot_matching(targets, ["a", "b"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        report.plot_matching(targets, ["a", "b", "c"], tmp_path / "bad.png", images=images[:2])


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
    text = report.statistics_markdown(32, 100)
    assert "**off_sig**" in text and "≥ 0.2" in text and "B = 32" in text and "batch 512" in text
