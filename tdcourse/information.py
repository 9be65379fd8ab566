"""Mutual information between successive sites, unit by unit (claim C8).

The first author reports that the mutual information (MI) between activations at successive
layers "drops sharply in the early layers, then slowly climbs back", while the Pearson
correlation stays high. The estimator is not given. We estimate, for each unit ``u`` and each
step ``h_l → h_{l+1}`` along the site axis, ``I(h_l^u ; h_{l+1}^u)`` over the N samples (last
token), in nats, three ways:

* **kNN** (:func:`knn_mi`): the Kraskov–Stögbauer–Grassberger estimator (KSG, algorithm 1,
  ``k`` neighbours), exactly as scikit-learn's :func:`~sklearn.feature_selection.mutual_info_regression`
  computes it, but for many (x, y) column pairs at once: scikit-learn takes one target per
  call, which would mean a Python loop over units. Here every pair lives in one k-d tree, on
  its own slice of a third coordinate, so no neighbour search crosses pairs. Unlike
  scikit-learn, negative estimates are kept (not clipped to 0), so a null averages to ≈ 0.
* **binned** (:func:`binned_mi`): plug-in MI of a ``bins × bins`` histogram with equal-count
  (quantile) bins per unit, with the Miller–Madow bias correction. Equal-count bins make it a
  function of ranks only, so massive activations cannot squeeze everything into one bin. It
  cannot exceed ``log(bins)``.
* **Gaussian from r** (:func:`gaussian_mi`): ``−½·log(1 − r²)``, the MI a bivariate Gaussian
  with Pearson correlation ``r`` would have; and its rank version, the **Gaussian-copula** MI
  (:func:`copula_mi`, Ince et al. 2017), ``−½·log(1 − ρ²)`` with ρ the correlation of the
  normal scores. Where kNN MI ≫ Gaussian-from-r the dependence is non-linear; where the copula
  value is close to kNN but far from Gaussian-from-r it is monotone but not linear (heavy
  tails, outliers); where kNN ≫ copula it is not even monotone.

:func:`shuffled` gives the null (samples permuted independently per column: the estimator's
value at zero dependence). All estimators work on arrays ``x, y`` of shape
``(n_samples, ...)``, along axis 0, for every trailing index at once.

Inputs follow the course's rule (:mod:`tdcourse.checks`): float32 / float64, no NaN or inf, no
float16; in a correlation ``r`` (:func:`gaussian_mi`) a NaN means "undefined" (a constant
column) and is carried to that entry's MI. The smallest run that carries a verdict:
:data:`MIN_SAMPLES` = 50 samples (the binned estimator puts N / 10 samples in each of its
quantile bins: 5 at N = 50; kNN's bias grows fast below that) and :data:`MIN_LAYERS` = 3 layers
(the dip is looked for in the first quarter of the 2L − 1 steps and needs 2 steps there and 3
after). :func:`mi_profile` and :func:`verdicts` refuse smaller runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import stats
from . import streaming
from .capture import check_acts
from .checks import check_array, check_run_size
from .exercises import report, run_case
from .memo import cached
from .verdicts import Verdict, judge

__all__ = [
    "MIN_SAMPLES",
    "MIN_LAYERS",
    "N_UNITS",
    "ESTIMATORS",
    "successive",
    "pick_units",
    "same_input_groups",
    "pearson",
    "gaussian_mi",
    "copula_mi",
    "binned_mi",
    "knn_mi",
    "shuffled",
    "successive_mi",
    "DipRecovery",
    "dip_and_recovery",
    "MIProfile",
    "mi_profile",
    "verdicts",
    "check_gaussian_mi",
    "check_binned_mi",
]

# Points per k-d tree in knn_mi (columns × samples): bounds memory to a few tens of MB.
_KNN_CHUNK = 1 << 18

#: Units (drawn at random, seeded) on which the chapter and the scoreboard estimate the MI
#: profile: one number for both (all 576 of SmolLM2's would take minutes on a laptop CPU).
N_UNITS = 32


# --------------------------------------------------------------------------- inputs


#: The fewest samples (N) and layers a verdict on C8 is computed from (see the module's docstring).
MIN_SAMPLES = 50
MIN_LAYERS = 3
_ANALYSIS = "Chapter 4's MI analysis (C8)"


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Validate and flatten to (n_samples, n_columns) float64."""
    x = check_array(x, "x").astype(np.float64, copy=False)
    y = check_array(y, "y").astype(np.float64, copy=False)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape (n_samples, ...), got {x.shape} and {y.shape}")
    if x.ndim < 1 or x.shape[0] < 4:
        raise ValueError(f"need at least 4 samples along axis 0, got shape {x.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite (no NaN or inf)")
    rest = x.shape[1:]
    n = x.shape[0]
    return x.reshape(n, -1), y.reshape(n, -1), rest


