"""The activation cache's entries: names, incomplete metadata, things in the way, temporaries,
concurrent writers, the per-process checksum memo, entries of the older SHA-256 format."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from tdcourse import capture as cap
from tdcourse import env
from tdcourse.capture import CacheError, read_activations, save_activations, site_names


def _meta(name="x", n=3):
    return {"format_version": cap.FORMAT_VERSION, "model": {"name": name, "source": name, "revision": None,
            "quant": "none", "dtype": "float32", "init": "trained", "seed": 0},
            "recipe": {"n": n}, "data_sha256": "d", "input_ids_sha256": "i", "sites": ["resid_pre", "resid_mid"],
            "position": "last"}


def _acts(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 4, 5)).astype(np.float32)


def _save(meta=None, acts=None):
    acts = _acts() if acts is None else acts
    return save_activations(acts, site_names(2), [f"t{i}" for i in range(len(acts))], meta or _meta(n=len(acts)))


@pytest.mark.parametrize("name", ["/" + "very-long-folder-name/" * 14 + "model", "-rf", "--help", "..",
                                  "a b/c:d*e?f", "ünïcode/名字"])
def test_entry_names_are_short_and_safe(name):
    path = _save(_meta(name))
    assert len(path.name) < 130 and not path.name.startswith(("-", "."))
    assert all(c.isalnum() and c.isascii() or c in "._-" for c in path.name)
    assert read_activations(path, expect_meta=_meta(name)).meta["model"]["name"] == name
    # distinct long names that share their ending still get distinct entries (the key)
    assert _save(_meta("other" + name)) != path


@pytest.mark.parametrize("drop", ["sites", "texts", "shape", "meta", "checksum", "meta.sites", "meta.recipe"])
def test_metadata_lacking_a_field_is_a_cache_error_with_the_rebuild_hint(drop):
    path = _save()
    record = json.loads((path / "meta.json").read_text())
    if drop.startswith("meta."):
        del record["meta"][drop[5:]]
    else:
        del record[drop]
    (path / "meta.json").write_text(json.dumps(record))
    with pytest.raises(CacheError, match=rf"lacks .*{drop.split('.')[-1]}.*rebuild"):
        read_activations(path)


def test_an_entry_path_that_is_a_file_is_refused_then_replaced():
    meta = _meta()
    target = cap._entry_dir(meta)
    target.write_text("in the way")
    with pytest.raises(CacheError, match="not a folder.*rebuild"):
        read_activations(target)
    path = _save(meta)  # what --rebuild does
    assert path == target and path.is_dir()
    np.testing.assert_array_equal(read_activations(path).acts, _acts())


def test_cache_dir_that_is_a_file(tmp_path, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("x")
    monkeypatch.setenv("TDCOURSE_CACHE", str(f))
    with pytest.raises(env.CacheDirError, match="is a file, not a folder"):
        env.cache_dir()
    monkeypatch.setenv("TDCOURSE_CACHE", str(f / "below"))
    with pytest.raises(env.CacheDirError, match="a file is in the way"):
        env.cache_dir()
    rep = env.report()  # info still reports, and says what is wrong
    assert rep.cache_problem and "cache error" in str(rep)


def test_temporaries_live_in_the_cache_and_stale_ones_are_removed(monkeypatch):
    from tdcourse import store

    seen = []
    real_open = os.open

    def spy(file, *a, **k):  # the writer opens acts.npy inside its temporary folder
        if os.fspath(file).endswith("acts.npy"):
            seen.append(os.path.dirname(os.fspath(file)))
        return real_open(file, *a, **k)

    monkeypatch.setattr(store.os, "open", spy)
    path = _save()
    folder = path.parent
    assert os.path.dirname(seen[0]) == str(folder)  # same folder, so the rename never crosses devices
    # leftovers of killed saves: one of a dead process on this host, one too old, one alive (ours)
    dead = folder / f"{cap._TMP_PREFIX}{env._host()}-99999999-abc"
    old = folder / f"{cap._TMP_PREFIX}elsewhere-1-abc"
    alive = folder / cap._tmp_name()
    for p in (dead, old, alive):
        p.mkdir()
        (p / "acts.npy").write_bytes(b"x" * 100)
    past = time.time() - cap.STALE_TMP_S - 10
    os.utime(old, (past, past))
    _save(_meta(n=2), _acts(2))
    assert not dead.exists() and not old.exists() and alive.exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-") and p != alive]


def _writer(args):
    cache, seed, rounds = args
    os.environ["TDCOURSE_CACHE"] = cache
    for r in range(rounds):
        _save(acts=_acts(seed=seed))
    return seed


def _reader(args):
    cache, rounds = args
    os.environ["TDCOURSE_CACHE"] = cache
    path = cap._entry_dir(_meta())
    ok = 0
    for _ in range(rounds):
        act = read_activations(path)
        # always one writer's whole array, never a mix
        assert any(np.array_equal(act.acts, _acts(seed=s)) for s in range(4))
        ok += 1
    return ok


def test_concurrent_writers_of_one_key_all_succeed_and_readers_see_whole_entries():
    cache = os.environ["TDCOURSE_CACHE"]
    _save(acts=_acts(seed=0))
    ctx = mp.get_context("spawn")
    with ctx.Pool(6) as pool:
        w = pool.map_async(_writer, [(cache, s, 15) for s in range(4)])
        r = pool.map_async(_reader, [(cache, 40), (cache, 40)])
        assert sorted(w.get(timeout=300)) == [0, 1, 2, 3]
        assert r.get(timeout=300) == [40, 40]
    folder = cap.activations_dir()
    assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == [cap._entry_dir(_meta()).name]
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


def test_checksum_is_verified_once_per_process_but_a_changed_file_is_checked_again():
    path = _save()
    npy = path / "acts.npy"
    past = time.time() - 60
    os.utime(npy, (past, past))  # not "racy": old enough to be remembered
    cap._VERIFIED.clear()
    read_activations(path)
    assert len(cap._VERIFIED) == 1
    from tdcourse import store

    calls = []
    real = store._hasher
    cap_hasher = lambda algo: calls.append(algo) or real(algo)  # noqa: E731
    try:
        store._hasher = cap_hasher
        read_activations(path)
        assert calls == []  # remembered: no second hash
        raw = bytearray(npy.read_bytes())
        raw[-1] ^= 0xFF
        npy.write_bytes(bytes(raw))  # a new modification time: checked again, and caught
        with pytest.raises(CacheError, match="corrupt"):
            read_activations(path)
        assert calls
    finally:
        store._hasher = real


def test_a_rewritten_file_within_the_timestamp_granularity_is_still_caught():
    path = _save()
    read_activations(path)  # just written: too recent to be remembered
    raw = bytearray((path / "acts.npy").read_bytes())
    raw[-2] ^= 0x01
    (path / "acts.npy").write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="corrupt"):
        read_activations(path)


def test_entries_written_with_sha256_are_still_read():
    import hashlib

    path = _save()
    record = json.loads((path / "meta.json").read_text())
    del record["checksum"]
    record["sha256"] = hashlib.sha256((path / "acts.npy").read_bytes()).hexdigest()
    (path / "meta.json").write_text(json.dumps(record))
    np.testing.assert_array_equal(read_activations(path).acts, _acts())
    record["sha256"] = "0" * 64
    (path / "meta.json").write_text(json.dumps(record))
    cap._VERIFIED.clear()
    with pytest.raises(CacheError, match="corrupt"):
        read_activations(path)


def test_a_cached_entry_holding_nan_is_refused():
    path = _save()
    acts = _acts()
    acts[1, 2, 3] = np.nan
    np.save(path / "acts.npy", acts)  # as if a capture had written it before the NaN check
    record = json.loads((path / "meta.json").read_text())
    record["checksum"]["hex"] = cap._file_digest(path / "acts.npy", record["checksum"]["algorithm"])
    (path / "meta.json").write_text(json.dumps(record))
    with pytest.raises(CacheError, match=r"NaN or inf .*sample 1 at site 2 \(resid_pre.1\).*rebuild"):
        read_activations(path)
    with pytest.raises(ValueError, match="NaN or inf"):
        _save(acts=acts)  # and one is never written


def test_truncated_array_is_refused():
    path = _save()
    raw = (path / "acts.npy").read_bytes()
    (path / "acts.npy").write_bytes(raw[:-4])
    with pytest.raises(CacheError, match="truncated"):
        read_activations(path, verify=False)  # even without the checksum


def test_a_save_killed_midway_leaves_nothing_readable_and_its_leftover_is_cleaned(tmp_path):
    """SIGKILL while the array is being written: no entry (or a whole one) is there, and the
    next save removes the dead writer's temporary folder."""
    import signal
    import subprocess
    import sys

    cache = os.environ["TDCOURSE_CACHE"]
    code = ("import numpy as np, sys; sys.path.insert(0, sys.argv[1]); "
            "from test_cache_entries import _meta, save_activations, site_names; "
            "a = np.ones((400, 64, 2048), np.float32); "
            "save_activations(a, site_names(32), [''] * 400, _meta(n=400))")
    proc = subprocess.Popen([sys.executable, "-c", code, os.path.dirname(__file__)],
                            env={**os.environ, "TDCOURSE_CACHE": cache})
    folder = cap.activations_dir()
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.startswith(".tmp-") and (p / "acts.npy").exists() for p in folder.iterdir()):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    entry = cap._entry_dir(_meta(n=400))
    if entry.exists():  # the kill came after the rename: then the entry is whole
        assert read_activations(entry).acts.shape == (400, 64, 2048)
    else:
        with pytest.raises(CacheError):
            read_activations(entry)
        assert [p for p in folder.iterdir() if p.name.startswith(".tmp-")]  # the leftover ...
    _save()
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]  # ... is gone after the next save
