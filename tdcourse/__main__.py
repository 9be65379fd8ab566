"""Command line: ``python -m tdcourse capture --model smollm2-135m --n 1000`` and ``python -m tdcourse info``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdcourse", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    cap = sub.add_parser("capture", help="capture the residual stream of N samples into the cache")
    cap.add_argument("--model", default="smollm2-135m", help="alias or hub id (default: smollm2-135m)")
    cap.add_argument("--n", type=int, default=1000, help="number of samples (default: 1000)")
    cap.add_argument("--quant", default="auto", choices=["auto", "none", "4bit"])
    cap.add_argument("--init", default="trained", choices=["trained", "random"])
    cap.add_argument("--seed", type=int, default=0)
    cap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    cap.add_argument("--batch-size", type=int, default=32)
    cap.add_argument("--rebuild", action="store_true", help="capture again even if cached")
    sub.add_parser("info", help="where we run, the device and the cache directory")
    sb = sub.add_parser("scoreboard", help="compute every chapter's verdicts on SmolLM2 (full, 4-bit, random init)")
    sb.add_argument("--out", default="book/_generated", help="folder for scoreboard.md, findings.md, verdicts.json")
    sb.add_argument("--json-copy", default="book/_extra/verdicts.json", help="second copy of verdicts.json (served with the book)")
    sb.add_argument("--model", default="smollm2-135m")
    sb.add_argument("--n", type=int, default=1000)
    use = sub.add_parser("use", help="choose the model (and N) every chapter runs, saved in the cache")
    use.add_argument("--model", required=True, help="alias, hub id or local model folder")
    use.add_argument("--n", type=int, default=1000)
    st = sub.add_parser("standin", help="build a stand-in model folder (random weights) and print its path")
    st.add_argument("--kind", default="8b-shape", choices=["8b-shape", "4-layer"])
    st.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.cmd == "use":
        from .settings import course_settings, use_model

        path = use_model(args.model, args.n)
        print(f"saved in {path}; every chapter now runs {course_settings()}")
        return 0
    if args.cmd == "standin":
        from .standins import build_standin

        print(build_standin(args.kind, seed=args.seed))
        return 0

    if args.cmd == "info":
        from .env import report

        print(report())
        return 0
    if args.cmd == "scoreboard":
        from pathlib import Path

        from .scoreboard import default_runs, write

        found = write(Path(args.out), default_runs(args.model, args.n), extra_json=Path(args.json_copy))
        print(f"scoreboard: {len(found)} verdicts written to {args.out}")
        return 0
    from .capture import CacheError, load_activations
    from .models import ModelLoadError

    try:
        acts = load_activations(model=args.model, n=args.n, quant=args.quant, init=args.init, seed=args.seed,
                                dtype=args.dtype, batch_size=args.batch_size, rebuild=args.rebuild)
    except (ModelLoadError, CacheError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{acts.label}: activations {acts.acts.shape} (samples, sites, d_model) in {acts.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