def successive(acts: np.ndarray, units: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each unit before and after every step along the site axis.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    units : ndarray of int of shape (n_units,) or None
        Units to keep (default: all).

    Returns
    -------
    x, y : ndarrays of shape (n_samples, n_sites − 1, n_units)
        ``x[:, p] = acts[:, p]`` and ``y[:, p] = acts[:, p + 1]`` (step ``p`` goes from site
        ``p`` to site ``p + 1``; even ``p``: the attention update, odd ``p``: the MLP update).
    """
    acts = check_acts(acts, min_sites=2, why="for a step between sites")  # shape, finite
    if units is not None:
        units = np.asarray(units)
        if units.ndim != 1 or units.size == 0 or units.min() < 0 or units.max() >= acts.shape[2]:
            raise ValueError(f"units must be a 1-D array of unit indices in 0 … {acts.shape[2] - 1}")
        n, n_sites, d = acts.shape
        picked = np.empty((n, n_sites, units.size), dtype=acts.dtype)
        # a block of samples at a time: a cached capture's pages are given back after each block
        for i0, i1 in streaming.sample_blocks(n, n_sites * d * acts.dtype.itemsize):
            picked[i0:i1] = streaming.read(acts, np.s_[i0:i1])[:, :, units]
        acts = picked
    return acts[:, :-1], acts[:, 1:]


def pick_units(d_model: int, n_units: int, seed: int = 0) -> np.ndarray:
    """A seeded random subset of units, sorted: ``n_units`` distinct indices in ``0 … d_model − 1``."""
    if not 1 <= n_units <= d_model:
        raise ValueError(f"n_units must be in 1 … d_model={d_model}, got {n_units}")
    return np.sort(np.random.default_rng(seed).choice(d_model, size=n_units, replace=False))


def same_input_groups(acts: np.ndarray, site: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Group samples whose state at ``site`` is identical (at site 0, the token embedding:
    samples that end on the same token).

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    site : int
        Position on the site axis.

    Returns
    -------
    group : ndarray of int of shape (n_samples,)
        Group id of each sample (0 … n_groups − 1).
    size : ndarray of int of shape (n_samples,)
        Size of each sample's group (1: no other sample shares its state).
    """
    acts = check_acts(acts)  # NaN != NaN: a NaN state would split its group silently
    if not -acts.shape[1] <= site < acts.shape[1]:
        raise ValueError(f"site {site} is out of range: there are {acts.shape[1]} sites")
    states = streaming.read(acts, np.s_[:, site])  # plain reads: the memory map's pages are not kept
    _, group, counts = np.unique(states, axis=0, return_inverse=True, return_counts=True)
    group = group.ravel()
    return group, counts[group]


def shuffled(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """``y`` with its samples (axis 0) permuted independently in every column: the null.

    Parameters
    ----------
    y : ndarray of shape (n_samples, ...)

    Returns
    -------
    ndarray of the same shape
    """
    y = check_array(y, "y", min_ndim=1)
    rng = np.random.default_rng(seed)
    flat = y.reshape(y.shape[0], -1)
    order = np.argsort(rng.random(flat.shape), axis=0)
    return np.take_along_axis(flat, order, axis=0).reshape(y.shape)


# --------------------------------------------------------------------------- estimators


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``x[:, i]`` with ``y[:, i]`` over samples, for every trailing index.

    Parameters
    ----------
    x, y : ndarrays of shape (n_samples, ...)

    Returns
    -------
    ndarray of shape (...)
        NaN where a column is constant.
    """
    x2, y2, rest = _pair(x, y)
    xc = x2 - x2.mean(0)
    yc = y2 - y2.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(0) / np.sqrt((xc**2).sum(0) * (yc**2).sum(0))
    return np.clip(r, -1.0, 1.0).reshape(rest)


def gaussian_mi(r: np.ndarray | float) -> np.ndarray:
    """``−½·log(1 − r²)`` nats: the MI of a bivariate Gaussian with correlation ``r``.

    Parameters
    ----------
    r : float or ndarray of any shape, values in [−1, 1]

    Returns
    -------
    ndarray of the same shape (``inf`` at |r| = 1, NaN where r is NaN)
    """
    r = check_array(r, "r", finite=False).astype(np.float64, copy=False)  # NaN: undefined r, carried
    if np.isinf(r).any():
        raise ValueError("r holds inf: a correlation lies in [-1, 1] (NaN where undefined)")
    if np.any(np.abs(r[np.isfinite(r)]) > 1 + 1e-12):
        raise ValueError("a correlation must lie in [-1, 1]")
    with np.errstate(divide="ignore"):
        return -0.5 * np.log1p(-np.minimum(r * r, 1.0))


def _ranks(x2: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x2, axis=0, method="average")


def copula_mi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gaussian-copula MI: :func:`gaussian_mi` of the correlation of the normal scores.

    Each column is replaced by ``Φ⁻¹(rank / (n + 1))`` (ties share their average rank), so the
    value depends on ranks only: a monotone but non-linear relation gets the MI its linear
    counterpart would have. A lower bound on the MI for a Gaussian copula (Ince et al. 2017).

    Parameters
    ----------
    x, y : ndarrays of shape (n_samples, ...)

    Returns
    -------
    ndarray of shape (...)
    """
    from scipy.special import ndtri

    x2, y2, rest = _pair(x, y)
    n = x2.shape[0]
    zx = ndtri(_ranks(x2) / (n + 1))
    zy = ndtri(_ranks(y2) / (n + 1))
    return gaussian_mi(pearson(zx, zy)).reshape(rest)


def binned_mi(
    x: np.ndarray, y: np.ndarray, bins: int = 10, strategy: str = "quantile", correction: bool = True
) -> np.ndarray:
    """Histogram (plug-in) MI, in nats, column by column.

    Parameters
    ----------
    x, y : ndarrays of shape (n_samples, ...)
    bins : int >= 2
        Bins per variable.
    strategy : {"quantile", "uniform"}
        ``"quantile"``: equal-count bins from ranks (ties share a bin). ``"uniform"``:
        equal-width bins between each column's min and max (sensitive to outliers).
    correction : bool
        Subtract the Miller–Madow bias ``(K_xy − K_x − K_y + 1) / (2n)`` (K: occupied bins).

    Returns
    -------
    ndarray of shape (...)
        At most ``log(bins)``.
    """
    x2, y2, rest = _pair(x, y)
    if int(bins) != bins or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins}")
    bins = int(bins)
    n, m = x2.shape

    def codes(v: np.ndarray) -> np.ndarray:
        if strategy == "quantile":
            c = np.floor((_ranks(v) - 1) * bins / n)
        elif strategy == "uniform":
            lo, hi = v.min(0), v.max(0)
            with np.errstate(invalid="ignore", divide="ignore"):
                c = np.floor((v - lo) / (hi - lo) * bins)
            c = np.nan_to_num(c)
        else:
            raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
        return np.clip(c, 0, bins - 1).astype(np.int64)

    cell = codes(x2) * bins + codes(y2) + (bins * bins) * np.arange(m)[None, :]
    p = np.bincount(cell.ravel(), minlength=m * bins * bins).reshape(m, bins, bins) / n
    px = p.sum(2, keepdims=True)
    py = p.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(p > 0, p * np.log(p / (px * py)), 0.0)
    mi = terms.sum((1, 2))
    if correction:
        k_xy = (p > 0).sum((1, 2))
        k_x = (px > 0).sum((1, 2))
        k_y = (py > 0).sum((1, 2))
        mi = mi - (k_xy - k_x - k_y + 1) / (2 * n)
    return mi.reshape(rest)


def _first_true(pred: Callable[[np.ndarray], np.ndarray], n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Smallest index j in 0 … n with ``pred(j)`` true (n if none), for a predicate that is
    monotone (false, then true) in j; a binary search run for every element of ``shape`` at once."""
    lo = np.zeros(shape, dtype=np.int64)
    hi = np.full(shape, n, dtype=np.int64)
    for _ in range(int(np.ceil(np.log2(n + 1))) + 1):  # ~11 vectorised steps for n = 1000
        mid = (lo + hi) // 2
        ok = pred(np.minimum(mid, n - 1)) & (mid < n)
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, np.minimum(mid + 1, hi))
    return hi


def _count_within(z: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """``#{j : |z[j, c] − z[i, c]| <= radius[i, c]}`` for every sample i and column c.

    Exact (the same floating-point differences a max-norm tree compares), by binary search
    in each column's sorted values. ``z, radius`` of shape (n, m); returns (n, m).
    """
    n = z.shape[0]
    zs = np.sort(z, axis=0)

    def at(j: np.ndarray) -> np.ndarray:
        return np.take_along_axis(zs, j, axis=0)

    first_in = _first_true(lambda j: z - at(j) <= radius, n, z.shape)
    first_out = _first_true(lambda j: at(j) - z > radius, n, z.shape)
    return (first_out - first_in).astype(float)


def knn_mi(x: np.ndarray, y: np.ndarray, k: int = 3, seed: int = 0) -> np.ndarray:
    """KSG k-nearest-neighbour MI (Kraskov et al. 2004, algorithm 1), column by column.

    The estimate scikit-learn's ``mutual_info_regression(x[:, [i]], y[:, i], n_neighbors=k)``
    returns, for all columns at once and without its clipping at 0: each column is scaled to
    unit variance, jittered by 1e-10 (ties, e.g. repeated tokens at the embedding, are broken
    the same way), then ``ψ(n) + ψ(k) − ⟨ψ(n_x + 1) + ψ(n_y + 1)⟩`` with the max-norm radius to
    the k-th neighbour in the joint space. One k-d tree holds many columns, each on its own
    slice of a third coordinate, so the neighbour search is in C, not in a Python loop.

    Parameters
    ----------
    x, y : ndarrays of shape (n_samples, ...)
    k : int >= 1
        Neighbours (scikit-learn's default is 3).
    seed : int
        Seeds the jitter.

    Returns
    -------
    ndarray of shape (...)
        Nats; NaN for a constant column. Cost: a few milliseconds per column of 1000 samples
        (one CPU core), so subsample units for whole-model profiles (:func:`mi_profile`).
    """
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    x2, y2, rest = _pair(x, y)
    n, m = x2.shape
    if not 1 <= int(k) < n:
        raise ValueError(f"k must be an integer in 1 … n_samples − 1 = {n - 1}, got {k}")
    k = int(k)
    rng = np.random.default_rng(seed)

    def scaled(v: np.ndarray) -> np.ndarray:
        sd = v.std(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = v / np.where(sd > 0, sd, 1.0)
        z = z - z.mean(0)  # centring changes no distance; it keeps the values small
        return z + 1e-10 * np.maximum(1.0, np.abs(z).mean(0)) * rng.standard_normal(z.shape)

    zx, zy = scaled(x2), scaled(y2)
    # After scaling, |z| <= sqrt(n), so columns placed 4·sqrt(n) + 1 apart never meet.
    gap = 4.0 * np.sqrt(n) + 1.0
    out = np.empty(m)
    per = max(1, _KNN_CHUNK // n)
    for start in range(0, m, per):  # chunks of columns bound memory; each chunk is one tree
        cols = slice(start, min(m, start + per))
        mc = cols.stop - cols.start
        lane = np.repeat(np.arange(mc, dtype=float) * gap, n)
        joint = np.column_stack([zx[:, cols].T.ravel(), zy[:, cols].T.ravel(), lane])
        dist, _ = cKDTree(joint).query(joint, k=k + 1, p=np.inf)
        radius = np.nextafter(dist[:, -1], 0).reshape(mc, n).T  # (n, mc): strictly inside the k-th
        nx = _count_within(zx[:, cols], radius) - 1.0  # minus the point itself
        ny = _count_within(zy[:, cols], radius) - 1.0
        per_point = digamma(nx + 1) + digamma(ny + 1)
        out[cols] = digamma(n) + digamma(k) - per_point.mean(0)
    const = (x2.std(0) == 0) | (y2.std(0) == 0)
    out[const] = np.nan
    return out.reshape(rest)


_METHODS = {
    "knn": knn_mi,
    "binned": binned_mi,
    "gaussian": lambda x, y: gaussian_mi(pearson(x, y)),
    "copula": copula_mi,
}


def successive_mi(acts: np.ndarray, method: str = "knn", units: np.ndarray | None = None,
                  null: bool = False, seed: int = 0, **kwargs) -> np.ndarray:
    """MI of every unit between consecutive sites.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    method : {"knn", "binned", "gaussian", "copula"}
        :func:`knn_mi`, :func:`binned_mi`, :func:`gaussian_mi` of :func:`pearson`, :func:`copula_mi`.
    units : ndarray of int of shape (n_units,) or None
        Units to use (default all; kNN on all 576 units × 59 SmolLM2 steps takes minutes).
    null : bool
        Estimate on :func:`shuffled` samples of the later site instead (the zero-dependence null).
    seed : int
        Seeds the null's permutation and kNN's jitter.
    **kwargs
        Passed to the estimator (``k`` for kNN; ``bins``, ``strategy``, ``correction`` for binned).

    Returns
    -------
    ndarray of shape (n_sites − 1, n_units)
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    x, y = successive(acts, units)
    if null:
        y = shuffled(y, seed=seed)
    if method == "knn":
        kwargs.setdefault("seed", seed)
    return _METHODS[method](x, y, **kwargs)


# --------------------------------------------------------------------------- the shape of the curve


@dataclass(frozen=True)
class DipRecovery:
    """Does a curve over steps fall early and climb back? (Bootstrap over rows, e.g. units.)

    Attributes
    ----------
    curve : ndarray of shape (n_steps,)
        Mean over rows.
    low : int
        Step of the curve's minimum within the early window.
    drop : Interval
        Highest value up to ``low`` minus the value at ``low`` (≥ 0; 0: no drop).
    rel_drop : Interval
        ``drop`` as a share of that highest value (0.5: the curve fell to half).
    climb : Interval
        Mean over the last ``early`` steps minus the value at ``low``.
    rho_after : Interval
        Spearman ρ of the curve with depth over the steps after the early window (> 0: it
        keeps rising once the early layers are past).
    early : int
        Steps in the early window (and in the late one).
    """

    curve: np.ndarray
    low: int
    drop: stats.Interval
    rel_drop: stats.Interval
    climb: stats.Interval
    rho_after: stats.Interval
    early: int

    #: Relative drop that counts as "sharp": the curve falls to half or less.
    SHARP = 0.5

    @property
    def drops(self) -> bool:
        """A sharp early drop: the lower bound of ``rel_drop`` is at least :attr:`SHARP`."""
        return self.rel_drop.lo >= self.SHARP

    @property
    def climbs(self) -> bool:
        """A climb back: ``climb`` and ``rho_after`` both have lower bounds above 0."""
        return self.climb.lo > 0 and self.rho_after.lo > 0


def dip_and_recovery(curves: np.ndarray, early_frac: float = 0.25, n_boot: int = 1000,
                     level: float = 0.95, seed: int = 0) -> DipRecovery:
    """Measure a drop in the early steps and the climb after it, with a bootstrap over rows.

    Parameters
    ----------
    curves : ndarray of shape (n_rows, n_steps)
        One curve per unit (e.g. ``successive_mi(...).T``); rows are resampled.
    early_frac : float in (0, 0.5]
        The early window is the first ``ceil(early_frac · n_steps)`` steps; the late window the
        last as many.
    n_boot, level, seed : bootstrap settings. The minimum's position is found again in every
        resample, so the intervals include the uncertainty of where the dip is.

    Returns
    -------
    DipRecovery
    """
    c = check_array(curves, "curves", finite=False).astype(np.float64, copy=False)
    if c.ndim != 2 or c.shape[0] < 2:
        raise ValueError(f"curves must have shape (n_rows >= 2, n_steps), got {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("curves hold NaN or inf: drop those rows first")
    if not 0 < early_frac <= 0.5:
        raise ValueError(f"early_frac must be in (0, 0.5], got {early_frac}")
    n_rows, n_steps = c.shape
    e = int(np.ceil(early_frac * n_steps))
    if e < 2 or n_steps - e < 3:
        raise ValueError(f"curves have {n_steps} steps: the early window ({e} steps with early_frac={early_frac}) "
                         "needs at least 2 for a drop and the steps after it at least 3 for a trend "
                         "(a 4-layer model's 7 steps are enough; raise early_frac for fewer)")
    w = stats.bootstrap_weights(n_rows, n_boot, seed)
    means = np.vstack([c.mean(0), w @ c])  # row 0: the observed curve
    low = np.argmin(means[:, :e], axis=1)
    rows = np.arange(means.shape[0])
    upto = np.where(np.arange(e)[None, :] <= low[:, None], means[:, :e], -np.inf).max(1)
    at_low = means[rows, low]
    drop = upto - at_low
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(upto > 0, drop / upto, 0.0)
    climb = means[:, -e:].mean(1) - at_low
    rho = stats.spearman_rows(means[:, e:])
    a = (1 - level) / 2

    def interval(v: np.ndarray) -> stats.Interval:
        b = v[1:][np.isfinite(v[1:])]
        lo, hi = (np.quantile(b, a), np.quantile(b, 1 - a)) if b.size else (np.nan, np.nan)
        return stats.Interval(float(v[0]), float(lo), float(hi), level)

    return DipRecovery(curve=means[0], low=int(low[0]), drop=interval(drop), rel_drop=interval(rel),
                       climb=interval(climb), rho_after=interval(rho), early=e)


# --------------------------------------------------------------------------- one run, every estimator


@dataclass(frozen=True)
class MIProfile:
    """Per-unit MI between consecutive sites of one run, by every estimator, with its null.

    Attributes
    ----------
    units : ndarray of int of shape (n_units,)
        The (seeded) subset of units all estimates use.
    mi : dict of str -> ndarray of shape (n_steps, n_units)
        ``"knn"``, ``"binned"``, ``"gaussian"`` (from Pearson r), ``"copula"``.
    null : dict of str -> ndarray of shape (n_steps, n_units)
        ``"knn"`` and ``"binned"`` on shuffled samples.
    r : ndarray of shape (n_steps, n_units)
        Pearson r.
    k, bins : the estimators' settings
    """

    units: np.ndarray
    mi: dict
    null: dict
    r: np.ndarray
    k: int
    bins: int


@cached
def mi_profile(acts: np.ndarray, n_units: int = N_UNITS, seed: int = 0, k: int = 3, bins: int = 10) -> MIProfile:
    """Every estimator on the same seeded subset of units (see :class:`MIProfile`).

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    n_units : int
        Units drawn at random (``pick_units(d_model, n_units, seed)``); ``d_model`` for all.
    seed, k, bins : see :func:`pick_units`, :func:`knn_mi`, :func:`binned_mi`
    """
    acts = check_acts(acts, min_sites=2, why="for a step between sites")  # shape, finite
    check_run_size(acts, MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)
    units = pick_units(acts.shape[2], n_units, seed)
    x, y = successive(acts, units)
    ys = shuffled(y, seed=seed)
    mi = {
        "knn": knn_mi(x, y, k=k, seed=seed),
        "binned": binned_mi(x, y, bins=bins),
        "gaussian": gaussian_mi(pearson(x, y)),
        "copula": copula_mi(x, y),
    }
    null = {"knn": knn_mi(x, ys, k=k, seed=seed), "binned": binned_mi(x, ys, bins=bins)}
    return MIProfile(units=units, mi=mi, null=null, r=pearson(x, y), k=k, bins=bins)


#: Names of :class:`MIProfile`'s estimators, as :func:`verdicts` takes them.
ESTIMATORS = ("knn", "binned", "gaussian", "copula")
_EST_NAME = {"knn": "kNN", "binned": "binned", "gaussian": "Gaussian", "copula": "copula"}


def verdicts(run, chapter: str = "", profile: MIProfile | None = None, n_units: int = N_UNITS, seed: int = 0,
             k: int = 3, bins: int = 10, early_frac: float = 0.25, n_boot: int = 1000,
             estimators: Sequence[str] = ("knn", "binned")) -> list[Verdict]:
    """Claim C8 for one run.

    Parameters
    ----------
    run : tdcourse.capture.Activations
    chapter : str
    profile : MIProfile or None
        Reuse one computed by :func:`mi_profile` on ``run.acts`` (else it is computed).
    n_units, seed, k, bins : see :func:`mi_profile`
    early_frac, n_boot : see :func:`dip_and_recovery`
    estimators : pair of str, default ("knn", "binned")
        The two estimators (of :data:`ESTIMATORS`) whose curves must both drop and climb back;
        the first gives the verdict's value. The robustness page also tries
        ``("copula", "gaussian")``: the Gaussian-copula estimate and the Gaussian one from
        Pearson's r (both computed by :func:`mi_profile` already).

    Returns
    -------
    list of Verdict
        ``[C8]``.
    """
    check_run_size(check_acts(run.acts), MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)
    estimators = tuple(estimators)
    if len(estimators) != 2 or len(set(estimators)) != 2 or not set(estimators) <= set(ESTIMATORS):
        raise ValueError(f"estimators must be two different names of {ESTIMATORS}, got {estimators}")
    p = profile if profile is not None else mi_profile(run.acts, n_units=n_units, seed=seed, k=k, bins=bins)
    if estimators != ("knn", "binned"):
        return [_c8_with(run, chapter, p, estimators, early_frac, n_boot, seed)]
    dips = {name: dip_and_recovery(p.mi[name].T, early_frac=early_frac, n_boot=n_boot, seed=seed)
            for name in ("knn", "binned")}
    parts = [(name, part, ok) for name, d in dips.items() for part, ok in (("drop", d.drops), ("climb", d.climbs))]
    n_ok = sum(ok for *_, ok in parts)
    d = dips["knn"]
    b = dips["binned"]
    null_knn = float(np.mean(p.null["knn"]))
    null_bin = float(np.mean(p.null["binned"]))
    sites = list(getattr(run, "sites", []))

    def where(i: int) -> str:
        return f"step {i} ({sites[i]}→{sites[i + 1]})" if len(sites) > i + 1 else f"step {i}"

    return [judge(
        "C8", "MI between successive sites drops sharply over the first few layers, then slowly climbs back.",
        f"per-unit MI(h_l^u; h_l+1^u) over samples, averaged over {p.units.size} seeded random units, at each "
        f"of the {d.curve.size} site steps; 95 % bootstrap intervals resample units. 'Drops sharply': within "
        f"the first {d.early} steps the curve falls to half its earlier high or less (lower bound of the "
        f"relative drop >= {DipRecovery.SHARP}); 'climbs back': the mean of the last {d.early} steps exceeds "
        f"that minimum and the Spearman ρ of the curve with depth after step {d.early} is above 0 (both lower "
        f"bounds > 0). Agrees: both parts for the kNN (k={p.k}) and the binned ({p.bins} quantile bins, "
        "Miller–Madow) estimators; disagrees: no part for either; partly otherwise",
        run.label, d.rel_drop.estimate, agrees=n_ok == 4, partly=n_ok > 0,
        uncertainty=f"kNN relative drop {d.rel_drop}; climb {d.climb} nats; ρ after {d.rho_after}; "
                    f"shuffled-sample null: kNN {null_knn:+.3f}, binned {null_bin:+.3f} nats",
        detail=f"value = the kNN relative drop (minimum at {where(d.low)}, {d.drop.estimate:.3f} nats below the "
               f"high before it). Binned: relative drop {b.rel_drop.estimate:.2f} [{b.rel_drop.lo:.2f}, "
               f"{b.rel_drop.hi:.2f}], climb {b.climb.estimate:.3f} nats, ρ after {b.rho_after.estimate:.2f} "
               f"[{b.rho_after.lo:.2f}, {b.rho_after.hi:.2f}]. "
               f"Parts that hold: {', '.join(f'{n} {q}' for n, q, ok in parts if ok) or 'none'}.",
        chapter=chapter)]


def _c8_with(run, chapter: str, p: MIProfile, estimators: tuple[str, str], early_frac: float, n_boot: int,
             seed: int) -> Verdict:
    """C8 judged on two other estimators (the criterion of :func:`verdicts`, other curves)."""
    dips = {name: dip_and_recovery(p.mi[name].T, early_frac=early_frac, n_boot=n_boot, seed=seed)
            for name in estimators}
    parts = [(name, part, ok) for name, d in dips.items() for part, ok in (("drop", d.drops), ("climb", d.climbs))]
    n_ok = sum(ok for *_, ok in parts)
    first, second = (dips[e] for e in estimators)
    names = [_EST_NAME[e] for e in estimators]
    return judge(
        "C8", "MI between successive sites drops sharply over the first few layers, then slowly climbs back.",
        f"per-unit MI(h_l^u; h_l+1^u) over samples, averaged over {p.units.size} seeded random units, at each "
        f"of the {first.curve.size} site steps; 95 % bootstrap intervals resample units. 'Drops sharply': within "
        f"the first {first.early} steps the curve falls to half its earlier high or less (lower bound of the "
        f"relative drop >= {DipRecovery.SHARP}); 'climbs back': the mean of the last {first.early} steps exceeds "
        f"that minimum and the Spearman ρ of the curve with depth after step {first.early} is above 0 (both lower "
        f"bounds > 0). Agrees: both parts for the {names[0]} and the {names[1]} estimators; disagrees: no part for "
        "either; partly otherwise",
        run.label, first.rel_drop.estimate, agrees=n_ok == 4, partly=n_ok > 0,
        uncertainty=(f"{names[0]} relative drop {first.rel_drop}; climb {first.climb} nats; ρ after "
                     f"{first.rho_after}. {names[1]}: relative drop {second.rel_drop}; climb {second.climb} nats"),
        detail=(f"value = the {names[0]} relative drop. Parts that hold: "
                f"{', '.join(f'{n} {q}' for n, q, ok in parts if ok) or 'none'}."),
        chapter=chapter)


# --------------------------------------------------------------------------- exercise checks




def explained_by_bins(x: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Share of the variance of ``y`` explained by the mean of ``y`` within equal-count bins of ``x``.

    A model-free counterpart of Pearson's r²: any function of ``x`` that is roughly constant
    within a bin is captured, straight or not (the correlation ratio η² of ``y`` on binned ``x``).

    Parameters
    ----------
    x, y : ndarray, shape (n_samples,)
        One unit's value before and after a step, one entry per sample.
    bins : int, default 10
        Number of equal-count bins of ``x`` (by quantiles).

    Returns
    -------
    float
        ``1 - Var(y - bin mean of y) / Var(y)``, in [0, 1].

    Raises
    ------
    ValueError
        If ``x`` and ``y`` are not 1-D of the same length, ``y`` is constant, or ``bins < 1``.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D arrays of the same length, got shapes {x.shape} and {y.shape}")
    if int(bins) < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if np.var(y) == 0:
        raise ValueError("y is constant: there is no variance to explain")
    b = np.searchsorted(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]), x)
    means = np.bincount(b, weights=y, minlength=bins) / np.maximum(np.bincount(b, minlength=bins), 1)
    return float(1 - np.var(y - means[b]) / np.var(y))


def shape_table(runs, profiles: dict, step_names, seed: int = 0):
    """The C8 shape test (:func:`dip_and_recovery`) for every run and estimator, as a table.

    Parameters
    ----------
    runs : list of Activations
    profiles : dict
        ``{run.label: MIProfile}`` from :func:`mi_profile`.
    step_names : sequence of str
        Names of the steps (``geometry.step_sites``).
    seed : int
        Bootstrap seed.

    Returns
    -------
    pandas.DataFrame
        One row per run (``plots.run_tag``) and estimator: minimum position, relative drop,
        climb and ρ after the early window with 95 % intervals, and the two booleans.
    """
    import pandas as pd

    from .plots import run_tag

    rows = []
    for run in runs:
        for key in ("knn", "binned", "gaussian", "copula"):
            d = dip_and_recovery(profiles[run.label].mi[key].T, seed=seed)
            rows.append({"model": run_tag(run), "estimator": key, "minimum at": step_names[d.low],
                         "relative drop [95 % CI]": f"{d.rel_drop.estimate:.2f} [{d.rel_drop.lo:.2f}, {d.rel_drop.hi:.2f}]",
                         "climb, nats [95 % CI]": f"{d.climb.estimate:.2f} [{d.climb.lo:.2f}, {d.climb.hi:.2f}]",
                         "ρ after early window": (f"{d.rho_after.estimate:+.2f} [{d.rho_after.lo:+.2f}, "
                                                  f"{d.rho_after.hi:+.2f}]"),
                         "drops sharply": bool(d.drops), "climbs back": bool(d.climbs)})
    return pd.DataFrame(rows)


def _pct(i: stats.Interval) -> str:
    return f"{i.estimate:.0%} [{i.lo:.0%}, {i.hi:.0%}]"


def r_versus_mi(knn: DipRecovery, gauss: DipRecovery, step_names) -> str:
    """One sentence comparing the early drop of the Gaussian MI from r with the kNN MI's.

    The two relative drops (with their 95 % bootstrap intervals over units) are compared: r drops
    further (its interval lies above the kNN one), less (below), or as much (the intervals
    overlap); the sentence says what that means for "MI shows a dip that r hides".

    Parameters
    ----------
    knn, gauss : DipRecovery
        :func:`dip_and_recovery` of the kNN and of the Gaussian-from-r curves of one run (same
        units, same bootstrap seed).
    step_names : sequence of str
        Names of the steps (``geometry.step_sites``).

    Returns
    -------
    str
    """
    k, g = knn.rel_drop, gauss.rel_drop
    where = ("at the same step" if knn.low == gauss.low
             else f"at {step_names[gauss.low]} (the kNN MI at {step_names[knn.low]})")
    out = f"The Gaussian MI from r drops by {_pct(g)} {where}, the kNN MI by {_pct(k)}"
    if g.lo > k.hi:
        return out + (": r drops further than the MI, so r shows the dip too, deeper; the dip is not "
                      "something MI sees and r misses.")
    if g.hi < k.lo:
        return out + ": r drops less than the MI, so part of the dip is dependence that r does not see."
    return out + (": the intervals overlap, so r shows the same drop as the MI; the drop is not something "
                  "MI sees and r misses.")


def findings_notes(runs, found, profiles: dict, step_names, token_test: tuple | None = None) -> list[str]:
    """Chapter 4's "what we found", as sentences computed from its MI profiles.

    Parameters
    ----------
    runs : list of Activations
        The trained run first, then the random-init control (if any).
    found : list of Verdict
        One C8 verdict per run, in the order of ``runs`` (from :func:`verdicts`).
    profiles : dict
        ``{run.label: MIProfile}`` from :func:`mi_profile`.
    step_names : sequence of str
        Names of the steps (``geometry.step_sites``).
    token_test : tuple (mi_once, mi_random, n_once), optional
        The chapter's test on the first run at its dip step: mean kNN MI (nats) on the
        ``n_once`` samples whose last token no other sample has, and on as many random samples.

    Returns
    -------
    list of str
        One paragraph per run (the drop, where it is, what the state does across that step, r
        against MI, the climb), then what the control shares with the trained model, the
        attention and MLP steps, the token test, and the comparison with the paper. Every number
        and conclusion is computed here; no list is ever empty.
    """
    from .verdicts import number, run_label

    out = []
    dips = {}
    for v, run in zip(found, runs):
        p = profiles[run.label]
        d = dip_and_recovery(p.mi["knn"].T, seed=0)
        g = dip_and_recovery(p.mi["gaussian"].T, seed=0)
        dips[run.label] = d
        low = d.low
        after = d.curve[low + 1] if low + 1 < d.curve.size else float("nan")
        kind = "attention" if low % 2 == 0 else "MLP"
        if not np.isfinite(after):
            next_step = "at the last step"
        elif after > d.curve[low]:
            next_step = f"and is back up at {after:.2f} nats at the next step"
        else:
            next_step = f"and is lower still at the next step, {after:.2f} nats"
        a = streaming.read(run.acts, np.s_[:, low], np.float64)  # plain reads, not the memory map
        b = streaming.read(run.acts, np.s_[:, low + 1], np.float64)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            grow = float(np.median(nb / na))
            cos = float(np.median(np.einsum("nd,nd->n", a, b) / (na * nb)))
        high = np.maximum.accumulate(d.curve[: d.early])
        below = int(np.sum(d.curve[: d.early] <= 0.5 * high))
        spread = ("a collapse at one step" if below == 1 else
                  f"{below} of the first {d.early} steps lie at half the earlier high or below" if below else
                  f"no step of the first {d.early} falls to half the earlier high")
        out.append(
            f"{run_label(run)}: C8 {v.outcome}. The kNN MI falls by {d.rel_drop.estimate:.0%} (from its early "
            f"high to {d.curve[low]:.2f} nats at {step_names[low]}, an {kind} update) {next_step}: "
            f"{spread}. Across that step the median ‖h‖ grows "
            f"{number(grow)}-fold and the median cosine between the two states is {cos:.2f}. "
            f"{r_versus_mi(d, g, step_names)} After the first quarter of the steps the curve's Spearman ρ "
            f"with depth is {d.rho_after.estimate:+.2f}, and the last quarter lies {d.climb.estimate:.2f} nats "
            "above the minimum.")

    tr = runs[0]
    ctrl = next((r for r in runs[1:] if run_label(r).startswith("random-init control")), None)
    if ctrl is not None:
        dt, dc = dips[tr.label], dips[ctrl.label]
        parts = {"the sharp drop": (dt.drops, dc.drops), "the climb back": (dt.climbs, dc.climbs)}
        r = dc.rho_after
        said = [f"The random-init control: the kNN MI drops by {_pct(dc.rel_drop)} and its ρ with depth after "
                f"the first quarter is {r.estimate:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}]."]
        groups = (((True, True), "there in the control too → the architecture"),
                  ((True, False), "only in the trained model → training"),
                  ((False, True), "in the control but not in the trained model → training removes it"))
        for (in_trained, in_control), reading in groups:
            names = [k for k, (t, c) in parts.items() if (t, c) == (in_trained, in_control)]
            if names:  # never an empty list
                verb = "is" if len(names) == 1 else "are"
                said.append(f"{' and '.join(names).capitalize()} {verb} {reading}.")
        out.append(" ".join(said))

    share = {}
    for run in runs:
        knn = profiles[run.label].mi["knn"]
        steps = np.arange(knn.shape[0])
        att, mlp = knn[steps % 2 == 0].mean(0), knn[steps % 2 == 1].mean(0)
        share[run.label] = (float(np.mean(att > mlp)), float(att.mean()), float(mlp.mean()))
    at, am, ml = share[tr.label]
    kinds = (f"Attention steps against MLP steps: in the trained model the mean kNN MI is {am:.2f} nats over "
             f"attention steps and {ml:.2f} over MLP steps, higher over attention steps for {at:.0%} of the "
             "units")
    if ctrl is not None:
        ac, amc, mlc = share[ctrl.label]
        kinds += f"; in the control {amc:.2f} and {mlc:.2f}, for {ac:.0%} of the units"
        if (at > 0.5) != (ac > 0.5) and at != 0.5 and ac != 0.5:
            kinds += ". The control orders the two kinds of step the other way, so the trained ordering comes from training"
        elif (at > 0.5) == (ac > 0.5) and at != 0.5 and ac != 0.5:
            kinds += ". The control orders them the same way, so the ordering comes with the architecture"
    out.append(kinds + ".")

    if token_test is not None:
        once, rand, n_once = token_test
        p = profiles[tr.label]
        low = dips[tr.label].low
        k, c, g = (float(np.mean(p.mi[m][low])) for m in ("knn", "copula", "gaussian"))
        t = (f"At the trained model's dip step the kNN MI ({k:.2f} nats, mean over units) is "
             f"{'above' if k > max(c, g) else 'not above'} what the copula ({c:.2f}) and r ({g:.2f}) imply. "
             f"On the {n_once} samples whose last token no other sample has it is {once:.3f} nats, on as "
             f"many random samples {rand:.3f}")
        if once < 0.25 * rand:
            t += (": the MI left at the dip comes from samples that share their last token (a per-token value "
                  "that the state before the step predicts only by recognising the token), not from a "
                  "curved function of the unit's value.")
        else:
            t += ": shared tokens do not explain the MI left at the dip."
        out.append(t)

    outcome = found[0].outcome
    out.append("The paper: MI drops sharply over the first few layers, then slowly climbs back. The trained "
               f"model {dict(partly='partly agrees', disagrees='disagrees with the paper').get(outcome, outcome)}.")
    return out


def check_gaussian_mi(fn: Callable[[np.ndarray], np.ndarray]) -> bool:
    """Check a learner's ``fn(r) -> MI`` (nats, elementwise) against :func:`gaussian_mi`."""
    r = np.array([0.0, 0.5, -0.5, 0.9, 0.99])
    return report([
        run_case("r = 0 carries no information", fn, (np.array([0.0]),), np.array([0.0]), rtol=0),
        run_case("an array of correlations (sign does not matter)", fn, (r,), gaussian_mi(r), rtol=0),
    ])


def _codes(v: np.ndarray, bins: int) -> np.ndarray:
    """Equal-count bin of each sample, ``floor((rank − 1) · bins / n)`` (as :func:`binned_mi`)."""
    return np.clip(np.floor((_ranks(v[:, None])[:, 0] - 1) * bins / v.size), 0, bins - 1).astype(int)


def _binned_mi_mistakes(x: np.ndarray, y: np.ndarray, bins: int) -> list[tuple[str, np.ndarray]]:
    """What the usual mistakes in a plug-in MI give on one pair ``x, y`` of shape (n_samples,)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = x.size
    p = np.zeros((bins, bins))
    np.add.at(p, (_codes(x, bins), _codes(y, bins)), 1.0 / n)
    px, py = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float(np.sum(p[nz] * np.log(p[nz] / np.outer(px, py)[nz])))
    # marginals from equal-width bins of each variable, the joint from equal-count bins
    wx = np.histogram(x, bins)[0] / n
    wy = np.histogram(y, bins)[0] / n
    with np.errstate(divide="ignore", invalid="ignore"):
        other = np.where(nz, p * np.log(p / np.outer(wx, wy)), 0.0)
    # everything from equal-width bins (np.histogram2d): another estimator than the one asked for
    q = np.histogram2d(x, y, bins)[0] / n
    qn = q > 0
    width = float(np.sum(q[qn] * np.log(q[qn] / np.outer(q.sum(1), q.sum(0))[qn])))
    sorted_pairs = float(binned_mi(np.sort(x), np.sort(y), bins=bins, correction=False))
    return [
        ("the joint entropy −Σ p log p (no product of the marginals)",
         np.asarray(-np.sum(p[nz] * np.log(p[nz])))),
        ("Σ p log p (no product of the marginals)",
         np.asarray(np.sum(p[nz] * np.log(p[nz])))),
        ("marginals from other bins than the joint (take the joint table's row and column sums)",
         np.asarray(np.sum(other))),
        ("equal-width bins (np.histogram2d), not equal-count bins", np.asarray(width)),
        ("bits (log base 2); the check wants nats (np.log)", np.asarray(mi / np.log(2))),
        ("x and y sorted separately: the pairing of each sample's two values is lost",
         np.asarray(sorted_pairs)),
        ("the Miller–Madow correction; the check wants the plain plug-in value",
         np.asarray(binned_mi(x, y, bins=bins))),
    ]


def check_binned_mi(fn: Callable[[np.ndarray, np.ndarray, int], float], x: np.ndarray | None = None,
                    y: np.ndarray | None = None, bins: int = 10) -> bool:
    """Check a learner's binned (histogram, plug-in) MI of one unit before and after a step.

    Parameters
    ----------
    fn : callable
        ``fn(x, y, bins) -> float``: ``x, y`` of shape ``(n_samples,)`` (one unit at two successive
        sites, one value per sample); each is cut into ``bins`` equal-count bins by its rank
        (bin ``floor((rank − 1) · bins / n)``, rank 1 … n, ties sharing their average rank); the
        result is ``Σ p_ij log(p_ij / (p_i p_j))`` over the ``bins × bins`` table of shares, in
        **nats** (natural log), without bias correction: :func:`binned_mi` with
        ``correction=False``.
    x, y : ndarrays of shape (n_samples,), optional
        One unit of a real capture at two successive sites; checked too when given.
    bins : int
        Bins per variable for the real-data case.

    Returns
    -------
    bool
        True when every case passes. One line per case is printed (✓ / ✗ and, for a known
        mistake, its name). The cases reject the joint entropy (a joint histogram without the
        product of the marginals), marginals from another binning than the joint, bits instead
        of nats, a lost pairing of x and y (shuffled or sorted separately) and the Miller–Madow
        correction.
    """
    rng = np.random.default_rng(3)
    n = 1000
    g = rng.standard_normal(n)
    lognormal = np.exp(1.5 * rng.standard_normal(n))
    cases = [
        ("y = x + noise, Gaussian, 10 bins", (g, g + 0.5 * rng.standard_normal(n), 10)),
        ("x and y independent, 10 bins (all the MI is the plug-in bias)",
         (rng.standard_normal(n), rng.standard_normal(n), 10)),
        ("heavy-tailed x (log-normal), y = log x + noise, 8 bins",
         (lognormal, np.log(lognormal) + 0.5 * rng.standard_normal(n), 8)),
        ("y = x² (r ≈ 0, yet y depends on x), 5 bins", (g, g**2 + 0.1 * rng.standard_normal(n), 5)),
    ]
    if (x is None) != (y is None):
        raise ValueError("give both x and y (one unit at two successive sites), or neither")
    if x is not None:
        x = check_array(x, "x").astype(np.float64)
        y = check_array(y, "y").astype(np.float64)
        if x.ndim != 1 or x.shape != y.shape or x.size < 2 * bins:
            raise ValueError(f"x and y must have the same shape (n_samples,) with n_samples >= 2·bins, got "
                             f"{x.shape} and {y.shape}")
        cases.append((f"one real unit before and after a step, {x.size} samples, {bins} bins", (x, y, bins)))
    return report([run_case(d, fn, a, binned_mi(a[0], a[1], bins=a[2], correction=False), rtol=1e-6,
                            atol=1e-9, mistakes=_binned_mi_mistakes(*a)) for d, a in cases])
