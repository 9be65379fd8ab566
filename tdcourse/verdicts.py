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
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from . import env

__all__ = ["OUTCOMES", "TABLE_CSS", "RUN_LABELS", "CLAIMS", "READINGS", "READING_CLAIMS", "Verdict", "Findings", "findings",
           "say", "number", "plain_numbers", "run_kind", "run_label", "judge", "table", "styled", "save",
           "load_all", "verdict_dir"]

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


def number(x, digits: int = 3) -> str:
    """A number as a reader writes it in a sentence or a table cell: never E-notation.

    Parameters
    ----------
    x : float or int
    digits : int, default 3
        Significant digits kept of a number that is not a whole number.

    Returns
    -------
    str
        Whole numbers as integers (``"7"``, ``"1000"``), thousands separated from 10,000 on
        (``"35,400"``); other numbers rounded to ``digits`` significant digits in positional
        notation (``3.54e+04`` → ``"35,400"``, ``1.23e-05`` → ``"0.0000123"``); ``-0.0`` → ``"0"``;
        NaN → ``"n/a"``; ±inf → ``"∞"`` / ``"−∞"``.

    Raises
    ------
    TypeError
        If ``x`` is not a real number (a bool or a string included).
    """
    import numbers

    import numpy as np

    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"number() formats a real number, got {type(x).__name__} {x!r}")
    if int(digits) < 1:
        raise ValueError(f"digits must be at least 1, got {digits}")
    v = float(x)
    if np.isnan(v):
        return "n/a"
    if np.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v.is_integer() or abs(v) >= 10 ** int(digits):
        text = f"{round(v):d}"
        if text in ("-0",):
            text = "0"
    else:
        text = np.format_float_positional(v, precision=int(digits), unique=False, fractional=False, trim="-")
        if text.rstrip("0").rstrip(".") in ("-0", "-"):
            text = "0"
    sign, body = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, _, frac = body.partition(".")
    if len(whole) > 4:
        whole = f"{int(whole):,}"
    return sign + whole + ("." + frac if frac else "")


#: A number in E-notation inside a sentence (``3.54e+04``), for :func:`plain_numbers`.
_E_NUMBER = re.compile(r"(?<![\w.])([-+]?\d+(?:\.(\d+))?)[eE]([-+]?\d+)(?![\w.])")


