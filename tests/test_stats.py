"""otterlib.stats: the hierarchical paired bootstrap, both tie rules and the seed interval, on constructed
scores whose outcome is known (references computed independently: binomial quantiles, enumeration)."""
import itertools

import numpy as np
import pytest
from scipy.stats import binom

from otterlib import stats


def test_clear_win_and_clear_loss():
    a, b = np.ones((5, 300)), np.zeros((5, 300))
    diff, low, high = stats.paired_bootstrap(a, b, n_boot=200)
    assert diff == 1.0 and low == pytest.approx(1.0) and high == pytest.approx(1.0)
    assert stats.interval_verdict(low, high) == "win"
    assert stats.interval_verdict(*stats.paired_bootstrap(b, a, n_boot=200)[1:]) == "loss"


def test_exact_tie_is_a_tie_by_both_rules():
    a = np.random.default_rng(0).integers(0, 2, size=(5, 300))
    diff, low, high = stats.paired_bootstrap(a, a.copy(), n_boot=200)
    assert (diff, low, high) == (0.0, 0.0, 0.0)
    assert stats.interval_verdict(low, high) == "tie"
    assert stats.fixed_rule_verdict(diff, 0.001) == "tie"


def test_near_tie_is_a_statistical_tie_that_the_fixed_rule_calls_a_win():
    rng = np.random.default_rng(1)
    b = rng.integers(0, 2, size=1000)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:12]] = 1   # 12 images gained
    a[np.flatnonzero(b == 1)[:10]] = 0   # 10 images lost: +0.2 points net
    diff, low, high = stats.paired_bootstrap(a, b, n_boot=4000)
    assert diff == pytest.approx(0.002)
    assert low < 0 < high and stats.interval_verdict(low, high) == "tie"
    assert stats.fixed_rule_verdict(diff, tolerance=0.001) == "win"


def test_image_resampling_matches_the_binomial_distribution():
    """One seed, per-image differences in {0, 1}: a replicate's mean is Binomial(N, q) / N."""
    n, gained = 400, 60
    a, b = np.zeros(n), np.zeros(n)
    a[:gained] = 1
    _, low, high = stats.paired_bootstrap(a, b, n_boot=40000, seed=3)
    ref_low, ref_high = binom.ppf([0.025, 0.975], n, gained / n) / n
    assert low == pytest.approx(ref_low, abs=1.5 / n) and high == pytest.approx(ref_high, abs=1.5 / n)


def test_seeds_are_resampled_too():
    """Per-seed differences that are the same on every image: the image draw changes nothing and the interval
    is that of the mean of 4 seeds drawn with replacement (exact quantiles by enumerating the 4^4 draws)."""
    per_seed = np.array([0.2, -0.1, 0.15, -0.12])
    a, b = np.tile(per_seed[:, None], (1, 50)), np.zeros((4, 50))
    _, low, high = stats.paired_bootstrap(a, b, n_boot=40000, seed=5)
    means = np.sort([np.mean(draw) for draw in itertools.product(per_seed, repeat=4)])
    ref_low, ref_high = np.quantile(means, [0.025, 0.975])
    assert low == pytest.approx(ref_low, abs=0.02) and high == pytest.approx(ref_high, abs=0.02)
    assert stats.interval_verdict(low, high) == "tie"
    # resampling the images alone (seeds averaged first) would call the same data a win
    assert stats.interval_verdict(*stats.paired_bootstrap(a.mean(0), b.mean(0), n_boot=500)[1:]) == "win"


def test_bootstrap_blocks_do_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 2, size=(3, 200)), rng.integers(0, 2, size=(3, 200))
    whole = stats.paired_bootstrap(a, b, n_boot=300, seed=7)
    monkeypatch.setattr(stats, "_BLOCK_CELLS", 200 * 7)  # 7 replicates per block
    blocked = stats.paired_bootstrap(a, b, n_boot=300, seed=7)
    assert whole[0] == blocked[0]  # other draws, the same distribution
    assert abs(whole[1] - blocked[1]) < 0.03 and abs(whole[2] - blocked[2]) < 0.03


@pytest.mark.parametrize("diff,verdict", [(0.0011, "win"), (0.001, "tie"), (-0.001, "tie"), (-0.0011, "loss")])
def test_fixed_rule_boundaries(diff, verdict):
    assert stats.fixed_rule_verdict(diff, 0.001) == verdict


def test_seed_interval_is_student_t():
    mean, low, high = stats.seed_interval([1, 2, 3, 4, 5])
    # t(0.975, 4) = 2.776445; sd = 1.581139; half = 2.776445 * 1.581139 / sqrt(5) = 1.963243
    assert mean == 3
    assert high - mean == pytest.approx(1.963243, abs=1e-5) and mean - low == pytest.approx(1.963243, abs=1e-5)
    assert stats.seed_interval([0.4]) == (0.4, 0.4, 0.4)


def test_compare_to_best_picks_the_strongest_baseline():
    rng = np.random.default_rng(4)
    weak, strong = (rng.random((5, 300)) < q for q in (0.2, 0.6))
    otter = strong.copy()
    otter[:, :30] = True  # better than the strong baseline wherever it differs
    c = stats.compare_to_best({"otter": otter, "infonce": weak, "kd": strong}, "otter", ["infonce", "kd"],
                              tolerance=0.001, n_boot=500)
    assert c.best_baseline == "kd" and c.difference > 0 and c.verdict == "win" and c.fixed_verdict == "win"
    assert (c.n_seeds, c.n_images) == (5, 300)


def test_misaligned_scores_are_rejected():
    with pytest.raises(ValueError, match="same shape|one shape"):
        stats.paired_bootstrap(np.zeros((2, 10)), np.zeros((3, 10)))


def test_draws_over_difference_patterns_equal_draws_over_images(monkeypatch):
    """0/1 hits on 2 seeds have at most 9 difference patterns; drawing over them must give the interval that
    drawing the images themselves gives (the other path, forced here)."""
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 2, size=(2, 500)), rng.integers(0, 2, size=(2, 500))
    by_patterns = stats.paired_bootstrap(a, b, n_boot=4000, seed=1)
    monkeypatch.setattr(stats, "_FEW_PATTERNS", 0)
    by_images = stats.paired_bootstrap(a, b, n_boot=4000, seed=1)
    assert by_patterns[0] == by_images[0]
    assert by_patterns[1] == pytest.approx(by_images[1], abs=0.01)
    assert by_patterns[2] == pytest.approx(by_images[2], abs=0.01)
