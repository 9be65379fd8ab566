"""One record type for every chapter's verdict on a claim of the paper.

Each chapter computes, for each claim it tests and each model it ran, a :class:`Verdict`:
the paper's claim, the criterion (stated before the result), our number with its
uncertainty or null, and the outcome. A chapter makes them with :func:`judge` inside a
library function (never by hand), shows them with :func:`table`, and keeps them with
:func:`save` so that the scoreboard can collect them.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from . import env

__all__ = ["OUTCOMES", "Verdict", "judge", "table", "save", "load_all", "verdict_dir"]

OUTCOMES = ("agrees", "partly", "disagrees", "not run")


@dataclass(frozen=True)
class Verdict:
    """A claim, tested on one model.

    Attributes
    ----------
    claim : str
        Claim id of ``shared/paper.md``, e.g. ``"C1"``.
    paper : str
        What the paper says, in words.
    criterion : str
        The test applied, stated before the result (e.g. "median r over units > 0.9").
    model : str
        Label of the model the number comes from (``Activations.label``).
    value : float
        The number the verdict rests on.
    uncertainty : str
        Its uncertainty or the null it was compared with, in words with numbers.
    outcome : {"agrees", "partly", "disagrees", "not run"}
    detail : str
        One sentence a reader needs to read the number.
    chapter : str
        The notebook that computed it (file stem), for links.
    """

    claim: str
    paper: str
    criterion: str
    model: str
    value: float
    uncertainty: str
    outcome: str
    detail: str = ""
    chapter: str = ""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.claim} [{self.model}] {self.outcome.upper()}: {self.criterion} -> "
                f"{self.value:.4g} ({self.uncertainty}). {self.detail}").strip()


def judge(
    claim: str,
    paper: str,
    criterion: str,
    model: str,
    value: float,
    *,
    agrees: bool,
    partly: bool = False,
    uncertainty: str = "",
    detail: str = "",
    chapter: str = "",
) -> Verdict:
    """Make a :class:`Verdict`: ``"agrees"`` if ``agrees``, else ``"partly"`` if ``partly``,
    else ``"disagrees"``. The booleans are the criterion, evaluated by the caller's code."""
    outcome = "agrees" if agrees else ("partly" if partly else "disagrees")
    return Verdict(claim=claim, paper=paper, criterion=criterion, model=model, value=float(value),
                   uncertainty=uncertainty, outcome=outcome, detail=detail, chapter=chapter)


def table(verdicts: Iterable[Verdict], full: bool = False):
    """A pandas DataFrame of verdicts, one row each, for display in a notebook.

    Indexed by (claim, model); columns outcome, value, uncertainty, criterion (and, with
    ``full=True``, detail, paper and chapter too).
    """
    import pandas as pd

    rows = [v.to_dict() for v in verdicts]
    cols = ["claim", "model", "outcome", "value", "uncertainty", "criterion"]
    if full:
        cols += ["detail", "paper", "chapter"]
    df = pd.DataFrame(rows, columns=cols)
    df["value"] = [f"{x:.4g}" for x in df["value"]]
    return df.set_index(["claim", "model"])


def verdict_dir() -> Path:
    """``$TDCOURSE_CACHE/verdicts``: one JSON file per chapter."""
    path = env.cache_dir() / "verdicts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save(verdicts: Iterable[Verdict], chapter: str) -> Path:
    """Write a chapter's verdicts to ``verdict_dir()/<chapter>.json`` (atomically, replacing)."""
    data = [v.to_dict() for v in verdicts]
    for v in data:
        v["chapter"] = v["chapter"] or chapter
    target = verdict_dir() / f"{chapter}.json"
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, target)
    return target


def load_all() -> list[Verdict]:
    """Every saved verdict, from every chapter's file."""
    out: list[Verdict] = []
    for path in sorted(verdict_dir().glob("*.json")):
        out.extend(Verdict(**v) for v in json.loads(path.read_text()))
    return out
