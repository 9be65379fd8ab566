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

from . import robustness
from .capture import Activations, load_activations
from .registry import CHAPTERS, CLAIMS, LLAMA, SEQUEL_CLAIMS, SYMBOL as _SYMBOL, row_names
from .verdicts import Verdict, load_all

__all__ = ["CHAPTERS", "CLAIMS", "SEQUEL_CLAIMS", "LLAMA", "VALUE_MEANING", "collect", "llama_verdicts", "to_markdown", "tally",
           "findings_markdown", "write", "default_runs"]

# CHAPTERS, CLAIMS and LLAMA live in tdcourse.registry (shared with tdcourse.robustness, which must
# not import this module); they are re-exported here under their old names.


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
    return row_names(claim, count)


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
        :func:`tdcourse.robustness.summarise` of the specifications: marks ``⚠ fragile`` the
        cells that an alternative definition or data axis flips (exactly the cells of
        :func:`tdcourse.robustness.marks`), and adds the robustness column: per run, which
        alternatives flip the outcome, which seeds do, and the threshold it hangs on.
    kinds : dict or None
        Model label -> run kind (``"trained"``, ``"4-bit"``, ``"control"``) for ``robust``.

    Returns
    -------
    str
        The table, then a line saying what the number in parentheses is.
    """
    robust = robust or {}
    kinds = kinds or {}
    marked = {(row, col) for row, col, _ in robustness.marks(verdicts, columns, robust, kinds)}
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
            flags = [(n, col) in marked for n in _reading_rows(claim, len(vs))]
            cells.append(_cell(vs, chapter, flags))
        line = f"| **{claim}** | {paper.replace('|', '/')} | " + " | ".join(cells) + " |"
        if robust:
            line += f" {_robust_cell(claim, robust, [kinds.get(c) for c in columns if kinds.get(c)])} |"
        rows.append(line)
    meaning = "; ".join(f"{c}: {m}" for c, m in VALUE_MEANING.items())
    rows += ["", f"**The number in parentheses** is the value the verdict rests on ({meaning}). Its criterion and "
                 "uncertainty are in the chapter and in `verdicts.json`."]
    if robust:
        rows += ["", f"**{FRAGILE}**: an alternative definition or data axis on {{doc}}`robustness` changes the "
                     "outcome; the robustness column names it, per run "
                     f"({' · '.join(dict.fromkeys(k for k in kinds.values()))}). *robust*: at least two alternatives "
                     "computed, none changes it; *not tested*: fewer. *unstable*: a resampling seed (bootstrap, "
                     "null, autoencoder initialisation or batch order) changes it, which is a matter of stability, "
                     "not of the definition. *on the line*: the outcome hangs on a threshold, within a tenth of it."]
    return "\n".join(rows) + "\n"


def _robust_cell(claim: str, robust: dict, kinds: Sequence[str]) -> str:
    parts = []
    for name in row_names(claim):
        groups: dict[str, list[str]] = {}
        extra = []
        for k in kinds:
            r = robust.get((name, k))
            key = ("not computed" if r is None else f"⚠ {', '.join(r.flips)}" if r.fragile else r.status)
            groups.setdefault(key, []).append(k)
            if r is not None and r.unstable:
                extra.append(f"unstable on {k}: {', '.join(r.unstable)}")
            if r is not None and r.close:
                extra.append(f"{k} on the line: {r.margin}")
        bits = [f"{'/'.join(ks)}: {key}" if len(groups) > 1 or len(kinds) > 1 else key for key, ks in groups.items()]
        prefix = f"*{name.split('(')[1][:-1]}*: " if "(" in name else ""
        parts.append(prefix + "; ".join(bits + extra))
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

    The counts are the scoreboard column's cells (:func:`tally`); the fragile verdicts named
    and counted here are the scoreboard's marked cells (:func:`tdcourse.robustness.marks`, the
    same call), with the alternatives that flip them.
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
    columns = [c for c in (trained, quant, control) if c]
    marked = robustness.marks(verdicts, columns, robust, kinds)

    def fragile(model, claims=CLAIMS) -> list[tuple[str, "robustness.Robustness"]]:
        return sorted(((row, rb) for row, col, rb in marked if col == model and row.split()[0] in claims),
                      key=lambda x: (int(x[0].split()[0][1:]), x[0]))

    def named(items) -> str:
        return ", ".join(f"{row} ({'; '.join(rb.flips)})" for row, rb in items)

    frag_t = fragile(trained)
    if robust:
        lines.append(f"{len(frag_t)} of them {'is' if len(frag_t) == 1 else 'are'} **fragile** ({FRAGILE} on the "
                     "scoreboard: an alternative definition or data axis on {doc}`robustness` changes the outcome)"
                     + (f": {named(frag_t)}." if frag_t else "."))
        others = [(name, fragile(m)) for name, m in (("the 4-bit copy", quant), ("the control", control)) if m]
        others = [f"on {name} ({len(f)}): {named(f)}" for name, f in others if f]
        if others:
            lines.append(f"Fragile {'; '.join(others)}.")
        run_name = {"trained": trained, "4-bit": "the 4-bit copy", "control": "the control"}
        rank = {k: i for i, k in enumerate(robustness.RUN_KINDS)}
        ordered = sorted(robust.items(), key=lambda x: (int(x[0][0].split()[0][1:]), x[0][0], rank.get(x[0][1], 9)))
        shaky = [f"{row} on {run_name.get(kk, kk)} ({', '.join(rb.unstable)})"
                 for (row, kk), rb in ordered if rb.unstable and kk in kinds.values()]
        if shaky:
            lines.append("Unstable (a resampling seed changes the outcome, whatever the definition): "
                         + "; ".join(shaky) + ".")
        edge = [f"{row} on {run_name.get(kk, kk)} ({rb.margin})"
                for (row, kk), rb in ordered if rb.close and kk in kinds.values()]
        if edge:
            lines.append("On the line (the outcome hangs on a threshold): " + "; ".join(edge) + ".")
    by = {}
    for v in verdicts:
        by.setdefault((v.claim, v.model), set()).add(v.outcome)
    agree_t = _order(c for (c, m), o in by.items() if m == trained and o == {"agrees"} and c in CLAIMS)
    if control:
        frag_c = {row for row, _rb in fragile(control)}
        both = [c for c in agree_t if by.get((c, control)) == {"agrees"}]
        learned = [c for c in agree_t if by.get((c, control)) and "agrees" not in by[(c, control)]]
        if both:
            shaky_c = [c for c in both if any(r.split()[0] == c for r in frag_c)]
            lines.append(f"The random-init control agrees too on {', '.join(both)}: those properties come with the "
                         "architecture (residual additions, norms), not from training"
                         + (f" (the control's agreement is fragile on {', '.join(shaky_c)})." if shaky_c else "."))
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
    sequel = _sequel_line(verdicts, trained, quant, control, fragile if robust else None, named)
    if sequel:
        lines.append(sequel)
    lines.append("Llama 3.1 8B has not been run to build this book; its column is empty until someone does.")
    return "".join(f"- {line}\n" for line in lines)  # one point per line: a list, not a wall of text


def _sequel_line(verdicts: Sequence[Verdict], trained: str, quant: str | None, control: str | None,
                 fragile, named) -> str:
    """The landing page's sentence on the sequel's claims (S1–S4, chapter 8): the trained model's
    counts, and its fragile verdicts per run (the scoreboard's marks)."""
    mine = [v for v in verdicts if v.model == trained and v.claim in SEQUEL_CLAIMS]
    if not mine:
        return ""
    t = Counter(v.outcome for v in mine)
    text = (f"The sequel's claims on layer Jacobians ({SEQUEL_CLAIMS[0]}–{SEQUEL_CLAIMS[-1]}, "
            f"{{doc}}`../notebooks/08_jacobians`), on **{trained}**: **{t['agrees']} agree**, "
            f"**{t['partly']} partly**, **{t['disagrees']} disagree**")
    if fragile is None:
        return text + "."
    parts = []
    for name, model in ((trained, trained), ("the 4-bit copy", quant), ("the control", control)):
        f = fragile(model, SEQUEL_CLAIMS) if model else []
        if f:
            parts.append(f"on {name} ({len(f)}): {named(f)}")
    return text + ("; fragile " + "; ".join(parts) + "." if parts else "; none of them is fragile.")


def write(out_dir: Path, runs: Sequence[Activations], extra_json: Path | None = None, progress: bool = True,
          data_axes: bool | Sequence[str] = True, jobs: int = 1) -> list[Verdict]:
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
    data_axes : bool or sequence of str
        True: capture (once, into the cache) and evaluate the data axes of
        :data:`tdcourse.robustness.BUILD_AXES`; a sequence: those axes instead (e.g. every
        one of :data:`tdcourse.robustness.DATA`); False: none (their cells then say why).
    jobs : int, default 1
        Worker processes for the analyses (:func:`tdcourse.robustness.evaluate`); the files
        written do not depend on it.

    Returns
    -------
    list of Verdict
        The scoreboard's verdicts (claims C1–C13; Llama 3.1 8B's saved ones included).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    robustness.drop_old_summary()  # an older version kept it among the chapters' verdicts, which load_all reads
    t0 = time.perf_counter()
    axes = robustness.BUILD_AXES if data_axes is True else (() if data_axes is False else tuple(data_axes))
    data_runs = robustness.load_data_runs(runs, axes=axes, progress=progress) if axes else {}
    t_data = time.perf_counter() - t0
    evaluated = robustness.evaluate(runs, data_runs, chapters=CHAPTERS, progress=progress, jobs=jobs)
    return _write_files(out_dir, runs, data_runs, evaluated, t_data, time.perf_counter() - t0, jobs, extra_json)


