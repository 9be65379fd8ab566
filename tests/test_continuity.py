from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tdcourse import stats
import pytest

from tdcourse import continuity as C


def _stack(n: int, write_std: np.ndarray, d: int = 8, seed: int = 0) -> np.ndarray:
    """A residual stack ``h_{s+1} = h_s + f_s`` with independent writes of std ``write_std[s]``:
    shape (n, len(write_std) + 1, d), h_0 ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    h0 = rng.standard_normal((n, 1, d))
    f = rng.standard_normal((n, len(write_std), d)) * np.asarray(write_std)[None, :, None]
    return np.concatenate([h0, h0 + f.cumsum(1)], axis=1)


def _expected_r(write_std: np.ndarray) -> np.ndarray:
    """Population r across each pair of :func:`_stack`: var h_s = 1 + Σ_{t<s} g_t²."""
    var = 1 + np.concatenate([[0.0], np.cumsum(np.asarray(write_std) ** 2)])
    return np.sqrt(var[:-1] / var[1:])


def test_adjacent_corr_matches_corrcoef():
    acts = np.random.default_rng(1).standard_normal((50, 4, 3)).cumsum(1)
    r = C.adjacent_corr(acts)
    assert r.shape == (3, 3)
    for s in range(3):
        for u in range(3):
            assert r[s, u] == pytest.approx(np.corrcoef(acts[:, s, u], acts[:, s + 1, u])[0, 1], abs=1e-12)


def test_adjacent_corr_known_residual_stack():
    g = np.array([0.2, 1.0, 3.0, 0.5])
    acts = _stack(20000, g)
    r = C.adjacent_corr(acts)
    np.testing.assert_allclose(r, np.broadcast_to(_expected_r(g)[:, None], r.shape), atol=0.02)


def test_adjacent_corr_float32_and_offsets():
    acts = _stack(500, np.array([0.3, 0.3]), seed=2)
    shifted = (acts + 1e4 * np.arange(8)).astype(np.float32)  # massive offsets must not matter
    np.testing.assert_allclose(C.adjacent_corr(shifted), C.adjacent_corr(acts), atol=1e-3)


def test_basis_identity_permutation_and_rotation():
    acts = _stack(300, np.array([0.5, 1.0, 0.2]), d=6, seed=3)
    r = C.adjacent_corr(acts)
    np.testing.assert_allclose(C.adjacent_corr(acts, basis=np.eye(6)), r, atol=1e-12)
    perm = np.eye(6)[:, [2, 0, 1, 5, 4, 3]]
    np.testing.assert_allclose(C.adjacent_corr(acts, basis=perm), r[:, [2, 0, 1, 5, 4, 3]], atol=1e-12)
    q = C.random_rotation(6, seed=0)
    np.testing.assert_allclose(q.T @ q, np.eye(6), atol=1e-12)
    np.testing.assert_array_equal(q, C.random_rotation(6, seed=0))
    q3 = C.random_rotation(6, n_dirs=3, seed=0)
    assert q3.shape == (6, 3) and np.allclose(q3.T @ q3, np.eye(3))
    assert C.adjacent_corr(acts, basis=q3).shape == (3, 3)
    assert not np.allclose(C.adjacent_corr(acts, basis=q), r)
    # basis-free quantities do not change under a rotation
    np.testing.assert_allclose(C.stream_corr(acts @ q), C.stream_corr(acts), atol=1e-10)
    np.testing.assert_allclose(C.write_ratio(acts @ q), C.write_ratio(acts), atol=1e-10)


def test_stream_corr_and_write_ratio_known():
    g = np.array([0.2, 1.0, 3.0])
    acts = _stack(20000, g, d=4, seed=4)
    np.testing.assert_allclose(C.stream_corr(acts), _expected_r(g), atol=0.02)
    var = 1 + np.concatenate([[0.0], np.cumsum(g**2)])
    np.testing.assert_allclose(C.write_ratio(acts), g / np.sqrt(var[:-1]), rtol=0.03)


def test_rotation_mixes_units_to_the_stream_average():
    # unit 0 gets a write as big as itself, the others none: in the unit basis r is 1/sqrt(2) for
    # unit 0 and 1 elsewhere; a random basis spreads the write, every direction sees ~ the average
    rng = np.random.default_rng(5)
    n, d = 5000, 32
    h0 = rng.standard_normal((n, d))
    h1 = h0.copy()
    h1[:, 0] += rng.standard_normal(n)
    acts = np.stack([h0, h1], axis=1)
    r = C.adjacent_corr(acts)[0]
    assert r[0] == pytest.approx(1 / np.sqrt(2), abs=0.02) and np.all(r[1:] == pytest.approx(1.0))
    r_rot = C.adjacent_corr(acts, basis=C.random_rotation(d, seed=1))[0]
    stream = C.stream_corr(acts)[0]
    assert stream == pytest.approx(np.sqrt(32 / 33), abs=0.005)
    assert r_rot.min() > 0.8 and np.median(r_rot) == pytest.approx(stream, abs=0.01)


def test_permutation_null_is_centred_with_known_spread():
    acts = _stack(400, np.array([0.1, 0.1, 0.1]), d=50, seed=6)
    null = C.permutation_null(acts, n_perm=2, seed=0)
    assert null.shape == (2, 3, 50)
    assert abs(null.mean()) < 0.01
    assert null.std() == pytest.approx(1 / np.sqrt(400), rel=0.15)
    assert np.all(C.adjacent_corr(acts) > 0.9)
    np.testing.assert_array_equal(null, C.permutation_null(acts, n_perm=2, seed=0))  # seeded


def test_bootstrap_weights_and_corr():
    acts = _stack(60, np.array([0.5, 0.5, 0.5]), d=5, seed=7)
    w = stats.bootstrap_weights(60, n_boot=4, seed=0)
    assert w.shape == (4, 60) and np.allclose(w.sum(1), 1)
    boot = C.bootstrap_corr(acts, weights=w)
    assert boot.shape == (4, 3, 5)
    idx = np.repeat(np.arange(60), np.round(w[2] * 60).astype(int))  # resample 2 as indices
    np.testing.assert_allclose(boot[2], C.adjacent_corr(acts[idx]), atol=1e-10)
    uniform = C.bootstrap_corr(acts, weights=np.full((1, 60), 1 / 60))[0]
    np.testing.assert_allclose(uniform, C.adjacent_corr(acts), atol=1e-10)


@pytest.mark.parametrize("acc", [1, 8 * 5 * 3 * 16, 1 << 30])
@pytest.mark.parametrize("block", [1, 8 * 3 * 5 * 7, 1 << 30])
def test_bootstrap_corr_blocks_of_sites_give_every_pair(monkeypatch, acc, block):
    """Sites are read in chunks (1, 3 or all 7 sites), each chunk's first pair made with the
    site before it, whose moments are carried; samples in blocks of 1, 7 (not dividing 60) or
    all 60: every pair equals the resample's own r, in the unit basis and in a rotated one."""
    monkeypatch.setattr(C, "_ACC", acc)
    monkeypatch.setattr(C, "_BLOCK", block)
    monkeypatch.setattr(C, "_MIN_BLOCK_SAMPLES", 1)
    acts = _stack(60, np.array([0.5, 0.2, 0.8, 0.3, 0.6, 0.4]), d=5, seed=3)
    w = stats.bootstrap_weights(60, n_boot=3, seed=1)
    q = C.random_rotation(5, 4, seed=2)
    for basis in (None, q):
        boot = C.bootstrap_corr(acts, weights=w, basis=basis)
        assert boot.shape == (3, 6, 5 if basis is None else 4)
        for b in range(3):
            idx = np.repeat(np.arange(60), np.round(w[b] * 60).astype(int))
            np.testing.assert_allclose(boot[b], C.adjacent_corr(acts[idx], basis=basis), atol=1e-10)


