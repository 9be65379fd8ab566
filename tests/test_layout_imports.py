"""The library's layout: the capture split into engine, store and exchange (issue 22), each
importable on its own, no import circles (function-level imports count), and every name that
``tdcourse.capture`` exported before the split still importable from it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tdcourse"

#: ``tdcourse.capture.__all__`` before the split (commit b099720): notebooks and other modules
#: import these from ``tdcourse.capture``.
CAPTURE_ALL_BEFORE = [
    "FORMAT_VERSION", "SITE_KINDS", "Activations", "CacheError", "check_acts", "nonfinite_sites", "site_names",
    "site_index", "paper_site_name", "residual_hooks", "capture", "cache_key", "save_activations",
    "read_activations", "load_activations", "load_runs", "activations_dir", "results_dir", "result_path",
    "save_result", "load_result", "check_cache_room", "clean_stale_temporaries", "find_entries",
    "export_activations", "import_activations", "ModelAvailability", "model_available",
]

#: Modules of the capture / cache / setup layer: none may sit on an import circle.
OWNED = {"capture", "hooks", "nnsight_engine", "store", "exchange", "models", "data", "settings", "env", "standins",
         "__main__", "__init__"}


def _imports(path: Path) -> set[str]:
    """Every tdcourse module ``path`` imports, at any depth of the file (functions included)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:
                out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("tdcourse"):
                parts = node.module.split(".")
                out.add(parts[1] if len(parts) > 1 else "__init__")
                if len(parts) == 1:
                    out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "tdcourse" and len(parts) > 1:
                    out.add(parts[1])
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {m for m in out if m in modules and m != path.stem}


def _graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in PACKAGE.glob("*.py")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_through_the_capture_layer():
    bad = [c for c in _cycles(_graph()) if OWNED & set(c)]
    assert not bad, f"import circles: {bad}"


def test_engine_store_and_exchange_never_import_capture():
    graph = _graph()
    for mod in ("hooks", "nnsight_engine", "store", "exchange", "models", "data", "env", "settings"):
        assert "capture" not in graph[mod], mod
    assert "exchange" not in graph["store"] and "hooks" not in graph["store"]
    assert "store" not in graph["hooks"] and "exchange" not in graph["hooks"]
    # the two engines: nnsight's reuses the hooks' batching, never the other way round
    assert "nnsight_engine" not in graph["hooks"] and "store" not in graph["nnsight_engine"]


@pytest.mark.parametrize("module", ["hooks", "nnsight_engine", "store", "exchange", "models", "settings"])
def test_each_module_is_importable_on_its_own(module):
    code = (f"import sys, tdcourse.{module}; "
            "print(sorted(m for m in sys.modules if m.startswith('tdcourse')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = eval(out.stdout.strip().splitlines()[-1])
    assert f"tdcourse.{module}" in loaded and "tdcourse.capture" not in loaded, loaded


def test_nnsight_is_imported_only_when_its_engine_runs():
    """Importing nnsight changes the process (a .save on every object, a patched
    Tensor.backward): the library, its capture layer and the engine module import without it."""
    code = ("import sys, tdcourse, tdcourse.capture, tdcourse.nnsight_engine, tdcourse.__main__; "
            "print('nnsight' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_capture_still_exports_every_name_it_had():
    from tdcourse import capture, exchange, hooks, store

    assert set(CAPTURE_ALL_BEFORE) <= set(capture.__all__)
    for name in CAPTURE_ALL_BEFORE:
        assert hasattr(capture, name), name
    # the same objects, not copies
    assert capture.CacheError is store.CacheError and capture.find_entries is store.find_entries
    assert capture.capture is hooks.capture and capture.residual_hooks is hooks.residual_hooks
    assert capture.import_activations is exchange.import_activations
    assert capture._VERIFIED is store._VERIFIED and capture._layer_input is hooks._layer_input


def test_the_package_exports_resolve():
    import tdcourse

    for name in tdcourse.__all__:
        assert getattr(tdcourse, name) is not None, name
    with pytest.raises(AttributeError):
        tdcourse.no_such_name  # noqa: B018
