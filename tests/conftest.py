"""Shared fixtures: a tiny random Llama (fast, no files) and the embedded SmolLM2 (slow tests).

Every test runs with its own empty ``TDCOURSE_CACHE`` unless it asks for ``smol_cache``,
which points at the session's shared cache so the SmolLM2 conversion and the N = 1000
capture happen once per machine.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

SHARED_CACHE = os.environ.get("TDCOURSE_CACHE")


@pytest.fixture(autouse=True)
def _isolated_cache(request, tmp_path, monkeypatch):
    """An empty cache per test, except for tests marked ``slow`` (they share the real one)."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path / "cache"))
    yield


@pytest.fixture(scope="session")
def tiny_llama():
    """A 3-layer, width-64 LlamaForCausalLM with seeded random weights, and a toy tokenizer-free setup.

    Returns ``(model, input_ids)`` where ``input_ids`` is a list of 6 token-id lists of lengths 3–9.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    rng = np.random.default_rng(0)
    ids = [rng.integers(3, 100, size=k).tolist() for k in (3, 9, 5, 7, 4, 8)]
    return model, ids


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M and its tokenizer (converted into the shared cache once)."""
    from tdcourse.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def smol_acts():
    """The cached N = 1000 SmolLM2 capture (captured on first use)."""
    from tdcourse.capture import load_activations

    return load_activations(n=1000, progress=False)
