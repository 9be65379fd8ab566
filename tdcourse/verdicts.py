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

__all__ = ["OUTCOMES", "TABLE_CSS", "Verdict", "judge", "table", "save", "load_all", "verdict_dir"]

OUTCOMES = ("agrees", "partly", "disagrees", "not run")


@dataclass(frozen=True)
class Verdict:
    """A claim, tested on one model.

    Attributes
    ----------
    claim : str
        Claim id as on the book's claims page (``book/claims.md``), e.g. ``"C1"``.
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


#: CSS of :func:`table`: cells wrap at word boundaries (never cut, never one long line), text
#: aligned left and to the top, so a long criterion stays readable in a ~700 px book column.
TABLE_CSS = [
    {"selector": "", "props": [("border-collapse", "collapse"), ("max-width", "100%")]},
    {"selector": "th, td", "props": [("white-space", "normal"), ("overflow-wrap", "break-word"),
                                     ("text-align", "left"), ("vertical-align", "top"),
                                     ("padding", "0.25em 0.5em")]},
]


def table(verdicts: Iterable[Verdict], full: bool = False):
    """The verdicts as a table for a notebook or the book: one row each, no index column.

    Parameters
    ----------
    verdicts : iterable of Verdict
        Records made by :func:`judge` (or read back by :func:`load_all`).
    full : bool, default False
        Also show the columns ``detail``, ``paper`` and ``chapter``.

    Returns
    -------
    pandas.io.formats.style.Styler
        Columns ``claim, model, outcome, value, uncertainty, criterion`` (then ``detail, paper,
        chapter`` with ``full=True``); ``value`` printed with 4 significant digits. Every text is
        shown whole: unlike a DataFrame's display, nothing is cut at pandas'
        ``display.max_colwidth`` (50 characters), and the cells wrap (CSS
        ``white-space: normal``, :data:`TABLE_CSS`) instead of running off the page. The text is
        HTML-escaped. The underlying DataFrame (default 0…n index) is ``.data``.

    Raises
    ------
    TypeError
        If an item is not a :class:`Verdict`.
    """
    import hashlib

    import pandas as pd

    items = list(verdicts)
    for i, v in enumerate(items):
        if not isinstance(v, Verdict):
            raise TypeError(f"verdicts must hold Verdict records (made by verdicts.judge); item {i} is "
                            f"{type(v).__name__}. Build them with judge() or read them with load_all().")
    rows = [v.to_dict() for v in items]
    cols = ["claim", "model", "outcome", "value", "uncertainty", "criterion"]
    if full:
        cols += ["detail", "paper", "chapter"]
    df = pd.DataFrame(rows, columns=cols)
    df["value"] = [f"{x:.4g}" for x in df["value"]]
    # a stable id (same verdicts, same HTML), distinct for distinct tables on one page
    uuid = "verdicts_" + hashlib.sha1(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:10]
    return (df.style.hide(axis="index").format(escape="html").set_uuid(uuid)
            .set_table_styles(TABLE_CSS))


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
