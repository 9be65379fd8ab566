"""Command line: ``python -m tdcourse capture --model smollm2-135m --n 1000`` (``--engine nnsight``,
``--remote`` for NDIF, ``--store-dtype bfloat16``), ``info``,
``export`` / ``import`` (captures for offline laptops), ``scoreboard``, ``use``, ``standin``.

``--model`` and ``--n`` default to the course's one setting (``TDCOURSE_MODEL`` /
``TDCOURSE_N``, else ``course.json`` written by ``use``, else smollm2-135m and 1000; see
``tdcourse/settings.py``), the same setting every chapter reads.

Every failure ends in one line ``error: ...`` on stderr. An expected one (a model that cannot
be loaded, a broken cache or export, a bad argument or setting, a full or read-only disk,
non-finite activations) exits with status 2; a bad option is reported by argparse, also with
status 2. Anything else is a bug in tdcourse: the line says so and names the file that holds
the full traceback (in the cache's ``logs/`` folder, else the temporary folder); status 1.
"""

from __future__ import annotations

import argparse
import sys

_SETTING = "default: the course's setting (TDCOURSE_MODEL / TDCOURSE_N, course.json, else {})"


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


def _model_and_n(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="alias, hub id or local folder (" + _SETTING.format("smollm2-135m") + ")")
    parser.add_argument("--n", type=_positive_int, default=None, help="number of samples (" + _SETTING.format("1000") + ")")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tdcourse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    cap = sub.add_parser("capture", help="capture the residual stream of N samples into the cache")
    _model_and_n(cap)
    cap.add_argument("--quant", default="auto", choices=["auto", "none", "4bit"])
    cap.add_argument("--init", default="trained", choices=["trained", "random"])
    cap.add_argument("--seed", type=_nonnegative_int, default=0)
    cap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    cap.add_argument("--batch-size", type=_positive_int, default=32, help="samples per forward pass (default: 32)")
    cap.add_argument("--device-map", default=None, choices=["auto", "balanced", "balanced_low_0", "sequential"],
                     help="split a model too large for one GPU over the GPUs, then the CPU and disk (accelerate); "
                          "default: the whole model on one device")
    cap.add_argument("--offload-folder", default=None, help="where accelerate keeps weights offloaded to disk")
    cap.add_argument("--engine", default=None, choices=["hooks", "nnsight"],
                     help="capture engine (same values; default: the course's setting for this model, else hooks)")
    cap.add_argument("--remote", action="store_true", default=None,
                     help="run the nnsight engine on NDIF (hub models NDIF hosts, e.g. llama-3.1-70b; needs "
                          "NDIF_API_KEY); default: the course's setting for this model")
    cap.add_argument("--store-dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                     help="dtype of the cached array (half the disk in 16 bits; read back as float32; "
                          "default: float32)")
    cap.add_argument("--rebuild", action="store_true", help="capture again even if cached")
    sub.add_parser("info", help="where we run, the device and the cache directory")
    ex = sub.add_parser("export", help="write the cached captures of a model (trained and random-init control) "
                                       "into one .tar for other machines")
    _model_and_n(ex)
    ex.add_argument("--out", required=True, help="the .tar file to write")
    ex.add_argument("--quant", default=None, choices=["none", "4bit"], help="only trained captures of this quantisation")
    ex.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    ex.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the random-init control")
    ex.add_argument("--no-control", action="store_true", help="leave the random-init control out")
    im = sub.add_parser("import", help="install the captures of an export file into this machine's cache "
                                       "(all or nothing)")
    im.add_argument("file", help="a .tar written by `python -m tdcourse export`")
    im.add_argument("--replace", action="store_true",
                    help="replace cached entries or kept results of the same key whose contents differ "
                         "(without it, the import lists them and installs nothing)")
    sb = sub.add_parser("scoreboard", help="compute every chapter's verdicts on a model (full, 4-bit, random init)")
    sb.add_argument("--out", default="book/_generated", help="folder for scoreboard.md, findings.md, verdicts.json")
    sb.add_argument("--json-copy", default="book/_extra/verdicts.json", help="second copy of verdicts.json (served with the book)")
    sb.add_argument("--jobs", type=_positive_int, default=1,
                    help="worker processes for the captures and the chapters' analyses (one run's capture or one "
                         "(chapter, run) pair each; default 1)")
    _model_and_n(sb)
    use = sub.add_parser("use", help="choose the model (and N) every chapter runs, saved in the cache")
    use.add_argument("--model", required=True, help="alias, hub id or local model folder")
    use.add_argument("--n", type=_positive_int, default=None, help="number of samples (default: keep the N the "
                                                                     "course runs now, else 1000)")
    use.add_argument("--engine", default=None, choices=["hooks", "nnsight"],
                     help="how a capture that is not cached is made (default: hooks; nnsight with --remote)")
    use.add_argument("--remote", action="store_true", help="capture on NDIF with nnsight (llama-3.1-70b, ...)")
    st = sub.add_parser("standin", help="build a stand-in model folder (random weights) and print its path")
    st.add_argument("--kind", default="8b-shape", choices=["8b-shape", "70b-shape", "4-layer"])
    st.add_argument("--seed", type=_nonnegative_int, default=0)
    return parser


def _setting(args) -> tuple[str, int]:
    """``--model`` / ``--n`` where given, else the course's setting."""
    from .settings import course_settings

    if args.model is not None and args.n is not None:
        return args.model, args.n
    model, n = course_settings()
    return (args.model if args.model is not None else model), (args.n if args.n is not None else n)


def _run(args) -> int:
    if args.cmd == "use":
        from .settings import DEFAULT_N, course_settings, use_model

        n = args.n
        if n is None:
            try:
                n = course_settings().n
            except ValueError:  # a broken setting is what `use` repairs
                n = DEFAULT_N
        engine = args.engine or ("nnsight" if args.remote else "hooks")
        path = use_model(args.model, n, engine=engine, remote=args.remote)
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
    if args.cmd == "import":
        from .exchange import import_activations

        paths = import_activations(args.file, replace=args.replace)
        print(f"installed {len(paths)} files: " + ", ".join(p.name for p in paths))
        return 0
    model, n = _setting(args)
    if args.cmd == "scoreboard":
        from pathlib import Path

        from .scoreboard import build

        found = build(Path(args.out), model, n, extra_json=Path(args.json_copy), jobs=args.jobs)
        print(f"scoreboard: {len(found)} verdicts written to {args.out}")
        return 0
    if args.cmd == "export":
        from .exchange import export_activations

        paths = export_activations(model, n, args.out, quant=args.quant, dtype=args.dtype,
                                   seed=args.seed, control=not args.no_control)
        print(f"exported {len(paths)} captures to {args.out}: " + ", ".join(p.name for p in paths))
        return 0
    from .capture import load_activations

    acts = load_activations(model=model, n=n, quant=args.quant, init=args.init, seed=args.seed,
                            dtype=args.dtype, batch_size=args.batch_size, rebuild=args.rebuild,
                            device_map=args.device_map, offload_folder=args.offload_folder, engine=args.engine,
                            remote=args.remote, store_dtype=args.store_dtype)
    print(f"{acts.label}: activations {acts.acts.shape} (samples, sites, d_model) in {acts.path} "
          f"(engine: {acts.engine}, stored as {acts.info['store']['dtype']})")
    return 0


def _write_traceback(err: BaseException, argv: list[str]) -> str:
    """Write ``err``'s full traceback to a file (the cache's ``logs/``, else the temporary folder)."""
    import os
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    name = f"tdcourse-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    folders = []
    try:
        from .env import cache_dir

        folders.append(cache_dir() / "logs")
    except Exception:  # the cache itself may be what is broken
        pass
    folders.append(tempfile.gettempdir())
    for folder in folders:
        try:
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(f"python -m tdcourse {' '.join(argv)}\n\n{text}")
            return path
        except OSError:
            continue
    return "nowhere (no folder could be written); run again with python -X dev to see it"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 an expected error, 1 a bug; one line each)."""
    from .env import CacheDirError
    from .models import ModelLoadError
    from .store import CacheError

    args = _parser().parse_args(argv)
    expected = (ModelLoadError, CacheError, CacheDirError, ValueError, OSError, FloatingPointError, TimeoutError)
    try:
        return _run(args)
    except expected as err:
        text = " ".join(str(err).split()) or type(err).__name__
        kind = "" if isinstance(err, (ModelLoadError, CacheError, CacheDirError, ValueError)) else f"{type(err).__name__}: "
        print(f"error: {kind}{text}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory: capture fewer samples at once (--batch-size), fewer samples (--n), "
              "or a smaller model", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (nothing half-written is left in the cache)", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: say so, in one line, and keep the whole story in a file
        where = _write_traceback(err, list(sys.argv[1:] if argv is None else argv))
        text = " ".join(str(err).split())[:300]
        print(f"error: unexpected {type(err).__name__}{': ' + text if text else ''}. This is a bug in tdcourse; "
              f"the full traceback is in {where} (please report it with that file).", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
