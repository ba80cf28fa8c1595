"""The noise study: target precision, the paired data design, and the statistics and closing text on constructed
results whose outcome is known."""
import numpy as np
import pandas as pd
import pytest
import torch

from otterlib.config import NoiseStudyConfig
from otterlib.data.world import truth_matrix
from otterlib.noise_study import narrative, results
from otterlib.noise_study.data import StudyData, study_pairs
from otterlib.noise_study.plots import figure_indices
from otterlib.noise_study.precision import batch_statistics, chance_precision, off_diagonal_precision, rescue_rows
from otterlib.noise_study.runs import batch_order, study_tasks

# Image 0 is described by caption 1 and image 2 by caption 3; pairs 0 and 3 carry wrong captions.
TRUTH = np.array([[0, 1, 0, 0],
                  [0, 1, 0, 0],
                  [0, 0, 1, 1],
                  [0, 0, 0, 0]], dtype=bool)
TARGETS = np.array([[0.5, 0.3, 0.2, 0.0],
                    [0.1, 0.5, 0.2, 0.2],
                    [0.0, 0.0, 0.5, 0.5],
                    [0.25, 0.25, 0.0, 0.5]])


def test_precision_of_one_hot_uniform_and_oracle_targets():
    b = len(TRUTH)
    assert off_diagonal_precision(np.eye(b), TRUTH) == 0.0
    uniform = 0.5 * np.eye(b) + 0.5 / (b - 1) * (1 - np.eye(b))
    # 2 true off-diagonal cells among 12; chance = mean(1, 0, 1, 0) / 3
    assert chance_precision(TRUTH) == pytest.approx(1 / 6)
    assert off_diagonal_precision(uniform, TRUTH) == pytest.approx(chance_precision(TRUTH))
    off = TRUTH & ~np.eye(b, dtype=bool)
    oracle = np.where(off.any(1, keepdims=True), 0.5 * np.eye(b) + 0.5 * off / np.maximum(off.sum(1, keepdims=True), 1),
                      np.eye(b))
    assert off_diagonal_precision(oracle, TRUTH) == 1.0


def test_precision_and_rescue_by_hand():
    # image rows: off-diagonal mass 4 x 0.5, on truth M[0,1] + M[2,3] = 0.8 -> 0.4;
    # text rows read the transpose: M[1,0] + M[3,2] = 0.1 -> 0.05
    assert off_diagonal_precision(TARGETS, TRUTH) == pytest.approx(0.4)
    assert off_diagonal_precision(TARGETS, TRUTH.T) == pytest.approx(0.05)
    wrong = np.array([True, False, False, True])
    on_truth, uniform = rescue_rows(TARGETS, TRUTH, wrong)  # only image 0 has a true caption in the batch
    assert on_truth.tolist() == pytest.approx([0.3]) and uniform.tolist() == pytest.approx([0.5 / 3])
    s = batch_statistics(TARGETS, TARGETS, TRUTH, wrong)  # caption 3 (wrong pair 3) is true of image 2: M[3,2] = 0
    assert s["precision"] == pytest.approx(0.225) and s["chance"] == pytest.approx(1 / 6)
    # image rows: 0.5 - 0.3, 0.5, 0.5 - 0.5, 0.5 -> mean 0.3; text rows: 0.5, 0.5 - 0.1, 0.5, 0.5 - 0 -> 0.475
    assert s["false_mass"] == pytest.approx(0.5 * (0.3 + 0.475))
    assert s["true_mass"] == pytest.approx(0.5 * (0.8 / 4 + 0.1 / 4))  # M[0,1] + M[2,3]; M[1,0] + M[3,2]
    assert s["wrong_rows"] == 2 and s["wrong_rescue"] == pytest.approx(0.15)
    assert s["wrong_rescue_uniform"] == pytest.approx(0.5 / 3)
    assert np.isnan(batch_statistics(TARGETS, TARGETS, TRUTH, np.zeros(4, bool))["wrong_rescue"])


def test_batches_are_seeded_epochs_without_repeats():
    order = batch_order(size=50, batch_size=8, steps=20, seed=3)
    assert order.shape == (20, 8)
    for epoch in range(3):  # 6 batches per epoch (2 pairs dropped)
        block = order[6 * epoch:6 * epoch + 6].ravel()
        assert len(set(block)) == 48 and block.max() < 50
    assert np.array_equal(order, batch_order(50, 8, 20, 3)) and not np.array_equal(order, batch_order(50, 8, 20, 4))
    with pytest.raises(ValueError, match="smaller than one batch"):
        batch_order(5, 8, 1, 0)


def test_noise_levels_share_images_and_smaller_sets_are_nested():
    pairs = study_pairs(300, [0.0, 0.6], seed=1, zipf_exponent=0.8)
    clean, noisy = pairs[0.0], pairs[0.6]
    assert [p.scene for p in clean] == [p.scene for p in noisy]
    changed = [a.caption != b.caption for a, b in zip(clean, noisy)]
    assert sum(changed) <= 180 and all(b.noise != "none" for b, c in zip(noisy, changed) if c)
    assert sum(p.noise == "wrong" for p in noisy) == 90


