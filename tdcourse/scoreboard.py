"""The reproduction scoreboard: every claim, every model run, one computed verdict per cell.

``python -m tdcourse scoreboard --out book/_generated`` runs each chapter's ``verdicts``
function (the same code the chapters run) on the SmolLM2-135M capture, its 4-bit NF4 capture
and its random-init control, and writes

- ``scoreboard.md``: the table (claims × model runs), each cell the outcome with its number,
  linking to the chapter; included by the book's scoreboard page;
- ``findings.md``: a short summary of the table, included by the landing page;
- ``verdicts.json``: every verdict, machine-readable (the build copies it beside the book).

The Llama 3.1 8B column is filled from verdicts that the chapters saved (``verdicts.save``)
when someone ran them with ``MODEL = "meta-llama/Llama-3.1-8B"`` and this cache; otherwise it
says "not run here".
"""

from __future__ import annotations

import importlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

from .capture import Activations, load_activations
from .verdicts import Verdict, load_all

__all__ = ["CHAPTERS", "CLAIMS", "LLAMA", "collect", "llama_verdicts", "to_markdown", "findings_markdown", "write"]

#: chapter notebook -> (library module holding its ``verdicts``, the claims it tests)
CHAPTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "01_residual_stream": ("stationarity", ("C7",)),
    "02_continuity": ("continuity", ("C1", "C2", "C3")),
    "03_growth": ("geometry", ("C4", "C5", "C6")),
    "04_information": ("information", ("C8",)),
    "05_rotations": ("rotations", ("C9", "C10")),
    "06_low_dimensional": ("lowdim", ("C11", "C12")),
    "07_teleport": ("perturb", ("C13",)),
}
CLAIMS = tuple(f"C{i}" for i in range(1, 14))
LLAMA = "meta-llama/Llama-3.1-8B"
_SYMBOL = {"agrees": "**agrees**", "partly": "*partly*", "disagrees": "**disagrees** ✗", "not run": "not run here"}


def _verdict_fn(module: str) -> Callable[..., list[Verdict]]:
    return importlib.import_module(f"tdcourse.{module}").verdicts


def collect(runs: Sequence[Activations], chapters: dict[str, tuple[str, tuple[str, ...]]] | None = None,
            progress: bool = True) -> list[Verdict]:
    """Every chapter's verdicts on every run (paper claims C1–C13 only); ``chapters`` defaults
    to :data:`CHAPTERS`."""
    out: list[Verdict] = []
    for chapter, (module, _claims) in (CHAPTERS if chapters is None else chapters).items():
        fn = _verdict_fn(module)
        for run in runs:
            t = time.perf_counter()
            vs = fn(run, chapter=chapter)
            out.extend(v for v in vs if v.claim in CLAIMS)
            if progress:
                print(f"  {chapter:20s} {run.label:40s} {time.perf_counter() - t:6.1f} s")
    return out


def llama_verdicts() -> list[Verdict]:
    """Verdicts on Llama 3.1 8B that chapters saved in this cache (empty if nobody ran it)."""
    return [v for v in load_all() if v.model.startswith(LLAMA) and v.claim in CLAIMS]


def _cell(vs: list[Verdict], chapter: str) -> str:
    if not vs:
        return _SYMBOL["not run"]
    parts = [f"{_SYMBOL[v.outcome]} ({v.value:.3g})" for v in vs]
    link = f" {{doc}}`→ </notebooks/{chapter}>`" if chapter else ""
    return " / ".join(parts) + link


def _claim_chapter(claim: str) -> str:
    for chapter, (_m, claims) in CHAPTERS.items():
        if claim in claims:
            return chapter
    return ""


