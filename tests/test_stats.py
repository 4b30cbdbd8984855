"""`harness.core.stats`: the target t-test, its t distribution, intervals on times, A/B speedups."""
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core import stats

ROOT = Path(__file__).resolve().parents[1]


def test_public_p_value_example():
    """80 runs, mean 3.2791425, sample std 0.0019103, target 3.28 → t ≈ −4.015, p ≈ 6.7e−5 (the public record)."""
    r = stats.t_test_summary(3.2791425, 0.0019103, 80, 3.28)
    assert r.t == pytest.approx(-4.015, abs=5e-4)
    assert r.p_value == pytest.approx(6.7e-5, rel=0.01)
    assert r.significant(0.01) and not stats.t_test_summary(3.2799, 0.0019103, 80, 3.28).significant(0.01)


def test_t_cdf_matches_scipy():
    """The stdlib t CDF equals scipy.stats.t.cdf to 1e-10 across t and degrees of freedom, tails included."""
    scipy_t = pytest.importorskip("scipy.stats").t
    for df in (1, 2, 3, 4.5, 7, 10, 30, 79, 100, 1000):
        for t in (-40, -10, -5, -4.015, -2, -1, -0.3, 0, 0.1, 0.5, 1, 1.7, 3, 6, 25):
            assert stats.t_cdf(t, df) == pytest.approx(scipy_t.cdf(t, df), abs=1e-10, rel=1e-8), (t, df)


def test_t_ppf_inverts_cdf():
    """t_ppf is the inverse of t_cdf (and gives the textbook 1.96-ish quantile for large df)."""
    for df in (1, 5, 79):
        for p in (0.01, 0.5, 0.975):
            assert stats.t_cdf(stats.t_ppf(p, df), df) == pytest.approx(p, abs=1e-10)
    assert stats.t_ppf(0.975, 10_000) == pytest.approx(1.960, abs=1e-3)


def test_samples_and_summary_agree():
    """The test from samples equals the test from their mean and sample std (n−1 degrees of freedom)."""
    rng = random.Random(0)
    xs = [3.279 + rng.gauss(0, 0.002) for _ in range(12)]
    a, b = stats.t_test(xs, 3.28), stats.t_test_summary(sum(xs) / 12, stats.stdev(xs), 12, 3.28)
    assert a.t == pytest.approx(b.t) and a.p_value == pytest.approx(b.p_value) and a.n == 12
    with pytest.raises(ValueError):
        stats.t_test([3.27], 3.28)


def test_zero_spread():
    """Identical losses: the mean is known exactly, so p is 0 below the target and 1 above it."""
    assert stats.t_test([3.27, 3.27], 3.28).p_value == 0.0
    assert stats.t_test([3.29, 3.29], 3.28).p_value == 1.0


def test_margin_criterion():
    """`(target − mean)·√n ≥ c`: 4 runs at mean 3.275 against 3.28 give 0.01."""
    xs = [3.274, 3.276, 3.275, 3.275]
    assert stats.margin(xs, 3.28) == pytest.approx(0.01)
    assert stats.meets_margin(xs, 3.28, 0.009) and not stats.meets_margin(xs, 3.28, 0.011)


def test_mean_ci_of_times():
    """The 95% CI of train times is mean ± t(0.975, n−1)·s/√n; one sample has no interval."""
    xs = [100.0, 102.0, 98.0, 101.0, 99.0]
    ci = stats.mean_ci(xs)
    half = 2.7764451051977987 * stats.stdev(xs) / math.sqrt(5)
    assert ci.estimate == 100.0 and ci.lo == pytest.approx(100 - half) and ci.hi == pytest.approx(100 + half)
    assert stats.mean_ci([5.0]).lo is None


def test_speedup_from_pairs():
    """B at 0.9× A's time in every pair is a 1.111× speedup with a tight interval around it; noise widens it."""
    s = stats.speedup([(100.0, 90.0), (110.0, 99.0), (95.0, 85.5)])
    assert s.estimate == pytest.approx(100 / 90) and s.lo == pytest.approx(100 / 90) and s.hi == pytest.approx(100 / 90)
    rng = random.Random(1)
    noisy = stats.speedup([(a, a * 0.9 * (1 + rng.gauss(0, 0.01))) for a in (100, 101, 99, 100, 102)])
    assert noisy.lo < noisy.estimate < noisy.hi and noisy.lo > 1.0


def test_stats_import_without_numpy_or_scipy():
    """`harness.core.stats` uses the standard library only."""
    code = "import sys; sys.modules['numpy'] = sys.modules['scipy'] = sys.modules['torch'] = None; import harness.core.stats"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
