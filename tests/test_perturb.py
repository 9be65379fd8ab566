"""Tests of tdcourse.perturb: the PCA grid, the injection hook, the recovery measures, C13's verdict."""

from __future__ import annotations

import numpy as np
import pytest

from tdcourse import perturb
from tdcourse.perturb import Flows, Plane


# --------------------------------------------------------------------------- plane and grid


def test_map_layers_by_relative_depth():
    assert perturb.map_layers(30) == (0, 7, 14, 22, 29)
    assert perturb.map_layers(32) == perturb.PAPER_LAYERS
    assert perturb.map_layers(3, (0, 31)) == (0, 2)
    with pytest.raises(ValueError, match="paper_layers"):
        perturb.map_layers(30, (0, 32))
    with pytest.raises(ValueError, match="positive"):
        perturb.map_layers(0)


def test_injection_layers_drop_repeats_and_keep_the_verdicts_layers():
    # 4 layers: paper 7 and 15 both map to layer 1; the verdict reads 7, so 15 goes
    assert perturb.map_layers(4) == (0, 1, 1, 2, 3)
    assert perturb.injection_layers(4) == ((0, 1, 2, 3), (0, 7, 23, 31))
    # deep enough: nothing to drop, the paper's labels kept
    assert perturb.injection_layers(30) == ((0, 7, 14, 22, 29), perturb.PAPER_LAYERS)
    assert perturb.injection_layers(6) == ((0, 1, 2, 4, 5), perturb.PAPER_LAYERS)
    # a repeat of two layers the verdict does not read keeps the first
    assert perturb.injection_layers(4, (0, 10, 12)) == ((0, 1), (0, 10))


@pytest.mark.parametrize("n, d", [(40, 300), (300, 20)])
def test_fit_plane_matches_scikit_learn_exact_pca(n, d):
    """The Gram route (n < d) and the covariance route (n >= d) give scikit-learn's exact PCA,
    signs included."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, d)) * np.linspace(3, 0.1, d) + rng.normal(size=d) * 4
    p = perturb.fit_plane(x.astype(np.float32))
    ref = PCA(n_components=2, svd_solver="full").fit(x.astype(np.float32).astype(np.float64))
    assert p.components == pytest.approx(ref.components_, abs=1e-10)
    assert p.std == pytest.approx(np.sqrt(ref.explained_variance_), rel=1e-10)
    assert p.explained == pytest.approx(ref.explained_variance_ratio_, rel=1e-10)
    assert p.mean == pytest.approx(ref.mean_, abs=1e-10)


def test_fit_plane_refuses_states_on_a_line():
    t = np.linspace(-1, 1, 10)[:, None]
    with pytest.raises(ValueError, match="fewer than two directions"):
        perturb.fit_plane(t * np.ones((1, 30)))


def _planar_cloud(n=400, d=20, seed=0):
    """States on a known plane (std 5 along e0, 2 along e1) plus tiny noise."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=d) * 3
    ab = rng.normal(size=(n, 2))
    ab -= ab.mean(0)
    a, b = (np.linalg.qr(ab)[0] * np.sqrt(n - 1)).T  # exactly uncorrelated, unit variance
    x = mean + 5 * a[:, None] * np.eye(d)[0] + 2 * b[:, None] * np.eye(d)[1] + 1e-3 * rng.normal(size=(n, d))
    return x, mean


def test_fit_plane_finds_the_known_plane():
    x, mean = _planar_cloud()
    p = perturb.fit_plane(x)
    assert p.components.shape == (2, 20)
    assert abs(p.components[0, 0]) == pytest.approx(1, abs=1e-4)
    assert abs(p.components[1, 1]) == pytest.approx(1, abs=1e-4)
    assert p.std == pytest.approx([5, 2], rel=1e-3)
    assert p.explained.sum() == pytest.approx(1, abs=1e-4)
    # inverse then project is the identity on coordinates; project then inverse keeps in-plane states
    c = np.array([[1.0, -2.0], [0.0, 0.0]])
    assert p.project(p.inverse(c)) == pytest.approx(c)
    assert p.inverse(p.project(x[:5])) == pytest.approx(x[:5], abs=1e-2)
    with pytest.raises(ValueError, match="n_samples"):
        perturb.fit_plane(x[:, 0])
    with pytest.raises(ValueError, match=r"\(\.\.\., 20\)"):
        p.project(np.zeros((3, 19)))


