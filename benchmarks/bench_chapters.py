"""Wall time and peak memory of every chapter, executed unedited on one model from its cache.

    python benchmarks/bench_chapters.py --model "$(python -m tdcourse standin --kind 8b-shape)" --n 1000 \
        --log benchmarks/results/cpu2_chapters_8b_shape_n1000.log

The course's one setting (``TDCOURSE_MODEL``, ``TDCOURSE_N``) is the only change: the captures
(trained and random-init control) are made first, timed apart, so each chapter reads the cache
as a learner's second chapter would. Each chapter runs in a fresh process (nbclient, its own
kernel); its peak RSS is the kernel's, from ``getrusage(RUSAGE_CHILDREN)`` after the kernel
has been reaped. Targets (issue 13): every chapter <= 3 min wall and <= 6 GiB peak RSS at the
8B shape, N = 1000, on 2 CPU cores.
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

ROOT = Path(__file__).resolve().parents[1]
TARGET_S, TARGET_GIB = 180.0, 6.0

_ONE = r"""
import json, resource, sys, time
import nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
t = time.perf_counter()
NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(json.dumps({"wall_s": wall, "peak_rss_gib": rss / 2**20}))
"""


def run_chapter(nb: Path, env: dict) -> dict:
    """Execute one notebook in a fresh process; its wall time (s) and kernel's peak RSS (GiB)."""
    proc = subprocess.run([sys.executable, "-c", _ONE, str(nb), str(nb.parent)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="alias, hub id or local model folder")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--chapters", nargs="*", default=None, help="notebook stems or prefixes (default: all)")
    parser.add_argument("--log", type=Path, default=None, help="append the results here")
    args = parser.parse_args(argv)

    env = dict(os.environ, TDCOURSE_MODEL=args.model, TDCOURSE_N=str(args.n), PYTHONUNBUFFERED="1")
    lines = [f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} cpus={os.cpu_count()} "
             f"python {platform.python_version()}  model={args.model} N={args.n}"]
    for init in ("trained", "random"):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tdcourse", "capture", "--model", args.model, "--n", str(args.n),
                        "--init", init], env=env, check=True, capture_output=True)
        lines.append(f"capture ({init}, or read from the cache): {time.perf_counter() - t:.0f} s")
    print("\n".join(lines), flush=True)
    nbs = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.chapters:
        nbs = [nb for nb in nbs if any(nb.stem.startswith(c) for c in args.chapters)]
    ok = True
    for nb in nbs:
        r = run_chapter(nb, env)
        if "error" in r:
            line, ok = f"{nb.stem:22s} FAILED: {r['error']}", False
        else:
            within = r["wall_s"] <= TARGET_S and r["peak_rss_gib"] <= TARGET_GIB
            ok &= within
            line = (f"{nb.stem:22s} wall {r['wall_s']:6.0f} s   peak RSS {r['peak_rss_gib']:5.2f} GiB   "
                    f"{'within' if within else 'OVER'} target ({TARGET_S:.0f} s, {TARGET_GIB:.0f} GiB)")
        print(line, flush=True)
        lines.append(line)
    if args.log:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        with args.log.open("a") as f:
            f.write("\n".join(lines) + "\n\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
