"""On a GPU machine without hub access: the Llama 3.1 8B *architecture* with random weights.

Measures what a Colab / GPU user of the course can expect for Llama 3.1 8B, with the real
loading paths of ``tdcourse`` (random init on the device; then the same weights saved and
reloaded in bf16 and in 4-bit NF4 through bitsandbytes), and the capture of N samples.
Trained weights would change the values, not the time or the memory.

Usage: ``python benchmarks/gpu_llama_shape.py --tokenizer DIR [--n 1000]``
(``DIR``: any Llama-style tokenizer folder; the hub's Llama 3.1 tokenizer if you have it.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

import tdcourse

LLAMA_31_8B = dict(
    architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096, intermediate_size=14336,
    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
    max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0, hidden_act="silu",
    rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001, torch_dtype="bfloat16",
)


def peak() -> str:
    g = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return f"peak GPU memory {g:.1f} GiB"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--workdir", default=tempfile.gettempdir())
    a = p.parse_args()
    print(tdcourse.env.report())
    root = Path(a.workdir)
    shape = root / "llama-3.1-8b-shape"
    shape.mkdir(exist_ok=True)
    (shape / "config.json").write_text(json.dumps(LLAMA_31_8B))
    for f in Path(a.tokenizer).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, shape / f.name)

    t = time.perf_counter()
    model, tok = tdcourse.load_model(str(shape), init="random", dtype="bfloat16")
    print(f"random init on the GPU, bf16: {time.perf_counter() - t:.1f} s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters; {peak()}")
    del model
    torch.cuda.empty_cache()
    t = time.perf_counter()
    acts = tdcourse.load_activations(model=str(shape), n=a.n, init="random", dtype="bfloat16", progress=False)
    print(f"load_activations (random init, bf16, N={a.n}): {time.perf_counter() - t:.1f} s -> {acts.acts.shape}; {peak()}")

    # the same random weights saved, then read back the way a hub model is read
    model, tok = tdcourse.load_model(str(shape), init="random", dtype="bfloat16")
    saved = root / "llama-3.1-8b-random-weights"
    t = time.perf_counter()
    model.save_pretrained(saved)
    tok.save_pretrained(saved)
    print(f"saved {saved}: {time.perf_counter() - t:.1f} s")
    del model
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    for quant in ("none", "4bit"):
        t = time.perf_counter()
        m, _ = tdcourse.load_model(str(saved), quant=quant, dtype="bfloat16")
        load_s = time.perf_counter() - t
        print(f"from_pretrained quant={quant}: {load_s:.1f} s, weights {m.get_memory_footprint() / 2**30:.1f} GiB; {peak()}")
        del m
        torch.cuda.empty_cache()
        t = time.perf_counter()
        acts = tdcourse.load_activations(model=str(saved), n=a.n, quant=quant, dtype="bfloat16", progress=False)
        print(f"  load_activations quant={quant}, N={a.n}: {time.perf_counter() - t:.1f} s (load + capture + cache) "
              f"-> {acts.acts.shape}, {acts.acts.nbytes / 2**30:.2f} GiB on disk; {peak()}")
        t = time.perf_counter()
        tdcourse.load_activations(model=str(saved), n=a.n, quant=quant, dtype="bfloat16", progress=False)
        print(f"  second call (reads the cache after loading the model): {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
