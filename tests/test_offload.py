"""A model split by accelerate (issue 22 item 2, issue 19): the hooks follow each hidden state's
device, so CPU / disk offload (the embedding's weights on the ``meta`` device) gives the same
rows as the unsplit model."""

from __future__ import annotations

import numpy as np
import pytest

from tdcourse.hooks import capture, input_device

#: Every module on its own device: the embedding and a middle layer on disk, the rest on the CPU.
SPLIT = {"model.embed_tokens": "disk", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "cpu",
         "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_llama):
    model, ids = tiny_llama
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    return model, ids, folder, capture(model, ids, batch_size=4, progress=False)


def _copy(model):
    from transformers import LlamaForCausalLM

    other = LlamaForCausalLM(model.config).eval()
    other.load_state_dict(model.state_dict())
    return other


@pytest.mark.parametrize("how", ["from_pretrained", "cpu_offload", "disk_offload"])
def test_offloaded_model_gives_the_rows_of_the_unsplit_one(saved, how, tmp_path):
    import accelerate
    from transformers import AutoModelForCausalLM

    model, ids, folder, want = saved
    if how == "from_pretrained":
        split = AutoModelForCausalLM.from_pretrained(folder, device_map=SPLIT, offload_folder=tmp_path)
    elif how == "cpu_offload":
        split = accelerate.cpu_offload(_copy(model), execution_device="cpu")
    else:
        split = accelerate.disk_offload(_copy(model), tmp_path, execution_device="cpu")
    split.eval()
    # what made the old capture fail: its first parameter (the embedding) sits on "meta"
    assert next(split.parameters()).device.type == "meta"
    assert input_device(split).type == "cpu"
    got = capture(split, ids, batch_size=4, progress=False)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_load_activations_with_a_device_map(saved, tmp_path):
    """The library path: load_activations(..., device_map=..., offload_folder=...) on a local
    folder; same values as the plain capture, same cache entry (the map is not in the key)."""
    import shutil

    from tdcourse.capture import load_activations
    from test_cache_roundtrip import _tiny_folder

    folder = _tiny_folder(tmp_path / "m")
    plain = load_activations(folder, n=4, progress=False)
    shutil.rmtree(plain.path)
    split = load_activations(folder, n=4, progress=False, offload_folder=tmp_path / "off",
                             device_map={"model.embed_tokens": "disk", "model.layers.0": "cpu",
                                         "model.layers.1": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu",
                                         "lm_head": "cpu"})
    assert split.path == plain.path
    np.testing.assert_allclose(split.acts, plain.acts, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs, says", [
    ({"device_map": "everywhere"}, "device_map must be one of"),
    ({"device_map": 3}, "device_map must be one of"),
    ({"device_map": "auto", "init": "random", "quant": "none"}, "random-init control is drawn on one device"),
])
def test_a_bad_device_map_is_named(kwargs, says, tmp_path):
    from tdcourse.models import load_model
    from test_cache_roundtrip import _tiny_folder

    folder = _tiny_folder(tmp_path / "m")
    with pytest.raises(ValueError, match=says):
        load_model(folder, **kwargs)


def test_multimodal_gemma3_is_captured_through_its_text_config(tmp_path):
    """Gemma-3 as shipped from 4B up: Gemma3ForConditionalGeneration, whose top config has no
    hidden_size. Its capture equals that of the same text weights as a Gemma3ForCausalLM."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3Config, Gemma3ForCausalLM, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                            pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    config = Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                          image_token_index=299, boi_token_index=297, eoi_token_index=298)
    assert not hasattr(config, "hidden_size")
    torch.manual_seed(0)
    mm = AutoModelForCausalLM.from_config(config).eval()
    lm = Gemma3ForCausalLM(text).eval()
    lm.model.load_state_dict(mm.model.language_model.state_dict())
    ids = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    got = capture(mm, ids, batch_size=2, progress=False)
    assert got.shape == (3, 4, 32)
    np.testing.assert_allclose(got, capture(lm, ids, batch_size=2, progress=False), rtol=1e-5, atol=1e-6)
    # and through the course's own path, from a folder as shipped (config with text_config)
    from tdcourse.capture import load_activations
    from test_cache_roundtrip import _tiny_folder

    folder = _tiny_folder(tmp_path / "gemma3-mm")  # its byte-level tokenizer (258 ids < 297)
    mm.save_pretrained(folder)
    act = load_activations(folder, n=3, progress=False)
    assert act.acts.shape == (3, 4, 32) and act.meta["model"]["name"] == folder


def test_token_ids_outside_the_vocabulary_are_one_clear_error(tiny_llama):
    model, ids = tiny_llama
    with pytest.raises(ValueError, match=r"Sample 1 holds token id 100, outside the model's vocabulary \(ids 0 to 99\)"):
        capture(model, [ids[0], ids[1] + [100]], progress=False)
    with pytest.raises(ValueError, match="token id -1"):
        capture(model, [[-1, 3]], progress=False)
