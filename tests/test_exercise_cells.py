"""Every exercise of the chapters works in JupyterLab and Colab, not only in the book: a "your
turn" cell for the learner's answer before each solution (tagged ``remove-cell``: the book shows
the dropdown instead), and the solution's code cells hidden (``jupyter.source_hidden`` for
JupyterLab, ``cellView: form`` and a ``# @title`` line for Colab). ``tools/exercise_cells.py``
makes them so; these tests fail when a notebook does not comply (re-run the tool)."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("exercise_cells", ROOT / "tools" / "exercise_cells.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)
FIX = "run `python tools/exercise_cells.py` (it adds the cell and hides the solution)"


def _cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text())["cells"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_solution_has_a_your_turn_cell_and_is_hidden(nb):
    cells = _cells(nb)
    spans = tool.solution_spans(cells)
    assert spans, f"{nb.name}: no exercise with a solution"
    for label, start, end in spans:
        turn = cells[start - 1]
        assert tool.is_your_turn(turn), f"{nb.name} {label}: no 'your turn' cell before the solution; {FIX}"
        assert "remove-cell" in turn["metadata"]["tags"], f"{nb.name} {label}: the your-turn cell must not show in the book"
        src = tool._src(turn)
        ast.parse(src)  # it runs as it is: valid Python ...
        assert "NotImplementedError" not in src and "raise " not in src, f"{nb.name} {label}: the template must not raise"
        assert src.startswith("# Your answer"), f"{nb.name} {label}: the cell says what to write first"
        body = [c for c in cells[start + 1:end] if c["cell_type"] == "code"]
        assert body, f"{nb.name} {label}: a solution without code"
        for cell in body:
            assert cell["metadata"].get("jupyter", {}).get("source_hidden") is True, \
                f"{nb.name} {label}: solution code not hidden in JupyterLab; {FIX}"
            assert cell["metadata"].get("cellView") == "form", f"{nb.name} {label}: not a Colab form; {FIX}"
            assert tool._src(cell).startswith(tool.TITLE + "\n"), f"{nb.name} {label}: no '{tool.TITLE}' line; {FIX}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_tool_changes_nothing_more(nb):
    text = nb.read_text()
    assert tool.dump(tool.process(json.loads(text))) == text, f"{nb.name} is not as the tool leaves it; {FIX}"


def test_a_check_of_the_learners_function_goes_into_the_cell():
    nb = {"cells": [
        {"cell_type": "code", "id": "a", "metadata": {}, "outputs": [], "execution_count": None,
         "source": ["import numpy as np\nfrom tdcourse import rotations as rot\nrun = 1\n"]},
        {"cell_type": "markdown", "id": "b", "metadata": {}, "source": ["```{exercise}\n:label: x-1\n\nWrite it.\n```"]},
        {"cell_type": "markdown", "id": "c", "metadata": {}, "source": ["```{solution-start} x-1\n:class: dropdown\n```"]},
        {"cell_type": "code", "id": "d", "metadata": {}, "outputs": [], "execution_count": None,
         "source": ['def my_f(a):\n    """Twice a."""\n    return 2 * a\n\n\nk = 3\nassert rot.check_f(my_f, k)\n'
                    "for r in [run]:\n    cut = my_f(r)\n    rot.check_cut(cut, r)\n"]},
        {"cell_type": "markdown", "id": "e", "metadata": {}, "source": ["```{solution-end}\n```"]},
    ]}
    out = tool.process(json.loads(json.dumps(nb)))
    cells = out["cells"]
    assert [c["id"] for c in cells] == ["a", "b", "yourturn-x-1", "c", "d", "e"]
    turn = tool._src(cells[2])
    assert 'def my_f(a):\n    """Twice a."""\n    ...' in turn
    assert turn.endswith("k = 3\nrot.check_f(my_f, k);")  # no assert: an unwritten answer must not stop the cell
    assert "check_cut" not in turn  # a loop over the solution's own result is the solution, not a check
    assert tool._src(cells[4]).startswith("# @title Solution\ndef my_f(a):")
    assert cells[4]["metadata"] == {"jupyter": {"source_hidden": True}, "cellView": "form"}
    assert tool.process(json.loads(json.dumps(out))) == out  # idempotent


def test_a_notebook_without_the_cells_fails_the_check(tmp_path, capsys):
    bare = tmp_path / "x.ipynb"
    nb = {"cells": [{"cell_type": "markdown", "id": "c", "metadata": {}, "source": ["```{solution-start} y\n```"]},
                    {"cell_type": "code", "id": "d", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": ["print(1)"]},
                    {"cell_type": "markdown", "id": "e", "metadata": {}, "source": ["```{solution-end}\n```"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    bare.write_text(tool.dump(nb))
    assert tool.main(["--check", str(bare)]) == 1
    assert tool.main([str(bare)]) == 0 and tool.main(["--check", str(bare)]) == 0


def test_a_template_inside_the_exercise_is_not_overwritten():
    """Chapter 7's build-it has the learner's template as a code cell inside
    {exercise-start} … {exercise-end}: the your-turn cell only checks it."""
    code = lambda i, src: {"cell_type": "code", "id": i, "metadata": {}, "outputs": [], "execution_count": None,
                           "source": [src]}
    md = lambda i, src: {"cell_type": "markdown", "id": i, "metadata": {}, "source": [src]}
    nb = {"cells": [
        code("a", "from tdcourse import perturb\n"),
        md("b", "```{exercise-start} Build it\n:label: x-build\n```\n\nWrite `my_g`."),
        code("c", "def my_g(x):\n    raise NotImplementedError\n"),
        md("d", "```{exercise-end}\n```"),
        md("e", "```{solution-start} x-build\n:class: dropdown\n```"),
        code("f", "def my_g(x):\n    return x\n"),
        md("g", "```{solution-end}\n```"),
        code("h", "assert perturb.check_g(my_g)\n"),
    ]}
    cells = tool.process(nb)["cells"]
    turn = tool._src(cells[4])
    assert tool.is_your_turn(cells[4]) and "in the exercise's cell above" in turn
    assert "def my_g" not in turn and turn.endswith("perturb.check_g(my_g);")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercise_templates_return_none_rather_than_raise(nb):
    """An exercise's template (a ```python block of its text, or a code cell inside
    {exercise-start} … {exercise-end}) has the body `...`: it returns None, which the checks print
    as "Not written yet" and `exercises.yours_or` stands in for, and the your-turn cell starts
    from it (a template that raises is replaced by the solution's signatures)."""
    import re

    cells = _cells(nb)
    inside = False
    for i, cell in enumerate(cells):
        src = tool._src(cell)
        if cell["cell_type"] == "markdown":
            inside = ("{exercise-start}" in src or inside) and "{exercise-end}" not in src
            blocks = re.findall(r"```python\n(.*?)```", src, flags=re.S) if "{exercise" in src else []
        else:
            blocks = [src] if inside else []
        for block in blocks:
            tree = tool._parse(block)
            for node in tree.body if tree else []:
                if isinstance(node, ast.FunctionDef):
                    assert not any(isinstance(n, ast.Raise) for n in ast.walk(node)), \
                        f"{nb.name} cell {i + 1}: the template {node.name} raises; give it the body `...`"
