"""Residual sites on every architecture family the course accepts, and refusal of the others.

Each family is a tiny random model built from its config (width 32, 2 layers). The true
residual after the attention add is computed here from the layer's own submodules, following
each family's ``DecoderLayer.forward`` in transformers, independently of ``models.RESIDUAL_SITES``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from tdcourse import capture as cap
from tdcourse import models
from tdcourse.models import ResidualSiteError, SiteMap, UnsupportedModelError

COMMON = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)

#: config class -> extra arguments; one per family in models.RESIDUAL_SITES.
FAMILIES = {
    "LlamaConfig": {}, "MistralConfig": {}, "Qwen2Config": {}, "Qwen3Config": {"head_dim": 8},
    "GemmaConfig": {"head_dim": 8}, "OlmoConfig": {}, "Phi3Config": {}, "SmolLM3Config": {},
    "Starcoder2Config": {}, "Olmo2Config": {}, "Olmo3Config": {}, "Gemma2Config": {"head_dim": 8},
    "Gemma3TextConfig": {"head_dim": 8},
}
#: families whose attention output is normalised before the add (read from their forward()).
POST_ATTENTION_NORM = {"olmo2", "olmo3", "gemma2", "gemma3_text"}


def tiny(config_name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    config = getattr(transformers, config_name)(**COMMON, **FAMILIES.get(config_name, {}), **extra)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def sample_ids(seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 100, size=k).tolist() for k in (5, 9, 3, 7)]


def mlp_half(layer, family: str, h):
    """What a decoder layer adds after attention, from its submodules (transformers' forward())."""
    if family in ("gemma2", "gemma3_text"):
        return layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h)))
    if family in ("olmo2", "olmo3"):
        return layer.post_feedforward_layernorm(layer.mlp(h))
    return layer.mlp(layer.post_attention_layernorm(h))


def true_sites(model, ids: list[int]):
    """resid_pre and the true residual after attention, each (n_layers, d_model), at the last token.

    resid_pre from ``output_hidden_states``; the residual after attention as resid_pre plus the
    attention output (normalised by post_attention_layernorm on post-norm families), checked to
    reproduce the layer's output with the MLP half computed by hand.
    """
    family = model.config.model_type
    layers = model.model.layers
    attn_out, layer_out = {}, {}
    hooks = [l.self_attn.register_forward_hook(lambda m, a, o, i=i: attn_out.__setitem__(i, o[0]))
             for i, l in enumerate(layers)]
    hooks += [l.register_forward_hook(lambda m, a, o, i=i: layer_out.__setitem__(i, o[0] if isinstance(o, tuple) else o))
              for i, l in enumerate(layers)]
    try:
        with torch.no_grad():
            hs = model.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
            pre, mid = [], []
            for i, layer in enumerate(layers):
                a = attn_out[i]
                if family in POST_ATTENTION_NORM:
                    a = layer.post_attention_layernorm(a)
                h = hs[i] + a
                torch.testing.assert_close(h + mlp_half(layer, family, h), layer_out[i], rtol=1e-5, atol=1e-5)
                pre.append(hs[i][0, -1])
                mid.append(h[0, -1])
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(pre).numpy(), torch.stack(mid).numpy()


def test_every_mapped_family_is_tested_here():
    families = {tiny(name).config.model_type for name in FAMILIES}
    assert families == set(models.RESIDUAL_SITES)


@pytest.mark.parametrize("config_name", list(FAMILIES))
def test_captured_sites_are_the_true_residual(config_name):
    model = tiny(config_name)
    ids = sample_ids()
    acts = cap.capture(model, ids, batch_size=3, progress=False)
    assert acts.shape == (4, 4, 32)
    for i, sample in enumerate(ids):
        pre, mid = true_sites(model, sample)
        np.testing.assert_allclose(acts[i, 0::2], pre, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(acts[i, 1::2], mid, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config_name", ["Olmo2Config", "Olmo3Config", "Gemma2Config", "Gemma3TextConfig"])
def test_post_attention_layernorm_input_is_not_the_residual_on_post_norm_families(config_name):
    """The site the course used to read on every family is off by ~100 % here."""
    model = tiny(config_name)
    ids = sample_ids()[1]
    seen = {}
    h = model.model.layers[0].post_attention_layernorm.register_forward_pre_hook(
        lambda m, a: seen.setdefault("x", a[0][0, -1].clone()))
    try:
        _, mid = true_sites(model, ids)
    finally:
        h.remove()
    gap = np.linalg.norm(seen["x"].numpy() - mid[0]) / np.linalg.norm(mid[0])
    assert gap > 0.5


@pytest.mark.parametrize("config_name", list(FAMILIES))
def test_self_check_passes_in_float32_and_bfloat16(config_name):
    model = tiny(config_name)
    ids = torch.tensor([sample_ids()[1][:7], sample_ids()[3]])
    gaps = models.check_residual_sites(model, ids)
    assert gaps.shape == (2, 2) and gaps.max() < 1e-5
    gaps16 = models.check_residual_sites(model.to(torch.bfloat16), ids)
    assert 0 < gaps16.max() < 2e-2  # bfloat16 rounds the sums: not exact, far below a wrong site's ~1


@pytest.mark.parametrize("family", ["olmo2", "gemma2"])
def test_wrong_map_is_refused_by_the_self_check_and_by_capture(monkeypatch, family):
    """If the map said 'pre-norm' for a post-norm family, the identities catch it."""
    model = tiny({"olmo2": "Olmo2Config", "gemma2": "Gemma2Config"}[family])
    monkeypatch.setitem(models.RESIDUAL_SITES, family, SiteMap("post_attention_layernorm", "self_attn", "mlp"))
    with pytest.raises(ResidualSiteError, match=r"fails at layer 0 .*relative gap 1"):
        models.check_residual_sites(model, torch.tensor([sample_ids()[1]]))
    with pytest.raises(ResidualSiteError, match="refuses the model"):
        cap.capture(model, sample_ids(), progress=False)


def test_a_missing_submodule_is_refused(monkeypatch):
    model = tiny("LlamaConfig")
    monkeypatch.setitem(models.RESIDUAL_SITES, "llama", SiteMap("pre_feedforward_layernorm", "self_attn", "mlp"))
    with pytest.raises(ResidualSiteError, match="no submodule 'pre_feedforward_layernorm'"):
        models.residual_sites(model)


@pytest.mark.parametrize("config", [
    lambda: transformers.GraniteConfig(**COMMON, residual_multiplier=0.5),  # scaled residual adds
    lambda: transformers.CohereConfig(**COMMON),  # attention and MLP in parallel: no resid_mid
    lambda: transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, bos_token_id=1, eos_token_id=1),
])
def test_unknown_families_are_refused_with_the_supported_list(config):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config()).eval()
    with pytest.raises(UnsupportedModelError, match=r"refuses (them|it).*Supported families: .*gemma2.*llama.*olmo2"):
        cap.capture(model, sample_ids(), progress=False)
    with pytest.raises(UnsupportedModelError):
        models.model_family(model.config)


def test_decoder_layers_finds_a_nested_language_model():
    """Multimodal wrappers (Gemma-3) hold the decoder at model.model.language_model.layers."""
    layers = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])
    lm = torch.nn.Module()
    lm.layers = layers
    inner = torch.nn.Module()
    inner.language_model = lm
    outer = torch.nn.Module()
    outer.model = inner
    assert models.decoder_layers(outer) == list(layers)
    with pytest.raises(TypeError, match="has no .model.layers"):
        models.decoder_layers(torch.nn.Linear(2, 2))
