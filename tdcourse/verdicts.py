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

__all__ = ["OUTCOMES", "TABLE_CSS", "Verdict", "Findings", "findings", "say", "judge", "table", "styled",
           "save", "load_all", "verdict_dir"]

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
    """Write a chapter's verdicts to ``verdict_dir()/<chapter>.json`` (atomically, replacing).

    Parameters
    ----------
    verdicts : iterable of Verdict
    chapter : str
        The notebook's file stem; fills each verdict's empty ``chapter``.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    OSError
        The file cannot be written (a full or read-only disk): the message names the file and
        what to do. The old file is left as it was, and no temporary file is left behind.
    """
    data = [v.to_dict() for v in verdicts]
    for v in data:
        v["chapter"] = v["chapter"] or chapter
    target = verdict_dir() / f"{chapter}.json"
    blob = json.dumps(data, indent=1)  # before any file is opened: a failure here leaves nothing
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-verdicts-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(blob)
        os.replace(tmp, target)
        tmp = None
    except OSError as err:
        raise OSError(err.errno, f"Could not save the verdicts to {target} ({err.strerror or err}): free some "
                                 "space, or set TDCOURSE_CACHE to a folder you can write") from err
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return target


def load_all() -> list[Verdict]:
    """Every saved verdict, from every chapter's file."""
    out: list[Verdict] = []
    for path in sorted(verdict_dir().glob("*.json")):
        out.extend(Verdict(**v) for v in json.loads(path.read_text()))
    return out


#: CSS of :func:`styled`: as :data:`TABLE_CSS`, a smaller font, and long words (site names, numbers
#: with intervals) may break anywhere, so a table of many columns still fits a ~690 px column.
STYLED_CSS = TABLE_CSS + [
    {"selector": "", "props": [("font-size", "85%")]},
    {"selector": "th, td", "props": [("overflow-wrap", "anywhere")]},
]


def styled(df, index: bool = False, uuid: str | None = None):
    """A DataFrame as a reader's table: whole texts that wrap, no 0…n index column.

    Parameters
    ----------
    df : pandas.DataFrame
        The table. A meaningful index (e.g. model names) is kept with ``index=True``.
    index : bool, default False
        Show the index column.
    uuid : str, optional
        Fixed HTML id (a stable page); default: derived from the table's content.

    Returns
    -------
    pandas.io.formats.style.Styler
        Floats with 4 significant digits, text HTML-escaped, cells wrapping (:data:`TABLE_CSS`).

    Raises
    ------
    TypeError
        If ``df`` is not a DataFrame.
    """
    import hashlib

    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}; "
                        "wrap a Series with .to_frame() first.")
    if uuid is None:
        uuid = "table_" + hashlib.sha1(df.to_csv().encode()).hexdigest()[:10]
    sty = df.style.format(precision=4, escape="html", na_rep="—").set_uuid(uuid).set_table_styles(STYLED_CSS)
    return sty if index else sty.hide(axis="index")


@dataclass(frozen=True)
class Findings:
    """A chapter's "what we found": paragraphs a reader reads, then tables.

    Made by :func:`findings`. In a notebook and in the book it renders as HTML paragraphs
    (``_repr_html_``) followed by its tables; as text (``str``, ``repr``) it is wrapped at
    ``width`` characters, so it fits a ~690 px book column or a terminal.

    Attributes
    ----------
    paragraphs : tuple of str
        Plain sentences (no markup), one paragraph each.
    tables : tuple
        pandas Stylers (e.g. from :func:`styled` and :func:`table`), shown in order.
    width : int
        Wrap width of the text form, in characters.
    """

    paragraphs: tuple
    tables: tuple = ()
    width: int = 80

    def __str__(self) -> str:
        import textwrap

        out = [textwrap.fill(p, self.width) for p in self.paragraphs]
        for t in self.tables:
            data = getattr(t, "data", t)
            out.append(data.to_string(index=False) if hasattr(data, "to_string") else str(data))
        return "\n\n".join(out)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        import html

        parts = [f"<p>{html.escape(p)}</p>" for p in self.paragraphs]
        parts += [t.to_html() if hasattr(t, "to_html") else t._repr_html_() for t in self.tables]
        return "<div class=\"tdcourse-findings\">\n" + "\n".join(parts) + "\n</div>"


def say(*texts: str, width: int = 68) -> None:
    """Print each text wrapped at ``width`` characters (later lines indented by two spaces).

    A chapter's printed lines then fit the book's ~690 px content column at 1280 px (77
    characters of monospace there, 69 inside an exercise's solution box) instead of running
    off its right edge.

    Raises
    ------
    TypeError
        If a text is not a string.
    """
    import textwrap

    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"say() prints strings; argument {i} is {type(t).__name__}.")
        for para in t.split("\n"):
            print(textwrap.fill(para, width, subsequent_indent="  ") if para.strip() else "")


