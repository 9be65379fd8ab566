"""The store of issue 22: a capture written along the sample axis as it goes, checksummed on
the way, read memory-mapped; half-precision stores read back as float32; blocks of samples;
entries of the earlier layout (one acts.npy written whole) still read."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from tdcourse import capture as cap
from tdcourse import store
from tdcourse.capture import CacheError, read_activations, save_activations, site_names
from tdcourse.store import EntryWriter, HalfStoreArray, entry_meta, from_store, to_store


def _meta(name="x", n=3, dtype="float32", **extra):
    return {"format_version": cap.FORMAT_VERSION, "model": {"name": name, "source": name, "revision": None,
            "quant": "none", "dtype": dtype, "init": "trained", "seed": 0},
            "recipe": {"n": n}, "data_sha256": "d", "input_ids_sha256": "i", "sites": ["resid_pre", "resid_mid"],
            "position": "last", **extra}


def _acts(n=7, sites=4, d=5, seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(size=(n, sites, d)) * scale).astype(np.float32)


def _write(acts, meta=None, store_dtype="float32", step=3, exact=False, info=None):
    meta = meta or _meta(n=len(acts), **({"store_dtype": store_dtype} if store_dtype != "float32" else {}))
    with EntryWriter(meta, acts.shape, site_names(acts.shape[1] // 2), [f"t{i}" for i in range(len(acts))],
                     store_dtype=store_dtype, exact=exact, info=info) as w:
        for start in range(0, len(acts), step):
            w[start : start + step] = acts[start : start + step]
        return w.commit()


def test_a_streamed_entry_equals_the_array_and_its_checksum_is_the_files():
    acts = _acts()
    path = _write(acts, info={"engine": "hooks"})
    record = json.loads((path / "meta.json").read_text())
    # the checksum streamed while writing is the checksum of the file as written
    assert record["checksum"]["hex"] == store._file_digest(path / "acts.npy", record["checksum"]["algorithm"])
    # a plain .npy: numpy itself reads it
    np.testing.assert_array_equal(np.load(path / "acts.npy"), acts)
    run = read_activations(path)
    np.testing.assert_array_equal(run.acts, acts)
    assert run.info["capture"] == {"engine": "hooks"} and run.info["store"]["dtype"] == "float32"
    assert run.engine == "hooks"


def test_read_is_a_read_only_memory_map():
    path = _write(_acts())
    run = read_activations(path)
    assert type(run.acts) is np.ndarray and isinstance(run.acts.base, np.memmap)
    assert not run.acts.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        run.acts[0, 0, 0] = 1.0


def test_entries_of_the_earlier_layout_still_read():
    """An entry written whole by np.save, without "store" / "capture" in its record (every entry
    in the caches of earlier tdcourse versions)."""
    acts = _acts()
    path = _write(acts)
    record = json.loads((path / "meta.json").read_text())
    del record["store"], record["capture"]
    (path / "acts.npy").unlink()
    np.save(path / "acts.npy", acts)
    record["checksum"]["hex"] = store._file_digest(path / "acts.npy", record["checksum"]["algorithm"])
    (path / "meta.json").write_text(json.dumps(record))
    cap._VERIFIED.clear()
    run = read_activations(path)
    np.testing.assert_array_equal(run.acts, acts)
    assert run.engine == "unknown" and run.info["store"]["dtype"] == "float32"


def test_samples_must_come_in_order_and_all_of_them():
    acts = _acts()
    with EntryWriter(_meta(n=7), acts.shape, site_names(2), [""] * 7) as w:
        with pytest.raises(ValueError, match="in order: the next is 0, got 3"):
            w[3:6] = acts[3:6]
        w[0:3] = acts[:3]
        with pytest.raises(ValueError, match=r"shape \(b, 4, 5\)"):
            w.write(acts[3:5, :2])
        with pytest.raises(ValueError, match="only 3 of 7"):
            w.commit()
        tmp = w.tmp
    assert not tmp.exists()  # the with block removed the temporary folder
    assert not cap._entry_dir(_meta(n=7)).exists()


def test_an_error_inside_the_capture_leaves_no_entry_and_no_temporary():
    acts = _acts()
    folder = cap.activations_dir()
    with pytest.raises(RuntimeError, match="boom"):
        with EntryWriter(_meta(n=7), acts.shape, site_names(2), [""] * 7) as w:
            w.write(acts[:3])
            raise RuntimeError("boom")
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    assert not cap._entry_dir(_meta(n=7)).exists()


def test_a_full_disk_is_found_when_the_file_is_allocated(monkeypatch):
    import errno

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "posix_fallocate", full)
    with pytest.raises(CacheError, match="No space left.*GiB"):
        EntryWriter(_meta(n=7), (7, 4, 5), site_names(2), [""] * 7)
    assert not [p for p in cap.activations_dir().iterdir() if p.name.startswith(".tmp-")]


def test_bfloat16_rounding_is_torchs_and_reads_back_exactly():
    x = _acts(n=50, scale=100.0)
    x[0, 0, :3] = [1e-40, -0.0, 3.4e38]  # a subnormal, a signed zero, near the top of the range
    raw = to_store(x, "bfloat16")
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(raw, want)
    np.testing.assert_array_equal(from_store(raw, "bfloat16"), torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(from_store(to_store(x, "float16"), "float16"),
                                      x.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("store_dtype", ["float16", "bfloat16"])
def test_a_half_store_is_read_as_float32_never_as_16_bits(store_dtype):
    acts = _acts(n=9)
    path = _write(acts, store_dtype=store_dtype)
    assert (path / "acts.npy").stat().st_size - 128 == acts.nbytes // 2  # half the bytes, after the 128-byte header
    run = read_activations(path)
    assert isinstance(run.acts, HalfStoreArray)
    assert run.acts.dtype == np.float32 and run.acts.shape == acts.shape and len(run.acts) == 9
    want = from_store(to_store(acts, store_dtype), store_dtype)
    np.testing.assert_array_equal(np.asarray(run.acts), want)
    assert np.asarray(run.acts).dtype == np.float32
    np.testing.assert_array_equal(run.acts[:, 3], want[:, 3])
    np.testing.assert_array_equal(run.site("resid_mid", 1), want[:, 3])
    assert run.acts[2:4].dtype == np.float32
    np.testing.assert_array_equal(run.acts.mean(axis=0), want.mean(axis=0))  # other ndarray methods: float32
    np.testing.assert_array_equal(np.mean(run.acts, axis=0), want.mean(axis=0))
    assert run.acts.reshape(9, -1).dtype == np.float32
    np.testing.assert_allclose(want, acts, rtol=1e-2 if store_dtype == "bfloat16" else 1e-3)
    with pytest.raises(ValueError, match="read-only"):
        run.acts[0] = 0
    # every analysis enters through check_acts: it sees float32
    assert cap.check_acts(run.acts).dtype == np.float32
    np.testing.assert_array_equal(np.concatenate(list(run.blocks(max_bytes=3 * 4 * 4 * 5))), want)


def test_float16_overflow_is_refused_with_the_way_out():
    acts = _acts()
    acts[4, 1, 2] = 1e5  # beyond float16's 65504
    with pytest.raises(ValueError, match=r"sample 4 holds NaN or inf in the float16 store .*bfloat16 or float32"):
        _write(acts, store_dtype="float16")
    assert not cap._entry_dir(_meta(n=7, store_dtype="float16")).exists()


def test_an_exact_half_store_refuses_values_it_would_round():
    """A half store keyed as exact (the model computed in that dtype) must really be exact."""
    acts = torch.from_numpy(_acts()).to(torch.bfloat16).float().numpy()
    path = _write(acts, meta=_meta(n=7, dtype="bfloat16"), store_dtype="bfloat16", exact=True)
    np.testing.assert_array_equal(np.asarray(read_activations(path).acts), acts)
    with pytest.raises(ValueError, match="not exactly representable in bfloat16"):
        _write(_acts() + np.float32(1e-3), meta=_meta(n=7, dtype="bfloat16"), store_dtype="bfloat16", exact=True)


def test_the_store_dtype_is_in_the_key_only_when_it_rounds():
    from tdcourse.data import SampleRecipe
    from tdcourse.models import ModelSpec

    f32 = ModelSpec("m", "m", None, "none", "float32", "trained", 0)
    bf16 = ModelSpec("m", "m", None, "none", "bfloat16", "trained", 0)
    r = SampleRecipe(n=3)
    assert entry_meta(f32, r, "d", "i") == entry_meta(f32, r, "d", "i", store_dtype="float32")
    assert "store_dtype" not in entry_meta(f32, r, "d", "i")  # keys of earlier entries unchanged
    assert entry_meta(f32, r, "d", "i", store_dtype="bfloat16")["store_dtype"] == "bfloat16"  # rounds: keyed
    assert entry_meta(f32, r, "d", "i", store_dtype="float16") != entry_meta(f32, r, "d", "i", store_dtype="bfloat16")
    assert entry_meta(bf16, r, "d", "i", store_dtype="bfloat16") == entry_meta(bf16, r, "d", "i")  # exact: same key
    with pytest.raises(ValueError, match="store_dtype must be one of"):
        entry_meta(f32, r, "d", "i", store_dtype="int8")


def test_a_rounded_store_is_never_served_for_the_float32_capture(monkeypatch):
    """find_entries (the fallback when the model cannot be read) skips lossy stores unless asked."""
    from tdcourse.data import SampleRecipe

    monkeypatch.setattr(store, "_data_digest", lambda recipe: "d")
    acts = _acts(n=3)
    base = _meta(n=3)
    base["recipe"] = SampleRecipe(n=3).to_dict()
    _write(acts, meta={**base, "store_dtype": "bfloat16"}, store_dtype="bfloat16")
    assert store.find_entries("x", SampleRecipe(n=3)) == []
    assert len(store.find_entries("x", SampleRecipe(n=3), store_dtype="bfloat16")) == 1
    _write(acts, meta=base)
    assert len(store.find_entries("x", SampleRecipe(n=3))) == 1
    assert len(store.find_entries("x", SampleRecipe(n=3), store_dtype="bfloat16")) == 2  # exact ones too


def test_blocks_cover_every_sample_once_in_order_within_the_budget():
    acts = _acts(n=23, sites=6, d=8)
    run = read_activations(_write(acts, step=5))
    per = 4 * 6 * 8
    blocks = list(run.blocks(max_bytes=5 * per))
    assert [len(b) for b in blocks] == [5, 5, 5, 5, 3] and all(b.dtype == np.float32 for b in blocks)
    assert all(b.flags.writeable and not isinstance(b.base, np.memmap) for b in blocks)  # copies, not views
    np.testing.assert_array_equal(np.concatenate(blocks), acts)
    assert [len(b) for b in run.blocks(max_bytes=1)] == [1] * 23  # at least one sample per block
    inmem = cap.Activations(acts=acts, sites=run.sites, texts=run.texts)
    np.testing.assert_array_equal(np.concatenate(list(inmem.blocks(max_bytes=7 * per))), acts)
    with pytest.raises(ValueError, match="max_bytes must be"):
        list(run.blocks(max_bytes=0))


def test_a_file_truncated_after_it_was_verified_fails_loudly_in_blocks():
    path = _write(_acts(n=8))
    run = read_activations(path)
    raw = (path / "acts.npy").read_bytes()
    os.truncate(path / "acts.npy", len(raw) - 100)
    with pytest.raises(OSError, match="truncated"):
        list(run.blocks())


def test_save_activations_goes_through_the_writer_and_refuses_nan():
    acts = _acts()
    path = save_activations(acts, site_names(2), [""] * 7, _meta(n=7))
    np.testing.assert_array_equal(read_activations(path).acts, acts)
    bad = acts.copy()
    bad[2, 1, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        save_activations(bad, site_names(2), [""] * 7, _meta(n=7))


def test_a_nan_in_a_half_store_on_disk_is_named_like_in_float32():
    acts = _acts()
    path = _write(acts, store_dtype="bfloat16")
    raw = bytearray((path / "acts.npy").read_bytes())
    offset = len(raw) - acts.size * 2
    i = offset + 2 * (5 * 4 * 5 + 2 * 5 + 1)  # sample 5, site 2, unit 1
    raw[i : i + 2] = np.array([0x7FC0], dtype="<u2").tobytes()  # a bfloat16 NaN
    (path / "acts.npy").write_bytes(bytes(raw))
    record = json.loads((path / "meta.json").read_text())
    record["checksum"]["hex"] = store._file_digest(path / "acts.npy", record["checksum"]["algorithm"])
    (path / "meta.json").write_text(json.dumps(record))
    cap._VERIFIED.clear()
    with pytest.raises(CacheError, match=r"NaN or inf .*sample 5 at site 2 \(resid_pre.1\)"):
        read_activations(path)


def test_a_record_naming_an_unknown_store_dtype_is_refused():
    path = _write(_acts())
    record = json.loads((path / "meta.json").read_text())
    record["store"]["dtype"] = "int4"
    (path / "meta.json").write_text(json.dumps(record))
    with pytest.raises(CacheError, match="store dtype 'int4'"):
        read_activations(path)


def test_export_and_import_carry_a_half_store(tmp_path, monkeypatch):
    from tdcourse.data import SampleRecipe
    from tdcourse.exchange import export_activations, import_activations

    monkeypatch.setattr(store, "_data_digest", lambda recipe: "d")
    acts = _acts(n=3)
    meta = _meta(n=3, store_dtype="float16")
    meta["recipe"] = SampleRecipe(n=3).to_dict()
    path = _write(acts, meta=meta, store_dtype="float16")
    out = tmp_path / "x.tar"
    export_activations("x", 3, out, control=False)
    want = np.asarray(read_activations(path).acts)
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path / "other"))
    (got,) = import_activations(out)
    run = read_activations(got)
    assert run.info["store"]["dtype"] == "float16"
    np.testing.assert_array_equal(np.asarray(run.acts), want)
