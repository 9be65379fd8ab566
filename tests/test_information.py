from __future__ import annotations

import numpy as np
import pytest

from tdcourse import information as info
from tdcourse.capture import Activations, site_names


def _gauss_pair(rho: float, n: int, m: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, m))
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((n, m))
    return x, y


# --------------------------------------------------------------------------- estimators


def test_knn_mi_is_scikit_learns_estimate_for_many_columns_at_once():
    from sklearn.feature_selection import mutual_info_regression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 4))
    y = np.column_stack([x[:, 0] + 0.5 * rng.standard_normal(500), np.sin(3 * x[:, 1]), x[:, 2] ** 2,
                         100 + 1e3 * x[:, 3]])  # last: huge offset and scale, a linear copy
    ours = info.knn_mi(x, y, k=3)
    ref = np.array([mutual_info_regression(x[:, [i]], y[:, i], n_neighbors=3, random_state=0)[0] for i in range(4)])
    np.testing.assert_allclose(ours, ref, rtol=1e-9)


def test_knn_mi_matches_the_gaussian_value_and_zero_under_independence():
    x, y = _gauss_pair(0.8, 2000, 6)
    assert info.knn_mi(x, y).mean() == pytest.approx(-0.5 * np.log(1 - 0.64), abs=0.04)
    xi, yi = _gauss_pair(0.0, 2000, 6, seed=1)
    assert abs(info.knn_mi(xi, yi).mean()) < 0.02
    # shapes: any trailing shape, and a constant column gives NaN
    x3, y3 = _gauss_pair(0.5, 300, 6)
    assert info.knn_mi(x3.reshape(300, 2, 3), y3.reshape(300, 2, 3)).shape == (2, 3)
    y3[:, 0] = 1.0
    assert np.isnan(info.knn_mi(x3, y3)[0])
    with pytest.raises(ValueError, match="same shape"):
        info.knn_mi(x3, y3[:, :2])
    with pytest.raises(ValueError, match="k must be"):
        info.knn_mi(x3, y3, k=0)


def test_binned_mi_known_values():
    x, _ = _gauss_pair(0.0, 1000, 3)
    # y = x: every sample in a diagonal cell → log(bins) exactly (plug-in)
    np.testing.assert_allclose(info.binned_mi(x, x, bins=8, correction=False), np.log(8))
    # equal-count bins depend on ranks only: monotone transforms change nothing
    _, y = _gauss_pair(0.6, 1000, 3)
    a = info.binned_mi(x, y + x)
    np.testing.assert_allclose(info.binned_mi(np.exp(x), (y + x) ** 3), a)
    # independence: the Miller–Madow correction removes most of the plug-in bias (B−1)²/2n
    xi, yi = _gauss_pair(0.0, 1000, 200, seed=2)
    plug = info.binned_mi(xi, yi, bins=10, correction=False).mean()
    mm = info.binned_mi(xi, yi, bins=10).mean()
    assert plug == pytest.approx(81 / 2000, abs=0.01) and abs(mm) < 0.005
    assert info.binned_mi(xi, yi, strategy="uniform").shape == (200,)
    with pytest.raises(ValueError, match="bins"):
        info.binned_mi(x, y, bins=1)
    with pytest.raises(ValueError, match="strategy"):
        info.binned_mi(x, y, strategy="kmeans")


def test_gaussian_and_copula_mi():
    m = -0.5 * np.log(1 - 0.36)
    np.testing.assert_allclose(info.gaussian_mi(np.array([0.0, 0.6, -0.6])), [0.0, m, m])
    assert np.isinf(info.gaussian_mi(1.0))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        info.gaussian_mi(1.5)
    x, y = _gauss_pair(0.7, 3000, 2)
    np.testing.assert_allclose(info.pearson(x, y), 0.7, atol=0.03)
    # the copula value ignores monotone distortions; the Pearson one does not
    cx = info.copula_mi(x, y)
    np.testing.assert_allclose(info.copula_mi(np.exp(2 * x), y**3), cx)
    assert np.all(info.gaussian_mi(info.pearson(np.exp(2 * x), y**3)) < cx - 0.1)


def test_shuffled_and_successive():
    y = np.arange(40.0).reshape(10, 2, 2)
    s = info.shuffled(y, seed=1)
    assert s.shape == y.shape and not np.array_equal(s, y)
    np.testing.assert_array_equal(np.sort(s, axis=0), y)  # each column keeps its values
    acts = np.random.default_rng(0).standard_normal((5, 6, 4))
    x, yy = info.successive(acts, units=np.array([1, 3]))
    assert x.shape == yy.shape == (5, 5, 2)
    np.testing.assert_array_equal(yy[:, 0], acts[:, 1][:, [1, 3]])
    g = info.successive_mi(acts, "gaussian", units=np.array([1, 3]))
    np.testing.assert_allclose(g, info.gaussian_mi(info.pearson(x, yy)))
    assert info.successive_mi(acts, "binned", bins=2, null=True).shape == (5, 4)
    with pytest.raises(ValueError, match="method"):
        info.successive_mi(acts, "ksg")
    with pytest.raises(ValueError, match="unit indices"):
        info.successive(acts, units=np.array([7]))
    acts[[0, 3], 0] = acts[1, 0]  # samples 0, 1 and 3 share their first state
    group, size = info.same_input_groups(acts)
    assert list(size) == [3, 3, 1, 3, 1] and group[0] == group[1] == group[3] != group[2]
    with pytest.raises(ValueError, match="out of range"):
        info.same_input_groups(acts, site=9)
    assert list(info.pick_units(576, 5, seed=0)) == sorted(set(info.pick_units(576, 5, seed=0)))
    with pytest.raises(ValueError, match="n_units"):
        info.pick_units(10, 11)


