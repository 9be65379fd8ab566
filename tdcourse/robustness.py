"""How robust and how stable is each verdict? Two questions, two answers.

Each chapter's verdict rests on choices the paper leaves open: a threshold ("highly
correlated" = r > 0.8), an effect-size floor, which steps count, which null, which token is
read, which samples. It also rests on random draws: bootstrap resamples, null shuffles, the
autoencoder's initialisation and minibatch order. This module declares, per claim, the
chapter's **primary** specification and the others as small records (:class:`Spec`),
evaluates them all with the chapter's own ``verdicts`` function (never a copy of its code),
and answers two separate questions per claim and run (:class:`Robustness`):

* **Robustness**: does the outcome survive every reasonable alternative *definition*
  (``Spec.kwargs`` of the module's ``verdicts``, judged on the statistic computed once, or
  ``Spec.compute`` of its costly computation: another null, another coefficient, another
  amplitude factor) and every *data axis* (:data:`DATA`: the primary definition on other
  samples)? A verdict is **fragile** when any one of them changes its outcome; the ones that
  do are named (:attr:`Robustness.flips`). A claim with fewer than two alternatives computed
  on a run (and none that flips) is **not tested** there.
* **Stability**: does the outcome survive resampling (``Spec.seed``: another bootstrap or
  null seed, another autoencoder initialisation and split, another minibatch order)? Seeds
  never count as alternatives: a verdict unchanged by ten seeds is no more robust for it, and
  one that a seed flips is **unstable**, not fragile (:attr:`Robustness.stable`).

Where the primary outcome is decided by a threshold, the distance of the deciding number to
the nearest threshold is given in words (:attr:`Robustness.margin`), and a verdict within a
tenth of that threshold's scale of it is said to hang on it (:attr:`Robustness.close`).

Which specifications count does not depend on what happens to be cached: the build captures
the data axes of :data:`BUILD_AXES` for the runs of :data:`DATA_KINDS` every time, and every
other (axis, run, module) cell is shown as "not run" with its reason (:data:`NOT_RUN`).

:func:`evaluate` returns the primary verdicts (what the scoreboard shows, identical to each
chapter's) and every specification's outcome; :func:`summarise` the two answers per claim
and run; :func:`marks` the scoreboard cells that carry the fragile mark (the landing page
counts the same list); :func:`to_markdown` the robustness page's tables.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .capture import Activations
from .checks import RunTooSmallError
from .data import SampleRecipe
from .registry import CHAPTERS, CLAIMS, READINGS, SYMBOL, row_names
from .verdicts import Verdict

__all__ = ["RUN_KINDS", "DATA", "PRIMARY_DATA", "DATA_KINDS", "DATA_MODULES", "BUILD_AXES", "NOT_RUN", "READINGS",
           "Spec", "SPECS", "NO_STABILITY", "Outcome", "Threshold", "Robustness", "specs_for", "data_specs",
           "evaluate", "summarise", "marks", "load_data_runs", "to_markdown", "SYMBOL", "save_summary", "for_runs",
           "drop_old_summary", "NEAR"]

#: The runs every specification is evaluated on, in the scoreboard's column order.
RUN_KINDS = ("trained", "4-bit", "control")

#: The samples the chapters read (first 48 tokens of the first 1000 body lines, last token).
PRIMARY_DATA = "last of 48 tokens"

#: The data axes: name -> (recipe, number of samples or None for the primary run's N, what it is).
DATA: dict[str, tuple[SampleRecipe | None, int | None, str]] = {
    PRIMARY_DATA: (None, None, "the chapters' samples: the last of the first 48 tokens of each of the first N "
                               "body lines of at least 100 characters"),
    "token 25 of 48": (SampleRecipe(max_tokens=25), None,
                       "the same samples read at their 25th token (index 24) instead of the last: a fixed middle "
                       "position (a sample shorter than 25 tokens is read at its last)"),
    "whole lines": (SampleRecipe(max_chars=500, max_tokens=512), 672,
                    "whole body lines of 100-500 characters (all 672 of the test split), read at their last token, "
                    "which is nearly always ' .'"),
}

#: Runs captured on the data axes. The 4-bit copy is not: every chapter shows it follows the
#: trained model, and its capture would add as much again to the build (see :data:`NOT_RUN`).
DATA_KINDS = ("trained", "control")

#: Data axes the book's build captures (once into the cache) and evaluates, every time.
BUILD_AXES = ("token 25 of 48",)

#: Modules evaluated on the data axes: every chapter's. C11/C12 train one more autoencoder per
#: run and axis, C13 runs one more teleport per run and axis (its planes are fitted on the
#: axis's samples; the seed prompt is the chapter's).
DATA_MODULES = ("stationarity", "continuity", "geometry", "information", "rotations", "lowdim", "perturb")

#: Why a specification is not run, shown in its cell: per data axis not in :data:`BUILD_AXES`,
#: per run kind not in :data:`DATA_KINDS`, per module not in :data:`DATA_MODULES`.
NOT_RUN: dict[str, str] = {
    "whole lines": "not captured by the build: the 672 whole lines (up to 500 characters) take two to four times "
                   "as long to capture as the 25-token samples, per model (measured in "
                   "benchmarks/results/cpu2_robustness_costs.log), which the 20-minute CI budget does not leave; "
                   "scoreboard.write(..., data_axes=list(robustness.DATA)) runs it",
    "4-bit": "the 4-bit copy is not captured on the data axes: it follows the trained model in every chapter, and "
             "one more capture and its evaluation would add minutes to the build "
             "(benchmarks/results/cpu2_robustness_costs.log)",
    "module": "not evaluated on the data axes in this build, to save its cost "
              "(benchmarks/results/cpu2_robustness_costs.log)",
    "jacobians 4-bit": "the sequel's claims are not computed on the 4-bit copy in the book's build: its layer "
                       "Jacobians (through bitsandbytes' dequantisation, one sample) cost about 2 minutes, the "
                       "largest single part of the scoreboard, and the 4-bit copy follows the trained model on "
                       "every claim of the paper (benchmarks/results/cpu2_build_phases.log); "
                       "robustness.evaluate(..., skip={}) computes them",
}

#: (module, run kind) pairs the book's build does not evaluate, with the reason
#: (:data:`NOT_RUN`): their scoreboard cells read "not run here" and the robustness page says why.
SKIP: dict[tuple[str, str], str] = {("jacobians", "4-bit"): NOT_RUN["jacobians 4-bit"]}

#: Claim rows whose stability is not computed, and why.
NO_STABILITY: dict[str, str] = {
    "C12 (dimension)": "the per-site spectra do not depend on the autoencoder; another block-bootstrap seed would "
                       "recompute them (about half a minute per run)",
    **{s: "the layer Jacobians are computed on the samples the chapter's budget rule picks (jacobians.plan); "
          "another draw of samples would recompute every Jacobian and Schur form, more than the build's budget"
       for s in ("S1", "S2", "S3", "S4")},
}

#: The argument of each module's ``verdicts`` that takes its precomputed statistic.
_STATE_ARG = {"stationarity": "result", "continuity": "analysis", "geometry": "density", "information": "profile",
              "rotations": "analysis", "lowdim": "result", "perturb": "flows", "jacobians": "result"}

#: A verdict within this share of a threshold's scale of it "hangs on" that threshold.
NEAR = 0.1


@dataclass(frozen=True)
class Spec:
    """One specification of one claim (one reading of it).

    Attributes
    ----------
    claim : str
        ``"C1"`` … ``"C13"``, as on the claims page.
    name : str
        A short label for tables (e.g. ``"r > 0.94"``).
    description : str
        What it changes, in one sentence.
    kwargs : mapping
        Keyword arguments of the module's ``verdicts`` (judged on the shared statistic).
    compute : mapping
        Keyword arguments of the module's costly computation (``continuity.analyse``,
        ``rotations.analyse``, ``lowdim.analyse``, ``stationarity.stationarity``,
        ``information.mi_profile``, ``perturb.flow_fields``); one computation per distinct value.
    reading : str
        For a claim read two ways (:data:`READINGS`), which one; ``""`` otherwise.
    data : str
        A key of :data:`DATA`.
    primary : bool
        The chapter's own specification (empty ``kwargs`` and ``compute``, primary data).
    seed : bool
        A resampling seed (stability), not an alternative definition (robustness).
    """

    claim: str
    name: str
    description: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    compute: Mapping[str, Any] = field(default_factory=dict)
    reading: str = ""
    data: str = PRIMARY_DATA
    primary: bool = False
    seed: bool = False

    def __post_init__(self) -> None:
        if self.data not in DATA:
            raise ValueError(f"data must be one of {list(DATA)}, got {self.data!r}")
        readings = READINGS.get(self.claim, ("",))
        if self.reading not in readings:
            raise ValueError(f"{self.claim} has the readings {readings}, got reading={self.reading!r}")
        if self.primary and (self.kwargs or self.compute or self.data != PRIMARY_DATA or self.seed):
            raise ValueError(f"the primary specification of {self.row} must use the chapter's defaults "
                             "(no kwargs, no compute, the primary data, not a seed)")
        if self.seed and self.data != PRIMARY_DATA:
            raise ValueError(f"a seed of {self.row} is read on the primary data (a data axis is an alternative)")

    @property
    def row(self) -> str:
        """``"C13 (arrows)"``, or the claim alone."""
        return f"{self.claim} ({self.reading})" if self.reading else self.claim

    @property
    def role(self) -> str:
        """``"primary"``, ``"definition"``, ``"data"`` (a data axis) or ``"seed"``."""
        if self.primary:
            return "primary"
        if self.seed:
            return "seed"
        return "data" if self.data != PRIMARY_DATA else "definition"

    @property
    def label(self) -> str:
        """The name shown in tables and flips: the data axis for a data specification."""
        return self.data if self.role == "data" else self.name


def _primary(claim: str, description: str, reading: str = "") -> Spec:
    return Spec(claim, "primary", description, reading=reading, primary=True)


def _alt(claim: str, name: str, description: str, kwargs=None, compute=None, reading: str = "") -> Spec:
    return Spec(claim, name, description, dict(kwargs or {}), dict(compute or {}), reading=reading)


def _seed(claim: str, name: str, description: str, kwargs=None, compute=None, reading: str = "") -> Spec:
    return Spec(claim, name, description, dict(kwargs or {}), dict(compute or {}), reading=reading, seed=True)


def _ae_seeds(claim: str, reading: str = "") -> list[Spec]:
    out = [_seed(claim, f"AE seed {s}", "the autoencoder trained with another seed (its split, initial weights and "
                 "batch order); bootstraps unchanged", compute={"ae_seed": s}, reading=reading) for s in range(1, 5)]
    out += [_seed(claim, f"AE batch order {s}", "the same split and initial weights, the minibatches drawn in "
                  "another order", compute={"order_seed": s}, reading=reading) for s in (1,)]
    return out


_SEED1 = "another bootstrap, permutation and rotation seed"
_SPEARMAN = ("Spearman's ρ instead of Pearson's r for every correlation between sites (ranks over the samples): "
             "continuity that does not rest on a few large values")
#: Spearman's computation; the random-basis check of chapter 2 is not part of C1-C3, so it is read
#: along one random direction only (ranking 576 rotated coordinates would double the cost).
_SPEARMAN_COMPUTE = {"method": "spearman", "n_dirs": 1}
_FIRST = "the first two sites (embedding, first attention and MLP steps) left out"
_LAST = "the last two sites (the last layer, whose output goes to the final norm and the unembedding) left out"
_PHASE = ("the null keeps each unit's smoothness: its curve's increments along depth phase-randomised (same power "
          "spectrum, random order of ups and downs; 200 surrogates for the mean trajectory, 40 per sample), "
          "instead of the layer shuffle, which turns a smooth curve into a jagged one")
_LATE23 = "'late' is the paper's layer 23 alone (the last layer left out)"

#: Every claim's specifications on the primary data (the data axes are added by :func:`data_specs`).
SPECS: tuple[Spec, ...] = (
    _primary("C1", "median r over units and adjacent site pairs: 95 % CI above 0.8 and above the null"),
    _alt("C1", "r > 0.9", "'highly correlated' means a median r above 0.9", {"high_r": 0.9}),
    _alt("C1", "r > 0.94", "'highly correlated' means a median r above 0.94", {"high_r": 0.94}),
    _alt("C1", "Spearman", _SPEARMAN, compute=_SPEARMAN_COMPUTE),
    _seed("C1", "seed 1", _SEED1, compute={"seed": 1}),
    _primary("C2", "share of units whose r rises with depth (Spearman ρ > 0): 95 % CI above 0.5"),
    _alt("C2", "Spearman", _SPEARMAN, compute=_SPEARMAN_COMPUTE),
    _alt("C2", "late − early", "a unit's r 'rises' when its mean over the last third of the pairs exceeds that over "
         "the first third (instead of a positive Spearman correlation with depth)", {"trend": "late-early"}),
    _seed("C2", "seed 1", _SEED1, compute={"seed": 1}),
    _primary("C3", "median over units of r_within − r_across: 95 % CI above 0"),
    _alt("C3", "Spearman", _SPEARMAN, compute=_SPEARMAN_COMPUTE),
    _alt("C3", "mean over units", "the mean over units of r_within − r_across instead of the median",
         {"aggregate": "mean"}),
    _seed("C3", "seed 1", _SEED1, compute={"seed": 1}),
    _primary("C4", "every density index rises (Spearman ρ and late − early, 95 % CIs above 0)"),
    _alt("C4", "first layer left out", _FIRST, {"skip_sites": 2}),
    _alt("C4", "last layer left out", _LAST, {"skip_last_sites": 2}),
    _seed("C4", "bootstrap seed 1", "another bootstrap seed (samples resampled)", {"seed": 1}),
    _primary("C5", "cosine between consecutive states rises, site and layer steps"),
    _alt("C5", "first layer left out", _FIRST, {"skip_sites": 2}),
    _alt("C5", "last layer left out", _LAST, {"skip_last_sites": 2}),
    _seed("C5", "bootstrap seed 1", "another bootstrap seed (samples resampled)", {"seed": 1}),
    _primary("C6", "velocity rises, site and layer steps, with late/early ≥ 1.5"),
    _alt("C6", "no floor", "any significant rise counts (no effect-size floor: the criterion before this page)",
         {"min_ratio": None}),
    _alt("C6", "late/early ≥ 2", "a higher floor: the velocity at least doubles", {"min_ratio": 2.0}),
    _alt("C6", "first layer left out", f"{_FIRST} (floor 1.5)", {"skip_sites": 2}),
    _alt("C6", "last layer left out", f"{_LAST} (floor 1.5)", {"skip_last_sites": 2}),
    _seed("C6", "bootstrap seed 1", "another bootstrap seed (samples resampled)", {"seed": 1}),
    _primary("C7", "share of units drifting beyond the site-shuffled null's 99th percentile > 0.5"),
    _alt("C7", "null 95th pct", "a unit drifts when its F exceeds the null's 95th percentile", {"null_quantile": 0.95}),
    _alt("C7", "null 99.9th pct", "a unit drifts when its F exceeds the null's 99.9th percentile",
         {"null_quantile": 0.999}),
    _seed("C7", "null seed 1", "another seed for the site-shuffled null", compute={"seed": 1}),
    _seed("C7", "null seed 2", "another seed for the site-shuffled null", compute={"seed": 2}),
    _primary("C8", "kNN and binned MI drop within the first quarter of steps and climb back"),
    _alt("C8", "early = first 1/5", "the early window is the first fifth of the steps", {"early_frac": 0.2}),
    _alt("C8", "early = first 1/3", "the early window is the first third of the steps", {"early_frac": 1 / 3}),
    _alt("C8", "copula + Gaussian", "the Gaussian-copula and the Gaussian (from Pearson's r) estimators instead of "
         "kNN and binned", {"estimators": ("copula", "gaussian")}),
    _seed("C8", "bootstrap seed 1", "another bootstrap seed (units resampled)", {"seed": 1}),
    *(spec for reading in READINGS["C9"] for spec in (
        _primary("C9", ("|mean R| within a factor 1.5 of 10.74 and different from the layer-shuffle null"
                        if reading == "mean trajectory" else "as the mean trajectory, on per-sample R (100 samples)"),
                 reading),
        _alt("C9", "phase null", _PHASE, compute={"null": "phase", "n_shuffles": 200, "n_shuffles_per_sample": 40},
             reading=reading),
        _alt("C9", "band × 1.25", "'about 10' means within a factor 1.25 of 10.74", {"band": 1.25}, reading=reading),
        _alt("C9", "band × 2", "'about 10' means within a factor 2 of 10.74", {"band": 2.0}, reading=reading),
        _seed("C9", "seed 1", "another seed for the layer shuffles" + (" and the 100 samples"
              if reading == "per-sample R" else ""), compute={"seed": 1}, reading=reading))),
    _primary("C10", "orbits and outward spirals (factor 2) each ≥ 5 % of units, spirals beyond the null"),
    *(_alt("C10", f"factor {f:g}", f"an outward spiral's amplitude grows at least {f:g}×", compute={"factor": f})
      for f in (1.5, 2.5, 3.0, 3.5)),
    _alt("C10", "share ≥ 3 %", "each class must hold at least 3 % of units", {"min_share": 0.03}),
    _alt("C10", "share ≥ 10 %", "each class must hold at least 10 % of units", {"min_share": 0.10}),
    _seed("C10", "seed 1", "another seed for the layer shuffles of the null", compute={"seed": 1}),
    _primary("C11", "mean latent path bends > 0.1 of its chord (CI) and is ordered by depth; AE seed 0"),
    _alt("C11", "bend > 0.05", "'curved' means bowing by more than 0.05 of the chord", {"bend_threshold": 0.05}),
    _alt("C11", "bend > 0.2", "'curved' means bowing by more than 0.2 of the chord", {"bend_threshold": 0.2}),
    _alt("C11", "PC1–PC2 path", "the path in the plane of the first two PCs (a linear 2-D code) instead of the "
         "autoencoder's latent", {"latent": "pca"}),
    *_ae_seeds("C11"),
    _primary("C12", "held-out NMSE early third − late third, CI above 0; AE seed 0", "error"),
    _alt("C12", "quarters", "the early and late quarters of the sites instead of thirds", {"part": 0.25},
         reading="error"),
    _alt("C12", "2 PCs", "reconstructed from the first two PCs instead of the autoencoder's 2-D latent",
         {"reconstruction": "pca"}, reading="error"),
    *_ae_seeds("C12", "error"),
    _primary("C12", "late third lower-dimensional (PR and n90, raw and standardised)", "dimension"),
    _alt("C12", "quarters", "the early and late quarters of the sites instead of thirds", {"part": 0.25},
         reading="dimension"),
    _alt("C12", "n80", "PCs for 80 % of the variance instead of 90 %", {"n_frac": 0.8}, reading="dimension"),
    _alt("C12", "n95", "PCs for 95 % of the variance instead of 90 %", {"n_frac": 0.95}, reading="dimension"),
    _primary("C13", "contraction ratio below 1 at the early layers, weaker late; k = 1 layer", "distance"),
    _alt("C13", "PCA plane", "distances measured in the PCA plane instead of the full space", {"ratio_space": "pca"},
         reading="distance"),
    _alt("C13", "late = layer 23", _LATE23, {"late": (23,)}, reading="distance"),
    _seed("C13", "seed 1", "another bootstrap seed (grid points resampled)", {"seed": 1}, reading="distance"),
    _primary("C13", "inward arrows (any shrink) > 1/2 at the early layers, fewer late; k = 1", "arrows"),
    _alt("C13", "pull ≥ 5 %", "an arrow counts as inward only if it shrinks by at least 5 %", {"min_pull": 0.05},
         reading="arrows"),
    _alt("C13", "full space", "arrows read in the full space instead of the PCA plane", {"arrow_space": "full"},
         reading="arrows"),
    _alt("C13", "late = layer 23", _LATE23, {"late": (23,)}, reading="arrows"),
    _seed("C13", "seed 1", "another bootstrap seed (grid points resampled)", {"seed": 1}, reading="arrows"),
    # ---- the sequel's claims S1–S4 (chapter 8, tdcourse.jacobians): definitions, token position, Schur order.
    # The token-25 alternative computes the Jacobians there without Schur forms (no S4 there: the knob
    # would double the build's cost), on the same samples as the primary.
    _primary("S1", "every layer's complex share within 5 points of a random matrix's at the same width"),
    Spec("S1", "angle > 1°", "an eigenvalue rotates only if |arg λ| exceeds 1 degree (the random "
         "yardstick counted the same way)", {"min_angle": 0.017453292519943295}),
    Spec("S1", "token 25", "the Jacobians at token 25 of the 48", compute={"position": 24, "knob": ()}),
    _primary("S2", "symmetric share of the write J − I rises with depth (ρ > 0, p < 0.05; +0.1 late)"),
    Spec("S2", "symmetric share of J", "the same share of the whole layer J, skip included",
         {"alignment": "symmetric share of J"}),
    Spec("S2", "singular vectors of J − I", "mean |⟨u_i, v_i⟩| of matching singular vectors of the write "
         "(first sample)", {"alignment": "singular vectors of J − I"}),
    Spec("S2", "singular vectors of J", "mean |⟨u_i, v_i⟩| of matching singular vectors of J (first sample)",
         {"alignment": "singular vectors of J"}),
    Spec("S2", "eigenvector condition", "mean 1/κ of the eigenvalues, left and right eigenvectors (first "
         "sample; the same for J and J − I)", {"alignment": "eigenvector condition"}),
    Spec("S2", "token 25", "the Jacobians at token 25 of the 48", compute={"position": 24, "knob": ()}),
    _primary("S3", "entropy effective rank of the end-to-end Jacobian below 2 % of the width"),
    Spec("S3", "participation ratio", "(Σσ²)² / Σσ⁴ instead of the entropy rank", {"rank": "participation"}),
    Spec("S3", "stable rank", "Σσ² / σ_max² instead of the entropy rank", {"rank": "stable"}),
    Spec("S3", "token 25", "the Jacobians at token 25 of the 48", compute={"position": 24, "knob": ()}),
    _primary("S4", "erasing N widens the end-to-end rank ≥ 2×, doubling it narrows; descending modulus"),
    Spec("S4", "LAPACK order", "the eigenvalues in the Schur form in LAPACK's order instead of descending "
         "modulus", {"order": "lapack"}),
    Spec("S4", "participation ratio", "the knob read with the participation ratio", {"rank": "participation"}),
    Spec("S4", "stable rank", "the knob read with the stable rank", {"rank": "stable"}),
)


def specs_for(claim: str, specs: Sequence[Spec] = SPECS) -> list[Spec]:
    """The specifications of one claim (all its readings), primary first per reading."""
    return [s for s in specs if s.claim == claim]


def data_specs(specs: Sequence[Spec] = SPECS, chapters: Mapping[str, tuple[str, tuple[str, ...]]] | None = None
               ) -> list[Spec]:
    """The primary definition of every claim (reading) on each data axis (all modules: a cell
    that is not run says why, see :data:`NOT_RUN`)."""
    chapters = CHAPTERS if chapters is None else chapters
    tested = {c for _m, cs in chapters.values() for c in cs}
    out = []
    for s in specs:
        if s.primary and s.claim in tested:
            for name, (_recipe, _n, what) in DATA.items():
                if name != PRIMARY_DATA:
                    out.append(Spec(s.claim, name, f"the primary definition on {what}", reading=s.reading, data=name))
    return out


@dataclass(frozen=True)
class Threshold:
    """A number the primary outcome is judged by, and the threshold it is compared with.

    Attributes
    ----------
    what : str
        The number, in words (e.g. ``"outward-spiral share"``).
    value, threshold : float
    scale : float
        What a distance is measured against (the threshold itself, or an interval's width
        when the threshold is 0): the verdict hangs on it when
        ``|value − threshold| < NEAR · scale``.
    percent : bool
        Print as percentages (a share).
    """

    what: str
    value: float
    threshold: float
    scale: float
    percent: bool = False

    def __post_init__(self) -> None:  # plain floats, whatever numpy scalar came in (JSON, comparisons)
        for name in ("value", "threshold", "scale"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "percent", bool(self.percent))

    @property
    def distance(self) -> float:
        """``|value − threshold| / scale`` (inf for a non-finite value or scale)."""
        d = abs(self.value - self.threshold) / abs(self.scale) if self.scale else float("inf")
        return d if np.isfinite(d) else float("inf")

    def words(self) -> str:
        """E.g. ``"outward-spiral share 5.03 % against the 5 % line: 0.03 points above"``."""
        gap = abs(self.value - self.threshold)
        side = "above" if self.value > self.threshold else ("below" if self.value < self.threshold else "on")
        if self.percent:
            return (f"{self.what} {100 * self.value:.4g} % against the {100 * self.threshold:.4g} % line: "
                    f"{100 * gap:.2g} points {side}")
        return f"{self.what} {self.value:.4g} against the {self.threshold:.4g} line: {gap:.2g} {side}"


def _nearest(lines: Sequence[Threshold]) -> tuple[str, bool]:
    finite = [t for t in lines if np.isfinite(t.value)]
    if not finite:
        return "", False
    t = min(finite, key=lambda t: t.distance)
    return t.words(), bool(t.distance < NEAR)


# ----------------------------------------------------------------------------- thresholds of the primary


def _ci_scale(lo: float, hi: float) -> float:
    return max(abs(hi - lo), 1e-12)


def _thresholds(module: str, state: Any, run: Activations, verdicts: Sequence[Verdict]) -> dict[str, list[Threshold]]:
    """``{row: [Threshold]}``: the numbers the module's primary verdicts compare with a threshold.

    Read from the module's own statistic (its public attributes and functions), with the
    chapter's default thresholds. Criteria that are conjunctions of several bootstrap intervals
    computed inside ``verdicts`` (C4, C5, C8) give none.
    """
    from importlib import import_module

    mod = import_module(f"tdcourse.{module}")
    if module == "continuity":
        a = state
        return {
            "C1": [Threshold("median r's 95 % CI lower bound", a.median_r.lo, mod.HIGH_R, mod.HIGH_R),
                   Threshold("median r's 95 % CI lower bound", a.median_r.lo, a.null_q999, max(a.null_q999, 0.1)),
                   Threshold("median r", a.median_r.estimate, 0.5, 0.5)],
            "C2": [Threshold("rising share's 95 % CI lower bound", a.frac_rising.lo, 0.5, 0.5, True),
                   Threshold("rising share", a.frac_rising.estimate, 0.5, 0.5, True)],
            "C3": [Threshold("95 % CI lower bound of the median r_within − r_across", a.median_diff.lo, 0.0,
                             _ci_scale(a.median_diff.lo, a.median_diff.hi)),
                   Threshold("95 % CI upper bound of the median r_within − r_across", a.median_diff.hi, 0.0,
                             _ci_scale(a.median_diff.lo, a.median_diff.hi))],
        }
    if module == "geometry":
        from .stats import curve_trend

        lines = []
        for step in ("site", "layer"):
            ratio = curve_trend(mod.velocity(run.acts, step), n_boot=1).ratio.estimate
            lines.append(Threshold(f"velocity late/early ({step} steps)", ratio, mod.MIN_VELOCITY_RATIO,
                                   mod.MIN_VELOCITY_RATIO))
        return {"C6": lines}
    if module == "stationarity":
        f = state.frac_drifting
        return {"C7": [Threshold("drifting share", f, 0.5, 0.5, True), Threshold("drifting share", f, 0.1, 0.1, True)]}
    if module == "rotations":
        out = {}
        band = 1.5
        for reading, test in zip(READINGS["C9"], (state.mean, state.per_sample)):
            lo, hi = mod.PAPER_MEAN_R / band, mod.PAPER_MEAN_R * band
            out[f"C9 ({reading})"] = [
                Threshold("|mean R| at 64 sites", test.abs_rescaled, lo, lo),
                Threshold("|mean R| at 64 sites", test.abs_rescaled, hi, hi),
                Threshold("the null's p", test.p, 0.05, 0.05)]
        sh, nsh = state.shares(), state.null_shares()
        spiral_hi = float(np.quantile(nsh["outward spiral"], 0.975))
        out["C10"] = [Threshold("orbit share", sh["orbit"], 0.05, 0.05, True),
                      Threshold("outward-spiral share", sh["outward spiral"], 0.05, 0.05, True),
                      Threshold("outward-spiral share", sh["outward spiral"], spiral_hi, max(spiral_hi, 0.01), True)]
        return out
    if module == "lowdim":
        res = state
        t = mod.BEND_THRESHOLD
        bend = float(mod.bend_ratio(res.latent_mean))
        boot = np.asarray(mod.bend_ratio(res.latent_mean_boot), dtype=float)
        bend_lo = float(np.quantile(boot[np.isfinite(boot)], 0.025))
        d = mod.early_minus_late(res.ae_nmse_boot)
        d = d[np.isfinite(d)]
        d_lo, d_hi = float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))
        dim = []
        for name, sp in (("raw", res.raw), ("standardised", res.std)):
            est = float(mod.early_minus_late(sp.pr))
            lo, hi = (float(v) for v in mod.se_interval(est, mod.early_minus_late(sp.pr_boot)))
            dim.append(Threshold(f"95 % CI lower bound of PR early − late ({name})", lo, 0.0, _ci_scale(lo, hi)))
        return {"C11": [Threshold("bend's 95 % CI lower bound", bend_lo, t, t), Threshold("bend", bend, t, t)],
                "C12 (error)": [Threshold("95 % CI lower bound of NMSE early − late", d_lo, 0.0, _ci_scale(d_lo, d_hi)),
                                Threshold("NMSE early − late", float(mod.early_minus_late(res.ae_nmse)), 0.0,
                                          _ci_scale(d_lo, d_hi))],
                "C12 (dimension)": dim}
    if module == "perturb":
        fl = state
        pl = list(fl.paper_layers)
        early = [pl.index(p) for p in (0, 7) if p in pl]
        ratio = [Threshold(f"contraction ratio's 95 % CI upper bound at layer {fl.layers[j]}",
                           fl.ratio(j, 1, n_boot=2000, seed=0).hi, 1.0, 1.0) for j in early]
        arrows = [Threshold(f"inward share's 95 % CI lower bound at layer {fl.layers[j]}", fl.inward(j, 1).lo,
                            0.5, 0.5, True) for j in early]
        return {"C13 (distance)": ratio, "C13 (arrows)": arrows}
    return {}


# ----------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Outcome:
    """One specification on one run: its verdict, or why it was not computed.

    ``margin`` and ``close`` are set on the primary specification only (:class:`Robustness`).
    """

    spec: Spec
    kind: str
    verdict: Verdict | None
    note: str = ""
    margin: str = ""
    close: bool = False

    @property
    def outcome(self) -> str:
        return self.verdict.outcome if self.verdict is not None else "not run"

    def to_dict(self) -> dict:
        return {"claim": self.spec.claim, "reading": self.spec.reading, "spec": self.spec.name,
                "role": self.spec.role, "description": self.spec.description, "data": self.spec.data,
                "primary": self.spec.primary, "run": self.kind, "outcome": self.outcome,
                "value": None if self.verdict is None else float(self.verdict.value),
                "criterion": None if self.verdict is None else self.verdict.criterion,
                "uncertainty": None if self.verdict is None else self.verdict.uncertainty,
                "note": self.note, "margin": self.margin, "close": bool(self.close)}


@dataclass(frozen=True)
class Robustness:
    """The two answers for one claim (reading) on one run: robust? stable?

    Attributes
    ----------
    row : str
        ``"C13 (arrows)"`` or ``"C1"``.
    kind : str
        One of :data:`RUN_KINDS`.
    primary : str
        The primary specification's outcome.
    flips : tuple of str
        The alternatives (definitions and data axes) that change the outcome, in words, e.g.
        ``("r > 0.94 → partly",)``. Any one makes the verdict fragile.
    holds : tuple of str
        The alternatives computed on this run that give the primary's outcome.
    not_run : tuple of str
        Alternatives declared but not computed on this run, each with its reason.
    seeds : tuple of str
        The resampling seeds computed on this run (stability).
    unstable : tuple of str
        Those that change the outcome, e.g. ``("AE seed 1 → agrees",)``.
    margin : str
        The distance of the deciding number to the nearest threshold of the primary criterion,
        in words; ``""`` where the criterion has no single such number (C4, C5, C8).
    close : bool
        That distance is under :data:`NEAR` of the threshold's scale: the outcome hangs on it.
    """

    row: str
    kind: str
    primary: str
    flips: tuple[str, ...] = ()
    holds: tuple[str, ...] = ()
    not_run: tuple[str, ...] = ()
    seeds: tuple[str, ...] = ()
    unstable: tuple[str, ...] = ()
    margin: str = ""
    close: bool = False

    @property
    def fragile(self) -> bool:
        """An alternative definition or data axis changes the outcome (whatever the seeds do)."""
        return bool(self.flips)

    @property
    def tested(self) -> bool:
        """Fragile, or at least two alternatives computed: "robust" means something."""
        return self.fragile or len(self.holds) >= 2

    @property
    def stable(self) -> bool | None:
        """No seed changes the outcome; None when no seed was computed."""
        return None if not self.seeds else not self.unstable

    @property
    def status(self) -> str:
        """``"fragile"``, ``"robust"`` or ``"not tested"``."""
        return "fragile" if self.fragile else ("robust" if self.tested else "not tested")

    @property
    def text(self) -> str:
        """A short sentence: robustness, then stability, then a threshold the outcome hangs on.

        E.g. ``"fragile: r > 0.94 → partly; stable over 1 seed"``.
        """
        n = len(self.holds) + len(self.flips)
        if self.fragile:
            parts = [f"fragile: {', '.join(self.flips)}"]
        elif self.tested:
            parts = [f"robust to {n} alternatives"]
        else:
            parts = [f"robustness not tested ({n} alternative{'' if n == 1 else 's'} computed)"]
        if self.seeds:
            parts.append(f"unstable: {', '.join(self.unstable)}" if self.unstable else
                         f"stable over {len(self.seeds)} seed{'' if len(self.seeds) == 1 else 's'}")
        if self.close:
            parts.append(f"on the line: {self.margin}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"row": self.row, "kind": self.kind, "primary": self.primary, "flips": list(self.flips),
                "holds": list(self.holds), "not_run": list(self.not_run), "seeds": list(self.seeds),
                "unstable": list(self.unstable), "margin": self.margin, "close": bool(self.close),
                "fragile": self.fragile, "stable": self.stable, "status": self.status, "text": self.text}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Robustness":
        return cls(row=d["row"], kind=d["kind"], primary=d["primary"], flips=tuple(d.get("flips", ())),
                   holds=tuple(d.get("holds", ())), not_run=tuple(d.get("not_run", ())),
                   seeds=tuple(d.get("seeds", ())), unstable=tuple(d.get("unstable", ())),
                   margin=d.get("margin", ""), close=bool(d.get("close", False)))


def _kind_of(run: Activations, i: int) -> str:
    label = run.label
    if "random init" in label:
        return "control"
    if "4bit" in label:
        return "4-bit"
    return "trained" if i == 0 else f"run {i}"


def _compute(module: str, run: Activations, base: Any, kw: Mapping[str, Any]) -> Any:
    """The module's costly statistic for ``run`` (what its ``verdicts`` takes precomputed).

    ``base`` is the primary computation on the same run (None for the primary itself); where
    the module can derive the alternative from it, it does (another amplitude factor, another
    null for C9, another autoencoder seed with the same spectra).
    """
    from importlib import import_module

    mod = import_module(f"tdcourse.{module}")
    if module == "stationarity":
        return mod.stationarity(run.acts, **kw)
    if module == "continuity":
        return mod.analyse(run.acts, **kw)
    if module == "geometry":
        return mod.density_indices(run.acts, **kw)
    if module == "information":
        return mod.mi_profile(run.acts, **kw)
    if module == "rotations":
        if base is not None and set(kw) == {"factor"}:
            return mod.reclassify(base, kw["factor"])
        if base is not None and kw.get("null", "shuffle") != "shuffle" and set(kw) <= {"null", "n_shuffles",
                                                                                       "n_shuffles_per_sample"}:
            # another null for C9 alone: the classes (C10) stay the primary's
            mean = mod.rotation_test(run.acts, "mean", n_shuffles=kw.get("n_shuffles", 1000), null=kw["null"])
            per = mod.rotation_test(run.acts, "per-sample", n_shuffles=kw.get("n_shuffles_per_sample", 40),
                                    n_samples=min(base.per_sample.n_samples, run.acts.shape[0]), null=kw["null"])
            return replace(base, mean=mean, per_sample=per)
        return mod.analyse(run.acts, label=run.label, **kw)
    if module == "lowdim":  # another autoencoder seed: the spectra of the primary computation are reused
        spectra = None if base is None or not set(kw) <= {"ae_seed", "order_seed"} else (base.raw, base.std)
        return mod.analyse(run, spectra=spectra, **kw)
    if module == "perturb":
        return mod.flow_fields(run, **kw)
    if module == "jacobians":
        return mod.analyse(run, **kw)
    raise ValueError(f"unknown module {module!r}")


def _pick(verdicts: Sequence[Verdict], spec: Spec) -> Verdict:
    these = [v for v in verdicts if v.claim == spec.claim]
    i = READINGS.get(spec.claim, ("",)).index(spec.reading)
    if i >= len(these):
        raise ValueError(f"the module returned {len(these)} verdicts on {spec.claim}, expected a reading {spec.reading!r}")
    return these[i]


def _why_not(spec: Spec, kind: str, module: str, data_modules: Sequence[str], captured: bool) -> str:
    if spec.data not in BUILD_AXES and spec.data in NOT_RUN:
        return NOT_RUN[spec.data]
    if kind not in DATA_KINDS:
        return NOT_RUN["4-bit"] if kind == "4-bit" else f"the {kind} run is not captured on the data axes"
    if module not in data_modules:
        return f"this chapter is {NOT_RUN['module']}"
    if not captured:
        return "its capture failed or was not made in this build (see the build's log)"
    return ""


def evaluate(
    runs: Sequence[Activations],
    data_runs: Mapping[str, Mapping[str, Activations]] | None = None,
    specs: Sequence[Spec] = SPECS,
    chapters: Mapping[str, tuple[str, tuple[str, ...]]] | None = None,
    progress: bool = True,
    data_modules: Sequence[str] = DATA_MODULES,
    jobs: int = 1,
    skip: Mapping[tuple[str, str], str] | None = None,
) -> tuple[list[Verdict], list[Outcome], dict[str, float]]:
    """Every chapter's verdicts on ``runs``, and every specification's outcome.

    Each module's costly statistic is computed once per (run, data, ``Spec.compute``) and judged
    by the module's own ``verdicts`` for every specification that reads it.

    Parameters
    ----------
    runs : sequence of Activations
        The scoreboard's runs on the primary data (trained, 4-bit, control); their kinds are
        read from their labels (:data:`RUN_KINDS`).
    data_runs : mapping or None
        ``{data axis: {kind: Activations}}`` for the data axes (:func:`load_data_runs`). A
        specification without its run is "not run", with the reason (:data:`NOT_RUN`).
    specs : sequence of Spec
        Specifications on the primary data (default :data:`SPECS`); the data axes'
        specifications are added (:func:`data_specs`).
    chapters : mapping or None
        ``{chapter: (module, claims)}``, default :data:`tdcourse.registry.CHAPTERS`.
    progress : bool
        Print one line per module and run with its time.
    data_modules : sequence of str
        Modules evaluated on the data axes (default :data:`DATA_MODULES`).
    jobs : int, default 1
        Worker processes: each (chapter, run) pair is one task; ``jobs > 1`` runs them in
        that many processes (started fresh, one BLAS thread each). The result does not depend
        on ``jobs``: the same outcomes, in the same order.
    skip : mapping or None
        ``{(module, run kind): reason}`` pairs not evaluated: every specification of those
        chapters on that run is "not run", with the reason. Default :data:`SKIP`; ``{}``
        evaluates everything.

    Returns
    -------
    verdicts : list of Verdict
        What each chapter's ``verdicts`` returns on each run with its defaults (for every claim
        id it returns, e.g. "C1 (random basis)" too), chapter by chapter, run by run.
    outcomes : list of Outcome
        One per specification and run; the primary's carries the distance to its nearest
        threshold.
    seconds : dict
        Wall seconds spent on ``"primary"`` (the chapters' own verdicts: what the scoreboard alone
        costs), on ``"alternatives"`` (definitions and seeds on the primary data) and on
        ``"data axes"``.

    Raises
    ------
    ValueError
        ``jobs`` is not a whole number of at least 1.
    """
    chapters = CHAPTERS if chapters is None else chapters
    _check_jobs(jobs)
    data_runs = dict(data_runs or {})
    kinds = [_kind_of(r, i) for i, r in enumerate(runs)]
    all_specs = _all_specs(specs, chapters)
    skip = SKIP if skip is None else skip
    tasks: dict[tuple[int, int], tuple] = {}
    skipped: dict[tuple[int, int], list[Outcome]] = {}
    for k, (kind, run) in enumerate(zip(kinds, runs)):
        axes = {a: by_kind[kind] for a, by_kind in data_runs.items() if kind in by_kind}
        t, sk = kind_tasks(kind, k, run, axes, sorted(data_runs), chapters, all_specs, data_modules, skip)
        tasks.update(t)
        skipped.update(sk)
    results: dict[tuple[int, int], tuple] = {}

    def report(res: tuple) -> None:
        if progress:
            print(res[3], flush=True)

    if jobs == 1 or len(tasks) < 2:
        for key in sorted(tasks):
            results[key] = _evaluate_one(*tasks[key])
            report(results[key])
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # The costliest (chapter, run) pairs first, so that no worker is left with a long one at
        # the end; results are put back in the serial order, so the output does not depend on
        # ``jobs``. Each worker runs one BLAS / torch thread (see _one_thread); the runs travel
        # as their cache entries' paths (Activations pickles a memory-mapped entry by
        # reference), not as copies of their arrays.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx,
                                 initializer=_one_thread) as pool:
            futures = {pool.submit(_evaluate_one, *tasks[key]): key for key in by_cost(tasks)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                report(results[futures[fut]])
    return assemble(results, skipped)


def _check_jobs(jobs: Any) -> None:
    if not (isinstance(jobs, int) and not isinstance(jobs, bool) and jobs >= 1):
        raise ValueError(f"jobs must be a whole number of processes, at least 1, got {jobs!r}")


def _all_specs(specs: Sequence[Spec], chapters: Mapping[str, tuple[str, tuple[str, ...]]]) -> list[Spec]:
    """The specifications of ``chapters``' claims: ``specs`` and their data axes' (:func:`data_specs`)."""
    claims_in = {c for _m, cs in chapters.values() for c in cs}
    return [s for s in list(specs) + data_specs(specs, chapters=chapters) if s.claim in claims_in]


def kind_tasks(kind: str, k: int, run: Activations, axes: Mapping[str, Activations], axes_built: Sequence[str],
               chapters: Mapping[str, tuple[str, tuple[str, ...]]], all_specs: Sequence[Spec],
               data_modules: Sequence[str], skip: Mapping[tuple[str, str], str],
               ) -> tuple[dict[tuple[int, int], tuple], dict[tuple[int, int], list[Outcome]]]:
    """One run's (chapter, run) tasks for :func:`_evaluate_one`, and the outcomes of the pairs
    ``skip`` leaves out, each keyed by ``(chapter index, k)``: the serial order of
    :func:`evaluate` (chapter by chapter, run by run) is the keys' order.

    ``k`` is the run's index among the runs; ``axes`` its data-axis runs, ``{axis: Activations}``;
    ``axes_built`` the data axes of the build (for the "not run" reasons)."""
    tasks: dict[tuple[int, int], tuple] = {}
    skipped: dict[tuple[int, int], list[Outcome]] = {}
    for c, (chapter, (module, claims)) in enumerate(chapters.items()):
        mine = [s for s in all_specs if s.claim in claims]
        if (module, kind) in skip:
            skipped[(c, k)] = [Outcome(s, kind, None, skip[(module, kind)]) for s in mine]
            continue
        tasks[(c, k)] = (chapter, module, tuple(claims), kind, run, dict(axes), mine, tuple(data_modules),
                         sorted(axes_built))
    return tasks, skipped


def by_cost(tasks: Mapping[Any, tuple]) -> list:
    """The keys of ``tasks`` (:func:`kind_tasks`), costliest module first (:data:`_COST_RANK`), so
    that no worker is left with a long one at the end."""
    return sorted(tasks, key=lambda key: (-_COST_RANK.get(tasks[key][1], 0), key))


def assemble(results: Mapping[tuple[int, int], tuple], skipped: Mapping[tuple[int, int], list[Outcome]],
             ) -> tuple[list[Verdict], list[Outcome], dict[str, float]]:
    """:func:`evaluate`'s return value from the results of :func:`_evaluate_one`, keyed as
    :func:`kind_tasks` keys them: verdicts and outcomes in the serial order, then the skipped
    pairs' outcomes, and the seconds summed."""
    seconds = {"primary": 0.0, "alternatives": 0.0, "data axes": 0.0}
    found: list[Verdict] = []
    outcomes: list[Outcome] = []
    for key in sorted(results):
        primary, outs, secs, _line = results[key]
        found.extend(primary)
        outcomes.extend(outs)
        for name, v in secs.items():
            seconds[name] += v
    rest = [o for key in sorted(skipped) for o in skipped[key]]
    return found, outcomes + rest, seconds


