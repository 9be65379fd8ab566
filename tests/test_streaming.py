"""Streamed statistics (issue 22, item 3): every sum over samples that chapter 2 computes, read in
blocks of samples and chunks of sites (a cached capture through its memory map, whose pages are
given back after each block), equals the in-memory statistic to float precision; so does the
memo key of a memory-mapped capture."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from tdcourse import capture as cap
from tdcourse import continuity as C
from tdcourse import memo, stats, streaming
from tdcourse.store import EntryWriter


def _stack(n: int, n_sites: int = 6, d: int = 5, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """A residual stack with offsets (centring matters) and a different write size per unit."""
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((n, n_sites, d)) * np.linspace(0.2, 1.5, d)
    return (rng.standard_normal((n, 1, d)) + steps.cumsum(1) + 40.0 * np.arange(d)).astype(dtype)


def _entry(acts: np.ndarray, tmp_path, monkeypatch, step: int = 4, whole_run: bool = False):
    """``acts`` written as a cache entry (as a capture writes it) and read back memory-mapped (the
    ``Activations`` with ``whole_run``)."""
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path))
    meta = {"format_version": cap.FORMAT_VERSION, "model": {"name": "t", "source": "t", "revision": None,
            "quant": "none", "dtype": "float32", "init": "trained", "seed": 0},
            "recipe": {"n": len(acts)}, "data_sha256": "d", "input_ids_sha256": "i",
            "sites": ["resid_pre", "resid_mid"], "position": "last"}
    with EntryWriter(meta, acts.shape, cap.site_names(acts.shape[1] // 2), [f"t{i}" for i in range(len(acts))]) as w:
        for start in range(0, len(acts), step):
            w[start : start + step] = acts[start : start + step]
        path = w.commit()
    run = cap.read_activations(path)
    return run if whole_run else run.acts


# --------------------------------------------------------------------------- references (float64, in memory)


def _ref_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


def _ref_adjacent(acts: np.ndarray, basis=None) -> np.ndarray:
    x = acts.astype(np.float64)
    if basis is not None:
        x = x @ basis
    return np.stack([_ref_corr(x[:, s], x[:, s + 1]) for s in range(x.shape[1] - 1)])


# Knobs of the streamed pass: (bytes of one sample block, bytes of the accumulators). Blocks of
# 1 sample, of 3 (never dividing the N below), one block larger than N; chunks of 1 site, of 2,
# of all sites.
KNOBS = [(1, 1), (8 * 3 * 3 * 5, 8 * 5 * (4 * 4 + 3) * 2), (1 << 30, 1 << 30), (8 * 3 * 7 * 5, 1)]


@pytest.fixture(params=KNOBS, ids=["1-sample-1-site", "3-samples-2-sites", "one-block", "3-samples-1-site"])
def knobs(request, monkeypatch):
    block, acc = request.param
    monkeypatch.setattr(C, "_BLOCK", block)
    monkeypatch.setattr(C, "_ACC", acc)
    monkeypatch.setattr(C, "_MIN_BLOCK_SAMPLES", 1)
    monkeypatch.setattr(C, "_BOOT_BYTES", {1: 1, 1 << 30: 1 << 30}.get(block, 3 * 8 * 7 * 6))  # 1, 3, all resamples
    monkeypatch.setattr(streaming, "BLOCK_BYTES", block)
    return request.param


@pytest.mark.parametrize("n", [2 * 3 + 5, 31])  # 11 < one block of 3 sites x 7 samples; 31 = 10 blocks + 1
def test_streamed_correlations_equal_the_in_memory_ones(knobs, n):
    acts = _stack(n, seed=n)
    q = C.random_rotation(5, 3, seed=1)
    for basis in (None, q):
        np.testing.assert_allclose(C.adjacent_corr(acts, basis=basis), _ref_adjacent(acts, basis), rtol=0, atol=1e-12)
    # bootstrap resamples as weights = the same resamples drawn as indices
    w = stats.bootstrap_weights(n, n_boot=4, seed=2)
    for basis in (None, q):
        boot = C.bootstrap_corr(acts, weights=w, basis=basis)
        for b in range(len(w)):
            idx = np.repeat(np.arange(n), np.round(w[b] * n).astype(int))
            np.testing.assert_allclose(boot[b], _ref_adjacent(acts[idx], basis), rtol=0, atol=1e-10)
    # the permutation null: the later site of each pair read at its own permutation of the samples
    null = C.permutation_null(acts, n_perm=2, seed=3)
    rng = np.random.default_rng(3)
    for p in range(2):
        rows = rng.permuted(np.broadcast_to(np.arange(n)[:, None], (n, acts.shape[1])), axis=0)
        want = np.stack([_ref_corr(acts[:, s], acts[rows[:, s + 1], s + 1]) for s in range(acts.shape[1] - 1)])
        np.testing.assert_allclose(null[p], want, rtol=0, atol=1e-12)
    # the basis-free trace moments: stream correlation and write ratio
    x = acts - acts.mean(0)
    var = (x * x).sum((0, 2)) / (n - 1)
    cov = (x[:, :-1] * x[:, 1:]).sum((0, 2)) / (n - 1)
    dx = np.diff(x, axis=1)
    np.testing.assert_allclose(C.stream_corr(acts), cov / np.sqrt(var[:-1] * var[1:]), rtol=1e-12)
    np.testing.assert_allclose(C.write_ratio(acts), np.sqrt((dx * dx).sum((0, 2)) / (n - 1) / var[:-1]), rtol=1e-12)


def test_site_means_in_blocks(knobs):
    for n in (1, 7, 31):
        acts = _stack(n, seed=n, dtype=np.float32)
        np.testing.assert_allclose(streaming.site_means(acts), acts.astype(np.float64).mean(0), rtol=1e-14, atol=1e-12)


def test_streamed_passes_leave_the_input_unchanged(knobs):
    for dtype in (np.float32, np.float64):
        acts = _stack(23, seed=4, dtype=dtype)
        before = acts.copy()
        C.analyse.__wrapped__(acts, n_boot=3, n_dirs=3)
        C.permutation_null(acts, n_perm=1)
        C.sample_ranks(acts)
        np.testing.assert_array_equal(acts, before)


def _fields_close(a, b, atol=1e-10):
    for f in dataclasses.fields(a):
        u, v = getattr(a, f.name), getattr(b, f.name)
        if isinstance(u, np.ndarray):
            np.testing.assert_allclose(u, v, rtol=0, atol=atol, err_msg=f.name)
        elif isinstance(u, stats.Interval):
            for part in ("estimate", "lo", "hi"):
                assert getattr(u, part) == pytest.approx(getattr(v, part), abs=atol), (f.name, part)
        elif isinstance(u, float):
            assert u == pytest.approx(v, rel=1e-9, abs=atol), f.name
        else:
            assert u == v, f.name


@pytest.mark.parametrize("n", [21, 40])  # the smallest run that carries a verdict, and a larger one
def test_analyse_streamed_equals_one_block(knobs, monkeypatch, n):
    """Chapter 2's whole analysis in blocks (knobs; the resamples in groups of 1, 3 or all) equals
    it computed in one block of samples, one chunk of sites and one group of resamples (what the
    in-memory code computed), on a float32 array."""
    acts = _stack(n, n_sites=8, d=6, seed=n, dtype=np.float32)
    got = C.analyse.__wrapped__(acts, n_boot=7, n_dirs=4, n_perm=2, seed=1)
    monkeypatch.setattr(C, "_BLOCK", 1 << 30)
    monkeypatch.setattr(C, "_ACC", 1 << 30)
    monkeypatch.setattr(C, "_BOOT_BYTES", 1 << 30)
    want = C.analyse.__wrapped__(acts, n_boot=7, n_dirs=4, n_perm=2, seed=1)
    _fields_close(got, want)
    np.testing.assert_allclose(got.r, _ref_adjacent(acts), atol=1e-10)


def test_analyse_spearman_streamed(knobs, monkeypatch):
    """Spearman: ranks are taken per chunk of sites over all samples; r and every interval equal
    the one-block computation (the per-unit depth trends can differ where two pairs' Spearman ρ
    are exactly equal, a tie that float rounding breaks one way or the other)."""
    acts = _stack(30, n_sites=8, d=6, seed=5, dtype=np.float32)
    got = C.analyse.__wrapped__(acts, n_boot=5, n_dirs=4, method="spearman")
    monkeypatch.setattr(C, "_BLOCK", 1 << 30)
    monkeypatch.setattr(C, "_ACC", 1 << 30)
    monkeypatch.setattr(C, "_BOOT_BYTES", 1 << 30)
    want = C.analyse.__wrapped__(acts, n_boot=5, n_dirs=4, method="spearman")
    for name in ("r", "r_rot", "null", "stream", "write", "diff"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), atol=1e-10, err_msg=name)
    ranks = C.sample_ranks(acts)
    np.testing.assert_allclose(got.r, _ref_adjacent(ranks), atol=1e-10)


def test_a_memory_mapped_capture_streams_to_the_same_results(knobs, tmp_path, monkeypatch):
    acts = _stack(33, n_sites=6, d=7, seed=6, dtype=np.float32)
    mapped = _entry(acts, tmp_path, monkeypatch)
    assert streaming.is_mapped(mapped) and not streaming.is_mapped(acts)
    got = C.analyse.__wrapped__(mapped, n_boot=6, n_dirs=5)
    want = C.analyse.__wrapped__(acts, n_boot=6, n_dirs=5)
    _fields_close(got, want, atol=0)  # the same bytes, the same blocks: bit for bit
    # the memo key hashes a mapped capture block by block: the same key as the array in memory
    assert memo.key_of(C.analyse.__wrapped__, (mapped,)) == memo.key_of(C.analyse.__wrapped__, (acts.copy(),))


def _rss_file_kib() -> int:
    """The process's resident pages of mapped files, KiB (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


