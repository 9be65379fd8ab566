"""What each chapter costs at the 8B, 70B and 405B activation shapes: the table of book/beyond.md.

    python benchmarks/chapter_costs.py --out book/_beyond_costs.md

Measured rows come from the logs of ``benchmarks/bench_chapters.py`` (the last run in each log
on an idle machine where the log has one; for the 70B shape every run of its log, chapters 1-3
then 4-7, each labelled with its N): the 8B-shaped stand-in at
N = 1000 (``cpu2_chapters_8b_shape_n1000.log``) and the 70B-shaped stand-in at N = 64
(``cpu_chapters_70b_shape_n64.log``). Extrapolated rows are labelled as such and follow one
stated rule: at the same N, a chapter's wall time and peak memory scale with the number of
values per sample, ``sites × width`` (× 5.0 from the 8B shape to the 70B's, × 15.75 to the
405B's). The rule is exact for the parts that touch every value once (reading, norms,
correlations between adjacent sites) and optimistic for the per-site spectra of chapter 6 when
the width grows past N; it ignores the interpreter's fixed ~0.5 GiB.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: values per sample (sites x width) of each shape
VALUES = {"8B": 64 * 4096, "70B": 160 * 8192, "405B": 252 * 16384}
_LINE = re.compile(r"^(\d\d)_(\w+)\s+wall\s+([\d.]+) s\s+peak RSS\s+([\d.]+) GiB")
_FAILED = re.compile(r"^(\d\d)_(\w+)\s+FAILED: (.*)$")


def captures(log: Path) -> dict[str, float]:
    """``{"trained": s, "random": s}``: the capture times before the chapters, last run of a log."""
    if not log.exists():
        return {}
    block = [b for b in log.read_text().split("\n# ") if b.strip()][0]  # the run that captured
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"capture \((\w+), or read from the cache\): "
                                                                r"([\d.]+) s", block)}


def last_run(log: Path, merge: bool = False) -> dict[str, tuple]:
    """Chapter -> (wall s, peak GiB) or ("failed", reason), from the last block of a bench_chapters
    log, or (``merge``) from every block, a later block's chapter replacing an earlier one's."""
    if not log.exists():
        return {}
    blocks = [b for b in log.read_text().split("\n# ") if b.strip()]
    out: dict[str, tuple] = {}
    for block in (blocks if merge else blocks[-1:]):
        for line in block.splitlines():
            m = _LINE.match(line.strip())
            if m:
                out[m.group(1)] = (float(m.group(3)), float(m.group(4)))
            f = _FAILED.match(line.strip())
            if f:
                out[f.group(1)] = ("failed", f.group(3))
    return out


def table() -> str:
    base = last_run(RESULTS / "cpu2_chapters_8b_shape_n1000.log")
    big = last_run(RESULTS / "cpu_chapters_70b_shape_n64.log", merge=True)  # chapters 1-3, then 4-7
    rows = ["| chapter | 8B shape, N = 1000 (measured) | 70B shape, N = 64 (measured) "
            "| 70B, N = 1000 (extrapolated) | 405B, N = 1000 (extrapolated) |",
            "|---|---|---|---|---|"]
    for ch in sorted(set(base) | set(big)):
        b = base.get(ch)
        cells = [f"{int(ch)}"]
        cells.append(f"{b[0]:.0f} s, {b[1]:.1f} GiB" if b and b[0] != "failed" else "–")
        g = big.get(ch)
        cells.append("failed (see the log)" if g and g[0] == "failed"
                     else f"{g[0]:.0f} s, {g[1]:.1f} GiB" if g else "not run")
        for shape in ("70B", "405B"):
            k = VALUES[shape] / VALUES["8B"]
            cells.append(f"~{b[0] * k:.0f} s, ~{b[1] * k:.0f} GiB" if b and b[0] != "failed" else "–")
        rows.append("| " + " | ".join(cells) + " |")
    cap = captures(RESULTS / "cpu_chapters_70b_shape_n64.log")
    note = ""
    if cap:
        note = (f"\nBefore those chapters, the two captures of the 70B-shaped stand-in at N = 64 took "
                f"{cap.get('trained', float('nan')):.0f} s (the model) and {cap.get('random', float('nan')):.0f} s "
                "(its random-init control) on these shared cores (log "
                "`benchmarks/results/cpu_chapters_70b_shape_n64.log`).\n")
    return "\n".join(rows) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    text = table()
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
