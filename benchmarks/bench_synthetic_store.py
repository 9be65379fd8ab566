"""A SYNTHETIC cache entry of the 8B's shape at a large N, written and read through the store.

    python benchmarks/bench_synthetic_store.py --n 10000 --log benchmarks/results/cpu2_synthetic_store_8b_n10000.log

The shipped WikiText-2 test split gives at most 1,833 samples, and no exact copy of the raw
train split could be shipped (see book/beyond.md), so N = 10,000 cannot be captured offline.
This script writes an entry of that shape, ``(N, 64, 4096)`` float32 (10.5 GB at N = 10,000),
filled with seeded Gaussian noise, block by block through :class:`tdcourse.store.EntryWriter`
exactly as a capture writes; its model is named ``synthetic-8b-shape`` (source
``synthetic: random normal, not activations``) so that nothing mistakes it for a capture.
Later work (the streamed statistics of the chapters) reads it with
``tdcourse.capture.read_activations(<path>)`` to measure chapters' analyses at that size.

Measured, each in its own process: the write (wall, peak RSS), the read with the checksum
verified (wall, peak RSS: memory-mapped, nothing loaded), and one streamed statistic over
every sample (the mean state per site, float64, through ``run.blocks(64 MiB)``: wall, peak
RSS). ``--keep`` leaves the entry in the cache (printed path); by default it is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

_WRITE = r"""
import json, resource, sys, time
import numpy as np
from tdcourse import capture as cap
from tdcourse.store import EntryWriter
a = json.loads(sys.argv[1])
n, s, d = a["n"], a["sites"], a["d"]
meta = {"format_version": cap.FORMAT_VERSION,
        "model": {"name": "synthetic-8b-shape", "source": "synthetic: random normal, not activations",
                  "revision": None, "quant": "none", "dtype": "float32", "init": "synthetic", "seed": a["seed"]},
        "recipe": {"n": n, "synthetic": True}, "data_sha256": "synthetic", "input_ids_sha256": "synthetic",
        "sites": ["resid_pre", "resid_mid"], "position": "last"}
rng = np.random.default_rng(a["seed"])
t = time.perf_counter()
with EntryWriter(meta, (n, s, d), cap.site_names(s // 2), [f"synthetic sample {i}" for i in range(n)],
                 store_dtype=a["store_dtype"], info={"engine": "synthetic"}) as w:
    step = 32  # one capture batch
    scale = np.linspace(1, 20, s, dtype=np.float32)[None, :, None]  # norms that grow with depth, like a residual stream
    for start in range(0, n, step):
        b = min(step, n - start)
        w.write(rng.standard_normal((b, s, d), dtype=np.float32) * scale)
    path = w.commit()
print(json.dumps({"path": str(path), "wall_s": time.perf_counter() - t,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""

_READ = r"""
import json, resource, sys, time
import numpy as np
from tdcourse import capture as cap
a = json.loads(sys.argv[1])
t = time.perf_counter()
run = cap.read_activations(a["path"])  # checksum and finiteness: one streamed pass
read_s = time.perf_counter() - t
read_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
t = time.perf_counter()
total = np.zeros(run.acts.shape[1:], dtype=np.float64)
for block in run.blocks(64 << 20):
    total += block.sum(axis=0, dtype=np.float64)
mean = total / run.n_samples
print(json.dumps({"read_s": read_s, "read_peak_gib": read_peak, "mean_s": time.perf_counter() - t,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "mean_norm_first_last": [float(np.linalg.norm(mean[0])), float(np.linalg.norm(mean[-1]))]}))
"""


def _run(code: str, job: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(job)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def append_log(path: Path | None, lines: list[str]) -> None:
    """Append one run's ``lines`` to the log at ``path`` (nothing for None), a blank line after."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write("\n".join(lines) + "\n\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=64, help="2 x layers (8B: 64)")
    parser.add_argument("--d", type=int, default=4096, help="width (8B: 4096)")
    parser.add_argument("--store-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="leave the entry in the cache")
    parser.add_argument("--log", type=Path, default=None)
    args = parser.parse_args(argv)

    job = {"n": args.n, "sites": args.sites, "d": args.d, "store_dtype": args.store_dtype, "seed": args.seed}
    size = args.n * args.sites * args.d * (4 if args.store_dtype == "float32" else 2) / 2**30
    lines = [f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} cpus={os.cpu_count()} "
             f"python {platform.python_version()}",
             f"SYNTHETIC entry (random normal, not activations): shape ({args.n}, {args.sites}, {args.d}), "
             f"stored as {args.store_dtype}: {size:.2f} GiB"]
    print("\n".join(lines), flush=True)
    w = _run(_WRITE, job)
    lines.append(f"write (EntryWriter, batches of 32, checksum streamed): {w['wall_s']:7.1f} s   "
                 f"peak RSS {w['peak_gib']:.2f} GiB   -> {w['path']}")
    print(lines[-1], flush=True)
    r = _run(_READ, {"path": w["path"]})
    lines.append(f"read_activations (checksum + NaN check, one streamed pass; memory-mapped): {r['read_s']:7.1f} s   "
                 f"peak RSS {r['read_peak_gib']:.2f} GiB")
    lines.append(f"mean state per site over all samples via run.blocks(64 MiB), float64: {r['mean_s']:7.1f} s   "
                 f"peak RSS {r['peak_gib']:.2f} GiB   (|mean| first/last site "
                 f"{r['mean_norm_first_last'][0]:.3f}/{r['mean_norm_first_last'][1]:.3f})")
    print("\n".join(lines[-2:]), flush=True)
    if not args.keep:
        shutil.rmtree(w["path"])
        lines.append("entry removed (--keep keeps it)")
    append_log(args.log, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
