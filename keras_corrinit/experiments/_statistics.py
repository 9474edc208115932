"""Paired differences over seeds with Student-t intervals (numpy only).

scipy is not a dependency of the package, so the t quantile is computed
here: the t distribution's CDF for an integer number of degrees of freedom
has a closed form (Abramowitz and Stegun 26.7.3 and 26.7.4), inverted by
bisection to float precision.
"""

import math

import numpy as np

__all__ = ["mean_interval", "paired_difference", "t_quantile"]


def _t_cdf(t, df):
    """P(T <= t) for Student's t with integer `df` >= 1 (A&S 26.7.3/26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    if df % 2:  # odd: 2 theta / pi + (2 / pi) s c (1 + 2/3 c^2 + ...)
        term, total = c, c if df > 1 else 0.0
        for k in range(3, df - 1, 2):
            term *= c * c * (k - 1) / k
            total += term
        a = (2 / math.pi) * (theta + s * total) if df > 1 else 2 * theta / math.pi
    else:  # even: s (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ...)
        term = total = 1.0
        for k in range(2, df - 1, 2):
            term *= c * c * (k - 1) / k
            total += term
        a = s * total
    return 0.5 + a / 2  # a = P(|T| <= t) signed


def t_quantile(p, df):
    """The `p` quantile of Student's t with `df` degrees of freedom (integer >= 1)."""
    if not 0 < p < 1:
        raise ValueError(f"`p` must be in (0, 1); received {p}.")
    low, high = -1e6, 1e6
    for _ in range(200):
        mid = (low + high) / 2
        if _t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, abs(mid)):
            break
    return (low + high) / 2


def paired_difference(values, baseline, confidence=0.95):
    """Mean and t interval of `values[seed] - baseline[seed]` over common seeds.

    Args:
        values: `{seed: number}` of an arm.
        baseline: `{seed: number}` of the baseline.
        confidence: Two-sided level of the interval. Default 0.95.

    Returns:
        `{"mean", "low", "high", "n"}`; with fewer than 2 common seeds the
        interval is NaN (undefined).
    """
    seeds = sorted(set(values) & set(baseline))
    return mean_interval([values[s] - baseline[s] for s in seeds], confidence)


def mean_interval(values, confidence=0.95):
    """Mean and t interval of the mean of `values` (one per seed): `{"mean", "low", "high", "n"}`.

    With fewer than 2 values the interval is NaN (undefined).
    """
    v = np.asarray(list(values), dtype=np.float64)
    mean = float(v.mean()) if len(v) else math.nan
    if len(v) < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": len(v)}
    half = t_quantile(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return {"mean": mean, "low": float(mean - half), "high": float(mean + half), "n": len(v)}
