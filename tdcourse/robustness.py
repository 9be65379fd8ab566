"""How robust is each verdict? The outcome of every claim under reasonable alternative specifications.

Each chapter's verdict rests on choices the paper leaves open: a threshold ("highly
correlated" = r > 0.8), an effect-size floor, which steps count, the autoencoder's seed, the
token read, the samples. This module declares, per claim, the chapter's **primary**
specification and the alternatives as small records (:class:`Spec`), evaluates them all with
the chapter's own ``verdicts`` function (never a copy of its code), and counts how many give
the primary's outcome.

Two kinds of specification:

* **definitions**: keyword arguments of the module's ``verdicts`` (``Spec.kwargs``: a
  threshold, a floor, steps left out; judged on the statistic computed once) or of its costly
  computation (``Spec.compute``: the autoencoder's seed, the amplitude factor of a spiral;
  computed once per distinct value and shared by every claim that reads it);
* **data axes** (:data:`DATA`): the primary definition on other samples: the 25th of the 48
  tokens instead of the last (``SampleRecipe(max_tokens=25)``: in a causal model the state of
  token 25 does not depend on the tokens after it, so this *is* the state at token 25 of the
  48-token sample), and whole WikiText lines of 100-500 characters (N = 672 from the test
  split) instead of the first 48 tokens of the first 1000 lines. They are captured once into
  the cache for the trained model and the control (:data:`DATA_KINDS`; the 4-bit copy is not
  captured again); the build captures the 25-token axis and reads the whole-lines one only if
  it is cached (:data:`CAPTURED_AXES`: its capture costs about two minutes per model).

A verdict is **fragile** on a run when its primary outcome is not held by a strict majority of
the specifications computed on that run (:attr:`Robustness.fragile`).

:func:`evaluate` returns the primary verdicts (what the scoreboard shows, identical to each
chapter's) and every specification's outcome; :func:`summarise` the counts per claim and run;
:func:`to_markdown` the robustness page's tables.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .capture import Activations
from .data import SampleRecipe
from .verdicts import Verdict

__all__ = ["RUN_KINDS", "DATA", "PRIMARY_DATA", "DATA_KINDS", "DATA_MODULES", "READINGS", "Spec", "SPECS",
           "Outcome", "Robustness", "CAPTURED_AXES", "specs_for", "data_specs", "evaluate", "summarise", "load_data_runs",
           "to_markdown", "SYMBOL", "save_summary", "for_runs"]

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

#: Runs captured on the data axes (the 4-bit copy's capture costs about twice the trained one's on
#: the CPU, and the chapters show it follows the trained model; it is left out of the data axes).
DATA_KINDS = ("trained", "control")

#: Modules evaluated on the data axes. The autoencoder (C11, C12) and the teleport (C13, the
#: model's forward passes) are left out: about a minute per run each on two cores, and C11's and
#: C13's fragility is shown by their definitions already; C13's teleport acts on its seed
#: prompt, so the samples enter it only through the PCA plane.
DATA_MODULES = ("stationarity", "continuity", "geometry", "information", "rotations")

#: Claims read two ways: the name of each reading, in the order the module's ``verdicts`` returns them.
READINGS: dict[str, tuple[str, ...]] = {
    "C9": ("mean trajectory", "per-sample R"),
    "C12": ("error", "dimension"),
    "C13": ("distance", "arrows"),
}

#: The argument of each module's ``verdicts`` that takes its precomputed statistic.
_STATE_ARG = {"stationarity": "result", "continuity": "analysis", "geometry": "density", "information": "profile",
              "rotations": "analysis", "lowdim": "result", "perturb": "flows", "jacobians": "result"}

SYMBOL = {"agrees": "**agrees**", "partly": "*partly*", "disagrees": "**disagrees** ✗", "not run": "not run here"}


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
    """

    claim: str
    name: str
    description: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    compute: Mapping[str, Any] = field(default_factory=dict)
    reading: str = ""
    data: str = PRIMARY_DATA
    primary: bool = False

    def __post_init__(self) -> None:
        if self.data not in DATA:
            raise ValueError(f"data must be one of {list(DATA)}, got {self.data!r}")
        readings = READINGS.get(self.claim, ("",))
        if self.reading not in readings:
            raise ValueError(f"{self.claim} has the readings {readings}, got reading={self.reading!r}")
        if self.primary and (self.kwargs or self.compute or self.data != PRIMARY_DATA):
            raise ValueError(f"the primary specification of {self.row} must use the chapter's defaults "
                             "(no kwargs, no compute, the primary data)")

    @property
    def row(self) -> str:
        """``"C13 (arrows)"``, or the claim alone."""
        return f"{self.claim} ({self.reading})" if self.reading else self.claim


