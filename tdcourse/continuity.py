"""Units stay themselves: per-unit correlation between adjacent sites (claims C1, C2, C3).

For each unit ``u`` and each pair of adjacent sites ``(s, s + 1)`` on the paper's depth axis
(``resid_pre.0, resid_mid.0, resid_pre.1, …``), the Pearson correlation **across the N
samples** (last token):

``r[s, u] = cov(h_s^u, h_{s+1}^u) / (σ(h_s^u) σ(h_{s+1}^u))``.

With ``2L`` sites there are ``2L − 1`` adjacent pairs. Pair ``2l`` is *within* layer ``l``
(pre-Attn ``l`` → pre-MLP ``l``: the attention block's write); pair ``2l + 1`` is *across*
layers (pre-MLP ``l`` → pre-Attn ``l + 1``: the MLP block's write).

What this module adds to numpy / scipy:

* :func:`adjacent_corr`: ``r`` for all pairs and units at once, optionally in a rotated basis;
* :func:`permutation_null`: the same with the samples of the later site shuffled;
* :func:`bootstrap_corr`: ``r`` on bootstrap resamples of the samples, computed from weighted
  moments (one matrix product per block of samples and chunk of sites, no Python loop over
  resamples or units);
* :func:`stream_corr`, :func:`write_ratio`: basis-free counterparts that explain continuity by
  the residual connection (each block adds a write that is small next to the stream);
* :func:`analyse` and :func:`verdicts` for the chapter; ``check_…`` helpers for its exercises.

Every statistic here is a sum over samples, so each is **streamed**: the array is read in
chunks of sites and, inside a chunk, blocks of samples (a cached capture through
:func:`tdcourse.streaming.read`, its memory map's pages given back after each block), and the
sums are accumulated in float64 after centring every unit by its full-sample mean (one pass
before). Working memory is bounded (``_BLOCK`` + ``_ACC``, about 100 MB) whatever N; what grows
is the result (the bootstrap's ``n_boot × pairs × units`` in :func:`analyse`, independent of
N). Results equal the one-block computation to float64 rounding.

Random rotations come from :func:`scipy.stats.ortho_group`, Spearman trends from
:func:`tdcourse.stats.spearman_rows`, the paired test from :func:`scipy.stats.wilcoxon`.

Inputs follow the course's rule (:mod:`tdcourse.checks`): float32 / float64, no NaN or inf, no
float16. One exception by design: in an ``r`` array (what :func:`adjacent_corr` returns) a NaN
means "undefined" (a unit that is constant across samples has no correlation); the summaries of
``r`` carry it to that unit's result (NaN there), never drop it silently; ``inf`` is refused.

The smallest run that carries a verdict: :data:`MIN_SAMPLES` = 20 samples (the intervals are
bootstrapped over samples, and a correlation over fewer has a standard error above 0.2) and
:data:`MIN_LAYERS` = 2 layers (C3 compares within- and across-layer pairs: one layer has no
across-layer pair; C2's trend needs at least 3 pairs). :func:`analyse` and :func:`verdicts`
refuse smaller runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .capture import check_acts
from . import streaming
from .checks import check_array, check_run_size
from . import stats
from .exercises import report, run_case
from .memo import cached
from .blas import matmul
from .verdicts import Verdict, judge

__all__ = [
    "MIN_SAMPLES",
    "MIN_LAYERS",
    "HIGH_R",
    "pair_names",
    "adjacent_corr",
    "permutation_null",
    "bootstrap_corr",
    "random_rotation",
    "stream_corr",
    "write_ratio",
    "split_within_across",
    "within_minus_across",
    "depth_trend",
    "METHODS",
    "TRENDS",
    "AGGREGATES",
    "sample_ranks",
    "Continuity",
    "analyse",
    "verdicts",
    "check_adjacent_corr",
    "check_uncorrelated_write_r",
]

#: The threshold this course calls "highly correlated" (the paper gives none; see C15).
HIGH_R = 0.8

#: Correlation coefficients of :func:`analyse`: Pearson's (the chapter's) and Spearman's.
METHODS = ("pearson", "spearman")

# Working memory of a streamed pass over the samples (bytes, float64): one block of samples ×
# sites × units (read, centred, rotated; a few temporaries of its size), and the accumulators of
# one chunk of sites (the weighted moments of every resample). Neither grows with N.
_BLOCK = 32 << 20
_ACC = 48 << 20
#: The fewest samples per block when a chunk of sites is chosen (matrix products stay efficient).
_MIN_BLOCK_SAMPLES = 64
# The most bytes of bootstrap correlations analyse holds at once (resamples × pairs × units).
_BOOT_BYTES = 256 << 20


# --------------------------------------------------------------------------- validation


#: The fewest samples (N) and layers a verdict on C1-C3 is computed from (see the module's docstring).
MIN_SAMPLES = 20
MIN_LAYERS = 2
_ANALYSIS = "Chapter 2's continuity analysis (C1-C3)"


def _as_acts(acts: np.ndarray, min_sites: int = 2) -> np.ndarray:
    return check_acts(acts, min_samples=3, min_sites=min_sites, why="for a correlation")


def _as_basis(basis: np.ndarray | None, d_model: int) -> np.ndarray | None:
    if basis is None:
        return None
    q = check_array(basis, "basis").astype(np.float64, copy=False)
    if q.ndim != 2 or q.shape[0] != d_model:
        raise ValueError(f"basis must have shape (d_model, n_dirs) = ({d_model}, n_dirs), got {q.shape}")
    return q


def _as_r(r: np.ndarray, name: str = "r") -> np.ndarray:
    arr = check_array(r, name, finite=False).astype(np.float64, copy=False)
    if arr.ndim < 2:
        raise ValueError(f"{name} must have shape (..., n_pairs, d_model), got {arr.shape}")
    if np.isinf(arr).any():  # NaN is an undefined r (a constant unit) and is carried; inf is an error
        raise ValueError(f"{name} holds inf: a correlation lies in [-1, 1] (NaN where undefined)")
    return arr


def pair_names(sites: Sequence[str]) -> list[str]:
    """Names of the adjacent pairs, ``"resid_pre.0→resid_mid.0"``, … (length ``n_sites − 1``)."""
    sites = list(sites)
    if len(sites) < 2:
        raise ValueError(f"need at least 2 sites, got {len(sites)}")
    return [f"{a}→{b}" for a, b in zip(sites[:-1], sites[1:])]


# --------------------------------------------------------------------------- correlations


class _Source:
    """Sites of ``acts`` along a basis, as centred float64 blocks of samples (no checks).

    ``acts`` is read through :func:`tdcourse.streaming.read` (a cached capture's memory-map
    pages are given back after every block). The values are centred by ``means`` (the full
    sample's mean of every unit, :func:`tdcourse.streaming.site_means`) before the rotation
    ``q``. With ``ranks=True`` each (site, direction) column is replaced by its samples' ranks
    (:func:`sample_ranks`), computed for all samples of the chunk of sites being read (a rank
    needs the whole column), then centred by their mean.
    """

    def __init__(self, acts, q: np.ndarray | None = None, means: np.ndarray | None = None, ranks: bool = False):
        self.acts, self.q, self.ranks = acts, q, ranks
        self.n, self.n_sites, self.d_in = (int(x) for x in acts.shape)
        self.d_out = self.d_in if q is None else int(q.shape[1])
        if ranks:
            self._lo, self._ranks, self._mean = 0, np.empty((self.n, 0, self.d_out), np.float32), np.empty((0, self.d_out))
        else:
            self.means = streaming.site_means(acts) if means is None else means

    def prepare(self, a0: int, b: int) -> None:
        """Sites ``a0 … b − 1`` are read next (ranks: compute them, reusing those already held)."""
        if not self.ranks:
            return
        from scipy.stats import rankdata

        out = np.empty((self.n, b - a0, self.d_out), dtype=np.float32)
        for s in range(a0, b):
            if self._lo <= s < self._lo + self._ranks.shape[1]:  # the site carried from the chunk before
                out[:, s - a0] = self._ranks[:, s - self._lo]
                continue
            x = streaming.read(self.acts, np.s_[:, s])
            out[:, s - a0] = rankdata(x if self.q is None else x.astype(np.float64) @ self.q, axis=0)
        self._lo, self._ranks = a0, out
        self._mean = out.mean(0, dtype=np.float64)

    def _rotate(self, x: np.ndarray) -> np.ndarray:
        if self.q is None or self.ranks:
            return x
        # one 2-D product (BLAS); a batched 3-D matmul on a slice is several times slower
        return matmul(x.reshape(-1, x.shape[-1]), self.q).reshape(*x.shape[:-1], self.q.shape[1])

    def block(self, i0: int, i1: int, a0: int, b: int) -> np.ndarray:
        """Samples ``i0 … i1 − 1`` at sites ``a0 … b − 1``: shape ``(i1 − i0, b − a0, d_out)``."""
        if self.ranks:
            x = self._ranks[i0:i1, a0 - self._lo : b - self._lo].astype(np.float64)
            x -= self._mean[a0 - self._lo : b - self._lo]
            return x
        x = streaming.read(self.acts, np.s_[i0:i1, a0:b], np.float64)
        x -= self.means[a0:b]
        return self._rotate(x)

    def gather(self, rows: np.ndarray, sites: np.ndarray) -> np.ndarray:
        """Sample ``rows[i, j]`` at site ``sites[j]``: shape ``(len(rows), len(sites), d_out)``."""
        if self.ranks:
            x = self._ranks[rows, (sites - self._lo)[None, :]].astype(np.float64)
            x -= self._mean[sites - self._lo]
            return x
        x = streaming.read(self.acts, (rows, sites[None, :]), np.float64)
        x -= self.means[sites]
        return self._rotate(x)


def _plan(src: _Source, n_w: int) -> tuple[int, int]:
    """Sites per chunk and samples per block of a streamed pass with ``n_w`` weight rows."""
    per_site = 8 * src.d_out * (4 * max(n_w, 1) + 3)  # M, S, C and their products; unweighted sums
    k = max(1, min(src.n_sites, _ACC // per_site))
    k = max(1, min(k, _BLOCK // (8 * _MIN_BLOCK_SAMPLES * max(src.d_in, src.d_out)) - 1))
    if src.ranks:  # all samples of the chunk's ranks are held
        k = max(1, min(k, 2 * _BLOCK // (4 * src.n * src.d_out) - 1))
    step = max(1, _BLOCK // (8 * (k + 1) * max(src.d_in, src.d_out)))
    return k, step


def _pairs_pass(src: _Source, w: np.ndarray | None = None, null_rows: np.ndarray | None = None,
                trace: bool = False) -> dict[str, np.ndarray]:
    """One streamed pass over every adjacent pair of sites of ``src``, in chunks of sites and,
    inside a chunk, blocks of samples (working memory ``_BLOCK`` + ``_ACC``, whatever N).

    Each chunk reads its sites and the site before it (whose moments it carries from the chunk
    before), so every pair is made once. Sums over samples are accumulated block by block:

    * ``w`` (n_w, n) weights (rows summing to 1): weighted mean, variance and covariance of
      every resample at once -> ``"r_w"`` (n_w, n_pairs, d);
    * always: the plain sums of squares and cross products of the centred values ->
      ``"r"`` (n_pairs, d), Pearson r of the full sample;
    * ``null_rows`` (n, n_sites): the later site of each pair read at the permuted samples
      ``null_rows[:, site]`` -> ``"null"`` (n_pairs, d);
    * ``trace``: the same sums over units -> ``"var"`` (n_sites,), ``"cov"`` and ``"wvar"``
      (n_pairs,), divided by n − 1 (:func:`stream_corr`, :func:`write_ratio`).
    """
    n, n_sites, d = src.n, src.n_sites, src.d_out
    n_w = 0 if w is None else len(w)
    k, step = _plan(src, n_w)
    out = {"r": np.empty((n_sites - 1, d))}
    if w is not None:
        out["r_w"] = np.empty((n_w, n_sites - 1, d))
    if null_rows is not None:
        out["null"] = np.empty((n_sites - 1, d))
    if trace:
        out.update(var=np.empty(n_sites), cov=np.empty(n_sites - 1), wvar=np.empty(n_sites - 1))
    carry = None  # (weighted mean, weighted variance, sum of squares) of the site before the chunk
    for a in range(0, n_sites, k):
        b = min(a + k, n_sites)
        a0 = max(a - 1, 0)
        own, pairs = slice(a - a0, b - a0), slice(a0, b - 1)
        n_pairs = b - 1 - a0
        src.prepare(a0, b)
        saa, sab = np.zeros((b - a, d)), np.zeros((n_pairs, d))
        nab = np.zeros((n_pairs, d)) if null_rows is not None else None
        tw = np.zeros(n_pairs) if trace else None
        if w is not None:
            m, s2, c = np.zeros((n_w, b - a, d)), np.zeros((n_w, b - a, d)), np.zeros((n_w, n_pairs, d))
        for i0, i1 in streaming.sample_blocks(n, 1, step):
            x = src.block(i0, i1, a0, b)
            xo = x[:, own]
            saa += np.einsum("nkd,nkd->kd", xo, xo)
            if n_pairs:
                sab += np.einsum("nkd,nkd->kd", x[:, :-1], x[:, 1:])
            if w is not None:
                wb, bn = w[:, i0:i1], i1 - i0
                m += matmul(wb, xo.reshape(bn, -1)).reshape(m.shape)
                s2 += matmul(wb, (xo * xo).reshape(bn, -1)).reshape(s2.shape)
                if n_pairs:
                    c += matmul(wb, (x[:, :-1] * x[:, 1:]).reshape(bn, -1)).reshape(c.shape)
            if trace and n_pairs:
                dx = x[:, 1:] - x[:, :-1]
                tw += np.einsum("nkd,nkd->k", dx, dx)
            if nab is not None and n_pairs:
                later = np.arange(a0 + 1, b)
                y = src.gather(null_rows[i0:i1, a0 + 1 : b], later)
                nab += np.einsum("nkd,nkd->kd", x[:, :-1], y)
        # the sums of squares of every site read, the carried one first
        sq = saa if a0 == a else np.concatenate([carry[2][None], saa])
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = np.sqrt(sq[:-1] * sq[1:])
            out["r"][pairs] = sab / norm
            if nab is not None:
                out["null"][pairs] = nab / norm
            if w is not None:
                v = s2 - m * m
                mm = m if a0 == a else np.concatenate([carry[0][:, None], m], axis=1)
                vv = v if a0 == a else np.concatenate([carry[1][:, None], v], axis=1)
                out["r_w"][:, pairs] = (c - mm[:, :-1] * mm[:, 1:]) / np.sqrt(vv[:, :-1] * vv[:, 1:])
        if trace:
            out["var"][a:b] = saa.sum(1) / (n - 1)
            out["cov"][pairs] = sab.sum(1) / (n - 1)
            out["wvar"][pairs] = tw / (n - 1)
        carry = (m[:, -1].copy() if w is not None else None, v[:, -1].copy() if w is not None else None,
                 saa[-1].copy())
    return out


def adjacent_corr(acts: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
    """Per-unit Pearson r between every pair of adjacent sites, across samples.

    Streamed: the samples are read in blocks of sites and samples (a cached capture is never
    loaded whole; working memory does not grow with N), the sums of products accumulated in
    float64 after centring every unit by its full-sample mean (one pass before).

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
        Sites in depth order (``resid_pre.0, resid_mid.0, resid_pre.1, …``).
    basis : ndarray of shape (d_model, n_dirs), optional
        Read the stream along other directions: ``acts @ basis`` (the columns of ``basis``,
        e.g. from :func:`random_rotation`, are the new "units"), the same at every site.
        ``None``: the model's own units. The unit axis of the result then has length n_dirs.

    Returns
    -------
    ndarray of shape (n_sites - 1, d_model)
        ``r[s, u]`` correlates unit ``u`` at site ``s`` with unit ``u`` at site ``s + 1``.
        NaN where a unit is constant over samples at one of the two sites.
    """
    acts = _as_acts(acts)
    q = _as_basis(basis, acts.shape[2])
    return _pairs_pass(_Source(acts, q))["r"]


def _null_rows(rng: np.random.Generator, n: int, n_sites: int) -> np.ndarray:
    """One draw of the permutation null: an independent permutation of the samples per site."""
    return rng.permuted(np.broadcast_to(np.arange(n)[:, None], (n, n_sites)), axis=0)


def permutation_null(acts: np.ndarray, n_perm: int = 1, seed: int = 0, basis: np.ndarray | None = None) -> np.ndarray:
    """:func:`adjacent_corr` with the samples at the later site of each pair shuffled.

    Shuffling breaks the pairing of a sample with itself across depth and keeps each site's
    distribution, so ``r`` then scatters around 0 with a spread of about ``1 / sqrt(n_samples)``.
    Each site gets its own permutation in each draw. Streamed as :func:`adjacent_corr` (the
    later site's samples are gathered block by block).

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    n_perm : int
        Number of independent shuffles (each gives ``(n_sites − 1) × d_model`` null values).
    seed : int
    basis : ndarray of shape (d_model, n_dirs), optional
        As in :func:`adjacent_corr` (the last axis of the result then has length n_dirs).

    Returns
    -------
    ndarray of shape (n_perm, n_sites - 1, d_model)
    """
    acts = _as_acts(acts)
    if n_perm < 1:
        raise ValueError(f"n_perm must be at least 1, got {n_perm}")
    n, n_sites, d = acts.shape
    q = _as_basis(basis, d)
    rng = np.random.default_rng(seed)
    src = _Source(acts, q)
    return np.stack([_pairs_pass(src, null_rows=_null_rows(rng, n, n_sites))["null"] for _ in range(n_perm)])


def bootstrap_corr(acts: np.ndarray, n_boot: int = 200, seed: int = 0, basis: np.ndarray | None = None,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """:func:`adjacent_corr` on ``n_boot`` bootstrap resamples of the samples.

    Computed from weighted moments (:func:`tdcourse.stats.bootstrap_weights`: each resample's
    counts of every sample, divided by N), accumulated over blocks of samples for all resamples
    at once, one chunk of sites at a time: the same resamples as drawing indices, in working
    memory that does not grow with N. Resampling the samples (not the units) keeps the
    dependence between units, so intervals on any statistic of ``r`` over units are honest.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    n_boot : int
    seed : int
    basis : ndarray of shape (d_model, n_dirs), optional
        As in :func:`adjacent_corr` (the last axis of the result then has length n_dirs).
    weights : ndarray of shape (n_boot, n_samples), optional
        Reuse resamples (e.g. the same ones for two bases, for a paired comparison);
        overrides ``n_boot`` and ``seed``.

    Returns
    -------
    ndarray of shape (n_boot, n_sites - 1, d_model)
    """
    acts = _as_acts(acts)
    n, n_sites, d = acts.shape
    q = _as_basis(basis, d)
    w = stats.bootstrap_weights(n, n_boot, seed) if weights is None else check_array(weights, "weights").astype(np.float64)
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"weights must have shape (n_boot, n_samples={n}), got {w.shape}")
    return _pairs_pass(_Source(acts, q), w=w)["r_w"]


def random_rotation(d_model: int, n_dirs: int | None = None, seed: int = 0) -> np.ndarray:
    """Haar-random orthonormal directions of the residual stream, seeded.

    The Q factor of a Gaussian matrix with the signs of R's diagonal moved into Q, which makes
    it uniformly (Haar) distributed (Mezzadri 2007); with ``n_dirs = d_model`` it is the same
    distribution as :func:`scipy.stats.ortho_group`, in one LAPACK call.

    Parameters
    ----------
    d_model : int
    n_dirs : int or None
        Number of directions (columns); ``None``: ``d_model``, a full random rotation. Fewer
        directions sample the same distribution of per-direction statistics at a fraction of
        the cost (useful for d_model = 4096).
    seed : int

    Returns
    -------
    ndarray of shape (d_model, n_dirs)
        Orthonormal columns: ``acts @ q`` reads the stream along them.
    """
    n_dirs = d_model if n_dirs is None else int(n_dirs)
    if d_model < 2:
        raise ValueError(f"d_model must be at least 2, got {d_model}")
    if not 1 <= n_dirs <= d_model:
        raise ValueError(f"n_dirs must be between 1 and d_model = {d_model}, got {n_dirs}")
    g = np.random.default_rng(seed).standard_normal((d_model, n_dirs))
    q, r = np.linalg.qr(g)
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


# --------------------------------------------------------------------------- basis-free view


def _trace_moments(acts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summed over units: variance at each site, covariance and write variance of each pair
    (divided by n − 1), in one streamed pass (see :func:`_pairs_pass`)."""
    acts = _as_acts(acts)
    out = _pairs_pass(_Source(acts), trace=True)
    return out["var"], out["cov"], out["wvar"]


def stream_corr(acts: np.ndarray) -> np.ndarray:
    """Correlation of the whole stream between adjacent sites, in no particular basis.

    ``ρ_s = tr Cov(h_s, h_{s+1}) / sqrt(tr Cov(h_s) · tr Cov(h_{s+1}))``: the Pearson r of the
    two centred ``(n_samples × d_model)`` matrices, flattened. It is the same in every
    orthonormal basis. A direction drawn at random sees about this value when the variance
    (of the stream and of the write) is spread over many directions; where a few directions
    hold most of it (massive activations), random directions scatter around it.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)

    Returns
    -------
    ndarray of shape (n_sites - 1,)
    """
    var, cov, _ = _trace_moments(acts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / np.sqrt(var[:-1] * var[1:])


def write_ratio(acts: np.ndarray) -> np.ndarray:
    """Size of each block's write relative to the stream it is added to, basis-free.

    ``g_s = sqrt(tr Cov(h_{s+1} − h_s) / tr Cov(h_s))``. With a write uncorrelated with the
    stream, the correlation across the pair would be ``1 / sqrt(1 + g_s²)``: close to 1
    whenever the write is small next to the stream (the residual connection).

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)

    Returns
    -------
    ndarray of shape (n_sites - 1,)
    """
    var, _, wvar = _trace_moments(acts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(wvar / var[:-1])


# --------------------------------------------------------------------------- summaries of r


def split_within_across(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the pair axis into within-layer and across-layer pairs.

    Parameters
    ----------
    r : ndarray of shape (..., 2L - 1, d_model)
        From :func:`adjacent_corr` (or its bootstrap / null versions) on ``2L`` sites.

    Returns
    -------
    within : ndarray of shape (..., L, d_model)
        Pairs pre-Attn ``l`` → pre-MLP ``l`` (the attention write of layer ``l``).
    across : ndarray of shape (..., L - 1, d_model)
        Pairs pre-MLP ``l`` → pre-Attn ``l + 1`` (the MLP write of layer ``l``).
    """
    r = _as_r(r)
    if r.shape[-2] % 2 != 1:
        raise ValueError(f"the pair axis (second to last) must have odd length 2L - 1 for 2L sites, "
                         f"got {r.shape[-2]}")
    return r[..., 0::2, :], r[..., 1::2, :]


def within_minus_across(r: np.ndarray) -> np.ndarray:
    """Per unit, the median over layers of ``r_within(l) − r_across(l)`` (layers ``0 … L − 2``).

    Positive: the unit changes less across the attention block than across the MLP block of
    the same layer. The median over layers keeps one odd layer from deciding.

    Parameters
    ----------
    r : ndarray of shape (..., 2L - 1, d_model), L ≥ 2

    Returns
    -------
    ndarray of shape (..., d_model)
    """
    within, across = split_within_across(r)
    if across.shape[-2] < 1:
        raise ValueError("need at least 2 layers (3 adjacent pairs) to pair within- and across-layer r")
    return np.median(within[..., :-1, :] - across, axis=-2)


def depth_trend(r: np.ndarray) -> np.ndarray:
    """Spearman correlation of each unit's ``r`` with depth (pair index).

    Parameters
    ----------
    r : ndarray of shape (..., n_pairs, d_model)

    Returns
    -------
    ndarray of shape (..., d_model)
        +1: the unit's adjacent correlation rises monotonically with depth; NaN for a unit
        whose r is constant or holds NaN.
    """
    r = _as_r(r)
    if r.shape[-2] < 3:
        raise ValueError(f"need at least 3 pairs for a trend, got {r.shape[-2]}")
    lead = r.shape[:-2]
    rows = np.moveaxis(r, -2, -1).reshape(-1, r.shape[-2])
    ok = np.isfinite(rows).all(1)  # a unit with an undefined r somewhere has no trend: NaN
    rho = np.full(len(rows), np.nan)
    if ok.any():
        rho[ok] = stats.spearman_rows(rows[ok])
    return rho.reshape(*lead, r.shape[-1])


def sample_ranks(acts: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
    """Each (site, unit) column replaced by its samples' ranks: Pearson's r of ranks is
    Spearman's ρ.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    basis : ndarray of shape (d_model, n_dirs), optional
        Rank the coordinates along these orthonormal directions instead of the units.

    Returns
    -------
    ndarray of shape (n_samples, n_sites, d_model or n_dirs), float32
        Ranks 1 … n_samples along axis 0 (ties get their average rank,
        :func:`scipy.stats.rankdata`). Exact in float32 up to 2**24 samples.
    """
    from scipy.stats import rankdata

    acts = _as_acts(acts)
    q = _as_basis(basis, acts.shape[2])
    out = np.empty(acts.shape[:2] + ((acts.shape[2],) if q is None else (q.shape[1],)), dtype=np.float32)
    for s in range(acts.shape[1]):  # one site at a time: bounded working memory (the result is whole)
        x = streaming.read(acts, np.s_[:, s])
        out[:, s] = rankdata(x if q is None else x.astype(np.float64) @ q, axis=0)
    return out


# --------------------------------------------------------------------------- the chapter's analysis


@dataclass(frozen=True)
class Continuity:
    """Everything the chapter reports for one run.

    Attributes
    ----------
    r : ndarray of shape (n_pairs, d_model)
        :func:`adjacent_corr` in the unit basis (``n_pairs = n_sites − 1``).
    null : ndarray of shape (n_perm, n_pairs, d_model)
        :func:`permutation_null`.
    r_rot : ndarray of shape (n_pairs, n_dirs)
        :func:`adjacent_corr` along random orthonormal directions (:func:`random_rotation`,
        the same at every site).
    stream : ndarray of shape (n_pairs,)
        :func:`stream_corr`.
    write : ndarray of shape (n_pairs,)
        :func:`write_ratio` (from the same pass over the array as ``stream``).
    trend : ndarray of shape (d_model,)
        :func:`depth_trend` of ``r``.
    diff : ndarray of shape (d_model,)
        :func:`within_minus_across` of ``r``.
    median_r, median_r_rot : stats.Interval
        Median of ``r`` over all units and pairs, with a bootstrap (over samples) interval;
        the same in the rotated basis (same resamples).
    frac_rising : stats.Interval
        Share of units whose trend is positive, with its bootstrap interval.
    median_diff : stats.Interval
        Median over units of ``diff``, with its bootstrap interval.
    frac_within_higher : float
        Share of units with ``diff > 0``.
    wilcoxon_p : float
        Two-sided Wilcoxon signed-rank p-value of ``diff`` over units (treats units as
        independent, so it is optimistic; the bootstrap interval is the honest one).
    null_q999 : float
        99.9th percentile of the permutation null.
    frac_above_null : float
        Share of (pair, unit) values of ``r`` above ``null_q999``.
    n_boot : int
    frac_rising_change : stats.Interval or None
        Share of units whose mean r over the last third of the pairs exceeds that over the
        first third (a second reading of "rises with depth"), with its bootstrap interval.
    mean_diff : stats.Interval or None
        Mean (instead of median) over units of ``diff``, with its bootstrap interval.
    method : {"pearson", "spearman"}
        The correlation coefficient every ``r`` is (:data:`METHODS`).
    """

    r: np.ndarray
    null: np.ndarray
    r_rot: np.ndarray
    stream: np.ndarray
    write: np.ndarray
    trend: np.ndarray
    diff: np.ndarray
    median_r: stats.Interval
    median_r_rot: stats.Interval
    frac_rising: stats.Interval
    median_diff: stats.Interval
    frac_within_higher: float
    wilcoxon_p: float
    null_q999: float
    frac_above_null: float
    n_boot: int
    frac_rising_change: stats.Interval | None = None
    mean_diff: stats.Interval | None = None
    method: str = "pearson"


def _interval(estimate: float, boots: np.ndarray, level: float = 0.95) -> stats.Interval:
    a = (1 - level) / 2
    boots = boots[np.isfinite(boots)]
    return stats.Interval(float(estimate), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)), level)


def _late_minus_early(r: np.ndarray) -> np.ndarray:
    """Mean over the last third of the pairs minus the first third, per unit: (..., n_pairs, d) -> (..., d)."""
    t = max(1, r.shape[-2] // 3)
    return np.nanmean(r[..., -t:, :], -2) - np.nanmean(r[..., :t, :], -2)


@cached
def analyse(acts: np.ndarray, n_boot: int = 100, n_perm: int = 1, n_dirs: int = 576, seed: int = 0,
            method: str = "pearson") -> Continuity:
    """Compute every number of the chapter for one activation array.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model), n_sites = 2L
    n_boot : int
        Bootstrap resamples of the samples (shared by the unit and rotated bases).
    n_perm : int
        Shuffles for the permutation null.
    n_dirs : int
        Random orthonormal directions for the rotated basis, at most d_model: 576, all of
        SmolLM2-135M's units (a full rotation), and 576 of Llama 3.1 8B's 4096 (the median r
        over 576 directions × 63 pairs is as sharp, and the rotation costs a seventh of a full
        one).
    seed : int
        Seeds the resamples, the shuffles and the rotation.
    method : {"pearson", "spearman"}, default "pearson"
        ``"spearman"``: every correlation (unit basis, random basis, null) is Spearman's ρ, i.e.
        Pearson's r of the samples' ranks (:func:`sample_ranks`, ranked once on the full
        sample; a bootstrap resample reuses those ranks, the usual approximation). ``stream``
        and ``write`` stay on the activations. Costs one ranking pass more than Pearson.

    Returns
    -------
    Continuity

    Notes
    -----
    Memory: every statistic is streamed (see the module's docstring): a pass of sample blocks
    for the means, one pass over the unit basis (r, its resamples, the first null draw and the
    basis-free trace moments at once) and one over the rotated basis. The largest arrays are
    the resamples' r, ``(n_boot + 1) × (n_sites − 1) × d_model`` float64 (208 MB for Llama 3.1
    8B's shape at ``n_boot = 100``, 1.05 GB at 70B's), which do not grow with N: they are made
    and summarised in groups of at most 256 MB (one more pass over the data per group), a few
    resamples at a time. With ``method="spearman"`` a chunk of sites holds the ranks of all N
    samples (a rank needs the whole column): at least two sites, ``2 × N × d_model`` float32.
    """
    from scipy.stats import wilcoxon

    acts = check_acts(acts)  # dtype and NaN first, then the size
    check_run_size(acts, MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)
    if acts.shape[1] % 2:
        raise ValueError(f"acts must hold 2 sites per layer (an even n_sites), got {acts.shape[1]}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if n_perm < 1:
        raise ValueError(f"n_perm must be at least 1, got {n_perm}")
    n, n_sites, d = acts.shape
    q = random_rotation(d, min(int(n_dirs), d), seed=seed)
    w = stats.bootstrap_weights(n, n_boot, seed)
    # row 0: uniform weights, i.e. the full sample; one pass per basis gives r and its resamples
    w_all = np.vstack([np.full((1, n), 1.0 / n), w])
    rng = np.random.default_rng(seed + 1)  # the shuffles of permutation_null(acts, n_perm, seed + 1)
    rows = [_null_rows(rng, n, n_sites) for _ in range(n_perm)]
    # Streamed passes (working memory independent of N): the unit basis gives r, its resamples,
    # the first null draw and (Pearson) the basis-free trace moments; the rotated basis its own.
    # The resamples' r ((n_boot + 1) × pairs × units, float64) are made and summarised in groups
    # of at most _BOOT_BYTES (one group up to Llama 3.1 8B's shape; five at 70B's): each group
    # is one more pass over the data, and the same numbers as one group.
    pearson = method == "pearson"
    means = streaming.site_means(acts) if pearson else None
    parts: dict[str, list] = {"median": [], "rising": [], "diff": [], "mean_diff": [], "change": [], "median_rot": []}
    per = max(1, _BLOCK // max(1, 8 * (n_sites - 1) * d))  # resamples per summary step
    for basis in ("unit", "rot"):
        src = _Source(acts, None if basis == "unit" else q, means=means, ranks=not pearson)
        group = max(1, _BOOT_BYTES // max(1, 8 * (n_sites - 1) * src.d_out))
        for g0 in range(0, len(w_all), group):
            first = g0 == 0
            out = _pairs_pass(src, w=w_all[g0 : g0 + group], null_rows=rows[0] if first and basis == "unit" else None,
                              trace=first and basis == "unit" and pearson)
            boot = out.pop("r_w")
            if first:  # row 0: the full sample (a copy: a view would keep the group alive)
                if basis == "unit":
                    r, unit = boot[0].copy(), out
                else:
                    r_rot = boot[0].copy()
                boot = boot[1:]
            for i in range(0, len(boot), per):
                b = boot[i : i + per]
                flat = b.reshape(len(b), -1)
                if basis == "rot":
                    parts["median_rot"].append(np.nanmedian(flat, axis=1))
                    continue
                diff_b = within_minus_across(b)
                parts["median"].append(np.nanmedian(flat, axis=1))
                parts["rising"].append(np.mean(depth_trend(b) > 0, axis=1))
                parts["diff"].append(np.nanmedian(diff_b, axis=1))
                parts["mean_diff"].append(np.nanmean(diff_b, axis=1))
                parts["change"].append(np.mean(_late_minus_early(b) > 0, axis=1))
            del boot, out
    part = {k: np.concatenate(v) for k, v in parts.items()}
    null = np.stack([unit["null"]] + [_pairs_pass(_Source(acts, means=means, ranks=not pearson), null_rows=p)["null"]
                                      for p in rows[1:]])
    if pearson:
        var, cov, wvar = unit["var"], unit["cov"], unit["wvar"]
    else:  # stream and write stay on the activations
        var, cov, wvar = _trace_moments(acts)

    trend = depth_trend(r)
    diff = within_minus_across(r)
    q999 = float(np.quantile(null, 0.999))
    ok = np.isfinite(diff)
    with np.errstate(invalid="ignore", divide="ignore"):
        stream, write = cov / np.sqrt(var[:-1] * var[1:]), np.sqrt(wvar / var[:-1])
    return Continuity(
        r=r, null=null, r_rot=r_rot, stream=stream, write=write, trend=trend, diff=diff,
        median_r=_interval(np.nanmedian(r), part["median"]),
        median_r_rot=_interval(np.nanmedian(r_rot), part["median_rot"]),
        frac_rising=_interval(np.mean(trend > 0), part["rising"]),
        median_diff=_interval(np.nanmedian(diff), part["diff"]),
        frac_within_higher=float(np.mean(diff[ok] > 0)),
        wilcoxon_p=float(wilcoxon(diff[ok]).pvalue),
        null_q999=q999,
        frac_above_null=float(np.mean(r[np.isfinite(r)] > q999)),
        n_boot=len(w),
        frac_rising_change=_interval(np.mean(_late_minus_early(r) > 0), part["change"]),
        mean_diff=_interval(np.nanmean(diff), part["mean_diff"]),
        method=method,
    )


#: C2's readings of "r rises with depth" for one unit (:func:`verdicts`' ``trend``).
TRENDS = ("spearman", "late-early")
#: C3's aggregates over units (:func:`verdicts`' ``aggregate``).
AGGREGATES = ("median", "mean")


def verdicts(run, chapter: str = "", analysis: Continuity | None = None, high_r: float = HIGH_R,
             trend: str = "spearman", aggregate: str = "median", **kwargs) -> list[Verdict]:
    """The chapter's verdicts on C1, C2, C3, and C1 in a random basis, for one run.

    Parameters
    ----------
    run : tdcourse.Activations
        ``run.acts`` of shape (n_samples, 2L, d_model).
    chapter : str
        Notebook file stem.
    analysis : Continuity, optional
        Reuse an :func:`analyse` of this run (else computed with ``kwargs``).
    high_r : float in (0, 1), default :data:`HIGH_R`
        What C1 calls "highly correlated" (the robustness page also tries 0.9 and 0.94).
    trend : {"spearman", "late-early"}, default "spearman"
        C2: a unit's r "rises with depth" when its Spearman correlation with depth is positive,
        or (``"late-early"``) when its mean over the last third of the pairs exceeds that over
        the first third.
    aggregate : {"median", "mean"}, default "median"
        C3: the median or the mean over units of r_within − r_across.

    Returns
    -------
    list of Verdict
        C1, C2, C3, "C1 (random basis)".
    """
    if not 0 < high_r < 1:
        raise ValueError(f"high_r must lie in (0, 1), got {high_r}")
    check_run_size(check_acts(run.acts, name="run.acts"), MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)
    if trend not in TRENDS:
        raise ValueError(f"trend must be one of {TRENDS}, got {trend!r}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    a = analyse(run.acts, **kwargs) if analysis is None else analysis
    if (trend != "spearman" and a.frac_rising_change is None) or (aggregate != "median" and a.mean_diff is None):
        raise ValueError(f"trend={trend!r}, aggregate={aggregate!r} need a Continuity made by continuity.analyse "
                         "(this one lacks frac_rising_change or mean_diff): recompute it")
    m = run.label
    boot = f"95 % bootstrap CI over samples ({a.n_boot} resamples)"
    c1_crit = (f"median r over all units and adjacent site pairs: agrees if its 95 % CI lies above {high_r:g} "
               f"and above the permutation null's 99.9th percentile; partly if the median is above 0.5")
    c2_crit = ("share of units whose r has a positive Spearman correlation with depth: agrees if its 95 % CI "
               "lies above 0.5; partly if the share is above 0.5 but the CI reaches 0.5")
    c3_crit = ("per unit, median over layers of r_within − r_across; median over units: agrees if its 95 % CI "
               "lies above 0; disagrees if it lies below 0; partly otherwise")
    mr, rr = a.median_r, a.median_r_rot
    fr, md = a.frac_rising, a.median_diff
    if trend == "late-early":
        fr = a.frac_rising_change
        c2_crit = c2_crit.replace("has a positive Spearman correlation with depth",
                                  "is higher over the last third of the pairs than over the first third (mean)")
    if aggregate == "mean":
        md = a.mean_diff
        c3_crit = c3_crit.replace("; median over units:", "; mean over units:")
    if a.method == "spearman":
        c1_crit, c2_crit, c3_crit = (c.replace(" r ", " Spearman ρ ").replace(" r_", " ρ_").replace("median r", "median ρ")
                                     for c in (c1_crit, c2_crit, c3_crit))
    return [
        judge("C1", "Most units are highly correlated from one site to the next (Fig. 1D), although the "
              "residual stream has no privileged basis.", c1_crit, m, mr.estimate,
              agrees=mr.lo > max(high_r, a.null_q999), partly=mr.estimate > 0.5,
              uncertainty=f"{boot} [{mr.lo:.3f}, {mr.hi:.3f}]; shuffled-samples null 99.9th pct {a.null_q999:.3f}",
              detail=f"{a.frac_above_null:.1%} of (pair, unit) values exceed the null's 99.9th percentile",
              chapter=chapter),
        judge("C2", "Adjacent-site correlation rises with depth for most units (Fig. 1C).",
              c2_crit, m, fr.estimate, agrees=fr.lo > 0.5, partly=fr.estimate > 0.5,
              uncertainty=f"{boot} [{fr.lo:.3f}, {fr.hi:.3f}]; no-trend null 0.5",
              detail=f"median Spearman over units {np.nanmedian(a.trend):+.2f}", chapter=chapter),
        judge("C3", "Correlation is higher within a layer (pre-Attn l → pre-MLP l) than across layers "
              "(pre-MLP l → pre-Attn l+1): the MLP writes bigger changes than attention.",
              c3_crit, m, md.estimate, agrees=md.lo > 0, partly=md.hi >= 0,
              uncertainty=f"{boot} [{md.lo:+.4f}, {md.hi:+.4f}]; Wilcoxon over units p = {a.wilcoxon_p:.2g}",
              detail=f"{a.frac_within_higher:.1%} of units have r_within > r_across", chapter=chapter),
        judge("C1 (random basis)", "Beyond the paper: C1 repeated on the directions of one random orthonormal "
              "basis (the same rotation at every site) instead of the model's units.", c1_crit, m, rr.estimate,
              agrees=rr.lo > max(high_r, a.null_q999), partly=rr.estimate > 0.5,
              uncertainty=f"{boot} [{rr.lo:.3f}, {rr.hi:.3f}]; unit basis {mr.estimate:.3f}",
              detail="agrees = continuity does not need the unit basis", chapter=chapter),
    ]


# --------------------------------------------------------------------------- exercise checks


def _report(ok: bool, msg: str) -> bool:
    print(("✓ " if ok else "✗ ") + msg)
    return ok


def _model_name(run) -> str:
    model = (getattr(run, "meta", None) or {}).get("model", {}) or {}
    return str(model.get("name") or str(getattr(run, "label", "")).split(" · ")[0])


def findings_notes(runs, results: dict, found, high_r: float = HIGH_R) -> list[str]:
    """Chapter 2's "what we found", as sentences computed from its results.

    Parameters
    ----------
    runs : list of Activations
        The trained run first, then the random-init control (if any).
    results : dict
        ``{run.label: Continuity}`` from :func:`analyse`.
    found : list of Verdict
        The chapter's verdicts for all runs (from :func:`verdicts`).
    high_r : float
        The "highly correlated" threshold of C1 (:data:`HIGH_R`).

    Returns
    -------
    list of str
        One paragraph per claim, for :func:`tdcourse.verdicts.findings`: the trained model's
        outcome and its interval (a disagreement said plainly), then the random-init control read
        as a control (it shows it too → the architecture; it does not → training) with the number
        that explains it (the write ratio's trend with depth for C2, which block writes more for
        C3, the median r along random directions for C1); last, which model these numbers are of.
    """
    from .verdicts import number, run_label

    by = {(v.claim, v.model): v for v in found}
    trained = runs[0]
    control = runs[1] if len(runs) > 1 else None
    rt = results[trained.label]
    rc = results[control.label] if control is not None else None

    def outcome(v) -> str:
        paper = v.claim in ("C1", "C2", "C3")
        return f"{v.outcome} with the paper" if paper and v.outcome == "disagrees" else v.outcome

    def reading(claim: str) -> str:
        """What the control's outcome says, read as a control."""
        t, c = by.get((claim, trained.label)), by.get((claim, control.label)) if control else None
        if t is None or c is None:
            return ""
        pos = ("agrees", "partly")
        if c.outcome in pos and t.outcome in pos:
            return "The random-init control shows it too → the architecture, not training"
        if c.outcome in pos:
            return "The random-init control shows it and the trained model does not → training removes it"
        if t.outcome in pos:
            return "The random-init control does not show it → training"
        return "The random-init control does not show it either"

    def write_sizes(res) -> tuple[float, float, float]:
        """Median write ratio of attention and of the MLP, and the Spearman ρ of g with depth."""
        g_attn, g_mlp = split_within_across(res.write[:, None])
        trend = float(depth_trend(res.write[:, None])[0]) if len(res.write) >= 3 else float("nan")
        return float(np.nanmedian(g_attn)), float(np.nanmedian(g_mlp)), trend

    words = {"C1": "most units stay highly correlated from site to site",
             "C2": "that correlation rises with depth for most units",
             "C3": "it is higher within a layer (across attention) than across layers (across the MLP)",
             "C1 (random basis)": "(beyond the paper) C1 holds along random directions too"}
    named = [("trained", trained, rt)] + ([("control", control, rc)] if control is not None else [])
    out = []
    for claim, text in words.items():
        t = by.get((claim, trained.label))
        if t is None:
            continue
        line = f"{claim}: {text}. Trained: {outcome(t)} ({number(t.value)}; {t.uncertainty.split(';')[0]})."
        said = reading(claim)
        c = by.get((claim, control.label)) if control is not None else None
        if claim == "C1" and said:
            line += f" {said}: its median r is {number(rc.median_r.estimate)}, the trained model's " \
                    f"{number(rt.median_r.estimate)}."
        elif claim == "C2":
            line += f" {said} (share of rising units: {c.value:.0%})." if said else ""
            trends = {kind: write_sizes(res)[2] for kind, _, res in named}
            who = {"trained": "the trained model", "control": "the control"}
            falls = [k for k, v in trends.items() if v < 0]
            flat = [k for k, v in trends.items() if not v < 0]
            rho = {k: f"Spearman ρ with depth {number(v)}" for k, v in trends.items()}
            line += " The write ratio g (a block's write against the stream, basis-free)"
            if falls:
                line += (" falls with depth in " + " and ".join(f"{who[k]} ({rho[k]})" for k in falls)
                         + ", which by itself raises r (r = 1/√(1 + g²) for a write uncorrelated with the stream)")
            if flat:
                line += ("; it does not fall" if falls else " does not fall with depth") + " in " \
                        + " and ".join(f"{who[k]} ({rho[k]})" for k in flat) \
                        + ": there the rise of r is not explained by the size of the whole write"
            line += "."
        elif claim == "C3":
            line += f" {said} (median difference {number(c.value)})." if said else ""
            parts = []
            for kind, run, res in named:
                g_attn, g_mlp, _ = write_sizes(res)
                more = "the MLP" if g_mlp > g_attn else "attention"
                who = "trained model" if kind == "trained" else run_label(run)
                parts.append(f"in the {who} {more} writes more, relative to the stream (median g: "
                             f"MLP {number(g_mlp)}, attention {number(g_attn)})")
            g_attn, g_mlp, _ = write_sizes(rt)
            line += " " + "; ".join(p[:1].upper() + p[1:] if i == 0 else p for i, p in enumerate(parts)) + "."
            line += (" The paper's reading, that the MLP writes bigger changes than attention, "
                     + ("holds in the trained model." if g_mlp > g_attn else "does not hold in the trained model."))
            if control is not None:
                line += (" Which block writes more in a random-init stack is set by the initialisation; in the "
                         "trained model it is learned.")
        elif claim == "C1 (random basis)":
            line += f" {said}." if said else ""
            rel = ("less" if rt.median_r.estimate < rt.median_r_rot.estimate else "more")
            line += (f" The trained model's units are {rel} continuous than random directions (median r "
                     f"{number(rt.median_r.estimate)} against {number(rt.median_r_rot.estimate)}): "
                     + ("continuity does not need the unit basis; it comes with the residual additions."
                        if t.outcome == "agrees" else "here the unit basis matters."))
        elif said:
            line += f" {said}."
        out.append(line)
    name = _model_name(trained)
    n_layers = trained.acts.shape[1] // 2
    if "llama-3.1-8b" not in name.lower():
        out.append(f"These numbers are {name}'s ({n_layers} layers); the paper's are Llama 3.1 8B's. This "
                   "run makes no claim about Llama 3.1 8B: uncomment tdcourse.use_model(\"llama-3.1-8b\") in a "
                   "chapter's settings cell to run it (a GPU; see the Setup page).")
    return out


def _corr_example() -> np.ndarray:
    """400 samples × 6 sites (3 layers) × 6 units: each unit a random walk over sites with its own
    step size and its own offset (an offset must not change r), so each has its own r per pair."""
    rng = np.random.default_rng(3)
    n, s, d = 400, 6, 6
    acts = rng.standard_normal((n, 1, d)) + rng.standard_normal((n, s, d)).cumsum(1) * np.linspace(0.1, 2.0, d)
    return acts + np.array([50.0, -3.0, 7.0, 1.0, -20.0, 4.0])


def check_adjacent_corr(fn: Callable[[np.ndarray], np.ndarray]) -> bool:
    """Check a learner's ``fn(acts) -> ndarray (n_sites - 1, d_model)`` against :func:`adjacent_corr`.

    ``r[s, u]``: the Pearson correlation of unit ``u`` at site ``s`` with the same unit at site
    ``s + 1``, across the samples (axis 0). Runs ``fn`` on 400 samples × 6 sites × 6 units (units
    with different correlations and offsets) and names the usual mistakes: a correlation across
    the units of one sample (per sample, shape (n_samples, n_sites - 1), or standardising across
    units instead of samples), no centring, a covariance and standard deviations with different
    normalisations (``np.cov``'s ``ddof=1`` against ``np.std``'s ``ddof=0``), the wrong pair of
    sites (``s`` with ``s + 2``, e.g. ``resid_pre.l`` with ``resid_pre.l+1``), rows and columns
    swapped.

    Parameters
    ----------
    fn : callable
        ``fn(acts)`` with ``acts`` of shape (n_samples, n_sites, d_model).

    Returns
    -------
    bool
        Whether it matches (within 1e-6); one ✓ / ✗ line per case is printed.
    """
    acts = _corr_example()
    n, n_sites, d = acts.shape
    want = adjacent_corr(acts)
    from .exercises import NOT_WRITTEN, unwritten

    try:
        value = fn(acts.copy())
        got = value if unwritten(value) else np.asarray(value, dtype=float)
    except Exception as err:  # a learner's bug is reported, not raised
        got = err
    if unwritten(got):  # a template (None, ..., NotImplementedError): "Not written yet"
        return report([("r per adjacent pair and unit", False, NOT_WRITTEN)], width=68)

    def returned(_acts):
        if isinstance(got, Exception):
            raise got
        return got

    shapes = {
        (n, n_sites - 1): "one r per sample and pair: that correlates the units within one sample. r^u "
                          "correlates one unit with itself across the samples (axis 0)",
        (n_sites - 2, d): "one pair short: you paired site s with site s + 2. Adjacent sites are s and "
                          "s + 1 (resid_pre.l → resid_mid.l → resid_pre.l+1)",
        (n_sites // 2 - 1, d): "one row per layer step: you paired resid_pre.l with resid_pre.l+1 (sites s "
                               "and s + 2). Adjacent sites are s and s + 1, two pairs per layer",
        (d, n_sites - 1): "rows and columns swapped: one row per adjacent pair, one column per unit",
    }
    if not isinstance(got, Exception) and got.shape in shapes and got.shape != want.shape:
        case = (f"{n} samples × {n_sites} sites × {d} units: r per adjacent pair and unit", False,
                f"shape {got.shape}, expected {want.shape} = (n_sites - 1, d_model): " + shapes[got.shape])
        return report([case], width=68)
    a, b = acts[:, :-1], acts[:, 1:]
    za = (acts - acts.mean(2, keepdims=True)) / acts.std(2, keepdims=True)
    centred = acts - acts.mean(0)
    not_centred = "not centred ({}): subtract each unit's mean over samples, at each site, before multiplying"
    mistakes = {
        "standardised across the units of each sample (axis 2), not across the samples (axis 0): r^u "
        "correlates one unit with itself across the samples": (za[:, :-1] * za[:, 1:]).mean(0),
        not_centred.format("E[ab] / (σa σb)"): (a * b).mean(0) / (a.std(0) * b.std(0)),
        not_centred.format("the cosine of the two columns"):
            (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0)),
        "the covariance and the standard deviations use different normalisations (np.cov divides by "
        "n - 1, np.std by n): use the same for both, or np.corrcoef":
            (centred[:, :-1] * centred[:, 1:]).sum(0) / (n - 1) / (acts.std(0)[:-1] * acts.std(0)[1:]),
    }
    return report([run_case(f"{n} samples × {n_sites} sites × {d} units (different r and offsets): r per "
                            "adjacent pair and unit", returned, (acts,), want, rtol=0, atol=1e-6,
                            mistakes=mistakes)], width=68)


def check_uncorrelated_write_r(fn: Callable[[np.ndarray], np.ndarray]) -> bool:
    """Check a learner's ``fn(g) -> r``: the correlation of ``h`` with ``h + f`` when the write
    ``f`` is independent of ``h`` and ``std(f) = g · std(h)``, for an array of ``g``."""
    g = np.array([0.0, 0.1, 0.5, 1.0, 3.0])
    want = 1.0 / np.sqrt(1.0 + g**2)
    from .exercises import NOT_WRITTEN, unwritten

    try:
        value = fn(g)
        got = np.asarray(value, dtype=float)
    except Exception as err:  # a learner's bug is reported, not raised
        value = err
        if not unwritten(err):
            return _report(False, f"your function raised {type(err).__name__}: {err}")
    if unwritten(value):  # a template (None, ..., NotImplementedError): "Not written yet"
        return report([("r for uncorrelated writes", False, NOT_WRITTEN)], width=68)
    if got.shape != want.shape:
        return _report(False, f"shape {got.shape}, expected {want.shape}: one r per value of g")
    ok = bool(np.allclose(got, want, atol=1e-6))
    return _report(ok, "correct: r = 1 / sqrt(1 + g²)" if ok else
                   f"expected {np.round(want, 3).tolist()}, got {np.round(got, 3).tolist()}: "
                   "cov(h, h + f) = var h, and var(h + f) = var h + var f")
