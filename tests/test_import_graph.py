"""No import circles inside tdcourse (the project rule), counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import tdcourse

PKG = Path(tdcourse.__file__).parent


def _graph(root: Path) -> dict[str, set[str]]:
    mods = {p.stem for p in root.glob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m in mods:
        for node in ast.walk(ast.parse((root / f"{m}.py").read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                elif node.module and node.module.startswith("tdcourse."):
                    names = [node.module.split(".")[1]]
                elif node.module == "tdcourse":
                    names = [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names if a.name.startswith("tdcourse.")]
            edges[m] |= {n for n in names if n in mods and n != m}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert _cycles(_graph(PKG)) == []


def test_the_check_finds_a_circle(tmp_path):
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from . import a\n")
    (tmp_path / "c.py").write_text("from tdcourse.a import y\n")
    assert _cycles(_graph(tmp_path)) == [["a", "b"]]


def test_robustness_and_scoreboard_share_the_registry():
    from tdcourse import registry, robustness, scoreboard

    edges = _graph(PKG)
    assert "scoreboard" not in edges["robustness"] and "registry" in edges["robustness"]
    assert edges["registry"] == set()
    assert scoreboard.CHAPTERS is registry.CHAPTERS and robustness.READINGS is registry.READINGS
