"""Low-dimensional views of the residual stream: PCA, a compressing autoencoder with a 2-D
latent, per-site dimensionality, and how curved the path over depth is (claims C11, C12).

The paper (section 2.7 of ``shared/paper.md``) squashes the residual stream into a 2-D
latent with a "compressing autoencoder" and reports that the stream follows a **curved
trajectory** there (C11), that **early sites are harder to reconstruct** and that **later
sites are lower-dimensional** (C12). It does not give the autoencoder's architecture or
training, nor a number for "curved" or "lower-dimensional". The choices made here:

* **Pooling and scale.** Every (sample, site) vector is one row; each unit is z-scored over
  all rows of the training samples (:func:`pooled_standardize`), so a few massive units do
  not own the fit. Norms still grow with depth, so late sites spread more in this space.
* **Autoencoder** (:func:`train_autoencoder`): an MLP ``d → 64 → 16 → 2 → 16 → 64 → d``
  with GELU, MSE loss, Adam with a one-cycle schedule, 8 epochs of shuffled minibatches over
  the rows of half the samples, seeded, on the CPU. Errors are read on the *other* half
  (held-out samples).
* **Reconstruction error per site** (:func:`site_nmse`): squared error divided by the site's
  own spread across samples, :math:`\\mathrm{NMSE}_s = \\sum_i \\lVert z_{is} - \\hat z_{is}\\rVert^2
  / \\sum_i \\lVert z_{is} - \\bar z_s\\rVert^2`, so 1 means "no better than the site's mean".
* **Dimensionality per site** (:func:`site_spectra`): the spectrum of each site's covariance
  across samples, summarised by the participation ratio
  :math:`\\mathrm{PR} = (\\sum\\lambda)^2/\\sum\\lambda^2` and the number of PCs for 90 % of
  the variance; raw, and with units standardised per site (robust to massive units).
* **Curvature** of a path over depth (:func:`bend_ratio`, :func:`path_length_ratio`,
  :func:`turning_angles`): how far it bows away from its chord, how much longer it is than
  its chord, and the angle it turns at each step.

Everything is vectorised numpy (torch for the autoencoder), seeded, and returns arrays or
frozen dataclasses.

Inputs follow the course's rule (:mod:`tdcourse.checks`): float32 / float64, no NaN or inf
(none is skipped silently: the bootstrap intervals and early − late differences used to
ignore NaN), no float16 (its squares overflow in the pooled variance). The smallest run that
carries a verdict: :data:`MIN_SAMPLES` = 20 samples (half of them train the autoencoder and
half are held out for its errors; the spectra's intervals resample blocks of samples) and
:data:`MIN_LAYERS` = 3 layers (C12 compares the first and last thirds of the sites, 2 sites each).
:func:`analyse` and :func:`verdicts` refuse smaller runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Sequence

import numpy as np

from . import streaming
from .capture import check_acts
from .data import check_int
from .checks import check_array, check_run_size
from . import stats
from .exercises import report, run_case, which_mistake
from .memo import cached
from .verdicts import Verdict, judge

__all__ = [
    "MIN_SAMPLES",
    "MIN_LAYERS",
    "pooled_standardize",
    "PooledPCA",
    "pooled_pca",
    "site_spread",
    "participation_ratio",
    "n_components_for",
    "SiteSpectra",
    "site_spectra",
    "site_spectra_both",
    "se_interval",
    "AutoencoderFit",
    "build_autoencoder",
    "train_autoencoder",
    "site_nmse",
    "thirds",
    "early_minus_late",
    "path_length_ratio",
    "bend_ratio",
    "turning_angles",
    "mean_trajectory_bootstrap",
    "site_shuffle_null",
    "LowDim",
    "analyse",
    "verdicts",
    "check_participation_ratio",
    "check_training_step",
    "check_bend_ratio",
]


# --------------------------------------------------------------------------- input checks


#: The fewest samples (N) and layers a verdict on C11 and C12 is computed from (see the module's docstring).
MIN_SAMPLES = 20
MIN_LAYERS = 3
_ANALYSIS = "Chapter 6's low-dimensional analysis (C11, C12)"


def _check_acts(acts: np.ndarray, name: str = "acts") -> np.ndarray:
    return check_acts(acts, name=name)


def _check_idx(idx: np.ndarray | None, n: int, name: str = "idx") -> np.ndarray:
    if idx is None:
        return np.arange(n)
    idx = np.asarray(idx)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D array of sample indices")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"{name} holds sample indices outside 0 … {n - 1}")
    return idx


def _check_path(traj: np.ndarray, name: str = "traj") -> np.ndarray:
    traj = check_array(traj, name).astype(np.float64, copy=False)
    if traj.ndim < 2 or traj.shape[-2] < 2:
        raise ValueError(f"{name} must have shape (..., n_sites, n_dims) with n_sites >= 2, got {traj.shape}")
    return traj


# --------------------------------------------------------------------------- pooled PCA


def pooled_moments(acts: np.ndarray, fit_idx: np.ndarray | None = None,
                   eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each unit over all (sample, site) rows of the fitting samples, streamed.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    fit_idx : ndarray of shape (n_fit,) of int, optional
        Samples whose rows give the mean and scale (default: all).
    eps : float
        Floor of the scale (a constant unit is left centred, not divided by 0).

    Returns
    -------
    mean, scale : ndarray of shape (d_model,), float64
        Two passes over blocks of samples (the mean, then the squared deviations, in the
        stored precision and summed in float64); a cached capture's pages are given back after
        each block: the memory does not grow with N.
    """
    acts = _check_acts(acts)
    n, s, d = acts.shape
    idx = _check_idx(fit_idx, n, "fit_idx")
    fit = streaming.sample_blocks(len(idx), 3 * 8 * s * d)
    total = np.zeros(d)
    for a, b in fit:
        total += streaming.read(acts, idx[a:b]).reshape(-1, d).sum(0, dtype=np.float64)
    mean = total / (len(idx) * s)
    sq = np.zeros(d)
    for a, b in fit:
        rows = streaming.read(acts, idx[a:b]).reshape(-1, d)
        sq += np.square(rows - mean.astype(rows.dtype)).sum(0, dtype=np.float64)
    var = sq / (len(idx) * s)
    return mean, np.maximum(np.sqrt(var), eps)


def _standardized(acts: np.ndarray, key, m32: np.ndarray, s32: np.ndarray) -> np.ndarray:
    """``(acts[key] − mean) / scale`` in float32: the values :func:`pooled_standardize` writes,
    for one block (elementwise, so any blocking gives the same numbers)."""
    out = np.subtract(streaming.read(acts, key), m32, dtype=np.float32)
    out /= s32
    return out


def _standardized_rows(acts: np.ndarray, idx: np.ndarray, m32: np.ndarray, s32: np.ndarray) -> np.ndarray:
    """The standardised rows of samples ``idx``, shape ``(len(idx) * n_sites, d_model)``, float32,
    built a block of samples at a time (equal to ``pooled_standardize(...)[0][idx]``)."""
    n, s, d = acts.shape
    out = np.empty((len(idx) * s, d), dtype=np.float32)
    for a, b in streaming.sample_blocks(len(idx), 3 * 8 * s * d):
        out[a * s : b * s] = _standardized(acts, idx[a:b], m32, s32).reshape(-1, d)
    return out


def _standardized_row_blocks(acts: np.ndarray, m32: np.ndarray, s32: np.ndarray, bytes_per_row: int):
    """``(slice, rows)`` over the flattened ``(n_samples * n_sites, d_model)`` standardised rows,
    in the blocks of :func:`_row_blocks` (the same blocks a full-size copy was cut into)."""
    n, s, d = acts.shape
    for sl in _row_blocks(n * s, bytes_per_row):
        i0, i1 = sl.start // s, -(-sl.stop // s)
        rows = _standardized(acts, np.s_[i0:i1], m32, s32).reshape(-1, d)
        yield sl, rows[sl.start - i0 * s : sl.stop - i0 * s]


def pooled_standardize(acts: np.ndarray, fit_idx: np.ndarray | None = None, eps: float = 1e-8):
    """Z-score each unit over all (sample, site) rows of the fitting samples.

    Parameters
    ----------
    acts, fit_idx, eps : as for :func:`pooled_moments` (``acts`` of shape (n_samples, n_sites,
        d_model); ``fit_idx`` the samples whose rows give the mean and scale, default all)

    Returns
    -------
    z : ndarray of shape (n_samples, n_sites, d_model), float32
        A full-size copy (1.9 GB for Llama 3.1 8B at N = 1,800): the library's own analyses
        standardise a block at a time instead (:func:`train_autoencoder`).
    mean : ndarray of shape (d_model,)
    scale : ndarray of shape (d_model,)
    """
    mean, scale = pooled_moments(acts, fit_idx, eps)
    n, s, d = acts.shape
    z = np.empty((n, s, d), dtype=np.float32)
    m32, s32 = mean.astype(np.float32), scale.astype(np.float32)
    for a, b in streaming.sample_blocks(n, 3 * 8 * s * d):
        z[a:b] = _standardized(acts, np.s_[a:b], m32, s32)
    return z, mean, scale


# Bytes per block where a computation runs a block of rows (or sites) at a time: an 8B-sized
# array (1000 × 64 × 4096 float32, 1 GiB) then never gets full-size temporaries, while
# SmolLM2's (1000 × 60 × 576) still runs in one block (the same numbers as in one piece).
_BLOCK_BYTES = 256 << 20


