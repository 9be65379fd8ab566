"""Stand-in models for testing the course at the paper's scale without the paper's weights.

Local model folders with seeded random weights and the embedded SmolLM2 tokenizer, built
once into ``$TDCOURSE_CACHE/models/``. A chapter runs on one unedited by pointing the course's
one setting at the folder (``TDCOURSE_MODEL=<folder>``; see :mod:`tdcourse.settings`):

``"8b-shape"``
    Llama 3.1 8B's **activation shape**: width 4096 and 32 decoder layers (64 sites), but one
    128-wide attention head and a 256-wide MLP, tied embeddings: every width- and
    depth-dependent step of the analyses runs at the 8B's size on a laptop CPU
    (~370 M parameters, 1.5 GB on disk, mostly the embedding).
``"70b-shape"``
    Llama 3.1 70B's **activation shape**: width 8192 and 80 decoder layers (160 sites), with
    the same cheap blocks as ``"8b-shape"`` (one 128-wide head, a 256-wide MLP, tied
    embeddings): ~1.24 B parameters, 5.0 GB on disk in float32, mostly the embedding and the
    80 layers' projections. A capture of N samples is 5.2 MB per sample in float32
    (160 × 8192 × 4 bytes), as the real 70B's would be.
``"4-layer"``
    A small 4-layer Llama (width 256): catches code that assumes many layers.

The values these models produce mean nothing (random weights); they test that the course
*runs* at that shape, not what Llama 3.1 8B would show.

>>> folder = build_standin("8b-shape")     # doctest: +SKIP
>>> # TDCOURSE_MODEL=$folder jupyter lab   -> every chapter runs the stand-in
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from . import env

__all__ = ["STANDINS", "build_standin", "standin_config"]

#: Stand-in name -> LlamaConfig arguments (vocabulary and special tokens come from SmolLM2).
STANDINS: dict[str, dict] = {
    "8b-shape": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=1, num_key_value_heads=1,
                     head_dim=128, intermediate_size=256, rope_theta=500000.0, rms_norm_eps=1e-5),
    "70b-shape": dict(hidden_size=8192, num_hidden_layers=80, num_attention_heads=1, num_key_value_heads=1,
                      head_dim=128, intermediate_size=256, rope_theta=500000.0, rms_norm_eps=1e-5),
    "4-layer": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                    head_dim=64, intermediate_size=512, rope_theta=10000.0, rms_norm_eps=1e-5),
}
_VERSION = 2  # bump when a config above or the way weights are drawn changes
#: The stand-in's weights are drawn under ``torch.manual_seed(_WEIGHT_SEED_OFFSET + seed)``: the
#: chapters' random-init control draws the same architecture under ``torch.manual_seed(0)``,
#: and a stand-in drawn with that seed would be its own control.
_WEIGHT_SEED_OFFSET = 10_000


def standin_config(kind: str, vocab_size: int, bos_token_id: int | None, eos_token_id: int | None):
    """The ``LlamaConfig`` of stand-in ``kind`` for a tokenizer of ``vocab_size`` tokens.

    Raises ``ValueError`` for a kind not in :data:`STANDINS`.
    """
    from transformers import LlamaConfig

    if kind not in STANDINS:
        raise ValueError(f"Unknown stand-in {kind!r}: choose one of {sorted(STANDINS)}.")
    return LlamaConfig(vocab_size=vocab_size, tie_word_embeddings=True, max_position_embeddings=2048,
                       bos_token_id=bos_token_id, eos_token_id=eos_token_id, **STANDINS[kind])


def build_standin(kind: str = "8b-shape", seed: int = 0, rebuild: bool = False) -> Path:
    """Build (once) the stand-in model ``kind`` and return its folder.

    Parameters
    ----------
    kind : {"8b-shape", "70b-shape", "4-layer"}
        See the module docstring.
    seed : int
        Seed of the random weights, part of the folder name; the weights are drawn under
        ``torch.manual_seed(10_000 + seed)``, so that they differ from the random-init control
        (``load_model(folder, init="random", seed=0)``) the chapters compare them with.
    rebuild : bool
        Build again even if the folder exists.

    Returns
    -------
    pathlib.Path
        ``$TDCOURSE_CACHE/models/standin-<kind>-seed<seed>``: ``config.json``,
        ``model.safetensors`` (float32), the SmolLM2 tokenizer files, and
        ``tdcourse-standin.json`` recording how it was built. Loads wherever a hub id does:
        ``load_model(str(folder))``.

    Raises
    ------
    ValueError
        For an unknown ``kind`` or a negative ``seed``.
    tdcourse.models.ModelLoadError
        The cache's disk cannot take the weights (checked before they are drawn); nothing is
        written, and no temporary folder is left on any failure.
    """
    if kind not in STANDINS:
        raise ValueError(f"Unknown stand-in {kind!r}: choose one of {sorted(STANDINS)}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    target = env.cache_dir() / "models" / f"standin-{kind}-seed{seed}"
    stamp = {"kind": kind, "seed": seed, "version": _VERSION, "config": STANDINS[kind]}
    marker = target / "tdcourse-standin.json"
    if not rebuild and marker.exists():
        try:
            if json.loads(marker.read_text()) == stamp and (target / "model.safetensors").exists():
                return target
        except (OSError, json.JSONDecodeError):
            pass
    # imported here: a stand-in already built is returned without torch and transformers (7 s)
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from .models import ModelLoadError, _converted_smollm2_dir, _count_params_from_config

    tok = AutoTokenizer.from_pretrained(_converted_smollm2_dir())
    config = standin_config(kind, len(tok), tok.bos_token_id, tok.eos_token_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Room before the write (the 8b-shape stand-in is 1.5 GB of float32 weights).
    problem = env.room_problem(target.parent, 4 * _count_params_from_config(config), f"the {kind} stand-in")
    if problem:
        raise ModelLoadError(f"{problem} Nothing was built.")
    tmp = target.parent / env.temporary_name(f"-standin-{kind}")  # a killed build's leftover is cleaned
    env.clean_stale_temporaries(target.parent)
    tmp.mkdir()
    try:
        torch.manual_seed(_WEIGHT_SEED_OFFSET + seed)
        model = LlamaForCausalLM(config).eval()
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "tdcourse-standin.json").write_text(json.dumps(stamp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
