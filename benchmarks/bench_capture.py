"""Capture speed (a benchmark script, not a timed test).

1. Capture of both sites vs a bare ``model.model`` forward on the same batches (target ≤ 1.05×).
2. The two engines, alternated in one run so that drifts in machine load hit both: the hooks
   (:mod:`tdcourse.hooks`) and nnsight run locally (:mod:`tdcourse.nnsight_engine`); target
   nnsight ≤ 1.2× the hooks (issue 22).
3. Where the rows go: into a float32 array in RAM (the capture before issue 22) or into a cache
   entry written batch by batch (:class:`tdcourse.store.EntryWriter`, what ``load_activations``
   does now); target: the per-batch write costs nothing measurable.
4. Reading the cached N = 1000 array vs capturing it (target ≥ 100× faster).

Usage::

    python benchmarks/bench_capture.py [--model smollm2-135m] [--n 1000] [--quant auto] \
        [--engines hooks nnsight] [--sinks array entry] [--repeats 2]
"""

from __future__ import annotations

import argparse
import shutil
import time

import numpy as np
import torch

import tdcourse
from tdcourse import capture as cap
from tdcourse import nnsight_engine
from tdcourse.data import SampleRecipe, build_samples
from tdcourse.store import EntryWriter

ENGINES = {"hooks": cap.capture, "nnsight": nnsight_engine.capture}


def bare_forward(model, input_ids, batch_size, pad_id):
    base = getattr(model, "model", model)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for idx in cap._batches(input_ids, batch_size):
            ids, mask, _ = cap._pad(input_ids, idx, pad_id, device)
            base(input_ids=ids, attention_mask=mask, use_cache=False)
    if device.type == "cuda":
        torch.cuda.synchronize()


def _meta(n: int, label: str) -> dict:
    return {"format_version": cap.FORMAT_VERSION, "model": {"name": f"bench-{label}", "source": "bench",
            "revision": None, "quant": "none", "dtype": "float32", "init": "trained", "seed": 0},
            "recipe": {"n": n}, "data_sha256": "bench", "input_ids_sha256": "bench",
            "sites": ["resid_pre", "resid_mid"], "position": "last"}


