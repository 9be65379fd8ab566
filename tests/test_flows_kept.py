"""Chapter 7's teleport results are kept beside the capture, travel with an export, and let a
machine without the model (an offline laptop with an instructor's captures) run the chapter."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_cache_roundtrip import N, _tiny_folder

from tdcourse import capture as cap
from tdcourse import perturb
from tdcourse.capture import CacheError, load_runs
from tdcourse.models import ModelLoadError


def _same(a, b):
    for k in perturb._FLOW_ARRAYS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    for p, q in zip(a.planes, b.planes):
        np.testing.assert_array_equal(p.components, q.components)
    assert (a.layers, a.paper_layers, a.top1, a.label, a.mode) == (b.layers, b.paper_layers, b.top1, b.label, b.mode)


def test_kept_flows_are_reused_exported_and_read_without_the_model(tmp_path, monkeypatch):
    folder = _tiny_folder(tmp_path / "models" / "tiny-llama")
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path / "gpu-cache"))
    trained, control = load_runs(folder, n=N, progress=False)
    first = perturb.flow_fields(trained, n_grid=3)
    kept = sorted(cap.results_dir().glob("*.npz"))
    assert len(kept) == 1 and kept[0].name.startswith(cap.cache_key(trained.meta))

    # the second call reads the kept result: no model is loaded
    def no_model(run):
        raise AssertionError("the model was loaded although a kept result exists")

    real_model_for = perturb.model_for
    monkeypatch.setattr(perturb, "model_for", no_model)
    _same(perturb.flow_fields(trained, n_grid=3), first)
    # other settings are another result: they would need the model
    with pytest.raises(AssertionError, match="model was loaded"):
        perturb.flow_fields(trained, n_grid=4)
    monkeypatch.setattr(perturb, "model_for", real_model_for)

    out = tmp_path / "workshop.tar"
    cap.export_activations(folder, N, out)
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path / "laptop-cache"))
    shutil.rmtree(folder)
    installed = cap.import_activations(out)
    assert any(p.parent.name == "results" for p in installed)
    t2, c2 = load_runs(folder, n=N, progress=False)
    _same(perturb.flow_fields(t2, n_grid=3), first)
    # the control's teleport was never run where the model was: a clear error saying what to do
    with pytest.raises(ModelLoadError, match="export"):
        perturb.flow_fields(c2, n_grid=3)


def test_a_damaged_kept_result_is_refused(tmp_path, monkeypatch):
    folder = _tiny_folder(tmp_path / "models" / "tiny-llama")
    trained = load_runs(folder, n=N, control=False, progress=False)[0]
    perturb.flow_fields(trained, n_grid=3)
    path = next(cap.results_dir().glob("*.npz"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="damaged"):
        perturb.flow_fields(trained, n_grid=3)