def test_read_copies_and_gives_the_pages_back(tmp_path, monkeypatch):
    acts = _stack(64, n_sites=8, d=1024, seed=7, dtype=np.float32)  # 2 MiB
    mapped = _entry(acts, tmp_path, monkeypatch, step=64)
    part = streaming.read(mapped, np.s_[10:20, 2:5])
    np.testing.assert_array_equal(part, acts[10:20, 2:5])
    assert part.flags.owndata and not streaming.is_mapped(part)
    got = streaming.read(acts, np.s_[3:5], np.float64)
    got += 1  # a read with a dtype is the caller's to modify
    np.testing.assert_array_equal(acts, _stack(64, n_sites=8, d=1024, seed=7, dtype=np.float32))
    if sys.platform.startswith("linux"):
        streaming.release(mapped)
        before = _rss_file_kib()
        float(np.asarray(mapped).sum())  # every page of the map, read through it
        assert _rss_file_kib() - before > 1024  # KiB: the 2 MiB became resident
        streaming.release(mapped)
        assert _rss_file_kib() - before < 512  # ... and are given back
    streaming.release(acts)  # an array in memory: nothing to give back, no error


@pytest.mark.parametrize("store_dtype", ["float16", "bfloat16"])
def test_a_half_store_is_checked_and_streamed_without_upcasting_it_whole(tmp_path, monkeypatch, store_dtype):
    """check_acts and chapter 2's analysis take a half store as it is (read block by block as
    float32): the same results as on its float32 upcast, and no NaN check through np.asarray."""
    from tdcourse.store import HalfStoreArray

    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path))
    acts = _stack(25, n_sites=4, d=6, seed=8, dtype=np.float32)
    meta = {"format_version": cap.FORMAT_VERSION, "model": {"name": "t", "source": "t", "revision": None,
            "quant": "none", "dtype": "float32", "init": "trained", "seed": 0},
            "recipe": {"n": len(acts)}, "data_sha256": "d", "input_ids_sha256": "i", "store_dtype": store_dtype,
            "sites": ["resid_pre", "resid_mid"], "position": "last"}
    with EntryWriter(meta, acts.shape, cap.site_names(2), [f"t{i}" for i in range(len(acts))],
                     store_dtype=store_dtype) as w:
        w[:] = acts
        path = w.commit()
    half = cap.read_activations(path).acts
    assert isinstance(half, HalfStoreArray)
    monkeypatch.setattr(HalfStoreArray, "__array__", lambda *a, **k: pytest.fail("upcast whole"))
    assert cap.check_acts(half) is half
    got = C.analyse.__wrapped__(half, n_boot=4, n_dirs=3)
    monkeypatch.undo()
    _fields_close(got, C.analyse.__wrapped__(np.asarray(half), n_boot=4, n_dirs=3), atol=0)


