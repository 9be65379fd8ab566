"""The chapters' code fits the book's code box at a 1280 px window: every code-cell line at most
``[tool.ruff] line-length`` characters (74: the box shows 77 in the page column and 74 inside an
exercise's solution), and the cells are as ``ruff format`` lays them out. Volatile cells are marked
with the cell tag ``nbval-ignore-output``, not with the old ``# NBVAL_IGNORE_OUTPUT`` comment."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def line_limit() -> int:
    """``line-length`` of ``[tool.ruff]`` in pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.ruff]", 1)[1].split("\n[", 1)[0]
    return int(re.search(r"^line-length\s*=\s*(\d+)", section, flags=re.M).group(1))


def long_lines(nb: Path, limit: int) -> list[str]:
    """``"cell N, line M (K characters): …"`` for every code-cell line longer than ``limit``."""
    out = []
    for i, cell in enumerate(json.loads(nb.read_text())["cells"], 1):
        if cell["cell_type"] != "code":
            continue
        for j, line in enumerate("".join(cell["source"]).splitlines(), 1):
            if len(line) > limit:
                out.append(f"cell {i}, line {j} ({len(line)} characters): {line}")
    return out


def test_the_limit_fits_the_code_box():
    assert 70 <= line_limit() <= 77, "the book's code box shows 77 characters at 1280 px (74 in a solution)"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_cells_fit_the_code_box(nb):
    found = long_lines(nb, line_limit())
    assert not found, (f"{nb.name}: lines over {line_limit()} characters scroll sideways in the book; run "
                       "`ruff format notebooks/` and wrap long strings and comments by hand:\n  " + "\n  ".join(found))


def test_the_check_finds_a_long_line(tmp_path):
    nb = tmp_path / "x.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": ["y" * 200]},
                                        {"cell_type": "code", "source": ["x = 1\n", "z = '" + "w" * 80 + "'"]}]}))
    assert long_lines(nb, 74) == [f"cell 2, line 2 (86 characters): z = '{'w' * 80}'"]


def _ruff() -> str | None:
    found = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    return found if Path(found).exists() else None


def test_notebooks_are_ruff_formatted():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (it is in requirements.txt: pip install ruff)")
    out = subprocess.run([ruff, "format", "--check", "notebooks"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"run `ruff format notebooks/`:\n{out.stdout}{out.stderr}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_volatile_cells_use_the_cell_tag(nb):
    for i, cell in enumerate(json.loads(nb.read_text())["cells"], 1):
        assert "NBVAL_IGNORE_OUTPUT" not in "".join(cell["source"]), \
            f"{nb.name} cell {i}: use the cell tag nbval-ignore-output, not the comment"