def run_capture(engine: str, sink: str, model, ids, batch_size, pad_id, shape):
    """One capture with ``engine`` into ``sink``; returns (seconds, rows as an array)."""
    t = time.perf_counter()
    if sink == "array":
        out = ENGINES[engine](model, ids, batch_size=batch_size, pad_token_id=pad_id, progress=False)
        return time.perf_counter() - t, out
    with EntryWriter(_meta(len(ids), f"{engine}-{sink}"), shape, cap.site_names(shape[1] // 2),
                     [""] * len(ids)) as w:
        ENGINES[engine](model, ids, batch_size=batch_size, pad_token_id=pad_id, progress=False, out=w)
        path = w.commit()
    elapsed = time.perf_counter() - t
    rows = np.array(cap.read_activations(path).acts)
    shutil.rmtree(path)  # the benchmark leaves no entry behind
    return elapsed, rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--quant", default="auto")
    p.add_argument("--init", default="trained")
    p.add_argument("--dtype", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--engines", nargs="+", default=["hooks", "nnsight"], choices=list(ENGINES))
    p.add_argument("--sinks", nargs="+", default=["array", "entry"], choices=["array", "entry"])
    p.add_argument("--variants", nargs="+", default=None,
                   help="engine:sink pairs to run instead of every engine x sink (e.g. hooks:entry nnsight:entry)")
    p.add_argument("--no-bare", action="store_true", help="skip the bare forward")
    p.add_argument("--writer-only", action="store_true",
                   help="time only the cache writer: the capture's rows written batch by batch, no model run")
    p.add_argument("--no-read", action="store_true", help="skip the cache read")
    a = p.parse_args()

    print(tdcourse.env.report())
    t0 = time.perf_counter()
    model, tok = tdcourse.load_model(a.model, quant=a.quant, init=a.init, dtype=a.dtype)
    print(f"load {model.tdcourse_spec.label}: {time.perf_counter() - t0:.1f} s")
    ids = build_samples(tok, SampleRecipe(n=a.n)).input_ids
    n_tokens = sum(map(len, ids))
    print(f"{len(ids)} samples, {n_tokens} tokens, batch size {a.batch_size}")
    L, d = model.config.num_hidden_layers, model.config.hidden_size
    shape = (len(ids), 2 * L, d)
    if a.writer_only:  # the per-batch write alone, on rows of the capture's shape (no forward pass)
        rows = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        took = []
        for _ in range(3):
            t = time.perf_counter()
            with EntryWriter(_meta(len(ids), "writer"), shape, cap.site_names(shape[1] // 2), [""] * len(ids)) as w:
                for idx in cap._batches(ids, a.batch_size):
                    w[idx[0] : idx[-1] + 1] = rows[idx[0] : idx[-1] + 1]
                path = w.commit()
            took.append(time.perf_counter() - t)
            shutil.rmtree(path)
        print(f"cache writer alone: {len(ids)} samples {shape} ({rows.nbytes / 2**20:.0f} MiB) in batches of "
              f"{a.batch_size}, allocation + writes + streamed checksum + install: best of 3 {min(took):.3f} s")
        return
    bare_forward(model, ids[: a.batch_size], a.batch_size, tok.pad_token_id)  # warm-up
    engines = sorted({v.split(":")[0] for v in a.variants}) if a.variants else a.engines
    for engine in engines:  # warm-up each engine once (imports, first trace)
        ENGINES[engine](model, ids[: a.batch_size], batch_size=a.batch_size, pad_token_id=tok.pad_token_id,
                        progress=False)
    times: dict[str, list[float]] = {}
    ref = None
    for r in range(a.repeats):  # interleaved, so drifts in machine load hit every variant
        if not a.no_bare:
            t = time.perf_counter()
            bare_forward(model, ids, a.batch_size, tok.pad_token_id)
            times.setdefault("bare forward", []).append(time.perf_counter() - t)
        pairs = ([tuple(v.split(":")) for v in a.variants] if a.variants
                 else [(e, k) for e in a.engines for k in a.sinks])
        for engine, sink in pairs:
            if True:
                s, rows = run_capture(engine, sink, model, ids, a.batch_size, tok.pad_token_id, shape)
                times.setdefault(f"{engine} -> {sink}", []).append(s)
                if ref is None:
                    ref = np.array(rows)
                else:  # every variant gives the same rows
                    gap = float(np.abs(np.asarray(rows) - ref).max() / np.abs(ref).max())
                    assert gap <= 1e-6, f"{engine} -> {sink} differs from the first variant by {gap:.2e}"
        print(f"round {r + 1}: " + "   ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    best = {k: min(v) for k, v in times.items()}
    print("best of", a.repeats, "rounds:")
    for k, v in best.items():
        print(f"  {k:22s} {v:8.2f} s   ({n_tokens / v:.0f} tokens/s)")
    if "bare forward" in best:
        for k, v in best.items():
            if k != "bare forward":
                print(f"  {k:22s} / bare forward = {v / best['bare forward']:.3f}x")
    if "hooks -> array" in best and "nnsight -> array" in best:
        print(f"  nnsight / hooks (into RAM)        = {best['nnsight -> array'] / best['hooks -> array']:.3f}x"
              "   (goal <= 1.2x)")
    if "hooks -> entry" in best and "nnsight -> entry" in best:
        print(f"  nnsight / hooks (into the cache)  = {best['nnsight -> entry'] / best['hooks -> entry']:.3f}x")
    for engine in engines:
        if f"{engine} -> entry" in best and f"{engine} -> array" in best:
            print(f"  {engine}: into the cache / into RAM = "
                  f"{best[f'{engine} -> entry'] / best[f'{engine} -> array']:.3f}x   (goal: ~1.0x)")

    if a.no_read:
        return
    del model  # load_activations loads its own copy when the cache is empty: never hold two
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    acts = tdcourse.load_activations(model=a.model, n=a.n, quant=a.quant, init=a.init, dtype=a.dtype, progress=False)
    reads = []
    for _ in range(3):
        cap._VERIFIED.clear()  # the checksum is verified on every one of these reads
        t = time.perf_counter()
        again = cap.read_activations(acts.path, expect_meta=acts.meta)
        reads.append(time.perf_counter() - t)
    np.testing.assert_array_equal(again.acts, acts.acts)
    r = min(reads)
    h = best.get("hooks -> array", min(best.values()))
    print(f"read cached {acts.acts.shape} ({acts.acts.nbytes / 2**20:.0f} MiB, checksum verified, memory-mapped): "
          f"{r:.3f} s   capture/read = {h / r:.0f}x")
    if torch.cuda.is_available():
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