def test_pooled_standardize_streamed_is_bit_for_bit(monkeypatch):
    """Chapter 6's pooled z-scores, mean and variance streamed over blocks of 1, 3 (not dividing
    the 17 fitting samples) or all samples: equal to float64 rounding (the deviations in the
    stored precision, as before, summed in float64)."""
    from tdcourse import lowdim

    acts = (_stack(50, n_sites=6, d=9, seed=9) * np.arange(1, 10)).astype(np.float32)
    idx = np.arange(0, 50, 3)
    want = None
    for block in (1 << 30, 3 * 3 * 8 * 6 * 9, 1):
        monkeypatch.setattr(streaming, "BLOCK_BYTES", block)
        got = lowdim.pooled_standardize(acts, fit_idx=idx)
        if want is None:
            rows = acts[idx].reshape(-1, 9)
            mean = rows.astype(np.float64).mean(0)
            var = np.mean((rows - mean.astype(np.float32)) ** 2, axis=0, dtype=np.float64)
            np.testing.assert_allclose(got[1], mean, rtol=1e-13)
            np.testing.assert_allclose(got[2], np.sqrt(var), rtol=1e-12)
            want = got
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)  # float32 z
        np.testing.assert_allclose(got[1], want[1], rtol=1e-13)
        np.testing.assert_allclose(got[2], want[2], rtol=1e-13)


