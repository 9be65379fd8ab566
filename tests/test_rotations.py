"""Tests of tdcourse.rotations on synthetic curves whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from tdcourse import rotations as rot
from tdcourse.capture import Activations, site_names
from tdcourse.verdicts import Verdict

L = np.arange(61, dtype=float)


def rotation_count_reference(a: np.ndarray) -> float:
    """The definition, one 1-D curve at a time: tangent angles, wrapped differences."""
    g = np.gradient(a)
    x, y = a - a[0], g - g[0]
    theta = np.arctan2(np.diff(y), np.diff(x))
    dtheta = (np.diff(theta) + np.pi) % (2 * np.pi) - np.pi
    return float(dtheta.sum() / (2 * np.pi))


def oscillation(periods: float, n: int = 61, growth: float = 1.0) -> np.ndarray:
    """sin with ``periods`` full periods over n sites; amplitude multiplied by ``growth`` end to end.

    A sine starts and ends at a zero crossing, where the one-sided gradient at the ends is
    accurate; a cosine would lose about a quarter turn there.
    """
    l = np.arange(n, dtype=float)
    return growth ** (l / (n - 1)) * np.sin(2 * np.pi * periods * l / (n - 1))


# --------------------------------------------------------------------------- portraits and R


def test_depth_gradient_of_a_parabola_is_linear_inside():
    g = rot.depth_gradient(L**2)
    np.testing.assert_allclose(g[1:-1], 2 * L[1:-1])
    assert g[0] == 1.0 and g[-1] == L[-1] ** 2 - L[-2] ** 2


def test_phase_portrait_starts_at_origin_and_keeps_shape():
    a = np.random.default_rng(0).standard_normal((4, 5, 30))
    x, y = rot.phase_portrait(a)
    assert x.shape == y.shape == a.shape
    assert np.all(x[..., 0] == 0) and np.all(y[..., 0] == 0)
    np.testing.assert_allclose(x[..., 3], a[..., 3] - a[..., 0])


@pytest.mark.parametrize("periods", [1, 3, 5])
def test_rotation_count_of_a_sine_is_minus_its_periods(periods):
    # (a, ∇a) of a sampled sine is an ellipse run clockwise once per period.
    r = rot.rotation_count(oscillation(periods))
    assert r == pytest.approx(-periods, abs=0.1)


def test_straight_and_gently_curved_curves_barely_turn():
    assert rot.rotation_count(0.3 * L + 2) == pytest.approx(0.0, abs=1e-12)
    assert abs(rot.rotation_count(L**2)) < 0.25  # a parabola's tangent turns less than a quarter turn


def test_rotation_count_matches_the_definition_on_random_walks():
    a = np.random.default_rng(1).standard_normal((40, 60)).cumsum(-1)
    want = np.array([rotation_count_reference(row) for row in a])
    np.testing.assert_allclose(rot.rotation_count(a), want, atol=1e-9)
    np.testing.assert_allclose(rot.turning_angles(a).sum(-1) / (2 * np.pi), want, atol=1e-9)


def test_rotation_count_is_vectorised_over_leading_axes_and_scale_free():
    a = np.random.default_rng(2).standard_normal((3, 4, 25)).cumsum(-1)
    r = rot.rotation_count(a)
    assert r.shape == (3, 4)
    np.testing.assert_allclose(r[1, 2], rot.rotation_count(a[1, 2]))
    np.testing.assert_allclose(rot.rotation_count(7.5 * a - 3.0), r, atol=1e-9)
    np.testing.assert_allclose(rot.rotation_count(a.astype(np.float32)), r, atol=1e-3)


def test_bad_curves_raise_value_error():
    with pytest.raises(ValueError, match="at least 3 sites"):
        rot.rotation_count(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        rot.rotation_count(np.array([0.0, np.nan, 1.0, 2.0]))
    with pytest.raises(ValueError, match="n_samples, n_sites, d_model"):
        rot.unit_trajectories(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="reading"):
        rot.unit_trajectories(np.zeros((2, 5, 3)), reading="median")


def test_unit_trajectories_layouts():
    acts = np.random.default_rng(3).standard_normal((6, 10, 4)).astype(np.float32)
    m = rot.unit_trajectories(acts, "mean")
    p = rot.unit_trajectories(acts, "per-sample")
    assert m.shape == (4, 10) and p.shape == (6, 4, 10)
    np.testing.assert_allclose(m, acts.mean(0, dtype=np.float64).T, rtol=1e-12)  # a float64 mean, as documented
    np.testing.assert_array_equal(p[2, 1], acts[2, :, 1])


# --------------------------------------------------------------------------- the shuffle null


def test_layer_permutations_are_seeded_permutations():
    p = rot.layer_permutations(12, 50, seed=4)
    assert p.shape == (50, 12)
    assert (np.sort(p, axis=1) == np.arange(12)).all()
    np.testing.assert_array_equal(p, rot.layer_permutations(12, 50, seed=4))
    assert not np.array_equal(p, rot.layer_permutations(12, 50, seed=5))
    with pytest.raises(ValueError):
        rot.layer_permutations(1, 5)


def test_shuffled_equals_a_loop_over_the_same_orders():
    a = np.random.default_rng(6).standard_normal((2, 5, 30)).cumsum(-1)
    perms = rot.layer_permutations(30, 17, seed=0)
    got = rot.shuffled(a, rot.rotation_count, perms=perms)
    assert got.shape == (17, 2, 5)
    want = np.array([[[rotation_count_reference(a[i, j, p]) for j in range(5)] for i in range(2)] for p in perms])
    np.testing.assert_allclose(got, want, atol=1e-9)
    # any statistic goes through the same machinery
    g = rot.shuffled(a, rot.amplitude_growth, perms=perms)
    np.testing.assert_allclose(g[3], rot.amplitude_growth(a[..., perms[3]]))
    # the identity order gives back the real value
    ident = rot.shuffled(a, rot.rotation_count, perms=np.arange(30)[None])
    np.testing.assert_allclose(ident[0], rot.rotation_count(a), atol=1e-12)


def test_shuffled_rejects_bad_orders():
    a = np.zeros((3, 10)) + np.arange(10)
    with pytest.raises(ValueError, match="shape"):
        rot.shuffled(a, rot.rotation_count, perms=np.zeros((4, 9), dtype=int))
    with pytest.raises(ValueError, match="permutation"):
        rot.shuffled(a, rot.rotation_count, perms=np.zeros((4, 10), dtype=int))


def test_shuffling_a_smooth_oscillation_makes_it_turn_like_noise():
    real = rot.rotation_count(oscillation(3))
    null = rot.shuffled_rotation_counts(oscillation(3), n_shuffles=300, seed=0)
    white = rot.reference_rotation_counts(61, "white", n_curves=3000).mean()
    assert null.shape == (300,)
    assert null.mean() < real - 5          # far more (clockwise) turning than 3 periods
    assert null.mean() == pytest.approx(white, abs=1.0)


def test_reference_counts_grow_linearly_with_sites():
    w30 = rot.reference_rotation_counts(32, "white", n_curves=4000).mean()
    w60 = rot.reference_rotation_counts(62, "white", n_curves=4000).mean()
    assert w60 / w30 == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError):
        rot.reference_rotation_counts(30, "pink")


def test_rescale_and_prefix_counts():
    assert rot.rescale_count(10.0, 60) == pytest.approx(10.0 * 62 / 58)
    assert rot.rescale_count(5.0, 64) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        rot.rescale_count(1.0, 2)
    a = oscillation(4)
    pre = rot.prefix_rotation_counts(np.stack([a, 2 * a]), [16, 31, 61])
    assert pre.shape == (3, 2)
    np.testing.assert_allclose(pre[-1], rot.rotation_count(np.stack([a, 2 * a])))
    np.testing.assert_allclose(pre[:, 0], [-1, -2, -4], atol=0.15)  # a quarter of the sites: one period
    with pytest.raises(ValueError, match="3 … 61"):
        rot.prefix_rotation_counts(a, [2, 10])


# --------------------------------------------------------------------------- orbit or spiral


@pytest.mark.parametrize("growth, expect", [(1.0, 1.0), (8.0, 4.0), (1 / 8, 1 / 4)])
def test_amplitude_growth_of_oscillations(growth, expect):
    # amplitude × growth end to end: the last and first thirds are 2/3 of the depth apart,
    # so their amplitudes differ by growth ** (2/3): 1, 4, 1/4.
    g = rot.amplitude_growth(oscillation(6, growth=growth))
    assert g == pytest.approx(expect, rel=0.15)


def test_amplitude_growth_is_scale_free_and_checks_frac():
    a = np.stack([oscillation(5, growth=g) for g in (1, 4, 9)])
    np.testing.assert_allclose(rot.amplitude_growth(3 * a + 1), rot.amplitude_growth(a), rtol=1e-9)
    assert np.all(np.diff(rot.amplitude_growth(a)) > 0)
    with pytest.raises(ValueError, match="frac"):
        rot.amplitude_growth(a, frac=0.7)


def test_classify_units():
    r = np.array([-5, -5, -5, -0.4, -3, np.nan])
    g = np.array([1.0, 3.0, 0.2, 5.0, 2.0, 1.0])
    got = rot.classify_units(r[:5], g[:5])
    assert got.tolist() == ["orbit", "outward spiral", "inward spiral", "no full turn", "outward spiral"]
    with pytest.raises(ValueError, match="same shape"):
        rot.classify_units(r[:5], g[:3])
    with pytest.raises(ValueError, match="factor"):
        rot.classify_units(r[:5], g[:5], factor=1.0)
    with pytest.raises(ValueError, match="NaN"):            # an undefined R is never classified silently
        rot.classify_units(r, g)


def test_example_units_pick_the_most_turning_of_each_class():
    classes = np.array(["orbit", "outward spiral", "orbit", "orbit", "outward spiral"], dtype=object)
    r = np.array([-2.0, -9.0, -7.0, -4.0, -1.0])
    assert rot.example_units(classes, r, per_class=2) == [2, 3, 1, 4]
    assert rot.example_units(classes, r, per_class=1, which=("inward spiral",)) == []


# --------------------------------------------------------------------------- tests and verdicts


def _acts(units: list[np.ndarray], n_samples: int = 30, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """(n_samples, n_sites, d) array whose unit u follows units[u] plus small noise per sample."""
    rng = np.random.default_rng(seed)
    base = np.stack(units, axis=1)  # (n_sites, d)
    return (base[None] + noise * rng.standard_normal((n_samples,) + base.shape)).astype(np.float32)


def _run(acts: np.ndarray) -> Activations:
    return Activations(acts=acts, sites=site_names(acts.shape[1] // 2), texts=[""] * acts.shape[0])


def test_rotation_test_finds_slow_oscillations_turn_less_than_the_null():
    acts = _acts([oscillation(3, n=60), oscillation(2, n=60), oscillation(4, n=60)])
    t = rot.rotation_test(acts, "mean", n_shuffles=200, seed=0)
    assert t.real.shape == (3,) and t.null.shape == (200, 3)
    np.testing.assert_allclose(t.real, [-3, -2, -4], atol=0.2)
    assert t.z > 5 and t.p < 0.01
    assert t.share_beyond() == (0.0, 1.0)
    assert t.abs_rescaled == pytest.approx(3 * 62 / 58, abs=0.3)
    ps = rot.rotation_test(acts, "per-sample", n_shuffles=30, seed=0, n_samples=10)
    assert ps.n_samples == 10 and ps.real.shape == (3,) and ps.null.shape == (30, 3)
    np.testing.assert_allclose(ps.real, t.real, atol=0.5)
    with pytest.raises(ValueError, match="n_samples"):
        rot.rotation_test(acts, "per-sample", n_samples=31)


def test_verdicts_follow_the_stated_criteria():
    # Ten periods over 60 sites: R ≈ −10, i.e. ≈ 10.7 at 64 sites, and smooth (unlike the null).
    # Half the units grow 16× in amplitude (outward spirals), half stay steady (orbits).
    units = [oscillation(10, n=60, growth=16.0 if u % 2 else 1.0) for u in range(8)]
    run = _run(_acts(units, noise=0.01))
    an = rot.analyse(run.acts, n_shuffles=200, n_samples=10, n_shuffles_per_sample=40, n_shuffles_growth=50)
    vs = rot.verdicts(run, "05_rotations", analysis=an)
    assert [v.claim for v in vs] == ["C9", "C9", "C10"] and all(isinstance(v, Verdict) for v in vs)
    assert vs[0].value == pytest.approx(10 * 62 / 58, abs=0.5)
    assert [v.outcome for v in vs] == ["agrees", "agrees", "agrees"]
    assert an.shares()["orbit"] == 0.5 and an.shares()["outward spiral"] == 0.5
    assert vs[2].chapter == "05_rotations"

    # Straight ramps: no turning at all. The null differs, but R is far from 10: partly.
    # No unit turns once, so neither orbits nor spirals: C10 disagrees.
    ramps = _run(_acts([np.linspace(0, 1 + u, 60) for u in range(6)], noise=0.0))
    vs = rot.verdicts(ramps, "t", n_shuffles=100, n_samples=5, n_shuffles_per_sample=40, n_shuffles_growth=20)
    assert vs[0].outcome == "partly" and vs[0].value == pytest.approx(0.0, abs=1e-6)
    assert vs[2].outcome == "disagrees"


# --------------------------------------------------------------------------- exercise checks


def test_check_helpers_accept_the_reference_and_reject_a_wrong_answer(capsys):
    assert rot.check_rotation_count(rot.rotation_count)

    def unwrapped(a):  # forgets to wrap the angle differences
        g = np.gradient(a, axis=-1)
        th = np.arctan2(np.diff(g, axis=-1), np.diff(a, axis=-1))
        return np.diff(th, axis=-1).sum(-1) / (2 * np.pi)

    assert not rot.check_rotation_count(unwrapped)
    assert not rot.check_rotation_count(lambda a: 1 / 0)
    assert rot.check_amplitude_growth(rot.amplitude_growth)
    assert not rot.check_amplitude_growth(lambda a: np.ones(np.shape(a)[:-1]))
    out = capsys.readouterr().out
    assert "All checks passed." in out and "✗" in out


# --------------------------------------------------------------------------- the real capture


@pytest.mark.slow
def test_smollm2_rotation_counts(smol_acts):
    acts = smol_acts.acts
    t = rot.rotation_test(acts, "mean", n_shuffles=100, seed=0)
    assert t.real.shape == (acts.shape[2],) and np.isfinite(t.real).all()
    assert 5 < abs(t.mean_real) < 15          # "about 10" on 60 sites
    assert abs(t.z) > 3                       # and not the layer-shuffled value


def test_rms_normalized_mean_trajectories_divide_out_the_growth():
    """Equal to the mean over samples of each state divided by its RMS over units (float64),
    so a stream that only grows gives the same curve at every site."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 1, 6))
    grow = np.exp(np.linspace(0, 3, 8))[None, :, None]
    acts = (base * grow).astype(np.float32)
    got = rot.rms_normalized_mean_trajectories(acts)
    a = acts.astype(np.float64)
    want = (a / np.sqrt((a**2).mean(-1, keepdims=True))).mean(0).T
    assert got.shape == (6, 8)
    np.testing.assert_allclose(got, want, rtol=1e-12)  # float64 both: only the summation order may differ
    assert np.ptp(got, axis=1) == pytest.approx(np.zeros(6), abs=1e-6)


