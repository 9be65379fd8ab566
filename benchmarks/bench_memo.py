"""What the analysis cache (tdcourse.memo) saves: the scoreboard and every chapter, cold and warm.

Runs, in one cache (``$TDCOURSE_CACHE``, which must already hold the N = 1000 captures that
``make capture`` makes, and the data-axis captures the scoreboard reads):

1. ``python -m tdcourse scoreboard`` with no kept analysis results (cold: it computes and keeps
   every chapter's analyses, as ``make book`` does first);
2. every chapter executed with ``jupyter nbconvert`` (warm: what the book and nbval then cost);
3. the kept results set aside, every chapter again (cold: what a chapter costs on its own);
4. the scoreboard's kept results put back, the scoreboard again (warm).

Chapter 7's teleport results are kept by their own mechanism (``capture.save_result``) in every
step after the first, as before this cache existed. Each line gives the wall time and the
1-minute load average before the step (the machine is shared: compare within one log).

Usage::

    TDCOURSE_CACHE=... python benchmarks/bench_memo.py [--out LOG] [--chapters 01 02 ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def _run(cmd: list[str], log) -> tuple[float, int]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if proc.returncode:
        log(f"   FAILED (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return dt, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="also append the lines to this log")
    ap.add_argument("--chapters", nargs="*", default=None, help="notebook prefixes (default: all)")
    args = ap.parse_args()
    cache = Path(os.environ.get("TDCOURSE_CACHE", "~/.cache/tdcourse")).expanduser()
    memo = cache / "results" / "memo"
    notebooks = sorted((ROOT / "notebooks").glob("0*.ipynb"))
    if args.chapters:
        notebooks = [nb for nb in notebooks if nb.name.startswith(tuple(args.chapters))]
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    py = sys.executable
    out_dir = Path("/tmp") / f"bench-memo-{os.getpid()}"
    scoreboard = [py, "-m", "tdcourse", "scoreboard", "--n", "1000", "--out", str(out_dir)]

    def chapters(tag: str) -> float:
        total = 0.0
        for nb in notebooks:
            load = _load()
            dt, rc = _run([py, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                           "--ExecutePreprocessor.timeout=1800", "--output", str(out_dir / nb.name), str(nb)], log)
            total += dt
            log(f"  {tag:5s} {nb.stem:22s} {dt:7.1f} s  (load {load}){'  FAILED' if rc else ''}")
        log(f"  {tag:5s} {'all chapters':22s} {total:7.1f} s")
        return total

    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"# bench_memo {time.strftime('%Y-%m-%d %H:%M:%S')} cache {cache}, {os.cpu_count()} cores, "
        f"OMP/MKL/OPENBLAS_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    shutil.rmtree(memo, ignore_errors=True)
    load = _load()
    dt, rc = _run(scoreboard, log)
    log(f"  cold  scoreboard             {dt:7.1f} s  (load {load}){'  FAILED' if rc else ''}")
    warm_ch = chapters("warm")
    kept = sum(p.stat().st_size for p in memo.rglob("*.pkl")) / 2**20 if memo.exists() else 0.0
    log(f"  kept results: {kept:.1f} MiB in {memo}")
    aside = memo.with_name("memo.bench-aside")   # the scoreboard's results, back for step 4
    shutil.rmtree(aside, ignore_errors=True)
    if memo.exists():
        memo.rename(aside)
    cold_ch = chapters("cold")
    shutil.rmtree(memo, ignore_errors=True)
    if aside.exists():
        aside.rename(memo)
    load = _load()
    dt2, rc = _run(scoreboard, log)
    log(f"  warm  scoreboard             {dt2:7.1f} s  (load {load}){'  FAILED' if rc else ''}")
    log(f"# chapters: {cold_ch:.0f} s cold, {warm_ch:.0f} s warm; scoreboard {dt:.0f} s cold, {dt2:.0f} s warm")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