#: Relative cost of a chapter's module in the scoreboard (an order for the workers, not a time).
_COST_RANK = {"jacobians": 9, "lowdim": 8, "information": 7, "continuity": 6, "perturb": 5, "geometry": 4,
              "rotations": 3, "stationarity": 1}


def _one_thread() -> None:
    """A scoreboard worker's initialiser: one BLAS and one torch thread (the workers are the
    parallelism; more threads per worker make them wait on each other on a small machine)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _evaluate_one(chapter: str, module: str, claims: tuple[str, ...], kind: str, run0: Activations,
                  axes: Mapping[str, Activations], mine: Sequence[Spec], data_modules: Sequence[str],
                  axes_built: Sequence[str]) -> tuple[list[Verdict], list[Outcome], dict[str, float], str]:
    """One chapter on one run: its own verdicts and every specification's outcome (what
    :func:`evaluate` does per pair, in a worker process or in the caller's)."""
    from importlib import import_module

    fn = import_module(f"tdcourse.{module}").verdicts
    t0 = time.perf_counter()
    states: dict[tuple, Any] = {}
    judged: dict[tuple, list[Verdict]] = {}

    def verdicts_of(spec: Spec, run: Activations) -> list[Verdict]:
        ckey = (spec.data, tuple(sorted(spec.compute.items())))
        jkey = ckey + (tuple(sorted(spec.kwargs.items())),)
        if jkey not in judged:
            if ckey not in states:
                base = states.get((spec.data, ()))
                states[ckey] = _compute(module, run, base, spec.compute)
            judged[jkey] = fn(run, chapter=chapter, **{_STATE_ARG[module]: states[ckey]}, **spec.kwargs)
        return judged[jkey]

    first = Spec(claims[0], "primary", "", reading=READINGS.get(claims[0], ("",))[0], primary=True)
    primary = verdicts_of(first, run0)
    lines = _thresholds(module, states[(PRIMARY_DATA, ())], run0, primary)
    t1 = time.perf_counter()
    outcomes: list[Outcome] = []
    t_data = 0.0
    for spec in sorted(mine, key=lambda s: s.data != PRIMARY_DATA):
        ts = time.perf_counter()
        if spec.data == PRIMARY_DATA:
            run = run0
        else:
            run = axes.get(spec.data) if module in data_modules else None
        if run is None:
            why = _why_not(spec, kind, module, data_modules, spec.data in axes_built)
            outcomes.append(Outcome(spec, kind, None, why))
            continue
        try:
            verdict = _pick(verdicts_of(spec, run), spec)
        except RunTooSmallError as err:  # an alternative this model is too small for (e.g. a layer left out of 4)
            if spec.primary:
                raise
            outcomes.append(Outcome(spec, kind, None, "not run: " + str(err).split(". ")[0]))
            continue
        margin, close = _nearest(lines.get(spec.row, ())) if spec.primary else ("", False)
        outcomes.append(Outcome(spec, kind, verdict, margin=margin, close=close))
        if spec.data != PRIMARY_DATA:
            t_data += time.perf_counter() - ts
    t2 = time.perf_counter()
    secs = {"primary": t1 - t0, "alternatives": t2 - t1 - t_data, "data axes": t_data}
    line = (f"  {chapter:20s} {kind:8s} {len(states)} computation(s), {len(judged)} judgement(s): "
            f"chapter's own {t1 - t0:6.1f} s, alternatives {t2 - t1 - t_data:6.1f} s, "
            f"data axes {t_data:6.1f} s")
    return primary, outcomes, secs, line


