"""Tests of tdcourse.lowdim on synthetic data whose answer is known (and one slow test on the
real SmolLM2 capture)."""

from __future__ import annotations

import numpy as np
import pytest

from tdcourse import lowdim as ld
from tdcourse.capture import Activations, site_names


def _half_circle(m=201):
    t = np.linspace(0, np.pi, m)
    return np.c_[np.cos(t), np.sin(t)]


# --------------------------------------------------------------------------- dimensionality


def test_participation_ratio_known_spectra():
    np.testing.assert_allclose(ld.participation_ratio(np.ones(7)), 7)
    np.testing.assert_allclose(ld.participation_ratio([5.0, 0, 0]), 1)
    np.testing.assert_allclose(ld.participation_ratio([[9.0, 1, 0], [1, 1, 1]]), [100 / 82, 3])
    with pytest.raises(ValueError, match="non-negative"):
        ld.participation_ratio([1.0, -1.0])
    with pytest.raises(ValueError, match="n_eig"):
        ld.participation_ratio(np.ones((3, 0)))


def test_n_components_for_known_spectra():
    assert ld.n_components_for([5, 3, 1, 1], 0.9) == 3
    assert ld.n_components_for([1, 1, 3, 5], 0.9) == 3          # order does not matter
    assert ld.n_components_for(np.ones(10), 0.9) == 9
    assert ld.n_components_for([1, 0, 0], 0.99) == 1
    np.testing.assert_array_equal(ld.n_components_for(np.array([[4, 0, 0], [1, 1, 1]]), 0.5), [1, 2])
    with pytest.raises(ValueError, match="frac"):
        ld.n_components_for([1, 1], 0)


def _two_site_acts(n=3000, d=10, seed=0):
    """Site 0: isotropic in 8 of the d units (PR 8); site 1: one direction (PR 1)."""
    rng = np.random.default_rng(seed)
    a = np.zeros((n, 2, d))
    a[:, 0, :8] = rng.standard_normal((n, 8))
    a[:, 1] = rng.standard_normal((n, 1)) * rng.standard_normal(d) + 0.01 * rng.standard_normal((n, d))
    return a


def test_site_spectra_known_dimensions():
    sp = ld.site_spectra(_two_site_acts(), n_boot=200)
    assert sp.eigvals.shape == (2, 10) and sp.pr_boot.shape == (200, 2)
    assert sp.pr[0] == pytest.approx(8, rel=0.03) and sp.pr[1] == pytest.approx(1, abs=0.01)
    assert list(sp.n90) == [8, 1]
    assert np.all(np.diff(sp.eigvals, axis=1) <= 1e-9)           # largest first


def test_site_spectra_matches_numpy_cov_primal_and_dual():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((60, 3, 4)) @ rng.standard_normal((4, 90))   # rank 4, d > n: dual path
    a += 0.1 * rng.standard_normal(a.shape)
    sp = ld.site_spectra(a, n_boot=0, n_blocks=5)
    primal = ld.site_spectra(a[:, :, :40], n_boot=0, n_blocks=5)         # d < n: primal path
    for j in range(3):
        want = np.sort(np.linalg.eigvalsh(np.cov(a[:, j].T)))[::-1][:60]
        np.testing.assert_allclose(sp.eigvals[j], want, rtol=1e-4, atol=1e-5 * want[0])   # float32 products
        want40 = np.sort(np.linalg.eigvalsh(np.cov(a[:, j, :40].T)))[::-1]
        np.testing.assert_allclose(primal.eigvals[j], want40, rtol=1e-4, atol=1e-5 * want40[0])
    assert sp.pr_boot.shape == (0, 3)


def test_standardised_spectrum_ignores_unit_scale():
    a = _two_site_acts(n=2000)
    a[:, 0, 0] *= 1000.0                                           # one "massive" unit
    raw, std = ld.site_spectra_both(a, n_boot=50)
    assert raw.pr[0] < 1.01                                        # the massive unit owns the raw spectrum
    assert std.pr[0] == pytest.approx(8, rel=0.05)                 # not the standardised one
    alone = ld.site_spectra(a, standardize=True, n_boot=50)
    np.testing.assert_allclose(alone.pr, std.pr)
    np.testing.assert_allclose(alone.pr_boot, std.pr_boot)


