"""Small statistics every chapter needs: bootstrap intervals, permutation p-values, a
proportion's interval, and per-row rank trends. Vectorised numpy; seeded; no hidden state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Interval", "bootstrap_ci", "proportion_ci", "permutation_pvalue", "spearman_rows", "zscore"]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval at ``level``."""

    estimate: float
    lo: float
    hi: float
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{int(self.level * 100)} % CI {self.lo:.4g}, {self.hi:.4g}]"


def bootstrap_ci(
    x: np.ndarray,
    stat: Callable[[np.ndarray], np.ndarray] = np.mean,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``stat`` over the first axis of ``x``.

    Parameters
    ----------
    x : ndarray of shape (n, ...)
        Resampled along axis 0 (e.g. samples or units).
    stat : callable
        Maps an array of shape ``(n, ...)`` to a scalar. Called ``n_boot`` times.
    """
    x = np.asarray(x)
    if x.shape[0] < 2:
        raise ValueError("bootstrap_ci needs at least 2 observations along axis 0")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[0], size=(n_boot, x.shape[0]))
    boots = np.array([stat(x[i]) for i in idx], dtype=float)
    a = (1 - level) / 2
    return Interval(float(stat(x)), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)), level)


def proportion_ci(successes: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval of a proportion ``successes / n``."""
    from scipy.stats import norm

    if n <= 0:
        raise ValueError("n must be positive")
    z = norm.ppf(1 - (1 - level) / 2)
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level)


def permutation_pvalue(observed: float, null: np.ndarray, alternative: str = "greater") -> float:
    """One-sided (``"greater"`` / ``"less"``) or ``"two-sided"`` p-value of ``observed``
    against null draws, with the +1 correction: ``(1 + #{null at least as extreme}) / (1 + n)``."""
    null = np.asarray(null, dtype=float).ravel()
    if alternative == "greater":
        k = np.sum(null >= observed)
    elif alternative == "less":
        k = np.sum(null <= observed)
    elif alternative == "two-sided":
        centre = null.mean()
        k = np.sum(np.abs(null - centre) >= abs(observed - centre))
    else:
        raise ValueError("alternative must be 'greater', 'less' or 'two-sided'")
    return float((1 + k) / (1 + null.size))


def spearman_rows(y: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
    """Spearman rank correlation of each row of ``y`` with ``x`` (default: 0, 1, 2, …).

    Parameters
    ----------
    y : ndarray of shape (n_rows, n_points)
    x : ndarray of shape (n_points,) or None

    Returns
    -------
    ndarray of shape (n_rows,)
        NaN for a constant row.
    """
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=float)
    if y.ndim != 2:
        raise ValueError(f"y must be 2-D (n_rows, n_points), got shape {y.shape}")
    x = np.arange(y.shape[1], dtype=float) if x is None else np.asarray(x, dtype=float)
    if x.shape != (y.shape[1],):
        raise ValueError(f"x must have shape ({y.shape[1]},), got {x.shape}")
    ry = rankdata(y, axis=1)
    rx = rankdata(x)
    ry = ry - ry.mean(1, keepdims=True)
    rx = rx - rx.mean()
    denom = np.sqrt((ry**2).sum(1) * (rx**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ry @ rx) / denom


def zscore(observed: np.ndarray, null: np.ndarray, axis: int = 0) -> np.ndarray:
    """``(observed - mean(null)) / std(null)`` with the null's draws along ``axis``."""
    null = np.asarray(null, dtype=float)
    return (np.asarray(observed) - null.mean(axis)) / null.std(axis)
