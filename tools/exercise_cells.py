"""Give every exercise of the chapters a cell for the learner's answer and hide its solution.

In the rendered book (sphinx-exercise) a solution is a collapsed dropdown; in JupyterLab or Colab
the same solution is a plain code cell right under the exercise. This script makes the notebooks
work for a learner too, for every ``{solution-start} <label>`` markdown cell of
``notebooks/*.ipynb``:

* the cell before it becomes a "your turn" code cell, tagged ``remove-cell`` (myst-nb leaves it
  out of the book, where the dropdown already serves) and ``your-turn``: a comment naming what to
  write, the template of each function the solution defines (the exercise text's own template
  where it shows one that runs, else the signature and docstring with the body ``...``: it
  returns None, which the library's checks report as "not written yet") and, where
  the solution or the cell after it calls a ``check_…``, that call on the learner's function,
  with the few assignments of the solution it needs. It runs without error when left as it is
  (nbval and the book execute every cell).
* every code cell between ``{solution-start}`` and ``{solution-end}`` gets the metadata
  ``"jupyter": {"source_hidden": true}`` (JupyterLab shows it collapsed) and
  ``"cellView": "form"`` with a first line ``# @title Solution`` (Colab shows a form titled
  "Solution" and hides the code until "Show code" or a double-click).

Idempotent: a second run changes nothing; re-run it after merging chapters
(``python tools/exercise_cells.py``; ``--check`` only reports, exit status 1 when a notebook
would change). ``tests/test_exercise_cells.py`` fails when a notebook does not comply.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import copy
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TITLE = "# @title Solution"
YOUR_TURN_TAGS = ("remove-cell", "your-turn")
_SEMICOLON = "\x00;"  # marks a ";" to add after formatting
_START = re.compile(r"\{solution-start\}\s*(\S+)")


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def solution_spans(cells: list[dict]) -> list[tuple[str, int, int]]:
    """``(label, index of the solution-start cell, index of its solution-end cell)`` in order."""
    spans = []
    for i, cell in enumerate(cells):
        m = _START.search(_src(cell)) if cell["cell_type"] == "markdown" else None
        if not m:
            continue
        j = i + 1
        while j < len(cells) and "{solution-end}" not in _src(cells[j]):
            j += 1
        if j == len(cells):
            raise ValueError(f"solution {m.group(1)}: no {{solution-end}} after it")
        spans.append((m.group(1), i, j))
    return spans


def is_your_turn(cell: dict) -> bool:
    return cell["cell_type"] == "code" and "your-turn" in cell.get("metadata", {}).get("tags", [])


def _bound(tree: ast.AST) -> set[str]:
    """Names a piece of code binds at its top level (assignments, imports, defs, for targets)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _loads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except SyntaxError:  # IPython magics: such a cell binds nothing we need
        return None


def _is_check(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, (ast.Attribute, ast.Name))
               and (n.func.attr if isinstance(n.func, ast.Attribute) else n.func.id).startswith("check_")
               for n in ast.walk(node))


class _NoAssert(ast.NodeTransformer):
    """``assert check_…(...)`` → ``check_…(...)``: an unwritten answer must not stop the cell."""

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        return ast.Expr(node.test) if _is_check(node.test) else node


def _templates(exercise: str, names: list[str]) -> dict[str, str] | None:
    """The exercise text's own template of each function in ``names`` (a ```python block), as
    written there, comments included; None unless it has them all, none of them raises and none
    returns a value other than ``...`` (a template returning zeros would be checked as a wrong
    answer, not reported as not written yet)."""
    found: dict[str, str] = {}
    for block in re.findall(r"```python\n(.*?)```", exercise, flags=re.S):
        tree = _parse(block)
        lines = block.splitlines()
        for node in tree.body if tree else []:
            if isinstance(node, ast.FunctionDef) and node.name in names:
                if any(isinstance(n, ast.Raise) for n in ast.walk(node)):
                    return None  # a template must run: `raise NotImplementedError` would stop the cell
                if any(isinstance(n, ast.Return) and n.value is not None
                       and not (isinstance(n.value, ast.Constant) and n.value.value is ...)
                       for n in ast.walk(node)):
                    return None  # it returns a value (zeros…): the check could not say "not written yet"
                end = node.end_lineno  # and the comment lines that close the body
                while end < len(lines) and re.match(r"\s+#", lines[end]):
                    end += 1
                found[node.name] = "\n".join(lines[node.lineno - 1:end])
    return found if names and set(names) <= set(found) else None


