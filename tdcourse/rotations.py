"""Units circle: phase portraits along depth and rotation counts (paper section 2.6, claims C9, C10).

Each unit ``u`` of the residual stream, read at the last token, traces a curve over the
``n_sites`` sites (``resid_pre.0, resid_mid.0, resid_pre.1, …``): its activation ``a_l``.
Treat depth as time and draw the unit in a phase plane:

* ``x_l = a_l − a_0`` (the activation, centred on its first site), and
* ``y_l = ∇a_l − ∇a_0`` with ``∇a`` the derivative along depth (:func:`numpy.gradient`:
  central differences inside, one-sided at both ends).

The **rotation count** ``R`` is the total turning of the curve's tangent, in full turns:
``θ_l = atan2(y_{l+1} − y_l, x_{l+1} − x_l)``, ``Δθ_l = θ_{l+1} − θ_l`` wrapped into
``(−π, π]``, ``R = Σ_l Δθ_l / 2π`` (``n_sites − 2`` turning steps). The centring does not
change ``R`` (only differences enter); it only places the portrait's start at the origin.

The null shuffles the **order of the sites** (one random permutation of the depth axis,
applied to every unit, then ``∇`` is recomputed), as the third-party reimplementation quoted in
``shared/paper.md`` does with 1000 shuffles. Whether the paper takes ``R`` of the mean
trajectory over samples or the mean over samples of per-sample ``R`` is ambiguous: both
readings are here (:func:`unit_trajectories`, :func:`rotation_test`).

Orbit or outward spiral (C10) is decided by the **amplitude growth** of the portrait along
depth (:func:`amplitude_growth`): the spread of the standardised portrait over the last third
of the sites divided by its spread over the first third.

Everything is vectorised over units, shuffles and samples (no Python loop per unit): 1000
shuffles of all 576 SmolLM2-135M units take well under a second (``benchmarks/bench_rotations.py``).

Inputs follow the course's rule (:mod:`tdcourse.checks`): float32 / float64, no NaN or inf, no
float16 (at Llama 3.1 8B's size a float16 array overflows and gave a NaN verdict). One exception
by design: an amplitude growth (:func:`classify_units`) may be NaN (a curve with no amplitude:
"no full turn") or inf (a spiral out of a point). The smallest run that carries a verdict:
:data:`MIN_SAMPLES` = 20 samples (the mean trajectory and the per-sample reading average over
samples; C9 "agreed" from one sample before this check) and :data:`MIN_LAYERS` = 4 layers (the
amplitude growth compares the first and last thirds of the sites, 2 sites each at least, and the
chapter reads R again without the first layer). :func:`analyse` and :func:`verdicts` refuse
smaller runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from . import streaming
from .capture import check_acts
from .exercises import report, run_case, which_mistake
from .checks import check_array, check_run_size
from . import stats
from .memo import cached
from .verdicts import Verdict, judge, say

__all__ = [
    "MIN_SAMPLES",
    "MIN_LAYERS",
    "PAPER_MEAN_R",
    "PAPER_N_SITES",
    "CLASSES",
    "depth_gradient",
    "phase_portrait",
    "turning_angles",
    "rotation_count",
    "unit_trajectories",
    "rms_normalized_mean_trajectories",
    "layer_permutations",
    "shuffled",
    "shuffled_rotation_counts",
    "NULLS",
    "phase_randomized",
    "phase_rotation_counts",
    "rescale_count",
    "prefix_rotation_counts",
    "reference_rotation_counts",
    "amplitude_growth",
    "classify_units",
    "example_units",
    "RotationTest",
    "rotation_test",
    "RotationAnalysis",
    "analyse",
    "reclassify",
    "verdicts",
    "check_rotation_count",
    "check_amplitude_growth",
    "check_cut",
]

#: The mean rotation count quoted for Llama 3.1 8B (second-hand, see ``shared/paper.md`` 2.6).
PAPER_MEAN_R = 10.74
#: Sites in the paper's model (2 × 32 layers).
PAPER_N_SITES = 64
#: The unit classes of :func:`classify_units`, in display order.
CLASSES = ("orbit", "outward spiral", "inward spiral", "no full turn")

# Elements (curves × sites) processed at once: a few MB, so the temporaries stay in cache.
_CHUNK = 1 << 17


# --------------------------------------------------------------------------- validation


#: The fewest samples (N) and layers a verdict on C9 and C10 is computed from (see the module's docstring).
MIN_SAMPLES = 20
MIN_LAYERS = 4
_ANALYSIS = "Chapter 5's rotation analysis (C9, C10)"


def _as_traj(traj: np.ndarray, name: str = "traj", min_sites: int = 3) -> np.ndarray:
    arr = np.asarray(traj)
    if arr.ndim < 1:
        raise ValueError(f"{name} must have the depth (site) axis last, shape (..., n_sites); got a scalar")
    if arr.shape[-1] < min_sites:
        raise ValueError(f"{name} needs at least {min_sites} sites on its last axis (the depth axis), "
                         f"got shape {arr.shape}")
    return check_array(arr, name)  # float32 / float64, finite


def _as_acts(acts: np.ndarray) -> np.ndarray:
    return check_acts(acts, min_sites=3, why="for a gradient along depth")


# --------------------------------------------------------------------------- portraits and R


def depth_gradient(traj: np.ndarray) -> np.ndarray:
    """Derivative of each curve along depth, ``∇a`` (:func:`numpy.gradient` on the last axis).

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites)
        Curves with the site (depth) axis last, e.g. ``(d_model, n_sites)``.

    Returns
    -------
    ndarray of shape (..., n_sites)
        Central differences inside, one-sided differences at the first and last site.
    """
    traj = _as_traj(traj, min_sites=2)
    return np.gradient(traj, axis=-1)


def phase_portrait(traj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centred phase portrait ``(x, y) = (a − a_0, ∇a − ∇a_0)`` of each curve.

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites)

    Returns
    -------
    x, y : ndarrays of shape (..., n_sites)
        Both start at 0 at the first site.
    """
    traj = _as_traj(traj, min_sites=2)
    g = np.gradient(traj, axis=-1)
    return traj - traj[..., :1], g - g[..., :1]


def turning_angles(traj: np.ndarray) -> np.ndarray:
    """Signed turning angle of the portrait's tangent at each inner step, in radians.

    ``Δθ_l = wrap(θ_{l+1} − θ_l)`` with ``θ_l`` the direction of the step from point ``l``
    to ``l + 1`` of the phase portrait. It is computed as
    ``atan2(t_l × t_{l+1}, t_l · t_{l+1})`` for consecutive tangent vectors ``t``, which is the
    same angle in ``(−π, π]`` without wrapping (and 0 where a step has zero length).
    Positive = counter-clockwise. An exact reversal of direction counts as ``+π`` (half a turn
    counter-clockwise), whatever the sign of the zero cross product: the interval is
    ``(−π, π]``, as in the text of chapter 5 and its exercise.

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites), n_sites ≥ 3

    Returns
    -------
    ndarray of shape (..., n_sites - 2)
    """
    traj = _as_traj(traj)
    g = np.gradient(traj, axis=-1)
    dx = np.diff(traj, axis=-1)
    dy = np.diff(g, axis=-1)
    cross = dx[..., :-1] * dy[..., 1:] - dy[..., :-1] * dx[..., 1:]
    dot = dx[..., :-1] * dx[..., 1:] + dy[..., :-1] * dy[..., 1:]
    return _wrap_half_open(np.arctan2(cross, dot))