def summarise(outcomes: Sequence[Outcome]) -> dict[tuple[str, str], Robustness]:
    """``{(row, kind): Robustness}``: per claim reading and run, which alternatives flip the
    primary outcome (robustness) and which seeds do (stability).

    The rule: fragile when any alternative definition or data axis computed on the run gives
    another outcome than the primary; seeds count only towards stability, so adding seeds
    can neither make nor unmake a fragile verdict.
    """
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.spec.row, o.kind), []).append(o)
    out = {}
    for (row, kind), items in groups.items():
        prim = next((o for o in items if o.spec.primary), None)
        if prim is None or prim.verdict is None:
            continue
        flips, holds, not_run, seeds, unstable = [], [], [], [], []
        for o in items:
            role = o.spec.role
            if role == "primary":
                continue
            if o.verdict is None:
                if role != "seed":
                    not_run.append(f"{o.spec.label} ({o.note})" if o.note else o.spec.label)
                continue
            changed = o.outcome != prim.outcome
            if role == "seed":
                seeds.append(o.spec.label)
                if changed:
                    unstable.append(f"{o.spec.label} → {o.outcome}")
            elif changed:
                flips.append(f"{o.spec.label} → {o.outcome}")
            else:
                holds.append(o.spec.label)
        out[(row, kind)] = Robustness(row=row, kind=kind, primary=prim.outcome, flips=tuple(flips),
                                      holds=tuple(holds), not_run=tuple(not_run), seeds=tuple(seeds),
                                      unstable=tuple(unstable), margin=prim.margin, close=prim.close)
    return out


