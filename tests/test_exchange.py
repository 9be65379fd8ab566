"""Import of an export file: all or nothing, never a result of another capture, never a silent
replacement, and one clear error for every malformed archive (issue 19)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest

from tdcourse import exchange, store
from tdcourse.capture import CacheError, load_activations, read_activations, save_activations, site_names
from tdcourse.store import result_path, save_result

ROOT = exchange._EXPORT_ROOT


def _meta(name="x", n=3):
    return {"format_version": store.FORMAT_VERSION, "model": {"name": name, "source": name, "revision": None,
            "quant": "none", "dtype": "float32", "init": "trained", "seed": 0},
            "recipe": {"n": n}, "data_sha256": "d", "input_ids_sha256": "i", "sites": ["resid_pre", "resid_mid"],
            "position": "last"}


def _acts(seed=0, n=3):
    return np.random.default_rng(seed).normal(size=(n, 4, 5)).astype(np.float32)


def _export_tar(tmp_path, entries, results=(), edit=None, name="export.tar"):
    """An export file written by hand from cache entries (as export_activations writes it), with
    ``edit(manifest, files)`` to damage it: ``files`` maps member names to bytes."""
    files, manifest = {}, {"format": exchange.EXPORT_FORMAT, "version": exchange.EXPORT_VERSION, "model": "x",
                           "n": 3, "entries": [], "results": []}
    for path in entries:
        meta = (path / "meta.json").read_bytes()
        files[f"{ROOT}/{path.name}/meta.json"] = meta
        files[f"{ROOT}/{path.name}/acts.npy"] = (path / "acts.npy").read_bytes()
        manifest["entries"].append({"name": path.name, "meta_sha256": hashlib.sha256(meta).hexdigest(),
                                    "acts_bytes": len(files[f"{ROOT}/{path.name}/acts.npy"])})
    for p in results:
        blob = p.read_bytes()
        files[f"{ROOT}/results/{p.name}"] = blob
        manifest["results"].append({"name": p.name, "sha256": hashlib.sha256(blob).hexdigest()})
    if edit:
        edit(manifest, files)
    out = tmp_path / name
    with tarfile.open(out, "w") as tar:
        for member, blob in [(f"{ROOT}/MANIFEST.json", json.dumps(manifest).encode()), *files.items()]:
            info = tarfile.TarInfo(member)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return out


@pytest.fixture
def source(tmp_path, monkeypatch):
    """Two entries and a kept result in a 'GPU' cache, exported; then a fresh 'laptop' cache."""
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path / "gpu"))
    a = save_activations(_acts(0), site_names(2), ["a", "b", "c"], _meta("a"))
    b = save_activations(_acts(1), site_names(2), ["a", "b", "c"], _meta("b"))
    r = save_result(_meta("a"), "teleport", {"x": np.arange(3)}, {"k": 1})
    other = save_result(_meta("zzz"), "teleport", {"x": np.arange(4)}, {"k": 2})  # of no exported entry
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path / "laptop"))
    return {"entries": [a, b], "result": r, "other": other, "tmp": tmp_path}


def _nothing_installed(tmp_path):
    cache = tmp_path / "laptop"
    acts = [p for p in (cache / "activations").iterdir() if not p.name.startswith(".")] if (cache / "activations").exists() else []
    res = list((cache / "results").iterdir()) if (cache / "results").exists() else []
    tmps = [p for d in ("activations", "results") if (cache / d).exists() for p in (cache / d).iterdir()
            if p.name.startswith(".tmp")]
    return not acts and not [p for p in res if not p.name.startswith(".")] and not tmps


def test_a_whole_export_installs(source):
    out = _export_tar(source["tmp"], source["entries"], [source["result"]])
    installed = exchange.import_activations(out)
    assert [p.name for p in installed] == [e.name for e in source["entries"]] + [source["result"].name]
    np.testing.assert_array_equal(read_activations(installed[0]).acts, _acts(0))
    assert store.load_result(_meta("a"), "teleport")[1] == {"k": 1}
    # importing it again changes nothing and needs no --replace
    assert exchange.import_activations(out) == installed


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize("damage, says", [
    ("truncated", "cannot be opened as an export|truncated or damaged|is truncated"),
    ("junk", "cannot be opened as an export"),
    ("recipe_n_null", r"malformed: meta.recipe.n must be a whole number >= 1, got None"),
    ("model_not_object", r"malformed: meta.model is not an object"),
    ("result_bad_name", "a result has an unexpected name"),
    ("result_of_no_entry", "belongs to no entry of this export"),
    ("result_checksum", r"results/.* does not match the manifest's checksum"),
    ("acts_flipped", "corrupt or truncated"),
    ("absurd_header", "header's shape .* needs .* bytes"),
    ("manifest_entries_not_list", "lists no entries"),
    ("manifest_entry_not_object", "malformed"),
    ("missing_acts", "acts.npy is missing"),
    ("second_entry_nan", "NaN or inf"),
])
def test_a_damaged_export_is_one_clear_error_and_installs_nothing(source, damage, says):
    entries, results = source["entries"], [source["result"]]
    first = entries[0].name

    def meta_edit(fn):
        def edit(manifest, files):
            key = f"{ROOT}/{entries[1].name}/meta.json"
            record = json.loads(files[key])
            fn(record["meta"])
            files[key] = json.dumps(record).encode()
            manifest["entries"][1]["meta_sha256"] = hashlib.sha256(files[key]).hexdigest()
        return edit

    def acts_edit(fn):
        def edit(manifest, files):
            key = f"{ROOT}/{entries[1].name}/acts.npy"
            files[key] = fn(files[key])
        return edit

    def absurd(blob: bytes) -> bytes:
        """The same file with a header that claims a shape of ~7e18 bytes (a MemoryError once)."""
        n = int.from_bytes(blob[8:10], "little")
        text = "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 9999, 9999), }"
        return blob[:10] + (text.ljust(n - 1) + "\n").encode() + blob[10 + n:]

    def nan_second(blob: bytes) -> bytes:
        arr = np.load(io.BytesIO(blob))
        arr[1, 2, 3] = np.nan
        buf = io.BytesIO()
        np.save(buf, arr)
        return buf.getvalue()

    edits = {
        "recipe_n_null": meta_edit(lambda m: m["recipe"].__setitem__("n", None)),
        "model_not_object": meta_edit(lambda m: m.__setitem__("model", "x")),
        "result_bad_name": lambda man, f: man["results"][0].__setitem__("name", "../../evil.npz"),
        "result_checksum": lambda man, f: man["results"][0].__setitem__("sha256", "0" * 64),
        "acts_flipped": acts_edit(lambda b: b[:-1] + bytes([b[-1] ^ 0xFF])),
        "absurd_header": acts_edit(absurd),
        "manifest_entries_not_list": lambda man, f: man.__setitem__("entries", {}),
        "manifest_entry_not_object": lambda man, f: man["entries"].append("x"),
        "missing_acts": lambda man, f: f.pop(f"{ROOT}/{entries[1].name}/acts.npy"),
    }
    if damage == "result_of_no_entry":
        results = [source["result"], source["other"]]
    out = _export_tar(source["tmp"], entries, results, edit=edits.get(damage))
    if damage == "truncated":
        out.write_bytes(_truncate(out.read_bytes()))
    elif damage == "junk":
        out.write_bytes(b"not a tar at all" * 10)
    elif damage == "second_entry_nan":
        # a re-checksummed NaN array: only the finite check can catch it
        def edit(manifest, files):
            key = f"{ROOT}/{entries[1].name}/acts.npy"
            files[key] = nan_second(files[key])
            meta_key = f"{ROOT}/{entries[1].name}/meta.json"
            record = json.loads(files[meta_key])
            h = store._hasher(record["checksum"]["algorithm"])
            h.update(files[key])
            record["checksum"]["hex"] = h.hexdigest()
            files[meta_key] = json.dumps(record).encode()
            manifest["entries"][1]["meta_sha256"] = hashlib.sha256(files[meta_key]).hexdigest()
        out = _export_tar(source["tmp"], entries, results, edit=edit)
    with pytest.raises(CacheError, match=says) as err:
        exchange.import_activations(out)
    assert "\n" not in str(err.value)
    assert _nothing_installed(source["tmp"]), f"{damage}: the first entry {first} or a temporary was installed"


def test_a_differing_entry_is_replaced_only_when_told(source, capsys):
    a = source["entries"][0]
    # the laptop already holds entry "a" with other values (captured elsewhere)
    mine = save_activations(_acts(7), site_names(2), ["a", "b", "c"], _meta("a"))
    assert mine.name == a.name
    out = _export_tar(source["tmp"], source["entries"], [source["result"]])
    with pytest.raises(CacheError, match=rf"would replace 1 cached file.*{a.name} \(other values.*--replace"):
        exchange.import_activations(out)
    np.testing.assert_array_equal(read_activations(mine).acts, _acts(7))  # untouched
    assert not result_path(_meta("a"), "teleport").exists() and not (mine.parent / source["entries"][1].name).exists()
    installed = exchange.import_activations(out, replace=True)
    assert f"Replaced {a.name}" in capsys.readouterr().out
    np.testing.assert_array_equal(read_activations(installed[0]).acts, _acts(0))
    # a kept result of the same name with other contents: refused the same way
    save_result(_meta("a"), "teleport", {"x": np.arange(9)}, {"k": 9})
    with pytest.raises(CacheError, match=r"results/.*teleport.npz \(other contents\)"):
        exchange.import_activations(out)
    with pytest.raises(ValueError, match="replace must be True or False"):
        exchange.import_activations(out, replace="yes")


def test_a_failed_install_puts_everything_back(source, monkeypatch):
    """A rename that fails midway (a full or vanished disk): what was installed is taken back."""
    import os

    keep = save_activations(_acts(7), site_names(2), ["a", "b", "c"], _meta("a"))
    out = _export_tar(source["tmp"], source["entries"], [source["result"]])
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 4:  # after the first entry (aside + in) and the second moved in
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(exchange.os, "replace", flaky)
    with pytest.raises(CacheError, match="nothing was installed"):
        exchange.import_activations(out, replace=True)
    monkeypatch.setattr(exchange.os, "replace", real)
    np.testing.assert_array_equal(read_activations(keep).acts, _acts(7))  # the replaced entry is back
    folder = keep.parent
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [keep.name]
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp")]


def test_a_real_export_with_a_kept_result_roundtrips(tmp_path, monkeypatch):
    """export_activations -> import_activations on a captured tiny model (the real writer)."""
    from test_cache_roundtrip import _tiny_folder

    folder = _tiny_folder(tmp_path / "m")
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path / "gpu"))
    act = load_activations(folder, n=4, progress=False)
    save_result(act.meta, "teleport", {"x": np.ones(2)}, {})
    out = tmp_path / "e.tar"
    exchange.export_activations(folder, 4, out, control=False)
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path / "laptop"))
    installed = exchange.import_activations(out)
    assert len(installed) == 2 and installed[1].name.endswith("-teleport.npz")
