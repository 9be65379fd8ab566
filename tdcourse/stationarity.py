"""Per-site moments of the residual stream and how far they drift with depth (claim C7).

A stationary process would have the same distribution at every "time" (site). The paper
(Fig. 1 title) calls the residual stream non-stationary: each unit's mean and variance over
samples change with depth. We measure that with a per-unit drift ratio, and compare it with
a null in which each sample's sites are shuffled (stationary by construction).

The smallest run that carries a verdict: :data:`MIN_SAMPLES` = 20 samples (the drift ratio
divides by each unit's variance over samples, and the verdict compares it with the 99th
percentile of a null; with fewer samples both are noise) and :data:`MIN_LAYERS` = 2 layers (the
variance ratio compares the last site with the one after the first attention: with one layer
they are the same site). :func:`stationarity` and :func:`verdicts` refuse smaller runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import streaming
from .capture import check_acts
from .checks import check_run_size
from .exercises import report, run_case
from .memo import cached
from .verdicts import Verdict, judge

__all__ = ["MIN_SAMPLES", "MIN_LAYERS", "NORMALISE", "site_moments", "drift_ratio", "shuffled_sites", "Stationarity",
           "stationarity", "verdicts", "check_site_means", "check_drift_ratio", "check_first_crossing"]

#: The fewest samples (N) and layers a verdict on C7 is computed from (see the module's docstring).
MIN_SAMPLES = 20
MIN_LAYERS = 2
_ANALYSIS = "Chapter 1's drift analysis (C7)"


def _check_acts(acts: np.ndarray) -> np.ndarray:
    return check_acts(acts, min_samples=2, min_sites=2)


def site_moments(acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of every unit at every site, over samples.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)

    Returns
    -------
    mean : ndarray of shape (n_sites, d_model)
    var : ndarray of shape (n_sites, d_model)
        Unbiased (``ddof=1``).
    """
    return _moments(_check_acts(acts))


# Bytes of float64 handled per block of samples (all sites): working memory, whatever N.
_BLOCK_BYTES = 64 << 20


#: What ``stationarity(..., normalise=...)`` divides each (sample, site) vector by.
NORMALISE = (None, "rms")


def _moments(acts: np.ndarray, order: np.ndarray | None = None,
             normalise: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`site_moments` streamed: two passes over blocks of samples (the mean, then the sum
    of squared deviations from it), in float64, with no full-size copy (a float64 copy of a
    (1000, 64, 4096) array is 2 GiB) and working memory that does not grow with N; a cached
    capture's pages are given back after each block (:func:`tdcourse.streaming.read`).
    ``order`` of shape (n_samples, n_sites) reads sample ``i``'s site ``order[i, s]`` as its
    site ``s`` (the site-shuffled null of :func:`shuffled_sites`, without building the
    shuffled array). ``normalise="rms"`` divides each (sample, site) vector by its RMS over
    units as it is read."""
    n, n_sites, d = acts.shape
    blocks = streaming.sample_blocks(n, n_sites * d * 8, _BLOCK_BYTES)

    def block(i0: int, i1: int) -> np.ndarray:
        key = np.s_[i0:i1] if order is None else (np.arange(i0, i1)[:, None], order[i0:i1])
        a = streaming.read(acts, key, np.float64)
        if normalise == "rms":
            rms = np.sqrt(np.einsum("nsd,nsd->ns", a, a) / d)[..., None]
            with np.errstate(invalid="ignore", divide="ignore"):
                a /= rms
        return a

    total = np.zeros((n_sites, d))
    for i0, i1 in blocks:
        total += block(i0, i1).sum(0)
    mean = total / n
    sq = np.zeros((n_sites, d))
    for i0, i1 in blocks:
        a = block(i0, i1)
        a -= mean                  # in place: what ndarray.var computes, one float64 block only
        np.square(a, out=a)
        sq += a.sum(0)
    return mean, sq / (n - 1)


def _drift(mean: np.ndarray, var: np.ndarray, n_samples: int) -> np.ndarray:
    return n_samples * mean.var(0, ddof=1) / np.maximum(var.mean(0), 1e-30)


def drift_ratio(acts: np.ndarray) -> np.ndarray:
    """How much each unit's mean moves across sites, relative to its sampling noise.

    ``F_u = n_samples · Var_sites(mean_{s,u}) / Mean_sites(var_{s,u})``: the one-way ANOVA
    F statistic of unit ``u`` with sites as groups. A stationary unit gives F ≈ 1; a unit whose
    mean drifts with depth gives F ≫ 1. (Sites share samples, so F is a descriptive index, not
    an exact F-test; :func:`shuffled_sites` gives its null.)

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)

    Returns
    -------
    ndarray of shape (d_model,)
    """
    mean, var = site_moments(acts)
    return _drift(mean, var, acts.shape[0])


def shuffled_sites(acts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stationary null: each sample's sites put in an independent random order.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    rng : numpy Generator

    Returns
    -------
    ndarray of the same shape; every site then has the same distribution.
    """
    acts = _check_acts(acts)
    order = rng.permuted(np.broadcast_to(np.arange(acts.shape[1]), acts.shape[:2]), axis=1)
    return np.take_along_axis(acts, order[:, :, None], axis=1)


