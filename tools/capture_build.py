"""Capture every run the book reads into the cache, several at a time (``make capture``).

The book reads five captures of the embedded SmolLM2-135M: the trained model, its random-init
control and its 4-bit NF4 copy at N samples, and the scoreboard's data axis "token 25 of 48"
(:data:`tdcourse.robustness.BUILD_AXES`) for the trained model and the control, which is read in
the same forward passes as their own capture (:func:`tdcourse.build.capture_run`). Each lands
under the key the chapters and the scoreboard look up; one already in the cache is read, not
captured again. ``make book`` does not need this step: the scoreboard captures these runs in the
same pool as its analyses (:mod:`tdcourse.build`); ``make test`` uses it.

On a small machine a capture does not keep two cores busy (SmolLM2's matrices are small), so
``--jobs`` captures run side by side in worker processes, one thread each. The model is
converted once, before the workers start.

Usage::

    python tools/capture_build.py [--model smollm2-135m] [--n 1000] [--jobs 2]

Exits 1, naming the capture and its error, when one fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without the package installed
    sys.path.insert(0, str(ROOT))


def _one(job) -> str:
    from transformers.utils import logging as hf_logging

    from tdcourse.build import capture_run

    hf_logging.disable_progress_bar()  # one line per capture, not several processes' bars interleaved
    return "\n".join(capture_run(job)[2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2, help="captures side by side (default 2)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.jobs < 1:
        print("error: --n and --jobs must be at least 1", file=sys.stderr)
        return 2
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tdcourse.build import _convert_once, scoreboard_jobs
    from tdcourse.robustness import _one_thread

    todo = scoreboard_jobs(args.model, args.n)
    _convert_once(todo)  # converts the embedded model once, before the workers start
    t0 = time.perf_counter()
    print(f"capturing {len(todo)} runs of {args.model} (N = {args.n}), {args.jobs} at a time, into the cache "
          "(read from it where already there)", flush=True)
    failed = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx, initializer=_one_thread) as pool:
        futures = {pool.submit(_one, job): job.kind for job in sorted(todo, key=lambda j: j.kind != "4-bit")}
        for fut in as_completed(futures):
            try:
                print(fut.result(), flush=True)
            except Exception as err:  # noqa: BLE001 - reported with its capture, then the build stops
                failed.append(futures[fut])
                print(f"error: the capture '{futures[fut]}' failed: {type(err).__name__}: {err}", file=sys.stderr,
                      flush=True)
    if failed:
        return 1
    print(f"{len(todo)} runs and their data axes in the cache ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
