"""Trivial baselines: exact random-ranking expectation and the best constant ranking, against hand-computed
cases and brute force; label statistics; eval rows; the real IN10K (shared metadata)."""
import itertools
import math
import random
from pathlib import Path

import numpy as np
import pytest

from otterlib import baselines
from otterlib.data.evalsets import MultiLabelEvalSet
from otterlib.evaluate import EVAL_ROW_KEYS, read_eval_rows, write_eval_rows


def _set(labels, n_classes):
    return MultiLabelEvalSet("toy", [[f"c{i}"] for i in range(n_classes)], [Path(f"{i}.jpg") for i in range(len(labels))],
                             labels, [str(i) for i in range(len(labels))])


def test_random_ranking_hand_computed():
    labels = [[0], [1, 2], []]
    assert baselines.random_ranking_hits(labels, 4, 1) == pytest.approx([1 / 4, 2 / 4, 0])
    # k = 2: 1 - C(3,2)/C(4,2) = 1/2 for one label, 1 - C(2,2)/C(4,2) = 5/6 for two
    assert baselines.random_ranking_hits(labels, 4, 2) == pytest.approx([1 / 2, 5 / 6, 0])
    assert baselines.random_ranking_hits(labels, 4, 4) == pytest.approx([1, 1, 0])
    assert baselines.random_ranking_hits([[1, 1, 2]], 4, 1) == pytest.approx([2 / 4])  # repeated ids count once


def test_random_ranking_matches_the_binomial_formula_and_brute_force():
    rng = random.Random(0)
    n_classes = 6
    labels = [rng.sample(range(n_classes), rng.randint(0, 4)) for _ in range(12)]
    perms = list(itertools.permutations(range(n_classes)))
    for k in (1, 2, 3, 5, 9):
        got = baselines.random_ranking_hits(labels, n_classes, k)
        formula = [1 - math.comb(n_classes - len(row), k) / math.comb(n_classes, k) if k <= n_classes else float(bool(row))
                   for row in labels]
        brute = [np.mean([bool(set(p[:k]) & set(row)) for p in perms]) for row in labels]
        assert got == pytest.approx(formula) and got == pytest.approx(brute)


def test_random_ranking_at_real_scale_is_stable():
    got = baselines.random_ranking_hits([list(range(9))], 11166, 10)[0]
    assert got == pytest.approx(1 - math.comb(11166 - 9, 10) / math.comb(11166, 10), rel=1e-12)


def test_constant_ranking_hand_computed():
    labels = [[2], [2, 1], [0], [1]]
    # frequencies 0:1, 1:2, 2:2, 3:0 -> order 1, 2 (tie: lower id first), 0, 3
    assert list(baselines.constant_ranking(labels, 4)) == [1, 2, 0, 3]
    assert list(baselines.constant_ranking_hits(labels, 4, 1)) == [0, 1, 0, 1]
    assert list(baselines.constant_ranking_hits(labels, 4, 2)) == [1, 1, 0, 1]
    assert list(baselines.constant_ranking_hits(labels + [[]], 4, 4)) == [1, 1, 1, 1, 0]


def test_constant_ranking_is_the_best_constant_guess_at_k1():
    rng = random.Random(1)
    labels = [rng.sample(range(8), rng.randint(1, 3)) for _ in range(50)]
    best_single = max(np.mean([c in row for row in labels]) for c in range(8))
    assert baselines.constant_ranking_hits(labels, 8, 1).mean() == pytest.approx(best_single)


def test_random_ranking_average_precision_is_exact():
    """E[AP] per class against the mean AP over every order of 6 images (sklearn's AP per order)."""
    from sklearn.metrics import average_precision_score

    labels = [[0], [0, 1], [], [2], [0, 2], [1]]
    class_ids, expected = baselines.random_ranking_average_precisions(labels, 4)
    assert class_ids.tolist() == [0, 1, 2]  # class 3 has no positive image
    for c, e in zip(class_ids, expected):
        truth = np.array([c in row for row in labels])
        scores = [-np.argsort(order) for order in itertools.permutations(range(len(labels)))]
        assert e == pytest.approx(np.mean([average_precision_score(truth, s) for s in scores]))
    assert baselines.random_ranking_average_precisions([[0]], 3)[1].tolist() == [1.0]


def test_trivial_rows_are_eval_rows(tmp_path):
    es = _set([[0], [1, 2], [2]], 5)
    rows = baselines.trivial_rows(es, (1, 2), mode="paper", setting="all", profile="toy")
    assert [r["method"] for r in rows] == ["random", "constant"] and all(r["kind"] == "trivial" for r in rows)
    assert all(EVAL_ROW_KEYS <= set(r) for r in rows)
    assert rows[0]["metrics"]["fh@1"] == pytest.approx((1 / 5 + 2 / 5 + 1 / 5) / 3)
    assert set(rows[0]["metrics"]) == {"fh@1", "fh@2", "map"}  # the random ranking's expected mAP; none constant
    assert rows[1]["metrics"] == {"fh@1": pytest.approx(2 / 3), "fh@2": pytest.approx(1.0)}
    assert rows[0]["label_cardinality"] == pytest.approx(4 / 3) and rows[0]["n_classes"] == 5
    write_eval_rows(tmp_path / "eval.jsonl", rows)
    assert read_eval_rows(tmp_path / "eval.jsonl") == rows


def test_label_statistics_hand_computed():
    labels = [[0, 1], [0], [0, 2], [0]]  # 100 classes: class 0 on every image
    stats = baselines.label_statistics(_set(labels, 100))
    assert stats["labels_per_image"] == 1.5 and stats["most_frequent_class_image_share"] == 1.0
    assert stats["top1pct_classes_label_share"] == pytest.approx(4 / 6)
    assert stats["top10pct_classes_label_share"] == 1.0 and stats["n_classes_with_positives"] == 3
    assert baselines.gini([1, 1, 1, 1]) == 0.0 and baselines.gini([0, 0, 0, 4]) == pytest.approx(3 / 4)


def test_real_in10k_trivial_baselines(shared_metadata):
    from otterlib.data.evalsets import load_tencent_in10k

    es = load_tencent_in10k(shared_metadata / "tencent_classes.txt",
                            shared_metadata / "tencent_val_image_id_from_imagenet.txt", shared_metadata / "none")
    stats = baselines.label_statistics(es)
    assert es.n_images == 50_000 and es.n_classes == 11_166
    constant = baselines.trivial_metrics(es, "constant", (1, 5, 10))
    random_ = baselines.trivial_metrics(es, "random", (1, 5, 10))
    assert constant["fh@1"] == pytest.approx(stats["most_frequent_class_image_share"])
    assert random_["fh@1"] == pytest.approx(stats["labels_per_image"] / es.n_classes)
    assert constant["fh@1"] <= constant["fh@5"] <= constant["fh@10"] and random_["fh@10"] < constant["fh@1"]