def test_grid_spans_extent_in_standard_deviations():
    p = Plane(mean=np.zeros(4), components=np.eye(4)[:2], std=np.array([2.0, 0.5]), explained=np.array([0.6, 0.1]))
    g = perturb.grid(p, n=5, extent=3)
    assert g.shape == (25, 2)
    assert g.min(0) == pytest.approx([-6, -1.5]) and g.max(0) == pytest.approx([6, 1.5])
    assert len(np.unique(g[:, 0])) == 5 and len(np.unique(g[:, 1])) == 5
    with pytest.raises(ValueError, match="n must"):
        perturb.grid(p, n=1)
    with pytest.raises(ValueError, match="extent"):
        perturb.grid(p, extent=0)


def test_shift_in_plane_keeps_the_off_plane_part():
    x, _ = _planar_cloud()
    p = perturb.fit_plane(x)
    state = np.random.default_rng(1).normal(size=20) * 4
    coords = np.array([[1.0, 2.0], [-3.0, 0.5]])
    s = perturb.shift_in_plane(p, state, coords)
    assert p.project(s) == pytest.approx(coords)
    off = lambda v: v - p.inverse(p.project(v))  # noqa: E731
    assert off(s[0]) == pytest.approx(off(state))
    assert perturb.check_shift_in_plane(perturb.shift_in_plane)
    assert not perturb.check_shift_in_plane(lambda plane, st, c: plane.inverse(c))  # the protocol's replace


def test_random_directions_have_the_norms_and_no_preferred_direction():
    norms = np.linspace(0, 5, 2000)
    v = perturb.random_directions(norms, 30, seed=3)
    assert np.linalg.norm(v, axis=1) == pytest.approx(norms)
    u = v[1:] / norms[1:, None]
    assert np.abs(u.mean(0)).max() < 0.1  # isotropic: mean direction near 0
    assert np.array_equal(v, perturb.random_directions(norms, 30, seed=3))
    with pytest.raises(ValueError, match="non-negative"):
        perturb.random_directions(np.array([-1.0]), 3)


# --------------------------------------------------------------------------- measures


def test_distances_and_kept_fraction_on_known_trajectories():
    rng = np.random.default_rng(0)
    natural = rng.normal(size=(4, 6))
    delta = rng.normal(size=(3, 6))
    factors = np.array([1.0, 0.5, -0.25, 2.0])
    perturbed = natural + factors[None, :, None] * delta[:, None, :]
    kept = perturb.kept_fraction(perturbed, natural)
    assert kept == pytest.approx(np.broadcast_to(factors, (3, 4)))
    assert perturb.distances(perturbed, natural) == pytest.approx(np.abs(factors) * np.linalg.norm(delta, axis=1)[:, None])
    # a write orthogonal to the displacement adds distance but keeps the kept fraction
    ortho = np.zeros((3, 4, 6))
    for i in range(3):
        w = rng.normal(size=6)
        ortho[i, 1] = w - (w @ delta[i]) / (delta[i] @ delta[i]) * delta[i]
    assert perturb.kept_fraction(perturbed + ortho, natural) == pytest.approx(kept)
    assert (perturb.distances(perturbed + ortho, natural)[:, 1] > perturb.distances(perturbed, natural)[:, 1]).all()
    with pytest.raises(ValueError, match="natural"):
        perturb.distances(perturbed, natural[:3])


def test_recovery_ratio_is_a_ratio_of_means_with_a_bootstrap_interval():
    m, K = 50, 5
    dist = np.random.default_rng(0).uniform(1, 3, size=(m, 1)) * 0.5 ** np.arange(K)
    r = perturb.recovery_ratio(dist, k=2)
    assert r.estimate == pytest.approx(0.25)
    assert r.lo == pytest.approx(0.25) and r.hi == pytest.approx(0.25)  # every point contracts alike
    noisy = dist * np.random.default_rng(1).uniform(0.5, 1.5, size=dist.shape)
    rn = perturb.recovery_ratio(noisy, k=1)
    assert rn.lo < rn.estimate < rn.hi
    assert perturb.recovery_ratio(np.array([[1.0, 3.0], [3.0, 1.0]]), 1).estimate == pytest.approx(1.0)
    d = perturb.ratio_difference(np.ones((20, 3)) * [1, 2, 2], dist[:20, :3], k=1)
    assert d.estimate == pytest.approx(1.5) and d.lo > 0
    with pytest.raises(ValueError, match="k must"):
        perturb.recovery_ratio(dist, k=K)
    with pytest.raises(ValueError, match="m >= 2"):
        perturb.recovery_ratio(dist[:1], k=1)


