"""Peak memory (RSS) and wall time of chapter 6's analysis on a large SYNTHETIC capture.

    TDCOURSE_CACHE=/work/cache-scale python benchmarks/bench_lowdim_memory.py --n 1800 \
        --source /tmp/old-checkout --source . --log benchmarks/results/cpu2_lowdim_memory_8b_shape.log

Chapter 6 (``lowdim.analyse``: the autoencoder, the pooled PCA, the per-site spectra and the
bootstraps) on an entry of Llama 3.1 8B's activation shape, ``(N, 64, 4096)`` float32, filled
with seeded Gaussian noise whose scale grows with depth (``bench_synthetic_store.py`` writes it
through the store as a capture would; its model is ``synthetic-8b-shape``, never mistaken for a
capture). Noise is not activations: the numbers the analysis gives mean nothing; its memory
and time are what a capture of that shape costs.

Each ``--source`` (a checkout of the course: this one, or an older commit's worktree, to compare)
runs the analysis of one run in its own process, with the analysis cache emptied first (so it
computes), and reports its peak RSS (``ru_maxrss``) and wall time. Memory-mapped pages of the
capture that the analysis reads count in the RSS while they are mapped; the store gives them
back after each block.
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

HERE = Path(__file__).resolve().parent

_ANALYSE = r"""
import json, resource, sys, time
a = json.loads(sys.argv[1])
from tdcourse import capture as cap, lowdim
run = cap.read_activations(a["path"])
t = time.perf_counter()
res = lowdim.analyse(run, n_boot=a["n_boot"], seed=0)
print(json.dumps({"wall_s": time.perf_counter() - t,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "n_train": int(len(res.ae.train_idx)), "n_test": int(len(res.ae.test_idx)),
                  "module": lowdim.__file__}))
"""


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))
    import bench_synthetic_store as synth

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1800)
    parser.add_argument("--sites", type=int, default=64)
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--n-boot", type=int, default=1000, help="as the chapter (1000)")
    parser.add_argument("--source", action="append", type=Path, default=None,
                        help="a checkout of the course to import tdcourse from (repeatable; default: this one)")
    parser.add_argument("--label", action="append", default=None,
                        help="what each --source is, in the same order (e.g. 'before: a standardised copy')")
    parser.add_argument("--keep", action="store_true", help="leave the synthetic entry in the cache")
    parser.add_argument("--log", type=Path, default=None)
    args = parser.parse_args(argv)
    sources = [p.resolve() for p in (args.source or [HERE.parent])]
    labels = args.label or ["this checkout"] * len(sources)
    if len(labels) != len(sources):
        parser.error(f"{len(labels)} --label for {len(sources)} --source: give one per source")

    cache = Path(os.environ.get("TDCOURSE_CACHE", Path.home() / ".cache" / "tdcourse"))
    size = args.n * args.sites * args.d * 4 / 2**30
    lines = [f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} cpus={os.cpu_count()} "
             f"python {platform.python_version()}  TDCOURSE_CACHE={cache}  OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', '')}",
             f"$ python benchmarks/bench_lowdim_memory.py {' '.join(argv if argv is not None else sys.argv[1:])}",
             f"SYNTHETIC entry (random normal, not activations): shape ({args.n}, {args.sites}, {args.d}) float32, "
             f"{size:.2f} GiB"]
    print("\n".join(lines), flush=True)
    w = synth._run(synth._WRITE, {"n": args.n, "sites": args.sites, "d": args.d, "store_dtype": "float32",
                                 "seed": 0})
    lines.append(f"written in {w['wall_s']:.1f} s (peak RSS {w['peak_gib']:.2f} GiB)")
    print(lines[-1], flush=True)
    try:
        for src, label in zip(sources, labels):
            commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip() or "?"
            shutil.rmtree(cache / "results" / "memo", ignore_errors=True)  # computed, not read back
            env = {**os.environ, "PYTHONPATH": str(src)}
            proc = subprocess.run([sys.executable, "-c", _ANALYSE, json.dumps({"path": w["path"],
                                                                               "n_boot": args.n_boot})],
                                  capture_output=True, text=True, env=env, cwd=src)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            lines.append(f"lowdim.analyse, one run, tdcourse at {commit} [{label}]: wall {r['wall_s']:7.1f} s   "
                         f"peak RSS {r['peak_gib']:.2f} GiB   autoencoder trained on {r['n_train']} samples, "
                         f"{r['n_test']} held out")
            print(lines[-1], flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(w["path"], ignore_errors=True)
            lines.append("entry removed (--keep keeps it)")
    synth.append_log(args.log, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
