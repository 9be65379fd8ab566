"""The built scoreboard marks every cell that a listed alternative flips, naming it.

Reads what ``python -m tdcourse scoreboard`` wrote (``verdicts.json``, ``scoreboard.md``,
``findings.md``, ``robustness.md``) and checks it against the rule, recomputed here from the
raw specification outcomes in ``verdicts.json`` (not from the summary the build wrote):

* every (claim reading, run) whose primary outcome an alternative definition or a data axis
  changes carries "⚠ fragile" on the scoreboard, in the right column, and the robustness
  column names each such alternative for that run (``"<alternative> → <outcome>"``);
* no other cell carries the mark (a seed alone never makes one);
* the landing page's count of fragile verdicts per run equals the scoreboard's marks;
* the robustness page's summary says "⚠ fragile" for the same cells and "not run" rather than
  "—" wherever a specification was not computed.

Runs on ``book/_generated`` after ``make book`` (skipped before); also a script:
``python tests/test_fragile_marks_built.py /tmp/sb`` prints every problem and the table of
(claim, run): outcome, fragile?, flips, stable?.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tdcourse.registry import row_names

BUILT = Path(__file__).resolve().parents[1] / "book" / "_generated"
KINDS = ("trained", "4-bit", "control")


def expected(data: dict) -> dict[tuple[str, str], dict]:
    """``{(row, run): {"primary", "flips", "seeds", "unstable"}}`` from the raw outcomes."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for r in data["robustness"]:
        row = f"{r['claim']} ({r['reading']})" if r["reading"] else r["claim"]
        rows.setdefault((row, r["run"]), []).append(r)
    out = {}
    for key, items in rows.items():
        prim = next(i for i in items if i["primary"])
        done = [i for i in items if not i["primary"] and i["outcome"] != "not run"]
        label = lambda i: i["data"] if i["role"] == "data" else i["spec"]  # noqa: E731
        out[key] = {
            "primary": prim["outcome"],
            "flips": [f"{label(i)} → {i['outcome']}" for i in done
                      if i["role"] in ("definition", "data") and i["outcome"] != prim["outcome"]],
            "holds": [label(i) for i in done if i["role"] in ("definition", "data") and i["outcome"] == prim["outcome"]],
            "seeds": [label(i) for i in done if i["role"] == "seed"],
            "unstable": [f"{label(i)} → {i['outcome']}" for i in done
                         if i["role"] == "seed" and i["outcome"] != prim["outcome"]],
            "margin": prim.get("margin", ""), "close": prim.get("close", False),
            "not_run_dash": False,
        }
    return out


def _table_rows(md: str) -> dict[str, list[str]]:
    out = {}
    for line in md.splitlines():
        m = re.match(r"\| \*\*([CS]\d+)\*\* \|", line)
        if m:
            out[m.group(1)] = [c.strip() for c in line.strip().strip("|").split(" | ")]
    return out


