"""Which chapter tests which claim of the paper, and how its verdicts are named.

What both the scoreboard (:mod:`tdcourse.scoreboard`) and the robustness page
(:mod:`tdcourse.robustness`) need, kept here so that neither imports the other. This module
imports nothing from the course.
"""

from __future__ import annotations

from typing import Mapping

__all__ = ["CHAPTERS", "CLAIMS", "SEQUEL_CLAIMS", "READINGS", "LLAMA", "SYMBOL", "row_names", "rows_of", "chapter_of", "module_of"]

#: chapter notebook -> (library module holding its ``verdicts``, the claims it tests)
CHAPTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "01_residual_stream": ("stationarity", ("C7",)),
    "02_continuity": ("continuity", ("C1", "C2", "C3")),
    "03_growth": ("geometry", ("C4", "C5", "C6")),
    "04_information": ("information", ("C8",)),
    "05_rotations": ("rotations", ("C9", "C10")),
    "06_low_dimensional": ("lowdim", ("C11", "C12")),
    "07_teleport": ("perturb", ("C13",)),
    "08_jacobians": ("jacobians", ("S1", "S2", "S3", "S4")),  # the sequel's claims, a group of their own
}

#: The paper's claims, numbered as on the book's claims page.
CLAIMS = tuple(f"C{i}" for i in range(1, 14))

#: The sequel's claims (arXiv:2605.14258, read via the authors' posts): scored on the same runs,
#: listed apart from C1–C13.
SEQUEL_CLAIMS = ("S1", "S2", "S3", "S4")

#: Claims read two ways: the name of each reading, in the order the module's ``verdicts`` returns them.
READINGS: dict[str, tuple[str, ...]] = {
    "C9": ("mean trajectory", "per-sample R"),
    "C12": ("error", "dimension"),
    "C13": ("distance", "arrows"),
}

#: The paper's model (its column appears once a chapter has saved verdicts on it).
LLAMA = "meta-llama/Llama-3.1-8B"

#: How an outcome is written in the book's tables (MyST markdown).
SYMBOL = {"agrees": "**agrees**", "partly": "*partly*", "disagrees": "**disagrees** ✗", "not run": "not run here"}


def row_names(claim: str, count: int | None = None) -> list[str]:
    """The table rows of a claim: ``["C13 (distance)", "C13 (arrows)"]``, or ``["C1"]``.

    Parameters
    ----------
    claim : str
    count : int or None
        How many verdicts a model has on it (rows beyond the named readings are named by the
        claim alone); None: one per reading.
    """
    names = READINGS.get(claim, ())
    n = max(len(names), 1) if count is None else count
    return [f"{claim} ({names[i]})" if i < len(names) else claim for i in range(n)]


def rows_of(claims=CLAIMS) -> list[str]:
    """Every table row of ``claims``, in order (a claim read two ways gives two rows)."""
    return [r for c in claims for r in row_names(c)]


def chapter_of(claim: str, chapters: Mapping[str, tuple[str, tuple[str, ...]]] | None = None) -> str:
    """The chapter that tests ``claim`` (file stem), or ``""``."""
    for chapter, (_module, claims) in (CHAPTERS if chapters is None else chapters).items():
        if claim in claims:
            return chapter
    return ""


def module_of(claim: str, chapters: Mapping[str, tuple[str, tuple[str, ...]]] | None = None) -> tuple[str, str]:
    """``(chapter, module)`` of the chapter that tests ``claim``.

    Raises
    ------
    ValueError
        If no chapter tests it.
    """
    for chapter, (module, claims) in (CHAPTERS if chapters is None else chapters).items():
        if claim in claims:
            return chapter, module
    raise ValueError(f"no chapter tests {claim}: add it to registry.CHAPTERS")