def test_the_fast_arctan2_equals_numpys_to_an_ulp_and_keeps_signed_zeros():
    rng = np.random.default_rng(3)
    y = rng.standard_normal(100_000) * 10.0 ** rng.integers(-8, 8, 100_000)
    x = rng.standard_normal(100_000) * 10.0 ** rng.integers(-8, 8, 100_000)
    want = np.arctan2(y, x)
    got = rot._arctan2_into(y.copy(), x)
    assert np.all(np.abs(got - want) <= 2 * np.spacing(np.abs(want)) + 1e-300)  # within an ulp each of the exact value
    # The cases _wrap_half_open relies on: the sign of a zero picks -pi or +pi, the axes are exact.
    y = np.array([0.0, -0.0, 0.0, -0.0, 1.0, -1.0, 0.0])
    x = np.array([-1.0, -1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    got = rot._arctan2_into(y.copy(), x)
    np.testing.assert_array_equal(got, np.arctan2(y, x))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(np.arctan2(y, x)))


def test_the_hot_path_equals_the_reference_turning_angles():
    rng = np.random.default_rng(4)
    traj = rng.standard_normal((300, 40)).cumsum(-1)
    np.testing.assert_allclose(rot.rotation_count(traj), rot.turning_angles(traj).sum(-1) / (2 * np.pi),
                               rtol=0, atol=1e-12)