def test_block_bootstrap_spread_matches_a_plain_bootstrap():
    rng = np.random.default_rng(2)
    n, d = 600, 6
    a = (rng.standard_normal((n, 1, d)) * np.array([3, 2, 1, 1, 0.5, 0.5]))
    sp = ld.site_spectra(a, n_boot=400, n_blocks=30, seed=0)
    idx = rng.integers(0, n, size=(300, n))
    plain = np.array([ld.participation_ratio(np.linalg.eigvalsh(np.cov(a[i, 0].T))) for i in idx])
    ratio = sp.pr_boot[:, 0].std() / plain.std()
    assert 0.6 < ratio < 1.6
    lo, hi = ld.se_interval(sp.pr, sp.pr_boot)
    assert lo[0] < sp.pr[0] < hi[0]


def test_se_interval():
    boot = np.random.default_rng(0).normal(0, 2.0, size=(20000, 3))
    lo, hi = ld.se_interval(np.array([1.0, 2.0, 3.0]), boot)
    np.testing.assert_allclose(hi - lo, 2 * 1.96 * 2.0, rtol=0.03)
    np.testing.assert_allclose((hi + lo) / 2, [1, 2, 3])
    with pytest.raises(ValueError, match="boot"):
        ld.se_interval(np.ones(2), np.ones((10, 3)))


def test_site_spectra_rejects_bad_input():
    with pytest.raises(ValueError, match="n_samples, n_sites, d_model"):
        ld.site_spectra(np.ones((10, 4)))
    with pytest.raises(ValueError, match="n_blocks"):
        ld.site_spectra(np.ones((10, 2, 3)), n_blocks=11)


# --------------------------------------------------------------------------- curvature


def test_bend_and_length_ratio_known_paths():
    half = _half_circle()
    q = np.linspace(0, np.pi / 2, 201)
    quarter = np.c_[np.cos(q), np.sin(q)]
    line = np.c_[np.linspace(0, 1, 9), 2 * np.linspace(0, 1, 9), np.zeros(9)]
    assert ld.bend_ratio(half) == pytest.approx(0.5, abs=1e-4)
    assert ld.bend_ratio(quarter) == pytest.approx((1 - 1 / np.sqrt(2)) / np.sqrt(2), abs=1e-4)
    assert ld.bend_ratio(line) == pytest.approx(0, abs=1e-12)
    assert ld.path_length_ratio(line) == pytest.approx(1)
    assert ld.path_length_ratio(half) == pytest.approx(np.pi / 2, rel=1e-4)
    rot = np.array([[0, -1], [1, 0]])
    assert ld.bend_ratio(5 * half @ rot.T - 2) == pytest.approx(0.5, abs=1e-4)   # invariances
    batch = np.stack([half, quarter])
    np.testing.assert_allclose(ld.bend_ratio(batch), [ld.bend_ratio(half), ld.bend_ratio(quarter)])
    with pytest.raises(ValueError, match="n_sites >= 2"):
        ld.bend_ratio(np.ones((1, 2)))


def test_turning_angles():
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], float)
    np.testing.assert_allclose(ld.turning_angles(square), [90, 90, 90])
    zigzag = np.array([[0, 0], [1, 1], [2, 0], [3, 1], [4, 0]], float)
    np.testing.assert_allclose(ld.turning_angles(zigzag), [90, 90, 90])
    np.testing.assert_allclose(ld.turning_angles(zigzag, step=2), [0], atol=1e-6)  # whole "layers": straight
    with pytest.raises(ValueError, match="3 points"):
        ld.turning_angles(square[:2])


def test_site_shuffle_null_orders_a_smooth_path():
    path = _half_circle(40)
    null = ld.site_shuffle_null(path, ld.path_length_ratio, n_perm=300, seed=0)
    assert null.shape == (300,)
    assert np.all(null > ld.path_length_ratio(path))
    again = ld.site_shuffle_null(path, ld.path_length_ratio, n_perm=300, seed=0)
    np.testing.assert_array_equal(null, again)


def test_mean_trajectory_bootstrap():
    rng = np.random.default_rng(0)
    traj = rng.normal(size=(500, 6, 2)) + np.arange(6)[None, :, None]
    boot = ld.mean_trajectory_bootstrap(traj, n_boot=400, seed=1)
    assert boot.shape == (400, 6, 2)
    np.testing.assert_allclose(boot.mean(0), traj.mean(0), atol=0.02)
    np.testing.assert_allclose(boot.std(0), traj.std(0) / np.sqrt(500), rtol=0.15)


