"""Tests of tdcourse.stationarity: moments per site, the drift ratio and its site-shuffled null."""

from __future__ import annotations

import numpy as np
import pytest

from tdcourse import stationarity


def _acts(n=40, s=6, d=5, seed=0):
    rng = np.random.default_rng(seed)
    drift = np.linspace(0, 10, s)[None, :, None] * np.array([1.0, 0.0, 0.0, 2.0, 0.0])[None, None, :d]
    return (rng.normal(size=(n, s, d)) * np.linspace(1, 2, s)[None, :, None] + drift).astype(np.float32)


@pytest.mark.parametrize("block_bytes", [1, 3 * 6 * 5 * 8, 10**9])  # 1, 3 (not dividing 40) or all samples
def test_site_moments_blockwise_equal_float64_moments(monkeypatch, block_bytes):
    """One sample per block or all at once: the float64 mean and unbiased variance over samples."""
    monkeypatch.setattr(stationarity, "_BLOCK_BYTES", block_bytes)
    a = _acts()
    mean, var = stationarity.site_moments(a)
    ref = a.astype(np.float64)
    assert mean == pytest.approx(ref.mean(0), rel=1e-12, abs=1e-12)
    assert var == pytest.approx(ref.var(0, ddof=1), rel=1e-12)
    assert mean.dtype == np.float64 and mean.shape == (6, 5)


def test_stationarity_null_is_the_site_shuffled_copy(monkeypatch):
    """The streamed null equals drift_ratio of shuffled_sites with the same generator draws."""
    monkeypatch.setattr(stationarity, "_BLOCK_BYTES", 1)
    a = _acts()
    st = stationarity.stationarity(a, n_null=2, seed=3)
    rng = np.random.default_rng(3)
    want = np.stack([stationarity.drift_ratio(stationarity.shuffled_sites(a, rng)) for _ in range(2)])
    assert st.null_drift == pytest.approx(want, rel=1e-12)
    assert st.drift == pytest.approx(stationarity.drift_ratio(a), rel=1e-12)
    # units 0 and 3 drift with depth, the others do not
    assert st.drift[[0, 3]].min() > 10 * st.drift[[1, 2, 4]].max()


def test_verdicts_reuse_a_computed_result():
    from tdcourse.capture import Activations, site_names

    a = _acts(s=6)
    run = Activations(acts=a, sites=site_names(3), texts=[""] * len(a))
    st = stationarity.stationarity(a)
    fresh = stationarity.verdicts(run)[0]
    reused = stationarity.verdicts(run, result=st)[0]
    assert reused.value == fresh.value == st.frac_drifting
    assert reused.uncertainty == fresh.uncertainty


def test_rms_normalised_stationarity_streams_the_normalised_copy():
    """normalise="rms" reads each block divided by its (sample, site) RMS: the statistic of the
    normalised array, computed in float64 without the copy (chapter 1's exercise at any N)."""
    from tdcourse import stationarity as st

    rng = np.random.default_rng(3)
    a = (rng.standard_normal((60, 10, 32)) * np.linspace(1, 20, 10)[None, :, None]
         + np.linspace(0, 3, 10)[None, :, None]).astype(np.float32)
    a64 = a.astype(np.float64)
    normed = a64 / np.sqrt((a64 ** 2).mean(-1, keepdims=True))
    got = st.stationarity.__wrapped__(a, normalise="rms")
    want = st.stationarity.__wrapped__(normed)
    np.testing.assert_allclose(got.drift, want.drift, rtol=1e-9)
    np.testing.assert_allclose(got.null_drift, want.null_drift, rtol=1e-9)
    assert got.frac_drifting == want.frac_drifting
    raw = st.stationarity.__wrapped__(a)
    assert not np.allclose(raw.drift, got.drift)  # the norm's growth is gone
    with pytest.raises(ValueError, match="normalise must be one of"):
        st.stationarity.__wrapped__(a, normalise="l2")
    a[5, 3] = 0.0
    with pytest.raises(ValueError, match="all zeros"):
        st.stationarity.__wrapped__(a, normalise="rms")
