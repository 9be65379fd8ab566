"""The stand-in models: the 8B's activation shape on a laptop, and a 4-layer Llama."""

from __future__ import annotations

import pytest

from tdcourse.standins import STANDINS, build_standin, standin_config


def test_8b_shape_has_the_paper_models_activation_shape():
    import torch
    from transformers import AutoModelForCausalLM

    config = standin_config("8b-shape", vocab_size=49152, bos_token_id=1, eos_token_id=2)
    assert (config.hidden_size, config.num_hidden_layers) == (4096, 32)  # Llama 3.1 8B: 64 sites of width 4096
    assert (config.num_attention_heads, config.head_dim, config.intermediate_size) == (1, 128, 256)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # transformers 5.0.0 leaves a model built on the meta device untied
    assert model.lm_head.weight is model.model.embed_tokens.weight
    n = sum(p.numel() for p in model.parameters())
    assert 3.6e8 < n < 3.8e8  # 201 M tied embedding + 32 x 5.3 M blocks: runs on two CPU cores


def test_unknown_kind_and_bad_seed_are_refused():
    with pytest.raises(ValueError, match="Unknown stand-in"):
        build_standin("70b")
    with pytest.raises(ValueError, match="seed"):
        build_standin("4-layer", seed=-1)
    assert set(STANDINS) == {"8b-shape", "70b-shape", "4-layer"}


def test_70b_shape_has_the_70b_activation_shape_and_the_8b_standins_cheap_blocks():
    import torch
    from transformers import AutoModelForCausalLM

    config = standin_config("70b-shape", vocab_size=49152, bos_token_id=1, eos_token_id=2)
    assert (config.hidden_size, config.num_hidden_layers) == (8192, 80)  # Llama 3.1 70B: 160 sites of width 8192
    assert (config.num_attention_heads, config.head_dim, config.intermediate_size) == (1, 128, 256)
    assert config.tie_word_embeddings
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # transformers 5.0.0 leaves a model built on the meta device untied
    assert model.lm_head.weight is model.model.embed_tokens.weight
    n = sum(p.numel() for p in model.parameters())
    assert 1.2e9 < n < 1.3e9  # 403 M tied embedding + 80 x 10.5 M blocks: 5.0 GB in float32


@pytest.mark.slow
def test_4_layer_standin_loads_and_captures_like_a_hub_model():
    from tdcourse.capture import capture
    from tdcourse.models import load_model

    folder = build_standin("4-layer")
    assert build_standin("4-layer") == folder  # built once
    model, tok = load_model(str(folder))
    assert len(model.model.layers) == 4 and model.config.hidden_size == 256
    ids = [tok("The residual stream")["input_ids"], tok("of a model")["input_ids"]]
    acts = capture(model, ids, progress=False)
    assert acts.shape == (2, 8, 256)
    # the chapters' random-init control (seed 0) must be another model than the stand-in itself
    control, _ = load_model(str(folder), init="random", seed=0)
    w, c = model.model.layers[0].mlp.up_proj.weight, control.model.layers[0].mlp.up_proj.weight
    assert w.shape == c.shape and not (w == c).all()
    assert not (capture(control, ids, progress=False) == acts).all()