def plain_numbers(text: str) -> str:
    """``text`` with every number in E-notation written out by :func:`number` (``"3.54e+04-fold"``
    → ``"35,400-fold"``), keeping the significant digits it was written with.

    Raises
    ------
    TypeError
        If ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"plain_numbers() takes a string, got {type(text).__name__}")

    def sub(m: re.Match) -> str:
        digits = len((m.group(1).lstrip("+-").split(".")[0]).lstrip("0") or "") + len(m.group(2) or "")
        return number(float(m.group(0)), max(1, min(digits, 6)))

    return _E_NUMBER.sub(sub, text)


def _cell(x) -> str:
    """One table cell: a whole number as an integer, others with 4 significant digits, never
    E-notation, never ``-0``; booleans as yes / no; a missing value as a dash."""
    import numbers

    import numpy as np

    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "—"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, numbers.Real):
        return number(x, 4)
    return str(x)


def _numeric(x) -> bool:
    import numbers

    import numpy as np

    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


#: CSS of :func:`table` and :func:`styled`. A table is its own box, never wider than the page
#: column: when its columns do not fit (a phone), it scrolls sideways inside that box and nothing
#: else on the page moves. Cells wrap between words only (never inside a word or a number:
#: no "traine⏎d", no "134.756⏎0"); a cell holding a number never wraps at all.
TABLE_CSS = [
    {"selector": "", "props": [("border-collapse", "collapse"), ("display", "block"), ("max-width", "100%"),
                               ("overflow-x", "auto"), ("font-size", "85%")]},
    {"selector": "th, td", "props": [("white-space", "normal"), ("overflow-wrap", "normal"),
                                     ("word-break", "normal"), ("hyphens", "manual"),
                                     ("text-align", "left"), ("vertical-align", "top"),
                                     ("padding", "0.25em 0.5em")]},
]

#: Kept for callers of the former name: the same rules as :data:`TABLE_CSS`.
STYLED_CSS = TABLE_CSS


def _reader_style(sty):
    """Formats every cell with :func:`_cell` (index and header included) and keeps numbers on one line."""
    sty = sty.format(_cell, escape="html").format_index(_cell, escape="html", axis=0) \
             .format_index(_cell, escape="html", axis=1)
    cell_style = sty.map if hasattr(sty, "map") else sty.applymap  # pandas < 2.1: applymap
    return cell_style(lambda v: "white-space: nowrap" if _numeric(v) or isinstance(v, bool) else "")


def table(verdicts: Iterable[Verdict], full: bool = False, criterion: bool = True, runs: bool = False):
    """The verdicts as a table for a notebook or the book: one row each, no index column.

    Parameters
    ----------
    verdicts : iterable of Verdict
        Records made by :func:`judge` (or read back by :func:`load_all`).
    full : bool, default False
        Also show the columns ``detail``, ``paper`` and ``chapter``.
    criterion : bool, default True
        Show the ``criterion`` column (:func:`findings` lists the criteria above its table
        instead, once per claim).
    runs : bool, default False
        Name each row's run as the book's charts do (:func:`run_label`: ``trained``, ``4-bit
        copy``, ``random-init control``), in a column ``run`` instead of ``model`` (the model
        labels stay where two runs would get the same name).

    Returns
    -------
    pandas.io.formats.style.Styler
        Columns ``claim, model, outcome, value, uncertainty, criterion`` (then ``detail, paper,
        chapter`` with ``full=True``); ``value`` printed by :func:`number` with 4 significant
        digits. Every text is shown whole: unlike a DataFrame's display, nothing is cut at
        pandas' ``display.max_colwidth`` (50 characters), and the cells wrap between words
        (:data:`TABLE_CSS`) instead of running off the page. The text is HTML-escaped. The
        underlying DataFrame (default 0…n index) is ``.data``.

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
    cols = ["claim", "model", "outcome", "value", "uncertainty"] + (["criterion"] if criterion else [])
    if full:
        cols += ["detail", "paper", "chapter"]
    df = pd.DataFrame(rows, columns=cols)
    df["value"] = [number(x, 4) for x in df["value"]]
    if runs:
        short = {m: run_label(m) for m in dict.fromkeys(df["model"])}
        if len(set(short.values())) == len(short):  # two runs that would read alike keep their model labels
            df["model"] = [short[m] for m in df["model"]]
        df = df.rename(columns={"model": "run"})
    # a stable id (same verdicts, same HTML), distinct for distinct tables on one page
    uuid = "verdicts_" + hashlib.sha1(json.dumps([rows, cols], sort_keys=True).encode()).hexdigest()[:10]
    return _reader_style(df.style.hide(axis="index").set_uuid(uuid).set_table_styles(TABLE_CSS))


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