# --------------------------------------------------------------------------- errors, PCA


def test_site_nmse_known_values():
    spread = np.ones((10, 3))
    err = np.c_[np.zeros(10), np.ones(10), 4 * np.ones(10)]
    nmse, boot = ld.site_nmse(err, spread, n_boot=20)
    np.testing.assert_allclose(nmse, [0, 1, 4])
    np.testing.assert_allclose(boot, np.tile([0, 1, 4], (20, 1)))
    nmse, _ = ld.site_nmse(err, spread, idx=np.arange(5))
    np.testing.assert_allclose(nmse, [0, 1, 4])
    with pytest.raises(ValueError, match="same|shape"):
        ld.site_nmse(err, spread[:, :2])
    with pytest.raises(ValueError, match="outside"):
        ld.site_nmse(err, spread, idx=np.array([10]))


def test_thirds_and_early_minus_late():
    early, late = ld.thirds(60)
    assert (early, late) == (slice(0, 20), slice(40, 60))
    v = np.r_[np.full(20, 3.0), np.full(20, 100.0), np.full(20, 1.0)]
    assert ld.early_minus_late(v) == pytest.approx(2)
    np.testing.assert_allclose(ld.early_minus_late(np.stack([v, -v])), [2, -2])
    with pytest.raises(ValueError, match="3 sites"):
        ld.thirds(2)


def test_pooled_pca_finds_a_plane():
    rng = np.random.default_rng(0)
    n, s, d = 200, 5, 20
    basis = np.linalg.qr(rng.standard_normal((d, 2)))[0].T            # (2, d)
    coef = rng.standard_normal((n, s, 2)) * [3.0, 1.0]
    acts = coef @ basis + 0.01 * rng.standard_normal((n, s, d))
    pca = ld.pooled_pca(acts, 2, standardize=False)
    assert pca.scores.shape == (n, s, 2)
    assert pca.explained_variance_ratio.sum() > 0.999
    assert pca.explained_variance_ratio[0] == pytest.approx(0.9, abs=0.02)
    assert np.abs(pca.components @ basis.T).max(1).min() > 0.999      # the same plane
    err = pca.sq_error(acts)
    assert err.shape == (n, s) and err.mean() < 1e-2 * np.einsum("nsd,nsd->ns", acts, acts).mean()
    assert pca.sq_error(acts, k=1).mean() > 0.5                        # dropping PC2 loses its variance
    with pytest.raises(ValueError, match="k must"):
        pca.sq_error(acts, k=3)
    with pytest.raises(ValueError, match="n_components"):
        ld.pooled_pca(acts, 0)


def test_pooled_pca_randomized_for_wide_streams_matches_the_exact_solver(monkeypatch):
    """Above EXACT_PCA_MAX_D units the seeded randomized solver runs; on a spectrum with distinct
    leading variances it gives the exact solver's components, variances and scores."""
    rng = np.random.default_rng(1)
    n, s, d = 120, 6, 60
    coef = rng.standard_normal((n, s, d)) * np.r_[[8.0, 5.0, 3.0, 2.0], np.full(d - 4, 0.3)]
    acts = (coef @ np.linalg.qr(rng.standard_normal((d, d)))[0].T).astype(np.float32)
    exact = ld.pooled_pca(acts, 4, fit_idx=np.arange(60))
    monkeypatch.setattr(ld, "EXACT_PCA_MAX_D", 10)
    rand = ld.pooled_pca(acts, 4, fit_idx=np.arange(60), seed=0)
    signs = np.sign((rand.components * exact.components).sum(1))
    np.testing.assert_allclose(rand.components * signs[:, None], exact.components, atol=1e-4)
    np.testing.assert_allclose(rand.explained_variance_ratio, exact.explained_variance_ratio, rtol=1e-4)
    np.testing.assert_allclose(rand.scores * signs, exact.scores, rtol=1e-3, atol=1e-3)
    again = ld.pooled_pca(acts, 4, fit_idx=np.arange(60), seed=0)
    np.testing.assert_array_equal(again.scores, rand.scores)  # seeded


