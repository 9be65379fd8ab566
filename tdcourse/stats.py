"""Small statistics every chapter needs: bootstrap intervals, permutation p-values, a
proportion's interval, and per-row rank trends. Vectorised numpy; seeded; no hidden state.

Arrays follow the course's rule (:mod:`tdcourse.checks`): float32 / float64, no NaN or inf (a NaN
observed value would silently give the smallest p-value, a NaN draw would be dropped from a
rank), no float16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .checks import check_array
from .memo import cached

__all__ = ["Interval", "Trend", "bootstrap_ci", "bootstrap_weights", "curve_trend", "proportion_ci", "permutation_pvalue", "spearman_rows", "zscore"]


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
    x = check_array(x, "x", min_ndim=1)
    if x.shape[0] < 2:
        raise ValueError("bootstrap_ci needs at least 2 observations along axis 0")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[0], size=(n_boot, x.shape[0]))
    boots = np.array([stat(x[i]) for i in idx], dtype=float)
    a = (1 - level) / 2
    return Interval(float(stat(x)), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)), level)


def bootstrap_weights(n_obs: int, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """Bootstrap resamples of ``n_obs`` observations as weights (counts / n_obs).

    Returns
    -------
    ndarray of shape (n_boot, n_obs)
        Row ``b`` holds how often each observation is drawn in resample ``b``, divided by
        ``n_obs`` (rows sum to 1): ``w @ y`` gives the mean of every resample at once, and a
        weighted moment with row ``b`` equals the plain moment of resample ``b``.
    """
    if n_obs < 2:
        raise ValueError(f"need at least 2 observations to bootstrap, got {n_obs}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_obs, np.full(n_obs, 1.0 / n_obs), size=n_boot) / n_obs


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
    null = check_array(null, "null").astype(np.float64, copy=False).ravel()
    observed = float(check_array(observed, "observed"))
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

    y = check_array(y, "y").astype(np.float64, copy=False)
    if y.ndim != 2:
        raise ValueError(f"y must be 2-D (n_rows, n_points), got shape {y.shape}")
    x = np.arange(y.shape[1], dtype=float) if x is None else check_array(x, "x").astype(np.float64, copy=False)
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
    null = check_array(null, "null").astype(np.float64, copy=False)
    return (check_array(observed, "observed") - null.mean(axis)) / null.std(axis)


# --------------------------------------------------------------------------- curves over depth
# (appended for the growth and information chapters; generic: any per-observation curve)


@dataclass(frozen=True)
class Trend:
    """How the mean of a curve over depth changes, with bootstrap intervals.

    Attributes
    ----------
    rho : Interval
        Spearman rank correlation of the mean curve with depth (+1: rises at every step).
    change : Interval
        Mean of the last ``frac`` of the points minus the mean of the first ``frac``.
    ratio : Interval
        The same two means as a ratio, late / early (NaN where the early mean is 0).
    early, late : Interval
        The two means themselves.
    n_obs : int
        Observations the bootstrap resampled (samples, or units).
    """

    rho: Interval
    change: Interval
    ratio: Interval
    early: Interval
    late: Interval
    n_obs: int


@cached
def curve_trend(
    y: np.ndarray,
    x: np.ndarray | None = None,
    frac: float = 1 / 3,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Trend:
    """Does the mean curve rise with depth? Spearman ρ and late-minus-early, bootstrapped.

    The curve is the mean over observations (rows) of ``y``; the bootstrap resamples rows with
    replacement (multinomial weights, so ``n_boot`` resamples cost one matrix product) and
    recomputes ρ, the change and the ratio on each resampled mean curve.

    Parameters
    ----------
    y : ndarray of shape (n_obs, n_points)
        One curve per observation (e.g. per sample: a statistic at each site; or per unit).
    x : ndarray of shape (n_points,) or None
        Depth of each point (default 0, 1, 2, …).
    frac : float in (0, 0.5]
        Share of the points in the "early" and in the "late" window (at least one each).
    n_boot : int
    level : float
    seed : int

    Returns
    -------
    Trend
    """
    y = check_array(y, "y").astype(np.float64, copy=False)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 3:
        raise ValueError(f"y must have shape (n_obs >= 2, n_points >= 3), got {y.shape}")
    if not 0 < frac <= 0.5:
        raise ValueError(f"frac must be in (0, 0.5], got {frac}")
    n_obs, n_pts = y.shape
    k = max(1, int(round(frac * n_pts)))
    w = bootstrap_weights(n_obs, n_boot, seed)
    curves = np.vstack([y.mean(0), w @ y])  # row 0: the observed mean curve
    rho = spearman_rows(curves, x)
    early, late = curves[:, :k].mean(1), curves[:, -k:].mean(1)
    change = late - early
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = late / early
    a = (1 - level) / 2

    def interval(v: np.ndarray) -> Interval:
        boot = v[1:][np.isfinite(v[1:])]
        if boot.size == 0:
            return Interval(float(v[0]), float("nan"), float("nan"), level)
        return Interval(float(v[0]), float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a)), level)

    return Trend(rho=interval(rho), change=interval(change), ratio=interval(ratio),
                 early=interval(early), late=interval(late), n_obs=n_obs)
