"""Analysis results kept on disk: each costly analysis is computed once per input and code version.

A chapter, the scoreboard (``python -m tdcourse scoreboard``, run by ``make book`` before the
book) and the tests (nbval) call the same analysis functions on the same captures: chapter 6's
autoencoder, chapter 4's MI profile, chapter 2's bootstraps. :func:`cached` wraps such a function
so that its result is computed once and read back by every later call with the same inputs:

- **key**: the function's qualified name; every argument after binding to its signature
  (defaults filled in, so ``analyse(acts)`` and ``analyse(acts, n_boot=100)`` share a result
  when 100 is the default); an array by its dtype, shape and an xxh3-128 hash of its bytes (an
  :class:`~tdcourse.capture.Activations` by its fields, its array included); the source of the
  whole ``tdcourse`` package (any code change makes every result miss); the versions of
  Python, numpy, scipy, scikit-learn and torch, and ``OPENBLAS_CORETYPE`` (another BLAS kernel
  gives other last bits).
- **where**: ``<TDCOURSE_CACHE>/results/memo/<module.function>/<key>.pkl``, a pickle of the
  result with the key's contents beside it; checked on every read (the key, the function, the
  format), so a file is never served for another input.
- **writes** are atomic (a temporary file in the same folder, then a rename; the temporary is
  removed on any failure); a write that fails (a full disk, a read-only cache) prints one line
  and the result is returned all the same.
- **reads** are safe: a file that cannot be read back (truncated, damaged, written by an older
  format) is computed again, with a one-line message, and replaced.

Wrapped (the costly calls the chapters and the scoreboard share): :func:`tdcourse.stationarity.stationarity`,
:func:`tdcourse.continuity.analyse`, :func:`tdcourse.geometry.density_indices`,
:func:`tdcourse.stats.curve_trend` (every trend of chapter 3 and the scoreboard),
:func:`tdcourse.information.mi_profile`, :func:`tdcourse.rotations.analyse`,
:func:`tdcourse.lowdim.analyse` and :func:`tdcourse.lowdim.train_autoencoder`. Chapter 7's
teleport results are kept by :func:`tdcourse.capture.save_result` (they travel with an export).

An argument that cannot be keyed (a model, a random generator, a function) makes the call
uncached: it is computed as if the function were not wrapped. The wrapped function keeps its
name, signature and docstring; the original is ``fn.__wrapped__``.

Cost: hashing reads the input once (about 20 ms for SmolLM2's (1000, 60, 576) float32 array,
0.15 s for Llama 3.1 8B's 1 GB); a hit then costs the unpickling of the result (a few MB).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from . import env, streaming

__all__ = ["FORMAT", "Unkeyable", "cached", "memo_dir", "key_of", "source_digest", "versions"]

#: Version of the file layout; a file of another format is computed again.
FORMAT = 1

F = TypeVar("F", bound=Callable[..., Any])

# Arrays are hashed a block of rows at a time (no full-size contiguous copy of a strided view).
_BLOCK_BYTES = 64 << 20


class Unkeyable(TypeError):
    """An argument whose value cannot be hashed into a key (the call is then not cached)."""


def memo_dir() -> Path:
    """``<TDCOURSE_CACHE>/results/memo``: where :func:`cached` keeps results (created on use)."""
    path = env.cache_dir() / "results" / "memo"
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """xxh3-128 of the source of the ``tdcourse`` package (every ``.py`` file, by its path
    relative to the package): any change of code gives every cached result a new key."""
    import xxhash

    root = Path(__file__).resolve().parent
    h = xxhash.xxh3_128()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def versions() -> tuple[tuple[str, str], ...]:
    """``(name, version)`` of Python and the packages whose version can change a result."""
    from importlib.metadata import PackageNotFoundError, version

    out = [("python", sys.version.split()[0])]
    for name in ("numpy", "scipy", "scikit-learn", "torch"):
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            out.append((name, "absent"))
    out.append(("OPENBLAS_CORETYPE", os.environ.get("OPENBLAS_CORETYPE", "")))
    return tuple(out)


def _feed_array(h, arr: np.ndarray) -> None:
    if arr.dtype.hasobject:
        raise Unkeyable(f"an array of dtype {arr.dtype} (Python objects) has no byte content to hash")
    h.update(f"ndarray {arr.dtype.str} {arr.shape}".encode())
    if arr.size == 0:
        return
    if arr.flags.c_contiguous and not streaming.is_mapped(arr):
        h.update(memoryview(arr.reshape(-1).view(np.uint8)))
        return
    # Strided views, and memory-mapped captures (whose pages read here are given back after each
    # block, so hashing a capture larger than memory keeps one block resident): the same bytes
    # in the same order, so the same key as hashing the whole array at once.
    rows = max(1, _BLOCK_BYTES // max(1, arr[0].nbytes if arr.ndim else arr.nbytes))
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    for i in range(0, flat.shape[0], rows):
        h.update(memoryview(np.ascontiguousarray(flat[i : i + rows]).reshape(-1).view(np.uint8)))
        streaming.release(arr)


def _feed(h, obj: Any) -> None:
    """Hash ``obj``'s value into ``h`` (tagged by type, so ``1``, ``1.0`` and ``"1"`` differ)."""
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, np.ndarray):
        _feed_array(h, obj)
    elif isinstance(obj, np.generic):
        _feed_array(h, np.asarray(obj))
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__}[{len(obj)}](".encode())
        for item in obj:
            _feed(h, item)
        h.update(b")")
    elif isinstance(obj, dict):
        h.update(f"dict[{len(obj)}](".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
        h.update(b")")
    elif isinstance(obj, Path):
        h.update(f"path:{obj.as_posix()};".encode())
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(f"dataclass {type(obj).__module__}.{type(obj).__qualname__}(".encode())
        for f in dataclasses.fields(obj):
            h.update(f.name.encode() + b"=")
            _feed(h, getattr(obj, f.name))
        h.update(b")")
    else:
        raise Unkeyable(f"an argument of type {type(obj).__module__}.{type(obj).__qualname__} cannot be keyed")


def key_of(fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None) -> str:
    """The key of ``fn(*args, **kwargs)``: a hex xxh3-128 of its name, its bound arguments
    (defaults filled in), the package source (:func:`source_digest`) and :func:`versions`.

    Raises
    ------
    Unkeyable
        An argument cannot be hashed (the call is then computed uncached).
    TypeError
        The arguments do not fit ``fn``'s signature.
    """
    import xxhash

    bound = inspect.signature(fn).bind(*args, **(kwargs or {}))
    bound.apply_defaults()
    h = xxhash.xxh3_128()
    _feed(h, f"{fn.__module__}.{fn.__qualname__}")
    _feed(h, FORMAT)
    _feed(h, source_digest())
    _feed(h, versions())
    for name, value in bound.arguments.items():
        _feed(h, name)
        _feed(h, value)
    return h.hexdigest()


def _name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _read(path: Path, key: str, name: str) -> tuple[bool, Any]:
    """``(True, result)`` from a kept file whose key and function match, else ``(False, None)``;
    a damaged file says so (it is then computed again and replaced)."""
    try:
        with open(path, "rb") as f:
            blob = pickle.load(f)
        if not (isinstance(blob, dict) and blob.get("format") == FORMAT and blob.get("key") == key
                and blob.get("function") == name and "result" in blob):
            raise ValueError("it holds another key, function or format")
        return True, blob["result"]
    except FileNotFoundError:
        return False, None
    except Exception as err:  # noqa: BLE001 - any unreadable file is recomputed, never served
        print(f"The kept result {path} cannot be read back ({type(err).__name__}: {err}); computing it again.")
        return False, None


def _write(path: Path, key: str, name: str, result: Any) -> None:
    tmp = path.parent / env.temporary_name(".pkl")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        env.clean_stale_temporaries(path.parent)
        with open(tmp, "wb") as f:
            pickle.dump({"format": FORMAT, "key": key, "function": name, "versions": versions(),
                         "result": result}, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, pickle.PicklingError, TypeError, AttributeError) as err:
        print(f"The result of {name} could not be kept in {path.parent} ({type(err).__name__}: {err}); "
              "it is computed again next time.")
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def cached(fn: F) -> F:
    """Keep the results of ``fn`` (a costly, deterministic analysis) on disk (see the module).

    Parameters
    ----------
    fn : callable
        A function of arrays, :class:`~tdcourse.capture.Activations`, numbers, strings and
        containers of them, whose result depends on nothing else (seeded randomness only) and
        can be pickled.

    Returns
    -------
    callable
        ``fn`` with the same name, signature and docstring; ``fn.__wrapped__`` is the original.
    """
    name = _name(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            key = key_of(fn, args, kwargs)
        except Unkeyable:
            return fn(*args, **kwargs)
        try:
            path = memo_dir() / name / f"{key}.pkl"
        except OSError:  # no usable cache folder: compute (the cache's own errors tell the rest)
            return fn(*args, **kwargs)
        hit, result = _read(path, key, name)
        if hit:
            return result
        result = fn(*args, **kwargs)
        _write(path, key, name, result)
        return result

    return wrapper  # type: ignore[return-value]