def _primary(claim: str, description: str, reading: str = "") -> Spec:
    return Spec(claim, "primary", description, reading=reading, primary=True)


def _seeds(claim: str, reading: str = "") -> list[Spec]:
    return [Spec(claim, f"AE seed {s}", "the autoencoder trained with another seed (its split, initial weights and "
                 "batch order); bootstraps unchanged", compute={"ae_seed": s}, reading=reading) for s in range(1, 5)]


#: Every claim's specifications on the primary data (the data axes are added by :func:`data_specs`).
SPECS: tuple[Spec, ...] = (
    _primary("C1", "median r over units and adjacent site pairs: 95 % CI above 0.8 and above the null"),
    Spec("C1", "r > 0.9", "'highly correlated' means a median r above 0.9", {"high_r": 0.9}),
    Spec("C1", "r > 0.94", "'highly correlated' means a median r above 0.94", {"high_r": 0.94}),
    Spec("C1", "seed 1", "another bootstrap, permutation and rotation seed", compute={"seed": 1}),
    _primary("C2", "share of units whose r rises with depth: 95 % CI above 0.5"),
    Spec("C2", "seed 1", "another bootstrap, permutation and rotation seed", compute={"seed": 1}),
    _primary("C3", "median over units of r_within − r_across: 95 % CI above 0"),
    Spec("C3", "seed 1", "another bootstrap, permutation and rotation seed", compute={"seed": 1}),
    _primary("C4", "every density index rises (Spearman ρ and late − early, 95 % CIs above 0)"),
    Spec("C4", "first layer left out", "the first two sites (embedding, first attention and MLP steps) left out",
         {"skip_sites": 2}),
    _primary("C5", "cosine between consecutive states rises, site and layer steps"),
    Spec("C5", "first layer left out", "the first two sites (embedding, first attention and MLP steps) left out",
         {"skip_sites": 2}),
    _primary("C6", "velocity rises, site and layer steps, with late/early ≥ 1.5"),
    Spec("C6", "no floor", "any significant rise counts (no effect-size floor: the criterion before this page)",
         {"min_ratio": None}),
    Spec("C6", "late/early ≥ 2", "a higher floor: the velocity at least doubles", {"min_ratio": 2.0}),
    Spec("C6", "first layer left out", "the first two sites left out (floor 1.5)", {"skip_sites": 2}),
    _primary("C7", "share of units drifting beyond the site-shuffled null's 99th percentile > 0.5"),
    Spec("C7", "null seed 1", "another seed for the site-shuffled null", compute={"seed": 1}),
    Spec("C7", "null seed 2", "another seed for the site-shuffled null", compute={"seed": 2}),
    _primary("C8", "kNN and binned MI drop within the first quarter of steps and climb back"),
    Spec("C8", "early = first 1/5", "the early window is the first fifth of the steps", {"early_frac": 0.2}),
    Spec("C8", "early = first 1/3", "the early window is the first third of the steps", {"early_frac": 1 / 3}),
    _primary("C9", "|mean R| within a factor 1.5 of 10.74 and different from the layer-shuffle null",
             "mean trajectory"),
    Spec("C9", "seed 1", "another seed for the layer shuffles", compute={"seed": 1}, reading="mean trajectory"),
    _primary("C9", "as the mean trajectory, on per-sample R (100 samples)", "per-sample R"),
    Spec("C9", "seed 1", "another seed for the shuffles and the 100 samples", compute={"seed": 1},
         reading="per-sample R"),
    _primary("C10", "orbits and outward spirals (factor 2) each ≥ 5 % of units, spirals beyond the null"),
    Spec("C10", "factor 1.5", "an outward spiral's amplitude grows at least 1.5×", compute={"factor": 1.5}),
    Spec("C10", "factor 3.5", "an outward spiral's amplitude grows at least 3.5×", compute={"factor": 3.5}),
    Spec("C10", "share ≥ 3 %", "each class must hold at least 3 % of units", {"min_share": 0.03}),
    Spec("C10", "share ≥ 10 %", "each class must hold at least 10 % of units", {"min_share": 0.10}),
    _primary("C11", "mean latent path bends > 0.1 of its chord (CI) and is ordered by depth; AE seed 0"),
    *_seeds("C11"),
    _primary("C12", "held-out NMSE early third − late third, CI above 0; AE seed 0", "error"),
    *_seeds("C12", "error"),
    _primary("C12", "late third lower-dimensional (PR and n90, raw and standardised)", "dimension"),
    _primary("C13", "contraction ratio below 1 at the early layers, weaker late; k = 1 layer", "distance"),
    Spec("C13", "seed 1", "another bootstrap seed (grid points resampled)", {"seed": 1}, reading="distance"),
    _primary("C13", "inward arrows (any shrink) > 1/2 at the early layers, fewer late; k = 1", "arrows"),
    Spec("C13", "pull ≥ 5 %", "an arrow counts as inward only if it shrinks by at least 5 %", {"min_pull": 0.05},
         reading="arrows"),
    Spec("C13", "seed 1", "another bootstrap seed (grid points resampled)", {"seed": 1}, reading="arrows"),
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

#: Claims without an alternative definition here, and why (each still has the data axes where run).
NO_ALTERNATIVE = {
    "C12 (dimension)": "the per-site spectra do not depend on the autoencoder's seed, and another variance "
                       "share for n90 would recompute the spectra (about a minute per run)",
}


def _chapters() -> dict[str, tuple[str, tuple[str, ...]]]:
    from .scoreboard import CHAPTERS

    return CHAPTERS


def _module_of(claim: str, chapters: Mapping[str, tuple[str, tuple[str, ...]]]) -> tuple[str, str]:
    for chapter, (module, claims) in chapters.items():
        if claim in claims:
            return chapter, module
    raise ValueError(f"no chapter tests {claim}")


def specs_for(claim: str, specs: Sequence[Spec] = SPECS) -> list[Spec]:
    """The specifications of one claim (all its readings), primary first per reading."""
    return [s for s in specs if s.claim == claim]


def data_specs(specs: Sequence[Spec] = SPECS, modules: Sequence[str] = DATA_MODULES,
               chapters: Mapping[str, tuple[str, tuple[str, ...]]] | None = None) -> list[Spec]:
    """The primary definition of every claim (reading) of ``modules`` on each data axis."""
    chapters = _chapters() if chapters is None else chapters
    out = []
    tested = {c for _m, cs in chapters.values() for c in cs}
    for s in specs:
        if not s.primary or s.claim not in tested:
            continue
        _, module = _module_of(s.claim, chapters)
        if module not in modules:
            continue
        for name, (_recipe, _n, what) in DATA.items():
            if name != PRIMARY_DATA:
                out.append(Spec(s.claim, name, f"the primary definition on {what}", reading=s.reading, data=name))
    return out


@dataclass(frozen=True)
class Outcome:
    """One specification on one run: its verdict, or why it was not computed."""

    spec: Spec
    kind: str
    verdict: Verdict | None
    note: str = ""

    @property
    def outcome(self) -> str:
        return self.verdict.outcome if self.verdict is not None else "not run"

    def to_dict(self) -> dict:
        return {"claim": self.spec.claim, "reading": self.spec.reading, "spec": self.spec.name,
                "description": self.spec.description, "data": self.spec.data, "primary": self.spec.primary,
                "kwargs": dict(self.spec.kwargs), "compute": dict(self.spec.compute), "run": self.kind,
                "outcome": self.outcome, "value": None if self.verdict is None else self.verdict.value,
                "note": self.note}


@dataclass(frozen=True)
class Robustness:
    """How one claim (reading) fares on one run over its specifications.

    Attributes
    ----------
    row : str
        ``"C13 (arrows)"`` or ``"C1"``.
    kind : str
        One of :data:`RUN_KINDS`.
    primary : str
        The primary specification's outcome.
    n : int
        Specifications computed on this run (the primary included).
    same : int
        Of those, how many give the primary's outcome.
    agrees : int
        Of those, how many say "agrees" with the paper.
    """

    row: str
    kind: str
    primary: str
    n: int
    same: int
    agrees: int

    @property
    def fragile(self) -> bool:
        """The primary outcome is not held by a strict majority of the specifications."""
        return self.n > 0 and 2 * self.same <= self.n

    @property
    def text(self) -> str:
        """E.g. ``"disagrees in 5 of 10"``."""
        return f"{self.primary} in {self.same} of {self.n}" if self.n else "not run"


def _kind_of(run: Activations, i: int) -> str:
    label = run.label
    if "random init" in label:
        return "control"
    if "4bit" in label:
        return "4-bit"
    return "trained" if i == 0 else f"run {i}"


def _compute(module: str, run: Activations, base: Any, kw: Mapping[str, Any]) -> Any:
    """The module's costly statistic for ``run`` (what its ``verdicts`` takes precomputed)."""
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
        return mod.analyse(run.acts, label=run.label, **kw)
    if module == "lowdim":  # another autoencoder seed: the spectra of the primary computation are reused
        spectra = None if base is None or "ae_seed" not in kw else (base.raw, base.std)
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


def evaluate(
    runs: Sequence[Activations],
    data_runs: Mapping[str, Mapping[str, Activations]] | None = None,
    specs: Sequence[Spec] = SPECS,
    chapters: Mapping[str, tuple[str, tuple[str, ...]]] | None = None,
    progress: bool = True,
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
        ``{data axis: {kind: Activations}}`` for the data axes (:func:`load_data_runs`); None
        or missing entries: those specifications are not run.
    specs : sequence of Spec
        Definitions on the primary data (default :data:`SPECS`); the data axes' specifications
        are added for :data:`DATA_MODULES`.
    chapters : mapping or None
        ``{chapter: (module, claims)}``, default :data:`tdcourse.scoreboard.CHAPTERS`.
    progress : bool
        Print one line per module and run with its time.

    Returns
    -------
    verdicts : list of Verdict
        What each chapter's ``verdicts`` returns on each run with its defaults (for every claim
        id it returns, e.g. "C1 (random basis)" too), chapter by chapter, run by run.
    outcomes : list of Outcome
        One per specification and run.
    seconds : dict
        Wall seconds spent on ``"primary"`` (the chapters' own verdicts: what the scoreboard alone
        costs) and on ``"alternatives"`` (every other specification).
    """
    chapters = _chapters() if chapters is None else chapters
    from importlib import import_module
    seconds = {"primary": 0.0, "alternatives": 0.0}
    data_runs = dict(data_runs or {})
    kinds = [_kind_of(r, i) for i, r in enumerate(runs)]
    primary_runs = dict(zip(kinds, runs))
    claims_in = {c for _m, cs in chapters.values() for c in cs}
    all_specs = [s for s in list(specs) + data_specs(specs, chapters=chapters) if s.claim in claims_in]
    found: list[Verdict] = []
    outcomes: list[Outcome] = []
    for chapter, (module, claims) in chapters.items():
        fn = import_module(f"tdcourse.{module}").verdicts
        mine = [s for s in all_specs if s.claim in claims]
        for kind in kinds:
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

            primary = verdicts_of(Spec(claims[0], "primary", "", reading=READINGS.get(claims[0], ("",))[0],
                                       primary=True), primary_runs[kind])
            found.extend(primary)
            t1 = time.perf_counter()
            seconds["primary"] += t1 - t0
            for spec in mine:
                run = primary_runs[kind] if spec.data == PRIMARY_DATA else data_runs.get(spec.data, {}).get(kind)
                if run is None:
                    why = ("the 4-bit copy is not captured on the data axes" if kind not in DATA_KINDS
                           else "not captured in this build")
                    outcomes.append(Outcome(spec, kind, None, why))
                    continue
                outcomes.append(Outcome(spec, kind, _pick(verdicts_of(spec, run), spec)))
            t2 = time.perf_counter()
            seconds["alternatives"] += t2 - t1
            if progress:
                print(f"  {chapter:20s} {kind:8s} {len(states)} computation(s), {len(judged)} judgement(s): "
                      f"chapter's own {t1 - t0:6.1f} s, alternatives {t2 - t1:6.1f} s", flush=True)
    return found, outcomes, seconds


def summarise(outcomes: Sequence[Outcome]) -> dict[tuple[str, str], Robustness]:
    """``{(row, kind): Robustness}`` over the computed specifications of each claim reading and run."""
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.spec.row, o.kind), []).append(o)
    out = {}
    for (row, kind), items in groups.items():
        done = [o for o in items if o.verdict is not None]
        prim = next((o.outcome for o in done if o.spec.primary), "not run")
        out[(row, kind)] = Robustness(row=row, kind=kind, primary=prim, n=len(done),
                                      same=sum(o.outcome == prim for o in done),
                                      agrees=sum(o.outcome == "agrees" for o in done))
    return out


#: Data axes the scoreboard captures when they are not cached. "whole lines" is read when it is
#: cached but not captured by the book's build: its lines are about twice as long as the 48-token
#: samples, so its capture costs about two minutes per model on two CPU cores (the 25-token one
#: about half a minute). Capture it once with ``load_data_runs(runs, capture=list(DATA))``.
CAPTURED_AXES = ("token 25 of 48",)


def load_data_runs(runs: Sequence[Activations], axes: Sequence[str] | None = None,
                   capture: Sequence[str] = CAPTURED_AXES, progress: bool = True) -> dict[str, dict[str, Activations]]:
    """The data axes' runs of the model behind ``runs``, for :data:`DATA_KINDS` (trained, control).

    Parameters
    ----------
    runs : sequence of Activations
        The scoreboard's runs; the model, its dtype and the control's seed are read from their
        ``meta``. N is the primary run's for "token 25 of 48" and 672 for "whole lines".
    axes : sequence of str or None
        Keys of :data:`DATA` (default: every axis but the primary).
    capture : sequence of str
        Axes captured (once, into the cache) when not cached; the others are used only if a
        capture is cached already (default :data:`CAPTURED_AXES`).
    progress : bool

    Returns
    -------
    dict
        ``{axis: {kind: Activations}}``; a run that is not cached and not captured, or cannot
        be captured here (no model, no room), is left out with a printed reason, and its
        specifications show "not run".
    """
    from dataclasses import replace

    from .capture import find_entries, load_activations, read_activations

    axes = [a for a in DATA if a != PRIMARY_DATA] if axes is None else list(axes)
    unknown = [a for a in list(axes) + list(capture) if a not in DATA]
    if unknown:
        raise ValueError(f"unknown data axes {unknown}: use keys of robustness.DATA {list(DATA)}")
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
                if axis in capture:
                    got[kind] = load_activations(model=name, n=n, quant="none", dtype=spec.get("dtype"), init=init,
                                                 seed=seed, recipe=recipe, progress=False)
                else:
                    found = find_entries(name, replace(recipe, n=n), init=init, seed=seed, quant="none",
                                         dtype=spec.get("dtype"))
                    if not found:
                        if progress:
                            print(f"  data axis {axis!r}, {kind}: not cached, not captured by the build")
                        continue
                    got[kind] = read_activations(found[0][0], expect_meta=found[0][1])
            except Exception as err:  # noqa: BLE001 - the page says which capture is missing and why
                print(f"  data axis {axis!r}, {kind}: not captured ({type(err).__name__}: {err})")
                continue
            if progress:
                print(f"  data axis {axis:16s} {kind:8s} {got[kind].acts.shape} {time.perf_counter() - t0:6.1f} s",
                      flush=True)
        out[axis] = got
    return out


def _cell(o: Outcome | None) -> str:
    if o is None or o.verdict is None:
        return "—"
    return f"{SYMBOL[o.outcome]} ({o.verdict.value:.3g})"


def _claim_text(outcomes: Sequence[Outcome], claim: str) -> str:
    v = next((o.verdict for o in outcomes if o.spec.claim == claim and o.verdict is not None), None)
    return v.paper if v is not None else ""


def to_markdown(outcomes: Sequence[Outcome], kinds: Sequence[str] = RUN_KINDS,
                labels: Mapping[str, str] | None = None, timing: str = "") -> str:
    """The robustness page's generated part (MyST): a summary table, then one table per claim.

    Each claim's table has one row per specification (the primary first, in bold) and one
    column per run kind, each cell the outcome with its value; its last row counts, per run,
    the specifications that give the primary's outcome (⚠ where it is not a strict majority).
    """
    labels = dict(labels or {})
    summ = summarise(outcomes)
    rows = sorted(dict.fromkeys(o.spec.row for o in outcomes), key=lambda r: (r[0] != "C", int(r.split()[0][1:])))
    head = [f"| claim | " + " | ".join(labels.get(k, k) for k in kinds) + " |", "|---|" + "---|" * len(kinds)]
    for row in rows:
        cells = []
        for k in kinds:
            r = summ.get((row, k))
            cells.append("—" if r is None or not r.n else
                         f"{SYMBOL[r.primary]} in {r.same} of {r.n}" + (" ⚠ fragile" if r.fragile else ""))
        head.append(f"| {{ref}}`{row} <claim-{row.split()[0].lower()}>` | " + " | ".join(cells) + " |")
    parts = ["## Summary", "",
             "Each cell: the primary outcome, and how many of the specifications computed on that run give "
             "it. ⚠ fragile: not a strict majority.", "", *head, ""]
    if timing:
        parts += [timing, ""]
    by_claim: dict[str, list[str]] = {}
    for row in rows:
        by_claim.setdefault(row.split()[0], []).append(row)
    for claim, claim_rows in by_claim.items():
        parts += [f"## {claim}", "", f"*The paper:* {_claim_text(outcomes, claim).replace('|', '/')}", ""]
        for row in claim_rows:
            these = [o for o in outcomes if o.spec.row == row]
            names = list(dict.fromkeys(o.spec.name if o.spec.data == PRIMARY_DATA else o.spec.data for o in these))
            title = f"**{row}**" if row != claim else ""
            if title:
                parts += [title, ""]
            table = ["| specification | " + " | ".join(labels.get(k, k) for k in kinds) + " |",
                     "|---|" + "---|" * len(kinds)]
            for name in names:
                def pick(k):
                    return next((o for o in these if o.kind == k and
                                 (o.spec.name if o.spec.data == PRIMARY_DATA else o.spec.data) == name), None)
                label = f"**{name}**" if name == "primary" else name
                table.append(f"| {label} | " + " | ".join(_cell(pick(k)) for k in kinds) + " |")
            agg = []
            for k in kinds:
                r = summ.get((row, k))
                agg.append("—" if r is None or not r.n else f"{r.same} of {r.n}" + (" ⚠ fragile" if r.fragile else ""))
            table.append("| *same as primary* | " + " | ".join(agg) + " |")
            parts += table + [""]
            descr: dict[str, list[str]] = {}
            for o in these:
                name = o.spec.name if o.spec.data == PRIMARY_DATA else o.spec.data
                if name not in descr.setdefault(o.spec.description, []):
                    descr[o.spec.description].append(name)
            parts += [f"- *{', '.join(names)}*: {d}" for d, names in descr.items()]
            if row in NO_ALTERNATIVE:
                parts.append(f"- no alternative definition: {NO_ALTERNATIVE[row]}")
            parts.append("")
    return "\n".join(parts) + "\n"


def _summary_file():
    from .verdicts import verdict_dir

    return verdict_dir() / "robustness.json"


def save_summary(runs: Sequence[Activations], summary: Mapping[tuple[str, str], Robustness]) -> Path:
    """Keep :func:`summarise`'s result in ``$TDCOURSE_CACHE/verdicts/robustness.json``, each row
    tagged with the model label and the cache key of the capture it was computed on, so that a
    chapter's "what we found" can say how robust its verdicts are (:func:`for_runs`)."""
    from .capture import cache_key

    keys = {_kind_of(r, i): (r.label, cache_key(r.meta)) for i, r in enumerate(runs) if r.meta}
    rows = [{"row": rb.row, "kind": kind, "model": keys[kind][0], "capture": keys[kind][1], "primary": rb.primary,
             "n": rb.n, "same": rb.same, "agrees": rb.agrees}
            for (row, kind), rb in summary.items() if kind in keys]
    path = _summary_file()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, path)
    return path


def for_runs(runs: Sequence[Activations]) -> dict[tuple[str, str], Robustness]:
    """``{(row, model label): Robustness}`` kept by the last scoreboard build for exactly these
    captures (matched by cache key), for :func:`tdcourse.verdicts.findings`; empty when none was
    computed for them (another model or N: the scoreboard computes SmolLM2's)."""
    from .capture import cache_key

    path = _summary_file()
    if not path.exists():
        return {}
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    wanted = {cache_key(r.meta): r.label for r in runs if r.meta}
    return {(d["row"], wanted[d["capture"]]): Robustness(row=d["row"], kind=d["kind"], primary=d["primary"], n=d["n"],
                                                          same=d["same"], agrees=d["agrees"])
            for d in rows if isinstance(d, dict) and d.get("capture") in wanted}
