"""Peak memory (RSS) and wall time of the chapters on a capture larger than the analyses' memory.

    TDCOURSE_CACHE=/work/cache-stream python benchmarks/bench_chapter_memory.py --kind 8b-shape --n 1800 \
        --chapters 02 --log benchmarks/results/cpu2_chapter_memory_8b_shape_n1800.log

Issue 22's "done when": chapter 2 on an 8B-shaped capture of N = 1,800 (1.9 GB in float32 per
run) peaks below 1.5 GiB of RSS. Steps, each in its own process, each with its peak RSS (the
process and every process it waited for, from ``os.wait4``) and wall time:

1. the stand-in's folder (``python -m tdcourse standin --kind ...``; built once), or ``--model``;
2. the captures, trained and random-init control (``python -m tdcourse capture``; read from the
   cache when there);
3. ``--analysis``: chapter 2's analysis alone, ``continuity.analyse`` computed (not read from the
   memo) on each run, as the chapter calls it (``n_boot=100, seed=0``);
4. each chapter's notebook, unedited, executed by nbclient with the course's setting pointed at
   the model (``TDCOURSE_MODEL``, ``TDCOURSE_N``); the kept analysis results of the cache
   (``<cache>/results/memo``) are removed first, so the chapter computes them (cold).

A line per step goes to the log, with the load average (1 min) before and after: on a shared
machine the wall times depend on it; the peak RSS does not.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_GIB = {"02": 1.5}  # issue 22's done-when, at the 8B shape; the other chapters and shapes: none yet

_ANALYSE = r"""
import resource, sys, time
import tdcourse
from tdcourse import continuity
runs = tdcourse.load_runs(model=sys.argv[1], n=int(sys.argv[2]))
print(f"loaded {len(runs)} runs {runs[0].acts.shape} {type(runs[0].acts).__name__}, "
      f"RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB", flush=True)
for run in runs:
    t = time.perf_counter()
    res = continuity.analyse.__wrapped__(run.acts, n_boot=100, seed=0)
    print(f"{run.label}: analyse {time.perf_counter() - t:.1f} s, median r {res.median_r}, "
          f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB", flush=True)
"""

_NOTEBOOK = r"""
import sys, time
import nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
"""


def measured(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; its wall time (s), peak RSS (GiB, the process and the children it waited
    for), exit status, output tail and the 1-minute load average before and after."""
    return measured_together([cmd], env)[0]


def measured_together(cmds: list[list[str]], env: dict) -> list[dict]:
    """Run ``cmds`` at the same time, each measured as :func:`measured` does."""
    import tempfile

    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    logs = [tempfile.TemporaryFile(mode="w+") for _ in cmds]
    procs = [subprocess.Popen(c, env=env, stdout=f, stderr=subprocess.STDOUT, text=True) for c, f in zip(cmds, logs)]
    done = {}
    while len(done) < len(procs):
        pid, status, usage = os.wait4(-1, 0)
        for i, p in enumerate(procs):
            if p.pid == pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                done[i] = {"wall_s": time.perf_counter() - t, "peak_gib": usage.ru_maxrss / 2**20,
                           "rc": p.returncode, "load": (load0, os.getloadavg()[0])}
    for i, f in enumerate(logs):
        f.seek(0)
        done[i]["out"] = f.read().strip().splitlines()
        f.close()
    return [done[i] for i in range(len(procs))]


def line(name: str, r: dict, target: float | None = None) -> str:
    verdict = ""
    if target is not None:
        verdict = f"   {'below' if r['peak_gib'] < target else 'OVER'} target {target:g} GiB"
    status = "" if r["rc"] == 0 else f"   FAILED (exit {r['rc']}): {' | '.join(r['out'][-3:])}"
    return (f"{name:48s} wall {r['wall_s']:7.1f} s   peak RSS {r['peak_gib']:5.2f} GiB   "
            f"load {r['load'][0]:.1f}->{r['load'][1]:.1f}{verdict}{status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="8b-shape", help="stand-in kind (python -m tdcourse standin --kind)")
    parser.add_argument("--model", default=None, help="a model folder or alias instead of a stand-in")
    parser.add_argument("--n", type=int, default=1800)
    parser.add_argument("--chapters", nargs="*", default=["02"], help="notebook stems or prefixes")
    parser.add_argument("--analysis", action="store_true", help="also chapter 2's analysis alone")
    parser.add_argument("--no-notebooks", action="store_true", help="skip the notebooks")
    parser.add_argument("--parallel-captures", action="store_true", help="the two captures at the same time")
    parser.add_argument("--log", type=Path, default=None, help="append the results here")
    args = parser.parse_args(argv)

    py = sys.executable
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    cache = Path(env.get("TDCOURSE_CACHE") or Path.home() / ".cache" / "tdcourse")
    lines = [f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} cpus={os.cpu_count()} "
             f"python {platform.python_version()}  TDCOURSE_CACHE={cache}  "
             f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', '')}",
             "$ " + shlex.join(["python", *sys.argv])]

    def emit(text: str) -> None:
        print(text, flush=True)
        lines.append(text)
        if args.log:  # line by line: a run stopped half-way keeps what it measured
            with args.log.open("a") as f:
                f.write(text + "\n")

    if args.log:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        with args.log.open("a") as f:
            f.write("\n".join(lines) + "\n")
    for text in lines:
        print(text, flush=True)
    model = args.model
    if model is None:
        r = measured([py, "-m", "tdcourse", "standin", "--kind", args.kind], env)
        if r["rc"] != 0:
            emit(line(f"stand-in {args.kind}", r))
            return 1
        model = r["out"][-1].strip()
        emit(f"stand-in {args.kind}: {model} (built or found in {r['wall_s']:.0f} s)")
    env.update(TDCOURSE_MODEL=model, TDCOURSE_N=str(args.n))
    caps = {init: [py, "-m", "tdcourse", "capture", "--model", model, "--n", str(args.n), "--init", init]
            for init in ("trained", "random")}
    if args.parallel_captures:  # one thread each (OMP_NUM_THREADS=1): two cores, two captures
        results = dict(zip(caps, measured_together(list(caps.values()), env)))
    else:
        results = {init: measured(cmd, env) for init, cmd in caps.items()}
    for init, r in results.items():
        together = " (both at once)" if args.parallel_captures else ""
        emit(line(f"capture {init} (or read from cache){together}", r))
        if r["rc"] != 0:
            return 1
    ok = True
    targets = TARGET_GIB if args.model is None and args.kind == "8b-shape" else {}
    if args.analysis:
        r = measured([py, "-c", _ANALYSE, model, str(args.n)], env)
        for text in r["out"]:
            if text.startswith("loaded") or ": analyse " in text:
                emit("    " + text)
        emit(line("02 analysis alone (2 runs)", r, targets.get("02")))
        ok &= r["rc"] == 0 and r["peak_gib"] < targets.get("02", float("inf"))
    if not args.no_notebooks:
        nbs = sorted((ROOT / "notebooks").glob("*.ipynb"))
        for nb in [nb for nb in nbs if any(nb.stem.startswith(c) for c in args.chapters)]:
            shutil.rmtree(cache / "results" / "memo", ignore_errors=True)  # cold: the chapter computes
            r = measured([py, "-c", _NOTEBOOK, str(nb), str(nb.parent)], env)
            target = targets.get(nb.stem[:2])
            emit(line(f"{nb.stem} notebook (cold)", r, target))
            ok &= r["rc"] == 0 and (target is None or r["peak_gib"] < target)
    if args.log:
        with args.log.open("a") as f:
            f.write("\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
