"""The measured lines of book/beyond.md, written from the benchmark logs (never typed).

    python benchmarks/beyond_measured.py --out book/_beyond_measured.md

Reads the last run of each log in benchmarks/results/ (written by bench_capture.py,
bench_capture_memory.py, bench_synthetic_store.py, and the stand-in build logged by
bench_capture_memory.py) and renders one bullet per measurement, naming the log. A log that
is missing gives a bullet saying the measurement was not made.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _last_block(name: str) -> str | None:
    path = RESULTS / name
    if not path.exists():
        return None
    blocks = [b for b in path.read_text().split("\n# ") if b.strip()]
    return blocks[-1] if blocks else None


def _memory_lines(name: str) -> list[dict]:
    """Every measured line of a bench_capture_memory log (all runs), with its run's sink."""
    path = RESULTS / name
    if not path.exists():
        return []
    out = []
    for block in path.read_text().split("\n# "):
        sink = re.search(r"sink=(\w+)", block)
        for line in block.splitlines():
            m = re.match(r"N=\s*(\d+)\s+shape \(([\d, ]+)\)\s+float32 array\s+([\d.]+) GiB\s+wall\s+([\d.]+) s\s+"
                         r"peak RSS\s+([\d.]+) GiB = start ([\d.]+) \+ model ([\d.]+) \+ capture\s+([-\d.]+) GiB", line)
            if m:
                out.append(dict(n=int(m.group(1)), shape=m.group(2), array=float(m.group(3)),
                                wall=float(m.group(4)), peak=float(m.group(5)), start=float(m.group(6)),
                                model=float(m.group(7)), capture=float(m.group(8)),
                                sink=sink.group(1) if sink else "entry"))
    return out


