"""The residual stream as a moving vector: norm, density, direction and speed (claims C4, C5, C6).

The paper states that the residual-stream (RS) activations "grow denser over layers" and
"accelerate", and its first author adds that the cosine similarity between consecutive RS
vectors rises with depth. It gives no formula for density, velocity or acceleration; the
ones used here are our choices, each with a second reasonable choice beside it:

Norm
    ``‖h_l‖₂`` of every sample at every site (its distribution over samples, not only a mean).

Density (C4), two families, each on the raw vector and on an outlier-trimmed one
    * **fraction above τ**: the share of units with ``|h^u| > τ · s(h)``, ``s`` the RMS of the
      vector over units, for several τ (:func:`fraction_above`);
    * **Hoyer density** ``(‖h‖₁/‖h‖₂ − 1) / (√D − 1)``: 1 when every unit has the same
      magnitude, 0 when one unit holds everything; it is one minus Hoyer's (2004) sparsity
      (:func:`hoyer_density`).
    A few *massive activations* (Sun et al. 2024) can hold most of ``‖h‖²`` at late sites: they
    inflate the RMS and the L2 norm, so both raw indices read "sparse" whatever the other
    units do. The **trimmed** variants drop, per vector, the ``trim`` share of units with the
    largest ``|h|`` before computing the scale (fraction above τ) or the index (Hoyer).

Direction (C5)
    cosine similarity between ``h_l`` and ``h_{l+1}`` (:func:`consecutive_cosine`).

Speed (C6)
    velocity ``V_l = ‖h_{l+1} − h_l‖₂``, its change ``A_l = V_{l+1} − V_l`` (acceleration), and
    the relative velocity ``V_l / ‖h_l‖₂`` that removes norm growth (:func:`velocity`).

"Consecutive" is either the next **site** (``step="site"``: resid_pre l → resid_mid l is the
attention update, resid_mid l → resid_pre l+1 the MLP update) or the next **layer**
(``step="layer"``: resid_pre l → resid_pre l+1, a whole block). All functions are vectorised
numpy over samples, sites and units.

Inputs follow the course's rule (:mod:`tdcourse.checks`): float32 / float64, no NaN or inf (a
NaN would silently count as "not above τ"), no float16. The smallest run that carries a
verdict: :data:`MIN_SAMPLES` = 20 samples (the trends' intervals are bootstrapped over samples)
and :data:`MIN_LAYERS` = 4 layers (C5 and C6 are read on layer steps too, and a Spearman trend
needs at least 3 of them; C6's thirds need 2 steps each). :func:`verdicts` and
:func:`trend_table` refuse smaller runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import streaming
from .capture import check_acts
from .checks import check_array, check_run_size
from . import stats
from .exercises import report, run_case
from .memo import cached
from .verdicts import Verdict, judge
from .verdicts import number as _num

__all__ = [
    "MIN_SAMPLES",
    "MIN_LAYERS",
    "DEFAULT_TAUS",
    "DEFAULT_TRIM",
    "MIN_VELOCITY_RATIO",
    "norms",
    "fraction_above",
    "hoyer_density",
    "density_indices",
    "steps",
    "consecutive_cosine",
    "velocity",
    "acceleration",
    "step_sites",
    "verdicts",
    "check_hoyer_density",
    "check_velocity",
    "check_fraction_above",
    "check_cosine_from_norms",
]

#: Thresholds of :func:`fraction_above`, in units of the vector's RMS.
DEFAULT_TAUS = (0.1, 0.5, 1.0)
#: Share of units (largest |h| per vector) left out by the trimmed variants: 1 % (6 of 576
#: SmolLM2-135M units, 41 of 4096 Llama 3.1 8B units).
DEFAULT_TRIM = 0.01
#: C6's effect-size floor: the mean velocity over the last third of the steps must be at least
#: this many times that over the first third (for a step kind to count as accelerating), so
#: that a curve that rises by a few per cent, significantly but barely, is not read as the
#: paper's acceleration.
MIN_VELOCITY_RATIO = 1.5
#: The fewest samples (N) and layers a verdict on C4-C6 is computed from (see the module's docstring).
MIN_SAMPLES = 20
MIN_LAYERS = 4
_ANALYSIS = "Chapter 3's growth analysis (C4-C6)"


# --------------------------------------------------------------------------- validation


def _as_vectors(h: np.ndarray, name: str = "h") -> np.ndarray:
    h = np.asarray(h)
    if h.ndim < 1 or h.shape[-1] < 2:
        raise ValueError(f"{name} must have shape (..., d_model) with d_model >= 2, got {h.shape}")
    return check_array(h, name)  # float32 / float64, finite (a NaN would count as "not above τ")


def _as_acts(acts: np.ndarray) -> np.ndarray:
    return check_acts(acts, min_sites=2, why="to compare consecutive sites")


def _n_trim(d: int, trim: float) -> int:
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be a share of units in [0, 0.5), got {trim}")
    return int(np.ceil(trim * d)) if trim > 0 else 0


def _trimmed_abs(h: np.ndarray, trim: float) -> np.ndarray:
    """|h| without the ``trim`` share of largest entries along the last axis (order lost)."""
    a = np.abs(h)
    k = _n_trim(h.shape[-1], trim)
    if k == 0:
        return a
    d = h.shape[-1]
    return np.partition(a, d - k - 1, axis=-1)[..., : d - k]


# Bytes of float64 work per block of vectors: the per-vector measures below run a block of
# vectors at a time, so an (N, 64, 4096) float32 array (1 GiB) never gets a full-size float64
# copy (2 GiB) or |h| / partition temporaries of its own size. Each vector's value is computed
# exactly as on the whole array (the reductions run along the unit axis, vector by vector).
_BLOCK_BYTES = 32 << 20


def _per_vector(h: np.ndarray, fn, n_lead_out: int = 0) -> np.ndarray:
    """``fn`` on blocks of the vectors of ``h`` (shape ``(..., d)``): ``fn`` maps ``(m, d)`` to
    ``(k_1, …, k_j, m)`` with ``j = n_lead_out``; the blocks are joined on their last axis and
    reshaped to ``(k_1, …, k_j, *h.shape[:-1])``."""
    lead, d = h.shape[:-1], h.shape[-1]
    flat = h.reshape(-1, d)
    step = max(1, _BLOCK_BYTES // (8 * d))
    parts = []
    for i in range(0, max(flat.shape[0], 1), step):
        parts.append(fn(flat[i : i + step]))
        streaming.release(h)  # a cached capture's pages read for this block do not stay resident
    out = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
    return out.reshape(out.shape[:n_lead_out] + lead)


def _sample_blocks(n_samples: int, per_sample_bytes: int):
    """Slices of samples of about ``_BLOCK_BYTES`` each."""
    step = max(1, _BLOCK_BYTES // max(1, per_sample_bytes))
    return [slice(i, min(i + step, n_samples)) for i in range(0, n_samples, step)]


# --------------------------------------------------------------------------- norm and density


def norms(acts: np.ndarray) -> np.ndarray:
    """Euclidean norm of every residual vector.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)

    Returns
    -------
    ndarray of shape (n_samples, n_sites), float64
    """
    acts = _as_acts(acts)
    out = np.empty(acts.shape[:2])
    # a block of samples at a time, a cached capture's pages given back after each block: reading
    # the whole map at once would leave all of it resident (1.8 GiB for two 8B-shaped runs of N = 1,800)
    for sl in _sample_blocks(acts.shape[0], 4 * acts.shape[1] * acts.shape[2]):
        block = acts[sl]
        out[sl] = np.sqrt(np.einsum("nsd,nsd->ns", block, block, dtype=np.float64))
        streaming.release(acts)
    return out


def fraction_above(
    h: np.ndarray,
    taus: float | Sequence[float] = DEFAULT_TAUS,
    trim: float = 0.0,
    relative: bool = True,
) -> np.ndarray:
    """Share of units whose magnitude exceeds τ times the vector's scale.

    Parameters
    ----------
    h : ndarray of shape (..., d_model)
        Vectors (e.g. ``acts`` of shape ``(n_samples, n_sites, d_model)``, or the mean over
        samples of shape ``(n_sites, d_model)``).
    taus : float or sequence of n_taus floats, each > 0
    trim : float in [0, 0.5)
        The scale is the RMS over units *without* the ``ceil(trim · d_model)`` units of largest
        ``|h|`` in that vector (0: the plain RMS). Every unit is still counted.
    relative : bool
        True: thresholds τ·scale (a scale-free density). False: τ in activation units (then the
        share rises with the norm alone; this is what a heat map on a fixed colour scale shows).

    Returns
    -------
    ndarray of shape (n_taus, ...) or (...) for a scalar ``taus``
        Values in [0, 1].
    """
    h = _as_vectors(h)
    scalar = np.ndim(taus) == 0
    t = np.atleast_1d(np.asarray(taus, dtype=float))
    if t.ndim != 1 or np.any(t <= 0):
        raise ValueError(f"taus must be positive numbers, got {taus!r}")
    _n_trim(h.shape[-1], trim)  # checks trim

    def block(x: np.ndarray) -> np.ndarray:  # (m, d) -> (n_taus, m)
        a = np.abs(x)
        if relative:
            kept = _trimmed_abs(x, trim)
            scale = np.sqrt(np.mean(np.square(kept, dtype=np.float64), axis=-1))
        else:
            scale = np.ones(x.shape[:-1])
        return np.stack([np.mean(a > tau * scale[..., None], axis=-1) for tau in t])  # loop over τ only

    out = _per_vector(h, block, n_lead_out=1)
    return out[0] if scalar else out


def hoyer_density(h: np.ndarray, trim: float = 0.0) -> np.ndarray:
    """One minus Hoyer's sparsity: ``(‖h‖₁/‖h‖₂ − 1) / (√D − 1)``, in [0, 1].

    1 when all ``D`` units have the same magnitude; 0 for a one-hot vector; about 0.80 for a
    Gaussian vector (``√(2/π)·√D``-ish ratio); NaN for an all-zero vector.

    Parameters
    ----------
    h : ndarray of shape (..., d_model)
    trim : float in [0, 0.5)
        Drop the ``ceil(trim · d_model)`` units of largest ``|h|`` of each vector first
        (``D`` is then the number of units kept).

    Returns
    -------
    ndarray of shape (...)
    """
    h = _as_vectors(h)
    _n_trim(h.shape[-1], trim)  # checks trim

    def block(x: np.ndarray) -> np.ndarray:
        a = _trimmed_abs(x, trim).astype(np.float64, copy=False)
        d = a.shape[-1]
        l1 = a.sum(-1)
        l2 = np.sqrt(np.square(a).sum(-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return (l1 / l2 - 1.0) / (np.sqrt(d) - 1.0)

    return _per_vector(h, block)


@cached
def density_indices(
    acts: np.ndarray, taus: Sequence[float] = DEFAULT_TAUS, trim: float = DEFAULT_TRIM
) -> dict[str, np.ndarray]:
    """Every density index of this module, raw and trimmed, for every vector.

    Parameters
    ----------
    acts : ndarray of shape (..., d_model)
    taus : sequence of float
    trim : float
        Share of largest-|h| units left out by the trimmed variants.

    Returns
    -------
    dict of str -> ndarray of shape (...)
        Keys ``"Hoyer"``, ``"Hoyer, trimmed"``, ``"|h| > τ·RMS"`` and
        ``"|h| > τ·RMS, trimmed"`` for each τ (τ written out), in that order.
    """
    acts = _as_vectors(acts, "acts")
    t = np.atleast_1d(np.asarray(taus, dtype=float))
    if t.ndim != 1 or np.any(t <= 0):
        raise ValueError(f"taus must be positive numbers, got {taus!r}")
    d = acts.shape[-1]
    k = _n_trim(d, trim)

    def hoyer(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a.sum(-1) / np.sqrt(np.square(a).sum(-1)) - 1.0) / (np.sqrt(a.shape[-1]) - 1.0)

    def above(a: np.ndarray, kept: np.ndarray) -> list[np.ndarray]:
        scale = np.sqrt(np.mean(np.square(kept, dtype=np.float64), axis=-1))
        return [np.mean(a > tau * scale[..., None], axis=-1) for tau in t]

    def block(x: np.ndarray) -> np.ndarray:
        # |h| and its trimmed partition once per block, shared by the four families (the
        # same operations as hoyer_density and fraction_above, so the same values)
        a = np.abs(x)
        kept = np.partition(a, d - k - 1, axis=-1)[..., : d - k] if k else a
        return np.stack([hoyer(a), hoyer(kept), *above(a, a), *above(a, kept)])

    res = _per_vector(acts, block, n_lead_out=1)
    out = {"Hoyer": res[0], "Hoyer, trimmed": res[1]}
    for i, tau in enumerate(t):
        out[f"|h| > {tau:g}·RMS"] = res[2 + i]
        out[f"|h| > {tau:g}·RMS, trimmed"] = res[2 + len(t) + i]
    return out


# --------------------------------------------------------------------------- direction and speed


def step_sites(sites: Sequence[str], step: str = "site") -> list[str]:
    """Names of the steps of :func:`steps`: ``"resid_pre.0→resid_mid.0"``, …

    Parameters
    ----------
    sites : sequence of n_sites str
    step : {"site", "layer"}

    Returns
    -------
    list of str, length n_steps
    """
    idx = _step_index(len(sites), step)
    return [f"{sites[i]}→{sites[j]}" for i, j in zip(*idx)]


def _step_index(n_sites: int, step: str) -> tuple[np.ndarray, np.ndarray]:
    if step == "site":
        i = np.arange(n_sites - 1)
        return i, i + 1
    if step == "layer":
        if n_sites % 2 or n_sites < 4:
            raise ValueError(f"step='layer' needs 2 sites per layer and at least 2 layers, got {n_sites} sites")
        i = np.arange(0, n_sites - 2, 2)
        return i, i + 2
    raise ValueError(f"step must be 'site' (next site) or 'layer' (resid_pre l → resid_pre l+1), got {step!r}")


def steps(acts: np.ndarray, step: str = "site") -> tuple[np.ndarray, np.ndarray]:
    """The states before and after each step along depth.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    step : {"site", "layer"}
        ``"site"``: every consecutive pair of sites (``n_steps = n_sites − 1``; attention and MLP
        updates alternate). ``"layer"``: ``resid_pre.l → resid_pre.{l+1}``
        (``n_steps = n_layers − 1``; one whole block each).

    Returns
    -------
    before, after : ndarrays of shape (n_samples, n_steps, d_model)
        Views into ``acts`` where possible.
    """
    acts = _as_acts(acts)
    i, j = _step_index(acts.shape[1], step)
    if step == "site":
        return acts[:, :-1], acts[:, 1:]
    return acts[:, i], acts[:, j]


def consecutive_cosine(acts: np.ndarray, step: str = "site") -> np.ndarray:
    """Cosine similarity between the residual vector before and after each step.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    step : {"site", "layer"}
        See :func:`steps`.

    Returns
    -------
    ndarray of shape (n_samples, n_steps), float64
        NaN where a vector is zero.
    """
    acts = _as_acts(acts)
    i, _ = _step_index(acts.shape[1], step)
    out = np.empty((acts.shape[0], len(i)))
    # a block of samples at a time: layer steps gather copies of the sites
    for sl in _sample_blocks(acts.shape[0], 4 * acts.shape[1] * acts.shape[2]):
        a, b = steps(acts[sl], step)
        dot = np.einsum("nsd,nsd->ns", a, b, dtype=np.float64)
        na = np.sqrt(np.einsum("nsd,nsd->ns", a, a, dtype=np.float64))
        nb = np.sqrt(np.einsum("nsd,nsd->ns", b, b, dtype=np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[sl] = dot / (na * nb)
        streaming.release(acts)
    return out


def velocity(acts: np.ndarray, step: str = "site", relative: bool = False) -> np.ndarray:
    """Speed of the residual stream: ``‖h_after − h_before‖₂`` for each step.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    step : {"site", "layer"}
        See :func:`steps`.
    relative : bool
        Divide by ``‖h_before‖₂`` (the size of the update relative to the stream it is added to).

    Returns
    -------
    ndarray of shape (n_samples, n_steps), float64
    """
    acts = _as_acts(acts)
    i, j = _step_index(acts.shape[1], step)
    v = np.empty((acts.shape[0], len(i)))
    # a block of samples at a time: the difference (and its float64 copy) stays small
    for sl in _sample_blocks(acts.shape[0], 8 * acts.shape[1] * acts.shape[2]):
        a, b = steps(acts[sl], step)
        d = (b - a).astype(np.float64, copy=False)
        v[sl] = np.sqrt(np.einsum("nsd,nsd->ns", d, d))
        if relative:
            na = np.sqrt(np.einsum("nsd,nsd->ns", a, a, dtype=np.float64))
            with np.errstate(invalid="ignore", divide="ignore"):
                v[sl] = v[sl] / na
        streaming.release(acts)
    return v


def acceleration(v: np.ndarray) -> np.ndarray:
    """Change of velocity from one step to the next: ``A_l = V_{l+1} − V_l``.

    Parameters
    ----------
    v : ndarray of shape (n_samples, n_steps)
        From :func:`velocity`.

    Returns
    -------
    ndarray of shape (n_samples, n_steps − 1)
    """
    v = check_array(v, "v").astype(np.float64, copy=False)
    if v.ndim != 2 or v.shape[1] < 2:
        raise ValueError(f"v must have shape (n_samples, n_steps >= 2), got {v.shape}")
    return np.diff(v, axis=1)


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class _Rise:
    name: str
    trend: stats.Trend

    @property
    def rises(self) -> bool:
        return self.trend.change.lo > 0 and self.trend.rho.lo > 0

    @property
    def falls(self) -> bool:
        return self.trend.change.hi < 0 and self.trend.rho.hi < 0


def _rise(name: str, y: np.ndarray, n_boot: int, seed: int) -> _Rise:
    return _Rise(name, stats.curve_trend(y, n_boot=n_boot, seed=seed))


_RISE = ("the Spearman ρ of the sample-mean curve with depth and the late-third minus early-third "
         "difference both have 95 % bootstrap intervals (resampling samples) above 0")


def verdicts(run, chapter: str = "", n_boot: int = 1000, seed: int = 0,
             taus: Sequence[float] = DEFAULT_TAUS, trim: float = DEFAULT_TRIM,
             density: dict[str, np.ndarray] | None = None, skip_sites: int = 0,
             min_ratio: float | None = MIN_VELOCITY_RATIO, skip_last_sites: int = 0) -> list[Verdict]:
    """Claims C4 (density), C5 (cosine) and C6 (velocity) for one run.

    Parameters
    ----------
    run : tdcourse.capture.Activations
        ``run.acts`` of shape (n_samples, n_sites, d_model).
    chapter : str
    n_boot, seed : bootstrap settings (samples are resampled)
    taus, trim : density settings, see :func:`density_indices`
    density : dict, optional
        ``density_indices(run.acts, taus, trim)`` computed already (the chapter's), reused
        instead of computed again (at Llama 3.1 8B's size it is the costly part).
    skip_sites : int, default 0
        Leave out the first ``skip_sites`` sites (an even number: whole layers) from every
        curve; 2 drops the embedding's site pair, i.e. the first attention and MLP steps.
    min_ratio : float or None, default :data:`MIN_VELOCITY_RATIO`
        C6's effect-size floor on late / early velocity (None: no floor, the criterion
        before the robustness page).
    skip_last_sites : int, default 0
        Leave out the last ``skip_last_sites`` sites (an even number: whole layers); 2 drops
        the last layer, whose output feeds the final norm and the unembedding.

    Returns
    -------
    list of Verdict
        ``[C4, C5, C6]``.

    Raises
    ------
    ValueError
        ``skip_sites`` or ``skip_last_sites`` odd or negative.
    tdcourse.checks.RunTooSmallError
        Fewer than :data:`MIN_LAYERS` layers or :data:`MIN_SAMPLES` samples, before or after the
        layers left out.
    """
    acts = _as_acts(run.acts)
    check_run_size(acts, MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)
    for name, v in (("skip_sites", skip_sites), ("skip_last_sites", skip_last_sites)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v % 2 or v < 0:
            raise ValueError(f"{name} must be an even whole number >= 0 (whole layers), got {v!r}")
    keep = slice(skip_sites, acts.shape[1] - skip_last_sites)
    if skip_sites or skip_last_sites:  # what is left must still carry a trend over layer steps
        check_run_size(acts[:, keep], MIN_SAMPLES, MIN_LAYERS,
                       f"{_ANALYSIS} with {skip_sites // 2} layer(s) left out at the start and {skip_last_sites // 2} "
                       "at the end")
    acts = acts[:, keep]
    out = []

    # C4: primary index = trimmed Hoyer; the claim must hold for every index family to agree.
    dens = ({k: v[:, keep] for k, v in density.items()} if density is not None
            else density_indices(acts, taus, trim))
    rises = {k: _rise(k, v, n_boot, seed) for k, v in dens.items()}
    primary = rises["Hoyer, trimmed"]
    n_up = sum(r.rises for r in rises.values())
    n_down = sum(r.falls for r in rises.values())
    t = primary.trend
    out.append(judge(
        "C4", "Activations grow denser over layers: early layers sparse, later layers dense.",
        f"density index per sample and site; it 'rises' when {_RISE}. Agrees: the trimmed Hoyer "
        f"density and every other index ({len(rises)} in all: Hoyer and |h| > τ·RMS for τ in "
        f"{list(taus)}, raw and with the top {trim:.0%} of units trimmed) rise; partly: some rise; "
        "disagrees: none",
        run.label, t.rho.estimate,
        agrees=primary.rises and n_up == len(rises), partly=n_up > 0,
        uncertainty=f"ρ 95 % CI [{t.rho.lo:.3f}, {t.rho.hi:.3f}]; late − early {t.change}",
        detail=f"value = Spearman ρ of the trimmed Hoyer density with depth. {n_up} of {len(rises)} indices "
               f"rise, {n_down} fall ({', '.join(k for k, r in rises.items() if r.rises) or 'none rise'}).",
        chapter=chapter))

    # C5: cosine between consecutive sites; second choice: whole-layer steps.
    cs = _rise("site", consecutive_cosine(acts, "site"), n_boot, seed)
    cl = _rise("layer", consecutive_cosine(acts, "layer"), n_boot, seed)
    t = cs.trend
    out.append(judge(
        "C5", "Cosine similarity between consecutive residual-stream vectors rises with depth.",
        f"cosine(h_l, h_l+1) per sample over consecutive sites; it rises when {_RISE}. Agrees: it rises "
        "for site steps and for whole-layer steps (resid_pre l → resid_pre l+1); partly: for one of them",
        run.label, t.rho.estimate, agrees=cs.rises and cl.rises, partly=cs.rises or cl.rises,
        uncertainty=f"ρ 95 % CI [{t.rho.lo:.3f}, {t.rho.hi:.3f}]; late − early {t.change}",
        detail=f"value = Spearman ρ (site steps). Mean cosine {t.early.estimate:.3f} over the first third of "
               f"steps, {t.late.estimate:.3f} over the last; layer steps ρ = {cl.trend.rho.estimate:.3f} "
               f"[{cl.trend.rho.lo:.3f}, {cl.trend.rho.hi:.3f}].",
        chapter=chapter))

    # C6: velocity; second choice: whole-layer steps; relative velocity reported beside it.
    vs = _rise("site", velocity(acts, "site"), n_boot, seed)
    vl = _rise("layer", velocity(acts, "layer"), n_boot, seed)
    rel = _rise("relative", velocity(acts, "site", relative=True), n_boot, seed)
    t = vs.trend
    rel_word = "also rises" if rel.rises else ("falls" if rel.falls else "shows no clear trend")

    def fast(r: _Rise) -> bool:
        return r.rises and (min_ratio is None or r.trend.ratio.estimate >= min_ratio)

    floor = ("" if min_ratio is None else
             f" and its late-third / early-third ratio (mean curve) is at least {min_ratio:g}")
    out.append(judge(
        "C6", "The residual stream accelerates: its velocity ‖h_l+1 − h_l‖ grows with depth.",
        f"velocity ‖h_l+1 − h_l‖ per sample; it rises when {_RISE}{floor}. Agrees: it rises for site steps "
        "and for whole-layer steps; partly: for one of them",
        run.label, t.rho.estimate, agrees=fast(vs) and fast(vl), partly=fast(vs) or fast(vl),
        uncertainty=f"ρ 95 % CI [{t.rho.lo:.3f}, {t.rho.hi:.3f}]; late / early {t.ratio}",
        detail=f"value = Spearman ρ (site steps); layer steps ρ = {vl.trend.rho.estimate:.3f}, late / early "
               f"{vl.trend.ratio.estimate:.3g}. Relative "
               f"velocity ‖h_l+1 − h_l‖/‖h_l‖ {rel_word} (ρ = {rel.trend.rho.estimate:.3f}, late / early "
               f"{rel.trend.ratio.estimate:.3g}): "
               + ("the speed-up is more than norm growth." if rel.rises else
                  "the speed-up comes with the norm, not faster than it."),
        chapter=chapter))
    return out


# --------------------------------------------------------------------------- exercise checks






def trend_table(runs, density: dict, n_boot: int = 1000, seed: int = 0):
    """Every density index's trend with depth, per run, as a table (chapter 3).

    Parameters
    ----------
    runs : list of Activations
        Runs from :func:`tdcourse.load_runs`.
    density : dict
        ``{run.label: {index name: (n_samples, n_sites)}}`` from :func:`density_indices`.
    n_boot, seed : int
        Bootstrap resamples of the samples and their seed (:func:`tdcourse.stats.curve_trend`).

    Returns
    -------
    pandas.DataFrame
        One row per run and index: ``model`` (``plots.run_tag``), ``index``, Spearman ρ with
        depth and last-minus-first-third change with 95 % intervals, and ``rises`` (both
        intervals above 0).
    """
    import pandas as pd

    from .plots import run_tag

    rows = []
    for run in runs:
        check_run_size(run.acts, MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)
        for name, v in density[run.label].items():
            t = stats.curve_trend(v, n_boot=n_boot, seed=seed)
            rows.append({"model": run_tag(run), "index": name,
                         "ρ with depth [95 % CI]": f"{t.rho.estimate:+.2f} [{t.rho.lo:+.2f}, {t.rho.hi:+.2f}]",
                         "first third": round(t.early.estimate, 3), "last third": round(t.late.estimate, 3),
                         "last − first [95 % CI]": (f"{t.change.estimate:+.3f} [{t.change.lo:+.3f}, "
                                                    f"{t.change.hi:+.3f}]"),
                         "rises": bool(t.rho.lo > 0 and t.change.lo > 0)})
    return pd.DataFrame(rows)


def _trend_word(t) -> str:
    """"rises", "falls" or "has no clear trend" for a :func:`tdcourse.stats.curve_trend` result."""
    if t.rho.lo > 0 and t.change.lo > 0:
        return "rises"
    if t.rho.hi < 0 and t.change.hi < 0:
        return "falls"
    return "has no clear trend"


def _largest_share(acts: np.ndarray) -> float:
    """Median over samples of the largest unit's share of ``‖h‖²`` at the last site."""
    last = streaming.read(acts, np.s_[:, -1], np.float64)  # plain reads: one site of every sample
    sq = np.square(last)
    return float(np.median(sq.max(1) / sq.sum(1)))


def findings_notes(runs, found, density: dict, trends, mean_map: dict | None = None) -> list[str]:
    """Chapter 3's "what we found", as sentences computed from its results.

    Parameters
    ----------
    runs : list of Activations
        The trained run first, then the random-init control (if any).
    found : list of Verdict
        The chapter's verdicts for all runs (from :func:`verdicts`).
    density : dict
        ``{run.label: {index: (n_samples, n_sites)}}`` from :func:`density_indices`.
    trends : pandas.DataFrame
        From :func:`trend_table`.
    mean_map : dict, optional
        ``{run.label: (fixed, scale_free)}``, two arrays of shape (n_sites,): the share of units
        of the mean vector above one fixed threshold and above 0.5 × its trimmed RMS (the
        chapter's reading of the paper's Figure 1B). Adds the sentence on the map filling in.

    Returns
    -------
    list of str
        One paragraph per run (norm, C4 with the indices that rise and those that do not, C5,
        C6 with what the relative velocity says), then, with a random-init control, what the
        control shows beside the trained model (growth, the mean map, alignment). Every number
        and every conclusion is computed here; no list is ever empty.
    """
    from .verdicts import run_label

    by = {(v.claim, v.model): v for v in found}
    out = []
    facts = {}
    for run in runs:
        c4, c5, c6 = (by[(c, run.label)] for c in ("C4", "C5", "C6"))
        med = np.median(norms(run.acts), 0)
        d = trends[trends.model == run_label(run)]
        up = [str(i) for i, r in zip(d["index"], d["rises"]) if r]
        flat = [str(i) for i, r in zip(d["index"], d["rises"]) if not r]
        rel = stats.curve_trend(velocity(run.acts, relative=True))
        growth, share = med[-1] / med[1], _largest_share(run.acts)
        facts[run.label] = (growth, share, up, rel)
        dens = f"C4 density, {c4.outcome}: {len(up)} of {len(d)} indices rise with depth"
        if up and flat:
            dens += f" ({'; '.join(up)}), {len(flat)} do not ({'; '.join(flat)})."
            if not any(k.endswith("trimmed") for k in flat):
                dens += (" Only raw indices fail to rise: the few largest units, which the trimmed "
                         "variants leave out, hold the raw ones down.")
        else:
            dens += "."
        c5_more = c5.detail.split(". ", 1)[1] if ". " in c5.detail else c5.detail
        rel_word = _trend_word(rel)
        speed = (f"C6 velocity, {c6.outcome}: ρ = {c6.value:+.2f} with depth, last / first third "
                 f"{_ratio_text(c6)}; the relative velocity ‖h_l+1 − h_l‖/‖h_l‖ {rel_word} (last / first "
                 f"third {rel.ratio.estimate:.2g})")
        v_rises = c6.value > 0 and c6.outcome != "disagrees"
        if rel_word == "falls":
            speed += (": each update grows, but more slowly than the stream it is added to, so the "
                      "speed-up comes with the norm." if v_rises else ".")
        elif rel_word == "rises":
            speed += ": the updates grow faster than the stream itself."
        else:
            speed += "."
        out.append(
            f"{run_label(run)}. Norm: the median ‖h‖ grows {_num(growth)}-fold from {run.sites[1]} "
            f"to {run.sites[-1]}; at the last site the largest unit holds a median {share:.0%} of ‖h‖². "
            f"{dens} C5 cosine, {c5.outcome}: ρ = {c5.value:+.2f} over site steps. {c5_more} {speed}")

    ctrl = next((r for r in runs[1:] if run_label(r).startswith("random-init control")), None)
    if ctrl is not None:
        tr = runs[0]
        (gt, st, _, _), (gc, sc, up_c, rel_c) = facts[tr.label], facts[ctrl.label]
        size = (f"Trained beside the control. Size: the median ‖h‖ grows {_num(gt)}-fold in the "
                f"trained model and {_num(gc)}-fold in the control")
        if gt > 1 and gc > 1:
            size += ": both grow, because every block adds its update to the sum"
        if gt > 1.5 * gc:
            size += f"; training makes the growth {_num(gt / gc)} times larger"
        if st > 2 * sc:
            size += (f" and concentrates it in a few units (the largest unit's median share of ‖h‖² at the "
                     f"last site: {st:.0%} against {sc:.0%})")
        parts = [size + "."]
        if mean_map is not None and tr.label in mean_map and ctrl.label in mean_map:
            (ft, qt), (fc, qc) = mean_map[tr.label], mean_map[ctrl.label]
            m = (f"The mean map on one colour scale (the paper's Figure 1B): the share of units above the "
                 f"fixed threshold goes from {ft[1]:.0%} to {ft[-1]:.0%} in the trained model and from "
                 f"{fc[1]:.0%} to {fc[-1]:.0%} in the control; above 0.5 × the trimmed RMS from {qt[1]:.0%} "
                 f"to {qt[-1]:.0%} and from {qc[1]:.0%} to {qc[-1]:.0%}.")
            if fc[-1] - fc[1] >= 0.1 and not up_c:
                m += (" The control's map fills in while none of its per-sample density indices rises: on a "
                      "fixed colour scale, norm growth alone fills a map in, so the filling-in is not by "
                      "itself evidence of density.")
            parts.append(m)
        c5t, c5c = by[("C5", tr.label)], by[("C5", ctrl.label)]
        align = (f"Alignment: the cosine's ρ with depth is {c5t.value:+.2f} in the trained model and "
                 f"{c5c.value:+.2f} in the control")
        if c5c.outcome != "disagrees" and _trend_word(rel_c) == "falls":
            align += (f"; the control's relative velocity falls (last / first third "
                      f"{rel_c.ratio.estimate:.2g}), and for a small update orthogonal to the stream "
                      "1 − cos ≈ ½ (V/‖h‖)²: as the updates shrink against the stream they are added to, "
                      "consecutive states align, so the rise needs no training")
        parts.append(align + ".")
        out.append(" ".join(parts))
    return out


def _ratio_text(v: Verdict) -> str:
    """The late / early ratio with its interval, from a C6 verdict's ``uncertainty``."""
    return v.uncertainty.split("late / early ", 1)[1] if "late / early " in v.uncertainty else v.uncertainty


def _hoyer_mistakes(h: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """What the usual mistakes in a Hoyer density give on ``h`` (for :func:`check_hoyer_density`)."""
    h = np.asarray(h, dtype=np.float64)
    d = h.shape[-1]
    l2 = np.linalg.norm(h, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.abs(h).sum(-1) / l2
        return [
            ("signed values, not magnitudes (‖h‖₁ sums |h|)",
             (h.sum(-1) / l2 - 1) / (np.sqrt(d) - 1)),
            ("(‖h‖₁/‖h‖₂) / √D; the density is (ratio − 1) / (√D − 1)",
             ratio / np.sqrt(d)),
            ("(ratio − 1) / √D; the density divides by √D − 1", (ratio - 1) / np.sqrt(d)),
            ("Hoyer's sparsity (√D − ratio) / (√D − 1), one minus the density", (np.sqrt(d) - ratio) / (np.sqrt(d) - 1)),
            ("‖h‖₁/‖h‖₂ without the normalisation", ratio),
        ]


def check_hoyer_density(fn: Callable[[np.ndarray], np.ndarray], h: np.ndarray | None = None) -> bool:
    """Check a learner's Hoyer density against :func:`hoyer_density` (no trimming).

    Parameters
    ----------
    fn : callable
        ``fn(h)`` with ``h`` of shape ``(..., D)`` returning the density of every vector along the
        last axis, shape ``(...)``: ``(‖h‖₁/‖h‖₂ − 1) / (√D − 1)``.
    h : ndarray of shape (..., d_model), optional
        Real residual vectors (e.g. a few samples of a capture); checked too when given.

    Returns
    -------
    bool
        True when every case passes. One line per case is printed (✓ / ✗ and, for a known
        mistake, its name): a one-hot vector (density 0), equal magnitudes with mixed signs
        (density 1; rejects signed values), a batch of Gaussian vectors (rejects a normalisation
        by √D or over another axis), and ``h``.
    """
    onehot = np.zeros(8)
    onehot[3] = -2.0
    signs = np.array([1.0, -1, 1, -1, -1, 1])
    g = np.random.default_rng(1).standard_normal((3, 5, 64))
    cases = [
        ("a one-hot vector (one unit holds everything) has density 0", (onehot,), np.asarray(0.0)),
        ("equal magnitudes with mixed signs: density 1", (signs,), np.asarray(1.0)),
        ("a batch of Gaussian vectors, shape (3, 5, 64) → (3, 5)", (g,), hoyer_density(g)),
    ]
    if h is not None:
        h = _as_vectors(h)
        cases.append((f"real residual vectors, shape {h.shape}", (h,), hoyer_density(h)))
    return report([run_case(d, fn, a, w, rtol=1e-5, atol=1e-7, mistakes=_hoyer_mistakes(a[0]))
                   for d, a, w in cases])


def _velocity_mistakes(acts: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """What the usual mistakes in a mean velocity give on ``acts`` (for :func:`check_velocity`)."""
    a = np.asarray(acts, dtype=np.float64)
    d = a[:, 1:] - a[:, :-1]
    v = np.linalg.norm(d, axis=-1)  # (n_samples, n_steps)
    nrm = np.linalg.norm(a, axis=-1)
    shifted = np.concatenate([np.zeros((a.shape[0], 1)), v[:, :-1]], axis=1)
    out = [
        ("‖h_s+1‖ − ‖h_s‖, a difference of norms (the velocity is the norm of the difference)",
         (nrm[:, 1:] - nrm[:, :-1]).mean(0)),
        ("a norm across samples and a mean over units (take one norm per sample, then the mean "
         "over samples)", np.linalg.norm(d, axis=0).mean(-1)),
        ("the norm of the mean step (average the norms over samples, not the steps)",
         np.linalg.norm(d.mean(0), axis=-1)),
        ("the per-sample velocities, without their mean over samples", v),
        ("the mean of |h_s+1 − h_s| over units, not its Euclidean norm", np.abs(d).mean(-1).mean(0)),
        ("steps shifted by one (step s goes from site s to site s + 1)", shifted.mean(0)),
    ]
    if a.shape[1] > 2:
        out.append(("steps two sites apart (a whole layer), not consecutive sites",
                    np.linalg.norm(a[:, 2:] - a[:, :-2], axis=-1).mean(0)))
    return out


def check_velocity(fn: Callable[[np.ndarray], np.ndarray], acts: np.ndarray | None = None) -> bool:
    """Check a learner's mean velocity against :func:`velocity` (site steps) averaged over samples.

    Parameters
    ----------
    fn : callable
        ``fn(acts)`` with ``acts`` of shape ``(n_samples, n_sites, d_model)`` returning, for each
        site step s (site s → site s + 1), the mean over samples of ``‖h_{s+1} − h_s‖₂``: shape
        ``(n_sites − 1,)``.
    acts : ndarray of shape (n_samples, n_sites, d_model), optional
        A few samples of a real capture; checked too when given.

    Returns
    -------
    bool
        True when every case passes. One line per case is printed (✓ / ✗ and, for a known
        mistake, its name): a state turning on a circle (its norm never changes, so the
        difference of norms is 0), steps of known, different lengths (rejects an off-by-one
        step and steps two sites apart), samples moving at different speeds in random directions
        (rejects the mean over units, the norm of the mean state change), and ``acts``.
    """
    rng = np.random.default_rng(4)
    # one sample turning on a circle of radius 2 by angles 0.1, 0.4, 0.9, 1.6 (chords 2·2·sin(Δ/2))
    ang = np.cumsum([0.0, 0.1, 0.4, 0.9, 1.6])
    circle = (2 * np.stack([np.cos(ang), np.sin(ang)], axis=-1))[None]
    # 3 samples; at step s each moves by s + 1 in its own random direction (in 6 dimensions)
    dirs = rng.standard_normal((3, 5, 6))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    known = np.concatenate([rng.standard_normal((3, 1, 6)),
                            np.cumsum(dirs * np.arange(1, 6)[None, :, None], axis=1)], axis=1) + 1.0
    # 5 samples at speeds 1 … 5 in random directions, 10 units, 4 sites
    speeds = np.arange(1, 6)[:, None, None]
    steps_ = rng.standard_normal((5, 3, 10))
    steps_ *= speeds / np.linalg.norm(steps_, axis=-1, keepdims=True)
    moving = np.concatenate([rng.standard_normal((5, 1, 10)), steps_], axis=1).cumsum(axis=1)

    def want(a: np.ndarray) -> np.ndarray:
        return velocity(a).mean(0)

    cases = [
        ("one state turning on a circle: its norm stays 2, its velocity does not", (circle,), want(circle)),
        ("3 samples, step s of length s + 1: velocities 1, 2, 3, 4, 5", (known,), want(known)),
        ("5 samples at speeds 1 … 5, random directions: mean 3 at every step", (moving,), want(moving)),
    ]
    if acts is not None:
        acts = _as_acts(acts)
        cases.append((f"real samples, shape {acts.shape} → ({acts.shape[1] - 1},)", (acts,), want(acts)))
    return report([run_case(d, fn, a, w, rtol=1e-5, atol=1e-6, mistakes=_velocity_mistakes(a[0]))
                   for d, a, w in cases])


def check_fraction_above(fn: Callable[[np.ndarray, float], np.ndarray]) -> bool:
    """Check a learner's ``fn(h, tau)``: the share of units with ``|h^u| > τ · RMS(h)`` of every
    vector along the last axis (shape ``(...)``), against :func:`fraction_above` (no trimming).

    Prints one line per case and returns True when all pass: a vector with two large units of
    opposite signs (rejects signed values), a vector with an offset (rejects the standard
    deviation, which centres, in place of the RMS), and a batch of Gaussian vectors at τ = 0.5
    and 1 (rejects the mean |h| as the scale and a count instead of a share).
    """
    two = np.array([3.0, -3.0, 0.1, -0.1, 0.2, 0.0])
    offset = np.array([5.0, 5.5, 4.5, 5.2, 4.8, 6.0, 4.0, 5.0])
    g = np.random.default_rng(5).standard_normal((4, 3, 50))

    def mistakes(h: np.ndarray, tau: float) -> list[tuple[str, np.ndarray]]:
        h = np.asarray(h, dtype=np.float64)
        rms = np.sqrt(np.mean(h**2, axis=-1, keepdims=True))
        return [
            ("signed values, not magnitudes |h|", np.mean(h > tau * rms, axis=-1)),
            ("the standard deviation (centred) as the scale, not the RMS",
             np.mean(np.abs(h) > tau * h.std(-1, keepdims=True), axis=-1)),
            ("the mean |h| as the scale, not the RMS",
             np.mean(np.abs(h) > tau * np.abs(h).mean(-1, keepdims=True), axis=-1)),
            ("a count of units, not a share", np.sum(np.abs(h) > tau * rms, axis=-1)),
        ]

    cases = [
        ("two large units of opposite signs, τ = 0.5: 2 of 6 units", (two, 0.5)),
        ("a vector far from 0 (units near 5), τ = 1: 3 of 8 above the RMS", (offset, 1.0)),
        ("a batch of Gaussian vectors (4, 3, 50), τ = 0.5", (g, 0.5)),
        ("the same batch, τ = 1", (g, 1.0)),
    ]
    return report([run_case(d, fn, a, fraction_above(*a), mistakes=mistakes(*a)) for d, a in cases])


def check_cosine_from_norms(fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> bool:
    """Check ``fn(norm_before, norm_after, velocity) -> cosine`` (the law of cosines) against
    :func:`consecutive_cosine` on random trajectories; prints the result, returns True if right."""
    rng = np.random.default_rng(2)
    acts = rng.standard_normal((4, 6, 16)).cumsum(axis=1) + 0.5
    nrm = norms(acts)
    v = velocity(acts)
    want = consecutive_cosine(acts)
    return report([run_case("4 samples × 5 steps of a random walk in 16 dimensions", fn,
                              (nrm[:, :-1], nrm[:, 1:], v), want)])
