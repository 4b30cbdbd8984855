"""Statistics for verdicts: the one-sided t-test on final val losses, intervals on times, A/B speedups.

Standard library only (no numpy/scipy at import): `speedrun verify` must start without them. The
Student t CDF is computed from the regularized incomplete beta function (Lentz's continued fraction,
as in Numerical Recipes' `betacf`); tests compare it with scipy to 1e-10.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean, stdev, variance


# ---- the t distribution -------------------------------------------------------------------------------

def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """Regularized incomplete beta I_x(a, b); `y` = 1 − x when the caller knows it without cancellation."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x = {x} is outside [0, 1]")
    y = 1.0 - x if y is None else y
    if x == 0.0 or y == 0.0:
        return 0.0 if x == 0.0 else 1.0
    log_front = a * math.log(x) + b * math.log(y) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    # The continued fraction converges fast only below the mean of the beta; use the symmetry above it.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, y) / b


def _betacf(a: float, b: float, x: float, eps: float = 1e-16, max_iter: int = 100_000) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            delta = c * d
            h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))  # P(T ≤ -|t|)
    return tail if t < 0 else 1.0 - tail


def t_ppf(p: float, df: float) -> float:
    """The t quantile: the t with t_cdf(t, df) = p (bisection; t_cdf is monotonic)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p = {p} is outside (0, 1)")
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


# ---- the target test -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TTest:
    """One-sided one-sample t-test of H1: mean < target (n−1 degrees of freedom)."""
    n: int
    mean: float
    std: float          # sample standard deviation (n−1 in the denominator)
    target: float
    t: float
    p_value: float

    def significant(self, alpha: float) -> bool:
        return self.p_value < alpha


def t_test_summary(mean: float, std: float, n: int, target: float) -> TTest:
    """The test from summary statistics (as a record's README states them)."""
    if n < 2:
        raise ValueError(f"a t-test needs at least 2 runs, got {n}")
    if std == 0:  # all runs equal: the mean is exactly known
        t = -math.inf if mean < target else (math.inf if mean > target else 0.0)
        p = 0.0 if mean < target else (1.0 if mean > target else 0.5)
        return TTest(n, mean, std, target, t, p)
    t = (mean - target) / (std / math.sqrt(n))
    return TTest(n, mean, std, target, t, t_cdf(t, n - 1))


def t_test(samples: list[float], target: float) -> TTest:
    """The test from the final val losses themselves."""
    xs = list(samples)
    if len(xs) < 2:
        raise ValueError(f"a t-test needs at least 2 runs, got {len(xs)}")
    return t_test_summary(fmean(xs), stdev(xs), len(xs), target)


def margin(samples: list[float], target: float) -> float:
    """The track-3 style statistic `(target − mean)·√n`; a record needs it ≥ the track's constant c."""
    xs = list(samples)
    return (target - fmean(xs)) * math.sqrt(len(xs))


def meets_margin(samples: list[float], target: float, c: float) -> bool:
    return margin(samples, target) >= c


# ---- times and speedups ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided confidence interval (lo/hi are None with one sample)."""
    estimate: float
    lo: float | None
    hi: float | None
    n: int
    level: float


def mean_ci(samples: list[float], level: float = 0.95) -> Interval:
    """Mean and t-based confidence interval (e.g. of train times in ms)."""
    xs = list(samples)
    if not xs:
        raise ValueError("no samples")
    m = fmean(xs)
    if len(xs) < 2:
        return Interval(m, None, None, 1, level)
    half = t_ppf(0.5 + level / 2, len(xs) - 1) * stdev(xs) / math.sqrt(len(xs))
    return Interval(m, m - half, m + half, len(xs), level)


def welch_interval(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float]:
    """Two-sided interval on mean(b) − mean(a), Welch–Satterthwaite degrees of freedom."""
    va, vb = variance(a) / len(a), variance(b) / len(b)
    d = fmean(b) - fmean(a)
    se2 = va + vb
    if se2 == 0:  # every run equal on both sides: the difference is exactly known
        return d, d
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_ppf(0.5 + level / 2, df) * math.sqrt(se2)
    return d - half, d + half


def speedup(pairs: list[tuple[float, float]], level: float = 0.95) -> Interval:
    """Speedup of B over A (time_A / time_B; > 1 means B is faster) from interleaved (A, B) pairs.

    Pairing cancels the drift the two runs of a pair share (thermals, neighbours); the interval is a
    t interval on the log ratios, so it is the geometric-mean speedup and stays positive.
    """
    logs = [math.log(a / b) for a, b in pairs]
    if not logs:
        raise ValueError("no (A, B) pairs")
    ci = mean_ci(logs, level)
    exp = (lambda v: None if v is None else math.exp(v))
    return Interval(math.exp(ci.estimate), exp(ci.lo), exp(ci.hi), ci.n, level)


def speedup_unpaired(a: list[float], b: list[float], level: float = 0.95) -> Interval:
    """Speedup of B over A (time_A / time_B) from runs that were not paired (a record folder's baseline
    runs beside its candidate's): the ratio of geometric means, with a Welch interval on the log times.
    lo/hi are None when a side has a single run."""
    la, lb = [math.log(x) for x in a], [math.log(x) for x in b]
    if not la or not lb:
        raise ValueError("no runs on one side")
    est = math.exp(fmean(la) - fmean(lb))
    if len(la) < 2 or len(lb) < 2:
        return Interval(est, None, None, min(len(la), len(lb)), level)
    lo, hi = welch_interval(lb, la, level)  # on mean(log A) − mean(log B)
    return Interval(est, math.exp(lo), math.exp(hi), min(len(la), len(lb)), level)