@dataclass(frozen=True)
class Stationarity:
    """Drift statistics of one run.

    Attributes
    ----------
    drift : ndarray of shape (d_model,)
        :func:`drift_ratio` per unit.
    null_drift : ndarray of shape (n_null, d_model)
        The same on site-shuffled copies.
    frac_drifting : float
        Share of units whose drift exceeds the 99th percentile of the null's drift.
    var_log_ratio : ndarray of shape (d_model,)
        ``log10(var at the last site / var at the first non-embedding site)`` per unit.
    """

    drift: np.ndarray
    null_drift: np.ndarray
    frac_drifting: float
    var_log_ratio: np.ndarray


@cached
def stationarity(acts: np.ndarray, n_null: int = 3, seed: int = 0, normalise: str | None = None) -> Stationarity:
    """Drift of every unit against the site-shuffled null (see :func:`drift_ratio`).

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
    n_null : int
        Shuffled copies (each gives d_model null values; 3 × 576 is plenty for a 99th percentile).
    seed : int
    normalise : {None, "rms"}
        ``"rms"``: each (sample, site) vector ``h`` is read as ``h / sqrt(mean_u h_u²)`` (its
        RMS over units), block by block of samples as it is read: the drift of the direction,
        without the growth of the norm (chapter 1's exercise), and no normalised copy of the
        capture in memory. A zero vector gives NaN, which is refused.

    Raises
    ------
    ValueError
        Bad input (:func:`tdcourse.capture.check_acts`), an unknown ``normalise``, or a zero
        vector under ``normalise="rms"``.
    tdcourse.checks.RunTooSmallError
        Fewer samples or layers than the verdict needs.
    """
    check_run_size(check_acts(acts), MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)  # dtype and NaN first, then the size
    acts = _check_acts(acts)
    if normalise not in NORMALISE:
        raise ValueError(f"normalise must be one of {NORMALISE}, got {normalise!r}")
    rng = np.random.default_rng(seed)
    n = acts.shape[0]
    mean, var = _moments(acts, normalise=normalise)
    if not (np.isfinite(mean).all() and np.isfinite(var).all()):
        raise ValueError("normalise='rms': some (sample, site) vector is all zeros, so it has no direction to keep")
    drift = _drift(mean, var, n)
    # the same draws as shuffled_sites(acts, rng), read site block by site block (no shuffled copy)
    null = np.stack([_drift(*_moments(acts, rng.permuted(np.broadcast_to(np.arange(acts.shape[1]), acts.shape[:2]),
                                                          axis=1), normalise), n) for _ in range(n_null)])
    thresh = np.quantile(null, 0.99)
    # site 0 is the token embedding; compare the last site with site 1 (after the first attention)
    vlr = np.log10(np.maximum(var[-1], 1e-30) / np.maximum(var[1], 1e-30))
    return Stationarity(drift=drift, null_drift=null, frac_drifting=float(np.mean(drift > thresh)),
                        var_log_ratio=vlr)


def verdicts(run, chapter: str = "", n_null: int = 3, seed: int = 0,
             result: Stationarity | None = None, null_quantile: float = 0.99) -> list[Verdict]:
    """Claim C7 for one run (an :class:`tdcourse.capture.Activations`).

    Parameters
    ----------
    run : Activations
    chapter : str
    n_null, seed : as for :func:`stationarity`
    result : Stationarity, optional
        ``stationarity(run.acts, n_null, seed)`` computed already (the chapter's), reused
        instead of computed again.
    null_quantile : float in (0, 1), default 0.99
        A unit drifts when its F exceeds this quantile of the null's F (the robustness page
        also tries 0.95 and 0.999).

    Returns
    -------
    list of Verdict
        ``[C7]``.
    """
    check_run_size(check_acts(run.acts, name="run.acts"), MIN_SAMPLES, MIN_LAYERS, _ANALYSIS)
    if not 0 < null_quantile < 1:
        raise ValueError(f"null_quantile must lie in (0, 1), got {null_quantile}")
    st = result if result is not None else stationarity(run.acts, n_null=n_null, seed=seed)
    null_hi = float(np.quantile(st.null_drift, null_quantile))
    frac = st.frac_drifting if null_quantile == 0.99 else float(np.mean(st.drift > null_hi))
    pct = f"{round(100 * null_quantile, 6):g}th"
    med_var = float(np.median(st.var_log_ratio))
    return [judge(
        "C7", "Activations are non-stationary across layers: each unit's mean and variance drift with depth.",
        f"share of units whose drift ratio F exceeds the {pct} percentile of the site-shuffled null > 0.5 "
        "(agrees); > 0.1 (partly)",
        run.label, frac, agrees=frac > 0.5, partly=frac > 0.1,
        uncertainty=f"null F {pct} pct {null_hi:.3g}, median F {np.median(st.drift):.3g}",
        detail=f"median log10 variance ratio (last site / site 1) = {med_var:+.2f}",
        chapter=chapter)]