def to_markdown(verdicts: Sequence[Verdict], columns: Sequence[str]) -> str:
    """The scoreboard table as MyST markdown: one row per claim, one column per model label."""
    head = "| claim | the paper says | " + " | ".join(columns) + " |"
    rule = "|" + "---|" * (2 + len(columns))
    rows = [head, rule]
    for claim in CLAIMS:
        these = [v for v in verdicts if v.claim == claim]
        paper = these[0].paper if these else ""
        chapter = _claim_chapter(claim)
        cells = [_cell([v for v in these if v.model == col], chapter) for col in columns]
        rows.append(f"| **{claim}** | {paper.replace('|', '/')} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _tally(verdicts: Sequence[Verdict], model: str) -> Counter:
    """Outcome per claim for one model: a claim with several readings counts as 'agrees' only if
    all agree, 'disagrees' only if all disagree, else 'partly'."""
    by_claim: dict[str, set[str]] = {}
    for v in verdicts:
        if v.model == model:
            by_claim.setdefault(v.claim, set()).add(v.outcome)
    out: Counter = Counter()
    for outcomes in by_claim.values():
        out["agrees" if outcomes == {"agrees"} else "disagrees" if outcomes == {"disagrees"} else "partly"] += 1
    return out


def findings_markdown(verdicts: Sequence[Verdict], trained: str, control: str | None, quant: str | None) -> str:
    """A few sentences for the landing page, built from the verdicts."""
    t = _tally(verdicts, trained)
    lines = [f"On **{trained}**, of the {sum(t.values())} claims tested, **{t['agrees']} agree** with the paper, "
             f"**{t['partly']} partly** and **{t['disagrees']} disagree**."]
    by = {}
    for v in verdicts:
        by.setdefault((v.claim, v.model), set()).add(v.outcome)
    agree_t = sorted((c for (c, m), o in by.items() if m == trained and o == {"agrees"}), key=lambda c: int(c[1:]))
    if control:
        both = [c for c in agree_t if by.get((c, control)) == {"agrees"}]
        learned = [c for c in agree_t if by.get((c, control)) and "agrees" not in by[(c, control)]]
        if both:
            lines.append(f"The random-init control agrees too on {', '.join(both)}: those properties come with the "
                         "architecture (residual additions, norms), not from training.")
        if learned:
            lines.append(f"The control does not (fully) reproduce {', '.join(learned)}: those need training.")
    if quant:
        diff = sorted({c for (c, m), o in by.items() if m == quant and by.get((c, trained)) != o}, key=lambda c: int(c[1:]))
        lines.append("The 4-bit NF4 copy gives the same outcome on every claim." if not diff else
                     f"The 4-bit NF4 copy changes the outcome of {', '.join(diff)}.")
    not_agree = sorted((c for (c, m), o in by.items() if m == trained and o != {"agrees"}), key=lambda c: int(c[1:]))
    if not_agree:
        lines.append(f"Where SmolLM2-135M does not (fully) agree with the paper: {', '.join(not_agree)}; each chapter "
                     "discusses why.")
    lines.append("Llama 3.1 8B has not been run to build this book; its column is empty until someone does.")
    return " ".join(lines) + "\n"


def write(out_dir: Path, runs: Sequence[Activations], extra_json: Path | None = None, progress: bool = True) -> list[Verdict]:
    """Compute the scoreboard for ``runs`` (trained, 4-bit, control) and write its files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    found = collect(runs, progress=progress) + llama_verdicts()
    columns = [r.label for r in runs] + ([LLAMA] if not any(v.model.startswith(LLAMA) for v in found) else
                                          sorted({v.model for v in found if v.model.startswith(LLAMA)}))
    (out_dir / "scoreboard.md").write_text(to_markdown(found, columns))
    labels = [r.label for r in runs]
    trained = labels[0]
    control = next((l for l in labels if "random init" in l), None)
    quant = next((l for l in labels if "4bit" in l), None)
    (out_dir / "findings.md").write_text(findings_markdown(found, trained, control, quant))
    blob = json.dumps({"generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "columns": columns,
                       "runs": [r.meta for r in runs], "verdicts": [v.to_dict() for v in found]}, indent=1)
    (out_dir / "verdicts.json").write_text(blob)
    if extra_json is not None:
        extra_json.parent.mkdir(parents=True, exist_ok=True)
        extra_json.write_text(blob)
    return found


def default_runs(model: str = "smollm2-135m", n: int = 1000) -> list[Activations]:
    """The scoreboard's runs: trained (full precision), 4-bit NF4, random-init control."""
    return [load_activations(model=model, n=n, quant="none"),
            load_activations(model=model, n=n, quant="4bit"),
            load_activations(model=model, n=n, init="random", quant="none")]