def marks(verdicts: Sequence[Verdict], columns: Sequence[str], summary: Mapping[tuple[str, str], Robustness],
          kinds: Mapping[str, str]) -> list[tuple[str, str, Robustness]]:
    """The scoreboard's cells that carry the fragile mark: ``[(row, column label, Robustness)]``.

    One entry per (claim reading, model column) shown on the scoreboard whose
    :class:`Robustness` is fragile; the scoreboard marks exactly these cells and the landing
    page counts exactly these, so the two cannot disagree.
    """
    from .registry import SEQUEL_CLAIMS

    out = []
    for claim in CLAIMS + SEQUEL_CLAIMS:  # the sequel's rows are on the scoreboard too
        for col in columns:
            vs = [v for v in verdicts if v.claim == claim and v.model == col]
            for name in row_names(claim, len(vs)):
                rb = summary.get((name, kinds.get(col, "")))
                if rb is not None and rb.fragile:
                    out.append((name, col, rb))
    return out


def load_data_runs(runs: Sequence[Activations], axes: Sequence[str] = BUILD_AXES,
                   progress: bool = True) -> dict[str, dict[str, Activations]]:
    """The data axes' runs of the model behind ``runs``, for :data:`DATA_KINDS` (trained, control).

    Each axis in ``axes`` is captured once into the cache (read from it afterwards); the other
    axes are not read even when cached, so that which specifications count never depends on
    what a machine happens to hold.

    Parameters
    ----------
    runs : sequence of Activations
        The scoreboard's runs; the model, its dtype and the control's seed are read from their
        ``meta``. N is the primary run's for "token 25 of 48" and 672 for "whole lines".
    axes : sequence of str
        Keys of :data:`DATA` (default :data:`BUILD_AXES`).
    progress : bool

    Returns
    -------
    dict
        ``{axis: {kind: Activations}}``; a run that cannot be captured here (no model, no room)
        is left out with a printed reason, and its specifications show "not run".
    """
    from .capture import load_activations

    axes = list(axes)
    unknown = [a for a in axes if a not in DATA or a == PRIMARY_DATA]
    if unknown:
        raise ValueError(f"unknown data axes {unknown}: use keys of robustness.DATA other than the primary "
                         f"{[a for a in DATA if a != PRIMARY_DATA]}")
    spec = runs[0].meta.get("model", {})
    name = spec.get("name")
    ctrl = next((r.meta["model"] for r in runs if r.meta.get("model", {}).get("init") == "random"), {})
    out: dict[str, dict[str, Activations]] = {}
    for axis in axes:
        recipe, n, _what = DATA[axis]
        n = n or runs[0].acts.shape[0]
        got = {}
        for kind in DATA_KINDS:
            init = "random" if kind == "control" else "trained"
            seed = int(ctrl.get("seed", 0)) if kind == "control" else 0
            t0 = time.perf_counter()
            try:
                got[kind] = load_activations(model=name, n=n, quant="none", dtype=spec.get("dtype"), init=init,
                                             seed=seed, recipe=recipe, progress=False)
            except Exception as err:  # noqa: BLE001 - the page says which capture is missing and why
                print(f"  data axis {axis!r}, {kind}: not captured ({type(err).__name__}: {err})")
                continue
            if progress:
                print(f"  data axis {axis:16s} {kind:8s} {got[kind].acts.shape} {time.perf_counter() - t0:6.1f} s",
                      flush=True)
        out[axis] = got
    return out


