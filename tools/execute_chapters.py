"""Execute every chapter notebook side by side into the book's execution cache, before the build.

Jupyter Book 1 executes notebooks one after the other. With ``execute_notebooks: cache`` in
``_config.yml`` it first looks each notebook up in its jupyter-cache (``_build/.jupyter_cache``)
and only executes what is not there. This script fills that cache with jupyter-cache's own
``local-parallel`` executor (one process per CPU core, each notebook run in its own folder as
the build would), so ``jupyter-book build`` then renders without executing.

The cache is emptied first: every build executes every chapter against the library as it is
now (a cache kept across builds would serve outputs of older library code, since it is keyed
by the notebooks' code cells only).

Usage (the Makefile's ``book`` target runs it)::

    python tools/execute_chapters.py [--timeout 900] [notebooks ...]

Exits 1, naming each notebook and its error, when one fails; the build then stops before
rendering (``jupyter-book build -W`` would re-execute and fail on it anyway).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "_build" / ".jupyter_cache"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="default: notebooks/*.ipynb")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (as _config.yml's execute.timeout)")
    args = parser.parse_args(argv)
    from jupyter_cache import get_cache
    from jupyter_cache.executors import load_executor

    notebooks = [Path(p).resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    shutil.rmtree(CACHE, ignore_errors=True)
    cache = get_cache(CACHE)
    for nb in notebooks:
        cache.add_nb_to_project(str(nb))
    t0 = time.perf_counter()
    print(f"executing {len(notebooks)} chapters side by side into {CACHE.relative_to(ROOT)}", flush=True)
    result = load_executor("local-parallel", cache).run_and_cache(timeout=args.timeout, allow_errors=False)
    failed = list(result.excepted) + list(result.errored)
    for uri in result.succeeded:
        print(f"  executed {Path(uri).name}")
    if failed:
        for uri in failed:
            record = cache.get_project_record(uri)
            print(f"error: {Path(uri).name} failed:\n{record.traceback or '(no traceback recorded)'}", file=sys.stderr)
        return 1
    print(f"{len(notebooks)} chapters executed in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