def test_blockwise_spread_scores_and_errors_equal_one_piece(monkeypatch):
    """site_spread, the PCA scores and sq_error run in blocks at 8B scale; any block size gives
    the same numbers as one piece."""
    rng = np.random.default_rng(2)
    acts = (rng.standard_normal((50, 6, 12)) * np.arange(1, 13)).astype(np.float32)
    z, _, _ = ld.pooled_standardize(acts)
    whole = (ld.site_spread(z), ld.pooled_pca(acts, 3).scores, ld.pooled_pca(acts, 3).sq_error(acts, 2))
    monkeypatch.setattr(ld, "_BLOCK_BYTES", 1)
    pca = ld.pooled_pca(acts, 3)
    parts = (ld.site_spread(z), pca.scores, pca.sq_error(acts, 2))
    for a, b in zip(whole, parts):
        # float32 products: a block of rows may go through another BLAS kernel path than the
        # whole array (OpenBLAS's Haswell and Prescott kernels differ here by up to 9e-6
        # relative on entries near zero), so compare at float32's ~1e-5 of the array's scale.
        # A wrong block (rows missed, shifted or doubled) moves entries by O(1).
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.abs(a).max())
    c = z - z.mean(0, keepdims=True)
    np.testing.assert_allclose(parts[0], np.einsum("nsd,nsd->ns", c, c, dtype=np.float64), rtol=1e-12)


def test_pooled_standardize():
    rng = np.random.default_rng(0)
    acts = rng.normal(5.0, [1.0, 10.0, 100.0], size=(300, 4, 3))
    z, mean, scale = ld.pooled_standardize(acts)
    np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.reshape(-1, 3).std(0), 1, rtol=1e-4)
    np.testing.assert_allclose(scale, [1, 10, 100], rtol=0.1)
    spread = ld.site_spread(z)
    assert spread.shape == (300, 4)
    np.testing.assert_allclose(spread.sum(0) / 299, z.var(0, ddof=1).sum(-1), rtol=1e-4)


# --------------------------------------------------------------------------- autoencoder


def _plane_acts(n=80, s=6, d=16, seed=0):
    """Rows on a 2-D plane in d units (plus a little noise): a 2-D latent can hold them."""
    rng = np.random.default_rng(seed)
    coef = rng.standard_normal((n, s, 2)) + np.linspace(-2, 2, s)[None, :, None]
    return (coef @ rng.standard_normal((2, d)) + 0.02 * rng.standard_normal((n, s, d))).astype(np.float32)