def _chapter_lines(name: str) -> dict[str, tuple[float, float]]:
    """A bench_chapter_memory log's last measurement of each chapter notebook (cold): wall s, peak GiB."""
    path = RESULTS / name
    out: dict[str, tuple[float, float]] = {}
    if path.exists():
        for m in re.finditer(r"^(\d\d)_\w+ notebook \(cold\)\s+wall\s+([\d.]+) s\s+peak RSS\s+([\d.]+) GiB",
                             path.read_text(), flags=re.M):
            out[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return out


def _parallel_captures(name: str) -> dict[str, tuple[float, float]]:
    """A bench_chapter_memory log's last captures run both at once (``--parallel-captures``; a
    later run reads them from the cache in seconds): {init: (wall s, peak GiB)}."""
    path = RESULTS / name
    out: dict[str, tuple[float, float]] = {}
    if path.exists():
        for m in re.finditer(r"^capture (\w+) \(or read from cache\) \(both at once\)\s+wall\s+([\d.]+) s\s+"
                             r"peak RSS\s+([\d.]+) GiB", path.read_text(), flags=re.M):
            out[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return out


def render() -> str:
    bullets = []
    for what, log in (("the 8B-shaped stand-in", "cpu_capture_memory_8b_shape.log"),
                      ("the 70B-shaped stand-in", "cpu_capture_memory_70b_shape.log"),
                      ("SmolLM2", "cpu_capture_memory_smollm2.log")):
        rows = _memory_lines(log)
        standin = re.search(r"\(([\d.]+) GiB on disk", (RESULTS / log).read_text()) if rows else None
        for r in rows:
            how = ("into the cache as it goes" if r["sink"] == "entry"
                   else "into one array in RAM, as before issue 22")
            bullets.append(
                f"**A capture of {what}**, N = {r['n']:,} (hooks, {how}): {r['wall']:.0f} s on these shared "
                f"cores; peak memory {r['peak']:.2f} GiB = {r['start']:.2f} GiB for Python and the libraries + "
                f"{r['model']:.2f} GiB of weights + {r['capture']:.2f} GiB for the capture itself, for an array "
                f"of {r['array']:.2f} GiB (`benchmarks/bench_capture_memory.py`, log "
                f"`benchmarks/results/{log}`)."
                + (f" The stand-in takes {standin.group(1)} GiB on disk." if standin and r is rows[0] else ""))
        if not rows:
            bullets.append(f"**A capture of {what}**: not measured (no log `{log}`).")
    block = _last_block("cpu_synthetic_store_8b_n10000.log")
    if block:
        w = re.search(r"write .*?:\s+([\d.]+) s\s+peak RSS ([\d.]+) GiB", block)
        r = re.search(r"read_activations .*?:\s+([\d.]+) s\s+peak RSS ([\d.]+) GiB", block)
        m = re.search(r"mean state per site .*?:\s+([\d.]+) s\s+peak RSS ([\d.]+) GiB", block)
        size = re.search(r"stored as float32: ([\d.]+) GiB", block)
        if w and r and m and size:
            bullets.append(
                f"**A synthetic 8B-shaped entry of N = 10,000** ({size.group(1)} GiB of random numbers, not "
                f"activations; `benchmarks/bench_synthetic_store.py`, log "
                f"`benchmarks/results/cpu_synthetic_store_8b_n10000.log`): written batch by batch in "
                f"{float(w.group(1)):.0f} s with a peak of {float(w.group(2)):.2f} GiB; opened with its checksum "
                f"verified in {float(r.group(1)):.0f} s, peak {float(r.group(2)):.2f} GiB; the mean state of every "
                f"site over all 10,000 samples, streamed with `run.blocks()`, in {float(m.group(1)):.0f} s, peak "
                f"{float(m.group(2)):.2f} GiB.")
    else:
        bullets.append("**A synthetic 8B-shaped entry of N = 10,000**: not measured.")
    block = _last_block("cpu_bench_capture_engines_smollm2.log")
    if block and "nnsight / hooks" in block:
        ratio = re.search(r"nnsight / hooks \(into the cache\)\s+=\s+([\d.]+)x", block)
        sink = re.search(r"hooks: into the cache / into RAM =\s+([\d.]+)x", block)
        best = dict(re.findall(r"^\s+(\w+ -> \w+)\s+([\d.]+) s", block, flags=re.M))
        bullets.append(
            "**nnsight against the hooks**, SmolLM2, N = 1,000, alternated in one run (best of 2 rounds; "
            "`benchmarks/bench_capture.py`, log `benchmarks/results/cpu_bench_capture_engines_smollm2.log`): "
            + ", ".join(f"{k.replace(' -> entry', ' into the cache').replace(' -> array', ' into RAM')} "
                        f"{float(v):.0f} s" for k, v in best.items())
            + (f"; nnsight takes {float(ratio.group(1)):.2f}× the hooks' time (goal: at most 1.2×)" if ratio else "")
            + (f"; writing into the cache as the capture runs took {float(sink.group(1)):.2f}× the time of "
               "filling an array in RAM, a difference within the noise of these shared cores (the rounds differ "
               "by more)" if sink else "") + ".")
        alone = re.search(r"cache writer alone: .*?\(([\d.]+) MiB\).*?best of 3 ([\d.]+) s", block)
        if alone:
            bullets.append(
                f"**The cache writer alone** (the same file, {alone.group(1)} MiB, written in the capture's batches "
                f"with its checksum, no model run; same log): {float(alone.group(2)):.3f} s, against minutes for "
                "the capture's forward passes: the per-batch write does not slow the capture.")
    else:
        bullets.append("**nnsight against the hooks** on SmolLM2, N = 1,000: not measured (the run did not finish).")
    for what, log in (("8B-shaped stand-in, N = 1,800 (1.9 GB of float32 per run)",
                       "cpu2_chapter_memory_8b_shape_n1800.log"),
                      ("70B-shaped stand-in, N = 200 (1.05 GB of float32 per run)",
                       "cpu2_chapter_memory_70b_shape_n200.log"),
                      ("70B-shaped stand-in, N = 64", "cpu2_chapter_memory_70b_shape_n64.log")):
        chapters = _chapter_lines(log)
        if chapters:
            bullets.append(
                f"**The chapters on the {what}**, each executed cold as a notebook, both runs (the stand-in and "
                f"its random-init control) read from the cache (`benchmarks/bench_chapter_memory.py`, log "
                f"`benchmarks/results/{log}`): "
                + "; ".join(f"chapter {int(k)} {w:.0f} s, peak {m:.2f} GiB" for k, (w, m) in sorted(chapters.items()))
                + "." + (" The two captures before them, the trained stand-in and its random-init control, ran at "
                         "the same time, one core each: "
                         + " and ".join(f"{w:.0f} s (peak {m:.2f} GiB)" for w, m in caps.values()) + "."
                         if len(caps := _parallel_captures(log)) == 2 else ""))
    block = _last_block("cpu2_lowdim_memory_8b_shape.log") or ""
    shape = re.search(r"shape \((\d+), (\d+), (\d+)\) float32, ([\d.]+) GiB", block)
    runs = re.findall(r"lowdim\.analyse, one run, tdcourse at (\w+) \[([^\]]*)\]: wall\s+([\d.]+) s\s+"
                      r"peak RSS ([\d.]+) GiB\s+autoencoder trained on (\d+) samples, (\d+) held out", block)
    if shape and runs:
        bullets.append(
            f"**Chapter 6's analysis on a synthetic 8B-shaped entry**, N = {int(shape.group(1)):,} "
            f"({shape.group(4)} GiB of random numbers, not activations; one run, computed: the autoencoder, the "
            f"pooled PCA, the spectra and the bootstraps; `benchmarks/bench_lowdim_memory.py`, log "
            f"`benchmarks/results/cpu2_lowdim_memory_8b_shape.log`): "
            + "; ".join(f"{label} (commit {commit}): {float(wall):.0f} s, peak {float(peak):.2f} GiB"
                        for commit, label, wall, peak, _tr, _te in runs)
            + f"; the autoencoder trained on {runs[-1][4]} samples and held out {runs[-1][5]}.")
    else:
        bullets.append("**Chapter 6's analysis on a synthetic 8B-shaped entry**: not measured.")
    return "".join(f"- {b}\n" for b in bullets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    text = render()
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