def your_turn_source(label: str, solution: list[str], after: str, earlier: list[str], exercise: str = "",
                     inside: list[str] = ()) -> str:
    """The "your turn" cell for one exercise.

    Parameters
    ----------
    label : str
        The exercise's label (``ch5-ex2``).
    solution : list of str
        The source of each code cell of its solution.
    after : str
        The source of the cell after ``{solution-end}`` (a build-it step checks there).
    earlier : list of str
        The sources of the code cells before the exercise (names they bind are available).
    exercise : str
        The exercise's markdown: where it shows a template of the functions (a ```python block
        whose bodies do not raise), the cell starts from that template, else from the solution's
        signatures and docstrings with the body ``...``.
    inside : list of str
        Code cells inside the exercise (between ``{exercise-start}`` and ``{exercise-end}``): a
        function already templated there is the learner's; the cell only checks it (a second
        template would overwrite the learner's work).
    """
    known = set(dir(builtins))
    for text in earlier:
        tree = _parse(text)
        if tree is not None:
            known |= _bound(tree)
    in_exercise: set[str] = set()
    for text in inside:
        tree = _parse(text)
        in_exercise |= {n.name for n in (tree.body if tree else []) if isinstance(n, ast.FunctionDef)}
    defs: list[ast.FunctionDef] = []
    assigns: list[ast.stmt] = []
    checks: list[ast.stmt] = []
    for text in solution:
        tree = _parse(text)
        for node in tree.body if tree else []:
            if isinstance(node, ast.FunctionDef):
                defs.append(node)
            elif isinstance(node, (ast.Assign, ast.Import, ast.ImportFrom)):
                assigns.append(node)
            elif _is_check(node):
                checks.append(node)
    tree = _parse(after)
    if not checks and tree is not None:
        checks = [node for node in tree.body if _is_check(node)]
    names = [d.name for d in defs]
    have = known | set(names)
    # the solution's assignments a check needs, in their order, as long as they need only what exists
    needed: list[ast.stmt] = []
    want = set().union(*(_loads(c) for c in checks)) if checks else set()
    for node in reversed(assigns):
        if _bound(node) & want:
            needed.insert(0, node)
            want |= _loads(node)
    # only a check of the learner's own function, as one statement (an `if avail:` around it is kept)
    shown = [ast.unparse(n) if len(ast.unparse(n)) <= 30 else ast.unparse(n.func) + "(…)" for c in checks for n in ast.walk(c) if isinstance(n, ast.Call)
             and ast.unparse(n.func).rsplit(".", 1)[-1].startswith("check_")]
    checks = [c for c in checks if _loads(c) & set(names)
              and not any(isinstance(n, (ast.For, ast.While)) for n in ast.walk(c))]
    kept_checks = []
    if checks:
        avail = have | set().union(*(_bound(n) for n in needed))
        if all(_loads(n) <= avail | _bound(n) for n in needed + checks):
            kept_checks = checks
        else:
            needed = []
    what = ", ".join(f"{d.name}({ast.unparse(d.args)})" for d in defs)
    templated = bool(defs) and {d.name for d in defs} <= in_exercise
    defs_shown = [] if templated else defs
    if templated:
        head = f"Your answer: write {what} in the exercise's cell above"
        head += ", then run this cell (it checks it)." if kept_checks else "."
    elif defs:
        head = f"Your answer: write {what} here"
        head += (f", then run this cell (it checks your function{'s' if len(defs) > 1 else ''})."
                 if kept_checks else ", then run this cell.")
    else:
        head = f"Your answer to exercise {label}: write it here and run it."
        if shown:
            head += f" The solution checks itself with {', '.join(dict.fromkeys(shown))}."
    head += " The hidden cell below is the solution (running it replaces yours)."
    out = [textwrap.fill(head, 72, initial_indent="# ", subsequent_indent="# ")]
    given = _templates(exercise, names)
    for d in defs_shown:
        if given:
            out.append(given[d.name])
            continue
        doc = ast.get_docstring(d, clean=False)
        stub = copy.deepcopy(d)
        stub.decorator_list = []
        stub.body = ([ast.Expr(ast.Constant(doc))] if doc else []) + [ast.Expr(ast.Constant(...))]
        out.append(ast.unparse(stub))
    if kept_checks:
        code = "\n".join(ast.unparse(_NoAssert().visit(n)) for n in needed + kept_checks)
        out.append(code)
    text = "\n\n\n".join(out) if defs_shown else "\n\n".join(out)
    # the check prints its lines; its True / False is not shown again (";" after formatting:
    # ruff keeps a notebook cell's last ";" but drops it from a Python file)
    return text + _SEMICOLON if kept_checks and isinstance(kept_checks[-1], ast.Assert | ast.Expr) else text


