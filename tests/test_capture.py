"""Capture sites, last-token indexing, batching and the activation cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tdcourse import capture as cap
from tdcourse.capture import CacheError, capture, read_activations, save_activations, site_index, site_names


def _reference_states(model, ids):
    """One sample at a time, no padding: hidden_states[l] for l < L and resid_mid by hooks."""
    L = model.config.num_hidden_layers
    out = np.empty((len(ids), 2 * L, model.config.hidden_size), np.float32)
    for i, seq in enumerate(ids):
        x = torch.tensor([seq])
        attn_out = {}
        hooks = [layer.self_attn.register_forward_hook(lambda m, a, o, l=l: attn_out.__setitem__(l, o[0]))
                 for l, layer in enumerate(model.model.layers)]
        with torch.no_grad():
            hs = model(input_ids=x, output_hidden_states=True).hidden_states
        for h in hooks:
            h.remove()
        for l in range(L):
            out[i, 2 * l] = hs[l][0, -1].numpy()
            out[i, 2 * l + 1] = (hs[l][0, -1] + attn_out[l][0, -1]).numpy()
    return out, hs


def test_site_names_order():
    assert site_names(2) == ["resid_pre.0", "resid_mid.0", "resid_pre.1", "resid_mid.1"]
    assert site_index("resid_mid", 1, 2) == 3
    with pytest.raises(ValueError, match="out of range"):
        site_index("resid_pre", 2, 2)
    with pytest.raises(ValueError, match="site kind"):
        site_index("resid_post", 0, 2)


def test_capture_matches_hidden_states_and_attention_add(tiny_llama):
    model, ids = tiny_llama
    got = capture(model, ids, batch_size=4, progress=False)
    ref, hs = _reference_states(model, ids)
    assert got.shape == (len(ids), 6, 64)
    # resid_pre[l] is exactly hidden_states[l]; resid_mid[l] = resid_pre[l] + attention output.
    np.testing.assert_allclose(got[:, 0::2], ref[:, 0::2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[:, 1::2], ref[:, 1::2], rtol=1e-4, atol=1e-5)
    # the last hidden state is the final-norm output, not a residual state we capture
    assert not np.allclose(hs[-1][0, -1].numpy(), got[-1, -1], atol=1e-3)


def test_capture_independent_of_batching_and_padding(tiny_llama):
    model, ids = tiny_llama
    a = capture(model, ids, batch_size=1, progress=False)
    b = capture(model, ids, batch_size=6, progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_capture_rejects_empty(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(ValueError):
        capture(model, [], progress=False)
    with pytest.raises(ValueError, match="at least one token"):
        capture(model, [[5, 6], []], progress=False)


def _meta(n=3):
    return {"format_version": cap.FORMAT_VERSION, "model": {"name": "x", "source": "x", "revision": None,
            "quant": "none", "dtype": "float32", "init": "trained", "seed": 0},
            "recipe": {"n": n}, "data_sha256": "d", "input_ids_sha256": "i", "sites": ["resid_pre", "resid_mid"],
            "position": "last"}


def test_cache_roundtrip_and_corruption(tmp_path):
    acts = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    path = save_activations(acts, site_names(2), ["a", "b", "c"], _meta())
    back = read_activations(path, expect_meta=_meta())
    np.testing.assert_array_equal(back.acts, acts)
    a, s, t = back  # unpacks as (acts, sites, texts)
    assert s == site_names(2) and t == ["a", "b", "c"]
    # metadata that does not match what was asked is never returned
    other = _meta()
    other["recipe"] = {"n": 4}
    with pytest.raises(CacheError, match="other settings"):
        read_activations(path, expect_meta=other)
    # a flipped byte is caught by the checksum
    raw = bytearray((path / "acts.npy").read_bytes())
    raw[-1] ^= 0xFF
    (path / "acts.npy").write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="corrupt"):
        read_activations(path)
    # a truncated file too, and the message says how to rebuild
    (path / "acts.npy").write_bytes(bytes(raw[:100]))
    with pytest.raises(CacheError, match="rebuild"):
        read_activations(path)


def test_cache_stale_format_and_missing_meta(tmp_path):
    acts = np.zeros((1, 2, 3), np.float32)
    path = save_activations(acts, site_names(1), ["a"], _meta(1))
    record = json.loads((path / "meta.json").read_text())
    record["meta"]["format_version"] = 0
    (path / "meta.json").write_text(json.dumps(record))
    with pytest.raises(CacheError, match="format"):
        read_activations(path)
    (path / "meta.json").unlink()
    with pytest.raises(CacheError, match="meta.json"):
        read_activations(path)


def test_cache_key_changes_with_every_field():
    base = cap.cache_key(_meta())
    for field, value in [("data_sha256", "e"), ("position", "first"), ("format_version", 99)]:
        m = _meta()
        m[field] = value
        assert cap.cache_key(m) != base
    m = _meta()
    m["model"]["quant"] = "4bit"
    assert cap.cache_key(m) != base


@pytest.mark.slow
def test_smollm2_capture_against_hidden_states(smollm2):
    """On the real model: captured resid_pre equals output_hidden_states[l] for every l < L,
    resid_mid equals resid_pre + attention output, and index L is the final norm, not a state."""
    model, tok = smollm2
    texts = ["The residual stream of a transformer", "Robert Boulter is an English film , television and theatre actor ."]
    ids = [tok(t).input_ids for t in texts]
    got = capture(model, ids, batch_size=2, pad_token_id=tok.pad_token_id, progress=False)
    ref, hs = _reference_states(model, ids)
    assert got.shape == (2, 60, 576)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-3)
    final_norm = hs[30][0, -1].numpy()
    assert np.abs(final_norm - got[-1, -2]).max() > 1.0


@pytest.mark.slow
def test_smollm2_cached_activations(smol_acts):
    assert smol_acts.acts.shape == (1000, 60, 576)
    assert smol_acts.acts.dtype == np.float32
    assert smol_acts.sites[:2] == ["resid_pre.0", "resid_mid.0"]
    assert len(smol_acts.texts) == 1000
    # residual norm grows with depth in a trained Llama (a sanity check on the site order)
    norms = np.linalg.norm(smol_acts.acts, axis=2).mean(0)
    assert norms[-1] > 10 * norms[0]


def test_check_acts_says_what_was_expected():
    from tdcourse.capture import check_acts

    assert check_acts(np.zeros((2, 3, 4), dtype=int)).dtype == np.float64
    with pytest.raises(ValueError, match=r"\(n_samples, n_sites, d_model\)"):
        check_acts(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="empty"):
        check_acts(np.zeros((0, 3, 4)))
    with pytest.raises(ValueError, match="at least 3 sites on axis 1 for a gradient, got 2"):
        check_acts(np.zeros((2, 2, 4)), min_sites=3, why="for a gradient")
    with pytest.raises(ValueError, match="at least 5 samples"):
        check_acts(np.zeros((2, 2, 4)), min_samples=5)


# --------------------------------------------------------------------------- validation, non-finite input


def test_check_acts_refuses_nan_and_inf_naming_samples_and_sites():
    from tdcourse.capture import check_acts, nonfinite_sites

    acts = np.zeros((50, 6, 4), np.float32)
    acts[3, 5, 1] = np.nan
    acts[40, 0, 0] = np.inf
    acts[40, 2, 3] = -np.inf
    np.testing.assert_array_equal(nonfinite_sites(acts, block_bytes=64), [[3, 5], [40, 0], [40, 2]])
    with pytest.raises(ValueError, match=r"3 \(sample, site\) pairs over 2 samples: sample 3 at site 5 "
                                         r"\(resid_mid.2\), sample 40 at site 0 \(resid_pre.0\)"):
        check_acts(acts, name="acts")
    ok = np.ones((2, 3, 4), np.float32)
    assert check_acts(ok) is ok  # no copy of a valid float array
    assert check_acts(acts, finite=False) is acts
    with pytest.raises(ValueError, match="real numbers"):
        check_acts(np.zeros((2, 3, 4), dtype=bool))


def _verdicts_of(module):
    import importlib

    mod = importlib.import_module(f"tdcourse.{module}")
    return mod.verdicts


@pytest.mark.parametrize("module", ["stationarity", "continuity", "geometry", "information", "rotations",
                                    "lowdim", "perturb"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_no_verdict_from_non_finite_activations(module, bad):
    """One NaN (or inf) in an otherwise valid array: every chapter's verdicts refuse it clearly."""
    from tdcourse.capture import Activations

    acts = np.random.default_rng(0).normal(size=(60, 16, 8)).astype(np.float32)
    acts = acts.cumsum(axis=1)  # a residual-like stream (8 layers)
    acts[7, 9, 2] = bad
    run = Activations(acts=acts, sites=site_names(8), texts=[""] * 60, meta={}, path=None)
    with pytest.raises(ValueError, match=r"NaN or inf .*sample 7 at site 9 \(resid_mid.4\)"):
        _verdicts_of(module)(run, "chapter")