def test_check_recovery_ratio_tells_right_from_wrong(capsys):
    assert perturb.check_recovery_ratio(lambda d, k: d[:, k].mean() / d[:, 0].mean())
    assert not perturb.check_recovery_ratio(lambda d, k: (d[:, k] / d[:, 0]).mean())  # mean of ratios
    assert "✗" in capsys.readouterr().out


def test_kl_divergence_matches_scipy():
    from scipy.stats import entropy

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7))
    q = rng.dirichlet(np.ones(7), size=3)
    kl = perturb.kl_divergence(np.log(p), np.log(q))
    assert kl == pytest.approx([entropy(p, qi) for qi in q])
    assert perturb.kl_divergence(np.log(p), np.log(p)[None]) == pytest.approx([0.0], abs=1e-12)
    with pytest.raises(ValueError, match="logprobs"):
        perturb.kl_divergence(np.log(p), np.log(q)[:, :5])


# --------------------------------------------------------------------------- the hook


def test_teleport_without_injection_matches_capture(tiny_llama):
    from tdcourse.capture import capture

    model, ids = tiny_llama
    ref = capture(model, [ids[1]], batch_size=1, progress=False)[0]  # (6, 64)
    out = perturb.teleport(model, ids[1], 0, None)
    assert out.states.shape == (1, 7, 64) and out.sites[-1] == "resid_post.2"
    np.testing.assert_allclose(out.states[0, :6], ref, rtol=1e-4, atol=1e-5)  # KV-cache path = full forward
    assert np.exp(out.logprobs).sum() == pytest.approx(1, abs=1e-4)