def build(out_dir: Path, model: str = "smollm2-135m", n: int = 1000, extra_json: Path | None = None,
          progress: bool = True, jobs: int = 2) -> list[Verdict]:
    """Capture the scoreboard's runs and write the scoreboard, the captures and the analyses side
    by side in one pool of ``jobs`` workers (:func:`tdcourse.build.capture_and_evaluate`).

    The files written are those of :func:`write` on :func:`default_runs` with the data axes of
    :data:`tdcourse.robustness.BUILD_AXES`; the runs already in the cache are read, not captured.

    Parameters
    ----------
    out_dir, extra_json, progress : as for :func:`write`
    model : str
        The model (a name or a local folder, as for :func:`tdcourse.capture.load_activations`).
    n : int
        Samples per run.
    jobs : int, default 2
        Worker processes.

    Returns
    -------
    list of Verdict
        As :func:`write` returns them.

    Raises
    ------
    ValueError
        ``jobs`` is not a whole number of at least 1.
    Exception
        A capture's or an analysis's error, as raised in its worker.
    """
    from . import build as pipeline

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    robustness.drop_old_summary()
    t0 = time.perf_counter()
    runs, data_runs, evaluated = pipeline.capture_and_evaluate(pipeline.scoreboard_jobs(model, n), jobs=jobs,
                                                               chapters=CHAPTERS, progress=progress)
    return _write_files(out_dir, runs, data_runs, evaluated, 0.0, time.perf_counter() - t0, jobs, extra_json,
                        captured=True)


