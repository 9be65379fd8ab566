"""A cache hit without torch or transformers (:mod:`tdcourse.lookup`), and never another entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tdcourse import env, lookup
from tdcourse.capture import load_activations

from test_cache_roundtrip import N, _tiny_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path):
    return str(_tiny_folder(tmp_path / "models" / "tiny-llama"))


def _fresh_python(code: str) -> dict:
    """Run ``code`` in a new Python (the test's cache), return the JSON it prints last."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_cpu_only_torch_is_told_from_its_version_file(tmp_path, monkeypatch):
    import importlib.util

    import torch

    assert env.torch_is_cpu_only() == (torch.version.cuda is None and torch.version.hip is None
                                       and getattr(torch.version, "xpu", None) is None)
    fake = tmp_path / "torch"
    fake.mkdir()
    real_find = importlib.util.find_spec

    def find(name, *a):
        if name == "torch":
            return importlib.util.spec_from_file_location("torch", fake / "__init__.py",
                                                          submodule_search_locations=[str(fake)])
        return real_find(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", find)
    body = "from typing import Optional\n__version__ = '2.5.1+cu124'\ncuda: Optional[str] = {}\nhip: Optional[str] = None\n"
    (fake / "version.py").write_text(body.format("'12.4'"))
    assert env.torch_is_cpu_only() is False  # a CUDA build: torch itself is asked
    (fake / "version.py").write_text(body.format("None"))
    assert env.torch_is_cpu_only() is True
    (fake / "version.py").write_text("something else entirely\n")
    assert env.torch_is_cpu_only() is False  # unfamiliar: torch is asked
    (fake / "version.py").unlink()
    assert env.torch_is_cpu_only() is False


def test_the_device_of_a_cpu_only_torch_needs_no_torch_import():
    if not env.torch_is_cpu_only() or sys.platform == "darwin":
        pytest.skip("a CUDA, ROCm or XPU build of torch, or macOS: torch is asked")
    got = _fresh_python("""
        import json, sys
        from tdcourse import env
        print(json.dumps([env.device(), "torch" in sys.modules]))
    """)
    assert got == ["cpu", False]


def test_a_second_load_in_a_new_process_imports_neither_torch_nor_transformers(folder):
    first = load_activations(folder, n=N, progress=False)
    code = f"""
        import json, sys
        import numpy as np
        from tdcourse.capture import load_activations
        a = load_activations({str(folder)!r}, n={N}, progress=False)
        print(json.dumps([sorted(m for m in ("torch", "transformers") if m in sys.modules),
                          str(a.path), float(np.asarray(a.acts, np.float64).sum())]))
    """
    imported, path, total = _fresh_python(code)
    assert imported == []
    assert path == str(first.path)
    assert total == float(np.asarray(first.acts, np.float64).sum())


def _record(folder, **kw):
    from dataclasses import replace

    from tdcourse.data import SampleRecipe, check_recipe

    recipe = check_recipe(replace(SampleRecipe(), n=N))
    key = lookup.request_key(str(folder), kw.get("quant", "auto"), None, kw.get("init", "trained"), 0, recipe,
                             "float32")
    return key, lookup._record_path(key)


def test_a_changed_model_file_takes_the_full_path_and_its_own_entry(folder, monkeypatch):
    first = load_activations(folder, n=N, progress=False)
    key, path = _record(folder)
    assert path.exists() and lookup.recall(key) == first.meta
    # New weights in the same folder: the record no longer answers, the full path names the new entry.
    from safetensors.numpy import load_file, save_file

    weights = Path(folder) / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("mlp.down_proj.weight"))
    tensors[name] = tensors[name] * 2
    save_file(tensors, weights, metadata={"format": "pt"})
    assert lookup.recall(_record(folder)[0]) is None
    second = load_activations(folder, n=N, progress=False)
    assert second.path != first.path and second.meta["model"]["revision"] != first.meta["model"]["revision"]
    assert not np.array_equal(np.asarray(second.acts), np.asarray(first.acts))


def test_a_record_that_names_another_capture_or_is_damaged_is_ignored(folder):
    trained = load_activations(folder, n=N, progress=False)
    control = load_activations(folder, n=N, init="random", progress=False)
    key, path = _record(folder)
    ckey, cpath = _record(folder, init="random")
    assert lookup.recall(ckey) == control.meta
    # The control's record made to answer the trained model's request: refused, the full path runs.
    record = json.loads(path.read_text())
    record["meta"] = control.meta
    path.write_text(json.dumps(record))
    assert lookup.recall(key) is None
    again = load_activations(folder, n=N, progress=False)
    assert again.path == trained.path and again.meta == trained.meta
    assert lookup.recall(key) == trained.meta  # written again by the full path
    path.write_text("{ not json")
    assert lookup.recall(key) is None
    assert load_activations(folder, n=N, progress=False).path == trained.path
    # A record for another key (a copied file) is not this request's.
    path.write_text(cpath.read_text())
    assert lookup.recall(key) is None


def test_a_record_whose_entry_is_gone_captures_again(folder):
    import shutil

    first = load_activations(folder, n=N, progress=False)
    shutil.rmtree(first.path)
    again = load_activations(folder, n=N, progress=False)
    assert again.path == first.path and again.path.is_dir()
    np.testing.assert_array_equal(np.asarray(again.acts), np.asarray(first.acts))


def test_hub_models_and_splits_read_from_the_hub_have_no_record():
    from tdcourse.data import SampleRecipe

    assert lookup.request_key("meta-llama/Llama-3.1-8B", "none", None, "trained", 0, SampleRecipe(n=4),
                              "float32") is None
    assert lookup.request_key("smollm2-135m", "none", None, "trained", 0, SampleRecipe(n=4, split="train"),
                              "float32") is None


def test_a_read_only_cache_still_loads(folder, monkeypatch):
    first = load_activations(folder, n=N, progress=False)
    key, path = _record(folder)
    path.unlink()
    monkeypatch.setattr(lookup.os, "replace", lambda *a: (_ for _ in ()).throw(PermissionError("read-only")))
    again = load_activations(folder, n=N, progress=False)
    assert again.path == first.path and not path.exists()
    assert not [p for p in lookup.lookup_dir().iterdir() if p.name != path.name]  # no temporary left behind
