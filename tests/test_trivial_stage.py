"""Stage 02 writes trivial-baseline rows that the results stage reads, and the thumbnails figure."""
from otterlib import layout, report, stages
from otterlib.config import load_profile
from otterlib.evaluate import read_eval_rows


def _profile(tmp_path):
    sets = [{"name": name, "metadata_dir": str(tmp_path / "eval" / name),
             "images_dir": str(tmp_path / "eval" / name / "images")} for name in ("goi", "in10k")]
    return load_profile("smoke", {"results_dir": str(tmp_path / "results"), "eval.sets": sets,
                                  "data.synthetic": {"n_eval_goi": 30, "n_eval_in10k": 20, "image_size": 32}})


def test_trivial_rows_for_every_set_and_mode_are_written_and_collected(tmp_path):
    profile = _profile(tmp_path)
    stages.prepare_eval_sets(profile)
    table = stages.trivial_baselines(profile)
    assert len(table) == 2 * 2 * 2  # {goi, in10k} x {paper, clean} x {random, constant}
    rows = read_eval_rows(layout.eval_rows_path(layout.trivial_dir(profile), "paper"))
    assert {(r["dataset"], r["method"]) for r in rows} == {(s, m) for s in ("goi", "in10k") for m in ("random", "constant")}
    assert all(r["kind"] == "trivial" and r["setting"] == stages.eval_sets.TRIVIAL_SETTING for r in rows)
    assert {r["n_images"] for r in rows} == {30, 20}

    collected = report.collect_rows(profile.results_root)
    assert set(collected["kind"]) == {"trivial"} and set(collected["mode"]) == {"paper", "clean"}


def test_thumbnails_show_every_eval_set(tmp_path):
    profile = _profile(tmp_path)
    stages.prepare_eval_sets(profile)
    path = stages.eval_set_thumbnails(profile, n_per_set=3)
    assert path == layout.eval_thumbnails_path(profile) and path.stat().st_size > 0
