"""The reproduction scoreboard: every claim, every model run, one computed verdict per cell.

``python -m tdcourse scoreboard --out book/_generated`` runs each chapter's ``verdicts``
function (the same code the chapters run) on the SmolLM2-135M capture, its 4-bit NF4 capture
and its random-init control, and writes

- ``scoreboard.md``: the table (claims × model runs), each cell the outcome with its number,
  linking to the chapter; included by the book's scoreboard page;
- ``findings.md``: a short summary of the table, included by the landing page (its counts are
  the table's cells; fragile verdicts are named);
- ``robustness.md``: every claim under its alternative specifications
  (:mod:`tdcourse.robustness`), included by the book's robustness page; the table's robustness
  column and its "⚠ fragile" marks come from the same computation;
- ``verdicts.json``: every verdict and every specification's outcome, machine-readable (the
  build copies it beside the book).

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

__all__ = ["CHAPTERS", "CLAIMS", "SEQUEL_CLAIMS", "LLAMA", "VALUE_MEANING", "collect", "llama_verdicts", "to_markdown", "tally",
           "findings_markdown", "write", "default_runs"]

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
CLAIMS = tuple(f"C{i}" for i in range(1, 14))
#: The sequel's claims (arXiv:2605.14258, read via the authors' posts): scored, listed apart from C1–C13.
SEQUEL_CLAIMS = ("S1", "S2", "S3", "S4")
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
            out.extend(v for v in vs if v.claim in CLAIMS + SEQUEL_CLAIMS)
            if progress:
                print(f"  {chapter:20s} {run.label:40s} {time.perf_counter() - t:6.1f} s")
    return out


def llama_verdicts() -> list[Verdict]:
    """Verdicts on Llama 3.1 8B that chapters saved in this cache (empty if nobody ran it)."""
    return [v for v in load_all() if v.model.startswith(LLAMA) and v.claim in CLAIMS + SEQUEL_CLAIMS]


#: What the number in parentheses is, per claim (and reading): the ``value`` the verdict rests on.
VALUE_MEANING = {
    "C1": "median r over units and adjacent site pairs",
    "C2": "share of units whose r rises with depth",
    "C3": "median over units of r within a layer − r across layers",
    "C4": "Spearman ρ of the trimmed Hoyer density with depth",
    "C5": "Spearman ρ of the cosine between consecutive states with depth (site steps)",
    "C6": "Spearman ρ of the velocity with depth (site steps)",
    "C7": "share of units whose drift exceeds the site-shuffled null",
    "C8": "relative drop of the kNN MI curve",
    "C9": "|mean rotation count| rescaled to 64 sites (mean trajectory / per-sample)",
    "C10": "share of outward-spiral units",
    "C11": "bend of the mean latent path (largest distance from its chord / chord)",
    "C12": "held-out NMSE early − late third / participation ratio early − late third",
    "C13": "contraction ratio at the early layers / inward-arrow fraction at the early layers",
    "S1": "smallest share of complex eigenvalues over the layers",
    "S2": "symmetric share of the layers' writes, last third − first third",
    "S3": "effective rank of the end-to-end Jacobian",
    "S4": "end-to-end effective rank with the non-normal parts erased / as they are",
}

FRAGILE = "⚠ fragile"


def _reading_rows(claim: str, count: int) -> list[str]:
    from .robustness import READINGS

    names = READINGS.get(claim, ())
    return [f"{claim} ({names[i]})" if i < len(names) else claim for i in range(count)]


def _cell(vs: list[Verdict], chapter: str, fragile: Sequence[bool] = ()) -> str:
    if not vs:
        return _SYMBOL["not run"]
    parts = [f"{_SYMBOL[v.outcome]} ({v.value:.3g})" + (f" {FRAGILE}" if i < len(fragile) and fragile[i] else "")
             for i, v in enumerate(vs)]
    link = f" {{doc}}`→ </notebooks/{chapter}>`" if chapter else ""
    return " / ".join(parts) + link


def _claim_chapter(claim: str) -> str:
    for chapter, (_m, claims) in CHAPTERS.items():
        if claim in claims:
            return chapter
    return ""


def to_markdown(verdicts: Sequence[Verdict], columns: Sequence[str], robust: dict | None = None,
                kinds: dict[str, str] | None = None) -> str:
    """The scoreboard table as MyST markdown: one row per claim, one column per model label.

    Parameters
    ----------
    verdicts : sequence of Verdict
    columns : sequence of str
        Model labels, one column each.
    robust : dict or None
        :func:`tdcourse.robustness.summarise` of the specifications: adds the robustness column
        (per run, how many specifications give the cell's outcome) and marks a cell
        ``⚠ fragile`` where its outcome is not a strict majority.
    kinds : dict or None
        Model label -> run kind (``"trained"``, ``"4-bit"``, ``"control"``) for ``robust``.

    Returns
    -------
    str
        The table, then a line saying what the number in parentheses is.
    """
    robust = robust or {}
    kinds = kinds or {}
    head = "| claim | the paper says | " + " | ".join(columns) + " |" + (" robustness |" if robust else "")
    rule = "|" + "---|" * (2 + len(columns) + bool(robust))
    rows = [head, rule]
    for claim in CLAIMS + SEQUEL_CLAIMS:
        if claim == SEQUEL_CLAIMS[0]:
            rows.append("| **The sequel's claims** | read via the authors' posts ({doc}`claims`) |" + " |" * (len(columns) + bool(robust)))
        these = [v for v in verdicts if v.claim == claim]
        paper = these[0].paper if these else ""
        chapter = _claim_chapter(claim)
        cells = []
        for col in columns:
            vs = [v for v in these if v.model == col]
            names = _reading_rows(claim, len(vs))
            flags = [bool(robust.get((n, kinds.get(col))) and robust[(n, kinds.get(col))].fragile) for n in names]
            cells.append(_cell(vs, chapter, flags))
        line = f"| **{claim}** | {paper.replace('|', '/')} | " + " | ".join(cells) + " |"
        if robust:
            line += f" {_robust_cell(claim, robust, [kinds.get(c) for c in columns if kinds.get(c)])} |"
        rows.append(line)
    meaning = "; ".join(f"{c}: {m}" for c, m in VALUE_MEANING.items())
    rows += ["", f"**The number in parentheses** is the value the verdict rests on ({meaning}). Its criterion and "
                 "uncertainty are in the chapter and in `verdicts.json`."]
    if robust:
        rows += ["", f"**robustness**: per run ({' · '.join(dict.fromkeys(k for k in kinds.values()))}), how many "
                     "of the claim's specifications (the chapter's own and the alternatives on {doc}`robustness`) give "
                     f"the outcome shown; {FRAGILE}: fewer than a strict majority do."]
    return "\n".join(rows) + "\n"


def _robust_cell(claim: str, robust: dict, kinds: Sequence[str]) -> str:
    from .robustness import READINGS

    names = [f"{claim} ({r})" for r in READINGS[claim]] if claim in READINGS else [claim]
    parts = []
    for name in names:
        bits = []
        for k in kinds:
            r = robust.get((name, k))
            bits.append("—" if r is None or not r.n else f"{r.same}/{r.n}" + (" ⚠" if r.fragile else ""))
        prefix = f"{name.split('(')[1][:-1]}: " if "(" in name else ""
        parts.append(prefix + " · ".join(bits))
    return " / ".join(parts)


def tally(verdicts: Sequence[Verdict], model: str) -> Counter:
    """Outcome counts over the scoreboard's cells of one model: one per verdict (a claim read
    two ways counts twice), so the counts equal what the column shows."""
    return Counter(v.outcome for v in verdicts if v.model == model and v.claim in CLAIMS)


def _order(claims) -> list[str]:
    return sorted(set(claims), key=lambda c: (int(c.split()[0][1:]), c))


def findings_markdown(verdicts: Sequence[Verdict], trained: str, control: str | None, quant: str | None,
                      robust: dict | None = None, kinds: dict[str, str] | None = None) -> str:
    """A few sentences for the landing page, built from the verdicts (and their robustness).

    The counts are the scoreboard column's cells (:func:`tally`); a verdict marked fragile on the
    scoreboard is named as such here too.
    """
    robust = robust or {}
    kinds = kinds or {}
    t = tally(verdicts, trained)
    claims = {v.claim for v in verdicts if v.model == trained and v.claim in CLAIMS}
    n = sum(t.values())
    twice = _order(c for c in claims if sum(v.claim == c and v.model == trained for v in verdicts) > 1)
    read = f"; {', '.join(twice)} read two ways" if twice else ""
    lines = [f"On **{trained}**, the scoreboard shows {n} verdicts on {len(claims)} claims{read}: "
             f"**{t['agrees']} agree** with the paper, **{t['partly']} partly** and **{t['disagrees']} disagree** "
             f"({_SYMBOL['disagrees'].split()[-1]})."]

    def rows(model):
        out = {}
        for c in claims:
            vs = [v for v in verdicts if v.model == model and v.claim == c]
            for name, v in zip(_reading_rows(c, len(vs)), vs):
                out[name] = v.outcome
        return out

    def fragile(model) -> list[str]:
        k = kinds.get(model)
        return _order(name for (name, kk), r in robust.items() if kk == k and r.fragile and name in rows(model))

    frag_t = fragile(trained)
    if robust:
        lines.append(f"{len(frag_t)} of them {'is' if len(frag_t) == 1 else 'are'} **fragile** ({FRAGILE} on the "
                     "scoreboard: no strict majority of the claim's specifications on {doc}`robustness` gives "
                     "that outcome)" + (f": {', '.join(frag_t)}." if frag_t else "."))
        others = [(name, fragile(m)) for name, m in (("the 4-bit copy", quant), ("the control", control)) if m]
        others = [f"on {name}: {', '.join(f)}" for name, f in others if f]
        if others:
            lines.append(f"Fragile {'; '.join(others)}.")
    by = {}
    for v in verdicts:
        by.setdefault((v.claim, v.model), set()).add(v.outcome)
    agree_t = _order(c for (c, m), o in by.items() if m == trained and o == {"agrees"} and c in CLAIMS)
    if control:
        frag_c = set(fragile(control))
        both = [c for c in agree_t if by.get((c, control)) == {"agrees"}]
        learned = [c for c in agree_t if by.get((c, control)) and "agrees" not in by[(c, control)]]
        if both:
            shaky = [c for c in both if any(r.startswith(c) and r.split()[0] == c for r in frag_c)]
            lines.append(f"The random-init control agrees too on {', '.join(both)}: those properties come with the "
                         "architecture (residual additions, norms), not from training"
                         + (f" (the control's agreement is fragile on {', '.join(shaky)})." if shaky else "."))
        if learned:
            lines.append(f"The control does not (fully) reproduce {', '.join(learned)}: those need training.")
    if quant:
        diff = _order(c for (c, m), o in by.items() if m == quant and by.get((c, trained)) != o and c in CLAIMS)
        lines.append("The 4-bit NF4 copy gives the same outcome on every claim." if not diff else
                     f"The 4-bit NF4 copy changes the outcome of {', '.join(diff)}.")
    not_agree = _order(c for (c, m), o in by.items() if m == trained and o != {"agrees"} and c in CLAIMS)
    if not_agree:
        lines.append(f"Where SmolLM2-135M does not (fully) agree with the paper: {', '.join(not_agree)}; each chapter "
                     "discusses why.")
    lines.append("Llama 3.1 8B has not been run to build this book; its column is empty until someone does.")
    return " ".join(lines) + "\n"


def write(out_dir: Path, runs: Sequence[Activations], extra_json: Path | None = None, progress: bool = True,
          data_axes: bool = True) -> list[Verdict]:
    """Compute the scoreboard for ``runs`` (trained, 4-bit, control) and write its files.

    Every chapter's verdicts and every specification of :mod:`tdcourse.robustness` are
    computed in one pass (each statistic once). Writes ``scoreboard.md``, ``findings.md``,
    ``robustness.md`` and ``verdicts.json`` (with the specifications' outcomes) into ``out_dir``.

    Parameters
    ----------
    out_dir : Path
    runs : sequence of Activations
        Trained first; the 4-bit and control runs are told by their labels.
    extra_json : Path or None
        A second copy of ``verdicts.json``.
    progress : bool
    data_axes : bool
        Also evaluate the data axes (captured once into the cache by
        :func:`tdcourse.robustness.load_data_runs`, about two minutes on two cores the first time).

    Returns
    -------
    list of Verdict
        The scoreboard's verdicts (claims C1–C13; Llama 3.1 8B's saved ones included).
    """
    from . import robustness

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data_runs = robustness.load_data_runs(runs, progress=progress) if data_axes else {}
    t_data = time.perf_counter() - t0
    computed, outcomes, sec = robustness.evaluate(runs, data_runs, progress=progress)
    t_all = time.perf_counter() - t0
    found = [v for v in computed if v.claim in CLAIMS + SEQUEL_CLAIMS] + llama_verdicts()
    # Llama 3.1 8B gets a column once a chapter has saved verdicts on it; a column of "not run here"
    # would only push the table past a laptop's page width (the page's text says nobody ran it).
    columns = [r.label for r in runs] + sorted({v.model for v in found if v.model.startswith(LLAMA)})
    kinds = {r.label: robustness._kind_of(r, i) for i, r in enumerate(runs)}
    summ = robustness.summarise(outcomes)
    robustness.save_summary(runs, summ)  # the chapters' "what we found" say how robust their verdicts are
    (out_dir / "scoreboard.md").write_text(to_markdown(found, columns, summ, kinds))
    labels = [r.label for r in runs]
    trained = labels[0]
    control = next((l for l in labels if "random init" in l), None)
    quant = next((l for l in labels if "4bit" in l), None)
    (out_dir / "findings.md").write_text(findings_markdown(found, trained, control, quant, summ, kinds))
    n_specs = sum(o.verdict is not None for o in outcomes)
    timing = (f"*Computed when this book was built: {n_specs} specification outcomes on {len(runs)} runs and "
              f"{sum(len(v) for v in data_runs.values())} data-axis captures. On this machine the chapters' own "
              f"verdicts (the scoreboard) took {sec.get('primary', 0):.0f} s, the alternatives "
              f"{sec.get('alternatives', 0):.0f} s and reading or capturing the data axes {t_data:.0f} s.*")
    runs_line = "Runs: " + "; ".join(f"**{k}** = {l}" for l, k in kinds.items()) + "."
    axes = [a for a in robustness.DATA if a != robustness.PRIMARY_DATA]
    runs_line += " Data axes in this build: " + "; ".join(
        f"*{a}*: " + (", ".join(data_runs[a]) if data_runs.get(a) else "not run (not cached here)") for a in axes) + "."
    (out_dir / "robustness.md").write_text(robustness.to_markdown(
        outcomes, kinds=list(dict.fromkeys(kinds.values())), timing=runs_line + " " + timing))
    blob = json.dumps({"generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "columns": columns,
                       "runs": [r.meta for r in runs], "verdicts": [v.to_dict() for v in found],
                       "robustness": [o.to_dict() for o in outcomes],
                       "seconds": {"total": round(t_all, 1), "data_axes_load": round(t_data, 1),
                                   **{k: round(v, 1) for k, v in sec.items()}}}, indent=1)
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