def test_analyse_write_and_stream_are_the_basis_free_measures():
    acts = _stack(80, np.array([0.3, 0.6, 0.2, 0.9, 0.4]), d=6, seed=4)
    res = C.analyse(acts, n_boot=5, n_dirs=6)
    np.testing.assert_allclose(res.write, C.write_ratio(acts), rtol=1e-12)
    np.testing.assert_allclose(res.stream, C.stream_corr(acts), rtol=1e-12)


def test_split_within_across_and_difference():
    r = np.arange(5 * 2, dtype=float).reshape(5, 2)  # pairs 0..4 (3 layers), 2 units
    within, across = C.split_within_across(r)
    np.testing.assert_array_equal(within, r[[0, 2, 4]])
    np.testing.assert_array_equal(across, r[[1, 3]])
    r = np.array([[0.9, 0.8], [0.5, 0.9], [0.9, 0.8], [0.7, 0.9], [0.1, 0.1]])
    np.testing.assert_allclose(C.within_minus_across(r), [0.3, -0.1])
    with pytest.raises(ValueError, match="odd length"):
        C.split_within_across(np.ones((4, 2)))


def test_depth_trend():
    r = np.stack([np.linspace(0, 1, 6), -np.linspace(0, 1, 6), np.r_[0, 1, 0, 1, 0, 1.0]], axis=1)
    rho = C.depth_trend(r)
    assert rho[0] == pytest.approx(1) and rho[1] == pytest.approx(-1) and abs(rho[2]) < 0.6
    assert C.depth_trend(np.stack([r, -r])).shape == (2, 3)


def _run(acts, label="synthetic"):
    return SimpleNamespace(acts=acts, label=label)