@pytest.mark.parametrize("store_dtype", ["float32", "float16", "bfloat16"])
def test_plain_file_reads_equal_the_map(tmp_path, monkeypatch, store_dtype):
    """streaming.read reads a mapped capture with plain file reads (the page cache, not the
    process's resident memory) for the indexes the statistics use, on views of it too: every
    one equals indexing the array; other indexes go through the map."""
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path))
    acts = _stack(13, n_sites=6, d=5, seed=10, dtype=np.float32)
    meta = {"format_version": cap.FORMAT_VERSION, "model": {"name": "t", "source": "t", "revision": None,
            "quant": "none", "dtype": "float32", "init": "trained", "seed": 0},
            "recipe": {"n": 13}, "data_sha256": "d", "input_ids_sha256": "i",
            "sites": ["resid_pre", "resid_mid"], "position": "last",
            **({"store_dtype": store_dtype} if store_dtype != "float32" else {})}
    with EntryWriter(meta, acts.shape, cap.site_names(3), [f"t{i}" for i in range(13)], store_dtype=store_dtype) as w:
        w[:] = acts
        path = w.commit()
    mapped = cap.read_activations(path).acts
    want = np.asarray(mapped)  # float32 (a half store upcast)
    rows = np.random.default_rng(0).permuted(np.broadcast_to(np.arange(13)[:, None], (13, 6)), axis=0)
    order = np.random.default_rng(1).permuted(np.broadcast_to(np.arange(6), (13, 6)), axis=1)  # sites per sample
    keys = [np.s_[2:9], np.s_[2:9, 1:4], np.s_[:, 3], np.s_[-4:], np.array([5, 0, 12, 5]),
            (np.array([5, 0, 12]), slice(2, 6)), (rows[3:8, 1:4], np.arange(1, 4)[None, :]),
            (np.arange(4, 7)[:, None], order[4:7]), np.s_[3, 2], np.s_[::2], np.s_[:, :, 1:3], np.s_[0:0]]
    for key in keys:
        np.testing.assert_array_equal(streaming.read(mapped, key), want[key], err_msg=repr(key))
        got = streaming.read(mapped, key, np.float64)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want[key].astype(np.float64))
    with pytest.raises(IndexError):
        streaming.read(mapped, (rows[:2, :2], np.array([[0, 6]])))  # site 6 of 6: numpy's error, not a wrap
    if store_dtype == "float32":  # a view of the map (a chapter's run.acts[:300, :6]) reads from its place
        view = mapped[3:11, 1:5]
        for key in (np.s_[1:6], np.s_[:, 2], (np.array([[0, 7], [2, 3]]), np.array([[1, 3]])), np.s_[2:5, 1:3]):
            np.testing.assert_array_equal(streaming.read(view, key), view[key], err_msg=repr(key))