def _arctan2_into(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``np.arctan2(y, x, out=y)`` for float64 C-contiguous arrays of one shape, through
    :func:`torch.atan2` where torch is installed: vectorised, about 4 times as fast as numpy's
    on x86 CPUs without AVX-512 (12 against 46 ns an element on an AMD EPYC core), equal to it
    within one ulp (``tests/test_rotations.py``). The rotation nulls spend most of their time
    here (``n_shuffles × d_model × n_sites`` angles)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the course
        return np.arctan2(y, x, out=y)
    ty = torch.from_numpy(y)
    torch.atan2(ty, torch.from_numpy(x), out=ty)
    return y


def _wrap_half_open(angle: np.ndarray) -> np.ndarray:
    """Map ``−π`` to ``+π`` in place, so that every angle lies in ``(−π, π]``.

    ``atan2(−0.0, x < 0)`` is ``−π`` and ``atan2(+0.0, x < 0)`` is ``+π``: without this, an
    exact reversal would count as either half turn depending on the sign of a zero.
    """
    angle[angle == -np.pi] = np.pi
    return angle


def _turning_sum(a: np.ndarray) -> np.ndarray:
    """Σ of the turning angles along axis 1 of ``a`` (batch, n_sites, curves), radians; no checks.

    The hot path. Depth sits on axis 1 so every operation runs over long contiguous rows of
    curves. Same numbers as ``turning_angles(...).sum(-1)`` (to an ulp an angle: :func:`_arctan2_into`)
    with fewer temporaries: the tangent
    is ``(dx, dy)`` with ``dx = diff(a)`` and ``dy = diff(gradient(a))``, which for
    :func:`numpy.gradient` is ``(dx[l+1] − dx[l−1]) / 2`` inside and ``(dx[1] − dx[0]) / 2``,
    ``(dx[-1] − dx[-2]) / 2`` at the two ends.

    Returns
    -------
    ndarray of shape (batch, curves)
    """
    dx = a[:, 1:] - a[:, :-1]
    dy = np.empty_like(dx)
    np.subtract(dx[:, 2:], dx[:, :-2], out=dy[:, 1:-1])
    np.subtract(dx[:, 1], dx[:, 0], out=dy[:, 0])
    np.subtract(dx[:, -1], dx[:, -2], out=dy[:, -1])
    dy *= 0.5
    cross = dx[:, :-1] * dy[:, 1:]
    cross -= dy[:, :-1] * dx[:, 1:]
    dot = dx[:, :-1] * dx[:, 1:]
    dot += dy[:, :-1] * dy[:, 1:]
    _arctan2_into(cross, dot)
    _wrap_half_open(cross)
    return cross.sum(1, dtype=np.float64)


def _rotation_rows(a: np.ndarray) -> np.ndarray:
    """R of each row of a 2-D array ``(n_curves, n_sites)``, in chunks of curves (no checks)."""
    n, t = a.shape
    out = np.empty(n, dtype=np.float64)
    step = max(1, _CHUNK // t)
    for s in range(0, n, step):
        out[s : s + step] = _turning_sum(np.ascontiguousarray(a[s : s + step].T)[None])[0]
    return out / (2 * np.pi)


def _shuffled_rotation_rows(flat: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """R of every row of ``flat`` (m, n) under every order in ``perms`` (S, n): shape (S, m)."""
    m, n = flat.shape
    out = np.empty((perms.shape[0], m), dtype=np.float64)
    cols = max(1, _CHUNK // n)  # curves per chunk
    per = max(1, _CHUNK // (min(m, cols) * n))  # shuffles per chunk
    for c in range(0, m, cols):
        sites_first = np.ascontiguousarray(flat[c : c + cols].T)  # (n, m_chunk)
        for s in range(0, perms.shape[0], per):
            out[s : s + per, c : c + cols] = _turning_sum(sites_first[perms[s : s + per]])
    return out / (2 * np.pi)


def rotation_count(traj: np.ndarray) -> np.ndarray:
    """Rotation count ``R``: the total turning of each portrait's tangent, in full turns.

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites), n_sites ≥ 3
        Curves with the depth axis last, e.g. ``(d_model, n_sites)`` for the mean trajectory
        or ``(n_samples, d_model, n_sites)`` for every sample.

    Returns
    -------
    ndarray of shape (...), float64
        ``Σ Δθ / 2π`` over the ``n_sites − 2`` turning steps. Negative = clockwise (the usual
        sense of an ``(x, ẋ)`` portrait).

    Examples
    --------
    >>> l = np.arange(41)
    >>> round(float(rotation_count(np.sin(2 * np.pi * l / 20))), 2)   # two periods, clockwise
    -1.98
    """
    traj = _as_traj(traj)
    return _rotation_rows(traj.reshape(-1, traj.shape[-1])).reshape(traj.shape[:-1])


def unit_trajectories(acts: np.ndarray, reading: str = "mean") -> np.ndarray:
    """Per-unit curves along depth from the central array, depth axis last.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    reading : {"mean", "per-sample"}
        ``"mean"``: the mean over samples at each site (one curve per unit).
        ``"per-sample"``: every sample's own curve.

    Returns
    -------
    ndarray of shape (d_model, n_sites) for ``"mean"``, or
    (n_samples, d_model, n_sites) for ``"per-sample"``; float64 for the mean.
    """
    acts = _as_acts(acts)
    if reading == "mean":  # streamed over blocks of samples (a cached capture's pages given back)
        return np.ascontiguousarray(streaming.site_means(acts).T)
    if reading == "per-sample":
        return np.ascontiguousarray(np.swapaxes(acts, 1, 2))
    raise ValueError(f"reading must be 'mean' or 'per-sample', got {reading!r}")


def rms_normalized_mean_trajectories(acts: np.ndarray) -> np.ndarray:
    """Per-unit mean curves of the stream with its growth divided out.

    Each state ``h`` (one sample at one site) is divided by its RMS over units,
    ``sqrt(mean_u h_u²)``, before the mean over samples: what is left of a unit's outward
    spiral is then more than the growth of the whole residual stream. Computed one site at a
    time in float64 (no full-size float64 copy: at Llama 3.1 8B's width one would be 2 GiB).

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)

    Returns
    -------
    ndarray of shape (d_model, n_sites), float64
        As :func:`unit_trajectories` with ``reading="mean"``, of ``acts / rms``; a state that is
        all zeros gives NaN.
    """
    acts = _as_acts(acts)
    n, n_sites, d = acts.shape
    out = np.empty((d, n_sites))
    with np.errstate(invalid="ignore", divide="ignore"):
        for s in range(n_sites):
            a = streaming.read(acts, np.s_[:, s], np.float64)
            a /= np.sqrt((a**2).mean(axis=-1, keepdims=True))
            out[:, s] = a.mean(axis=0)
    return out


# --------------------------------------------------------------------------- the shuffle null


def layer_permutations(n_sites: int, n_shuffles: int, seed: int = 0) -> np.ndarray:
    """Random orders of the depth axis.

    Parameters
    ----------
    n_sites : int
    n_shuffles : int
    seed : int

    Returns
    -------
    ndarray of shape (n_shuffles, n_sites), int
        Row ``s`` is a permutation of ``0 … n_sites − 1`` (seeded, reproducible).
    """
    if n_sites < 2:
        raise ValueError(f"n_sites must be at least 2, got {n_sites}")
    if n_shuffles < 1:
        raise ValueError(f"n_shuffles must be positive, got {n_shuffles}")
    rng = np.random.default_rng(seed)
    return rng.permuted(np.broadcast_to(np.arange(n_sites), (n_shuffles, n_sites)), axis=1)


def shuffled(
    traj: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    n_shuffles: int = 1000,
    seed: int = 0,
    perms: np.ndarray | None = None,
) -> np.ndarray:
    """A per-curve statistic recomputed with the site order shuffled.

    Each shuffle draws one permutation of the sites and applies it to every curve (every unit
    and sample), so draws keep what units share at a site; the statistic (e.g. ``∇`` inside
    :func:`rotation_count`) is recomputed on the shuffled order. Vectorised: curves × shuffles
    go through ``statistic`` in chunks of a few million elements.

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites)
    statistic : callable
        Maps an array of shape ``(m, n_sites)`` to shape ``(m,)``, one value per curve
        (:func:`rotation_count`, :func:`amplitude_growth`).
    n_shuffles : int
    seed : int
    perms : ndarray of shape (n_shuffles, n_sites), optional
        Use these orders instead of drawing them (``n_shuffles`` and ``seed`` are ignored).

    Returns
    -------
    ndarray of shape (n_shuffles, ...)
        ``out[s]`` is the statistic of every curve under permutation ``s``.
    """
    traj = _as_traj(traj)
    n = traj.shape[-1]
    if perms is None:
        perms = layer_permutations(n, n_shuffles, seed)
    perms = np.asarray(perms)
    if perms.ndim != 2 or perms.shape[1] != n:
        raise ValueError(f"perms must have shape (n_shuffles, n_sites={n}), got {perms.shape}")
    if not (np.sort(perms, axis=1) == np.arange(n)).all():
        raise ValueError("every row of perms must be a permutation of 0 … n_sites − 1")
    flat = traj.reshape(-1, n)
    m = flat.shape[0]
    if statistic is rotation_count:  # the fast path, sites-first layout
        out = _shuffled_rotation_rows(flat, perms)
        return out.reshape((perms.shape[0],) + traj.shape[:-1])
    out = np.empty((perms.shape[0], m), dtype=np.float64)
    per = max(1, _CHUNK // (m * n))  # shuffles per chunk
    rows = max(1, _CHUNK // n)       # curves per chunk when one shuffle is already too big
    for s in range(0, perms.shape[0], per):
        block = perms[s : s + per]
        if m * n <= _CHUNK:
            g = flat[:, block]                              # (m, k, n)
            out[s : s + len(block)] = statistic(g.reshape(-1, n)).reshape(m, len(block)).T
        else:
            for r in range(0, m, rows):
                out[s, r : r + rows] = statistic(flat[r : r + rows][:, block[0]])
    return out.reshape((perms.shape[0],) + traj.shape[:-1])


def shuffled_rotation_counts(traj: np.ndarray, n_shuffles: int = 1000, seed: int = 0) -> np.ndarray:
    """``R`` of every curve under ``n_shuffles`` random site orders (the layer-shuffle null).

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites)
    n_shuffles : int
    seed : int

    Returns
    -------
    ndarray of shape (n_shuffles, ...)
    """
    return shuffled(traj, rotation_count, n_shuffles=n_shuffles, seed=seed)


# --------------------------------------------------------------------------- a null that keeps smoothness

#: The nulls of :func:`rotation_test`: the layer shuffle (the paper's protocol, as the third-party
#: reimplementation does it) and phase-randomised surrogates (:func:`phase_randomized`).
NULLS = ("shuffle", "phase")


def _phase_surrogates(traj: np.ndarray, n_surrogates: int, seed: int) -> Iterator[np.ndarray]:
    """Phase-randomised surrogates of every curve of ``traj`` (..., n_sites), one at a time; no checks.

    The increments' spectrum is computed once; each surrogate draws new phases and transforms
    back with the inverse real DFT written as two matrix products (exact, and much faster than
    an FFT for the prime lengths a model's site count often gives, 59 for SmolLM2). In the
    dtype of ``traj`` (float32 for a capture's own curves).
    """
    dtype = traj.dtype if traj.dtype in (np.float32, np.float64) else np.float64
    flat = traj.reshape(-1, traj.shape[-1]).astype(dtype, copy=False)
    steps = np.diff(flat, axis=-1)
    m = steps.shape[-1]
    spec = np.fft.rfft(steps, axis=-1)
    re, im = spec.real.astype(dtype), spec.imag.astype(dtype)
    k, t = np.arange(spec.shape[-1]), np.arange(m)
    w = np.full(k.size, 2.0)
    w[0] = 1.0
    if m % 2 == 0:
        w[-1] = 1.0                        # the Nyquist term of an even length counts once
    ang = 2 * np.pi * np.outer(k, t) / m
    back_re = (w[:, None] * np.cos(ang) / m).astype(dtype)      # inverse real DFT, (n_freq, m)
    back_im = (-w[:, None] * np.sin(ang) / m).astype(dtype)
    fixed = [0] + ([k.size - 1] if m % 2 == 0 else [])  # the mean step (the drift) and the Nyquist term stay real
    rng = np.random.default_rng(seed)
    out = np.empty(flat.shape, dtype=dtype)
    out[:, 0] = flat[:, 0]
    for _ in range(int(n_surrogates)):
        phase = rng.random(re.shape, dtype=dtype)
        phase *= 2 * np.pi
        c, s = np.cos(phase), np.sin(phase)
        c[:, fixed], s[:, fixed] = 1.0, 0.0
        new = (re * c - im * s) @ back_re + (re * s + im * c) @ back_im
        np.cumsum(new, axis=-1, out=out[:, 1:])
        out[:, 1:] += flat[:, :1]
        yield out.reshape(traj.shape)


def phase_randomized(traj: np.ndarray, n_surrogates: int = 200, seed: int = 0) -> np.ndarray:
    """Surrogate curves that keep each curve's smoothness but not its shape along depth.

    For each curve, its increments along depth ``Δa_l = a_{l+1} − a_l`` are Fourier
    transformed, every phase but the mean's (and the Nyquist term's, which must stay real) is
    replaced by an independent uniform draw, and the increments are transformed back and summed
    from the curve's first value. Each surrogate has exactly the increments' power spectrum
    (how smooth the curve is, how large its steps are, its drift) of its original, with the
    order of its ups and downs random: a null for the rotation count that, unlike the layer
    shuffle, does not turn a smooth curve into a jagged one. Each curve (each unit, each
    sample) gets its own phases.

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites), n_sites ≥ 3
        Curves with the depth axis last (:func:`unit_trajectories`).
    n_surrogates : int ≥ 1
    seed : int

    Returns
    -------
    ndarray of shape (n_surrogates, ..., n_sites)
        In the dtype of ``traj`` (float64 for integers). For large inputs use
        :func:`phase_rotation_counts`, which never holds all surrogates.

    References
    ----------
    J. Theiler, S. Eubank, A. Longtin, B. Galdrikian, J. D. Farmer, "Testing for nonlinearity in
    time series: the method of surrogate data", Physica D 58 (1992) 77–94 (phase randomisation),
    applied here to the increments so that a curve with a drift stays a curve with a drift.
    """
    traj = _as_traj(traj)
    if n_surrogates < 1:
        raise ValueError(f"n_surrogates must be positive, got {n_surrogates}")
    return np.stack([x.copy() for x in _phase_surrogates(traj, n_surrogates, seed)])


def phase_rotation_counts(traj: np.ndarray, n_surrogates: int = 200, seed: int = 0) -> np.ndarray:
    """``R`` of every curve's phase-randomised surrogates (:func:`phase_randomized`), one
    surrogate at a time (memory: one copy of ``traj``).

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites)
    n_surrogates : int ≥ 1
    seed : int
        The same seed gives the surrogates of ``phase_randomized(traj, n_surrogates, seed)``.

    Returns
    -------
    ndarray of shape (n_surrogates, ...)
    """
    traj = _as_traj(traj)
    if n_surrogates < 1:
        raise ValueError(f"n_surrogates must be positive, got {n_surrogates}")
    return np.stack([rotation_count(x) for x in _phase_surrogates(traj, n_surrogates, seed)])


# --------------------------------------------------------------------------- scaling with depth


def rescale_count(r: np.ndarray | float, n_sites: int, to_sites: int = PAPER_N_SITES) -> np.ndarray:
    """Rotation count rescaled to another number of sites at the same turning per step.

    ``R`` sums ``n_sites − 2`` turning angles, so at a fixed mean turning per step it grows as
    ``n_sites − 2``: ``R · (to_sites − 2) / (n_sites − 2)``. (60 → 64 sites: × 62/58.)

    Parameters
    ----------
    r : float or ndarray of any shape
    n_sites, to_sites : int, each ≥ 3
    """
    if n_sites < 3 or to_sites < 3:
        raise ValueError(f"both site counts must be at least 3, got {n_sites} and {to_sites}")
    return check_array(r, "r").astype(np.float64) * (to_sites - 2) / (n_sites - 2)


def prefix_rotation_counts(traj: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """``R`` of the first ``k`` sites only, for each ``k`` in ``lengths`` (``∇`` recomputed on the prefix).

    Shows how the count grows with the number of sites: linearly if the turning per step is
    steady along depth.

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites)
    lengths : sequence of int, each in 3 … n_sites

    Returns
    -------
    ndarray of shape (len(lengths), ...)
    """
    traj = _as_traj(traj)
    n = traj.shape[-1]
    lengths = [int(k) for k in lengths]
    bad = [k for k in lengths if not 3 <= k <= n]
    if bad:
        raise ValueError(f"prefix lengths must lie in 3 … {n} (the number of sites), got {bad}")
    return np.stack([rotation_count(traj[..., :k]) for k in lengths])


def reference_rotation_counts(n_sites: int, kind: str = "walk", n_curves: int = 10000, seed: int = 0) -> np.ndarray:
    """``R`` of curves that have no dynamics at all: a yardstick for the measure itself.

    Parameters
    ----------
    n_sites : int ≥ 3
    kind : {"walk", "white"}
        ``"walk"``: Gaussian random walks (cumulative sums of i.i.d. steps): continuous from
        site to site but with no rotation built in. ``"white"``: i.i.d. Gaussian values at
        each site, what a layer shuffle turns any curve into.
    n_curves : int
    seed : int

    Returns
    -------
    ndarray of shape (n_curves,)
    """
    if n_sites < 3 or n_curves < 1:
        raise ValueError(f"need n_sites ≥ 3 and n_curves ≥ 1, got {n_sites} and {n_curves}")
    z = np.random.default_rng(seed).standard_normal((n_curves, n_sites))
    if kind == "walk":
        z = z.cumsum(-1)
    elif kind != "white":
        raise ValueError(f"kind must be 'walk' or 'white', got {kind!r}")
    return rotation_count(z)


# --------------------------------------------------------------------------- orbit or spiral (C10)


def amplitude_growth(traj: np.ndarray, frac: float = 1 / 3) -> np.ndarray:
    """How much a portrait's spread grows from the first to the last stretch of depth.

    The portrait ``(x, y)`` is standardised per curve (each coordinate divided by its standard
    deviation over all sites, so both axes count alike). The amplitude of a stretch of sites is
    the RMS distance of its points from their own centroid. The growth is
    ``amplitude(last k sites) / amplitude(first k sites)`` with ``k = round(frac · n_sites)``:
    about 1 for a steady orbit, > 1 for an outward spiral, < 1 for an inward one.

    Parameters
    ----------
    traj : ndarray of shape (..., n_sites)
    frac : float in (0, 0.5]
        Share of the sites in each stretch (default: thirds).

    Returns
    -------
    ndarray of shape (...)
        ``inf`` where the first stretch does not move; ``nan`` for a constant curve.
    """
    traj = _as_traj(traj)
    if not 0 < frac <= 0.5:
        raise ValueError(f"frac must lie in (0, 0.5], got {frac}")
    n = traj.shape[-1]
    k = int(round(frac * n))
    if k < 2:
        raise ValueError(f"frac * n_sites = {frac * n:.2f} gives fewer than 2 sites per stretch")
    x, y = phase_portrait(traj)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = x / x.std(-1, keepdims=True)
        y = y / y.std(-1, keepdims=True)
        x = np.nan_to_num(x, nan=0.0)
        y = np.nan_to_num(y, nan=0.0)

        def amp(sl):
            xs, ys = x[..., sl], y[..., sl]
            return np.sqrt(((xs - xs.mean(-1, keepdims=True)) ** 2 + (ys - ys.mean(-1, keepdims=True)) ** 2).mean(-1))

        return amp(slice(n - k, n)) / amp(slice(0, k))


def classify_units(r: np.ndarray, growth: np.ndarray, min_turns: float = 1.0, factor: float = 2.0) -> np.ndarray:
    """Orbit, outward spiral, inward spiral, or no full turn, per unit.

    * ``"no full turn"``: ``|R| < min_turns``, the curve does not circle at all;
    * otherwise by amplitude growth ``g``: ``"outward spiral"`` if ``g ≥ factor``,
      ``"inward spiral"`` if ``g ≤ 1 / factor``, else ``"orbit"`` (the amplitude stays within
      a factor ``factor`` along depth).

    Parameters
    ----------
    r : ndarray of shape (n_units,)
        Rotation counts (:func:`rotation_count`).
    growth : ndarray of shape (n_units,)
        Amplitude growth (:func:`amplitude_growth`); NaN (no amplitude) reads "no full turn",
        ``inf`` (out of a point) an outward spiral.
    min_turns : float ≥ 0
    factor : float > 1

    Returns
    -------
    ndarray of shape (n_units,), dtype object
        One of :data:`CLASSES` per unit.
    """
    r = check_array(r, "r").astype(np.float64, copy=False)
    # a NaN growth (no amplitude) reads "no full turn" and an inf one (out of a point) a spiral
    growth = check_array(growth, "growth", finite=False).astype(np.float64, copy=False)
    if r.shape != growth.shape:
        raise ValueError(f"r and growth must have the same shape, got {r.shape} and {growth.shape}")
    if factor <= 1 or min_turns < 0:
        raise ValueError(f"need factor > 1 and min_turns ≥ 0, got factor={factor}, min_turns={min_turns}")
    out = np.full(r.shape, "orbit", dtype=object)
    out[growth >= factor] = "outward spiral"
    out[growth <= 1 / factor] = "inward spiral"
    out[np.isnan(growth) | (np.abs(r) < min_turns)] = "no full turn"
    return out


def example_units(classes: np.ndarray, r: np.ndarray, per_class: int = 2,
                  which: Sequence[str] = ("orbit", "outward spiral")) -> list[int]:
    """Units to draw: for each class in ``which``, the ``per_class`` units that turn most (largest ``|R|``).

    Parameters
    ----------
    classes : ndarray of shape (n_units,)
    r : ndarray of shape (n_units,)

    Returns
    -------
    list of int
        Unit indices, grouped by class in the order of ``which`` (a class with fewer units
        gives fewer).
    """
    classes = np.asarray(classes)
    r = check_array(r, "r")
    if classes.shape != r.shape:
        raise ValueError(f"classes and r must have the same shape, got {classes.shape} and {r.shape}")
    out: list[int] = []
    for c in which:
        idx = np.flatnonzero(classes == c)
        out.extend(int(i) for i in idx[np.argsort(-np.abs(r[idx]), kind="stable")][:per_class])
    return out


# --------------------------------------------------------------------------- real against the null


@dataclass(frozen=True)
class RotationTest:
    """Rotation counts of every unit against the layer-shuffle null, for one reading.

    Attributes
    ----------
    reading : {"mean", "per-sample"}
        ``"mean"``: R of the mean trajectory. ``"per-sample"``: mean over samples of R.
    real : ndarray of shape (d_model,)
    null : ndarray of shape (n_shuffles, d_model)
        The same statistic with the site order shuffled (one order per draw, shared by all
        units and samples).
    n_sites : int
    n_samples : int
        Samples the statistic averaged (over all of them for ``"mean"``; the subset for
        ``"per-sample"``).
    null_kind : {"shuffle", "phase"}
        Which null ``null`` holds (:data:`NULLS`): layer shuffles, or phase-randomised
        surrogates (:func:`phase_randomized`).
    """

    reading: str
    real: np.ndarray
    null: np.ndarray
    n_sites: int
    n_samples: int
    null_kind: str = "shuffle"

    @property
    def mean_real(self) -> float:
        """Mean of ``real`` over units."""
        return float(self.real.mean())

    @property
    def null_means(self) -> np.ndarray:
        """Mean over units of each null draw, shape ``(n_shuffles,)``."""
        return self.null.mean(axis=1)

    @property
    def z(self) -> float:
        """z-score of the unit-mean ``R`` against the null draws of the unit mean."""
        return float(stats.zscore(self.mean_real, self.null_means))

    @property
    def p(self) -> float:
        """Two-sided permutation p-value of the unit-mean ``R`` (with the +1 correction)."""
        return stats.permutation_pvalue(self.mean_real, self.null_means, "two-sided")

    @property
    def unit_z(self) -> np.ndarray:
        """Per-unit z-score against that unit's null draws, shape ``(d_model,)``."""
        return np.asarray(stats.zscore(self.real, self.null, axis=0))

    def share_beyond(self, level: float = 0.95) -> tuple[float, float]:
        """Shares of units whose real ``R`` lies below / above the central ``level`` range of its own null."""
        a = (1 - level) / 2
        lo, hi = np.quantile(self.null, [a, 1 - a], axis=0)
        return float((self.real < lo).mean()), float((self.real > hi).mean())

    @property
    def abs_rescaled(self) -> float:
        """``|mean R|`` rescaled to the paper's 64 sites (:func:`rescale_count`)."""
        return float(rescale_count(abs(self.mean_real), self.n_sites))


def rotation_test(
    acts: np.ndarray,
    reading: str = "mean",
    n_shuffles: int = 1000,
    seed: int = 0,
    n_samples: int | None = None,
    null: str = "shuffle",
) -> RotationTest:
    """Rotation counts of every unit, real and under a null (by default the layer shuffle).

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    reading : {"mean", "per-sample"}
        ``"mean"``: R of each unit's mean trajectory over samples. ``"per-sample"``: each
        sample's R, averaged over samples.
    n_shuffles : int
        Null draws (the paper's protocol: 1000).
    seed : int
        Seeds the site orders and the sample subset.
    n_samples : int or None
        ``"per-sample"`` only: a seeded random subset of this many samples for both the real
        statistic and its null (the null costs ``n_samples × n_shuffles`` curves per unit).
        None: all samples.
    null : {"shuffle", "phase"}, default "shuffle"
        ``"shuffle"``: ``n_shuffles`` random orders of the sites (:func:`shuffled_rotation_counts`).
        ``"phase"``: ``n_shuffles`` phase-randomised surrogates of each curve
        (:func:`phase_rotation_counts`), which keep each unit's smoothness along depth.

    Returns
    -------
    RotationTest
    """
    acts = _as_acts(acts)
    n_total, n_sites, _ = acts.shape
    if reading == "mean":
        traj = unit_trajectories(acts, "mean")
        used = n_total
    elif reading == "per-sample":
        if n_samples is not None:
            if not 1 <= n_samples <= n_total:
                raise ValueError(f"n_samples must lie in 1 … {n_total}, got {n_samples}")
            idx = np.sort(np.random.default_rng(seed).choice(n_total, size=n_samples, replace=False))
            acts = streaming.read(acts, idx)
        traj = unit_trajectories(acts, "per-sample")
        used = acts.shape[0]
    else:
        raise ValueError(f"reading must be 'mean' or 'per-sample', got {reading!r}")
    if null not in NULLS:
        raise ValueError(f"null must be one of {NULLS}, got {null!r}")
    real = rotation_count(traj)
    if null == "shuffle":
        draws = shuffled_rotation_counts(traj, n_shuffles=n_shuffles, seed=seed)
    else:
        draws = phase_rotation_counts(traj, n_surrogates=n_shuffles, seed=seed)
    if reading == "per-sample":
        real, draws = real.mean(0), draws.mean(1)
    return RotationTest(reading=reading, real=real, null=draws, n_sites=n_sites, n_samples=used, null_kind=null)


@dataclass(frozen=True)
class RotationAnalysis:
    """Everything the chapter computes for one run (see :func:`analyse`).

    Attributes
    ----------
    label : str
    mean : RotationTest
        R of the mean trajectory against the shuffle null.
    per_sample : RotationTest
        Mean of per-sample R against the shuffle null.
    growth : ndarray of shape (d_model,)
        Amplitude growth of each unit's mean-trajectory portrait.
    growth_null : ndarray of shape (n_shuffles_growth, d_model)
        The same under the layer shuffle.
    classes : ndarray of shape (d_model,)
        :func:`classify_units` of ``mean.real`` and ``growth``.
    null_classes : ndarray of shape (n_shuffles_growth, d_model)
        The classes of shuffled curves (R and growth under the same site order).
    factor : float
        The amplitude factor of the classes (:func:`classify_units`).
    r_null_growth : ndarray of shape (n_shuffles_growth, d_model) or None
        R of the same shuffled curves as ``growth_null`` (what ``null_classes`` was computed
        from), kept so that :func:`reclassify` can change ``factor`` without the shuffles.
    """

    label: str
    mean: RotationTest
    per_sample: RotationTest
    growth: np.ndarray
    growth_null: np.ndarray
    classes: np.ndarray
    null_classes: np.ndarray
    factor: float = 2.0
    r_null_growth: np.ndarray | None = None

    def shares(self) -> dict[str, float]:
        """Share of units in each class, ``{class: share}``."""
        return {c: float(np.mean(self.classes == c)) for c in CLASSES}

    def null_shares(self) -> dict[str, np.ndarray]:
        """Share of units in each class under each shuffle, ``{class: ndarray (n_shuffles_growth,)}``."""
        return {c: (self.null_classes == c).mean(axis=1) for c in CLASSES}


@cached
def analyse(
    acts: np.ndarray,
    label: str = "",
    n_shuffles: int = 1000,
    n_samples: int = 100,
    n_shuffles_per_sample: int = 40,
    n_shuffles_growth: int = 200,
    seed: int = 0,
    factor: float = 2.0,
    null: str = "shuffle",
) -> RotationAnalysis:
    """Both readings of R against their nulls, and the orbit / spiral classes of the units.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    label : str
        The run's label (``Activations.label``).
    n_shuffles : int
        Null draws for the mean-trajectory reading.
    n_samples, n_shuffles_per_sample : int
        Sample subset and null draws for the per-sample reading (its null costs
        ``n_samples × n_shuffles_per_sample`` curves per unit).
    n_shuffles_growth : int
        Null draws for the orbit / spiral shares.
    seed : int
    factor : float > 1
        Amplitude growth that makes an outward spiral (:func:`classify_units`; the
        robustness page also tries 1.5, 2.5, 3 and 3.5, see :func:`reclassify`).
    null : {"shuffle", "phase"}, default "shuffle"
        The null of both C9 readings (:func:`rotation_test`); ``n_shuffles`` and
        ``n_shuffles_per_sample`` are then its numbers of draws. The orbit / spiral shares are
        always compared with the layer shuffle.

    Returns
    -------
    RotationAnalysis
    """
    check_run_size(check_acts(acts), MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)  # dtype and NaN first, then the size
    acts = _as_acts(acts)
    mean = rotation_test(acts, "mean", n_shuffles=n_shuffles, seed=seed, null=null)
    per = rotation_test(acts, "per-sample", n_shuffles=n_shuffles_per_sample, seed=seed,
                        n_samples=min(n_samples, acts.shape[0]), null=null)
    traj = unit_trajectories(acts, "mean")
    growth = amplitude_growth(traj)
    perms = layer_permutations(traj.shape[-1], n_shuffles_growth, seed + 1)
    growth_null = shuffled(traj, amplitude_growth, perms=perms)
    r_null = shuffled(traj, rotation_count, perms=perms)
    classes = classify_units(mean.real, growth, factor=factor)
    null_classes = classify_units(r_null.ravel(), growth_null.ravel(), factor=factor).reshape(r_null.shape)
    return RotationAnalysis(label=label, mean=mean, per_sample=per, growth=growth,
                            growth_null=growth_null, classes=classes, null_classes=null_classes,
                            factor=float(factor), r_null_growth=r_null)


def reclassify(analysis: RotationAnalysis, factor: float) -> RotationAnalysis:
    """The same analysis with the orbit / spiral classes drawn at another amplitude factor.

    Equal to ``analyse(acts, ..., factor=factor)`` with the same other arguments, without
    recomputing the rotation counts, their nulls or the amplitude growth (only
    :func:`classify_units` runs again, on the real and on the shuffled curves).

    Parameters
    ----------
    analysis : RotationAnalysis
        From :func:`analyse` (it keeps ``r_null_growth``).
    factor : float > 1

    Returns
    -------
    RotationAnalysis

    Raises
    ------
    ValueError
        If ``analysis`` has no ``r_null_growth`` (made by hand, not by :func:`analyse`).
    """
    if analysis.r_null_growth is None:
        raise ValueError("this RotationAnalysis keeps no r_null_growth: recompute it with rotations.analyse(..., "
                         "factor=...) instead")
    from dataclasses import replace

    classes = classify_units(analysis.mean.real, analysis.growth, factor=factor)
    r_null = analysis.r_null_growth
    null_classes = classify_units(r_null.ravel(), analysis.growth_null.ravel(), factor=factor).reshape(r_null.shape)
    return replace(analysis, classes=classes, null_classes=null_classes, factor=float(factor))


# --------------------------------------------------------------------------- verdicts

_C9_PAPER = ("Units circle about 10 times (≈10.74 reported) over the 64 sites of Llama 3.1 8B, "
             "and the rotation counts differ from a layer-shuffled null (1000 shuffles).")
_C10_PAPER = "Some units orbit a fixed point, others spiral outward (amplitude grows with depth)."
_BAND = 1.5   # "about 10": within a factor 1.5 of 10.74
_MIN_SHARE = 0.05


def _c9(test: RotationTest, model: str, chapter: str, band: float = _BAND) -> Verdict:
    reading = "R of the mean trajectory" if test.reading == "mean" else "mean of per-sample R"
    lo, hi = PAPER_MEAN_R / band, PAPER_MEAN_R * band
    value = test.abs_rescaled
    in_band = lo <= value <= hi
    differs = test.p < 0.05
    nm = test.null_means
    phase = test.null_kind == "phase"
    null_name = "phase-randomised null (each curve's increments, phases drawn anew)" if phase else "layer-shuffle null"
    drawn, draws = ("phase-randomised", "surrogates") if phase else ("shuffled", "shuffles")
    direction = "turn less than" if abs(test.mean_real) < abs(nm.mean()) else "turn more than"
    return judge(
        "C9", _C9_PAPER,
        f"{reading}: |mean over units of R|, rescaled from {test.n_sites} to 64 sites, lies in "
        f"[{lo:.2f}, {hi:.2f}] (10.74 within a factor {band:g}), and the unit mean differs from the "
        f"{null_name} (two-sided permutation p < 0.05). Both: agrees; one: partly.",
        model, value, agrees=in_band and differs, partly=in_band or differs,
        uncertainty=(f"mean R = {test.mean_real:.2f} on {test.n_sites} sites; {drawn}: "
                     f"{nm.mean():.2f} ± {nm.std():.2f} ({len(nm)} {draws}, "
                     f"{test.n_samples} samples); z = {test.z:.1f}, p = {test.p:.3g}"),
        detail=f"{reading}: the real curves {direction} the {'phase-randomised' if phase else 'layer-shuffled'} ones.",
        chapter=chapter,
    )


def _c10(an: RotationAnalysis, model: str, chapter: str, min_share: float = _MIN_SHARE) -> Verdict:
    sh = an.shares()
    nsh = an.null_shares()
    n_units = an.classes.size
    orbit, spiral = sh["orbit"], sh["outward spiral"]
    spiral_null_hi = float(np.quantile(nsh["outward spiral"], 0.975))
    both = orbit >= min_share and spiral >= min_share
    beyond = spiral > spiral_null_hi
    ci_o = stats.proportion_ci(int(round(orbit * n_units)), n_units)
    ci_s = stats.proportion_ci(int(round(spiral * n_units)), n_units)
    return judge(
        "C10", _C10_PAPER,
        f"Mean-trajectory portraits of units that turn at least once (|R| ≥ 1): outward spiral if "
        f"the amplitude over the last third of the sites is ≥ {an.factor:g}× that over the first third, orbit "
        f"if it stays within a factor {an.factor:g}. Agrees if both classes hold ≥ {min_share:.0%} of units "
        f"and the outward-spiral share exceeds the 97.5th percentile of the layer-shuffle null; "
        f"partly if only one of these holds.",
        model, spiral, agrees=both and beyond, partly=both or beyond,
        uncertainty=(f"outward spirals {spiral:.1%} (95 % CI {ci_s.lo:.1%}–{ci_s.hi:.1%}), orbits "
                     f"{orbit:.1%} (95 % CI {ci_o.lo:.1%}–{ci_o.hi:.1%}); shuffled: spirals "
                     f"{nsh['outward spiral'].mean():.1%} (97.5th pct {spiral_null_hi:.1%}), orbits "
                     f"{nsh['orbit'].mean():.1%} ({len(nsh['orbit'])} shuffles)"),
        detail=(f"value = share of outward spirals; inward spirals {sh['inward spiral']:.1%}, "
                f"no full turn {sh['no full turn']:.1%}."),
        chapter=chapter,
    )


def verdicts(run, chapter: str, analysis: RotationAnalysis | None = None, min_share: float = _MIN_SHARE,
             band: float = _BAND, **kwargs) -> list[Verdict]:
    """The chapter's verdicts on C9 (both readings) and C10 for one run.

    Parameters
    ----------
    run : tdcourse.Activations
        ``run.acts`` of shape (n_samples, n_sites, d_model).
    chapter : str
        Notebook file stem.
    analysis : RotationAnalysis, optional
        Reuse a computed :func:`analyse` of this run (else it is computed, with ``kwargs``).
    min_share : float in (0, 1), default 0.05
        C10: the share of units each class (orbit, outward spiral) must hold.
    band : float > 1, default 1.5
        C9: "about 10" means within a factor ``band`` of the quoted 10.74 (the robustness page
        also tries 1.25 and 2).

    Returns
    -------
    list of Verdict
        C9 (mean trajectory), C9 (per-sample R), C10.
    """
    if not 0 < min_share < 1:
        raise ValueError(f"min_share must lie in (0, 1), got {min_share}")
    check_run_size(check_acts(run.acts, name="run.acts"), MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)
    if not band > 1:
        raise ValueError(f"band must be greater than 1, got {band}")
    if analysis is None:
        analysis = analyse(run.acts, label=run.label, **kwargs)
    model = run.label
    return [_c9(analysis.mean, model, chapter, band), _c9(analysis.per_sample, model, chapter, band),
            _c10(analysis, model, chapter, min_share)]


# --------------------------------------------------------------------------- exercise checks


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angles into (−π, π] (the chapter's wrap)."""
    return np.pi - (np.pi - angle) % (2 * np.pi)


def _wrap_low(angle: np.ndarray) -> np.ndarray:
    """Angles into [−π, π) (the usual mistake: an exact reversal becomes −π)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _turns(theta: np.ndarray) -> float:
    """Σ wrap(Δθ) / 2π of one curve's angles ``theta`` (n,)."""
    return float(_wrap(np.diff(theta)).sum() / (2 * np.pi))


def _tangent_turns(x: np.ndarray, y: np.ndarray) -> float:
    return _turns(np.arctan2(np.diff(y), np.diff(x)))


#: Usual wrong versions of the rotation count of one curve ``a`` (n_sites,), each with what it
#: does wrong in the learner's words (:func:`check_rotation_count` names the one that fits).
_R_MISTAKES: tuple[tuple[str, Callable[[np.ndarray], float]], ...] = (
    ("the turning angles are not wrapped into (−π, π]: np.diff(θ) summed as is only counts the "
     "net change of direction, never a full turn",
     lambda a: float(np.diff(np.arctan2(np.diff(np.gradient(a)), np.diff(a))).sum() / (2 * np.pi))),
    ("θ is the angle of the point, atan2(y, x), not of the step from one point to the next, "
     "atan2(Δy, Δx): that counts turns around the origin, not turns of the curve",
     lambda a: _turns(np.arctan2(np.gradient(a) - np.gradient(a)[0], a - a[0]))),
    ("θ is the angle of the point, atan2(y, x), of a portrait not centred on the first site: "
     "use the step's direction atan2(Δy, Δx), and x = a − a₀, y = ∇a − ∇a₀",
     lambda a: _turns(np.arctan2(np.gradient(a), a))),
    ("∇a is np.diff(a) (n − 1 forward differences) instead of np.gradient(a) (central "
     "differences, one-sided at the two ends, n values)",
     lambda a: _tangent_turns(a[1:], np.diff(a))),
    ("∇a is np.diff(a, prepend=a[0]) instead of np.gradient(a) (central differences inside)",
     lambda a: _tangent_turns(a, np.diff(a, prepend=a[:1]))),
    ("∇a is np.diff(a, append=a[-1]) instead of np.gradient(a) (central differences inside)",
     lambda a: _tangent_turns(a, np.diff(a, append=a[-1:]))),
    ("x and y are swapped in atan2: it takes (Δy, Δx), in that order, and the swap flips "
     "the sign (clockwise turns must come out negative)",
     lambda a: _turns(np.arctan2(np.diff(a), np.diff(np.gradient(a))))),
    ("the absolute turning |Δθ| is summed: turns one way and back cancel in R",
     lambda a: float(np.abs(_wrap(np.diff(np.arctan2(np.diff(np.gradient(a)), np.diff(a))))).sum()
                     / (2 * np.pi))),
    ("the sum is divided by π, not 2π: R counts full turns",
     lambda a: 2 * float(rotation_count(a))),
    ("the turning angles are wrapped into [−π, π), e.g. (Δθ + π) % 2π − π: an exact reversal "
     "then counts as −π, but the chapter's wrap is into (−π, π], a reversal counts as +π "
     "(e.g. π − (π − Δθ) % 2π)",
     lambda a: float(_wrap_low(np.diff(np.arctan2(np.diff(np.gradient(a)), np.diff(a)))).sum()
                     / (2 * np.pi))),
)

#: Usual wrong versions of the phase portrait of one curve ``a`` (n_sites,).
_PORTRAIT_MISTAKES: tuple[tuple[str, Callable[[np.ndarray], tuple]], ...] = (
    ("the portrait is not centred on the first site: x = a − a₀ and y = ∇a − ∇a₀ both start at 0",
     lambda a: (a, np.gradient(a))),
    ("only x is centred: y = ∇a − ∇a₀ too", lambda a: (a - a[0], np.gradient(a))),
    ("the portrait is centred on its mean over the sites, not on the first site",
     lambda a: (a - a.mean(), np.gradient(a) - np.gradient(a).mean())),
    ("∇a is np.diff(a, prepend=a[0]) instead of np.gradient(a)",
     lambda a: (a - a[0], np.diff(a, prepend=a[:1]) - 0.0)),
    ("∇a is np.diff(a, append=a[-1]) instead of np.gradient(a)",
     lambda a: (a - a[0], np.diff(a, append=a[-1:]) - (a[1] - a[0]))),
)


def _rotation_cases() -> list[tuple[str, np.ndarray]]:
    """One unit each, shape (n_sites,): chosen so that every mistake above changes the answer
    (tests/test_rotations.py checks that each one is rejected)."""
    l = np.arange(61, dtype=float)
    walks = np.random.default_rng(0).standard_normal((3, 61)).cumsum(-1)
    return [
        ("a sine of 3 periods (an ellipse, run clockwise 3 times)", np.sin(2 * np.pi * 3 * l / 60)),
        ("a straight ramp (R = 0: the direction never changes)", 0.5 * l),
        ("an oscillation around 5, far from 0", 5 + np.sin(2 * np.pi * l / 15)),
        ("an oscillation on a rising trend", 0.3 * l + np.sin(2 * np.pi * l / 10)),
        ("an oscillation that grows along depth", np.exp(l / 30) * np.sin(2 * np.pi * l / 12)),
        *[(f"random walk {i + 1} of 3 (no rotation built in)", w) for i, w in enumerate(walks)],
        ("a short curve of 6 sites", np.array([0.0, 1.0, 3.0, 2.5, 5.0, 4.0])),
        ("a zigzag 0, 1, 0, 1, … (every turn an exact reversal: +π each)", np.tile([0.0, 1.0], 10)),
    ]


def check_rotation_count(fn: Callable[[np.ndarray], float],
                         portrait: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None) -> bool:
    """Check a learner's rotation count of one unit against :func:`rotation_count`.

    Runs ``fn`` on fixed curves (a sine, a ramp, oscillations away from 0, on a trend and
    growing, random walks, a short curve), compares with the library within 1e-6 turns, and
    prints one ✓ / ✗ line per case, then, if the answers are those of a usual mistake, which
    one: angle differences not wrapped into (−π, π]; the angle of the point ``atan2(y, x)``
    instead of the direction of the step ``atan2(Δy, Δx)`` (centred on the first site or not);
    ``np.diff`` instead of :func:`numpy.gradient` for ``∇a``; ``x`` and ``y`` swapped in
    ``atan2`` (the sign flips); ``|Δθ|`` summed; half turns instead of full ones; the wrap into
    ``[−π, π)`` instead of ``(−π, π]`` (only a curve with exact reversals, the zigzag case, tells
    them apart: there each reversal counts ``−π`` instead of ``+π``). An unfilled template
    (returning None) is reported as not written yet. Never raises on the learner's bug: it is
    reported.

    Centring the portrait on the first site does not change ``R`` (only differences of points
    enter the tangent), so a missing centring shows only in the portrait: pass ``portrait`` to
    check it too.

    Parameters
    ----------
    fn : callable
        ``fn(a) -> float``: ``a`` of shape (n_sites,), one unit's values along depth; returns
        its rotation count ``R`` in full turns (negative = clockwise).
    portrait : callable, optional
        ``portrait(a) -> (x, y)``, each of shape (n_sites,): the learner's phase portrait
        ``x = a − a₀``, ``y = ∇a − ∇a₀``, compared with :func:`phase_portrait` (rejects a
        portrait not centred on the first site, centred on its mean, or with ``np.diff``).

    Returns
    -------
    bool
        Whether every case passed.

    Source: the paper's section 2.6 as :mod:`tdcourse.rotations` implements it (module docstring).
    """
    cases = _rotation_cases()
    results = []
    hint = ""
    if portrait is not None:
        shown = [cases[2], cases[3], cases[5]]  # away from 0, on a trend, a random walk
        for desc, a in shown:
            for k, axis in enumerate(("x", "y")):
                results.append(run_case(f"portrait of {desc}: {axis}", lambda c, k=k: portrait(c)[k], (a,),
                                        phase_portrait(a)[k], rtol=0, atol=1e-9))
        if not all(ok for _, ok, _ in results):
            fit = which_mistake(lambda c: np.stack(portrait(c)), [(a,) for _, a in shown],
                                [(d, lambda c, f=f: np.stack(f(c))) for d, f in _PORTRAIT_MISTAKES], rtol=0,
                                atol=1e-9)
            hint = f"Your portrait looks like this usual mistake: {fit}." if fit else ""
    r_results = [run_case(desc, fn, (a,), rotation_count(a), rtol=0, atol=1e-6) for desc, a in cases]
    if not all(ok for _, ok, _ in r_results):
        fit = which_mistake(fn, [(a,) for _, a in cases], _R_MISTAKES, rtol=0, atol=1e-6)
        if fit:
            hint = (hint + "\n" if hint else "") + f"Your R looks like this usual mistake: {fit}."
    return report(results + r_results, hint=hint)


def _growth_variant(a: np.ndarray, standardise: bool = True, centre: bool = True, k_of=None,
                    inverted: bool = False) -> np.ndarray:
    """:func:`amplitude_growth` (thirds) with one step changed: the usual mistakes of exercise 5.2."""
    x, y = phase_portrait(np.asarray(a, dtype=float))
    if standardise:
        x = x / x.std(-1, keepdims=True)
        y = y / y.std(-1, keepdims=True)
    n = x.shape[-1]
    k = int(round(n / 3)) if k_of is None else k_of(n)

    def amp(sl):
        xs, ys = x[..., sl], y[..., sl]
        if centre:
            xs, ys = xs - xs.mean(-1, keepdims=True), ys - ys.mean(-1, keepdims=True)
        return np.sqrt((xs**2 + ys**2).mean(-1))

    last, first = amp(slice(n - k, n)), amp(slice(0, k))
    return first / last if inverted else last / first


#: Usual wrong versions of the amplitude growth of exercise 5.2, ``(..., n_sites) -> (...)``, each
#: with what it does wrong (:func:`check_amplitude_growth` names the one that fits).
_GROWTH_MISTAKES: tuple[tuple[str, Callable[[np.ndarray], np.ndarray]], ...] = (
    ("x and y are not standardised: divide each by its standard deviation over the sites first, "
     "so that both axes count alike", lambda a: _growth_variant(a, standardise=False)),
    ("the amplitude is the RMS distance from the origin, not from the stretch's own centroid: "
     "subtract each stretch's mean point first", lambda a: _growth_variant(a, centre=False)),
    ("the ratio is inverted: the growth is amplitude(last third) / amplitude(first third), "
     "> 1 for an outward spiral", lambda a: _growth_variant(a, inverted=True)),
    ("each stretch has k = n // 4 sites: the criterion takes thirds, k = round(n / 3)",
     lambda a: _growth_variant(a, k_of=lambda n: n // 4)),
    ("each stretch has k = n // 3 sites (rounded down): the criterion takes k = round(n / 3)",
     lambda a: _growth_variant(a, k_of=lambda n: n // 3)),
)


def check_amplitude_growth(fn: Callable[[np.ndarray], np.ndarray]) -> bool:
    """Compare a learner's amplitude growth with :func:`amplitude_growth` (thirds) on fixed curves.

    ``fn`` takes curves of shape ``(..., n_sites)`` and returns ``(...)``. Prints one line per
    case (within 1e-6) and, when the answers are those of a usual mistake, names it: the portrait
    not standardised; the distance from the origin instead of the stretch's centroid; the ratio
    inverted (first third over last); ``k = n // 4`` or ``n // 3`` sites per stretch instead of
    ``round(n / 3)`` (the case of 62 sites tells the last one apart). An unfilled template
    (returning None) is reported as not written yet. Never raises on the learner's bug.

    Returns
    -------
    bool
        Whether every case passed.
    """
    l = np.arange(62)
    rng = np.random.default_rng(0)
    cases = [
        ("a growing oscillation", np.exp(l[:61] / 30) * np.sin(2 * np.pi * l[:61] / 12)),
        ("random walk, 5 units at once (shape (5, 61))", rng.standard_normal((5, 61)).cumsum(-1)),
        ("an oscillation on a trend, 62 sites (round(62 / 3) = 21)",
         np.exp(l / 40) * np.sin(2 * np.pi * l / 9) + 0.05 * l),
    ]
    results = [run_case(d, fn, (a,), amplitude_growth(a), rtol=0, atol=1e-6) for d, a in cases]
    hint = ""
    if not all(ok for _, ok, _ in results):
        fit = which_mistake(fn, [(a,) for _, a in cases], _GROWTH_MISTAKES, rtol=0, atol=1e-6)
        hint = f"Your growth looks like this usual mistake: {fit}." if fit else ""
    return report(results, hint=hint)


def check_cut(cut: RotationTest, run, dropped: int = 2) -> bool:
    """Check exercise 5.3's test without its first sites, and print what the chapter's criterion says.

    The usual slip, ``run.acts[2:]``, drops two *samples*, not two sites, and runs on to the same
    conclusion without a word; this check says so. It compares ``cut`` with what the exercise
    asks: the mean-trajectory reading (``"mean"``) of ``run.acts[:, dropped:]``, i.e.
    ``n_sites − dropped`` sites and every sample, its real ``R`` per unit equal to
    :func:`rotation_count` of :func:`unit_trajectories` of those sites (within 1e-6 turns).
    Then it prints the sites and samples used, the rotation count per turning step, and C9's
    verdict on ``cut`` (the chapter's criterion, :func:`verdicts`).

    Parameters
    ----------
    cut : RotationTest
        The learner's ``rotation_test(...)`` result.
    run : Activations
        The run it was computed from (``run.acts`` of shape (n_samples, n_sites, d_model)).
    dropped : int, default 2
        How many first sites the exercise drops.

    Returns
    -------
    bool
        Whether ``cut`` is the test the exercise asks for. Never raises on the learner's slip: it
        is reported (a ``cut`` that is no :class:`RotationTest` is reported too).
    """
    n_samples, n_sites, _ = run.acts.shape
    if not isinstance(cut, RotationTest):
        return report([("the test", False, f"expected the result of rot.rotation_test(...), got "
                                           f"{type(cut).__name__}")])
    want_sites = n_sites - dropped
    cases: list = []
    slip = ""
    if cut.n_sites == n_sites and cut.n_samples == n_samples - dropped:
        slip = (f"all {n_sites} sites and {n_samples - dropped} of {n_samples} samples: "
                f"run.acts[{dropped}:] drops samples, the sites are axis 1: run.acts[:, {dropped}:]")
    cases.append((f"sites used: {want_sites} (sites {dropped}…{n_sites - 1} of {n_sites})",
                  cut.n_sites == want_sites, slip or f"{cut.n_sites} sites"))
    cases.append((f"samples used: all {n_samples}", cut.n_samples == n_samples,
                  "the same slip" if slip else f"{cut.n_samples} samples"))
    cases.append(("the reading: R of the mean trajectory (\"mean\")", cut.reading == "mean",
                  f"the reading is {cut.reading!r}"))
    if all(ok for _, ok, _ in cases):
        want = rotation_count(unit_trajectories(run.acts[:, dropped:], "mean"))
        got = np.asarray(cut.real, dtype=float)
        same = got.shape == want.shape and bool(np.allclose(got, want, rtol=0, atol=1e-6))
        cases.append((f"R per unit of run.acts[:, {dropped}:]", same,
                      "its values differ: the last sites dropped, not the first?"
                      if got.shape == want.shape else f"shape {got.shape}, expected {want.shape}"))
    ok = report(cases)
    if ok:
        v = _c9(cut, model=getattr(run, "label", "?"), chapter="05_rotations")
        say(f"{cut.n_sites} sites: R per turning step {cut.mean_real / (cut.n_sites - 2):+.3f}, "
            f"z = {cut.z:.1f} against {cut.null.shape[0]} shuffles; C9's criterion: {v.outcome} "
            f"({v.value:.2f} turns at 64 sites).")
    return ok


# --------------------------------------------------------------------------- what we found


def _turn_words(t: RotationTest) -> str:
    """How the real curves of one reading compare with their null, the sign read right."""
    null = t.null_means
    fewer = abs(t.mean_real) < abs(null.mean())
    return (f"mean R = {t.mean_real:.2f} over {t.n_sites} sites ({t.abs_rescaled:.2f} turns at 64 sites); "
            f"the shuffled curves give {null.mean():.2f} ± {null.std():.2f}, so the real curves turn "
            f"{'fewer' if fewer else 'more'} times than the shuffled ones, {abs(t.z):.1f} null standard "
            "deviations away")


def findings_notes(runs, by_run: dict, analyses: dict, norm_shares, walk64: float,
                   white64: float) -> list[str]:
    """Chapter 5's "what we found", as sentences computed from its results.

    Parameters
    ----------
    runs : list of Activations
        The trained run first, then the random-init control and the 4-bit copy (if any; told
        apart by :func:`tdcourse.verdicts.run_kind`).
    by_run : dict
        ``{run.label: [C9 mean-trajectory, C9 per-sample, C10]}`` from :func:`verdicts`.
    analyses : dict
        ``{run.label: RotationAnalysis}`` from :func:`analyse`.
    norm_shares : pandas.DataFrame
        Class shares after dividing out the stream's RMS, indexed by run label, columns
        :data:`CLASSES`.
    walk64, white64 : float
        Mean R of a Gaussian random walk and of white noise over 64 sites
        (:func:`reference_rotation_counts`).

    Returns
    -------
    list of str
        One paragraph per run, then C9 and C10 against the paper (disagreements said plainly,
        the control read as a control: the architecture or training).
    """
    from .verdicts import run_kind, run_label

    out = []
    for run in runs:
        an = analyses[run.label]
        sh, ns = an.shares(), norm_shares.loc[run.label]
        out.append(
            f"{run_label(run.label)[:1].upper() + run_label(run.label)[1:]}. R of the mean trajectory: "
            f"{_turn_words(an.mean)}. The mean of per-sample R: {_turn_words(an.per_sample)}. Classes: "
            f"{sh['orbit']:.1%} orbits, {sh['outward spiral']:.1%} outward spirals, {sh['inward spiral']:.1%} "
            f"inward spirals; after dividing out the stream's norm: {ns['orbit']:.1%} orbits, "
            f"{ns['outward spiral']:.1%} outward spirals.")
    trained = runs[0].label
    ctrl = next((r.label for r in runs[1:] if run_kind(r.label) == "control"), None)
    c9_mean, c9_sample, c10 = by_run[trained]
    t_mean = analyses[trained].mean
    lo, hi = PAPER_MEAN_R / _BAND, PAPER_MEAN_R * _BAND
    null64 = float(rescale_count(abs(t_mean.null_means.mean()), t_mean.n_sites))
    signs = [t_mean.mean_real, t_mean.null_means.mean(), walk64, white64]
    c9 = (f"C9. The paper: units circle about 10 times over 64 sites ({PAPER_MEAN_R} quoted), and the counts "
          f"differ from those of the same curves with the layers shuffled. Ours, trained: "
          f"{t_mean.abs_rescaled:.2f} turns at 64 sites "
          f"(mean trajectory, {c9_mean.outcome}), {analyses[trained].per_sample.abs_rescaled:.2f} (per sample, "
          f"{c9_sample.outcome}). ")
    if all(s < 0 for s in signs):
        c9 += ("The mean counts here are all negative, clockwise: a portrait of (x, ∇x) runs clockwise whenever it "
               "turns (above the x axis x grows, below it x shrinks), so the sign says nothing about the model "
               "and the counts are compared by size. ")
    yard = [(name, v) for name, v in (("a Gaussian random walk", abs(walk64)),
                                      ("the layer-shuffled curves themselves", null64),
                                      ("white noise", abs(white64))) if lo <= v <= hi]
    if yard:
        said = [f"{name} ({v:.2f})" for name, v in yard]
        c9 += (f"The criterion's band for 'about 10', [{lo:.2f}, {hi:.2f}] turns, also holds "
               + (", ".join(said[:-1]) + " and " + said[-1] if len(said) > 1 else said[0])
               + ": a count near 10 is what this measure gives a curve of 64 steps, with or without rotation "
                 "in it. ")
    fewer = abs(t_mean.mean_real) < abs(t_mean.null_means.mean())
    c9 += (f"What sets the real curves apart is the null: they turn {'fewer' if fewer else 'more'} times than "
           f"their layer shuffles ({abs(t_mean.z):.1f} null standard deviations away)"
           + (", as smooth curves do: neighbouring sites are alike (the continuity of C1), which the shuffle "
              "destroys. That is a difference, as C9 asks, but not one that needs units to oscillate."
              if fewer else "."))
    if ctrl:
        c_mean = analyses[ctrl].mean
        close = abs(c_mean.abs_rescaled - t_mean.abs_rescaled) < 0.25 * t_mean.abs_rescaled
        c9 += (f" The random-init control turns {c_mean.abs_rescaled:.2f} times ({by_run[ctrl][0].outcome}): "
               + ("within a quarter of the trained count, so the count comes with the architecture, not with "
                  "training." if close else "far from the trained count, so training changes it."))
    out.append(c9)
    c10_text = (f"C10. The paper: some units orbit, others spiral outward. Ours, trained: {c10.outcome}; "
                f"{c10.uncertainty}.")
    sh, sh_n = analyses[trained].shares(), norm_shares.loc[trained]
    if sh["outward spiral"] > 0.5 and sh_n["outward spiral"] < 0.05:
        c10_text += (f" Almost every unit spirals outward, but only {sh_n['outward spiral']:.1%} still do once "
                     "the stream's norm is divided out: the spirals are the growth of the residual stream, not "
                     "units leaving orbits.")
    if ctrl:
        cv = by_run[ctrl][2]
        n_units = analyses[ctrl].classes.size
        ci = stats.proportion_ci(int(round(analyses[ctrl].shares()["outward spiral"] * n_units)), n_units)
        c10_text += (f" The random-init control: {cv.outcome}; {cv.uncertainty}."
                     + (f" Its outward-spiral share sits on the 5 % threshold (95 % CI {ci.lo:.1%}–{ci.hi:.1%}), "
                        "so this outcome could go either way." if ci.lo < 0.05 <= ci.hi else ""))
    out.append(c10_text)
    return out
