"""Benchmark: layer Jacobians at the last token (chapter 8), one-token work vs the naive full sequence.

Three measurements, each printed and appended to ``--log``:

1. **Speed-up** on SmolLM2-135M (one WikiText sample of 48 tokens, float64): the naive
   reference, ``torch.func.jacrev`` of the layer's output at the last token with respect to the
   layer's whole input (``jacobians.full_sequence_jacobian``, ``T × d`` inputs, of which the last
   token's block is kept), against the one-token map with the earlier tokens' keys and values
   computed once (``jacobians.layer_jacobians``), both by ``jacrev`` and by the closed-form
   forward mode the chapter uses. The script checks that all three agree. Goal: >= 20×.
2. **One layer at the 8B shape** (``--standin``: the 8b-shape stand-in, width 4096, 32 layers;
   its MLP is narrower than Llama 3.1 8B's, so the time of the real 8B layer is estimated from the
   measured seconds per multiply-add and printed beside it).
3. **The cost constants** of ``jacobians.COST`` (seconds per unit of work on this machine):
   one-token Jacobian, a layer's decompositions (real Schur form, sort, the S2 candidates), the
   eigenvalues alone, complex products and singular values, measured at width 576; and the
   whole analysis of one SmolLM2 sample.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_jacobians.py --standin "$(python -m tdcourse standin
--kind 8b-shape)" --log benchmarks/results/cpu2_bench_jacobians.log`` (one thread: what a chapter
gets under ``make test``). ``--device cuda`` times the Jacobians on a GPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def timed(fn, repeat: int = 1):
    """(best wall seconds of ``repeat`` calls, last result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def speedup(model, ids, layers, device_note: str) -> list[str]:
    from tdcourse import jacobians as jj

    lines = []
    states = jj.residual_inputs(model, ids)
    jj.layer_jacobians(model, ids, [layers[0]], states=states)  # warm up
    for l in layers:
        t_naive, naive = timed(lambda: jj.full_sequence_jacobian(model, ids, l))
        t_rev, rev = timed(lambda: jj.layer_jacobians(model, ids, [l], method="jacrev", states=states)[0], 3)
        t_fwd, fwd = timed(lambda: jj.layer_jacobians(model, ids, [l], method="forward", states=states)[0], 3)
        err = max(np.abs(naive - rev).max(), np.abs(naive - fwd).max())
        lines.append(f"layer {l:2d}: naive full-sequence jacrev {t_naive:7.2f} s | one-token jacrev {t_rev:6.3f} s "
                     f"({t_naive / t_rev:5.1f}x) | one-token forward mode {t_fwd:6.3f} s ({t_naive / t_fwd:5.1f}x) "
                     f"| max |difference| {err:.1e}  [{device_note}]")
        print(lines[-1], flush=True)
    return lines


def cost_constants(model, ids) -> list[str]:
    """Seconds per unit of work of each piece of jacobians.analyse, at this model's width."""
    from tdcourse import jacobians as jj

    d = model.config.hidden_size
    d3 = float(d) ** 3
    macs = jj.macs_per_token(model.config)
    states = jj.residual_inputs(model, ids)
    L = states.shape[0] - 1
    t_j, js = timed(lambda: jj.layer_jacobians(model, ids, list(range(0, L, max(1, L // 4))), states=states))
    t_j /= len(js)
    j = js[1]
    t_sp, pair = timed(lambda: jj._schur_pair(j))
    t_alt, _ = timed(lambda: (jj.singular_alignment(j - np.eye(d)), jj.singular_alignment(j),
                              jj.eigvec_alignment(pair[1][0])))
    t_ev, _ = timed(lambda: np.linalg.eigvals(j), 2)
    zc = (j + 1j * j.T).astype(np.complex128)
    t_mm, _ = timed(lambda: zc @ zc, 3)
    t_sv, _ = timed(lambda: np.linalg.svd(zc, compute_uv=False), 3)
    t_sr, _ = timed(lambda: np.linalg.svd(j, compute_uv=False), 3)
    out = {"jacobian": t_j / (d * macs), "spectra": t_sp / d3, "alternatives": t_alt / d3, "eigvals": t_ev / d3,
           "zgemm": t_mm / d3, "svd_real": t_sr / d3, "svd_complex": t_sv / d3}
    lines = [f"cost at width {d}: Jacobian {t_j:.3f} s, Schur form in both orders {t_sp:.3f} s, S2 alternatives "
             f"{t_alt:.3f} s, eigenvalues alone {t_ev:.3f} s, complex product {t_mm:.3f} s, singular values "
             f"{t_sr:.3f} s (real) {t_sv:.3f} s (complex)",
             "per unit (jacobians.COST): " + ", ".join(f"{k} {v:.2e}" for k, v in out.items()),
             "jacobians.COST in use:     " + ", ".join(f"{k} {v:.2e}" for k, v in jj.COST.items())]
    for line in lines:
        print(line, flush=True)
    return lines


def one_sample(name: str) -> list[str]:
    from tdcourse import jacobians as jj
    from tdcourse.capture import load_activations
    from tdcourse.models import load_model

    run = load_activations(model=name, n=1000, quant="none", progress=False)
    model, tok = load_model(name, quant="none")
    t, r = timed(lambda: jj.analyse(run, model, tok, budget_s=jj.DEFAULT_BUDGET_S))
    line = (f"analyse({run.label}): {r.n_samples} sample(s) in {t:.0f} s ({t / max(1, r.n_samples):.0f} s per sample; "
            f"the rule estimated {r.plan.seconds_per_sample:.0f} s)")
    print(line, flush=True)
    return [line]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--standin", default=None, help="folder of the 8b-shape stand-in (python -m tdcourse standin)")
    ap.add_argument("--layers", type=int, nargs="*", default=[0, 14, 29])
    ap.add_argument("--device", default=None, help="cpu (default) or cuda")
    ap.add_argument("--skip", nargs="*", default=[], choices=["speedup", "standin", "cost", "sample"])
    ap.add_argument("--log", default=None)
    args = ap.parse_args()

    import torch

    from tdcourse import jacobians as jj
    from tdcourse.data import SampleRecipe, build_samples
    from tdcourse.models import load_model

    threads = torch.get_num_threads()
    head = (f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} cpus={os.cpu_count()} torch threads={threads} "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')} load average "
            f"{os.getloadavg()[0]:.1f} device={args.device or 'cpu'}")
    print(head, flush=True)
    lines = [head]
    model, tok = load_model(args.model, quant="none", device=args.device)
    ids = build_samples(tok, SampleRecipe(n=1)).input_ids[0]
    if "speedup" not in args.skip:
        lines += speedup(model, ids, args.layers, f"{args.model}, {len(ids)} tokens, float64")
    if "cost" not in args.skip:
        lines += cost_constants(model, ids)
    if "sample" not in args.skip:
        lines += one_sample(args.model)
    if args.standin and "standin" not in args.skip:
        big, _ = load_model(args.standin, quant="none", device=args.device)
        st = jj.residual_inputs(big, ids)
        jj.layer_jacobians(big, ids, [0], states=st)
        for l in (0, big.config.num_hidden_layers - 1):
            t, jac = timed(lambda: jj.layer_jacobians(big, ids, [l], states=st)[0], 2)
            macs = jj.macs_per_token(big.config)
            llama = 4096 * (32 + 16) * 128 + 32 * 128 * 4096 + 3 * 4096 * 14336  # Llama 3.1 8B, one layer
            line = (f"8b-shape stand-in layer {l}: one {jac.shape[0]} × {jac.shape[1]} Jacobian (float64, forward mode) "
                    f"in {t:.2f} s on {args.device or 'cpu'}; at Llama 3.1 8B's {llama / macs:.0f}× larger layer that "
                    f"is about {t * llama / macs:.0f} s")
            print(line, flush=True)
            lines.append(line)
    if args.log:
        with open(args.log, "a") as f:
            f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