def test_injecting_the_unperturbed_state_reproduces_the_run(tiny_llama):
    model, ids = tiny_llama
    prompt = ids[3]
    nat = perturb.teleport(model, prompt, 0, None)
    for layer in (0, 1, 2):
        state = nat.states[:, 2 * layer]  # resid_pre.layer, shape (1, 64)
        out = perturb.teleport(model, prompt, layer, np.repeat(state, 3, axis=0))
        assert out.sites[0] == f"resid_pre.{layer}"
        np.testing.assert_allclose(out.states, np.repeat(nat.states[:, 2 * layer:], 3, axis=0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.logprobs, np.repeat(nat.logprobs, 3, axis=0), rtol=1e-5, atol=1e-5)
    assert all(not layer._forward_pre_hooks for layer in model.model.layers)  # hooks removed
    assert not model.model.norm._forward_pre_hooks


def test_injection_replaces_the_state_and_rows_are_independent(tiny_llama):
    model, ids = tiny_llama
    prompt = ids[1]
    nat = perturb.teleport(model, prompt, 0, None)
    rng = np.random.default_rng(0)
    a, b = (nat.states[0, 2] + rng.normal(size=64)).astype(np.float32), rng.normal(size=64).astype(np.float32)
    both = perturb.teleport(model, prompt, 1, np.stack([a, b]))
    np.testing.assert_array_equal(both.states[:, 0], np.stack([a, b]))  # resid_pre.1 reads the injected state
    assert not np.allclose(both.states[0, 2:], nat.states[0, 4:], atol=1e-3)  # later sites moved
    only_b = perturb.teleport(model, prompt, 1, b[None])
    np.testing.assert_allclose(both.states[1], only_b.states[0], rtol=1e-4, atol=1e-5)
    # single-token prompt: no prefix cache
    one = perturb.teleport(model, prompt[:1], 2, np.stack([a, b]))
    assert one.states.shape == (2, 3, 64)


def test_inject_and_teleport_reject_bad_input(tiny_llama):
    model, ids = tiny_llama
    with pytest.raises(ValueError, match="out of range"):
        perturb.teleport(model, ids[0], 3, None)
    with pytest.raises(ValueError, match=r"\(m >= 1, 64\)"):
        perturb.teleport(model, ids[0], 0, np.zeros((2, 63)))
    with pytest.raises(ValueError, match="empty"):
        perturb.teleport(model, [], 0, None)
    with pytest.raises(ValueError, match="states must have shape"):
        with perturb.inject(model, 0, np.zeros((2, 2, 64))):
            pass


# --------------------------------------------------------------------------- the verdict


def _flows(pull_early: float, pull_late: float, label: str = "toy", m: int = 40, seed: int = 0) -> Flows:
    """Synthetic flows on a 6-layer toy: grid displacements shrink by ``1 - pull`` per layer after
    the early layers (0, 1) and by ``1 - pull_late`` after the late ones (4, 5)."""
    rng = np.random.default_rng(seed)
    L, d = 6, 8
    layers, paper = (0, 1, 3, 4, 5), (0, 7, 15, 23, 31)
    B = L + 1
    natural = rng.normal(size=(B, d))
    planes, coords = [], np.zeros((5, m, 2))
    shape = (5, m, B)
    dist, dist_pc, dist_r = (np.full(shape, np.nan) for _ in range(3))
    kept, kept_pc, kept_r = (np.full(shape, np.nan) for _ in range(3))
    moved_pc = np.full(shape + (2,), np.nan)
    natural_pc = np.zeros((5, B, 2))
    for j, l in enumerate(layers):
        p = Plane(mean=np.zeros(d), components=np.eye(d)[:2], std=np.ones(2), explained=np.array([0.3, 0.2]))
        planes.append(p)
        delta = rng.normal(size=(m, d))
        pull = pull_early if j < 2 else pull_late
        f = (1 - pull) ** np.arange(B - l) * rng.uniform(0.95, 1.05, size=(m, B - l))
        traj = natural[l:] + f[..., None] * delta[:, None]
        dist[j, :, l:] = perturb.distances(traj, natural[l:])
        kept[j, :, l:] = perturb.kept_fraction(traj, natural[l:])
        natural_pc[j] = p.project(natural)
        moved_pc[j, :, l:] = p.project(traj)
        dist_pc[j, :, l:] = perturb.distances(moved_pc[j, :, l:], natural_pc[j, l:])
        kept_pc[j, :, l:] = perturb.kept_fraction(moved_pc[j, :, l:], natural_pc[j, l:])
        dist_r[j, :, l:] = dist[j, :, l:]
        kept_r[j, :, l:] = 1.0
        coords[j] = moved_pc[j, :, l]
    z = np.zeros((5, m))
    return Flows(label=label, prompt="toy", layers=layers, paper_layers=paper, n_grid=0, extent=3.0, planes=tuple(planes),
                 coords=coords, natural=natural, natural_pc=natural_pc, moved_pc=moved_pc, dist=dist, dist_pc=dist_pc,
                 dist_random=dist_r, kept=kept, kept_pc=kept_pc, kept_random=kept_r, kl=z, kl_random=z,
                 top1_kept=z.astype(bool), top1_kept_random=z.astype(bool), top1=0)


class _Run:
    def __init__(self, label):
        self.label = label


@pytest.mark.parametrize(
    "pull_early, pull_late, expected",
    [(0.3, -0.2, ("agrees", "agrees")),      # early contracts, late expands: the paper's picture
     (-0.2, -0.2, ("disagrees", "disagrees")),  # everything expands alike
     (0.3, 0.3, ("partly", "partly")),        # early contracts, but late as much
     (-0.1, -0.4, ("partly", "disagrees"))],  # late expands more, but no layer has inward arrows
)
def test_verdicts_follow_the_criterion(pull_early, pull_late, expected):
    fl = _flows(pull_early, pull_late)
    vs = perturb.verdicts(_Run("toy"), "ch", flows=fl)
    assert [v.claim for v in vs] == ["C13", "C13"]
    assert tuple(v.outcome for v in vs) == expected
    assert vs[0].value == pytest.approx(1 - pull_early, abs=0.05)
    assert all(v.chapter == "ch" and v.model == "toy" for v in vs)
    with pytest.raises(ValueError, match="not on this run"):
        perturb.verdicts(_Run("other"), "ch", flows=fl)


def test_flows_summary_and_arrows():
    fl = _flows(0.3, -0.2)
    s, e, t, inward = fl.arrows(0, k=2)
    assert s.shape == e.shape == (40, 2) and t.shape == (3, 2) and inward.mean() > 0.9
    assert fl.arrows(4, k=4)[2].shape == (2, 2)  # the last layer has one step left
    tab = fl.summary(k=1)
    assert list(tab["layer"]) == [0, 1, 3, 4, 5]
    assert tab["ratio full"].iloc[0] == pytest.approx(0.7, abs=0.05)
    c = fl.curve(3, "ratio")  # injection at layer 4 of 6: steps 0, 1, 2, then NaN
    assert c[0] == pytest.approx(1) and c[2] == pytest.approx(1.2**2, rel=0.05) and np.isnan(c[3:]).all()
    assert fl.curve(0, "kept")[3] == pytest.approx(0.7**3, rel=0.05)
    with pytest.raises(ValueError, match="measure"):
        fl.curve(0, "speed")


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_flow_fields_on_smollm2(smol_acts, smollm2):
    model, tok = smollm2
    fl = perturb.flow_fields(smol_acts, model, tok, paper_layers=(7, 31), n_grid=3)
    assert fl.layers == (7, 29)
    assert fl.coords.shape == (2, 9, 2) and fl.dist.shape == (2, 9, 31)
    for j, l in enumerate(fl.layers):
        assert np.isnan(fl.dist[j, :, :l]).all() and np.isfinite(fl.dist[j, :, l:]).all()
        # the injected grid point projects onto itself (the protocol's inverse transform)
        np.testing.assert_allclose(fl.moved_pc[j, :, l], fl.coords[j], rtol=1e-4, atol=1e-3 * fl.planes[j].std[0])
        # the random-direction control starts at the same distance as the grid
        np.testing.assert_allclose(fl.dist_random[j, :, l], fl.dist[j, :, l], rtol=1e-4)
    assert (fl.kl >= -1e-6).all() and fl.summary(k=1).shape[0] == 2
def test_flow_fields_holds_one_passs_states_at_a_time():
    """The teleport experiment keeps one injection layer's states at a time, in float32: each
    measure upcasts the half it reads (results bit for bit as before). Before, a float64 copy of
    both halves was held through the measures and until the next pass had made its own (4.5 times
    one half's float64 states at the peak here, 3.6 now; the measures' own temporaries are the
    rest)."""
    import tracemalloc

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tdcourse.capture import Activations, site_names

    torch.manual_seed(0)
    n_layers, d = 4, 512  # wide and shallow: the states, not the logits, are what is large
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=d, intermediate_size=64,
                                         num_hidden_layers=n_layers, num_attention_heads=4,
                                         num_key_value_heads=1, max_position_embeddings=32)).eval()
    rng = np.random.default_rng(0)
    run = Activations(acts=rng.normal(size=(16, 2 * n_layers, d)).astype(np.float32),
                      sites=site_names(n_layers), texts=[""] * 16)
    tok = lambda prompt: {"input_ids": [3, 5, 7, 9]}  # noqa: E731 - the prompt's ids, fixed
    m = 10 ** 2  # the default 10 × 10 grid
    one_pass = m * (n_layers + 1) * d * 8  # grid states at every boundary of the first pass, float64
    tracemalloc.start()
    try:
        perturb.flow_fields(run, model, tok, paper_layers=(0, 7, 23, 31))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * one_pass, f"peak {peak / 2**20:.1f} MiB, one pass's grid states {one_pass / 2**20:.1f} MiB"