@pytest.mark.parametrize("layer", [1.7, True, "1", 1.0])
def test_site_layer_must_be_an_integer(layer):
    from tdcourse.capture import Activations

    run = Activations(acts=np.zeros((2, 4, 3), np.float32), sites=site_names(2), texts=["", ""])
    with pytest.raises(ValueError, match="layer must be an integer"):
        run.site("resid_pre", layer)
    assert run.site("resid_mid", np.int64(1)).shape == (2, 3)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True, "4"])
def test_capture_batch_size_is_validated(tiny_llama, batch_size):
    model, ids = tiny_llama
    with pytest.raises(ValueError, match="batch_size must be"):
        capture(model, ids, batch_size=batch_size, progress=False)


def test_pad_id_outside_the_vocabulary_is_never_used(tiny_llama):
    """A pad token added to a tokenizer without resizing the model: its id is past the embedding
    table. Padded slots are never read, so a safe id is used and the states are unchanged."""
    model, ids = tiny_llama
    ref = capture(model, ids, batch_size=1, progress=False)  # no padding at all
    got = capture(model, ids, batch_size=6, pad_token_id=100, progress=False)  # vocab is 0..99
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert cap._pad_id(model, 100) == 0 and cap._pad_id(model, 5) == 5 and cap._pad_id(model, -3) == 0