# ----------------------------------------------------------------------------- the page


def _cell(o: Outcome | None, prim: Outcome | None) -> str:
    if o is None:
        return "—"
    if o.verdict is None:
        return "not run"
    s = f"{SYMBOL[o.outcome]} ({o.verdict.value:.3g})"
    if o.spec.primary or prim is None or prim.verdict is None or o.outcome == prim.outcome:
        return s
    return s + (" ⚠ unstable" if o.spec.role == "seed" else " ⚠ flips")


def _claim_text(outcomes: Sequence[Outcome], claim: str) -> str:
    v = next((o.verdict for o in outcomes if o.spec.claim == claim and o.verdict is not None), None)
    return v.paper if v is not None else ""


def summary_cell(rb: Robustness | None) -> str:
    """A summary-table cell: the outcome, then robustness, stability and a threshold it hangs on."""
    if rb is None:
        return "not run"
    return f"{SYMBOL[rb.primary]}: " + rb.text.replace("fragile:", "⚠ fragile:", 1)


def to_markdown(outcomes: Sequence[Outcome], kinds: Sequence[str] = RUN_KINDS,
                labels: Mapping[str, str] | None = None, timing: str = "") -> str:
    """The robustness page's generated part (MyST): a summary table, then one table per claim.

    The summary gives, per claim reading and run, the primary outcome, whether it is fragile
    (and which alternatives flip it), whether it is stable over the seeds, and the threshold it
    hangs on if any. Each claim's table has one row per specification (the primary first, in
    bold; then the alternative definitions, the data axes, the seeds) and one column per run;
    an alternative that changes the outcome is marked "⚠ flips", a seed that does "⚠ unstable".
    A specification not computed says "not run"; the reasons are listed under the table.
    """
    labels = dict(labels or {})
    summ = summarise(outcomes)
    rows = sorted(dict.fromkeys(o.spec.row for o in outcomes), key=lambda r: (r[0] != "C", int(r.split()[0][1:])))
    head = ["| claim | " + " | ".join(labels.get(k, k) for k in kinds) + " |", "|---|" + "---|" * len(kinds)]
    for row in rows:
        cells = [summary_cell(summ.get((row, k))) for k in kinds]
        head.append(f"| {{ref}}`{row} <claim-{row.split()[0].lower()}>` | " + " | ".join(cells) + " |")
    n_frag = {k: sum(r.fragile for (row, kk), r in summ.items() if kk == k) for k in kinds}
    n_rows = {k: sum(1 for (row, kk) in summ if kk == k) for k in kinds}
    parts = ["## Summary", "",
             "Each cell: the chapter's outcome; **⚠ fragile** and the alternatives (definitions or data axes) that "
             "change it, or *robust* to how many, or *not tested* (fewer than two alternatives computed); then "
             "whether any resampling seed changes it (*stable* / *unstable*); and, where the outcome hangs on a "
             "threshold (within a tenth of it), how far it is from the line.", "",
             "Fragile verdicts: " + "; ".join(f"{labels.get(k, k)} {n_frag[k]} of {n_rows[k]}" for k in kinds) + ".",
             "", *head, ""]
    if timing:
        parts += [timing, ""]
    by_claim: dict[str, list[str]] = {}
    for row in rows:
        by_claim.setdefault(row.split()[0], []).append(row)
    order = {"primary": 0, "definition": 1, "data": 2, "seed": 3}
    for claim, claim_rows in by_claim.items():
        parts += [f"## {claim}", "", f"*The paper:* {_claim_text(outcomes, claim).replace('|', '/')}", ""]
        for row in claim_rows:
            these = sorted((o for o in outcomes if o.spec.row == row), key=lambda o: order[o.spec.role])
            names = list(dict.fromkeys(o.spec.label for o in these))
            if row != claim:
                parts += [f"**{row}**", ""]
            prim = {o.kind: o for o in these if o.spec.primary}
            table = ["| specification | " + " | ".join(labels.get(k, k) for k in kinds) + " |",
                     "|---|" + "---|" * len(kinds)]
            for name in names:
                def pick(k):
                    return next((o for o in these if o.kind == k and o.spec.label == name), None)
                spec = next(o.spec for o in these if o.spec.label == name)
                label = {"primary": "**primary**", "seed": f"{name} *(seed)*", "data": f"{name} *(data)*"}.get(
                    spec.role, name)
                table.append(f"| {label} | " + " | ".join(_cell(pick(k), prim.get(k)) for k in kinds) + " |")
            table.append("| *robust?* | " + " | ".join(
                "not run" if summ.get((row, k)) is None else summ[(row, k)].status for k in kinds) + " |")
            table.append("| *stable?* | " + " | ".join(
                "not run" if summ.get((row, k)) is None else
                {True: "yes", False: "no", None: "not computed"}[summ[(row, k)].stable] for k in kinds) + " |")
            parts += table + [""]
            descr: dict[str, list[str]] = {}
            for o in these:
                if o.spec.label not in descr.setdefault(o.spec.description, []):
                    descr[o.spec.description].append(o.spec.label)
            parts += [f"- *{', '.join(ns)}*: {d}" for d, ns in descr.items()]
            why: dict[str, list[str]] = {}
            shared = {NOT_RUN.get(a) for a in DATA if a not in BUILD_AXES} | {NOT_RUN["4-bit"]}
            # a run on which nothing of this row was computed is named once, not specification by specification
            none_on = {k for k in kinds if any(o.kind == k for o in these)
                       and all(o.verdict is None for o in these if o.kind == k)}
            for o in these:
                if o.verdict is None and o.note:
                    key = (f"every specification on {labels.get(o.kind, o.kind)}" if o.kind in none_on
                           else f"{o.spec.label} on {labels.get(o.kind, o.kind)}")
                    note = "why: see the line under the summary" if o.note in shared else o.note
                    if key not in why.setdefault(note, []):
                        why[note].append(key)
            parts += [f"- not run ({', '.join(ks)}): {note}" for note, ks in why.items()]
            if row in NO_STABILITY:
                parts.append(f"- stability not computed: {NO_STABILITY[row]}")
            margins = [f"{labels.get(k, k)}: {summ[(row, k)].margin}" for k in kinds
                       if summ.get((row, k)) is not None and summ[(row, k)].margin]
            if margins:
                parts.append("- nearest threshold of the primary criterion: " + "; ".join(margins))
            parts.append("")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- kept for the chapters