def _write_files(out_dir: Path, runs: Sequence[Activations], data_runs: dict, evaluated: tuple, t_data: float,
                 t_all: float, jobs: int, extra_json: Path | None, captured: bool = False) -> list[Verdict]:
    """Write scoreboard.md, findings.md, robustness.md and verdicts.json from ``evaluated``
    (:func:`tdcourse.robustness.evaluate`'s return value)."""
    computed, outcomes, sec = evaluated
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
              f"verdicts (the scoreboard) took {sec.get('primary', 0):.0f} s, the alternative definitions and "
              f"seeds {sec.get('alternatives', 0):.0f} s, the data axes {sec.get('data axes', 0):.0f} s")
    timing += ("; the runs and their data-axis samples were captured in the same pass" if captured
               else f" and reading or capturing their samples {t_data:.0f} s")
    if jobs > 1:
        timing += (f" (the analysis times are summed over the {jobs} worker processes that ran side by side; the "
                   f"whole pass took {t_all:.0f} s of wall time{', the captures included' if captured else ''})")
    timing += ".*"
    runs_line = "Runs: " + "; ".join(f"**{k}** = {l}" for l, k in kinds.items()) + "."
    runs_line += " Data axes in this build: " + "; ".join(
        f"*{a}*: " + (", ".join(data_runs[a]) if data_runs.get(a) else f"not run ({robustness.NOT_RUN.get(a, 'not captured in this build')})")
        for a in robustness.DATA if a != robustness.PRIMARY_DATA) + "."
    if any(k not in robustness.DATA_KINDS for k in kinds.values()):
        runs_line += f" Not on the data axes: {robustness.NOT_RUN['4-bit']}."
    (out_dir / "robustness.md").write_text(robustness.to_markdown(
        outcomes, kinds=list(dict.fromkeys(kinds.values())), timing=runs_line + " " + timing))
    blob = json.dumps({"generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "columns": columns,
                       "runs": [r.meta for r in runs], "verdicts": [v.to_dict() for v in found],
                       "robustness": [o.to_dict() for o in outcomes],
                       "robustness_summary": [{**rb.to_dict(), "model": next((l for l, k in kinds.items() if k == kind), kind)}
                                              for (row, kind), rb in summ.items()],
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
