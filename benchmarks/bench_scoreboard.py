"""Time the scoreboard pass (``python -m tdcourse scoreboard``) of one or more source trees.

Each tree runs in turn (never two at once) on the same cache, with one BLAS thread, and the
script prints per tree: wall seconds, CPU seconds (user + system of the child: on a shared
machine the steadier number), and per chapter the seconds its progress lines report for the
chapter's own verdicts, the alternatives and the data axes. The cache should already hold the
captures (``make capture`` and one scoreboard run), so that what is timed is the pass itself.

Usage::

    python benchmarks/bench_scoreboard.py --cache /path/to/cache before=/tmp/base after=.

Results of the issue-20 change: ``benchmarks/results/cpu2_robustness_costs.log``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINE = re.compile(r"  (\S+)\s+(\S+)\s+\d+ computation\(s\), \d+ judgement\(s\): chapter's own\s+([\d.]+) s, "
                  r"alternatives\s+([\d.]+) s(?:, data axes\s+([\d.]+) s)?")


def run(tree: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "TDCOURSE_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    out = Path(tempfile.mkdtemp(prefix="sb-"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tdcourse", "scoreboard", "--out", str(out), "--json-copy",
                           str(out / "verdicts.json")], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    per: dict[str, list[float]] = {}
    for m in LINE.finditer(proc.stdout):
        chapter, _kind, own, alt, data = m.groups()
        p = per.setdefault(chapter, [0.0, 0.0, 0.0])
        p[0] += float(own)
        p[1] += float(alt)
        p[2] += float(data or 0)
    return {"rc": proc.returncode, "wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "load": load, "per": per, "tail": proc.stderr[-2000:] if proc.returncode else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("trees", nargs="+", help="name=source tree (a folder holding tdcourse/)")
    args = ap.parse_args()
    for item in args.trees:
        name, _, tree = item.partition("=")
        r = run(Path(tree).resolve(), args.cache)
        print(f"== {name}: rc {r['rc']}, wall {r['wall']:.0f} s, CPU {r['cpu']:.0f} s (load at start {r['load']:.1f})")
        for chapter, (own, alt, data) in r["per"].items():
            print(f"   {chapter:20s} own {own:6.1f} s  alternatives {alt:6.1f} s  data axes {data:6.1f} s")
        if r["tail"]:
            print(r["tail"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
