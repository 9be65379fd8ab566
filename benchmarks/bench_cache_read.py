"""Cost of reading a cached activation array with its integrity check (a benchmark, not a test).

Writes one (1000, 64, 4096) float32 entry (1 GiB, the Llama-3.1-8B shape at N = 1000) into a
temporary cache and times, median of ``--repeat`` runs, with the file in the page cache:

* before  — what ``read_activations`` did until this change: SHA-256 over the whole file, then
  ``np.load`` (two passes over 1 GiB), on every read;
* after, first read in a process — one pass that reads and hashes (xxh3-128), then the
  NaN/inf check;
* after, a later read in the same process (the file unchanged: same inode, size, mtime) —
  the hash is remembered, the file is read once;
* an entry written before the change (SHA-256 in its metadata), first read — one pass with SHA-256;
* ``check_acts`` alone (the finiteness check every analysis runs).

Usage: ``python benchmarks/bench_cache_read.py [--n 1000] [--sites 64] [--d 4096] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--sites", type=int, default=64)
    p.add_argument("--d", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    os.environ["TDCOURSE_CACHE"] = tempfile.mkdtemp(prefix="tdcourse-bench-")

    import numpy as np

    from tdcourse import capture as cap

    rng = np.random.default_rng(0)
    acts = np.empty((args.n, args.sites, args.d), np.float32)
    for i in range(0, args.n, 50):
        acts[i : i + 50] = rng.standard_normal((min(50, args.n - i), args.sites, args.d), dtype=np.float32)
    meta = {"format_version": cap.FORMAT_VERSION, "model": {"name": "bench", "source": "bench", "revision": None,
            "quant": "none", "dtype": "float32", "init": "trained", "seed": 0},
            "recipe": {"n": args.n}, "data_sha256": "d", "input_ids_sha256": "i",
            "sites": ["resid_pre", "resid_mid"], "position": "last"}
    t0 = time.perf_counter()
    path = cap.save_activations(acts, cap.site_names(args.sites // 2), [""] * args.n, meta)
    t_save = time.perf_counter() - t0
    npy = path / "acts.npy"
    past = time.time() - 60
    os.utime(npy, (past, past))  # older than the memo's 2 s "racy" window, as a cache written earlier
    size = npy.stat().st_size
    del acts

    def before():  # the previous read path
        h = hashlib.sha256()
        with open(npy, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        h.hexdigest()
        return np.load(npy, allow_pickle=False)

    def first_read():
        cap._VERIFIED.clear()
        return cap.read_activations(path)

    def later_read():
        return cap.read_activations(path)

    # an entry of the previous format: same array, SHA-256 in its metadata
    legacy = path.parent / "legacy-entry"
    legacy.mkdir()
    os.link(npy, legacy / "acts.npy")
    record = json.loads((path / "meta.json").read_text())
    del record["checksum"]
    record["sha256"] = hashlib.sha256(npy.read_bytes()).hexdigest()
    (legacy / "meta.json").write_text(json.dumps(record))

    def legacy_first_read():
        cap._VERIFIED.clear()
        return cap.read_activations(legacy)

    before()  # warm the page cache
    r = {
        "before: sha256 pass + np.load, every read": timed(before, args.repeat),
        "after: first read in a process (one pass, xxh3_128, NaN check)": timed(first_read, args.repeat),
        "after: later read in the same process (hash remembered)": (later_read(), timed(later_read, args.repeat))[1],
        "after: entry of the previous format, first read (one pass, sha256)": timed(legacy_first_read, args.repeat),
    }
    arr = cap.read_activations(path).acts
    r["check_acts alone (finiteness, every analysis)"] = timed(lambda: cap.check_acts(arr), args.repeat)
    print(f"array {arr.shape} float32, {size / 2**30:.2f} GiB on disk, in the page cache; "
          f"median of {args.repeat} runs; save took {t_save:.2f} s")
    for k, v in r.items():
        print(f"{v:7.3f} s  {k}")
    b = r["before: sha256 pass + np.load, every read"]
    one = r["after: first read in a process (one pass, xxh3_128, NaN check)"]
    two = r["after: later read in the same process (hash remembered)"]
    print(f"a chapter reading the entry twice: before {2 * b:.2f} s, after {one + two:.2f} s "
          f"({2 * b / (one + two):.1f}x faster)")


if __name__ == "__main__":
    main()
