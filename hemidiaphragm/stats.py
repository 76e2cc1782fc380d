"""Summary statistics with percentile bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values, statistic=np.mean, resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over images (NaN values excluded).

    Returns (nan, nan) when fewer than two finite values remain.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, values.size, size=(resamples, values.size))
    estimates = statistic(values[indices], axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


def summarise(values, resamples: int = 2000, seed: int = 0) -> dict:
    """Return n, mean, std, median, p95, max and the 95% bootstrap interval of the mean."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        nan = float("nan")
        return {"n": 0, "mean": nan, "std": nan, "median": nan, "p95": nan, "max": nan,
                "ci95_low": nan, "ci95_high": nan}
    low, high = bootstrap_ci(finite, resamples=resamples, seed=seed)
    return {
        "n": int(finite.size),
        "mean": float(finite.mean()),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "median": float(np.median(finite)),
        "p95": float(np.percentile(finite, 95)),
        "max": float(finite.max()),
        "ci95_low": low,
        "ci95_high": high,
    }