@pytest.fixture
def one_thread():
    """Tiny networks train faster on one thread (and the machine is shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_autoencoder_learns_a_plane_and_is_seeded(one_thread):
    acts = _plane_acts()
    kw = dict(hidden=(32, 8), epochs=150, batch_size=128, lr=1e-2, seed=0)
    fit = ld.train_autoencoder(acts, **kw)
    assert fit.latent.shape == (80, 6, 2) and fit.sq_error.shape == (80, 6)
    assert len(np.intersect1d(fit.train_idx, fit.test_idx)) == 0 and len(fit.train_idx) + len(fit.test_idx) == 80
    nmse, boot = fit.nmse(n_boot=50)
    assert nmse.shape == (6,) and boot.shape == (50, 6)
    assert np.nanmax(nmse) < 0.1                                       # held-out rows are rebuilt
    assert fit.loss[-1] < 0.2 * fit.loss[0]
    # the same seed gives the same network; a rank-1 world (latent 1) cannot hold a plane
    again = ld.train_autoencoder.__wrapped__(acts, **kw)  # trained again, not read from the analysis cache
    np.testing.assert_array_equal(fit.latent, again.latent)
    one = ld.train_autoencoder(acts, latent_dim=1, **kw)
    assert one.nmse()[0].mean() > 3 * nmse.mean()


def test_autoencoder_rejects_bad_settings():
    acts = _plane_acts(n=10)
    with pytest.raises(ValueError, match="train_frac"):
        ld.train_autoencoder(acts, train_frac=1.0)
    with pytest.raises(ValueError, match="n_samples, n_sites, d_model"):
        ld.train_autoencoder(acts[0])
    with pytest.raises(ValueError, match="positive"):
        ld.build_autoencoder(16, latent_dim=0)
    with pytest.raises(ValueError, match="num_threads"):
        ld.train_autoencoder(acts, num_threads=0)


def test_autoencoder_restores_torch_threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fit = ld.train_autoencoder(_plane_acts(n=10), hidden=(4,), epochs=1, num_threads=1)
        assert torch.get_num_threads() == 2 and fit.config["num_threads"] == 1
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- verdicts, checks, plot


def _run(acts):
    n, s, d = acts.shape
    return Activations(acts=acts.astype(np.float32), sites=site_names(s // 2), texts=[""] * n,
                       meta={}, path=None)


def test_verdicts_on_synthetic_data_with_a_known_answer(one_thread):
    """Early sites fill 12 dimensions, late sites 2: the dimension verdict must agree."""
    rng = np.random.default_rng(0)
    n, s, d = 300, 6, 12
    acts = np.empty((n, s, d))
    acts[:, :2] = rng.standard_normal((n, 2, d))                       # isotropic: PR ≈ 12
    acts[:, 2:4] = rng.standard_normal((n, 2, 6)) @ rng.standard_normal((6, d))
    acts[:, 4:] = rng.standard_normal((n, 2, 2)) @ rng.standard_normal((2, d)) + 0.01 * rng.standard_normal((n, 2, d))
    res = ld.analyse(_run(acts), n_boot=200, hidden=(16, 8), epochs=20, batch_size=256)
    vs = ld.verdicts(_run(acts), "test_chapter", result=res, n_boot=200)
    assert [v.claim for v in vs] == ["C11", "C12", "C12"]
    assert all(v.chapter == "test_chapter" and v.criterion and v.uncertainty for v in vs)
    assert vs[2].outcome == "agrees" and vs[2].value > 5
    # and reversed depth (low-dimensional first) must disagree
    rev = ld.verdicts(_run(acts[:, ::-1].copy()), "test_chapter", n_boot=200)
    assert rev[2].outcome == "disagrees"


def test_check_helpers(capsys):
    def pr(x):
        return ld.participation_ratio(np.linalg.eigvalsh(np.cov(np.asarray(x).T)))

    assert ld.check_participation_ratio(pr) is True
    assert ld.check_participation_ratio(lambda x: np.asarray(x).shape[1]) is False
    assert ld.check_bend_ratio(ld.bend_ratio) is True
    assert ld.check_bend_ratio(lambda p: 1 / 0) is False
    out = capsys.readouterr().out
    assert "✓" in out and "✗" in out and "ZeroDivisionError" in out


def test_depth_paths_chart():
    from tdcourse import plots

    paths = np.random.default_rng(0).normal(size=(5, 8, 2))
    chart = plots.depth_paths({"a": (paths, paths.mean(0)), "b": (paths, paths.mean(0))}, title="t")
    spec = chart.to_dict()
    assert "facet" in spec and len(spec["datasets"]) == 1
    rows = next(iter(spec["datasets"].values()))
    assert len(rows) == 2 * (5 * 8 + 8)
    with pytest.raises(ValueError, match="paths must have shape"):
        plots.depth_paths({"a": (paths[:, :5], paths.mean(0))})


# --------------------------------------------------------------------------- real capture


@pytest.mark.slow
def test_real_capture_spectra_agree_with_numpy(smol_acts):
    """On SmolLM2: the block computation matches numpy's covariance at a few sites, and the
    dual path (fewer samples than units) matches the primal one."""
    acts = smol_acts.acts[:, [21, 59]]
    raw, std = ld.site_spectra_both(acts, n_boot=100)
    for j in range(2):
        want = np.linalg.eigvalsh(np.cov(acts[:, j].T.astype(np.float64)))
        assert raw.pr[j] == pytest.approx(ld.participation_ratio(want), rel=1e-3)
        corr = np.corrcoef(acts[:, j].T.astype(np.float64))
        assert std.pr[j] == pytest.approx(ld.participation_ratio(np.linalg.eigvalsh(np.nan_to_num(corr))), rel=1e-3)
    few = acts[:300, 1:]
    dual = ld.site_spectra(few, n_boot=0)                              # 300 samples < 576 units
    for j in range(1):
        want = np.linalg.eigvalsh(np.cov(few[:, j].T.astype(np.float64)))
        assert dual.pr[j] == pytest.approx(ld.participation_ratio(want.clip(min=0)), rel=1e-3)