def findings_notes(runs, results: dict, found) -> list[str]:
    """Chapter 1's "what we found", as sentences computed from its results.

    Parameters
    ----------
    runs : list of Activations
        The trained run first, then the random-init control (if any).
    results : dict
        ``{run.label: Stationarity}`` from :func:`stationarity`.
    found : list of Verdict
        The chapter's verdicts (from :func:`verdicts`), one C7 verdict per run.

    Returns
    -------
    list of str
        One paragraph each, for :func:`tdcourse.verdicts.findings`: the numbers of each run; what
        the trained model says about the paper's claim (a disagreement said plainly); the
        random-init control read as a control (it drifts too → the architecture; it does not →
        training) and how training changes the size of the drift.
    """
    from .verdicts import number, run_label

    by = {v.model: v for v in found if v.claim == "C7"}
    out = []
    for run in runs:
        r = results[run.label]
        out.append(
            f"{run_label(run)}: {r.frac_drifting:.1%} of units drift beyond the site-shuffled null's 99th "
            f"percentile (F above {number(float(np.quantile(r.null_drift, 0.99)))}; the median unit has "
            f"F = {number(float(np.median(r.drift)))}). A unit's variance grows "
            f"{10 ** float(np.median(r.var_log_ratio)):.3g}-fold from site 1 (after the first attention) to "
            "the last site (median over units).")
    trained, control = runs[0], (runs[1] if len(runs) > 1 else None)
    t = by.get(trained.label)
    if t is not None:
        out.append(f"The paper calls the residual stream non-stationary (the title of its Fig. 1). On "
                   f"{trained.label}, C7 {t.outcome}"
                   + (" with the paper: most units' means stay put across depth, within the noise of the "
                      "site-shuffled null." if t.outcome == "disagrees" else "."))
    c = by.get(control.label) if control is not None else None
    if c is not None:
        rt, rc = results[trained.label], results[control.label]
        share = f"{rc.frac_drifting:.1%} of its units"
        out.append({
            "agrees": f"The random-init control drifts too ({share}): non-stationarity comes with the "
                      "architecture, a stack of blocks that each add their write to the stream, not with "
                      "training.",
            "partly": f"The random-init control drifts in part ({share}): the architecture gives some of the "
                      "drift, training the rest.",
            "disagrees": f"The random-init control does not drift ({share}): training makes the stream "
                         "non-stationary.",
        }.get(c.outcome, f"The random-init control: {c.outcome}."))
        f_t, f_c = float(np.median(rt.drift)), float(np.median(rc.drift))
        g_t, g_c = (10 ** float(np.median(x.var_log_ratio)) for x in (rt, rc))
        ratio = f_t / f_c if f_c > 0 else np.inf
        size = ("stronger in the trained model" if ratio > 1.5 else
                "weaker in the trained model" if ratio < 1 / 1.5 else "about as strong in both")
        out.append(f"The drift is {size}: median F {number(f_t)} (trained) against {number(f_c)} "
                   f"(control); a unit's variance grows {g_t:.3g}-fold against {g_c:.3g}-fold (median over "
                   "units).")
    return out


def check_site_means(fn) -> bool:
    """Check a learner's ``fn(acts) -> ndarray (n_sites, d_model)`` of per-site means; prints the result."""
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(7, 4, 3)) + np.arange(4)[None, :, None]
    return report([run_case("7 samples × 4 sites × 3 units: the mean over samples (axis 0)", fn, (acts,), acts.mean(0))])


def _drift_example() -> np.ndarray:
    """7 samples × 4 sites × 3 units: unit 0 drifts, unit 1 grows in scale only, unit 2 neither."""
    rng = np.random.default_rng(2)
    acts = rng.normal(size=(7, 4, 3))
    acts[:, :, 0] += np.arange(4) * 2.0
    acts[:, :, 1] *= 1.0 + np.arange(4)
    return acts