def test_chapter_7_states_the_c13_criterion_its_verdicts_apply():
    """The criterion a learner reads before the result says what perturb.verdicts tests: the
    late-minus-early difference of the layer means, with its interval above 0 (one-sided), not
    "excludes 0"; and the 5 % floor the robustness page tries (a learner met it only in a note)."""
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "07_teleport.ipynb").read_text())
    text = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]
    criterion = " ".join(next(t for t in text if "**Criterion, before the result.**" in t).split())
    assert "excludes 0" not in criterion
    assert "the mean $r$ of the two late layers minus that of the two early ones" in criterion
    assert "has a 95 % bootstrap interval above 0" in criterion
    assert "with its CI above 0" in perturb.C13_RATIO_CRITERION and "with its bootstrap CI above 0" in \
        perturb.C13_ARROWS_CRITERION
    assert "at least 5 %" in criterion


def test_the_layer_table_shows_the_verdicts_interval_for_r():
    """The layer table's r interval is the one the C13 verdict prints for the same layer (it used
    500 resamples against the verdict's 2000: a learner saw 12.31-14.14 and 12.19-14.11)."""
    import inspect

    fl = _flows(0.4, 0.1)
    run = type("Run", (), {"label": fl.label})()
    v_ratio = perturb.verdicts(run, flows=fl)[0]
    assert inspect.signature(perturb.verdicts).parameters["n_boot"].default == \
        inspect.signature(perturb.recovery_ratio).parameters["n_boot"].default
    tab = fl.summary(k=1)
    for j, layer in enumerate(fl.layers):
        r = fl.ratio(j, 1, "full", n_boot=2000, seed=0)
        assert (tab["ratio full lo"][j], tab["ratio full hi"][j]) == (r.lo, r.hi)
        if fl.paper_layers[j] in (0, 7, 23, 31):  # the layers the verdict reads
            assert f"layer {layer}: {r}" in v_ratio.uncertainty