def _row_blocks(n_rows: int, bytes_per_row: int) -> list[slice]:
    step = max(1, _BLOCK_BYTES // max(1, bytes_per_row))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


#: Most bytes of standardised float32 training rows the autoencoder holds (:func:`train_autoencoder`'s
#: ``max_train_samples``): 2 GiB. SmolLM2's 500 training samples of 60 × 576 units take 69 MB,
#: Llama 3.1 8B's 900 of 64 × 4096 take 0.94 GB; at N = 10,000 the 8B's 5,000 would take 5.2 GB,
#: and 2,048 of them are kept (a 70B's 160 × 8192 rows: 409 samples).
MAX_TRAIN_BYTES = 2 << 30

#: Widest d_model whose pooled PCA is exact (scikit-learn's covariance eigendecomposition);
#: wider ones use scikit-learn's randomized solver with a fixed seed (see :func:`pooled_pca`).
EXACT_PCA_MAX_D = 1024


@dataclass(frozen=True)
class PooledPCA:
    """PCA fitted on every (sample, site) row, pooled over sites.

    Attributes
    ----------
    scores : ndarray of shape (n_samples, n_sites, n_components)
        Each sample's trajectory over depth in PC space.
    components : ndarray of shape (n_components, d_model)
        Unit-norm principal axes (in standardised units if ``scale`` is not all ones).
    explained_variance_ratio : ndarray of shape (n_components,)
        Share of the pooled variance (of the fitting rows) along each axis.
    mean, scale : ndarray of shape (d_model,)
        Standardisation applied before the PCA (``scale`` all ones: none).
    center : ndarray of shape (d_model,)
        The PCA's own centre (≈ 0 after pooled standardisation of the same rows).
    """

    scores: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    center: np.ndarray

    def sq_error(self, acts: np.ndarray, k: int | None = None) -> np.ndarray:
        """Squared reconstruction error of each row from its first ``k`` PCs, in the
        standardised units the PCA was fitted in.

        Parameters
        ----------
        acts : ndarray of shape (n_samples, n_sites, d_model)
        k : int, optional
            Number of PCs kept (default: all fitted components).

        Returns
        -------
        ndarray of shape (n_samples, n_sites)
        """
        acts = _check_acts(acts)
        k = self.components.shape[0] if k is None else int(k)
        if not 1 <= k <= self.components.shape[0]:
            raise ValueError(f"k must be in 1 … {self.components.shape[0]}, got {k}")
        n, s, d = acts.shape
        out = np.empty((n, s))
        for sl in _row_blocks(n, 3 * 8 * s * d):  # a block of samples at a time (float64 temporaries)
            zc = (acts[sl] - self.mean) / self.scale - self.center
            proj = zc @ self.components[:k].T
            out[sl] = (np.einsum("nsd,nsd->ns", zc, zc) - np.einsum("nsk,nsk->ns", proj, proj)).clip(min=0)
        return out


def pooled_pca(
    acts: np.ndarray,
    n_components: int = 2,
    fit_idx: np.ndarray | None = None,
    standardize: bool = True,
    seed: int = 0,
) -> PooledPCA:
    """PCA (scikit-learn) of the residual stream with all sites pooled.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    n_components : int
    fit_idx : ndarray of shape (n_fit,) of int, optional
        Samples whose rows are fitted (default: all); every sample is projected.
    standardize : bool
        Z-score each unit over the fitted rows first (:func:`pooled_standardize`).
    seed : int
        Seed of the randomized solver (used only when ``d_model >`` :data:`EXACT_PCA_MAX_D`).

    Returns
    -------
    PooledPCA

    Notes
    -----
    Up to :data:`EXACT_PCA_MAX_D` units (SmolLM2's 576) the PCA is exact: the eigenvectors of
    the ``d × d`` covariance of the pooled rows. Wider streams (Llama 3.1 8B: 32,000 pooled rows
    of 4096 units) use scikit-learn's randomized SVD (Halko et al. 2011) with the seed fixed,
    20 oversamples and 7 power iterations: the exact route's ``4096 × 4096`` covariance and
    eigendecomposition take minutes on a laptop CPU, the randomized one seconds, and its leading
    components match the exact ones to within numerical noise when their variances are not
    nearly tied (the course's tests check this against the exact solver).
    """
    from sklearn.decomposition import PCA

    acts = _check_acts(acts)
    n, s, d = acts.shape
    if not 1 <= n_components <= d:
        raise ValueError(f"n_components must be in 1 … d_model={d}, got {n_components}")
    idx = _check_idx(fit_idx, n, "fit_idx")
    mean, scale = pooled_moments(acts, idx) if standardize else (np.zeros(d), np.ones(d))
    m32, s32 = mean.astype(np.float32), scale.astype(np.float32)  # (x - 0) / 1: the float32 values
    if d <= EXACT_PCA_MAX_D:
        pca = PCA(n_components=n_components, svd_solver="covariance_eigh")
    else:
        pca = PCA(n_components=n_components, svd_solver="randomized", n_oversamples=20, iterated_power=7,
                  random_state=seed)
    # Only the fitted rows are held (what scikit-learn fits); every sample is then standardised
    # and projected a block of rows at a time: no full-size standardised copy.
    pca.fit(_standardized_rows(acts, idx, m32, s32))
    scores = np.empty((n * s, n_components), dtype=np.result_type(np.float32, pca.components_))
    for sl, rows in _standardized_row_blocks(acts, m32, s32, 4 * d):
        scores[sl] = (rows - pca.mean_) @ pca.components_.T
    return PooledPCA(scores=scores.reshape(n, s, n_components).astype(np.float64),
                     components=pca.components_.astype(np.float64),
                     explained_variance_ratio=pca.explained_variance_ratio_.astype(np.float64),
                     mean=mean, scale=scale, center=pca.mean_.astype(np.float64))


def site_spread(z: np.ndarray) -> np.ndarray:
    """Squared distance of each sample to its site's mean over samples.

    Parameters
    ----------
    z : ndarray of shape (n_samples, n_sites, d_model)

    Returns
    -------
    ndarray of shape (n_samples, n_sites)
        Summed over samples and divided by ``n_samples - 1``: the site's total variance.
    """
    z = _check_acts(z, "z")
    n, s, d = z.shape
    out = np.empty((n, s))
    step = max(1, _BLOCK_BYTES // max(1, 8 * n * d))
    for lo in range(0, s, step):  # a few sites at a time: no full-size centred copy
        c = z[:, lo : lo + step] - z[:, lo : lo + step].mean(0, keepdims=True)
        out[:, lo : lo + step] = np.einsum("nsd,nsd->ns", c, c, dtype=np.float64)
    return out


def _standardized_site_spread(acts: np.ndarray, m32: np.ndarray, s32: np.ndarray) -> np.ndarray:
    """:func:`site_spread` of ``acts`` standardised with ``m32`` and ``s32``, a few sites at a
    time (the same numbers as on :func:`pooled_standardize`'s full copy, without it)."""
    n, s, d = acts.shape
    out = np.empty((n, s))
    step = max(1, _BLOCK_BYTES // max(1, 8 * n * d))
    for lo in range(0, s, step):
        z = _standardized(acts, np.s_[:, lo : lo + step], m32, s32)
        c = z - z.mean(0, keepdims=True)
        out[:, lo : lo + step] = np.einsum("nsd,nsd->ns", c, c, dtype=np.float64)
    return out


# --------------------------------------------------------------------------- dimensionality


def participation_ratio(eigvals: np.ndarray) -> np.ndarray:
    """Participation ratio :math:`(\\sum_k \\lambda_k)^2 / \\sum_k \\lambda_k^2` of spectra.

    It is 1 when one direction holds all the variance and ``K`` when ``K`` directions share
    it equally.

    Parameters
    ----------
    eigvals : ndarray of shape (..., n_eig)
        Non-negative variances (eigenvalues of a covariance), along the last axis.

    Returns
    -------
    ndarray of shape (...)
        NaN for an all-zero spectrum.
    """
    ev = check_array(eigvals, "eigvals").astype(np.float64, copy=False)
    if ev.ndim < 1 or ev.shape[-1] == 0:
        raise ValueError(f"eigvals must have shape (..., n_eig) with n_eig >= 1, got {ev.shape}")
    if np.any(ev < -1e-6 * np.abs(ev).max(initial=0)):
        raise ValueError("eigvals must be non-negative (variances)")
    ev = ev.clip(min=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ev.sum(-1) ** 2 / (ev**2).sum(-1)


def n_components_for(eigvals: np.ndarray, frac: float = 0.9) -> np.ndarray:
    """Smallest number of leading components whose variance reaches ``frac`` of the total.

    Parameters
    ----------
    eigvals : ndarray of shape (..., n_eig)
        Non-negative variances, in any order (sorted here, largest first).
    frac : float in (0, 1]

    Returns
    -------
    ndarray of int, shape (...)
    """
    if not 0 < frac <= 1:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    ev = check_array(eigvals, "eigvals").astype(np.float64, copy=False)
    if ev.ndim < 1 or ev.shape[-1] == 0:
        raise ValueError(f"eigvals must have shape (..., n_eig) with n_eig >= 1, got {ev.shape}")
    ev = -np.sort(-ev.clip(min=0), axis=-1)
    cum = np.cumsum(ev, axis=-1)
    total = cum[..., -1:]
    # a small relative tolerance so that e.g. 9 equal variances out of 10 count as 90 %
    return (cum < frac * total * (1 - 1e-9)).sum(-1) + 1


@dataclass(frozen=True)
class SiteSpectra:
    """Per-site covariance spectra across samples, and their dimensionality.

    Attributes
    ----------
    eigvals : ndarray of shape (n_sites, min(n_samples, d_model))
        Eigenvalues of each site's covariance over samples, largest first.
    pr : ndarray of shape (n_sites,)
        Participation ratio per site.
    n90 : ndarray of shape (n_sites,) of int
        PCs needed for ``frac`` of the site's variance.
    pr_boot : ndarray of shape (n_boot, n_sites)
        Participation ratio of block-bootstrap resamples of the samples.
    standardized : bool
        Units z-scored within each site (the spectrum of the correlation matrix).
    frac : float
    """

    eigvals: np.ndarray
    pr: np.ndarray
    n90: np.ndarray
    pr_boot: np.ndarray
    standardized: bool
    frac: float = 0.9


def site_spectra(
    acts: np.ndarray,
    standardize: bool = False,
    frac: float = 0.9,
    n_boot: int = 1000,
    n_blocks: int = 20,
    seed: int = 0,
) -> SiteSpectra:
    """Spectrum of each site's covariance over samples; PR and PCs-for-``frac`` per site.

    The uncertainty is a bootstrap over samples, done cheaply: samples are split at random
    into ``n_blocks`` blocks, and blocks are resampled with replacement. The participation
    ratio needs only the trace and the squared Frobenius norm of the covariance, which are
    sums over block pairs, so each resample costs almost nothing. Resamples keep the full
    sample's mean (the O(1/n) re-centring is neglected). Resamples hold fewer distinct
    samples, which biases their PR down: read ``pr_boot`` for its spread (a standard
    error), not for its centre.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    standardize : bool
        Z-score each unit within each site first, i.e. use the correlation matrix. A
        handful of massive units then no longer set the spectrum.
    frac : float in (0, 1]
    n_boot : int
        Bootstrap resamples (0: none; ``pr_boot`` then has shape (0, n_sites)).
    n_blocks : int
        Blocks of samples for the bootstrap (at least 2, at most n_samples).
    seed : int

    Returns
    -------
    SiteSpectra

    See Also
    --------
    site_spectra_both : raw and standardised at once, sharing the work.
    """
    return _spectra(acts, (bool(standardize),), frac, n_boot, n_blocks, seed)[0]


def site_spectra_both(acts: np.ndarray, frac: float = 0.9, n_boot: int = 1000, n_blocks: int = 20,
                      seed: int = 0) -> tuple[SiteSpectra, SiteSpectra]:
    """``(site_spectra(acts, False, …), site_spectra(acts, True, …))`` computed together (the
    per-block products are shared), with the same blocks and resamples."""
    raw, std = _spectra(acts, (False, True), frac, n_boot, n_blocks, seed)
    return raw, std


def _spectra(acts, variants, frac, n_boot, n_blocks, seed) -> list[SiteSpectra]:
    acts = _check_acts(acts)
    n, s, d = acts.shape
    if n < 3:
        raise ValueError(f"site_spectra needs at least 3 samples, got {n}")
    if not 2 <= n_blocks <= n:
        raise ValueError(f"n_blocks must be in 2 … n_samples={n}, got {n_blocks}")
    if n_boot < 0:
        raise ValueError("n_boot must be >= 0")
    if not 0 < frac <= 1:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    rng = np.random.default_rng(seed)
    block = rng.permutation(n) % n_blocks                       # (n,) block id of each sample
    onehot = np.eye(n_blocks)[block]                            # (n, n_blocks)
    r, nv = min(n, d), len(variants)
    eig = np.empty((nv, s, r))
    tr_b = np.empty((nv, s, n_blocks))                          # trace of each block's scatter
    k_bb = np.empty((nv, s, n_blocks, n_blocks))                # <scatter_b, scatter_c>_F
    for j in range(s):                                          # one site at a time: bounded memory
        x = streaming.read(acts, np.s_[:, j], np.float32)  # a cached capture's pages given back
        x = x - x.mean(0, dtype=np.float64).astype(np.float32)
        if d <= n:                                              # primal: d x d scatters per block
            sc = np.stack([v.T @ v for v in (x[block == b] for b in range(n_blocks))])
            total = sc.sum(0, dtype=np.float64)
            for k, standardize in enumerate(variants):
                if standardize:
                    sd = np.sqrt(np.diag(total))
                    inv = (1.0 / np.where(sd > 0, sd, 1.0)).astype(np.float32)
                    scv, tot = sc * np.outer(inv, inv), total * np.outer(inv, inv) * (n - 1)
                else:
                    scv, tot = sc, total
                eig[k, j] = np.linalg.eigvalsh(tot)[::-1] / (n - 1)
                tr_b[k, j] = np.trace(scv, axis1=1, axis2=2, dtype=np.float64)
                flat = scv.reshape(n_blocks, -1)
                k_bb[k, j] = flat @ flat.T
        else:                                                   # dual: n x n Gram matrix
            for k, standardize in enumerate(variants):
                xv = x
                if standardize:
                    sd = x.std(0, ddof=1, dtype=np.float64)
                    xv = x / np.where(sd > 0, sd, 1.0).astype(np.float32)
                g = (xv @ xv.T).astype(np.float64)
                eig[k, j] = np.linalg.eigvalsh(g)[::-1] / (n - 1)
                tr_b[k, j] = onehot.T @ np.diag(g)
                k_bb[k, j] = onehot.T @ (g * g) @ onehot
    eig = eig.clip(min=0)
    w = rng.multinomial(n_blocks, np.full(n_blocks, 1 / n_blocks), size=n_boot).astype(np.float64)
    out = []
    for k, standardize in enumerate(variants):
        num = (w @ tr_b[k].T) ** 2                              # (n_boot, s)
        den = np.einsum("bk,skl,bl->bs", w, k_bb[k], w)
        with np.errstate(invalid="ignore", divide="ignore"):
            pr_boot = num / den
        out.append(SiteSpectra(eigvals=eig[k], pr=participation_ratio(eig[k]), n90=n_components_for(eig[k], frac),
                               pr_boot=pr_boot, standardized=standardize, frac=frac))
    return out


def se_interval(estimate: np.ndarray, boot: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Normal interval ``estimate ± z · sd(boot)`` from bootstrap draws.

    Centred on the estimate, so it suits statistics whose resamples are biased (a
    dimensionality estimate from resamples with repeated samples); the percentile interval
    would inherit the bias.

    Parameters
    ----------
    estimate : ndarray of shape (...)
    boot : ndarray of shape (n_boot, ...)
    level : float in (0, 1)

    Returns
    -------
    lo, hi : ndarray of shape (...)
    """
    from scipy.stats import norm

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    boot = check_array(boot, "boot").astype(np.float64, copy=False)
    est = check_array(estimate, "estimate").astype(np.float64, copy=False)
    if boot.ndim < 1 or boot.shape[0] < 2 or boot.shape[1:] != est.shape:
        raise ValueError(f"boot must have shape (n_boot >= 2, *{est.shape}), got {boot.shape}")
    half = norm.ppf(0.5 + level / 2) * np.std(boot, axis=0, ddof=1)
    return est - half, est + half


# --------------------------------------------------------------------------- autoencoder


def build_autoencoder(d_model: int, latent_dim: int = 2, hidden: Sequence[int] = (64, 16)):
    """The compressing autoencoder: an MLP ``d → hidden… → latent → reversed(hidden)… → d``.

    GELU between linear layers; the latent and the output are linear. Returns a
    ``torch.nn.Module`` with ``.encoder`` and ``.decoder`` (``torch.nn.Sequential``).
    """
    import torch.nn as nn

    if d_model < 1 or latent_dim < 1 or any(h < 1 for h in hidden):
        raise ValueError(f"widths must be positive: d_model={d_model}, latent_dim={latent_dim}, hidden={tuple(hidden)}")

    def mlp(widths):
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.GELU())
        return nn.Sequential(*layers)

    class CompressingAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = mlp([d_model, *hidden, latent_dim])
            self.decoder = mlp([latent_dim, *reversed(hidden), d_model])

        def forward(self, x):
            return self.decoder(self.encoder(x))

    return CompressingAE()


@dataclass(frozen=True)
class AutoencoderFit:
    """A trained compressing autoencoder and what it does to every (sample, site) row.

    Attributes
    ----------
    latent : ndarray of shape (n_samples, n_sites, latent_dim)
        The code of every row: each sample's trajectory over depth in the latent plane.
    sq_error : ndarray of shape (n_samples, n_sites)
        Squared reconstruction error of each row (sum over units, standardised units).
    spread : ndarray of shape (n_samples, n_sites)
        Squared distance of each row to its site's mean (:func:`site_spread`), the
        denominator of :func:`site_nmse`.
    train_idx, test_idx : ndarray of int
        Samples trained on, and held out (a capped split's other training samples are in
        neither: ``config["n_train_split"]``).
    loss : ndarray of shape (epochs,)
        Mean training loss per epoch.
    mean, scale : ndarray of shape (d_model,)
        Pooled standardisation (fitted on the training samples).
    config : dict
        Architecture and training settings.
    seconds : float
        Training wall time.
    model : torch.nn.Module
        The trained network (CPU), not compared.
    """

    latent: np.ndarray
    sq_error: np.ndarray
    spread: np.ndarray
    train_idx: np.ndarray
    test_idx: np.ndarray
    loss: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    config: dict
    seconds: float
    model: Any = field(default=None, compare=False, repr=False)

    def nmse(self, n_boot: int = 0, seed: int = 0):
        """:func:`site_nmse` on the held-out samples."""
        return site_nmse(self.sq_error, self.spread, self.test_idx, n_boot=n_boot, seed=seed)

    # Pickled (the analysis cache, :mod:`tdcourse.memo`) with the network as its weights: the
    # network's class is built inside :func:`build_autoencoder`, so it is rebuilt from them.
    def __getstate__(self) -> dict:
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        model = state.pop("model")
        if model is not None:
            state["_model_weights"] = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        return state

    def __setstate__(self, state: dict) -> None:
        weights = state.pop("_model_weights", None)
        for name, value in state.items():
            object.__setattr__(self, name, value)
        model = None
        if weights is not None:
            import torch

            model = build_autoencoder(len(self.mean), self.config["latent_dim"], self.config["hidden"])
            model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
            model.eval()
        object.__setattr__(self, "model", model)


@cached
def train_autoencoder(
    acts: np.ndarray,
    latent_dim: int = 2,
    hidden: Sequence[int] = (64, 16),
    epochs: int = 8,
    batch_size: int = 1024,
    lr: float = 5e-3,
    train_frac: float = 0.5,
    balance_sites: bool = False,
    seed: int = 0,
    device: str = "cpu",
    num_threads: int | None = 1,
    order_seed: int | None = None,
    step: Callable[[Any, Any, Any], Any] | None = None,
    max_train_samples: int | None = None,
) -> AutoencoderFit:
    """Train the compressing autoencoder on pooled, standardised site vectors.

    Rows are every (sample, site) pair of a random ``train_frac`` of the samples (at most
    ``max_train_samples`` of them), z-scored per unit with the training rows' statistics. Only
    the training rows are held in memory (float32); every other step standardises a block of
    samples at a time. Loss: mean squared error over units
    (optionally weighted per site), Adam with a cosine learning-rate decay, ``epochs``
    passes over shuffled minibatches. Seeded (``torch.manual_seed`` and a seeded split and
    shuffle); bit-identical on the CPU for a given torch build and thread count.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    latent_dim : int
        2 for the paper's "squashing into 2-D".
    hidden : sequence of int
        Encoder widths between input and latent (decoder: reversed).
    epochs, batch_size : int
    lr : float
        Peak learning rate.
    train_frac : float in (0, 1)
        Share of samples trained on; the rest are held out for the errors.
    balance_sites : bool
        Weight each site's rows by 1 / (its mean spread), so that every site's variance
        across samples counts equally in the loss (by default, late sites, which spread
        more, dominate).
    seed : int
        Seeds the train / held-out split, the initial weights and (unless ``order_seed`` is
        given) the order of the minibatches.
    device : str
        torch device ("cpu"; "cuda" for a large model on Colab).
    num_threads : int or None
        torch CPU threads while training, restored afterwards. The default 1 makes the
        result independent of the machine's core count, and for a network this small is
        faster than several threads (which spend their time synchronising, badly so on a
        busy machine). None leaves torch's setting alone.
    order_seed : int or None
        Seeds the order in which the training rows are drawn into minibatches alone (same
        split, same initial weights): the resampling that the autoencoder's fit is least
        expected to depend on. None (default): ``seed``.
    step : callable or None
        One optimisation step on a minibatch, ``step(model, opt, xb) -> loss`` (forward, MSE
        loss, ``opt.zero_grad()``, ``loss.backward()``, ``opt.step()``; returns the loss, a
        scalar tensor or float), in place of the library's own: how the chapter checks a
        learner's training loop (:func:`check_training_step`). The learning-rate schedule
        still steps after it. None (default): the library's step. Not with
        ``balance_sites=True`` (its per-row weights are the library step's).
    max_train_samples : int or None
        Most samples trained on: the first of the seeded shuffle of the ``train_frac`` split;
        the held-out samples stay the rest of the split either way, and ``config`` records
        ``n_train_samples`` (trained on), ``n_train_split`` and ``max_train_samples``. None
        (default): as many as :data:`MAX_TRAIN_BYTES` of rows hold (2,048 samples at Llama 3.1
        8B's shape; no cap for SmolLM2 at any N the course offers).

    Returns
    -------
    AutoencoderFit

    Raises
    ------
    ValueError
        A bad ``train_frac``, ``epochs``, ``batch_size``, ``num_threads``, ``step`` or
        ``max_train_samples``.
    """
    import torch

    acts = _check_acts(acts)
    n, s, d = acts.shape
    if not 0 < train_frac < 1:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be positive")
    if step is not None and (balance_sites or not callable(step)):
        raise ValueError("step must be a callable step(model, opt, xb) -> loss, and cannot be combined with "
                         "balance_sites=True (the site weights belong to the library's own step)")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_train = int(round(train_frac * n))
    if not 1 <= n_train < n:
        raise ValueError(f"train_frac={train_frac} leaves no training or no held-out samples out of {n}")
    if max_train_samples is None:
        cap = max(1, MAX_TRAIN_BYTES // (4 * s * d))
    else:
        cap = check_int(max_train_samples, "max_train_samples")
    n_fit = min(n_train, cap)  # the first of the shuffled training samples: a seeded subset
    train_idx, test_idx = np.sort(perm[:n_fit]), np.sort(perm[n_train:])
    mean, scale = pooled_moments(acts, train_idx)
    m32, s32 = mean.astype(np.float32), scale.astype(np.float32)
    spread = _standardized_site_spread(acts, m32, s32)
    if balance_sites:
        site_w = 1.0 / np.maximum(spread[train_idx].mean(0), 1e-12)
        site_w = site_w / site_w.mean()
    else:
        site_w = np.ones(s)

    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be positive or None, got {num_threads}")
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        fit = _train(torch, (acts, m32, s32), mean, scale, spread, site_w, train_idx, test_idx, latent_dim, hidden,
                     epochs, batch_size, lr, train_frac, balance_sites, seed, device, num_threads,
                     seed if order_seed is None else int(order_seed), step=step)
        fit.config.update(n_train_samples=int(n_fit), n_train_split=int(n_train), max_train_samples=int(cap))
        return fit
    finally:
        torch.set_num_threads(threads_before)


def _train(torch, source, mean, scale, spread, site_w, train_idx, test_idx, latent_dim, hidden, epochs, batch_size,
           lr, train_frac, balance_sites, seed, device, num_threads, order_seed, step=None) -> AutoencoderFit:
    acts, m32, s32 = source  # standardised a block at a time: no full-size copy
    n, s, d = acts.shape
    n_train = len(train_idx)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(order_seed)
    model = build_autoencoder(d, latent_dim, hidden).to(device)
    x_train = torch.from_numpy(_standardized_rows(acts, train_idx, m32, s32)).to(device)
    w_train = torch.from_numpy(np.tile(site_w, n_train).astype(np.float32)).to(device)
    n_rows = x_train.shape[0]
    steps_per_epoch = -(-n_rows // batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.1)
    losses = np.empty(epochs)
    t0 = time.perf_counter()
    model.train()
    for e in range(epochs):
        order = torch.randperm(n_rows, generator=gen).to(device)
        total = 0.0
        for k in range(steps_per_epoch):
            b = order[k * batch_size : (k + 1) * batch_size]
            xb = x_train[b]
            if step is None:  # forward, MSE loss (weighted per site), backward, step
                err = ((model(xb) - xb) ** 2).mean(1)
                loss = (err * w_train[b]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            else:  # a learner's step (check_training_step)
                loss = step(model, opt, xb)
                loss = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
            sched.step()
            total += loss.item() * len(b)
        losses[e] = total / n_rows
    seconds = time.perf_counter() - t0
    model.eval()
    lats, sqs = [], []
    del x_train
    with torch.no_grad():
        for _sl, rows in _standardized_row_blocks(acts, m32, s32, 3 * 4 * d):  # the reconstruction, by blocks
            xa = torch.from_numpy(np.ascontiguousarray(rows)).to(device)
            lat = model.encoder(xa)
            lats.append(lat)
            sqs.append(((model.decoder(lat) - xa) ** 2).sum(1))
        lat, sq = torch.cat(lats), torch.cat(sqs)
    model = model.cpu()
    config = dict(latent_dim=latent_dim, hidden=tuple(hidden), activation="GELU", epochs=epochs,
                  batch_size=batch_size, lr=lr, optimizer="Adam, one-cycle schedule",
                  train_frac=train_frac, balance_sites=balance_sites, seed=seed, device=device,
                  num_threads=num_threads, n_train_rows=n_rows, order_seed=order_seed)
    return AutoencoderFit(latent=lat.cpu().numpy().reshape(n, s, latent_dim).astype(np.float64),
                          sq_error=sq.cpu().numpy().reshape(n, s).astype(np.float64), spread=spread,
                          train_idx=train_idx, test_idx=test_idx, loss=losses, mean=mean, scale=scale,
                          config=config, seconds=seconds, model=model)


def site_nmse(
    sq_error: np.ndarray,
    spread: np.ndarray,
    idx: np.ndarray | None = None,
    n_boot: int = 0,
    seed: int = 0,
):
    """Normalised reconstruction error per site, with a bootstrap over samples.

    :math:`\\mathrm{NMSE}_s = \\sum_{i} e_{is} / \\sum_{i} v_{is}`, with :math:`e` the squared
    error of sample i at site s and :math:`v` its squared distance to the site mean. 0 is a
    perfect reconstruction, 1 is as good as predicting the site's mean.

    Parameters
    ----------
    sq_error, spread : ndarray of shape (n_samples, n_sites)
    idx : ndarray of int, optional
        Samples to use (e.g. the held-out ones; default all).
    n_boot : int
        Bootstrap resamples of those samples (0: none).
    seed : int

    Returns
    -------
    nmse : ndarray of shape (n_sites,)
    boot : ndarray of shape (n_boot, n_sites)
    """
    e = check_array(sq_error, "sq_error").astype(np.float64, copy=False)
    v = check_array(spread, "spread").astype(np.float64, copy=False)
    if e.ndim != 2 or e.shape != v.shape:
        raise ValueError(f"sq_error and spread must both have shape (n_samples, n_sites), got {e.shape} and {v.shape}")
    idx = _check_idx(idx, e.shape[0])
    e, v = e[idx], v[idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        nmse = e.sum(0) / v.sum(0)
        if n_boot:
            m = len(idx)
            w = np.random.default_rng(seed).multinomial(m, np.full(m, 1 / m), size=n_boot).astype(float)
            boot = (w @ e) / (w @ v)
        else:
            boot = np.empty((0, e.shape[1]))
    return nmse, boot


def thirds(n_sites: int, frac: float = 1 / 3) -> tuple[slice, slice]:
    """The early and late thirds of the site axis: ``(slice(0, t), slice(n_sites - t, n_sites))``
    with ``t = n_sites // 3`` (20 of 60 sites for SmolLM2, 21 of 64 for Llama 3.1 8B).

    ``frac`` (default 1/3) takes another share of the sites at each end instead: ``t =
    int(n_sites · frac)`` (``frac=1/4``: quarters, 15 of 60 sites), at least 1."""
    if not 0 < frac <= 0.5:
        raise ValueError(f"frac must lie in (0, 0.5], got {frac}")
    if n_sites < 3:
        raise ValueError(f"need at least 3 sites to split into thirds, got {n_sites}")
    t = n_sites // 3 if frac == 1 / 3 else max(1, int(n_sites * frac + 1e-9))
    return slice(0, t), slice(n_sites - t, n_sites)


def early_minus_late(values: np.ndarray, frac: float = 1 / 3) -> np.ndarray:
    """Mean over the early third of sites minus the mean over the late third.

    Parameters
    ----------
    values : ndarray of shape (..., n_sites)
    frac : float in (0, 0.5], default 1/3
        The share of the sites at each end (:func:`thirds`).

    Returns
    -------
    ndarray of shape (...)
    """
    values = check_array(values, "values", min_ndim=1).astype(np.float64, copy=False)
    early, late = thirds(values.shape[-1], frac)
    return values[..., early].mean(-1) - values[..., late].mean(-1)


# --------------------------------------------------------------------------- curvature


def path_length_ratio(traj: np.ndarray) -> np.ndarray:
    """Length of a path divided by its chord (first to last point): 1 for a straight,
    monotone path; larger for a bent or back-tracking one.

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites, n_dims)

    Returns
    -------
    ndarray of shape (...)
    """
    traj = _check_path(traj)
    length = np.linalg.norm(np.diff(traj, axis=-2), axis=-1).sum(-1)
    chord = np.linalg.norm(traj[..., -1, :] - traj[..., 0, :], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return length / chord


def bend_ratio(traj: np.ndarray) -> np.ndarray:
    """How far a path bows away from its chord: the largest distance of a point from the
    straight line through the first and last points, divided by the chord's length.

    0 for a straight path, 0.5 for a half circle, about 0.21 for a quarter circle. Invariant
    to rotation, translation and scaling of the path, not to non-linear warps.

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites, n_dims)

    Returns
    -------
    ndarray of shape (...)
    """
    traj = _check_path(traj)
    rel = traj - traj[..., :1, :]
    chord = rel[..., -1, :]
    clen = np.linalg.norm(chord, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = chord / clen[..., None]
        along = np.einsum("...sk,...k->...s", rel, u)
        perp = np.linalg.norm(rel - along[..., None] * u[..., None, :], axis=-1)
        return perp.max(-1) / clen


def turning_angles(traj: np.ndarray, step: int = 1) -> np.ndarray:
    """Angle (degrees) between successive displacements of a path.

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites, n_dims)
    step : int
        Sites per displacement: 2 compares whole layers (resid_pre l → resid_pre l+1), so
        the alternation between attention and MLP writes does not count as turning.

    Returns
    -------
    ndarray of shape (..., m - 2) with ``m = len(range(0, n_sites, step))``
        Entry k is the turn at point k + 1 of the subsampled path (0: straight on, 180:
        reversal); NaN where a displacement is zero.
    """
    traj = _check_path(traj)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    p = traj[..., ::step, :]
    if p.shape[-2] < 3:
        raise ValueError(f"need at least 3 points after subsampling by step={step}, got {p.shape[-2]}")
    v = np.diff(p, axis=-2)
    a, b = v[..., :-1, :], v[..., 1:, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def mean_trajectory_bootstrap(traj: np.ndarray, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Mean trajectories of bootstrap resamples of the samples.

    Parameters
    ----------
    traj : ndarray of shape (n_samples, n_sites, n_dims)
    n_boot : int
    seed : int

    Returns
    -------
    ndarray of shape (n_boot, n_sites, n_dims)
    """
    traj = check_array(traj, "traj").astype(np.float64, copy=False)
    if traj.ndim != 3:
        raise ValueError(f"traj must have shape (n_samples, n_sites, n_dims), got {traj.shape}")
    if n_boot < 1:
        raise ValueError("n_boot must be positive")
    n = traj.shape[0]
    w = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=n_boot) / n
    return (w @ traj.reshape(n, -1)).reshape(n_boot, *traj.shape[1:])


def site_shuffle_null(
    path: np.ndarray,
    stat: Callable[[np.ndarray], np.ndarray] = path_length_ratio,
    n_perm: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """``stat`` of the path with its sites put in random orders: what the statistic is when
    depth carries no order.

    Parameters
    ----------
    path : ndarray of shape (n_sites, n_dims)
    stat : callable
        Maps ``(..., n_sites, n_dims)`` to ``(...)`` (e.g. :func:`path_length_ratio`).
    n_perm : int
    seed : int

    Returns
    -------
    ndarray of shape (n_perm,)
    """
    path = _check_path(path, "path")
    if path.ndim != 2:
        raise ValueError(f"path must have shape (n_sites, n_dims), got {path.shape}")
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(np.arange(path.shape[0]), (n_perm, 1)), axis=1)
    return np.asarray(stat(path[perms]))


# --------------------------------------------------------------------------- the chapter


@dataclass(frozen=True)
class LowDim:
    """Everything the chapter computes for one run (see :func:`analyse`).

    Attributes
    ----------
    label : str
        The run's model label.
    sites : list of str, length n_sites
    pca : PooledPCA
        Pooled PCA (``n_pcs`` components, default 10), fitted on the autoencoder's training
        samples.
    ae : AutoencoderFit
        The compressing autoencoder (2-D latent).
    pca_nmse, ae_nmse : ndarray of shape (n_sites,)
        Held-out NMSE per site of the reconstruction from the first 2 PCs and from the
        autoencoder.
    ae_nmse_boot : ndarray of shape (n_boot, n_sites)
    raw, std : SiteSpectra
        Per-site spectra of the raw and per-site-standardised states.
    latent_mean : ndarray of shape (n_sites, 2)
        Mean latent trajectory (held-out samples).
    latent_mean_boot : ndarray of shape (n_boot, n_sites, 2)
    pc_mean : ndarray of shape (n_sites, n_pcs)
        Mean trajectory in PC space (held-out samples); ``pc_mean[:, :2]`` is the PC1–PC2 path.
    """

    label: str
    sites: list
    pca: PooledPCA
    ae: AutoencoderFit
    pca_nmse: np.ndarray
    ae_nmse: np.ndarray
    ae_nmse_boot: np.ndarray
    raw: SiteSpectra
    std: SiteSpectra
    latent_mean: np.ndarray
    latent_mean_boot: np.ndarray
    pc_mean: np.ndarray


@cached
def analyse(run, n_boot: int = 1000, seed: int = 0, n_pcs: int = 10, ae_seed: int | None = None,
            spectra: tuple[SiteSpectra, SiteSpectra] | None = None, device: str = "cpu", **ae_kwargs) -> LowDim:
    """Run the chapter's analysis on one :class:`~tdcourse.capture.Activations`.

    Trains the autoencoder (:func:`train_autoencoder` with ``ae_kwargs``), fits an
    ``n_pcs``-component pooled PCA on the same training samples, reads the held-out NMSE per
    site of the autoencoder and of the first two PCs, computes raw and standardised per-site
    spectra, and bootstraps the mean latent path.

    ``ae_seed`` (default: ``seed``) seeds the autoencoder alone (its train / held-out split,
    initial weights and minibatch order), the bootstraps keep ``seed``. ``spectra``: the
    ``(raw, std)`` of :func:`site_spectra_both` on this run with ``n_boot`` and ``seed``,
    computed already (they do not depend on the autoencoder), reused instead of computed again.
    ``device``: the autoencoder's torch device (:func:`train_autoencoder`).

    The result is kept in the cache and read back by later calls with the same run and
    arguments (:func:`tdcourse.memo.cached`): the scoreboard, the book and the tests share it.
    """
    if n_pcs < 2:
        raise ValueError(f"n_pcs must be at least 2, got {n_pcs}")
    acts = _check_acts(run.acts, "run.acts")
    check_run_size(acts, MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)
    ae = train_autoencoder(acts, seed=seed if ae_seed is None else ae_seed, device=device, **ae_kwargs)
    raw, std = spectra if spectra is not None else site_spectra_both(acts, n_boot=n_boot, seed=seed)
    pca = pooled_pca(acts, n_pcs, fit_idx=ae.train_idx, seed=seed)
    pca_nmse, _ = site_nmse(pca.sq_error(acts, k=2), ae.spread, ae.test_idx)
    ae_nmse, ae_boot = ae.nmse(n_boot=n_boot, seed=seed)
    held = ae.latent[ae.test_idx]
    return LowDim(
        label=run.label, sites=list(run.sites), pca=pca, ae=ae, pca_nmse=pca_nmse, ae_nmse=ae_nmse,
        ae_nmse_boot=ae_boot,
        raw=raw, std=std,
        latent_mean=held.mean(0), latent_mean_boot=mean_trajectory_bootstrap(held, n_boot, seed),
        pc_mean=pca.scores[ae.test_idx].mean(0),
    )


#: The threshold of "curved" (C11), fixed before looking at any result: the mean latent path
#: bows away from its chord by more than this fraction of the chord's length.
BEND_THRESHOLD = 0.1


def _ci(boot: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    boot = np.asarray(boot, dtype=float)
    boot = boot[np.isfinite(boot)]
    return float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))


#: What C11's path and C12's reconstruction are read from (:func:`verdicts`' ``latent`` and
#: ``reconstruction``): the chapter's 2-D autoencoder, or the first two PCs of the pooled PCA.
CODES = ("autoencoder", "pca")

_PARTS = {1 / 3: "third", 1 / 4: "quarter", 1 / 5: "fifth", 1 / 2: "half"}


def verdicts(run, chapter: str = "06_low_dimensional", result: LowDim | None = None,
             n_boot: int = 1000, seed: int = 0, bend_threshold: float = BEND_THRESHOLD,
             latent: str = "autoencoder", reconstruction: str = "autoencoder", part: float = 1 / 3,
             n_frac: float | None = None) -> list[Verdict]:
    """The chapter's verdicts on C11 and C12 for one run.

    Parameters
    ----------
    run : Activations
    chapter : str
        Notebook file stem, stored in each verdict.
    result : LowDim, optional
        A result of :func:`analyse` for this run (computed here if absent: it trains the
        autoencoder).
    n_boot, seed : as for :func:`analyse`
    bend_threshold : float > 0, default :data:`BEND_THRESHOLD`
        C11: how far (share of the chord) the path must bow to count as curved.
    latent : {"autoencoder", "pca"}, default "autoencoder"
        C11: the mean path in the autoencoder's latent plane, or in the plane of the first two
        PCs of the pooled PCA (a linear 2-D code: is the curve the autoencoder's doing?).
    reconstruction : {"autoencoder", "pca"}, default "autoencoder"
        C12 (error): reconstruct from the autoencoder's 2-D latent, or from the first two PCs.
    part : float in (0, 0.5], default 1/3
        C12 (both readings): the share of the sites at each end compared (:func:`thirds`;
        1/4 compares quarters).
    n_frac : float in (0, 1] or None
        C12 (dimension): the variance share for the PC count (None: the spectra's own, 0.9).

    Returns
    -------
    list of Verdict
        C11 (curved latent path), C12 (reconstruction error early > late), C12 (late sites
        lower-dimensional).

    Criteria (fixed before looking at results):

    * **C11** agrees if the mean latent path of the held-out samples bows away from its
      chord by more than :data:`BEND_THRESHOLD` of the chord (bootstrap 95 % lower bound
      above it) *and* is ordered by depth (its length/chord ratio below the 5th percentile
      of a site-shuffle null); partly if only the point estimate passes the threshold.
    * **C12 (error)** agrees if the held-out autoencoder NMSE is higher in the early third
      of sites than in the late third, the bootstrap 95 % interval of the difference above
      0; partly if the point estimate is positive but the interval includes 0.
    * **C12 (dimension)** agrees if the late third has a lower participation ratio (95 %
      interval of early − late above 0, from the block-bootstrap standard error, see
      :func:`se_interval`) *and* fewer PCs for 90 % of the variance, in both the raw and
      the per-site standardised spectra; partly if that holds in one of the two.
    """
    check_run_size(_check_acts(run.acts, "run.acts"), MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)
    if not bend_threshold > 0:
        raise ValueError(f"bend_threshold must be positive, got {bend_threshold}")
    for name, value in (("latent", latent), ("reconstruction", reconstruction)):
        if value not in CODES:
            raise ValueError(f"{name} must be one of {CODES}, got {value!r}")
    if not 0 < part <= 0.5:
        raise ValueError(f"part must lie in (0, 0.5], got {part}")
    if n_frac is not None and not 0 < n_frac <= 1:
        raise ValueError(f"n_frac must lie in (0, 1], got {n_frac}")
    res = result if result is not None else analyse(run, n_boot=n_boot, seed=seed)
    label = run.label
    out: list[Verdict] = []
    part_name = _PARTS.get(part, f"{part:.0%}")

    # C11: curved latent path
    if latent == "autoencoder":
        path, path_boot, where = res.latent_mean, res.latent_mean_boot, "mean latent path"
    else:
        held = res.pca.scores[res.ae.test_idx][..., :2]
        path, path_boot = held.mean(0), mean_trajectory_bootstrap(held, n_boot, seed)
        where = "mean path in the plane of PC1 and PC2 (instead of the autoencoder's latent)"
    bend = float(bend_ratio(path))
    bend_lo, bend_hi = _ci(bend_ratio(path_boot))
    plr = float(path_length_ratio(path))
    null = site_shuffle_null(path, path_length_ratio, n_perm=1000, seed=seed)
    p_order = stats.permutation_pvalue(plr, null, alternative="less")
    ordered = p_order < 0.05
    out.append(judge(
        "C11", "A 2-D compressing autoencoder gives a curved latent trajectory over depth.",
        f"{where} (held-out samples) bows from its chord by > {bend_threshold:g} of the chord "
        "(bootstrap 95 % lower bound) and is ordered by depth (length/chord below a site-shuffle null, p < 0.05)",
        label, bend, agrees=bend_lo > bend_threshold and ordered, partly=bend > bend_threshold,
        uncertainty=(f"bend 95 % CI [{bend_lo:.3g}, {bend_hi:.3g}] (bootstrap over samples); length/chord "
                     f"{plr:.3g} vs shuffled sites median {np.median(null):.3g}, p = {p_order:.3g}"),
        detail="value = largest distance of the mean latent path from its chord / chord length "
               "(0 straight, 0.5 half circle)", chapter=chapter))

    # C12: reconstruction error early vs late
    if reconstruction == "autoencoder":
        nmse, nmse_boot, code = res.ae_nmse, res.ae_nmse_boot, "the 2-D autoencoder"
    else:
        nmse, nmse_boot = site_nmse(res.pca.sq_error(run.acts, k=2), res.ae.spread, res.ae.test_idx, n_boot=n_boot,
                                    seed=seed)
        code = "the first 2 PCs (instead of the autoencoder)"
    diff = float(early_minus_late(nmse, part))
    d_lo, d_hi = _ci(early_minus_late(nmse_boot, part))
    early, late = thirds(len(nmse), part)
    out.append(judge(
        "C12", "Early layers are harder to reconstruct from the autoencoder's 2-D latent.",
        f"held-out NMSE of {code}, mean over the early {part_name} of sites minus the late {part_name}, "
        "bootstrap 95 % CI above 0",
        label, diff, agrees=d_lo > 0, partly=diff > 0,
        uncertainty=f"95 % CI [{d_lo:.3g}, {d_hi:.3g}] (bootstrap over held-out samples)",
        detail=(f"NMSE early {part_name} {np.mean(nmse[early]):.3g}, late {part_name} {np.mean(nmse[late]):.3g} "
                f"(1 = no better than the site mean); medians over sites: early {np.median(nmse[early]):.3g}, "
                f"late {np.median(nmse[late]):.3g}"), chapter=chapter))

    # C12: late sites lower-dimensional
    passes, parts = [], []
    share = res.raw.frac if n_frac is None else n_frac
    n_name = f"n{100 * share:g}"
    for name, sp in (("raw", res.raw), ("standardised", res.std)):
        d_pr = float(early_minus_late(sp.pr, part))
        lo, hi = (float(v) for v in se_interval(d_pr, early_minus_late(sp.pr_boot, part)))
        counts = sp.n90 if share == sp.frac else n_components_for(sp.eigvals, share)
        d_n = float(early_minus_late(counts, part))
        passes.append(lo > 0 and d_n > 0)
        parts.append(f"{name}: PR early − late {d_pr:.3g} [95 % CI {lo:.3g}, {hi:.3g}], "
                     f"{n_name} early − late {d_n:.3g}")
    value = float(early_minus_late(res.raw.pr, part))
    out.append(judge(
        "C12", "Later layers become lower-dimensional.",
        f"late {part_name} of sites has a lower participation ratio (95 % CI of early − late above 0, block-bootstrap "
        f"SE) and fewer PCs for {100 * share:g} % of variance, in both raw and per-site standardised spectra",
        label, value, agrees=all(passes), partly=any(passes),
        uncertainty="; ".join(parts),
        detail=f"value = raw participation ratio, early-{part_name} mean minus late-{part_name} mean (> 0: late is "
               "lower-dimensional)",
        chapter=chapter))
    return out


# --------------------------------------------------------------------------- what we found


def _seed_sentence(rb, claim: str = "C11") -> str:
    """How a verdict moves with the autoencoder's seed, from the robustness page's record ``rb``
    (:func:`tdcourse.robustness.for_runs`); "" when there is nothing to say.

    Reads both forms of the record: one that lists the seeds it computed (``rb.seeds``, with the
    ones that change the outcome in ``rb.unstable``), and one that counts specifications
    (``rb.n``, ``rb.same``), read as seeds only where every alternative of ``claim`` on the
    robustness page is another autoencoder seed.
    """
    if rb is None:
        return ("How this outcome moves with the autoencoder's seed has not been computed for these captures "
                "(the robustness page computes it for the captures the book is built from).")
    seeds = getattr(rb, "seeds", None)
    if seeds is not None:
        if not seeds:
            return ""
        unstable = tuple(getattr(rb, "unstable", ()) or ())
        k = len(seeds)
        if not unstable:
            return (f"It does not rest on one seed: the autoencoder retrained with {k} other "
                    f"seed{'' if k == 1 else 's'} gives '{rb.primary}' every time.")
        return (f"It hangs on the autoencoder's seed: retrained with {k} other seed{'' if k == 1 else 's'}, "
                f"the outcome changes with {', '.join(unstable)}.")
    from . import robustness

    alternatives = [s for s in robustness.SPECS if s.claim == claim and not s.primary]
    n, same = getattr(rb, "n", 0), getattr(rb, "same", 0)
    if not alternatives or not all("ae_seed" in s.compute for s in alternatives) or n != len(alternatives) + 1:
        return ""
    if same == n:
        return (f"It does not rest on one seed: the autoencoder retrained with {n - 1} other seeds gives "
                f"'{rb.primary}' every time.")
    return (f"It hangs on the autoencoder's seed: '{rb.primary}' holds for {same} of {n} seeds "
            f"(the chapter's and {n - 1} others).")


def findings_notes(runs, by_run: dict, results: dict, curvature, robustness=None) -> list[str]:
    """Chapter 6's "what we found", as sentences computed from its results.

    Parameters
    ----------
    runs : list of Activations
        The trained run first, then the random-init control (if any; told apart by
        :func:`tdcourse.verdicts.run_kind`).
    by_run : dict
        ``{run.label: [C11, C12 error, C12 dimension]}`` from :func:`verdicts`.
    results : dict
        ``{run.label: LowDim}`` from :func:`analyse`.
    curvature : pandas.DataFrame
        The chapter's curvature table: columns ``model``, ``space``, ``bend``.
    robustness : mapping, optional
        ``{(claim row, model label): Robustness}`` from :func:`tdcourse.robustness.for_runs`:
        how C11 moves with the autoencoder's seed is said from it.

    Returns
    -------
    list of str
        C11, C12 (error reading), C12 (dimension reading) against the paper, each with its own
        sentence of the paper, then the control's verdicts read as a control.
    """
    from .verdicts import run_kind, run_label

    trained = runs[0].label
    ctrl = next((r.label for r in runs[1:] if run_kind(r.label) == "control"), None)
    c11, c12_err, c12_dim = by_run[trained]
    r = results[trained]
    bends = curvature.set_index(["model", "space"])["bend"]
    ten = f"PC1–PC{r.pc_mean.shape[1]}"
    b2, b10 = float(bends[(trained, "PC1–PC2")]), float(bends[(trained, ten)])

    # C11
    c11_text = (f"C11. The paper: in a 2-D latent the stream follows a curved path. Ours, trained: the mean latent "
                f"path bows from its chord by {c11.value:.3f} of the chord ({c11.outcome}; threshold "
                f"{BEND_THRESHOLD:g}); {c11.uncertainty}. The same mean path bends {b2:.3f} in PC1–PC2 and "
                f"{b10:.3f} in {ten}")
    if ctrl:
        c10 = float(bends[(ctrl, ten)])
        c11_text += (f" ({c10:.3f} for the random-init control: "
                     f"{'less' if c10 < b10 else 'more'} than the trained model)")
    c11_text += "."
    if b10 > BEND_THRESHOLD >= c11.value:
        c11_text += (f" So the stream's mean path does bend in {ten}, and the squeeze into two dimensions "
                     "straightens it.")
    spread = r.ae.spread[r.ae.test_idx].sum(0)
    _, last = thirds(len(spread))
    share = float(spread[last].sum() / spread.sum())
    c11_text += (f" Pooled over all sites, the last third of the sites holds {share:.0%} of the spread of the "
                 "held-out rows" + (", so a 2-D code spends its two directions mostly on them." if share > 0.5
                                    else "."))
    seed = _seed_sentence(robustness.get(("C11", trained))) if robustness is not None else ""
    if seed:
        c11_text += " " + seed

    # C12, error reading
    nmse = r.ae_nmse
    early, late = thirds(len(nmse))
    gap = float(early_minus_late(nmse))
    err_text = (f"C12, error reading. The paper: early layers are harder to reconstruct from the 2-D latent. Ours, "
                f"trained: early-third minus late-third NMSE = {gap:.3g} ({c12_err.outcome}); "
                f"{c12_err.detail.rstrip('.')}.")
    if gap > 0 and len(nmse[early]) > 2:
        gap_wo = float(np.mean(nmse[early][2:]) - np.mean(nmse[late]))
        err_text += (f" Leaving out sites 0 and 1 (NMSE {nmse[0]:.3g} and {nmse[1]:.3g}) removes "
                     f"{min(max(1 - gap_wo / gap, 0), 1):.0%} of that gap: without them the first third's mean "
                     f"NMSE {'exceeds' if gap_wo > 0 else 'falls below'} the last third's by {abs(gap_wo):.3g}.")
    if ctrl:
        cv = by_run[ctrl][1]
        err_text += f" The random-init control: {cv.outcome} ({cv.value:.3g})"
        err_text += ("; it shows the same outcome, so the gap comes with the architecture and the pooled loss "
                     "(late sites spread most), not with training." if cv.outcome == c12_err.outcome else ".")

    # C12, dimension reading
    dim_text = (f"C12, dimension reading. The paper: later layers become lower-dimensional. Ours, trained: "
                f"{c12_dim.outcome}; {c12_dim.uncertainty}.")
    raw = r.raw
    pr_e, pr_l = float(np.mean(raw.pr[early])), float(np.mean(raw.pr[late]))
    if c12_dim.outcome == "disagrees":
        dim_text += (f" Here SmolLM2 disagrees with the paper: its raw participation ratio "
                     f"{'rises' if pr_l > pr_e else 'does not fall'} from {pr_e:.3g} (first third) to "
                     f"{pr_l:.3g} (last third).")
    low = int(np.argmin(raw.pr))
    x = streaming.read(runs[0].acts, np.s_[:, low], np.float64)  # plain reads, not the memory map
    var = x.var(axis=0)
    top = float(var.max() / var.sum())
    dim_text += (f" The lowest raw PR is at site {low} ({runs[0].sites[low]}, PR {raw.pr[low]:.3g}), where "
                 + (f"one unit holds {top:.0%} of the variance across samples." if top >= 0.25 else
                    f"no unit holds more than {top:.0%} of the variance across samples."))
    if ctrl:
        cv = by_run[ctrl][2]
        rc = results[ctrl].raw
        dim_text += (f" The random-init control: {cv.outcome}; raw PR {np.mean(rc.pr[early]):.3g} (first third) → "
                     f"{np.mean(rc.pr[late]):.3g} (last third)")
        if cv.outcome in ("agrees", "partly") and c12_dim.outcome == "disagrees":
            dim_text += (": the untrained architecture gets lower-dimensional with depth, and training "
                         "removes it.")
        else:
            dim_text += "."
    med_e, med_l = float(np.median(nmse[early])), float(np.median(nmse[late]))
    dim_text += (f" Read as 'rebuilt better from the 2-D code' instead, the trained model's last third has a "
                 f"median NMSE of {med_l:.3g} against {med_e:.3g} for the first third")
    if ctrl:
        cn = results[ctrl].ae_nmse
        dim_text += f" (control: {np.median(cn[late]):.3g} against {np.median(cn[early]):.3g})"
    dim_text += "."
    out = [c11_text, err_text, dim_text]

    if ctrl:
        names = ("C11", "C12 (error reading)", "C12 (dimension reading)")
        same = [a.outcome == b.outcome for a, b in zip(by_run[trained], by_run[ctrl])]
        out.append(f"The {run_label(ctrl)}: "
                   + "; ".join(f"{n} {v.outcome} ({v.value:.3g})" for n, v in zip(names, by_run[ctrl])) + ". "
                   f"Outcomes it shares with the trained model: {sum(same)} of {len(same)} (a shared outcome comes "
                   "with the architecture and the scale of the stream, not with training).")
    return out


# --------------------------------------------------------------------------- exercise checks


def _pr_of(ev: np.ndarray) -> float:
    return float(ev.sum() ** 2 / (ev**2).sum())


def _centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean(0)


#: Usual wrong versions of the participation ratio of a data matrix ``x`` (n_samples, n_units),
#: each with what it does wrong in the learner's words (:func:`check_participation_ratio`).
_PR_MISTAKES: tuple[tuple[str, Callable[[np.ndarray], float]], ...] = (
    ("the samples are not centred: the eigenvalues of xᵀx (the second moments) count the mean as a "
     "direction of variance; subtract x.mean(axis=0) first",
     lambda x: _pr_of(np.linalg.eigvalsh(x.T @ x))),
    ("PR from the singular values s of x, not their squares: the covariance's eigenvalues are "
     "λ = s² / (n − 1)",
     lambda x: _pr_of(np.linalg.svd(_centred(x), compute_uv=False))),
    ("PR from the singular values of x, neither squared nor centred",
     lambda x: _pr_of(np.linalg.svd(x, compute_uv=False))),
    ("the ratio is upside down: PR = (Σλ)² / Σλ², not Σλ² / (Σλ)²",
     lambda x: 1 / _pr_of(np.linalg.eigvalsh(np.cov(x.T)))),
    ("the covariance is taken over the wrong axis: np.cov(x) treats each sample as a variable; "
     "np.cov(x.T) (or x.T @ x of the centred x) is the units' covariance across samples",
     lambda x: _pr_of(np.linalg.eigvalsh(np.cov(x)))),
    ("the correlation matrix (units standardised) instead of the covariance",
     lambda x: _pr_of(np.linalg.eigvalsh(np.corrcoef(x.T)))),
)


def _pr_cases() -> list[tuple[str, np.ndarray]]:
    """Data matrices (n_samples, n_units) chosen so that every mistake above changes the answer
    (tests/test_lowdim.py checks that each one is rejected)."""
    rng = np.random.default_rng(0)

    def white(n, k):  # k columns of exactly mean 0, variance 1, uncorrelated
        q = np.linalg.qr(_centred(rng.standard_normal((n, k))))[0]
        return q * np.sqrt(n - 1)

    w = white(200, 2)
    return [
        ("8 uncorrelated units of variance 1 around a mean of 2 (PR = 8)", white(200, 8) + 2.0),
        ("data on one line in 20-D, off the origin (PR = 1)",
         rng.standard_normal((100, 1)) @ rng.standard_normal((1, 20)) + 3.0),
        ("variances 9, 1 and 0 (PR = 100/82 ≈ 1.22)", np.c_[3 * w[:, 0], w[:, 1], np.zeros(200)]),
        ("6 units of unequal variance, mean far from 0",
         rng.standard_normal((150, 6)) * [4, 2, 1, 1, 0.5, 0.5] + [10, -5, 3, 0, 8, 1]),
        ("30 samples of 50 units (fewer samples than units)",
         rng.standard_normal((30, 50)) * np.linspace(3, 0.1, 50) + 2.0),
    ]


def check_participation_ratio(fn: Callable[[np.ndarray], Any]) -> bool:
    """Check a learner's participation ratio against :func:`participation_ratio`.

    ``fn(x) -> float`` takes a data matrix ``x`` of shape (n_samples, n_units), the states of
    one site, and returns :math:`(\\sum\\lambda)^2 / \\sum\\lambda^2` of the eigenvalues
    :math:`\\lambda` of the covariance of the centred samples. Runs it on fixed matrices
    (isotropic, one line, a spectrum 9:1:0, means far from 0, fewer samples than units),
    compares with the library (relative 1e-6), prints one ✓ / ✗ line per case and, where the
    answers are those of a usual mistake, which one: samples not centred; singular values of
    ``x`` instead of their squares; the ratio upside down; the covariance over the wrong axis;
    the correlation matrix. Never raises on the learner's bug: it is reported.

    Returns
    -------
    bool
        Whether every case passed.

    Source: Gao et al. 2017 (the participation ratio); the chapter's per-site spectra
    (:func:`site_spectra`).
    """
    cases = _pr_cases()
    want = [float(participation_ratio(np.linalg.eigvalsh(np.cov(x.T)).clip(min=0))) for _, x in cases]
    results = [run_case(desc, lambda x: float(fn(x)), (x,), w, rtol=1e-6, atol=0)
               for (desc, x), w in zip(cases, want)]
    hint = ""
    if not all(ok for _, ok, _ in results):
        fit = which_mistake(lambda x: float(fn(x)), [(x,) for _, x in cases], _PR_MISTAKES, rtol=1e-6, atol=0)
        hint = f"Your PR looks like this usual mistake: {fit}." if fit else ""
    return report(results, hint=hint)


#: The training loop of :func:`check_training_step`: small enough for a second on a CPU. The
#: minibatch size is chosen per case, for about 15 steps per epoch.
_LOOP = dict(epochs=3, hidden=(64, 16), seed=0, device="cpu")
_STEPS_PER_EPOCH = 15


def _step_mistakes(torch):
    """Usual wrong training steps ``step(model, opt, xb) -> loss``, with what each does wrong."""

    def loss_of(model, xb):
        return ((model(xb) - xb) ** 2).mean()

    def no_zero_grad(model, opt, xb):
        loss = loss_of(model, xb)
        loss.backward()
        opt.step()
        return loss

    def no_step(model, opt, xb):  # the weights never change (as without backward, or zero_grad after it)
        loss = loss_of(model, xb)
        opt.zero_grad()
        loss.backward()
        return loss

    def summed(model, opt, xb):
        loss = ((model(xb) - xb) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return (
        ("opt.zero_grad() is never called: each loss.backward() adds its gradient to the ones "
         "before, so every step follows the sum of all gradients so far", no_zero_grad),
        ("the weights never change: opt.step() is never called, or it finds no gradient "
         "(loss.backward() missing, or opt.zero_grad() placed between loss.backward() and "
         "opt.step())", no_step),
        ("the loss is the sum of the squared errors, not their mean (MSE)", summed),
    )


def _plane_rows(n: int = 80, s: int = 6, d: int = 16, seed: int = 0) -> np.ndarray:
    """States (n, s, d) on a 2-D plane plus a little noise: what a 2-D latent can hold."""
    rng = np.random.default_rng(seed)
    coef = rng.standard_normal((n, s, 2)) + np.linspace(-2, 2, s)[None, :, None]
    return (coef @ rng.standard_normal((2, d)) + 0.02 * rng.standard_normal((n, s, d))).astype(np.float32)


def check_training_step(fn: Callable[[Any, Any, Any], Any], acts: np.ndarray | None = None) -> bool:
    """Check a learner's training step against the library's :func:`train_autoencoder`.

    ``fn(model, opt, xb) -> loss`` makes one optimisation step of the autoencoder on the
    minibatch ``xb`` (a float32 tensor of shape (batch, d_model), standardised states): the
    forward pass, the MSE loss, ``opt.zero_grad()``, ``loss.backward()``, ``opt.step()``; it
    returns the loss. The check trains the same network twice with the same seed, data,
    minibatch order, Adam optimiser and learning-rate schedule (:func:`train_autoencoder`, 3
    epochs of about 15 minibatches each): once with the library's own step, once with ``fn``
    (``train_autoencoder(..., step=fn)``). The mean training loss of each epoch and the
    held-out NMSE per site must agree within 1e-3 (relative). It prints one ✓ / ✗ line per
    case and, where the answers are those of a usual mistake, which one: ``opt.zero_grad()``
    never called (the gradients pile up); weights that never change (``opt.step()`` or
    ``loss.backward()`` never called, or ``zero_grad`` between them); the summed instead of
    the mean squared error. Never raises on the learner's bug: it is reported. About a second
    on a CPU for a few dozen samples.

    Parameters
    ----------
    fn : callable
        The learner's step ``fn(model, opt, xb) -> loss``.
    acts : ndarray of shape (n_samples, n_sites, d_model), optional
        Real states to train on as well (a few dozen samples of a capture), after the
        synthetic case (80 samples of 6 sites on a plane in 16 units).

    Returns
    -------
    bool
        Whether every case passed.
    """
    import torch

    cases = [("80 samples × 6 sites on a plane in 16 units", _plane_rows())]
    if acts is not None:
        a = check_array(acts, "acts")
        if a.ndim != 3 or a.shape[0] < 4:
            raise ValueError(f"acts must have shape (n_samples >= 4, n_sites, d_model), got {a.shape}")
        cases.append((f"{a.shape[0]} real samples × {a.shape[1]} sites × {a.shape[2]} units", a))
    train = train_autoencoder.__wrapped__  # trained each time, never read from the analysis cache

    def run(step, x):
        rows = int(round(0.5 * x.shape[0])) * x.shape[1]  # the training rows (half the samples)
        fit = train(x, step=step, batch_size=max(1, -(-rows // _STEPS_PER_EPOCH)), **_LOOP)
        return np.r_[fit.loss, fit.nmse()[0]]  # the loss of each epoch, then the held-out NMSE per site

    results = []
    for desc, x in cases:
        want = run(None, x)
        name = f"{desc}: loss per epoch {np.round(want[:_LOOP['epochs']], 4).tolist()}, then the held-out NMSE per site"
        results.append(run_case(name, lambda x: run(fn, x), (x,), want, rtol=1e-3, atol=1e-6))
    hint = ""
    if not all(ok for _, ok, _ in results):
        fit = which_mistake(lambda x: run(fn, x), [(cases[0][1],)],
                            [(d, lambda x, f=f: run(f, x)) for d, f in _step_mistakes(torch)], rtol=1e-3, atol=1e-6)
        hint = f"Your step looks like this usual mistake: {fit}." if fit else ""
    return report(results, hint=hint)


def check_bend_ratio(fn: Callable[[np.ndarray], Any]) -> bool:
    """Check a learner's ``fn(path) -> float``: the bend ratio of chapter 6's exercise.

    The bend ratio of a path of shape (n_sites, n_dims) is the largest distance of a point from
    the chord (the segment from its first to its last point) divided by the chord's length.
    Runs ``fn`` on a half circle, a quarter circle, a straight line in 3-D and a rotated,
    shifted and scaled half circle; an unfilled template (None, ``...``,
    ``NotImplementedError``) reads "Not written yet".

    Parameters
    ----------
    fn : callable
        ``fn(path)`` with ``path`` of shape (n_sites, n_dims), returning a float.

    Returns
    -------
    bool
        Whether every case matches (within 1e-6); one ✓ / ✗ line per case is printed.
    """
    from .exercises import NOT_WRITTEN, unwritten

    t = np.linspace(0, np.pi, 201)
    half = np.c_[np.cos(t), np.sin(t)]
    q = np.linspace(0, np.pi / 2, 201)
    quarter = np.c_[np.cos(q), np.sin(q)]
    straight = np.c_[np.linspace(0, 3, 10), np.linspace(1, 2, 10), np.zeros(10)]
    rot = np.array([[0.6, -0.8], [0.8, 0.6]])
    cases = [
        ("half circle (0.5)", half, 0.5),
        ("quarter circle (1 - 1/sqrt 2)/sqrt 2 ≈ 0.207", quarter, (1 - 1 / np.sqrt(2)) / np.sqrt(2)),
        ("straight line in 3-D (0)", straight, 0.0),
        ("rotated, shifted, scaled half circle (0.5)", 7 * half @ rot.T + 3, 0.5),
    ]
    out = []
    for name, path, want in cases:
        try:
            value = fn(path)
            if unwritten(value):
                out.append((name, False, NOT_WRITTEN))
                continue
            got = float(value)
            out.append((name, bool(np.isclose(got, want, atol=1e-6)), f"got {got:.4g}, expected {want:.4g}"))
        except Exception as err:  # noqa: BLE001
            out.append((name, False, NOT_WRITTEN if unwritten(err) else f"raised {type(err).__name__}: {err}"))
    return report(out)
