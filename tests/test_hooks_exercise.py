"""The residual-hooks exercise of the first chapter: check_residual_hooks accepts a right reader
(the chapter's solution, the capture engine) and rejects the usual mistakes, each with the words
that name it.

Wrong answers, one per test: a forward (post-)hook on the layer (off by one layer), the output
of input_layernorm (normalised) instead of the layer's input, the first token, a padded position
(a right-padded batch read at its last column), resid_mid read at the input of ``mlp`` (normed)
or at ``self_attn``'s output (the write), the sites in another order, hooks left on the model.
"""

from __future__ import annotations

import numpy as np
import pytest

from tdcourse import hooks_exercise
from tdcourse.hooks import capture
from tdcourse.models import residual_sites


def read_residual(model, input_ids, pre_site=None, mid_site=None, position=-1, forward_hook_on_layer=False):
    """The chapter's solution, with switches that make it one of the usual wrong answers."""
    import torch

    sites = residual_sites(model)
    d = model.config.hidden_size
    out = np.zeros((len(input_ids), 2 * len(sites), d), np.float32)
    row = {"i": 0}

    def pre_hook(pos):
        def hook(module, args, kwargs):  # self_attn takes its input by keyword
            hidden = args[0] if args else kwargs["hidden_states"]
            out[row["i"], pos] = hidden[0, position].float().numpy()
        return hook

    def post_hook(pos):
        def hook(module, args, output):
            output = output[0] if isinstance(output, tuple) else output
            out[row["i"], pos] = output[0, position].float().numpy()
        return hook

    handles = []
    try:
        for l, (layer, mid) in enumerate(sites):
            pre_module = layer if pre_site is None else pre_site(layer)
            mid_module = mid if mid_site is None else mid_site(layer)
            if forward_hook_on_layer:
                handles.append(pre_module.register_forward_hook(post_hook(2 * l)))
            else:
                handles.append(pre_module.register_forward_pre_hook(pre_hook(2 * l), with_kwargs=True))
            handles.append(mid_module.register_forward_pre_hook(pre_hook(2 * l + 1), with_kwargs=True))
        with torch.no_grad():
            for i, ids in enumerate(input_ids):
                row["i"] = i
                model.model(torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()
    return out


@pytest.fixture(scope="module")
def llama(tiny_llama):
    """The tiny Llama and four samples of 9 tokens (one length, as the course's samples are)."""
    model, _ = tiny_llama
    rng = np.random.default_rng(1)
    return model, [rng.integers(3, 100, size=9).tolist() for _ in range(4)]


def _unwrap(out: str) -> str:
    """The check's lines as one line per case (it wraps them at 68 characters for the book)."""
    return out.replace("\n  ", " ")


def _check(fn, llama, capsys):
    ok = hooks_exercise.check_residual_hooks(fn, *llama)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 68
    return ok, _unwrap(out)


def test_the_solution_and_the_engine_pass(llama, capsys):
    ok, out = _check(read_residual, llama, capsys)
    assert ok, out
    assert out.count("✓") == 5 and "All checks passed" in out
    ok, out = _check(lambda m, ids: capture(m, ids, progress=False), llama, capsys)
    assert ok, out


def test_a_forward_hook_on_the_layer_is_off_by_one(llama, capsys):
    ok, out = _check(lambda m, ids: read_residual(m, ids, forward_hook_on_layer=True), llama, capsys)
    assert not ok
    assert "✗ resid_pre.l" in out and "off by one layer" in out and "✓ resid_mid.l" in out


def test_the_output_of_input_layernorm_is_normalised(llama, capsys):
    ok, out = _check(lambda m, ids: read_residual(m, ids, pre_site=lambda layer: layer.self_attn), llama, capsys)
    assert not ok
    assert "✗ resid_pre.l" in out and "normalised: the output of input_layernorm" in out


def test_the_first_token_is_not_the_last(llama, capsys):
    ok, out = _check(lambda m, ids: read_residual(m, ids, position=0), llama, capsys)
    assert not ok
    assert "first token's values" in out


def test_a_padded_batch_read_at_its_last_column(llama, capsys):
    import torch

    def padded(model, input_ids):
        width = max(len(x) for x in input_ids)
        ids = torch.tensor([x + [0] * (width - len(x)) for x in input_ids])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in input_ids])
        states = {}

        def keep(pos):
            return lambda module, args: states.__setitem__(pos, args[0][:, -1].float().numpy())

        handles = [m.register_forward_pre_hook(keep(2 * l + j))
                   for l, pair in enumerate(residual_sites(model)) for j, m in enumerate(pair)]
        try:
            with torch.no_grad():
                model.model(input_ids=ids, attention_mask=mask)
        finally:
            for h in handles:
                h.remove()
        return np.stack([states[p] for p in sorted(states)], axis=1)

    ok, out = _check(padded, llama, capsys)
    assert not ok
    # the four samples have one length: only their cut copies need padding
    assert "✓ resid_pre.l" in out and "✓ resid_mid.l" in out
    assert "✗ the same samples cut to 3, 2, 2, 1 tokens" in out and "you read a padded position" in out
    # samples of different lengths: caught on the first case already
    model, ids = llama
    uneven = [ids[0], ids[1][:5], ids[2][:7], ids[3][:3]]
    assert not hooks_exercise.check_residual_hooks(padded, model, uneven)
    assert "you read a padded position" in _unwrap(capsys.readouterr().out).split("✗ resid_pre.l")[1]


