from __future__ import annotations

import numpy as np
import pytest

from tdcourse import geometry, stats
from tdcourse.capture import Activations, site_names


def _acts(arr: np.ndarray) -> Activations:
    return Activations(acts=arr.astype(np.float32), sites=site_names(arr.shape[1] // 2), texts=[""] * arr.shape[0])


# --------------------------------------------------------------------------- norm and density


def test_norms_shape_and_values():
    acts = np.zeros((2, 4, 3))
    acts[:, :, 0] = 3.0
    acts[:, :, 1] = 4.0
    np.testing.assert_allclose(geometry.norms(acts), np.full((2, 4), 5.0))
    with pytest.raises(ValueError, match="n_samples, n_sites, d_model"):
        geometry.norms(np.ones((4, 3)))


def test_hoyer_density_known_values():
    onehot = np.zeros(10)
    onehot[2] = 5.0
    assert geometry.hoyer_density(onehot) == pytest.approx(0.0)
    assert geometry.hoyer_density(np.array([2.0, -2, 2, -2, 2])) == pytest.approx(1.0)
    # a Gaussian vector: ‖h‖₁/‖h‖₂ ≈ √(2/π)·√D
    d = 4096
    g = np.random.default_rng(0).standard_normal((20, d))
    want = (np.sqrt(2 / np.pi) * np.sqrt(d) - 1) / (np.sqrt(d) - 1)
    assert geometry.hoyer_density(g).mean() == pytest.approx(want, abs=0.005)
    assert geometry.hoyer_density(g).shape == (20,)


def test_trimming_removes_a_massive_unit():
    g = np.random.default_rng(1).standard_normal((50, 500))
    massive = g.copy()
    massive[:, 7] = 300.0  # one unit holds most of the energy
    raw, trimmed = geometry.hoyer_density(massive), geometry.hoyer_density(massive, trim=0.01)
    assert raw.mean() < 0.5 < trimmed.mean()
    assert trimmed.mean() == pytest.approx(geometry.hoyer_density(g, trim=0.01).mean(), abs=0.01)
    # the fraction above τ·RMS: the massive unit inflates the RMS, trimming restores the Gaussian share
    f_raw = geometry.fraction_above(massive, 0.5)
    f_trim = geometry.fraction_above(massive, 0.5, trim=0.01)
    assert f_raw.mean() < 0.1 and f_trim.mean() == pytest.approx(0.617, abs=0.03)  # P(|z| > 0.5)


def test_fraction_above_known_values_and_shapes():
    h = np.array([1.0, 1, 1, 1, 0, 0, 0, 0])  # RMS = √0.5 ≈ 0.707
    np.testing.assert_allclose(geometry.fraction_above(h, [0.5, 1.0, 1.5]), [0.5, 0.5, 0.0])
    assert geometry.fraction_above(h, 0.9, relative=False) == pytest.approx(0.5)
    acts = np.random.default_rng(0).standard_normal((3, 4, 16))
    assert geometry.fraction_above(acts, (0.1, 1.0)).shape == (2, 3, 4)
    assert geometry.fraction_above(acts, 1.0).shape == (3, 4)
    with pytest.raises(ValueError, match="positive"):
        geometry.fraction_above(h, [0.0])
    with pytest.raises(ValueError, match="trim"):
        geometry.fraction_above(h, 1.0, trim=0.7)


def test_density_indices_keys():
    acts = np.random.default_rng(0).standard_normal((3, 4, 64))
    d = geometry.density_indices(acts, taus=(0.5,), trim=0.05)
    assert list(d) == ["Hoyer", "Hoyer, trimmed", "|h| > 0.5·RMS", "|h| > 0.5·RMS, trimmed"]
    assert all(v.shape == (3, 4) for v in d.values())


# --------------------------------------------------------------------------- direction and speed


def _rotating(n_sites: int, theta: float, radius: np.ndarray) -> np.ndarray:
    """One sample per radius scale, rotating by theta per site in the first two of 4 dimensions."""
    ang = theta * np.arange(n_sites)
    acts = np.zeros((radius.size, n_sites, 4))
    acts[:, :, 0] = radius[:, None] * np.cos(ang)
    acts[:, :, 1] = radius[:, None] * np.sin(ang)
    return acts


def test_cosine_of_a_rotation():
    acts = _rotating(6, 0.3, np.array([1.0, 2.0]))
    np.testing.assert_allclose(geometry.consecutive_cosine(acts), np.cos(0.3), rtol=1e-12)
    np.testing.assert_allclose(geometry.consecutive_cosine(acts, step="layer"), np.cos(0.6), rtol=1e-12)
    assert geometry.consecutive_cosine(acts, step="layer").shape == (2, 2)  # 3 layers → 2 layer steps
    with pytest.raises(ValueError, match="step must be"):
        geometry.consecutive_cosine(acts, step="block")


def test_velocity_and_acceleration_of_a_quadratic_path():
    l = np.arange(8.0)
    acts = np.zeros((1, 8, 3))
    acts[0, :, 0] = l**2  # V_l = (l+1)² − l² = 2l + 1, A = 2
    v = geometry.velocity(acts)
    np.testing.assert_allclose(v[0], 2 * l[:-1] + 1)
    np.testing.assert_allclose(geometry.acceleration(v), 2.0)
    rel = geometry.velocity(acts, relative=True)
    assert np.isinf(rel[0, 0]) or np.isnan(rel[0, 0])  # ‖h_0‖ = 0
    np.testing.assert_allclose(rel[0, 1:], (2 * l[1:-1] + 1) / l[1:-1] ** 2)
    np.testing.assert_allclose(geometry.velocity(acts, step="layer")[0], (l[2::2] ** 2 - l[:-2:2] ** 2))
    with pytest.raises(ValueError, match="n_steps"):
        geometry.acceleration(np.ones(3))


def test_step_sites_names():
    sites = site_names(2)
    assert geometry.step_sites(sites) == ["resid_pre.0→resid_mid.0", "resid_mid.0→resid_pre.1", "resid_pre.1→resid_mid.1"]
    assert geometry.step_sites(sites, "layer") == ["resid_pre.0→resid_pre.1"]


# --------------------------------------------------------------------------- the trend statistic (stats.curve_trend)


def test_curve_trend_detects_a_rise_and_not_noise():
    rng = np.random.default_rng(0)
    up = rng.normal(size=(300, 20)) + np.linspace(0, 2, 20)
    t = stats.curve_trend(up, n_boot=300)
    # 7 of 20 points per window: early mean 3/19·2, late mean 16/19·2 → change 26/19
    assert t.rho.lo > 0.9 and t.change.lo < 26 / 19 < t.change.hi
    assert t.ratio.estimate == pytest.approx(t.late.estimate / t.early.estimate)
    flat = rng.normal(size=(300, 20)) + 5
    f = stats.curve_trend(flat, n_boot=300)
    assert f.change.lo < 0 < f.change.hi and f.ratio.lo < 1 < f.ratio.hi
    with pytest.raises(ValueError, match="n_obs"):
        stats.curve_trend(np.ones((1, 5)))
    with pytest.raises(ValueError, match="NaN"):
        stats.curve_trend(np.full((4, 5), np.nan))


# --------------------------------------------------------------------------- verdicts


def test_verdicts_on_synthetic_streams():
    rng = np.random.default_rng(0)
    n, n_sites, d = 200, 12, 64
    depth = np.arange(n_sites)
    # "trained-like": sparse early (few active units), dense late; norm grows, steps grow
    active = np.clip((4 + depth * 5), 0, d)
    mask = np.arange(d)[None, None, :] < active[None, :, None]
    base = rng.standard_normal((n, 1, d))
    walk = np.cumsum(rng.standard_normal((n, n_sites, d)) * (1 + depth)[None, :, None] * 0.02, axis=1)
    grown = (base + walk) * mask * (1 + depth)[None, :, None] ** 2
    vs = geometry.verdicts(_acts(grown), chapter="t", n_boot=200)
    assert [v.claim for v in vs] == ["C4", "C5", "C6"]
    c4, _, c6 = vs
    assert c4.outcome in ("agrees", "partly") and c4.value > 0.9
    assert c6.outcome == "agrees"
    # a stationary stream: independent Gaussian vectors, same scale everywhere → nothing rises
    still = rng.standard_normal((n, n_sites, d))
    s4, s5, s6 = geometry.verdicts(_acts(still), n_boot=200)
    assert s4.outcome == "disagrees" and s5.outcome == "disagrees" and s6.outcome == "disagrees"


def test_checks_accept_right_and_reject_wrong(capsys):
    right = lambda h: (np.abs(h).sum(-1) / np.linalg.norm(h, axis=-1) - 1) / (np.sqrt(h.shape[-1]) - 1)
    assert geometry.check_hoyer_density(right)
    assert not geometry.check_hoyer_density(lambda h: np.abs(h).sum(-1) / np.linalg.norm(h, axis=-1))
    assert geometry.check_cosine_from_norms(lambda a, b, v: (a**2 + b**2 - v**2) / (2 * a * b))
    assert not geometry.check_cosine_from_norms(lambda a, b, v: v / a)
    assert "✗" in capsys.readouterr().out


@pytest.mark.slow
def test_real_capture_norm_growth_and_massive_units(smol_acts):
    acts = smol_acts.acts
    nrm = np.median(geometry.norms(acts), axis=0)
    assert nrm[-1] > 5 * nrm[1]  # the stream grows
    raw = geometry.hoyer_density(acts[:, -1]).mean()
    trimmed = geometry.hoyer_density(acts[:, -1], trim=geometry.DEFAULT_TRIM).mean()
    assert trimmed > raw + 0.1  # a few massive units make the raw index read "sparse"


def test_band_lines_renders_and_checks_shapes():
    import json

    import vl_convert as vlc

    from tdcourse import plots

    x = np.arange(5.0)
    chart = plots.band_lines(x, {"a": x**2, "b": np.where(x % 2 == 0, x, np.nan)}, "step", "v",
                             bands={"a": (x**2 - 1, x**2 + 1)}, reference=0.0, log_y=False)
    assert vlc.vegalite_to_svg(json.dumps(chart.to_dict())).startswith("<svg")
    with pytest.raises(ValueError, match="one value per x"):
        plots.band_lines(x, {"a": np.arange(4.0)}, "step", "v")


@pytest.mark.parametrize("block_bytes", [1, 5000, 10**9])
def test_blockwise_measures_equal_whole_array_formulas(monkeypatch, block_bytes):
    """Density, velocity and cosine run a block of vectors at a time (no full-size float64
    copy at 8B scale); every block size gives the whole-array formulas' values."""
    monkeypatch.setattr(geometry, "_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(5)
    acts = (rng.normal(size=(7, 6, 40)) * np.linspace(1, 4, 6)[None, :, None]).astype(np.float32)
    acts[:, :, 3] *= 30  # a massive unit
    h = acts.astype(np.float64)
    a = np.abs(h)
    kept = np.sort(a, axis=-1)[..., :-1]  # trim 1 % of 40 units = the largest one
    dens = geometry.density_indices(acts, taus=(0.5, 1.0), trim=0.01)
    d = a.shape[-1]
    assert dens["Hoyer"] == pytest.approx((a.sum(-1) / np.sqrt((a**2).sum(-1)) - 1) / (np.sqrt(d) - 1), rel=1e-12)
    assert dens["Hoyer, trimmed"] == pytest.approx(
        (kept.sum(-1) / np.sqrt((kept**2).sum(-1)) - 1) / (np.sqrt(d - 1) - 1), rel=1e-12)
    rms, rms_t = np.sqrt((a**2).mean(-1)), np.sqrt((kept**2).mean(-1))
    assert dens["|h| > 0.5·RMS"] == pytest.approx((a > 0.5 * rms[..., None]).mean(-1))
    assert dens["|h| > 1·RMS, trimmed"] == pytest.approx((a > rms_t[..., None]).mean(-1))
    assert dens["Hoyer"].shape == (7, 6)
    # the single-index functions agree with density_indices
    assert geometry.hoyer_density(acts, 0.01) == pytest.approx(dens["Hoyer, trimmed"], rel=1e-12)
    assert geometry.fraction_above(acts, (0.5, 1.0), trim=0.01)[1] == pytest.approx(dens["|h| > 1·RMS, trimmed"])
    # velocity (site and layer steps, relative) and cosine
    v = np.linalg.norm(h[:, 1:] - h[:, :-1], axis=-1)
    assert geometry.velocity(acts) == pytest.approx(v, rel=1e-6)
    assert geometry.velocity(acts, relative=True) == pytest.approx(v / np.linalg.norm(h[:, :-1], axis=-1), rel=1e-6)
    vl = np.linalg.norm(h[:, 2::2] - h[:, :-2:2], axis=-1)
    assert geometry.velocity(acts, "layer") == pytest.approx(vl, rel=1e-6)
    cos = lambda x, y: (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)  # noqa: E731
    assert geometry.consecutive_cosine(acts) == pytest.approx(cos(h[:, :-1], h[:, 1:]), rel=1e-6)
    assert geometry.consecutive_cosine(acts, "layer") == pytest.approx(cos(h[:, :-2:2], h[:, 2::2]), rel=1e-6)


def test_verdicts_reuse_density():
    rng = np.random.default_rng(0)
    acts = np.cumsum(rng.normal(size=(30, 8, 16)), axis=1).astype(np.float32)
    run = Activations(acts=acts, sites=site_names(4), texts=[""] * 30)
    dens = geometry.density_indices(acts)
    fresh = geometry.verdicts(run, n_boot=50)
    reused = geometry.verdicts(run, n_boot=50, density=dens)
    assert [v.value for v in reused] == [v.value for v in fresh]
    # the density passed in is the one used
    flat = {k: np.ones_like(v) * np.arange(8)[None, :] for k, v in dens.items()}
    assert geometry.verdicts(run, n_boot=50, density=flat)[0].outcome == "agrees"


def test_chapter_3_states_the_c6_floor_its_verdict_applies():
    """The criterion a learner reads before the result names the late / early floor that
    geometry.verdicts applies to C6 (a learner found the floor only in the findings' criteria)."""
    import json
    from pathlib import Path

    from tdcourse.geometry import MIN_VELOCITY_RATIO

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "03_growth.ipynb").read_text())
    text = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]
    criterion = " ".join(next(t for t in text if "C6 **agrees**" in t).split())
    assert f"at least {MIN_VELOCITY_RATIO:g} times its first third" in criterion
    assert "`geometry.MIN_VELOCITY_RATIO`" in criterion