def test_autoencoder_and_pca_standardise_by_blocks_as_on_the_full_copy(monkeypatch):
    """Chapter 6 without a full-size standardised copy: the autoencoder's training rows, spreads,
    reconstruction and the pooled PCA's scores, standardised a block at a time (blocks that do
    not divide the samples or the rows), equal what the full copy of pooled_standardize gives."""
    from tdcourse import lowdim

    acts = (_stack(40, n_sites=6, d=9, seed=4) * np.arange(1, 10)).astype(np.float32)
    one = lowdim.train_autoencoder.__wrapped__(acts, epochs=2, batch_size=64)
    pca_one = lowdim.pooled_pca(acts, n_components=3, fit_idx=one.train_idx)
    z, mean, scale = lowdim.pooled_standardize(acts, fit_idx=one.train_idx)
    np.testing.assert_array_equal(one.spread, lowdim.site_spread(z))  # the reference: the full copy
    np.testing.assert_array_equal(one.mean, mean)
    np.testing.assert_array_equal(pca_one.scores, lowdim.pooled_pca(z, n_components=3, fit_idx=one.train_idx,
                                                                    standardize=False).scores)
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 3 * 3 * 8 * 6 * 9)  # 3 samples a block (40 = 13 × 3 + 1)
    blocks = lowdim.train_autoencoder.__wrapped__(acts, epochs=2, batch_size=64)
    for name in ("latent", "sq_error", "spread", "loss", "mean", "scale", "train_idx", "test_idx"):
        np.testing.assert_array_equal(getattr(blocks, name), getattr(one, name), err_msg=name)
    np.testing.assert_array_equal(lowdim.pooled_pca(acts, n_components=3, fit_idx=one.train_idx).scores,
                                  pca_one.scores)
    # 7 rows a block: the blocks cut samples. The rows are the same; products of other shapes
    # round differently in the last bits (float32 network: 1e-5).
    monkeypatch.setattr(lowdim, "_BLOCK_BYTES", 7 * 3 * 4 * 9)
    rows = lowdim.train_autoencoder.__wrapped__(acts, epochs=2, batch_size=64)
    for name in ("spread", "loss", "mean", "scale"):
        np.testing.assert_array_equal(getattr(rows, name), getattr(one, name), err_msg=name)
    np.testing.assert_allclose(rows.latent, one.latent, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rows.sq_error, one.sq_error, rtol=1e-5, atol=1e-6)
    # The scores are float32 products (scikit-learn keeps the float32 rows' dtype): another block
    # shape, or another BLAS kernel, moves their last bits (5e-7 relative under Prescott's).
    np.testing.assert_allclose(lowdim.pooled_pca(acts, n_components=3, fit_idx=one.train_idx).scores,
                               pca_one.scores, rtol=1e-5, atol=1e-5 * np.abs(pca_one.scores).max())


def test_autoencoder_training_samples_are_capped_and_the_cap_is_recorded():
    from tdcourse import lowdim

    acts = _stack(40, n_sites=6, d=9, seed=5).astype(np.float32)
    full = lowdim.train_autoencoder.__wrapped__(acts, epochs=1)
    capped = lowdim.train_autoencoder.__wrapped__(acts, epochs=1, max_train_samples=7)
    assert full.config["n_train_samples"] == full.config["n_train_split"] == 20 == len(full.train_idx)
    assert capped.config["n_train_samples"] == 7 == len(capped.train_idx)
    assert capped.config["n_train_split"] == 20 and capped.config["max_train_samples"] == 7
    assert set(capped.train_idx) < set(full.train_idx)  # a subset of the same split
    np.testing.assert_array_equal(capped.test_idx, full.test_idx)  # the same held-out samples
    assert capped.config["n_train_rows"] == 7 * 6
    # The default cap: MAX_TRAIN_BYTES of float32 rows.
    assert full.config["max_train_samples"] == lowdim.MAX_TRAIN_BYTES // (4 * 6 * 9)
    with pytest.raises(ValueError, match="max_train_samples"):
        lowdim.train_autoencoder.__wrapped__(acts, epochs=1, max_train_samples=0)


def test_site_means_of_a_subset_of_samples():
    acts = _stack(30, n_sites=4, d=5, seed=6).astype(np.float32)
    idx = np.array([1, 4, 5, 17, 29])
    for block in (1 << 30, 2 * 4 * 5 * 8):
        np.testing.assert_allclose(streaming.site_means(acts, max_bytes=block, idx=idx),
                                   acts[idx].astype(np.float64).mean(0), rtol=1e-13)
    for bad in ([], [30], [-1], [0.5]):
        with pytest.raises(ValueError, match="sample indices in 0 … 29"):
            streaming.site_means(acts, idx=bad)


