"""Stage 06 end to end on a tiny grid: eval sets, cached features, worker processes, result files, tables,
figures and closing text; reuse of a finished study; the same numbers in this process."""
import numpy as np
import pytest

from otterlib.config import load_profile
from otterlib.stages import prepare_eval_sets, run_noise_study


def _overrides(tmp_path, workers: int) -> dict:
    sets = [{"name": n, "metadata_dir": str(tmp_path / n), "images_dir": str(tmp_path / n / "images")}
            for n in ("goi", "in10k")]
    return {"results_dir": str(tmp_path / "results"), "eval.sets": sets, "eval.image_size": 32,
            "data.synthetic.n_eval_goi": 16, "data.synthetic.n_eval_in10k": 16, "data.synthetic.image_size": 32,
            "noise_study": {"setting": "tiny-scratch", "noise_levels": [0.0, 0.5], "sizes": [64, 96], "seeds": [0, 1],
                            "steps": 6, "batch_size": 32, "embed_dim": 16, "record_every": 2, "n_boot": 200,
                            "workers": workers, "cache_dir": str(tmp_path / "features")}}


@pytest.mark.slow
def test_noise_study_end_to_end(tmp_path, monkeypatch, capfd):
    profile = load_profile("smoke", _overrides(tmp_path, workers=2))
    prepare_eval_sets(profile)
    capfd.readouterr()
    monkeypatch.setenv("OTTER_HEADLESS", "1")  # as in the runner's kernels: the evaluation bars go to stdout
    out = run_noise_study(profile, echo=lambda line: None)
    console = capfd.readouterr()
    assert "class captions" not in console.out + console.err  # the workers' bars stay out of the console ...
    assert "class captions" in (profile.results_root / "noise_study" / "workers.log").read_text()  # ... and are logged
    res = out["results"]
    assert res.hits["goi_k1"].shape == (2, 2, 4, 2, 16) and res.info["n_runs"] == 32
    assert len(out["verdicts"]) == 2 * 2 * 2 * 3 and set(out["verdicts"]["verdict"]) <= {"win", "tie", "loss"}
    assert all(path.is_file() for path in out["figures"].values()) and set(out["figures"]) == {
        "metric_vs_noise", "precision", "target_matrix"}
    assert out["closing"].startswith("**Result (generated from the numbers).**")
    prec = res.precision
    assert (prec[prec["method"] == "infonce"]["precision"] == 0).all()
    ls = prec[prec["method"] == "label_smoothing"]
    assert np.allclose(ls["precision"], ls["chance"])  # a uniform spread is chance by definition
    assert sorted(prec["step"].unique()) == [1, 3, 5, 6]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished study must not be trained again")

    monkeypatch.setattr("otterlib.noise_study.runs.run_grid", no_training)
    run_noise_study(profile, echo=lambda line: None)
    monkeypatch.undo()

    inline = run_noise_study(load_profile("smoke", _overrides(tmp_path, workers=0)), echo=lambda line: None)
    assert inline["results"].info["data"]["images_rebuilt"] is False  # the features came from the cache
    for key, hits in res.hits.items():
        assert np.array_equal(inline["results"].hits[key], hits), key
