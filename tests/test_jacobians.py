"""Tests of tdcourse.jacobians (chapter 8): exact layer Jacobians, the S1–S4 measures, the rule, the checks.

Known answers: a layer whose Jacobian has a closed form, normal matrices (self-alignment 1),
rotations (their angle, cos² θ and sin²(θ/2)), the Ginibre real-eigenvalue count (exact values
and a seeded simulation), effective ranks of known spectra, and the Schur knob (c = 1 gives J
back, c = 0 a normal matrix with the same eigenvalues). The layer Jacobian equals the
full-sequence autograd Jacobian and central finite differences in float64 on a tiny random Llama.
"""

from __future__ import annotations

import numpy as np
import pytest

from tdcourse import jacobians as jj


def tiny(seed: int = 0, scale: float = 4.0, **kw):
    """A float64 random Llama whose layers write about as much as the skip passes on."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64) | kw
    model = LlamaForCausalLM(LlamaConfig(**cfg)).eval().double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed" not in name:
                p.mul_(scale)
    model.requires_grad_(False)
    return model


IDS = [5, 17, 3, 44, 9, 12, 7, 30]


# --------------------------------------------------------------------------- the Jacobian is exact


@pytest.mark.parametrize("layer", [0, 1, 2])
@pytest.mark.parametrize("position", [-1, 0, 4])
def test_one_token_jacobian_equals_full_sequence_jacobian(layer, position):
    model = tiny()
    full = jj.full_sequence_jacobian(model, IDS, layer, position=position)  # (d, T, d) block of token p
    for method in ("forward", "jacrev", "jacfwd"):
        got = jj.layer_jacobians(model, IDS, [layer], position=position, method=method)[0]
        np.testing.assert_allclose(got, full, rtol=0, atol=1e-12 * np.abs(full).max())
    assert np.linalg.norm(full - np.eye(32)) > 0.3 * np.sqrt(32)  # a write comparable to the skip: the test can fail


@pytest.mark.parametrize("layer", [0, 2])
def test_jacobian_equals_central_finite_differences(layer):
    model = tiny(seed=1)
    f, x0, y0 = jj.last_token_map(model, IDS, layer)
    jac = jj.layer_jacobian(model, IDS, layer)
    fd = jj.finite_difference_jacobian(f, x0, eps=1e-5)
    np.testing.assert_allclose(jac, fd, rtol=0, atol=1e-7 * np.abs(jac).max())


def test_map_reproduces_the_model_and_its_own_layer_module():
    import torch

    model = tiny(seed=2)
    states = jj.residual_inputs(model, IDS)
    for layer in range(3):
        f, x0, y0 = jj.last_token_map(model, IDS, layer, states=states)
        with torch.no_grad():
            y = f(x0)
        # transformers computes RMSNorm and softmax in float32 even for a float64 model
        assert float((y - y0).norm() / y0.norm()) < 1e-6
        hf = jj.full_sequence_jacobian(model, IDS, layer, use_model_layer=True)
        ours = jj.layer_jacobian(model, IDS, layer)
        assert np.abs(hf - ours).max() < 1e-5 * np.abs(ours).max()
    hidden = model.model(torch.tensor([IDS]), output_hidden_states=True).hidden_states  # [-1] is after the final norm
    for b in range(3):
        np.testing.assert_allclose(states[b], hidden[b][0].numpy(), rtol=0, atol=1e-5 * np.abs(states[b]).max())


def test_closed_form_jacobian_of_an_attention_only_layer_on_one_token():
    """One token, no MLP: out = x + W_o V(rms(x)), so J = I + W_o R W_v diag(w) (I/r - x xᵀ/(d r³))."""
    import torch

    model = tiny(seed=3)
    blk = model.model.layers[1]
    with torch.no_grad():
        blk.mlp.down_proj.weight.zero_()
    ids = [11]
    x = torch.as_tensor(jj.residual_inputs(model, ids)[1, 0], dtype=torch.float64)
    d = x.shape[0]
    w = blk.input_layernorm.weight.detach()
    eps = blk.input_layernorm.variance_epsilon
    r = torch.sqrt(x.pow(2).mean() + eps)
    j_rms = torch.diag(w) @ (torch.eye(d, dtype=x.dtype) / r - torch.outer(x, x) / (d * r ** 3))
    att = blk.self_attn
    rep = model.config.num_attention_heads // model.config.num_key_value_heads
    hd = att.head_dim
    wv = att.v_proj.weight.detach().view(-1, hd, d).repeat_interleave(rep, 0).reshape(-1, d)  # one block per head
    want = torch.eye(d, dtype=x.dtype) + att.o_proj.weight.detach() @ wv @ j_rms
    got = jj.layer_jacobian(model, ids, 1)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-12)


def test_finite_differences_of_a_linear_map():
    import torch

    a = torch.as_tensor(np.random.default_rng(0).standard_normal((3, 5)))
    fd = jj.finite_difference_jacobian(lambda x: a @ x + 1.0, torch.zeros(5, dtype=torch.float64), eps=1e-3)
    np.testing.assert_allclose(fd, a.numpy(), atol=1e-12)


def test_bad_inputs_are_refused():
    from transformers import MistralConfig

    from tdcourse.models import UnsupportedModelError

    model = tiny()
    with pytest.raises(ValueError, match="layer"):
        jj.layer_jacobian(model, IDS, 3)
    with pytest.raises(ValueError, match="position"):
        jj.layer_jacobian(model, IDS, 0, position=8)
    with pytest.raises(ValueError, match="empty"):
        jj.layer_jacobian(model, [], 0)
    with pytest.raises(ValueError, match="method"):
        jj.layer_jacobians(model, IDS, [0], method="numerical")
    with pytest.raises(UnsupportedModelError, match="OLMo-2"):
        jj.check_family(MistralConfig())
    bad = jj.residual_inputs(model, IDS)
    bad[2] = jj.residual_inputs(model, IDS[::-1])[2]  # layer 1's output from another prompt: not this layer's map
    with pytest.raises(UnsupportedModelError, match="does not reproduce"):
        jj.layer_jacobians(model, IDS, [1], states=bad)
    with pytest.raises(ValueError, match="states must have shape"):
        jj.layer_jacobians(model, IDS[:-1], [1], states=bad)


def test_nf4_weights_are_dequantised():
    bnb = pytest.importorskip("bitsandbytes")
    import torch

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32, bias=False)
    q = bnb.nn.Linear4bit(64, 32, bias=False, quant_type="nf4", compute_dtype=torch.float32)
    q.load_state_dict(lin.state_dict())
    q = q.to("cpu")
    try:
        q(torch.zeros(1, 64))  # quantises on first use where the backend needs it
    except Exception as err:  # pragma: no cover - a bitsandbytes build without CPU kernels
        pytest.skip(f"bitsandbytes cannot run NF4 on this CPU: {err}")
    w, b = jj._dense(q, torch.float64, "cpu")
    x = torch.randn(3, 64)
    assert b is None and w.dtype == torch.float64
    assert torch.allclose(q(x).double(), x.double() @ w.T, atol=1e-4)
    assert not torch.allclose(w.float(), lin.weight, atol=1e-3)  # really the rounded weights


# --------------------------------------------------------------------------- S1: complex eigenvalues


def test_ginibre_real_count_exact_values():
    assert jj.ginibre_real_count(1) == pytest.approx(1.0)
    assert jj.ginibre_real_count(2) == pytest.approx(np.sqrt(2))
    assert jj.ginibre_real_count(3) == pytest.approx(1 + np.sqrt(2) / 2)
    n = np.array([576, 4096])
    np.testing.assert_allclose(jj.ginibre_real_count(n), np.sqrt(2 * n / np.pi) + 0.5, rtol=2e-3)
    assert jj.ginibre_complex_share(4096) == pytest.approx(0.9874, abs=1e-4)
    with pytest.raises(ValueError):
        jj.ginibre_real_count(0)


def test_ginibre_share_matches_a_seeded_simulation():
    sim = jj.simulate_ginibre_share(12, n_matrices=3000, seed=0)
    se = sim.std() / np.sqrt(sim.size)
    assert abs(sim.mean() - jj.ginibre_complex_share(12)) < 4 * se


def test_complex_share_and_angles():
    th = 0.3
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    ev = np.linalg.eigvals(rot)
    assert jj.complex_share(ev) == 1.0
    np.testing.assert_allclose(np.sort(np.abs(np.angle(ev))), [th, th])
    assert jj.complex_share(np.linalg.eigvals(np.diag([1.0, 2.0, 3.0]))) == 0.0
    assert jj.complex_share(ev, min_angle=0.5) == 0.0  # rotates by less than the threshold
    b = np.random.default_rng(0).standard_normal((30, 30))
    assert jj.complex_share(np.linalg.eigvals(b + b.T)) == 0.0  # symmetric: real spectrum


# --------------------------------------------------------------------------- S2: self-alignment


def test_self_alignment_of_normal_symmetric_and_skew_matrices():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    spd = q @ np.diag(rng.uniform(0.5, 3, 20)) @ q.T
    assert jj.symmetric_share(spd) == pytest.approx(1.0)
    assert jj.singular_alignment(spd) == pytest.approx(1.0)
    assert jj.eigvec_alignment(spd) == pytest.approx(1.0)
    normal = q @ np.diag(rng.standard_normal(20) + 1j * rng.standard_normal(20)) @ q.T  # normal, not symmetric
    assert jj.eigvec_alignment(normal) == pytest.approx(1.0)
    b = rng.standard_normal((20, 20))
    assert jj.symmetric_share(b - b.T) == pytest.approx(0.0, abs=1e-15)
    assert jj.eigvec_alignment(q) == pytest.approx(1.0)  # an orthogonal matrix is normal
    t, _ = jj.schur_form(b @ b.T + np.triu(rng.standard_normal((20, 20)), 1) * 5)
    assert jj.eigvec_alignment(t) < 0.9  # strongly non-normal


def test_self_alignment_of_a_rotation():
    th = np.pi / 3
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]
    rot[2:, 2:] = rot[:2, :2]
    assert jj.symmetric_share(rot) == pytest.approx(np.cos(th) ** 2)
    assert jj.symmetric_share(rot - np.eye(4)) == pytest.approx(np.sin(th / 2) ** 2)  # the write of a rotation
    assert jj.eigvec_alignment(rot) == pytest.approx(1.0)  # normal
    assert jj.singular_alignment(rot) <= 1.0


def test_symmetric_share_of_a_gaussian_matrix_is_about_one_half():
    b = np.random.default_rng(2).standard_normal((200, 40, 40))
    assert jj.symmetric_share(b).mean() == pytest.approx(0.5 + 1 / 80, abs=0.01)


# --------------------------------------------------------------------------- S3: effective ranks


def test_effective_ranks_of_known_spectra():
    for kind in jj.RANKS:
        assert jj.effective_rank(np.ones(7), kind) == pytest.approx(7.0)
        assert jj.effective_rank(np.array([5.0, 0, 0]), kind) == pytest.approx(1.0)
    p = np.array([0.75, 0.25])
    assert jj.effective_rank(np.array([3.0, 1.0])) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert jj.effective_rank(np.array([1.0, 1.0, 0, 0]), "participation") == pytest.approx(2.0)
    assert jj.effective_rank(np.array([2.0, 1.0]), "stable") == pytest.approx(5 / 4)
    assert jj.effective_rank(np.array([2.0, 1.0]), "participation") == pytest.approx(25 / 17)
    np.testing.assert_allclose(jj.effective_rank(np.ones((3, 4))), [4, 4, 4])
    for bad in (np.zeros(3), np.array([1.0, -1.0]), np.array([np.nan, 1.0])):
        with pytest.raises(ValueError):
            jj.effective_rank(bad)
    with pytest.raises(ValueError, match="kind"):
        jj.effective_rank(np.ones(3), "rank")


# --------------------------------------------------------------------------- S4: the Schur knob


def same_spectrum(a, b, tol=1e-8) -> bool:
    """Each eigenvalue of ``a`` matched to a distinct one of ``b`` within ``tol`` (relative)."""
    from scipy.optimize import linear_sum_assignment

    cost = np.abs(np.asarray(a)[:, None] - np.asarray(b)[None, :])
    i, j = linear_sum_assignment(cost)
    return bool(cost[i, j].max() <= tol * max(1.0, np.abs(b).max()))


def test_schur_form_order_and_knob():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 40))
    t, z = jj.schur_form(a)
    d = np.diagonal(t)
    assert np.all(np.diff(np.abs(d)) <= 1e-12 * np.abs(d).max())       # descending modulus
    pairs = np.isclose(np.abs(d[:-1]), np.abs(d[1:]), rtol=1e-12) & (d[:-1].imag != 0)
    assert (d[:-1][pairs].imag < 0).all()                              # a conjugate pair: negative angle first
    np.testing.assert_allclose(z @ z.conj().T, np.eye(40), atol=1e-12)
    np.testing.assert_allclose(jj.with_knob(t, z, 1.0), a, atol=1e-12)  # c = 1 gives J back
    n0 = jj.with_knob(t, z, 0.0)
    np.testing.assert_allclose(n0 @ n0.conj().T, n0.conj().T @ n0, atol=1e-10)  # c = 0 is normal ...
    assert same_spectrum(np.linalg.eigvals(n0), np.linalg.eigvals(a))                  # ... with the same eigenvalues
    tl, zl = jj.schur_form(a, order="lapack")
    np.testing.assert_allclose(jj.with_knob(tl, zl, 1.0), a, atol=1e-12)
    assert not np.allclose(jj.with_knob(tl, zl, 0.0), n0)  # the normal part depends on the order
    r = jj.random_nonnormal(t, z, np.random.default_rng(0))
    assert same_spectrum(np.linalg.eigvals(r), np.linalg.eigvals(a))
    assert np.linalg.norm(z.conj().T @ r @ z - np.diag(d)) == pytest.approx(np.linalg.norm(np.triu(t, 1)))
    assert jj.henrici(t) > 0 and jj.henrici(jj.schur_form(a + a.T)[0]) < 1e-12
    with pytest.raises(ValueError, match="order"):
        jj.schur_form(a, order="real part")


# --------------------------------------------------------------------------- the rule and the analysis


def test_plan_rule():
    smol = jj.plan(576, 30, 1000, macs=jj.macs_per_token(_config(576, 9, 3, 64, 1536)))
    assert smol.full and len(smol.samples) >= 1 and smol.samples[0] == 0 and smol.layers == tuple(range(30))
    assert smol == jj.plan(576, 30, 1000, macs=jj.macs_per_token(_config(576, 9, 3, 64, 1536)))  # deterministic
    more = jj.plan(576, 30, 1000, macs=jj.macs_per_token(_config(576, 9, 3, 64, 1536)), budget_s=2000)
    assert len(more.samples) > len(smol.samples)
    small = jj.plan(256, 4, 128, max_samples=16)
    assert small.full and len(small.samples) == 16
    wide = jj.plan(4096, 32, 128, macs=jj.macs_per_token(_config(4096, 1, 1, 128, 256)))
    assert not wide.full and len(wide.samples) == 1 and 1 <= len(wide.layers) < 32 and wide.layers[0] == 0
    huge = jj.plan(8192, 80, 128, macs=jj.macs_per_token(_config(8192, 64, 8, 128, 28672)))
    assert not huge.full and huge.samples == () and huge.layers == () and "nothing is computed" in huge.text
    for bad in (dict(budget_s=0), dict(n_available=0), dict(d_model=1.5)):
        with pytest.raises(ValueError):
            jj.plan(**(dict(d_model=64, n_layers=2, n_available=4) | bad))


def _config(d, nh, nkv, hd, dff):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=d, num_attention_heads=nh, num_key_value_heads=nkv, head_dim=hd,
                       intermediate_size=dff, num_hidden_layers=2, vocab_size=10)


@pytest.fixture(scope="module")
def tiny_result():
    model = tiny(seed=4)
    prompts = [IDS, [3, 9, 27, 41, 2]]
    plan = jj.Plan((0, 1), (0, 1, 2), True, 1.0, 10.0, "test")
    return model, prompts, jj.analyse_prompts(model, prompts, plan, label="tiny")


def test_analysis_products_and_knob(tiny_result):
    model, prompts, r = tiny_result
    for i, ids in enumerate(prompts):
        js = jj.layer_jacobians(model, ids)
        p = js[2] @ js[1] @ js[0]
        s = np.linalg.svd(p, compute_uv=False)
        np.testing.assert_allclose(r.end_sv[i], s, rtol=1e-10)
        np.testing.assert_allclose(r.partial[i, 0], [jj.effective_rank(np.linalg.svd(js[0], compute_uv=False), k)
                                                     for k in jj.RANKS], rtol=1e-10)
        skip = (js[2] - np.eye(32)) @ (js[1] - np.eye(32)) @ (js[0] - np.eye(32))
        assert r.rank("skipless")[i] == pytest.approx(jj.effective_rank(np.linalg.svd(skip, compute_uv=False)))
        # the knob's running products in Schur bases equal the products of the rebuilt layers
        for c in (0.0, 2.0):
            forms = [jj.schur_form(j) for j in js]
            pc = np.eye(32, dtype=complex)
            for t, z in forms:
                pc = jj.with_knob(t, z, c) @ pc
            assert r.rank("end", c=c)[i] == pytest.approx(jj.effective_rank(np.linalg.svd(pc, compute_uv=False)),
                                                          rel=1e-8)
            forms = [jj.schur_form(j, order="lapack") for j in js]
            pc = np.eye(32, dtype=complex)
            for t, z in forms:
                pc = jj.with_knob(t, z, c) @ pc
            assert r.rank("end", c=c, order="lapack")[i] == pytest.approx(
                jj.effective_rank(np.linalg.svd(pc, compute_uv=False)), rel=1e-8)
    np.testing.assert_allclose(r.rank("end", c=1.0), r.partial[:, -1, 0])
    assert r.knob_check < 1e-12
    assert np.isfinite(r.align[0]).all() and np.isnan(r.align[1, :, 2:]).all()  # candidates on sample 0 only
    assert r.has_products and r.has_knob
    arrays, info = jj._to_arrays(r)
    back = jj._from_arrays(arrays, info)
    assert back.plan == r.plan and np.array_equal(back.eigvals, r.eigvals, equal_nan=True)


def test_verdicts_on_the_tiny_model(tiny_result):
    from types import SimpleNamespace

    _, _, r = tiny_result
    run = SimpleNamespace(label="tiny")
    vs = jj.verdicts(run, result=r)
    assert [v.claim for v in vs] == ["S1", "S2", "S3", "S4"]
    assert all(v.outcome in ("agrees", "partly", "disagrees") for v in vs)
    assert vs[0].value == pytest.approx(np.nanmin(r.share()))
    for kw in (dict(alignment="eigenvector condition"), dict(rank="stable"), dict(order="lapack"),
               dict(min_angle=np.deg2rad(1))):
        assert len(jj.verdicts(run, result=r, **kw)) == 4
    with pytest.raises(ValueError, match="not on this run"):
        jj.verdicts(SimpleNamespace(label="other"), result=r)
    with pytest.raises(ValueError, match="alignment"):
        jj.verdicts(run, result=r, alignment="cosine")


def _result(share_layers, align_layers, ranks, knob_ranks, d=100):
    """A hand-made Result: per-layer complex shares and alignments, end-to-end ranks per sample."""
    L = len(share_layers)
    n = len(ranks)
    eig = np.zeros((n, L, d), dtype=complex)
    for l, s in enumerate(share_layers):
        k = int(round(s * d / 2)) * 2
        eig[:, l, :k] = 1 + 1j * np.tile([1, -1], k // 2)
        eig[:, l, k:] = 0.5
    align = np.full((n, L, 5), np.nan)
    align[:, :, 0] = align_layers
    partial = np.full((n, L, 3), np.nan)
    partial[:, -1, :] = np.asarray(ranks)[:, None]
    knob = np.array([0.0, 1.0, 2.0])
    kr = np.stack([np.asarray(knob_ranks, dtype=float)] * 3, -1)  # (n, 3 knob values, 3 ranks)
    plan = jj.Plan(tuple(range(n)), tuple(range(L)), True, 1.0, 1.0, "hand-made")
    return jj.Result(label="m", plan=plan, position=-1, knob=knob, eigvals=eig, align=align,
                     write_rms=np.ones((n, L)), henrici=np.zeros((n, L)), partial=partial, knob_ranks=kr,
                     lapack_ranks=kr, random_ranks=np.ones((n, 3)), skipless_ranks=np.ones((n, 3)),
                     end_sv=np.ones((n, d)), knob_check=0.0, seconds=0.0)


def test_verdict_criteria_on_hand_made_results():
    from types import SimpleNamespace

    run = SimpleNamespace(label="m")
    g = jj.ginibre_complex_share(100)
    rising = np.linspace(0.1, 0.9, 12)
    r = _result([g] * 12, rising, [1.0, 1.5], [[5.0, 1.0, 0.5], [6.0, 1.5, 0.5]])
    s1, s2, s3, s4 = jj.verdicts(run, result=r)
    assert (s1.outcome, s2.outcome, s3.outcome, s4.outcome) == ("agrees", "agrees", "agrees", "agrees")
    r = _result([g - 0.1] * 8 + [g] * 4, rising[::-1], [30.0, 40.0], [[35.0, 30.0, 40.0], [45.0, 40.0, 50.0]])
    s1, s2, s3, s4 = jj.verdicts(run, result=r)
    assert (s1.outcome, s2.outcome, s3.outcome, s4.outcome) == ("disagrees", "disagrees", "disagrees", "disagrees")
    r = _result([g - 0.1] * 5 + [g] * 7, np.r_[np.full(6, 0.5), np.full(6, 0.55)], [3.0], [[3.0, 3.0, 2.0]])
    s1, s2, s3, s4 = jj.verdicts(run, result=r)
    assert (s1.outcome, s3.outcome, s4.outcome) == ("partly", "partly", "partly")
    assert s2.outcome in ("partly", "disagrees")


def test_verdicts_not_run_when_the_plan_is_thin():
    from types import SimpleNamespace

    r = _result([0.9], [0.5], [1.0], [[1.0, 1.0, 1.0]])
    thin = jj.Result(**{**r.__dict__, "plan": jj.Plan((0,), (0,), False, 1e6, 1.0, "thin"),
                        "end_sv": np.full((1, 100), np.nan)})
    s1, s2, s3, s4 = jj.verdicts(SimpleNamespace(label="m"), result=thin)
    assert s1.outcome != "not run" and (s2.outcome, s3.outcome, s4.outcome) == ("not run",) * 3
    assert "thin" in s3.detail


# --------------------------------------------------------------------------- the learner's checks


def _learner(mistake: str = ""):
    import torch

    def fn(model, ids, layer):
        f, x0, _ = jj.last_token_map(model, ids, layer, position=0 if mistake == "token" else -1)
        g = (lambda x: f(x) - x) if mistake == "skip" else f
        jac = torch.func.jacrev(g)(x0).numpy()
        return jac.T if mistake == "transposed" else jac
    return fn


def test_check_layer_jacobian_rejects_the_usual_mistakes(capsys):
    assert jj.check_layer_jacobian(_learner())
    for mistake, words in (("transposed", "transpose"), ("skip", "skip is left out"), ("token", "another token")):
        assert not jj.check_layer_jacobian(_learner(mistake))
        assert words in capsys.readouterr().out


def test_check_effective_rank_rejects_wrong_answers():
    def entropy(s):
        p = np.asarray(s) / np.sum(s)
        p = p[p > 0]
        return float(np.exp(-(p * np.log(p)).sum()))

    assert jj.check_effective_rank(entropy)
    assert not jj.check_effective_rank(lambda s: np.log(entropy(s)))         # forgot the exponential
    assert not jj.check_effective_rank(lambda s: entropy(np.asarray(s) ** 2))  # σ² in place of σ
    assert not jj.check_effective_rank(lambda s: jj.effective_rank(s, "participation"))


def test_check_symmetric_share_rejects_wrong_answers():
    assert jj.check_symmetric_share(lambda a: np.linalg.norm((a + a.T) / 2) ** 2 / np.linalg.norm(a) ** 2)
    assert not jj.check_symmetric_share(lambda a: np.linalg.norm((a + a.T) / 2) / np.linalg.norm(a))  # not squared
    assert not jj.check_symmetric_share(lambda a: np.linalg.norm(a + a.T) ** 2 / np.linalg.norm(a) ** 2)  # no half


def test_check_knob_rejects_wrong_answers():
    def knob(t, z, c):
        return z @ (np.diag(np.diag(t)) + c * np.triu(t, 1)) @ z.conj().T

    assert jj.check_knob(knob)
    assert not jj.check_knob(lambda t, z, c: z @ (np.diag(np.diag(t)) + c * np.triu(t, 1)) @ z.T)  # Zᵀ, not Zᴴ
    assert not jj.check_knob(lambda t, z, c: z @ (c * t) @ z.conj().T)  # scales the eigenvalues too


# --------------------------------------------------------------------------- on SmolLM2


@pytest.mark.slow
def test_smollm2_layer_jacobian_equals_finite_differences(smollm2):
    import torch

    model, tok = smollm2
    ids = tok("The residual stream of a transformer")["input_ids"]
    f, x0, y0 = jj.last_token_map(model, ids, 5)
    with torch.no_grad():
        assert float((f(x0) - y0).norm() / y0.norm()) < 1e-5
    jac = jj.layer_jacobian(model, ids, 5)
    cols = np.random.default_rng(0).choice(jac.shape[1], 8, replace=False)
    eps = 1e-4
    for m in cols:
        e = torch.zeros_like(x0)
        e[m] = eps
        with torch.no_grad():
            fd = ((f(x0 + e) - f(x0 - e)) / (2 * eps)).numpy()
        np.testing.assert_allclose(jac[:, m], fd, rtol=0, atol=1e-6 * np.abs(jac).max())


# --------------------------------------------------------------------------- scoreboard and robustness


def test_robustness_and_scoreboard_carry_the_sequel_claims(monkeypatch):
    from tdcourse import robustness, scoreboard
    from tdcourse.capture import Activations, site_names

    run = Activations(acts=np.ones((4, 8, 6), np.float32), sites=site_names(4), texts=[""] * 4, meta={})
    g = jj.ginibre_complex_share(100)
    r = _result([g] * 12, np.linspace(0.1, 0.9, 12), [1.0, 1.5], [[5.0, 1.0, 0.5], [6.0, 1.5, 0.5]])
    r = jj.Result(**{**r.__dict__, "label": run.label})
    calls = []
    monkeypatch.setattr(jj, "analyse", lambda run, **kw: calls.append(kw) or r)
    chapters = {"08_jacobians": scoreboard.CHAPTERS["08_jacobians"]}
    found, outcomes, _ = robustness.evaluate([run], chapters=chapters, progress=False)
    assert found == jj.verdicts(run, chapter="08_jacobians", result=r)
    rows = {o.spec.row for o in outcomes}
    assert rows == {"S1", "S2", "S3", "S4"}
    assert {"position": 24, "knob": ()} in calls  # the token-25 alternative is one computation
    names = {(o.spec.row, o.spec.name) for o in outcomes}
    assert {("S2", "symmetric share of J"), ("S3", "stable rank"), ("S4", "LAPACK order"), ("S1", "token 25")} <= names
    md = scoreboard.to_markdown(found, [run.label])
    lines = md.splitlines()
    i13 = next(i for i, line in enumerate(lines) if line.startswith("| **C13**"))
    assert "The sequel's claims" in lines[i13 + 1] and lines[i13 + 2].startswith("| **S1**")
    assert lines[i13 + 1].count("|") == lines[0].count("|")
    page = robustness.to_markdown(outcomes)
    assert page.index("claim-s1") < page.index("claim-s4")


def test_an_empty_plan_gives_not_run_everywhere():
    from types import SimpleNamespace

    model = tiny(seed=5)
    empty = jj.Plan((), (), False, 1e9, 1.0, "Not even one layer fits: nothing is computed for this run.")
    r = jj.analyse_prompts(model, [], empty, label="m")
    assert r.n_samples == 0 and not r.has_products and np.isnan(r.share()).all()
    run = SimpleNamespace(label="m", n_layers=3, acts=np.ones((4, 6, 32), np.float32))
    vs = jj.verdicts(run, result=r)
    assert [v.outcome for v in vs] == ["not run"] * 4
    notes = jj.findings_notes([run], vs, {"m": r})
    assert any("nothing is computed" in n for n in notes)
    table = jj.findings_table([run], {"m": r})
    assert table.loc[table.quantity == "samples", "m"].item() == 0


def test_complex_share_ignores_rounding_and_flips():
    ev = np.array([1 + 1e-14j, 1 - 1e-14j, 2 + 1j, 2 - 1j])  # a split cluster at 1, and a real pair
    assert jj.complex_share(ev) == 0.5
    assert jj.complex_share(ev, rtol=0) == 1.0
    assert jj.complex_share(np.array([-1.0 + 0j, 2.0 + 0j]), np.deg2rad(1)) == 0.0  # a flip is not a rotation
    near = np.exp(1j * np.deg2rad([0.5, -0.5, 3.0, -3.0]))
    assert jj.complex_share(near, np.deg2rad(1)) == 0.5
    with pytest.raises(ValueError):
        jj.complex_share(ev, min_angle=2.0)


def test_the_products_through_torch_equal_numpys():
    from tdcourse.jacobians import _mm, _upper_times

    rng = np.random.default_rng(0)
    real = rng.standard_normal((40, 40))
    cplx = rng.standard_normal((40, 40)) + 1j * rng.standard_normal((40, 40))
    for a, b in ((real, real), (cplx, cplx), (np.eye(40), cplx), (cplx.conj().T, real)):
        got = _mm(a, b)
        assert got.dtype == (a @ b).dtype
        np.testing.assert_allclose(got, a @ b, rtol=1e-12, atol=1e-12 * np.abs(a @ b).max())
    u = np.triu(cplx)
    np.testing.assert_allclose(_upper_times(u, cplx), u @ cplx, rtol=1e-12, atol=1e-12 * np.abs(u @ cplx).max())