# --------------------------------------------------------------------------- the shape test and the verdict


def test_dip_and_recovery():
    rng = np.random.default_rng(0)
    steps = np.arange(40)
    dip = np.where(steps < 3, 2.0, 0.3 + 0.04 * (steps - 3))  # falls to 15 %, then climbs
    d = info.dip_and_recovery(dip + 0.05 * rng.standard_normal((30, 40)), n_boot=300)
    assert d.drops and d.climbs and d.low == 3 and d.rel_drop.estimate == pytest.approx(0.85, abs=0.03)
    rising = info.dip_and_recovery(0.05 * steps + 0.05 * rng.standard_normal((30, 40)), n_boot=300)
    assert not rising.drops and rising.climbs
    flat = info.dip_and_recovery(1 + 0.05 * rng.standard_normal((30, 40)), n_boot=300)
    assert not flat.drops and not flat.climbs
    with pytest.raises(ValueError, match="4 steps"):
        info.dip_and_recovery(np.ones((3, 4)))


def test_dip_and_recovery_on_a_four_layer_model():
    """7 site steps (4 layers): early window of 2, then 5 steps for the climb."""
    rng = np.random.default_rng(1)
    curve = np.array([2.0, 0.4, 0.5, 0.7, 0.9, 1.1, 1.3])
    d = info.dip_and_recovery(curve + 0.05 * rng.standard_normal((30, 7)), n_boot=300)
    assert d.early == 2 and d.low == 1
    assert d.rel_drop.estimate == pytest.approx(0.8, abs=0.03)
    assert d.drops and d.climbs
    # the mean of the last 2 steps minus the minimum
    assert d.climb.estimate == pytest.approx(1.2 - 0.4, abs=0.03)


def _stream(noise: np.ndarray, n: int = 500, d: int = 8, seed: int = 0) -> Activations:
    """h_{p+1} = h_p + noise_p · ε: the MI of step p falls as noise_p grows."""
    rng = np.random.default_rng(seed)
    h = [rng.standard_normal((n, d))]
    for s in noise:
        h.append(h[-1] / h[-1].std(0) + s * rng.standard_normal((n, d)))
    acts = np.stack(h, axis=1).astype(np.float32)
    return Activations(acts=acts, sites=site_names(acts.shape[1] // 2), texts=[""] * n)


def test_verdict_on_a_synthetic_dip_and_on_a_flat_profile():
    # 16 sites, 15 steps: low noise, a noisy stretch at steps 1-2, then the noise shrinks with depth
    noise = np.r_[0.3, 3.0, 3.0, np.linspace(2.0, 0.2, 12)]
    (v,) = info.verdicts(_stream(noise), chapter="t", n_units=8, n_boot=300)
    assert v.claim == "C8" and v.outcome == "agrees" and v.value > 0.5
    (flat,) = info.verdicts(_stream(np.full(15, 0.8), seed=1), n_units=8, n_boot=300)
    assert flat.outcome == "disagrees"


def test_checks_accept_right_and_reject_wrong(capsys):
    assert info.check_gaussian_mi(lambda r: -0.5 * np.log(1 - np.asarray(r) ** 2))
    assert not info.check_gaussian_mi(lambda r: -np.log(1 - np.asarray(r) ** 2))
    assert info.check_binned_mi(lambda x, y, b: info.binned_mi(x, y, bins=b, correction=False))
    assert not info.check_binned_mi(lambda x, y, b: info.binned_mi(x, y, bins=b))
    assert "✗" in capsys.readouterr().out


@pytest.mark.slow
def test_real_capture_first_mlp_step_is_nonlinear(smol_acts):
    units = info.pick_units(smol_acts.d_model, 16, seed=0)
    x, y = info.successive(smol_acts.acts[:, :4], units)  # steps 0-2 only: cheap
    knn = info.knn_mi(x, y).mean(1)
    gauss = info.gaussian_mi(info.pearson(x, y)).mean(1)
    assert knn[1] < 0.5 * knn[0]  # MI falls at the first MLP step ...
    assert knn[1] > gauss[1] + 0.05  # ... but less than r says: the dependence there is non-linear