def test_analyse_and_verdicts_on_a_stack_with_known_answers():
    # 4 layers: small attention writes (within), big MLP writes (across), both shrinking with depth
    L = 4
    g = np.empty(2 * L - 1)
    g[0::2] = 0.3 / np.arange(1, L + 1)
    g[1::2] = 1.0 / np.arange(1, L)
    acts = _stack(2000, g, d=16, seed=8)
    a = C.analyse(acts, n_boot=30, seed=0)
    assert a.r.shape == a.r_rot.shape == (2 * L - 1, 16) and a.null.shape == (1, 2 * L - 1, 16)
    assert a.frac_within_higher == 1.0 and a.median_diff.lo > 0
    assert a.median_diff.lo <= a.median_diff.estimate <= a.median_diff.hi
    assert a.null_q999 < 0.15
    vs = C.verdicts(_run(acts), chapter="t", analysis=a)
    assert [v.claim for v in vs] == ["C1", "C2", "C3", "C1 (random basis)"]
    assert vs[2].outcome == "agrees" and vs[0].outcome == "agrees"
    assert all(v.chapter == "t" and v.model == "synthetic" for v in vs)
    # reversed: big attention writes, small MLP writes -> C3 disagrees
    g2 = np.where(np.arange(2 * L - 1) % 2 == 0, 1.0, 0.1)
    v3 = C.verdicts(_run(_stack(2000, g2, d=16, seed=9)), n_boot=20)[2]
    assert v3.outcome == "disagrees" and v3.value < 0


def test_c2_rising_and_falling():
    rising = _stack(3000, np.full(7, 0.6), d=12, seed=10)  # same write, growing stream: r rises
    a = C.analyse(rising, n_boot=20)
    assert a.frac_rising.estimate > 0.9 and a.frac_rising.lo > 0.5
    falling = _stack(3000, 0.1 * 2.0 ** np.arange(7), d=12, seed=11)  # writes outgrow the stream
    v2 = C.verdicts(_run(falling), n_boot=20)[1]
    assert v2.outcome == "disagrees" and v2.value < 0.1


def test_c1_disagrees_when_units_are_rewritten():
    rng = np.random.default_rng(12)
    acts = rng.standard_normal((500, 4, 8))  # independent sites: r ~ 0
    v1 = C.verdicts(_run(acts), n_boot=20)[0]
    assert v1.outcome == "disagrees" and abs(v1.value) < 0.1


def test_errors():
    with pytest.raises(ValueError, match="n_samples, n_sites, d_model"):
        C.adjacent_corr(np.ones((10, 4)))
    with pytest.raises(ValueError, match="at least 3 samples"):
        C.adjacent_corr(np.ones((2, 4, 3)))
    with pytest.raises(ValueError, match="at least 2 sites"):
        C.adjacent_corr(np.ones((10, 1, 3)))
    with pytest.raises(ValueError, match=r"basis must have shape \(d_model, n_dirs\)"):
        C.adjacent_corr(np.ones((10, 4, 3)), basis=np.eye(4))
    with pytest.raises(ValueError, match="n_dirs"):
        C.random_rotation(4, n_dirs=5)
    with pytest.raises(ValueError, match="n_perm"):
        C.permutation_null(np.ones((10, 4, 3)), n_perm=0)
    with pytest.raises(ValueError, match="weights must have shape"):
        C.bootstrap_corr(np.ones((10, 4, 3)), weights=np.ones((2, 9)))
    with pytest.raises(ValueError, match="even n_sites"):
        C.analyse(np.random.default_rng(0).standard_normal((C.MIN_SAMPLES, 5, 3)))
    with pytest.raises(ValueError, match="at least 3 pairs"):
        C.depth_trend(np.ones((2, 3)))
    with pytest.raises(ValueError, match="at least 2 sites"):
        C.pair_names(["resid_pre.0"])
    assert C.pair_names(["a", "b", "c"]) == ["a→b", "b→c"]


def test_checks(capsys):
    assert C.check_adjacent_corr(C.adjacent_corr)
    assert not C.check_adjacent_corr(lambda a: np.ones((a.shape[1] - 1, a.shape[2])))
    assert not C.check_adjacent_corr(lambda a: C.adjacent_corr(a).T)
    assert not C.check_adjacent_corr(lambda a: 1 / 0)
    assert C.check_uncorrelated_write_r(lambda g: 1 / np.sqrt(1 + g**2))
    assert not C.check_uncorrelated_write_r(lambda g: 1 / (1 + g))
    assert "✗" in capsys.readouterr().out


@pytest.mark.slow
def test_real_capture(smol_acts):
    acts = smol_acts.acts
    r = C.adjacent_corr(acts[:, :6])
    assert r.shape == (5, acts.shape[2])
    for s, u in [(0, 0), (2, 100), (4, 575)]:
        want = np.corrcoef(acts[:, s, u].astype(float), acts[:, s + 1, u].astype(float))[0, 1]
        assert r[s, u] == pytest.approx(want, abs=1e-9)
    assert np.median(C.adjacent_corr(acts[:, -6:])) > C.HIGH_R  # late sites: units stay themselves