def _ruff_format(text: str) -> str:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    done = subprocess.run([ruff, "format", "--stdin-filename", "cell.py", "-"], input=text, cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return done.stdout.rstrip("\n")


def _code_cell(source: str, metadata: dict, cell_id: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": cell_id, "metadata": metadata,
            "outputs": [], "source": _lines(source)}


def process(nb: dict, fmt=_ruff_format) -> dict:
    """Return the notebook with a "your turn" cell before every solution and its code hidden."""
    cells = nb["cells"]
    for label, start, end in reversed(solution_spans(cells)):
        body = [c for c in cells[start + 1:end] if c["cell_type"] == "code"]
        for cell in body:
            text = _src(cell)
            if not text.startswith(TITLE):
                text = TITLE + "\n" + text
            cell["source"] = _lines(text)
            meta = cell.setdefault("metadata", {})
            meta.setdefault("jupyter", {})["source_hidden"] = True
            meta["cellView"] = "form"
        before = start - 1
        while before >= 0 and is_your_turn(cells[before]):
            before -= 1
        exercise_at = before  # the markdown cell of the exercise (or its {exercise-end})
        opened = exercise_at
        if exercise_at >= 0 and "{exercise-end}" in _src(cells[exercise_at]):
            opened = next((k for k in range(exercise_at - 1, -1, -1) if cells[k]["cell_type"] == "markdown"
                           and "{exercise-start}" in _src(cells[k])), exercise_at)
        inside = [_src(c) for c in cells[opened + 1:exercise_at] if c["cell_type"] == "code"]
        if "{exercise-start}" in _src(cells[opened]):
            exercise_md = "\n".join(_src(c) for c in cells[opened:exercise_at + 1] if c["cell_type"] == "markdown")
        else:
            exercise_md, inside = _src(cells[exercise_at]) if exercise_at >= 0 else "", []
        earlier = [_src(c) for c in cells[:max(exercise_at, 0)] if c["cell_type"] == "code"]
        after = _src(cells[end + 1]) if end + 1 < len(cells) and cells[end + 1]["cell_type"] == "code" else ""
        solution = [_src(c).removeprefix(TITLE + "\n") for c in body]
        source = your_turn_source(label, solution, after, earlier, exercise_md, inside)
        semicolon = source.endswith(_SEMICOLON)
        source = fmt(source.removesuffix(_SEMICOLON)) + (";" if semicolon else "")
        old = [c for c in cells[exercise_at + 1:start] if is_your_turn(c)]
        cell_id = old[0]["id"] if old else f"yourturn-{label}"[:64]
        new = _code_cell(source, {"tags": list(YOUR_TURN_TAGS)}, cell_id)
        cells[exercise_at + 1:start] = [new]
    return nb


def dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--check", action="store_true", help="only report notebooks that would change")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    changed = []
    for path in paths:
        text = path.read_text()
        new = dump(process(json.loads(text)))
        if new != text:
            changed.append(path)
            if not args.check:
                path.write_text(new)
    for path in changed:
        print(("would change: " if args.check else "changed: ") + str(path))
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