def check(folder: Path) -> tuple[list[str], list[tuple]]:
    """Problems found in the build in ``folder`` (empty: all good), and the final table."""
    data = json.loads((folder / "verdicts.json").read_text())
    want = expected(data)
    board = (folder / "scoreboard.md").read_text()
    findings = (folder / "findings.md").read_text()
    page = (folder / "robustness.md").read_text()
    columns = data["columns"]
    kinds = {}
    for r in data["robustness_summary"]:
        kinds[r["kind"]] = r["model"]
    problems = []
    head = next(line for line in page.splitlines() if line.startswith("| claim |"))
    page_kinds = [c.strip() for c in head.strip().strip("|").split(" | ")][1:]
    rows = _table_rows(board)
    marks = {k: 0 for k in kinds}
    sequel = {k: 0 for k in kinds}  # the sequel's claims (S1-S4) have their own sentence on the landing page
    table = []
    for (row, kind), w in sorted(want.items(), key=lambda x: (int(x[0][0].split()[0][1:]), x[0][0],
                                                             KINDS.index(x[0][1]) if x[0][1] in KINDS else 9)):
        claim = row.split()[0]
        col = kinds[kind]
        cells = rows[claim]
        cell = cells[2 + columns.index(col)]
        readings = cell.split(" {doc}")[0].split(" / ")
        names = row_names(claim)
        part = readings[names.index(row)] if len(readings) == len(names) else cell
        fragile = bool(w["flips"])
        marks[kind] += fragile
        if claim.startswith("S"):
            sequel[kind] += fragile
        if fragile != ("⚠ fragile" in part):
            problems.append(f"{row} on {kind}: flips {w['flips']} but the scoreboard cell reads {part!r}")
        robust_col = cells[-1]
        for f in w["flips"]:
            if f not in robust_col:
                problems.append(f"{row} on {kind}: the robustness column does not name {f!r}: {robust_col!r}")
        summary_line = next((line for line in page.splitlines() if line.startswith(f"| {{ref}}`{row} <")), "")
        summary_cells = [c.strip() for c in summary_line.strip().strip("|").split(" | ")]
        if kind in page_kinds and len(summary_cells) > 1 + page_kinds.index(kind):
            sc = summary_cells[1 + page_kinds.index(kind)]
            if fragile != ("⚠ fragile" in sc) or any(f not in sc for f in w["flips"]):
                problems.append(f"{row} on {kind}: the robustness page's summary reads {sc!r}, expected flips {w['flips']}")
        else:
            problems.append(f"{row}: no summary line on the robustness page")
        stable = None if not w["seeds"] else not w["unstable"]
        table.append((row, kind, w["primary"], fragile, "; ".join(w["flips"]) or "—", stable,
                      "; ".join(w["unstable"]), w["margin"] if w["close"] else ""))
    paper_part, _, sequel_part = findings.partition("The sequel's claims")
    n_t = marks.get("trained", 0) - sequel.get("trained", 0)
    if f"{n_t} of them {'is' if n_t == 1 else 'are'} **fragile**" not in paper_part:
        problems.append(f"the landing page does not say {n_t} fragile verdicts on the trained model: {findings!r}")
    for kind, name in (("4-bit", "the 4-bit copy"), ("control", "the control")):
        n = marks.get(kind, 0) - sequel.get(kind, 0)
        if n and f"on {name} ({n}):" not in paper_part:
            problems.append(f"the landing page does not count {n} fragile verdicts on {name}")
    trained_name = kinds.get("trained", "")
    for kind, name in (("trained", trained_name), ("4-bit", "the 4-bit copy"), ("control", "the control")):
        if sequel.get(kind) and f"on {name} ({sequel[kind]}):" not in sequel_part:
            problems.append(f"the landing page's sequel sentence does not count {sequel[kind]} fragile verdicts "
                            f"on {name}: {sequel_part!r}")
    if board.count("⚠ fragile") - board.count(f"**⚠ fragile**") != sum(marks.values()):
        problems.append(f"the scoreboard shows {board.count('⚠ fragile')} marks, the rule gives {sum(marks.values())}")
    for section in page.split("\n## ")[2:]:
        for line in section.splitlines():
            if line.startswith("| ") and "| —" in line and not line.startswith("| *"):
                problems.append(f"a cell shows '—' instead of 'not run' and why: {line}")
    return problems, table


@pytest.mark.skipif(not (BUILT / "verdicts.json").exists() or not (BUILT / "scoreboard.md").exists(),
                    reason="the book's scoreboard has not been built here (make book)")
def test_built_scoreboard_marks_every_flipped_cell():
    data = json.loads((BUILT / "verdicts.json").read_text())
    if "robustness_summary" not in data:
        pytest.skip("book/_generated was built by an older scoreboard (no robustness_summary)")
    problems, _ = check(BUILT)
    assert not problems, "\n".join(problems)


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else BUILT
    problems, table = check(folder)
    print("| claim | run | outcome | fragile? | flips | stable? | unstable | on the line |")
    print("|---|---|---|---|---|---|---|---|")
    for row, kind, outcome, fragile, flips, stable, unstable, line in table:
        st = {True: "yes", False: "no", None: "not computed"}[stable]
        print(f"| {row} | {kind} | {outcome} | {'**yes**' if fragile else 'no'} | {flips} | {st} | {unstable} | {line} |")
    print(f"\n{len(problems)} problem(s)")
    for p in problems:
        print(" -", p)
    sys.exit(1 if problems else 0)