def _readers():
    from tdcourse import exercises, geometry, information, stationarity

    return {
        "exercises.first_samples": lambda run: exercises.first_samples(run.acts),
        "Activations.site": lambda run: run.site("resid_mid", 2),
        "geometry.norms": lambda run: geometry.norms(run.acts),
        "geometry.density_indices": lambda run: geometry.density_indices(run.acts)["Hoyer, trimmed"],
        "geometry.consecutive_cosine": lambda run: geometry.consecutive_cosine(run.acts),
        "geometry.velocity": lambda run: geometry.velocity(run.acts),
        "information.same_input_groups": lambda run: information.same_input_groups(run.acts, 3)[0],
        "stationarity.site_moments": lambda run: stationarity.site_moments(run.acts)[1],
    }


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process's RssFile from /proc")
@pytest.mark.parametrize("reader", list(_readers()))
def test_a_reader_of_a_cached_capture_leaves_none_of_it_resident(reader, tmp_path, monkeypatch):
    """What a chapter reads from a cached capture (a site, the norms, ...) is read with plain reads
    or given back block by block: the capture's pages do not stay in the process's resident
    memory (a view of the map at one site left most of a 1.9 GB capture resident: read-around),
    and the values are those of the array in memory."""
    acts = _stack(64, n_sites=8, d=2048, seed=8, dtype=np.float32)  # 4 MiB
    run = _entry(acts, tmp_path, monkeypatch, step=64, whole_run=True)
    assert streaming.is_mapped(run.acts)
    fn = _readers()[reader]
    streaming.release(run.acts)
    before = _rss_file_kib()
    got = np.array(fn(run), dtype=np.float64)  # a view of the map would be read here
    assert _rss_file_kib() - before < 1024, f"{reader} left the capture's pages resident"  # KiB, of 4096
    in_memory = dataclasses.replace(run, acts=acts)
    np.testing.assert_array_equal(got, fn(in_memory))


@pytest.mark.parametrize("shape, want", [((1000, 60, 576), 200),  # SmolLM2-135M: the 200 asked for
                                         ((1800, 64, 4096), 64),  # Llama 3.1 8B's shape: 64 MiB of 1 MiB
                                         ((200, 160, 8192), 12),  # the 70B's: 64 MiB of 5 MiB samples
                                         ((5, 64, 4096), 5)])  # fewer samples than the budget holds
def test_first_samples_bounds_a_learners_comparison_by_size(shape, want):
    """A chapter compares a learner's function with the library's on the first samples of a run,
    as many as fit in 64 MiB of float32 (200 samples of the 70B's shape took chapter 3 to 7 GiB)."""
    from tdcourse import exercises

    acts = np.broadcast_to(np.arange(shape[0], dtype=np.float32)[:, None, None], shape)  # no memory
    got = exercises.first_samples(acts)
    assert got.shape == (want, *shape[1:]) and got.dtype == np.float32
    np.testing.assert_array_equal(got[:, 0, 0], np.arange(want))
    assert exercises.first_samples(acts, most=3).shape[0] == min(3, want)
    assert exercises.first_samples(acts, mib=0.001).shape[0] == 1  # at least one sample


def test_first_samples_copies_out_of_the_map_and_refuses_a_wrong_shape(tmp_path, monkeypatch):
    from tdcourse import exercises

    acts = _stack(64, n_sites=8, d=2048, seed=3, dtype=np.float32)  # 4 MiB
    run = _entry(acts, tmp_path, monkeypatch, step=64, whole_run=True)
    got = exercises.first_samples(run.acts, mib=1)  # 16 samples of 64 KiB
    assert got.shape == (16, 8, 2048) and not isinstance(got, np.memmap) and got.base is None
    np.testing.assert_array_equal(got, acts[:16])
    with pytest.raises(ValueError, match=r"shape \(n_samples, n_sites, d_model\), got shape \(8, 2048\)"):
        exercises.first_samples(acts[0])
    with pytest.raises(ValueError, match="most must be >= 1"):
        exercises.first_samples(acts, most=0)
