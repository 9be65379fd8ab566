"""Build the stand-ins and capture them, several at a time (``make standin-captures``).

Every chapter runs on the stand-ins at the Makefile's ``STANDIN_N`` (``make test-standins``); each
needs its model folder (:func:`tdcourse.standins.build_standin`, built once) and two captures,
the trained weights and the random-init control (:func:`tdcourse.capture.load_activations`). One
after the other, in a process each, that is about 110 s on two cores, most of it on one core
(drawing and writing the 8B-shaped weights, and each process importing torch and transformers).
Here ``--jobs`` worker processes (one thread each) do it side by side: a stand-in's captures
start as soon as it is built. What is already built or cached is read, not made again.

Usage::

    python tools/standin_build.py [--kinds 8b-shape 4-layer] [--n 64] [--jobs 2]

Prints each stand-in's folder and each capture with its time; exits 1, naming the step and its
error, when one fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (
    str(ROOT) not in sys.path
):  # run from a checkout without the package installed
    sys.path.insert(0, str(ROOT))


def _build(kind: str) -> str:
    from tdcourse.standins import build_standin

    return str(build_standin(kind))


def _capture(folder: str, n: int, init: str) -> str:
    from transformers.utils import logging as hf_logging

    from tdcourse.build import RunJob, capture_run

    hf_logging.disable_progress_bar()
    kind = "control" if init == "random" else "trained"
    return "\n".join(
        capture_run(
            RunJob(
                kind,
                {"model": folder, "n": n, "init": init, "quant": "none"},
            )
        )[2]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kinds", nargs="+", default=["8b-shape", "4-layer"]
    )
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument(
        "--jobs", type=int, default=2, help="worker processes (default 2)"
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.jobs < 1:
        print("error: --n and --jobs must be at least 1", file=sys.stderr)
        return 2
    import multiprocessing
    from concurrent.futures import (
        FIRST_COMPLETED,
        ProcessPoolExecutor,
        wait,
    )

    from tdcourse.models import open_model, resolve_spec
    from tdcourse.robustness import _one_thread
    from tdcourse.standins import STANDINS

    unknown = [k for k in args.kinds if k not in STANDINS]
    if unknown:
        print(
            f"error: unknown stand-in {unknown[0]!r}: choose from {sorted(STANDINS)}",
            file=sys.stderr,
        )
        return 2
    open_model(
        resolve_spec("smollm2-135m")
    )  # the stand-ins' tokenizer: converted once, before the workers
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    failed = []
    with ProcessPoolExecutor(
        max_workers=args.jobs, mp_context=ctx, initializer=_one_thread
    ) as pool:
        pending = {
            pool.submit(_build, kind): f"build {kind}"
            for kind in args.kinds
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                what = pending.pop(fut)
                try:
                    out = fut.result()
                except Exception as err:  # noqa: BLE001 - reported with its step, then the run fails
                    failed.append(what)
                    print(
                        f"error: {what} failed: {type(err).__name__}: {err}",
                        file=sys.stderr,
                        flush=True,
                    )
                    continue
                print(
                    out
                    if not what.startswith("build")
                    else f"{what[6:]}: {out}",
                    flush=True,
                )
                if what.startswith("build"):
                    for init in ("trained", "random"):
                        pending[
                            pool.submit(_capture, out, args.n, init)
                        ] = f"capture {what[6:]} ({init})"
    if failed:
        return 1
    print(
        f"{len(args.kinds)} stand-ins built and captured at N = {args.n} ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