def _study_data(pairs) -> StudyData:
    n = len(pairs)
    t = truth_matrix([p.scene for p in pairs], [p.caption_spec for p in pairs])
    return StudyData(image_features=torch.zeros(n, 2), captions=[], text_features=torch.zeros(0, 2),
                     caption_index={0.5: np.zeros(n, int)}, wrong={0.5: np.array([p.noise == "wrong" for p in pairs])},
                     truth={0.5: np.packbits(t, axis=1)}, eval_sets=[])


def test_batch_truth_is_the_truth_of_the_batch():
    pairs = study_pairs(70, [0.5], seed=2, zipf_exponent=0.8)[0.5]
    data = _study_data(pairs)
    idx = np.array([5, 69, 0, 33, 12, 8])
    expected = truth_matrix([pairs[i].scene for i in idx], [pairs[i].caption_spec for i in idx])
    assert np.array_equal(data.batch_truth(0.5, idx), expected)


def test_grid_tasks_and_figure_cell():
    ns = NoiseStudyConfig(noise_levels=[0.0, 0.3], sizes=[100, 50], seeds=[4, 5])
    tasks = study_tasks(ns)
    assert len(tasks) == 8 and [t for t in tasks if t.figure] == [type(tasks[0])(0.3, 50, 4, True)]


def test_figure_indices_start_with_wrong_pairs_and_their_true_partners():
    wrong = np.array([False, False, False, True])
    assert figure_indices(TRUTH, wrong, n=3) == [3, 2, 0]  # wrong pair 3 and its true image 2, then pair 0
    assert sorted(figure_indices(TRUTH, wrong, n=10)) == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------------
# Statistics on constructed results


def _constructed(otter_gain_at: float, precision_end: float) -> results.StudyResults:
    """3 seeds x 400 images per cell; every baseline hits the same 40 % of the images; OTTER equals LS except
    at noise ``otter_gain_at``, where it also hits the next 100 images (+25 points). OTTER's target precision
    ends at ``precision_end`` on every seed, chance is 0.01."""
    levels, sizes, methods, seeds = [0.0, 0.6], [200, 400], ["infonce", "label_smoothing", "kd", "otter"], [0, 1, 2]
    base = np.zeros(400, bool)
    base[:160] = True
    hits = np.broadcast_to(base, (2, 2, 4, 3, 400)).copy()
    hits[levels.index(otter_gain_at), :, 3, :, 160:260] = True
    config = {"noise_levels": levels, "sizes": sizes, "seeds": seeds, "ks": [1], "steps": 100, "batch_size": 32,
              "tie_tolerance": 0.1, "n_boot": 500}
    rows = [{"noise": p, "size": n, "method": m, "seed": s, "step": step, "chance": 0.01,
             "precision": (0.01 if step == 1 else precision_end) if m == "otter" else 0.01 if m != "infonce" else 0.0,
             "true_mass": 0.01, "false_mass": 0.4, "wrong_rescue": 0.2, "wrong_rescue_uniform": 0.1}
            for p in levels for n in sizes for m in methods for s in seeds for step in (1, 100)]
    return results.StudyResults(info={"config": config, "methods": methods, "eval_sets": {"goi": 400}},
                                runs=pd.DataFrame(), precision=pd.DataFrame(rows),
                                hits={"goi_k1": hits}, figure=None)


def test_verdicts_on_constructed_results():
    res = _constructed(otter_gain_at=0.6, precision_end=0.05)
    v = results.verdict_table(res).set_index(["size", "noise"])
    assert set(v.loc[(slice(None), 0.6), "verdict"]) == {"win"} and set(v.loc[(slice(None), 0.0), "verdict"]) == {"tie"}
    assert v.loc[(200, 0.6), "diff"] == pytest.approx(25.0) and v.loc[(200, 0.0), "diff"] == 0.0
    assert v.loc[(200, 0.0), "best_baseline"] == "infonce"  # equal means: the first baseline
    table = results.metric_table(res).set_index(["size", "noise", "method"])
    assert table.loc[(400, 0.6, "otter"), "mean"] == pytest.approx(65.0)
    assert table.loc[(400, 0.6, "kd"), ["low", "high"]].tolist() == pytest.approx([40.0, 40.0])  # no seed spread
    prec = results.precision_table(res).set_index(["noise", "size", "method"])
    assert prec.loc[(0.6, 400, "otter"), ["start", "end", "chance"]].tolist() == pytest.approx([0.01, 0.05, 0.01])


def test_closing_text_follows_the_numbers():
    works = narrative.closing_text(_constructed(otter_gain_at=0.6, precision_end=0.05))
    assert "2 wins, 2 ties, 0 losses of 4 cells" in works
    assert "+25.0 points" in works and "rises" in works and "above chance" in works and "below OTTER's" in works
    fails = narrative.closing_text(_constructed(otter_gain_at=0.0, precision_end=0.01))
    assert "falls" in fails and "not distinguishable from a uniform spread" in fails
    assert "above chance" not in fails and "not monotonically" not in works + fails


def test_noise_trend_names_a_change_of_direction():
    v = pd.DataFrame({"noise": [0.0, 0.3, 0.6], "diff": [-6.3, -3.0, -5.0]})
    text = narrative._noise_trend(v)
    assert "-6.3 (p = 0) → -3.0 (p = 0.3) → -5.0 (p = 0.6)" in text
    assert "rises" in text and "+1.3 points" in text and "not monotonically" in text
