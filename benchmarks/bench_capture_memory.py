"""Peak memory and wall time of a capture into the cache, at the paper models' activation shapes.

    python benchmarks/bench_capture_memory.py --kind 8b-shape --n 200 1000 1833 \
        --log benchmarks/results/cpu2_capture_memory_8b_shape.log
    python benchmarks/bench_capture_memory.py --kind 70b-shape --n 200 \
        --log benchmarks/results/cpu2_capture_memory_70b_shape.log

Each capture runs in a fresh process: ``load_activations(<stand-in folder>, n=N, rebuild=True)``
with the engine and store asked (``--engine``, ``--store-dtype``), then the peak resident memory
of that process (``getrusage(RUSAGE_SELF).ru_maxrss``). The model's share is measured in the
same process right after its weights are loaded (resident memory then, minus before), so
"peak - model" is what the capture itself holds. (The weights are read once, every page of them,
before measuring: safetensors maps them lazily, and the forward pass would page them in later.) ``--sink array`` runs the capture as before
issue 22 (the whole float32 output in RAM, then written) for comparison.

Targets (issue 22): peak RSS <= model + 1 GiB at the 8B shape, flat in N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

_ONE = r"""
import json, os, resource, sys, time
import numpy as np
args = json.loads(sys.argv[1])

def rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

import torch, tdcourse
from tdcourse import capture as cap, models
before = rss_now()
files = models.open_model(models.resolve_spec(args["model"]))
mdl = models.load_weights(files)
with torch.no_grad():  # page the weights in (safetensors maps them lazily): the model's share, all of it
    for p in mdl.parameters():
        p.sum()
model_rss = rss_now() - before
weights = sum(p.numel() * p.element_size() for p in mdl.parameters())
real_load = models.load_weights
cap.load_weights = lambda *a, **k: mdl  # the capture below uses the weights loaded (and measured) here
t = time.perf_counter()
if args["sink"] == "array":  # before issue 22: the whole output in RAM, then written
    from tdcourse.data import SampleRecipe, build_samples
    ids = build_samples(files.tokenizer, SampleRecipe(n=args["n"])).input_ids
    acts = cap.capture(mdl, ids, batch_size=32, progress=False)
    shape = acts.shape
else:
    run = cap.load_activations(args["model"], n=args["n"], rebuild=True, progress=False, engine=args["engine"],
                               store_dtype=args["store_dtype"])
    shape = run.acts.shape
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall_s": wall, "peak_gib": peak / 2**30, "model_rss_gib": model_rss / 2**30,
                  "weights_gib": weights / 2**30, "before_gib": before / 2**30, "shape": list(shape)}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="8b-shape", help="stand-in kind (python -m tdcourse standin --kind ...)")
    parser.add_argument("--model", default=None, help="a model instead of a stand-in")
    parser.add_argument("--n", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--engine", default="hooks", choices=["hooks", "nnsight"])
    parser.add_argument("--store-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--sink", default="entry", choices=["entry", "array"])
    parser.add_argument("--log", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.model is None:
        from tdcourse.standins import build_standin

        t = time.perf_counter()
        model = str(build_standin(args.kind))
        built = time.perf_counter() - t
        size = sum(f.stat().st_size for f in Path(model).iterdir()) / 2**30
        head = f"stand-in {args.kind}: {model} ({size:.2f} GiB on disk; built or found in {built:.0f} s)"
    else:
        model, head = args.model, f"model {args.model}"
    lines = [f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} cpus={os.cpu_count()} "
             f"python {platform.python_version()}  engine={args.engine} store={args.store_dtype} sink={args.sink}",
             head]
    print("\n".join(lines), flush=True)

    def log(text: str) -> None:  # each line as soon as it is measured: a stopped run keeps what it had
        if args.log:
            args.log.parent.mkdir(parents=True, exist_ok=True)
            with open(args.log, "a") as f:
                f.write(text + "\n")

    log("\n".join(lines))
    for n in args.n:
        job = json.dumps({"model": model, "n": n, "engine": args.engine, "store_dtype": args.store_dtype,
                          "sink": args.sink})
        proc = subprocess.run([sys.executable, "-c", _ONE, job], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if proc.returncode != 0:
            line = f"N={n:6d}  error: {' | '.join((proc.stderr or proc.stdout).strip().splitlines()[-3:])}"
        else:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            arr = r["shape"][0] * r["shape"][1] * r["shape"][2] * 4 / 2**30
            over = r["peak_gib"] - r["before_gib"] - r["model_rss_gib"]
            line = (f"N={n:6d}  shape {tuple(r['shape'])}  float32 array {arr:6.2f} GiB  wall {r['wall_s']:7.1f} s  "
                    f"peak RSS {r['peak_gib']:6.2f} GiB = start {r['before_gib']:.2f} + model {r['model_rss_gib']:.2f} "
                    f"+ capture {over:5.2f} GiB  (target: capture <= 1 GiB: {'ok' if over <= 1 else 'OVER'})")
        print(line, flush=True)
        log(line)
    log("")
    return 0


if __name__ == "__main__":
    sys.exit(main())
