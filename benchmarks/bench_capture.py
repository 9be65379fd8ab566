"""Capture speed (a benchmark script, not a timed test).

1. Capture of both sites vs a bare ``model.model`` forward on the same batches (target ≤ 1.05×).
2. Reading the cached N = 1000 array vs capturing it (target ≥ 100× faster).

Usage: ``python benchmarks/bench_capture.py [--model smollm2-135m] [--n 1000] [--quant auto]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import tdcourse
from tdcourse import capture as cap
from tdcourse.data import SampleRecipe, build_samples


def bare_forward(model, input_ids, batch_size, pad_id):
    base = getattr(model, "model", model)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for idx in cap._batches(input_ids, batch_size):
            ids, mask, _ = cap._pad(input_ids, idx, pad_id, device)
            base(input_ids=ids, attention_mask=mask, use_cache=False)
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--quant", default="auto")
    p.add_argument("--init", default="trained")
    p.add_argument("--dtype", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()

    print(tdcourse.env.report())
    t0 = time.perf_counter()
    model, tok = tdcourse.load_model(a.model, quant=a.quant, init=a.init, dtype=a.dtype)
    print(f"load {model.tdcourse_spec.label}: {time.perf_counter() - t0:.1f} s")
    ids = build_samples(tok, SampleRecipe(n=a.n)).input_ids
    print(f"{len(ids)} samples, {sum(map(len, ids))} tokens")
    bare_forward(model, ids[: a.batch_size], a.batch_size, tok.pad_token_id)  # warm-up
    bare, hooked = [], []
    for _ in range(a.repeats):  # interleaved, so drifts in machine load hit both
        t = time.perf_counter()
        bare_forward(model, ids, a.batch_size, tok.pad_token_id)
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        cap.capture(model, ids, batch_size=a.batch_size, pad_token_id=tok.pad_token_id, progress=False)
        hooked.append(time.perf_counter() - t)
    b, h = min(bare), min(hooked)
    print(f"bare model.model forward: {b:.2f} s   capture (both sites, to CPU): {h:.2f} s   ratio {h / b:.3f}x"
          f"   ({sum(map(len, ids)) / h:.0f} tokens/s)")

    del model  # load_activations loads its own copy when the cache is empty: never hold two
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    acts = tdcourse.load_activations(model=a.model, n=a.n, quant=a.quant, init=a.init, dtype=a.dtype, progress=False)
    reads = []
    for _ in range(3):
        t = time.perf_counter()
        again = cap.read_activations(acts.path, expect_meta=acts.meta)
        reads.append(time.perf_counter() - t)
    assert np.array_equal(again.acts, acts.acts)
    r = min(reads)
    print(f"read cached {acts.acts.shape} ({acts.acts.nbytes / 2**20:.0f} MiB, checksum verified): {r:.3f} s"
          f"   capture/read = {h / r:.0f}x")
    if torch.cuda.is_available():
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