def styled(df, index: bool = False, uuid: str | None = None):
    """A DataFrame as a reader's table: whole texts that wrap between words, no 0…n index column.

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
        Whole numbers shown as integers (``7``, not ``7.0000``), other numbers with 4
        significant digits and never in E-notation or as ``-0``, booleans as yes / no, missing
        values as a dash (:func:`number`); text HTML-escaped; cells wrap between words only and
        a number never wraps; a table wider than the page column scrolls inside its own box
        (:data:`TABLE_CSS`).

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
    sty = _reader_style(df.style.set_uuid(uuid).set_table_styles(TABLE_CSS))
    return sty if index else sty.hide(axis="index")


# --------------------------------------------------------------------------- runs and claims

#: The kinds of run a chapter or the scoreboard compares, and the one name each has in every
#: chart legend and every "what we found" line of the book.
RUN_LABELS = {"trained": "trained", "4-bit": "4-bit copy", "control": "random-init control"}


def run_kind(run_or_label) -> str:
    """``"trained"``, ``"4-bit"`` or ``"control"``: which kind of run this is.

    Parameters
    ----------
    run_or_label : Activations or str
        A run (its ``meta["model"]`` says how its weights were made and stored) or a model
        label as in :attr:`Verdict.model` (``"smollm2-135m · random init (seed 0)"``,
        ``"smollm2-135m · 4bit"``, ``"smollm2-135m"``), or one of :data:`RUN_LABELS`' labels.

    Returns
    -------
    str
        A key of :data:`RUN_LABELS`. The random-init control is told by its init, the 4-bit
        copy by its quantisation; anything else is a trained model.

    Raises
    ------
    TypeError
        If given neither a string nor a run with a ``meta`` dict.
    """
    if isinstance(run_or_label, str):
        s = run_or_label
        if s == RUN_LABELS["control"] or s.startswith(RUN_LABELS["control"] + " ") or "random init" in s:
            return "control"
        if s == RUN_LABELS["4-bit"] or "4bit" in s or "4-bit" in s:
            return "4-bit"
        return "trained"
    meta = getattr(run_or_label, "meta", None)
    if not isinstance(meta, dict):
        raise TypeError(f"expected a run (Activations, with .meta) or a model label, got "
                        f"{type(run_or_label).__name__}")
    spec = meta.get("model", {}) or {}
    if spec.get("init") == "random":
        return "control"
    if spec.get("quant", "none") not in ("none", None):
        return "4-bit"
    return "trained"


def run_label(run_or_label) -> str:
    """The book's one name for a run in charts and findings: ``"trained"``, ``"4-bit copy"`` or
    ``"random-init control"`` (a control with another seed than 0: ``"random-init control (seed
    3)"``), whatever the model. The model itself is named once, where the chapter prints its
    setting. Takes what :func:`run_kind` takes."""
    kind = run_kind(run_or_label)
    label = RUN_LABELS[kind]
    if kind == "control":
        if isinstance(run_or_label, str):
            m = re.search(r"seed (\d+)", run_or_label)
            seed = int(m.group(1)) if m else 0
        else:
            seed = (run_or_label.meta.get("model", {}) or {}).get("seed", 0) or 0
        if seed:
            label += f" (seed {seed})"
    return label


#: Each claim in short, as in the table of the book's claims page (``book/claims.md``; a test
#: keeps the two equal), for the first words of a chapter's "what we found" line.
CLAIMS = {
    "C1": "units stay highly correlated from one site to the next",
    "C2": "that correlation rises with depth",
    "C3": "higher within a layer than across layers",
    "C4": "activations grow denser with depth",
    "C5": "consecutive states align more with depth",
    "C6": "the stream accelerates",
    "C7": "the dynamics are non-stationary",
    "C8": "mutual information dips early, then climbs",
    "C9": "units circle about ten times, unlike a shuffled null",
    "C10": "some units orbit, others spiral outward",
    "C11": "a 2-D autoencoder shows a curved path",
    "C12": "early sites reconstruct worse; late sites are lower-dimensional",
    "C13": "teleported states flow back in early layers, less so later",
}

#: Readings that are statements of their own (the paper says two things under one claim id): the
#: lead of a chapter's "what we found" gives each its own line, with its own sentence in short.
READING_CLAIMS = {
    "C12 (error)": "early sites are harder to rebuild from a 2-D code",
    "C12 (dimension)": "later sites are lower-dimensional",
}

#: Rows that are not the paper's claims but a chapter's own test beside one (no claims-page entry).
BEYOND = {"C1 (random basis)": "beyond the paper: C1 read along random directions instead of the units"}

#: Claims read two ways: the name of each reading, in the order a module's ``verdicts`` returns them
#: (as :data:`tdcourse.robustness.READINGS`).
READINGS: dict[str, tuple[str, ...]] = {
    "C9": ("mean trajectory", "per-sample R"),
    "C12": ("error", "dimension"),
    "C13": ("distance", "arrows"),
}


@dataclass(frozen=True)
class Findings:
    """A chapter's "what we found": one line per claim, then the details in a collapsed block.

    Made by :func:`findings`. In a notebook and in the book it renders as HTML (``_repr_html_``):
    the lines as a list, then an HTML ``<details>`` block (closed; it opens with a click, in the
    book and in JupyterLab) holding the paragraphs, the criteria and the tables. As text
    (``str``, ``repr``) it is wrapped at ``width`` characters, so it fits a ~690 px book column
    or a terminal.

    Attributes
    ----------
    lines : tuple of str
        One plain sentence (no markup) per claim: the paper's claim in short, our outcome on
        each run, how robust it is.
    paragraphs : tuple of str
        The details: the chapter's notes (its numbers) and how robust each verdict is.
    criteria : tuple of (str, str)
        ``(claim or claim and reading, criterion)``, each criterion once, in full.
    tables : tuple
        pandas Stylers (e.g. from :func:`styled` and :func:`table`), shown in order, the verdict
        table last.
    width : int
        Wrap width of the text form, in characters.
    """

    lines: tuple
    paragraphs: tuple = ()
    criteria: tuple = ()
    tables: tuple = ()
    width: int = 80

    #: The summary line of the collapsed block.
    SUMMARY = "The numbers, the criteria and the full verdict table"

    def __str__(self) -> str:
        import textwrap

        out = ["\n".join(textwrap.fill(line, self.width, initial_indent="- ", subsequent_indent="  ")
                         for line in self.lines)] if self.lines else []
        details = [textwrap.fill(p, self.width) for p in self.paragraphs]
        details += [textwrap.fill(f"Criterion, {name}: {text}", self.width, subsequent_indent="  ")
                    for name, text in self.criteria]
        for t in self.tables:
            data = getattr(t, "data", t)
            details.append(data.to_string(index=False) if hasattr(data, "to_string") else str(data))
        if details:
            out.append(f"[{self.SUMMARY}]\n\n" + "\n\n".join(details))
        return "\n\n".join(out)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        import html

        parts = []
        if self.lines:
            parts.append("<ul class=\"tdcourse-lines\">\n"
                         + "\n".join(f"<li>{_line_html(line)}</li>" for line in self.lines) + "\n</ul>")
        inner = [f"<p>{html.escape(p)}</p>" for p in self.paragraphs]
        if self.criteria:
            inner.append("<p><b>Criteria</b>, each stated in the chapter before its result:</p>\n<ul>\n"
                         + "\n".join(f"<li><b>{html.escape(n)}</b>: {html.escape(c)}</li>" for n, c in self.criteria)
                         + "\n</ul>")
        inner += [t.to_html() if hasattr(t, "to_html") else t._repr_html_() for t in self.tables]
        if inner:
            parts.append(f"<details class=\"tdcourse-details\">\n<summary>{html.escape(self.SUMMARY)}</summary>\n"
                         + "\n".join(inner) + "\n</details>")
        return "<div class=\"tdcourse-findings\">\n" + "\n".join(parts) + "\n</div>"


def _line_html(line: str) -> str:
    """A findings line in HTML: escaped, its claim id and the outcome words in bold."""
    import html

    text = html.escape(line)
    text = re.sub(r"^(C\d+(?: \([^)]*\))?)", r"<b>\1</b>", text)
    return re.sub(r"\b(agrees|partly|disagrees|FRAGILE)\b", r"<b>\1</b>", text)


def say(*texts: str, width: int = 68) -> None:
    """Print each text wrapped at ``width`` characters (later lines indented by two spaces).

    A chapter's printed lines then fit the book's ~690 px content column at 1280 px (77
    characters of monospace there, 69 inside an exercise's solution box) instead of running
    off its right edge. Numbers in E-notation are written out (:func:`plain_numbers`).

    Raises
    ------
    TypeError
        If a text is not a string.
    """
    import textwrap

    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"say() prints strings; argument {i} is {type(t).__name__}.")
        for para in plain_numbers(t).split("\n"):
            print(textwrap.fill(para, width, subsequent_indent="  ") if para.strip() else "")


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``; never called with an empty list."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _short_paper(v: Verdict) -> str:
    if v.claim in CLAIMS:
        return CLAIMS[v.claim]
    if v.claim in BEYOND:
        return BEYOND[v.claim]
    first = re.split(r"(?<=[.;:])\s|\s\(", v.paper.strip(), maxsplit=1)[0].rstrip(".;:")
    return first[:1].lower() + first[1:] if first else "(no statement given)"


_POSITIVE = ("agrees", "partly")


def _control_reading(control: str, trained: str | None) -> str:
    """What the random-init control shows, read as a control: the architecture or training."""
    shows = {"agrees": "shows it", "partly": "shows part of it", "disagrees": "does not show it",
             "not run": "was not run"}[control]
    if control == "not run" or trained is None or trained == "not run":
        return f"the control {shows}"
    if trained in _POSITIVE:
        if control == "agrees":
            return "the control shows it too → the architecture"
        if control == "partly":
            return "the control shows part of it → partly the architecture, partly training"
        return "the control does not → training"
    if control in _POSITIVE:
        return f"the control {shows}, the trained model does not → training removes it"
    return "the control does not show it either"


def _robust_words(rb, max_flips: int = 2) -> str:
    """How robust one outcome is, in the words of its line: ``"robust to 4 alternatives"``,
    ``"FRAGILE: flips with a and b"``, ``"robustness not tested"``, then where a resampling seed
    changes it (``"unstable: …"``) and where it hangs on a threshold (``"on the line: …"``); ""
    if there is no robustness record.

    ``rb`` is a :class:`tdcourse.robustness.Robustness` (or any object with its attributes
    ``flips``, ``holds``, ``tested``, ``unstable``, ``close`` and ``margin``).
    """
    if rb is None:
        return ""
    flips = [str(f) for f in getattr(rb, "flips", ())]
    if flips:
        shown = flips[:max_flips] + ([f"{len(flips) - max_flips} more (below)"] if len(flips) > max_flips else [])
        words = f"FRAGILE: flips with {_and(shown)}"
    elif getattr(rb, "tested", False):
        n = len(getattr(rb, "holds", ()))
        words = f"robust to {n} alternative{'' if n == 1 else 's'}"
    else:
        words = "robustness not tested"
    unstable = [str(u) for u in getattr(rb, "unstable", ())]
    if unstable:
        words += f"; unstable: {_and(unstable)}"
    margin = getattr(rb, "margin", "")
    if getattr(rb, "close", False) and isinstance(margin, str) and margin.strip():
        words += f"; on the line: {margin}"
    return words


def _run_names(items: list) -> dict[str, str]:
    """``{model label: how a sentence names that run}``: "the trained model", "the 4-bit copy",
    "the random-init control" (:func:`run_label`), or the model's own label where two runs of the
    verdicts would get the same name."""
    models = list(dict.fromkeys(v.model for v in items))
    short = {m: run_label(m) for m in models}
    twice = {s for s in short.values() if list(short.values()).count(s) > 1}
    the = {"trained": "the trained model", "4-bit copy": "the 4-bit copy"}
    return {m: (m if s in twice else the.get(s, f"the {s}")) for m, s in short.items()}


def _robustness_for(robustness, row_names: list[str], model: str):
    if not robustness:
        return None
    for row in row_names:
        rb = robustness.get((row, model))
        if rb is not None:
            return rb
    return None


def _group(items: list) -> dict:
    """``{claim: [(reading name or "", {model: Verdict})]}`` in the verdicts' order; the i-th
    verdict of a claim on a model is its i-th reading (the modules' order, as :data:`READINGS`)."""
    claims: dict[str, dict[str, list]] = {}
    for v in items:
        claims.setdefault(v.claim, {}).setdefault(v.model, []).append(v)
    out = {}
    for claim, models in claims.items():
        n = max(len(vs) for vs in models.values())
        names = READINGS.get(claim, ())
        readings = []
        for i in range(n):
            name = (names[i] if i < len(names) else f"reading {i + 1}") if n > 1 else ""
            readings.append((name, {m: vs[i] for m, vs in models.items() if i < len(vs)}))
        out[claim] = readings
    return out


def _lines(items: list, robustness) -> list[str]:
    """One line per claim: the paper's claim in short, the outcome on each run (the control read
    as a control), how robust the trained outcome is."""
    out = []
    for claim, readings in _group(items).items():
        first = next(iter(readings[0][1].values()))
        parts = []
        for name, by_model in readings:
            rows = [f"{claim} ({name})"] if name else []
            rows.append(claim)
            trained = [(m, v) for m, v in by_model.items() if run_kind(m) == "trained"]
            t_out = trained[0][1].outcome if trained else None
            said = []
            for m, v in by_model.items():
                kind = run_kind(m)
                rb = _robustness_for(robustness, rows, m)
                words = _robust_words(rb)
                if kind == "control":
                    s = _control_reading(v.outcome, t_out)
                    if rb is not None and rb.fragile:
                        s += f" ({words})"
                elif kind == "4-bit" and t_out is not None:
                    s = (f"the 4-bit copy {v.outcome} too" if v.outcome == t_out else
                         f"the 4-bit copy {v.outcome}")
                    if rb is not None and rb.fragile:
                        s += f" ({words})"
                else:
                    label = run_label(m) if len(trained) < 2 else m
                    plain = " with the paper" if v.outcome == "disagrees" else ""
                    s = f"{label} {v.outcome}{plain}" + (f" ({words})" if words else "")
                said.append(s)
            body = "; ".join(said)
            if name and f"{claim} ({name})" in READING_CLAIMS:  # a reading that is a statement of its own
                out.append(f"{claim} ({name}) · {READING_CLAIMS[f'{claim} ({name})']}. {body[:1].upper() + body[1:]}.")
                continue
            parts.append(f"{name[:1].upper() + name[1:]} reading: {body}" if name else body[:1].upper() + body[1:])
        if parts:
            out.append(f"{claim} · {_short_paper(first)}. " + ". ".join(parts) + ".")
    return [plain_numbers(s) for s in out]


def _robustness_paragraph(items: list, robustness) -> str:
    """How robust every verdict is (each claim and reading on each run), from the scoreboard's
    specifications, with every alternative that flips it; or why that is not said."""
    if not robustness:
        return ("How robust these verdicts are to other reasonable definitions, thresholds and samples has not "
                "been computed for these captures: the robustness page computes it for the captures the book "
                "is built from (python -m tdcourse scoreboard).")
    parts, fragile = [], []
    names = _run_names(items)
    for claim, readings in _group(items).items():
        for name, by_model in readings:
            rows = ([f"{claim} ({name})"] if name else []) + [claim]
            for m in by_model:
                rb = _robustness_for(robustness, rows, m)
                if rb is None:
                    continue
                where = f"{claim}{f' ({name})' if name else ''} on {names[m]}"
                parts.append(f"{where}: {rb.text}")  # robustness, stability, a threshold it hangs on
                if rb.fragile:
                    fragile.append(where)
    if not parts:
        return ""
    s = ("Robustness (does the outcome survive each reasonable alternative definition and data axis of the "
         "robustness page?) and stability (does it survive resampling seeds?), per claim and run: "
         + "; ".join(parts) + ".")
    if fragile:
        s += (f" FRAGILE: {_and(fragile)}: one alternative definition or data axis changes "
              f"{'that verdict' if len(fragile) == 1 else 'those verdicts'}, so read "
              f"{'it' if len(fragile) == 1 else 'them'} as uncertain.")
    return plain_numbers(s)


def _criteria(items: list) -> list[tuple[str, str]]:
    """``(name, criterion)`` once per claim and reading (a criterion that differs between runs,
    e.g. a threshold scaled to the model's depth, once per run)."""
    out: list[tuple[str, str]] = []
    names = _run_names(items)
    for claim, readings in _group(items).items():
        for name, by_model in readings:
            texts = list(dict.fromkeys(v.criterion for v in by_model.values() if v.criterion))
            label = f"{claim}{f' ({name})' if name else ''}"
            if len(texts) == 1:
                out.append((label, texts[0]))
            else:
                for m, v in by_model.items():
                    if v.criterion:
                        out.append((f"{label} on {names[m]}", v.criterion))
    return out


def findings(verdicts: Iterable[Verdict], notes: Iterable[str] = (), tables: Iterable = (),
             lead: bool = True, width: int = 80, robustness=None) -> Findings:
    """A chapter's "what we found": one line per claim, then its numbers in a collapsed block.

    Parameters
    ----------
    verdicts : iterable of Verdict
        The chapter's verdicts for this run (all models; a claim read two ways gives two verdicts
        per model, in the order of :data:`READINGS`).
    notes : iterable of str
        Sentences computed from the chapter's results by the chapter module's
        ``findings_notes`` (numbers filled in by code, never typed); one paragraph each, in the
        collapsed block. E-notation in them is written out (:func:`plain_numbers`).
    tables : iterable
        Extra tables (DataFrames are passed through :func:`styled`; Stylers kept), shown in the
        collapsed block before the verdict table.
    lead : bool, default True
        Open with one line per claim: the claim in short (:data:`CLAIMS`), the outcome on the
        trained model (a disagreement said plainly), the 4-bit copy's where it ran, what the
        random-init control shows read as a control ("shows it too → the architecture", "does
        not → training"), and how robust the trained outcome is. A claim read two ways names each
        reading (:data:`READINGS`).
    width : int, default 80
        Wrap width of the text form.
    robustness : mapping or None
        ``{(claim row, model label): Robustness}`` from :func:`tdcourse.robustness.for_runs`
        (``rb.fragile``, ``rb.text`` and, where given, ``rb.flips``, the alternatives that change
        the outcome in words, and ``rb.margin``): the lines say how robust each outcome is and
        which alternatives flip it, and the collapsed block gives every count. An empty mapping
        says it was not computed for these captures; None leaves it out.

    Returns
    -------
    Findings
        The lines, then (collapsed) the notes, the robustness paragraph, the criteria, the extra
        tables and :func:`table` of the verdicts (without its criterion column: the criteria
        are listed above it).

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
    paras = []
    for i, n in enumerate(notes):
        if not isinstance(n, str):
            raise TypeError(f"notes must be strings (one paragraph each); item {i} is {type(n).__name__}.")
        if n.strip():
            paras.append(plain_numbers(" ".join(n.split())))
    if robustness is not None:
        rob = _robustness_paragraph(items, robustness)
        if rob:
            paras.append(rob)
    shown = [styled(t) if isinstance(t, pd.DataFrame) else t for t in tables]
    if items:
        shown.append(table(items, criterion=False, runs=True))
    return Findings(lines=tuple(_lines(items, robustness)) if lead else (), paragraphs=tuple(paras),
                    criteria=tuple(_criteria(items)), tables=tuple(shown), width=width)