def _lead(items: list) -> list[str]:
    """One sentence per claim: the outcome on each model, a disagreement said plainly."""
    claims: dict[str, list] = {}
    for v in items:
        claims.setdefault(v.claim, []).append(v)
    out = []
    for claim, vs in claims.items():
        models: dict[str, list] = {}
        for v in vs:
            models.setdefault(v.model, []).append(v)
        parts, bad = [], []
        for model, mv in models.items():
            if len({v.outcome for v in mv}) == 1:  # one outcome, however many readings
                many = f" ({'both' if len(mv) == 2 else f'all {len(mv)}'} readings)" if len(mv) > 1 else ""
                parts.append(f"{mv[0].outcome} on {model}{many}")
                bad += [model] if mv[0].outcome == "disagrees" else []
            else:  # readings differ: number them in the table's order
                for i, v in enumerate(mv, 1):
                    name = f"{model} (reading {i}: {v.criterion.split(',')[0].split(';')[0][:60]})"
                    parts.append(f"{v.outcome} on {name}")
                    bad += [name] if v.outcome == "disagrees" else []
        s = f"{claim}, the paper: {vs[0].paper.rstrip('.')}. Our verdict: {'; '.join(parts)}."
        if bad:
            s += f" On {' and '.join(bad)} the claim does not hold: our run disagrees with the paper."
        out.append(s)
    return out


def _robustness_paragraph(items: list, robustness) -> str:
    """How robust the chapter's verdicts are, from the scoreboard's specifications (or why not said)."""
    if not robustness:
        return ("How robust these verdicts are to other reasonable definitions, thresholds and samples has not "
                "been computed for these captures: the robustness page computes it for the captures the book "
                "is built from (python -m tdcourse scoreboard).")
    claims = list(dict.fromkeys(v.claim for v in items))
    models = list(dict.fromkeys(v.model for v in items))
    parts, fragile = [], []
    for claim in claims:
        for model in models:
            for (row, label), rb in robustness.items():
                if label == model and (row == claim or row.startswith(claim + " ")):
                    parts.append(f"{row} on {model}: {rb.text}")
                    if rb.fragile:
                        fragile.append(f"{row} on {model}")
    if not parts:
        return ""
    s = ("Across the robustness page's specifications (the primary one and reasonable alternatives), the "
         "primary outcome holds in: " + "; ".join(parts) + ".")
    if fragile:
        s += (f" FRAGILE: {', '.join(fragile)}: the primary outcome is not held by a majority of the "
              "specifications, so read that verdict as uncertain.")
    return s


def findings(verdicts: Iterable[Verdict], notes: Iterable[str] = (), tables: Iterable = (),
             lead: bool = True, width: int = 80, robustness=None) -> Findings:
    """A chapter's "what we found" from its verdicts and the chapter's own sentences.

    Parameters
    ----------
    verdicts : iterable of Verdict
        The chapter's verdicts for this run (all models).
    notes : iterable of str
        Sentences computed from the chapter's results by the chapter module's
        ``findings_notes`` (numbers filled in by code, never typed); one paragraph each.
    tables : iterable
        Extra tables (DataFrames are passed through :func:`styled`; Stylers kept), shown
        before the verdict table.
    lead : bool, default True
        Open with one sentence per claim: the paper's statement and our outcome on each model,
        saying plainly where our model disagrees with the paper.
    width : int, default 80
        Wrap width of the text form.
    robustness : mapping or None
        ``{(claim row, model label): Robustness}`` from :func:`tdcourse.robustness.for_runs`:
        adds a paragraph giving, per claim and model, how many specifications hold the primary
        outcome, and marks a verdict FRAGILE where they are not a majority. An empty mapping
        says it was not computed for these captures; None leaves the paragraph out.

    Returns
    -------
    Findings
        Renders as paragraphs, the extra tables, then :func:`table` of the verdicts.

    Raises
    ------
    TypeError
        If a verdict is not a :class:`Verdict` or a note is not a string.
    """
    import pandas as pd

    items = list(verdicts)
    for i, v in enumerate(items):
        if not isinstance(v, Verdict):
            raise TypeError(f"verdicts must hold Verdict records; item {i} is {type(v).__name__}.")
    paras = _lead(items) if lead else []
    for i, n in enumerate(notes):
        if not isinstance(n, str):
            raise TypeError(f"notes must be strings (one paragraph each); item {i} is {type(n).__name__}.")
        if n.strip():
            paras.append(" ".join(n.split()))
    if robustness is not None:
        rob = _robustness_paragraph(items, robustness)
        if rob:
            paras.append(rob)
    shown = [styled(t) if isinstance(t, pd.DataFrame) else t for t in tables]
    if items:
        shown.append(table(items))
    return Findings(tuple(paras), tuple(shown), width)