def _summary_file() -> Path:
    """``$TDCOURSE_CACHE/robustness/summary.json`` (not in ``verdicts/``, whose every ``*.json``
    :func:`tdcourse.verdicts.load_all` reads as a chapter's verdicts)."""
    from . import env

    path = env.cache_dir() / "robustness"
    path.mkdir(parents=True, exist_ok=True)
    return path / "summary.json"


def drop_old_summary() -> bool:
    """Delete ``$TDCOURSE_CACHE/verdicts/robustness.json`` if an older course version left it there.

    That file is not a chapter's verdicts, and :func:`tdcourse.verdicts.load_all` (which the
    scoreboard calls for the Llama column) fails on it, so a second scoreboard build on the same
    cache stopped with ``TypeError: Verdict.__init__() got an unexpected keyword argument``.
    Returns whether a file was deleted.
    """
    from .verdicts import verdict_dir

    old = verdict_dir() / "robustness.json"
    if old.exists():
        old.unlink()
        return True
    return False


#: Format of ``robustness.json``; a file of another format is not read (the chapters then say
#: robustness was not computed for their captures until the scoreboard runs again).
SUMMARY_FORMAT = 2


def save_summary(runs: Sequence[Activations], summary: Mapping[tuple[str, str], Robustness]) -> Path:
    """Keep :func:`summarise`'s result in ``$TDCOURSE_CACHE/robustness/summary.json``, each row
    tagged with the model label and the cache key of the capture it was computed on, so that a
    chapter's "what we found" can say how robust its verdicts are (:func:`for_runs`)."""
    from .capture import cache_key

    keys = {_kind_of(r, i): (r.label, cache_key(r.meta)) for i, r in enumerate(runs) if r.meta}
    rows = [{**rb.to_dict(), "model": keys[kind][0], "capture": keys[kind][1]}
            for (row, kind), rb in summary.items() if kind in keys]
    path = _summary_file()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"format": SUMMARY_FORMAT, "rows": rows}, indent=1))
    os.replace(tmp, path)
    return path


def for_runs(runs: Sequence[Activations]) -> dict[tuple[str, str], Robustness]:
    """``{(row, model label): Robustness}`` kept by the last scoreboard build for exactly these
    captures (matched by cache key), for :func:`tdcourse.verdicts.findings`; empty when none was
    computed for them (another model or N: the scoreboard computes SmolLM2's), or when the kept
    file is of an older format.

    Each :class:`Robustness` gives ``fragile`` (an alternative definition or data axis changes
    the outcome), ``flips`` (which, in words), ``stable`` (no seed changes it; None: not
    computed), ``margin`` (the distance to the nearest threshold) and ``text`` (all of it in
    one short sentence).
    """
    from .capture import cache_key

    path = _summary_file()
    if not path.exists():
        return {}
    try:
        blob = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(blob, dict) or blob.get("format") != SUMMARY_FORMAT:
        return {}
    wanted = {cache_key(r.meta): r.label for r in runs if r.meta}
    return {(d["row"], wanted[d["capture"]]): Robustness.from_dict(d)
            for d in blob.get("rows", []) if isinstance(d, dict) and d.get("capture") in wanted}
