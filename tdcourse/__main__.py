"""Command line: ``python -m tdcourse capture --model smollm2-135m --n 1000``, ``info``,
``export`` / ``import`` (captures for offline laptops), ``scoreboard``, ``use``, ``standin``.

Every expected failure (a model that cannot be loaded, a broken cache, a bad argument, a full
or read-only disk, non-finite activations) ends in one line ``error: ...`` on stderr and exit
status 2; a bad option is reported by argparse, also with status 2.
"""

from __future__ import annotations

import argparse
import sys


def _int_at_least(minimum: int):
    """argparse type: a whole number >= ``minimum`` (``--n 0``, ``--batch-size -1`` and ``--n 1.5`` are refused)."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            bound = "0 or more" if minimum == 0 else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tdcourse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    cap = sub.add_parser("capture", help="capture the residual stream of N samples into the cache")
    cap.add_argument("--model", default="smollm2-135m", help="alias, hub id or local folder (default: smollm2-135m)")
    cap.add_argument("--n", type=_positive_int, default=1000, help="number of samples (default: 1000)")
    cap.add_argument("--quant", default="auto", choices=["auto", "none", "4bit"])
    cap.add_argument("--init", default="trained", choices=["trained", "random"])
    cap.add_argument("--seed", type=_nonnegative_int, default=0)
    cap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    cap.add_argument("--batch-size", type=_positive_int, default=32, help="samples per forward pass (default: 32)")
    cap.add_argument("--rebuild", action="store_true", help="capture again even if cached")
    sub.add_parser("info", help="where we run, the device and the cache directory")
    ex = sub.add_parser("export", help="write the cached captures of a model (trained and random-init control) "
                                       "into one .tar for other machines")
    ex.add_argument("--model", default="smollm2-135m")
    ex.add_argument("--n", type=_positive_int, default=1000)
    ex.add_argument("--out", required=True, help="the .tar file to write")
    ex.add_argument("--quant", default=None, choices=["none", "4bit"], help="only trained captures of this quantisation")
    ex.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    ex.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the random-init control")
    ex.add_argument("--no-control", action="store_true", help="leave the random-init control out")
    im = sub.add_parser("import", help="install the captures of an export file into this machine's cache")
    im.add_argument("file", help="a .tar written by `python -m tdcourse export`")
    sb = sub.add_parser("scoreboard", help="compute every chapter's verdicts on SmolLM2 (full, 4-bit, random init)")
    sb.add_argument("--out", default="book/_generated", help="folder for scoreboard.md, findings.md, verdicts.json")
    sb.add_argument("--json-copy", default="book/_extra/verdicts.json", help="second copy of verdicts.json (served with the book)")
    sb.add_argument("--model", default="smollm2-135m")
    sb.add_argument("--n", type=_positive_int, default=1000)
    use = sub.add_parser("use", help="choose the model (and N) every chapter runs, saved in the cache")
    use.add_argument("--model", required=True, help="alias, hub id or local model folder")
    use.add_argument("--n", type=_positive_int, default=1000)
    st = sub.add_parser("standin", help="build a stand-in model folder (random weights) and print its path")
    st.add_argument("--kind", default="8b-shape", choices=["8b-shape", "4-layer"])
    st.add_argument("--seed", type=_nonnegative_int, default=0)
    return parser


def _run(args) -> int:
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

        rep = report()
        print(rep)
        if rep.cache_problem:
            print(f"error: {rep.cache_problem}", file=sys.stderr)
            return 2
        return 0
    if args.cmd == "scoreboard":
        from pathlib import Path

        from .scoreboard import default_runs, write

        found = write(Path(args.out), default_runs(args.model, args.n), extra_json=Path(args.json_copy))
        print(f"scoreboard: {len(found)} verdicts written to {args.out}")
        return 0
    if args.cmd == "export":
        from .capture import export_activations

        paths = export_activations(args.model, args.n, args.out, quant=args.quant, dtype=args.dtype,
                                   seed=args.seed, control=not args.no_control)
        print(f"exported {len(paths)} captures to {args.out}: " + ", ".join(p.name for p in paths))
        return 0
    if args.cmd == "import":
        from .capture import import_activations

        paths = import_activations(args.file)
        print(f"installed {len(paths)} captures: " + ", ".join(p.name for p in paths))
        return 0
    from .capture import load_activations

    acts = load_activations(model=args.model, n=args.n, quant=args.quant, init=args.init, seed=args.seed,
                            dtype=args.dtype, batch_size=args.batch_size, rebuild=args.rebuild)
    print(f"{acts.label}: activations {acts.acts.shape} (samples, sites, d_model) in {acts.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 an expected error, in one line)."""
    from .capture import CacheError
    from .env import CacheDirError
    from .models import ModelLoadError

    args = _parser().parse_args(argv)
    expected = (ModelLoadError, CacheError, CacheDirError, ValueError, OSError, FloatingPointError, TimeoutError)
    try:
        return _run(args)
    except expected as err:
        text = " ".join(str(err).split()) or type(err).__name__
        kind = "" if isinstance(err, (ModelLoadError, CacheError, CacheDirError, ValueError)) else f"{type(err).__name__}: "
        print(f"error: {kind}{text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (nothing half-written is left in the cache)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