@pytest.mark.parametrize("where, words", [
    (lambda layer: layer.mlp, "OUTPUT of post_attention_layernorm"),
    (lambda layer: layer.self_attn, "output of input_layernorm (the input of self_attn)"),
    (lambda layer: layer, "your resid_mid.l is resid_pre.l"),
], ids=["input-of-mlp", "input-of-self_attn", "the-layer-again"])
def test_resid_mid_at_the_wrong_module(llama, capsys, where, words):
    ok, out = _check(lambda m, ids: read_residual(m, ids, mid_site=where), llama, capsys)
    assert not ok
    assert "✓ resid_pre.l" in out and "✗ resid_mid.l" in out and words in out


def test_resid_mid_at_the_attention_output(llama, capsys):
    """A forward hook on self_attn reads the write, not the stream after the add."""
    import torch

    def attention_write(model, input_ids):
        out = read_residual(model, input_ids)
        states = []
        handles = [layer.self_attn.register_forward_hook(lambda m, a, o: states.append(o[0][0, -1].float().numpy()))
                   for layer, _ in residual_sites(model)]
        try:
            with torch.no_grad():
                for ids in input_ids:
                    model.model(torch.tensor([ids]))
        finally:
            for h in handles:
                h.remove()
        out[:, 1::2] = np.reshape(states, (len(input_ids), -1, out.shape[2]))
        return out

    ok, out = _check(attention_write, llama, capsys)
    assert not ok
    assert "the attention block's write" in out


def test_sites_in_another_order(llama, capsys):
    ok, out = _check(lambda m, ids: np.concatenate([read_residual(m, ids)[:, 0::2], read_residual(m, ids)[:, 1::2]],
                                                   axis=1), llama, capsys)
    assert not ok
    assert "in another order" in out


def test_hooks_left_on_the_model_are_reported_and_removed(llama, capsys):
    model, _ = llama

    def leaky(m, ids):
        out = read_residual(m, ids)
        m.model.layers[0].register_forward_pre_hook(lambda mod, args: None)
        return out

    ok, out = _check(leaky, llama, capsys)
    assert not ok
    assert "✗ leaves no hooks on the model: 2 hooks were still registered" in out
    assert not model.model.layers[0]._forward_pre_hooks


def test_a_raising_or_misshapen_function_is_reported(llama, capsys):
    ok, out = _check(lambda m, ids: 1 / 0, llama, capsys)
    assert not ok and "raised ZeroDivisionError" in out
    ok, out = _check(lambda m, ids: read_residual(m, ids)[:, :-1], llama, capsys)
    assert not ok and "expected (4, 6, 64)" in out


def test_bad_input_to_the_check(llama):
    model, ids = llama
    with pytest.raises(ValueError, match="at least 2 samples"):
        hooks_exercise.check_residual_hooks(read_residual, model, ids[:1])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        hooks_exercise.check_residual_hooks(read_residual, model, [ids[0], [5]])


def test_relative_gap():
    want = np.zeros((1, 2, 3))
    want[0, 0] = [1.0, -100.0, 2.0]
    got = want.copy()
    got[0, 0, 0] += 1.0
    got[0, 1, 2] = 1.0
    gap = hooks_exercise.relative_gap(got, want)
    assert gap[0, 0] == pytest.approx(0.01) and gap[0, 1] == np.inf
    got[0, 0, 1] = np.nan
    assert np.isnan(hooks_exercise.relative_gap(got, want)[0, 0])
    with pytest.raises(ValueError, match="one shape"):
        hooks_exercise.relative_gap(got[:, :1], want)


@pytest.mark.slow
def test_on_smollm2(smollm2, capsys):
    """The real model, the course's first samples: the solution passes, off by one layer fails."""
    from tdcourse.data import SampleRecipe, build_samples

    model, tok = smollm2
    ids = build_samples(tok, SampleRecipe(n=4)).input_ids
    assert hooks_exercise.check_residual_hooks(read_residual, model, ids), capsys.readouterr().out
    assert not hooks_exercise.check_residual_hooks(
        lambda m, x: read_residual(m, x, forward_hook_on_layer=True), model, ids)
    assert "off by one layer" in _unwrap(capsys.readouterr().out)


def test_the_cached_capture_case(llama, capsys):
    model, ids = llama
    cached = capture(model, ids, progress=False)
    assert hooks_exercise.check_residual_hooks(read_residual, model, ids, cached=cached)
    out = _unwrap(capsys.readouterr().out)
    assert "✓ equals the cached capture of these 4 samples" in out and out.count("✓") == 6
    # a wrong function fails this case too
    assert not hooks_exercise.check_residual_hooks(lambda m, x: read_residual(m, x, position=0), model, ids,
                                                   cached=cached)
    assert "✗ equals the cached capture" in _unwrap(capsys.readouterr().out)
    # a cache of something else: said, not blamed on the function
    other = cached.copy()
    other[:, 3] += 1.0
    assert not hooks_exercise.check_residual_hooks(read_residual, model, ids, cached=other)
    assert "captured from another model, precision or samples" in _unwrap(capsys.readouterr().out)
    assert not hooks_exercise.check_residual_hooks(read_residual, model, ids, cached=cached[:, :-1])
    assert "expected (4, 6, 64)" in _unwrap(capsys.readouterr().out)