def check_drift_ratio(fn) -> bool:
    """Check a learner's ``fn(acts) -> ndarray (d_model,)``: the drift ratio of :func:`drift_ratio`.

    ``F_u = n_samples · Var_sites(mean_{s,u}) / Mean_sites(var_{s,u})``, both variances unbiased
    (``ddof=1``): the means and variances over samples (axis 0), their spread over sites (axis 1).
    Runs ``fn`` on 7 samples × 4 sites × 3 units (one unit drifts, one grows in scale only, one
    does neither) and names the usual mistakes: the factor ``n_samples`` left out, numpy's default
    ``ddof=0``, the axes swapped, standard deviations instead of variances.

    Parameters
    ----------
    fn : callable
        ``fn(acts)`` with ``acts`` of shape (n_samples, n_sites, d_model); returns shape (d_model,).

    Returns
    -------
    bool
        Whether it matches; one ✓ / ✗ line per case is printed.
    """
    acts = _drift_example()
    n = acts.shape[0]
    m, v = acts.mean(0), acts.var(0, ddof=1)
    mistakes = {
        "the factor n_samples is missing (F = N · Var_sites(mean) / Mean_sites(var))":
            m.var(0, ddof=1) / v.mean(0),
        "np.var uses ddof=0 by default; the definition takes unbiased variances (ddof=1), over "
        "samples and over sites": n * m.var(0) / acts.var(0).mean(0),
        "the axes are swapped: take the mean and variance of each unit over samples (axis 0), then "
        "their spread over sites": n * acts.mean(1).var(0, ddof=1) / acts.var(1, ddof=1).mean(0),
        "standard deviations where the definition has variances": n * m.std(0, ddof=1) / acts.std(0, ddof=1).mean(0),
    }
    return report([run_case("7 samples × 4 sites × 3 units (unit 0 drifts, unit 1 only grows in scale): "
                            "F per unit", fn, (acts.copy(),), drift_ratio(acts), mistakes=mistakes)], width=68)


def check_first_crossing(fn) -> bool:
    """Check a learner's ``fn(mean, factor) -> ndarray (d_model,)``: each unit's first site above
    ``factor`` times its site's median ``|mean|``, and -1 for a unit that never gets there.

    ``first[u]`` is the smallest ``s`` with ``|mean[s, u]| > factor · median_v |mean[s, v]|`` (the
    median over the units of site ``s``). Runs ``fn`` on 5 sites × 10 units where one unit never
    crosses, one crosses at site 0, one is negative, one crosses, falls back and crosses again,
    and names the usual mistakes: ``np.argmax`` of an all-False column (0, as if the unit crossed
    at the first site), the sign forgotten, the last crossing instead of the first, the median
    over sites instead of over units.

    Parameters
    ----------
    fn : callable
        ``fn(mean, factor)`` with ``mean`` of shape (n_sites, d_model) and a float ``factor``;
        returns integers of shape (d_model,).

    Returns
    -------
    bool
        Whether it matches; one ✓ / ✗ line per case is printed.
    """
    mean = np.ones((5, 10))                # the median |mean| of every site is 1
    mean[:, 1] = 50.0                      # above from site 0
    mean[3:, 2] = 20.0                     # crosses at site 3
    mean[2:, 3] = -30.0                    # negative: crosses at site 2 by its size
    mean[[1, 4], 4] = 15.0                 # crosses at 1, falls back, crosses again at 4
    mean[:, 5] = np.linspace(1.0, 8.0, 5)  # grows but never gets there
    want = np.array([-1, 0, 3, 2, 1, -1, -1, -1, -1, -1])
    big = np.abs(mean) > 10 * np.median(np.abs(mean), axis=1, keepdims=True)
    last = np.where(big.any(0), big.shape[0] - 1 - big[::-1].argmax(0), -1)
    signed = mean > 10 * np.median(np.abs(mean), axis=1, keepdims=True)
    by_site = np.abs(mean) > 10 * np.median(np.abs(mean), axis=0, keepdims=True)
    mistakes = {
        "a unit that never crosses got 0: np.argmax of an all-False column is 0, the same answer as "
        "a unit above from the first site. Test .any() first and return -1 for such a unit":
            big.argmax(0),
        "a negative unit was missed: compare |mean|, its size, not its signed value":
            np.where(signed.any(0), signed.argmax(0), -1),
        "that is the last site above, not the first": last,
        "the median is over the units of each site (axis 1), not over the sites of each unit":
            np.where(by_site.any(0), by_site.argmax(0), -1),
    }
    return report([run_case("5 sites × 10 units: first site above 10× the site's median |mean| "
                            "(-1: never)", fn, (mean.copy(), 10.0), want, mistakes=mistakes)], width=68)
