"""tdcourse.memo: analysis results kept on disk, keyed by input content, arguments, code and versions."""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
import pytest

from tdcourse import continuity, geometry, information, lowdim, memo, rotations, stationarity, stats
from tdcourse.capture import Activations

CALLS: list[tuple] = []


@memo.cached
def toy(x: np.ndarray, n: int = 2, label: str = "") -> dict:
    """A stand-in analysis that counts its computations."""
    CALLS.append((x.shape, n, label))
    return {"total": float(np.asarray(x, dtype=np.float64).sum()) * n, "label": label, "rows": np.asarray(x)[:2]}


@pytest.fixture(autouse=True)
def _no_calls():
    CALLS.clear()


def _files() -> list:
    return sorted(p for p in memo.memo_dir().rglob("*") if p.is_file())


def _acts(seed: int = 0, shape=(12, 6, 5)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_a_second_call_reads_the_kept_result_and_equals_a_fresh_one():
    a = _acts()
    first = toy(a, 3)
    again = toy(a.copy(), 3)                         # another object, same content
    assert len(CALLS) == 1 and len(_files()) == 1
    assert again["total"] == first["total"] == toy.__wrapped__(a, 3)["total"]
    np.testing.assert_array_equal(again["rows"], a[:2])
    assert toy.__name__ == "toy" and "counts" in toy.__doc__       # name and docstring kept


def test_defaults_are_part_of_the_key_so_spelling_them_out_shares_the_result():
    a = _acts()
    toy(a)
    toy(a, n=2)
    toy(a, 2, "")
    assert len(CALLS) == 1


@pytest.mark.parametrize("change", ["value", "dtype", "shape", "argument", "label"])
def test_a_changed_input_or_argument_is_a_miss(change):
    a = _acts()
    toy(a, 2, "x")
    b = a.copy()
    if change == "value":
        b[5, 3, 1] = np.nextafter(b[5, 3, 1], np.float32(np.inf))     # one ulp of one element
        toy(b, 2, "x")
    elif change == "dtype":
        toy(a.astype(np.float64), 2, "x")
    elif change == "shape":
        toy(a.reshape(12, 5, 6), 2, "x")
    elif change == "argument":
        toy(a, 3, "x")
    else:
        toy(a, 2, "y")
    assert len(CALLS) == 2 and len(_files()) == 2


def test_a_changed_package_source_or_library_version_is_a_miss(monkeypatch):
    a = _acts()
    toy(a)
    monkeypatch.setattr(memo, "source_digest", lambda: "another version of the code")
    toy(a)
    assert len(CALLS) == 2
    monkeypatch.setattr(memo, "versions", lambda: (("numpy", "0.0"),))
    toy(a)
    assert len(CALLS) == 3


def test_the_source_digest_covers_every_module_of_the_package():
    from pathlib import Path

    import xxhash

    root = Path(memo.__file__).parent
    h = xxhash.xxh3_128()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    assert memo.source_digest() == h.hexdigest()
    assert {"python", "numpy", "scipy", "scikit-learn", "torch"} <= dict(memo.versions()).keys()


def test_strided_views_are_keyed_by_their_values():
    a = _acts(shape=(40, 8, 6))
    view = a[:, ::2, 1:]
    assert memo.key_of(toy, (view,)) == memo.key_of(toy, (np.ascontiguousarray(view),))
    assert memo.key_of(toy, (view,)) != memo.key_of(toy, (np.ascontiguousarray(a[:, 1::2, 1:]),))


def test_a_damaged_file_is_computed_again_with_a_message_and_replaced(capsys):
    a = _acts()
    want = toy(a)["total"]
    (path,) = _files()
    path.write_bytes(path.read_bytes()[:40])                       # truncated
    assert toy(a)["total"] == want and len(CALLS) == 2
    assert "cannot be read back" in capsys.readouterr().out
    assert toy(a)["total"] == want and len(CALLS) == 2               # the replacement is read


def test_a_file_holding_another_key_is_never_served(capsys):
    a, b = _acts(0), _acts(1)
    toy(a)
    toy(b)
    folder = memo.memo_dir() / f"{toy.__module__}.toy"
    pa, pb = (folder / f"{memo.key_of(toy, (x,))}.pkl" for x in (a, b))
    os.replace(pa, pb)                                              # b's file now holds a's result
    got = toy(b)["total"]
    assert len(CALLS) == 3                                          # computed again, not read
    assert got == toy.__wrapped__(b)["total"] != toy.__wrapped__(a)["total"]
    assert "another key" in capsys.readouterr().out


def test_a_failed_write_returns_the_result_and_leaves_no_temporary(monkeypatch, capsys):
    a = _acts()

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(memo.os, "replace", full_disk)
    assert toy(a)["total"] == toy.__wrapped__(a)["total"]
    assert "could not be kept" in capsys.readouterr().out
    assert _files() == []                                            # no .tmp-* left behind


def test_an_argument_that_cannot_be_keyed_is_computed_uncached():
    rng = np.random.default_rng(0)
    with pytest.raises(memo.Unkeyable):
        memo.key_of(toy, (_acts(), 2, rng))
    toy(_acts(), 2, rng)
    toy(_acts(), 2, rng)
    assert len(CALLS) == 2 and _files() == []


def test_activations_are_keyed_by_their_content():
    a = _acts(shape=(30, 8, 6))
    run = Activations(acts=a, sites=[f"s{i}" for i in range(8)], texts=["t"] * 30, meta={"model": {}})
    same = Activations(acts=a.copy(), sites=list(run.sites), texts=list(run.texts), meta={"model": {}})
    other = dataclasses.replace(run, texts=["u"] * 30)
    assert memo.key_of(toy, (run,)) == memo.key_of(toy, (same,))
    assert memo.key_of(toy, (run,)) != memo.key_of(toy, (other,))


def test_results_live_under_the_cache_folder_by_function(tmp_path):
    toy(_acts())
    (path,) = _files()
    assert path.parent.name == f"{toy.__module__}.toy"
    assert path.is_relative_to(tmp_path) and path.parent.parent.name == "memo"
    blob = pickle.loads(path.read_bytes())
    assert blob["format"] == memo.FORMAT and blob["function"] == f"{toy.__module__}.toy"


def _run(acts: np.ndarray, label: str = "toy") -> Activations:
    s = acts.shape[1]
    sites = [f"resid_{'pre' if i % 2 == 0 else 'mid'}.{i // 2}" for i in range(s)]
    return Activations(acts=acts, sites=sites, texts=[""] * len(acts), meta={})


def _same(a, b) -> None:
    """Equal results: dataclasses field by field, arrays exactly, NaN equal to NaN."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b)
        for f in dataclasses.fields(a):
            if f.compare:
                _same(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


def _walk(n=40, s=8, d=12, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal((n, s, d)), axis=1).astype(np.float32)


@pytest.mark.parametrize("name", ["stationarity", "continuity", "density", "trend", "mi", "rotations", "lowdim"])
def test_the_chapters_analyses_are_kept_and_equal_a_fresh_computation(name):
    """The costly analyses the chapters and the scoreboard share: the kept result (read back
    from disk) equals a fresh computation by the unwrapped function."""
    acts = _walk(n=information.MIN_SAMPLES if name == "mi" else 40)
    calls = {
        "stationarity": (stationarity.stationarity, (acts,), {"n_null": 2}),
        "continuity": (continuity.analyse, (acts,), {"n_boot": 10, "n_dirs": 6}),
        "density": (geometry.density_indices, (acts,), {}),
        "trend": (stats.curve_trend, (acts[:, :, 0],), {"n_boot": 50}),
        "mi": (information.mi_profile, (acts,), {"n_units": 4}),
        "rotations": (rotations.analyse, (acts,), {"label": "toy", "n_shuffles": 20, "n_samples": 10,
                                                   "n_shuffles_per_sample": 4, "n_shuffles_growth": 10}),
        "lowdim": (lowdim.analyse, (_run(acts),), {"n_boot": 20, "hidden": (8, 4), "epochs": 2}),
    }
    fn, args, kw = calls[name]
    assert hasattr(fn, "__wrapped__")
    first = fn(*args, **kw)
    n_files = len(_files())
    kept = fn(*args, **kw)
    assert len(_files()) == n_files >= 1
    assert kept is not first                                          # read back, not the same object
    _same(kept, fn.__wrapped__(*args, **kw))
