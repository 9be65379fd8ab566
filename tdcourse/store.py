"""The activation cache: its entries, their keys, locks and checksums, and the kept results.

The cache (``<TDCOURSE_CACHE>/activations/``): one folder per capture, named by the model, its
precision, N and a hash of everything that determines the values (model, revision, recipe,
data, token ids, format); batch size is not in it because it does not change the values. Every
read checks the entry's checksum once per process, its shape and that it is finite; writes are
atomic and safe with concurrent writers; the room needed is checked before a capture starts.

Kept results (``<TDCOURSE_CACHE>/results/``): what was computed from a capture with the model
itself (chapter 7's teleport experiment), so that a machine without the model can read it.

This module knows files, not models or arrays' meaning: it imports neither
:mod:`tdcourse.capture` (which wraps its entries as :class:`tdcourse.capture.Activations`) nor
the capture engine. :mod:`tdcourse.exchange` moves entries between machines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from . import env
from .data import SampleRecipe, body_lines, load_wikitext
from .models import ALIASES, SITE_KINDS, ModelSpec, looks_like_path

__all__ = [
    "FORMAT_VERSION",
    "CacheError",
    "Entry",
    "cache_key",
    "entry_meta",
    "ids_digest",
    "activations_dir",
    "check_cache_room",
    "clean_stale_temporaries",
    "write_entry",
    "read_entry",
    "meta_problem",
    "find_entries",
    "pick_entry",
    "results_dir",
    "result_path",
    "save_result",
    "load_result",
]

FORMAT_VERSION = 1


class CacheError(RuntimeError):
    """A cached activation file is corrupt, truncated or does not match what was asked."""


class Entry(NamedTuple):
    """One cache entry as read by :func:`read_entry`.

    Attributes
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model), float32
    sites : list of str, length n_sites
    texts : list of str, length n_samples
    meta : dict
        The entry's key (:func:`entry_meta`).
    path : pathlib.Path
        The entry's folder.
    """

    acts: np.ndarray
    sites: list[str]
    texts: list[str]
    meta: dict[str, Any]
    path: Path


# --------------------------------------------------------------------------- entries
#
# One entry = one folder ``activations/<tag>-<key>/`` holding ``acts.npy`` and ``meta.json``.
# Writers build the entry in a temporary folder inside ``activations/`` (same filesystem, so
# the final rename is atomic) and install it under an exclusive lock on
# ``activations/.locks/<entry>.lock``; readers hold a shared lock on that file while they read.
# A reader therefore sees a whole old entry or a whole new one, and concurrent writers of one
# key all succeed (the last one's entry stays). Where the filesystem has no ``flock`` (some
# network mounts), the lock is skipped and the rename alone keeps entries whole.

_TMP_PREFIX = env.TMP_PREFIX
STALE_TMP_S = env.STALE_TMP_S
_REQUIRED_RECORD = ("meta", "shape", "sites", "texts")
_REQUIRED_META = ("format_version", "model", "recipe", "data_sha256", "input_ids_sha256", "sites", "position")
# (path, device, inode, size, mtime_ns, checksum) of acts.npy files verified by this process:
# a cache of work done (a full-file hash), never of results. Files modified in the last
# _RACY_S seconds are not remembered (timestamps are coarser than a quick rewrite).
_VERIFIED: set[tuple] = set()
_RACY_S = 2.0


def cache_key(meta: dict[str, Any]) -> str:
    """Hex digest naming the cache entry of ``meta`` (stable JSON, SHA-256, 24 hex digits)."""
    blob = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _hasher(algo: str):
    if algo == "sha256":
        return hashlib.sha256()
    if algo == "xxh3_128":
        import xxhash

        return xxhash.xxh3_128()
    raise CacheError(f"unknown checksum algorithm {algo!r} in the cache entry")


def _default_algo() -> str:
    # xxh3 (installed with ``datasets``) hashes at ~5 GB/s, SHA-256 at ~1 GB/s: the checksum
    # guards against corruption, not against an attacker.
    import importlib.util

    return "xxh3_128" if importlib.util.find_spec("xxhash") is not None else "sha256"


def _file_digest(path: Path, algo: str) -> str:
    h = _hasher(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _slug(text: str, limit: int = 48) -> str:
    """``text`` as a short, safe part of a folder name: letters, digits, ``.``, ``_``, ``-``;
    never empty, never starting with ``-`` or ``.``; long names keep their end (the folder
    name of a local model), the cache key keeps entries distinct."""
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text).replace("/", "--")).strip("-.")
    if len(slug) > limit:
        slug = slug[-limit:].lstrip("-.")
    return slug or "model"


def _entry_name(meta: dict[str, Any]) -> str:
    spec = meta["model"]
    tag = "-".join(_slug(str(spec.get(k)), 16) for k in ("quant", "dtype", "init"))
    return f"{_slug(spec['name'])}-{tag}-n{int(meta['recipe']['n'])}-{cache_key(meta)}"


def activations_dir() -> Path:
    """The folder of the activation cache, ``<cache>/activations`` (created on first use).

    Raises
    ------
    CacheError
        A file is where the folder should be, or it cannot be created.
    """
    path = env.cache_dir() / "activations"
    if path.exists() and not path.is_dir():
        raise CacheError(f"{path} is a file, not a folder: move it away, or set TDCOURSE_CACHE to another folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(f"The activation cache {path} cannot be created ({err}). {env.cache_hint()}") from err
    return path


def _entry_dir(meta: dict[str, Any]) -> Path:
    return activations_dir() / _entry_name(meta)


@contextlib.contextmanager
def _locked(entry: Path, exclusive: bool) -> Iterator[None]:
    """Hold a lock on ``entry`` (exclusive for writers, shared for readers) where possible.

    A temporary folder (a staged import) is private to its writer: it takes no lock, so no
    lock file is left behind for it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic rename alone
        yield
        return
    if entry.name.startswith(_TMP_PREFIX):
        yield
        return
    lock_dir = entry.parent / ".locks"
    try:
        lock_dir.mkdir(exist_ok=True)
        fd = os.open(lock_dir / f"{entry.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # read-only cache: nobody can write it, reading needs no lock
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError:  # filesystem without flock
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


def _tmp_name() -> str:
    return env.temporary_name()


def clean_stale_temporaries(folder: Path | None = None, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Remove leftovers of killed saves (``.tmp-*`` in the activation cache); see
    :func:`tdcourse.env.clean_stale_temporaries`, which this calls with the activation folder."""
    return env.clean_stale_temporaries(Path(folder) if folder is not None else activations_dir(), max_age_s)


def check_cache_room(n_bytes: int, folder: Path | None = None) -> Path:
    """Make sure the activation cache can take ``n_bytes`` more, before a capture starts.

    Writes and removes a small probe file (a read-only folder is found now, not after the
    capture) and compares ``n_bytes`` plus a margin of ``min(64 MiB, n_bytes)`` with the free
    space of the folder's disk (:func:`tdcourse.env.room_problem`).

    Parameters
    ----------
    n_bytes : int
        What the entry will take (``n_samples * n_sites * d_model * 4`` for float32).
    folder : pathlib.Path or None
        Default: the activation cache folder.

    Returns
    -------
    pathlib.Path
        The folder checked.

    Raises
    ------
    CacheError
        The folder is not writable or its disk has too little free space; one line that says
        how much is needed and how to choose another folder (``TDCOURSE_CACHE``).
    """
    folder = Path(folder) if folder is not None else activations_dir()
    problem = env.room_problem(folder, n_bytes, "this capture")
    if problem:
        raise CacheError(f"{problem} Nothing was captured.")
    return folder


def write_entry(acts: np.ndarray, sites: list[str], texts: list[str], meta: dict[str, Any]) -> Path:
    """Write one cache entry atomically and return its folder.

    The entry is written into a temporary folder inside the cache, checksummed, then renamed
    into place under the entry's lock, replacing an older entry of the same key. Concurrent
    writes of one key all succeed; a reader sees the whole old or the whole new entry. Stale
    temporary folders of killed writes are removed first (:func:`clean_stale_temporaries`).
    The array is not checked for NaN here: :func:`tdcourse.capture.save_activations` does that
    before it calls this.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
        Stored as C-ordered float32.
    sites : list of str, length n_sites
    texts : list of str, length n_samples
    meta : dict
        The entry's key (:func:`entry_meta`).

    Returns
    -------
    pathlib.Path
        The entry's folder, ``activations/<model>-<quant>-<dtype>-<init>-n<N>-<key>``.

    Raises
    ------
    ValueError
        ``sites``/``texts`` do not match the array's shape, or ``meta`` lacks a field.
    CacheError
        The cache cannot be written (the message says why: no space, read-only, ...).
    """
    arr = np.asarray(acts)
    if arr.ndim != 3 or len(sites) != arr.shape[1] or len(texts) != arr.shape[0]:
        raise ValueError(f"sites ({len(sites)}) and texts ({len(texts)}) must match acts' shape {arr.shape}")
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"meta lacks {missing}")
    bad = meta_problem(meta)
    if bad:
        raise ValueError(bad)
    folder = activations_dir()
    clean_stale_temporaries(folder)
    target = folder / _entry_name(meta)
    tmp = folder / _tmp_name()
    algo = _default_algo()
    try:
        tmp.mkdir()
        np.save(tmp / "acts.npy", np.ascontiguousarray(arr, dtype=np.float32))
        record = {
            "meta": meta,
            "key": cache_key(meta),
            "shape": list(arr.shape),
            "sites": list(sites),
            "texts": list(texts),
            "checksum": {"algorithm": algo, "hex": _file_digest(tmp / "acts.npy", algo)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "meta.json").write_text(json.dumps(record, indent=1))
        _install(tmp, target)
    except OSError as err:
        raise CacheError(f"Could not write the cache entry {target} ({err.strerror or err}). Free some space or "
                         f"choose another cache folder. {env.cache_hint()}") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target

def _install(tmp: Path, target: Path) -> None:
    """Rename the complete folder ``tmp`` to ``target`` under ``target``'s exclusive lock.

    What was at ``target`` is moved aside first and removed after; if the rename fails it is
    put back, so a failed install never loses the old entry nor leaves a temporary behind.
    """
    with _locked(target, exclusive=True):
        old = None
        if target.exists() or target.is_symlink():
            old = target.parent / _tmp_name()
            os.replace(target, old)  # a file or folder in the way: moved aside, removed below
        try:
            os.replace(tmp, target)
        except OSError:
            if old is not None:
                with contextlib.suppress(OSError):
                    os.replace(old, target)
            raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                old.unlink()


def _read_npy(npy: Path, algo: str | None) -> tuple[np.ndarray, str | None]:
    """Read a float32 ``.npy`` in one pass, hashing its bytes on the way when ``algo`` is given."""
    h = _hasher(algo) if algo else None
    with open(npy, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        header_len = f.tell()
        if fortran or dtype != np.dtype("<f4"):
            raise ValueError(f"expected a C-ordered little-endian float32 array, got {dtype} (fortran={fortran})")
        # The header's shape against the file's size, before anything is allocated: a damaged
        # header must not ask for an absurd array (a MemoryError, or all the machine's RAM).
        if len(shape) != 3 or not all(isinstance(x, int) and x >= 0 for x in shape):
            raise ValueError(f"the header holds shape {shape}, not (n_samples, n_sites, d_model)")
        want = header_len + 4 * int(np.prod(shape, dtype=object))
        have = os.fstat(f.fileno()).st_size
        if have != want:
            raise ValueError(f"the header's shape {tuple(shape)} needs {want} bytes and the file has {have}: "
                             "the file is truncated or its header is damaged")
        if h is not None:
            f.seek(0)
            h.update(f.read(header_len))
        arr = np.empty(shape, dtype=np.float32)
        buf = memoryview(arr.reshape(-1).view(np.uint8))
        pos, step = 0, 1 << 24
        while pos < len(buf):
            got = f.readinto(buf[pos : pos + step])
            if not got:
                raise ValueError(f"the file ends after {header_len + pos} bytes, {header_len + len(buf)} expected")
            if h is not None:
                h.update(buf[pos : pos + got])
            pos += got
        if f.read(1):
            raise ValueError("the file is longer than its header says")
    return arr, (h.hexdigest() if h is not None else None)


def _stat_key(npy: Path, checksum: str) -> tuple | None:
    st = os.stat(npy)
    if time.time() - st.st_mtime < _RACY_S:
        return None
    return (str(npy.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, checksum)


def _record_checksum(record: dict[str, Any]) -> tuple[str, str] | None:
    if isinstance(record.get("checksum"), dict):
        c = record["checksum"]
        if isinstance(c.get("algorithm"), str) and isinstance(c.get("hex"), str):
            return c["algorithm"], c["hex"]
        return None
    if isinstance(record.get("sha256"), str):  # entries written before the checksum field
        return "sha256", record["sha256"]
    return None


def meta_problem(meta: Any) -> str | None:
    """None if ``meta`` has the types an entry's key needs (:func:`entry_meta`), else what is wrong.

    Checked on every read and import, so that a hand-edited or damaged ``meta.json`` (e.g.
    ``recipe.n`` set to null) is one clear error, never a ``TypeError`` later.
    """
    if not isinstance(meta, dict):
        return "meta is not an object"
    model, recipe = meta.get("model"), meta.get("recipe")
    if not isinstance(model, dict):
        return "meta.model is not an object"
    for k in ("name", "quant", "dtype", "init"):
        if not isinstance(model.get(k), str) or not model.get(k):
            return f"meta.model.{k} must be a non-empty string, got {model.get(k)!r}"
    if not isinstance(recipe, dict):
        return "meta.recipe is not an object"
    n = recipe.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return f"meta.recipe.n must be a whole number >= 1, got {n!r}"
    for k in ("data_sha256", "input_ids_sha256"):
        if not isinstance(meta.get(k), str):
            return f"meta.{k} must be a string, got {meta.get(k)!r}"
    return None


def _nonfinite_problem(arr: np.ndarray, sites: list[str], block_bytes: int = 8 << 20) -> str | None:
    """None if every value of ``arr`` is finite, else a sentence naming the first bad (sample, site)."""
    per_sample = max(1, arr[0].nbytes if len(arr) else 1)
    step = max(1, block_bytes // per_sample)
    for start in range(0, arr.shape[0], step):
        block = arr[start : start + step]
        if not np.isfinite(block).all():
            s, t = np.argwhere(~np.isfinite(block).reshape(block.shape[0], block.shape[1], -1).all(axis=2))[0]
            site = f" ({sites[t]})" if t < len(sites) else ""
            return f"holds NaN or inf, first at sample {start + s} at site {t}{site}."
    return None


def read_entry(path: Path, expect_meta: dict[str, Any] | None = None, verify: bool = True,
               check: Callable[[np.ndarray, list[str]], str | None] | None = None) -> Entry:
    """Read a cache entry, checking its checksum and (if given) that its metadata is ``expect_meta``.

    The checksum of ``acts.npy`` is computed while the file is read (one pass). A file
    verified once by this process, unchanged since (same inode, size and modification time),
    is not hashed again: a chapter that reads the same entry twice pays the hash once.

    Parameters
    ----------
    path : pathlib.Path
        The entry's folder.
    expect_meta : dict or None
        The metadata the caller asked for; the entry must hold exactly this.
    verify : bool
        Check the checksum (default).
    check : callable or None
        ``check(acts, sites)`` returns None for good values or a sentence saying what is wrong
        (run once per verified file, with the checksum). None: refuse NaN and inf.

    Returns
    -------
    Entry
        ``acts`` of shape ``(n_samples, n_sites, d_model)``, float32; sites, texts, meta, path.

    Raises
    ------
    CacheError
        The entry is missing, incomplete, corrupt, holds NaN or inf, is of another format
        version or built for something else; the message says how to rebuild it.
    """
    path = Path(path)
    rebuild = (f"Delete {path} and capture again (load_activations(..., rebuild=True) or "
               "`python -m tdcourse capture ... --rebuild`).")
    with _locked(path, exclusive=False):
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            raise CacheError(f"The activation cache entry {path} {what}. {rebuild}")
        try:
            record = json.loads((path / "meta.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CacheError(f"The activation cache entry {path} has no readable meta.json ({err}). {rebuild}") from err
        if not isinstance(record, dict):
            raise CacheError(f"{path / 'meta.json'} is not a metadata record. {rebuild}")
        missing = [k for k in _REQUIRED_RECORD if k not in record]
        meta = record.get("meta")
        if not isinstance(meta, dict):
            missing.append("meta")
            meta = {}
        if meta.get("format_version") not in (None, FORMAT_VERSION) and not missing:
            raise CacheError(f"{path} was written by capture format {meta.get('format_version')}, "
                             f"this tdcourse reads format {FORMAT_VERSION}. {rebuild}")
        missing += [f"meta.{k}" for k in _REQUIRED_META if k not in meta]
        checksum = _record_checksum(record)
        if verify and checksum is None:
            missing.append("checksum")
        if missing:
            raise CacheError(f"{path / 'meta.json'} lacks {sorted(set(missing))}: the entry is incomplete. {rebuild}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise CacheError(f"{path} was written by capture format {meta.get('format_version')}, "
                             f"this tdcourse reads format {FORMAT_VERSION}. {rebuild}")
        bad = meta_problem(meta)
        if bad:
            raise CacheError(f"{path / 'meta.json'} is malformed: {bad}. {rebuild}")
        sites, texts, shape = record["sites"], record["texts"], record["shape"]
        if not (isinstance(sites, list) and isinstance(texts, list) and isinstance(shape, list)
                and all(isinstance(x, str) for x in sites) and all(isinstance(x, str) for x in texts)):
            raise CacheError(f"{path / 'meta.json'} has malformed sites, texts or shape. {rebuild}")
        if expect_meta is not None and meta != expect_meta:
            diff = sorted(k for k in set(meta) | set(expect_meta) if meta.get(k) != expect_meta.get(k))
            raise CacheError(f"{path} holds activations for other settings (differs in {diff}). {rebuild}")
        npy = path / "acts.npy"
        try:
            key = _stat_key(npy, checksum[1]) if (verify and checksum) else None
            hash_now = verify and (key is None or key not in _VERIFIED)
            acts, digest = _read_npy(npy, checksum[0] if hash_now else None)
        except (OSError, ValueError) as err:
            raise CacheError(f"{npy} is missing, truncated or unreadable ({err}). {rebuild}") from err
    if hash_now and digest != checksum[1]:
        raise CacheError(f"{npy} is corrupt or truncated (checksum mismatch). {rebuild}")
    if list(acts.shape) != shape or acts.shape[1] != len(sites) or acts.shape[0] != len(texts):
        raise CacheError(f"{npy} has shape {acts.shape}, its metadata says {shape}. {rebuild}")
    if hash_now:
        problem = (check or _nonfinite_problem)(acts, list(sites))
        if problem:
            raise CacheError(f"{npy}: {problem} {rebuild}")
        if key is not None:
            _VERIFIED.add(key)
    return Entry(acts=acts, sites=list(sites), texts=list(texts), meta=meta, path=path)

def entry_meta(spec: ModelSpec, recipe: SampleRecipe, data_sha256: str, ids_sha256: str) -> dict[str, Any]:
    """The key of the entry that holds ``spec``'s capture of ``recipe``'s samples.

    Parameters
    ----------
    spec : tdcourse.models.ModelSpec
        The resolved model (its revision filled in).
    recipe : tdcourse.data.SampleRecipe
    data_sha256 : str
        SHA-256 of the samples' source lines (:attr:`tdcourse.data.Samples.data_sha256`).
    ids_sha256 : str
        SHA-256 of the token ids (:func:`ids_digest`).

    Returns
    -------
    dict
        JSON-able; :func:`cache_key` of it names the entry.
    """
    return {
        "format_version": FORMAT_VERSION,
        "model": spec.to_dict(),
        "recipe": recipe.to_dict(),
        "data_sha256": data_sha256,
        "input_ids_sha256": ids_sha256,
        "sites": list(SITE_KINDS),
        "position": "last",
    }


def ids_digest(ids: list[list[int]]) -> str:
    """SHA-256 (hex) of the samples' token ids, as compact JSON."""
    return hashlib.sha256(json.dumps(ids, separators=(",", ":")).encode()).hexdigest()


def _data_digest(recipe: SampleRecipe) -> str:
    """The ``data_sha256`` of ``recipe``'s samples, from the shipped text alone (no tokenizer)."""
    chosen = body_lines(load_wikitext(split=recipe.split), recipe.min_chars, recipe.max_chars)[: recipe.n]
    return hashlib.sha256("\n".join(chosen).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- finding entries


def _entry_records(folder: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable entry's folder and ``meta.json`` record (unverified), newest first."""
    folder = Path(folder) if folder is not None else activations_dir()
    out = []
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir()]
    except OSError:
        return out
    for p in entries:
        try:
            record = json.loads((p / "meta.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("meta"), dict):
            out.append((p, record))
    out.sort(key=lambda pr: str(pr[1].get("created", "")), reverse=True)
    return out


def _names_of(model: str) -> set[str]:
    """The names an entry of ``model`` may carry: as typed, an alias's source, a folder's absolute path."""
    names = {model, model.lower()}
    if model.lower() in ALIASES:
        names.add(ALIASES[model.lower()])
    if looks_like_path(model):  # local folders are named by their absolute path
        names.add(str(Path(model).expanduser().resolve()))
    return names


def find_entries(
    model: str,
    recipe: SampleRecipe,
    init: str | None = "trained",
    seed: int | None = 0,
    quant: str | None = None,
    dtype: str | None = None,
    data_sha256: str | None = None,
    folder: Path | None = None,
) -> list[tuple[Path, dict[str, Any]]]:
    """Cached entries of ``model`` on ``recipe``'s samples, whatever precision captured them.

    An entry matches when its model name (or source), its recipe (all fields, ``n``
    included), its data hash and its format version are the ones asked, and its ``init`` /
    ``seed`` / ``quant`` / ``dtype`` too where those are given (None: any). Entries of another
    recipe, N or init never match.

    Returns
    -------
    list of (pathlib.Path, dict)
        Folder and ``meta`` of each match, newest first (not yet verified: read them with
        :func:`read_activations`).
    """
    data_sha256 = data_sha256 or _data_digest(recipe)
    names = _names_of(model)
    want_recipe = recipe.to_dict()
    found = []
    for p, record in _entry_records(folder):
        m = record["meta"]
        spec = m.get("model") if isinstance(m.get("model"), dict) else {}
        if (m.get("format_version") != FORMAT_VERSION or m.get("recipe") != want_recipe
                or m.get("data_sha256") != data_sha256 or m.get("sites") != list(SITE_KINDS)
                or m.get("position") != "last"
                or not ({spec.get("name"), spec.get("source")} & names)):
            continue
        if init is not None and spec.get("init") != init:
            continue
        if seed is not None and spec.get("init") == "random" and spec.get("seed") != seed:
            continue
        if quant is not None and spec.get("quant") != quant:
            continue
        if dtype is not None and spec.get("dtype") != dtype:
            continue
        found.append((p, m))
    return found


def pick_entry(found: list[tuple[Path, dict]], quant: str | None, dtype: str | None) -> tuple[Path, dict]:
    """The best of several matching entries (from :func:`find_entries`).

    Parameters
    ----------
    found : list of (pathlib.Path, dict)
        Non-empty.
    quant, dtype : str or None
        The asked precision. Left open (``quant`` ``"auto"`` or None, ``dtype`` None), full
        precision comes first: ``quant == "none"``, then ``dtype == "float32"``.

    Returns
    -------
    (pathlib.Path, dict)
        The asked (or full) precision first; the newest among equals.
    """
    want_quant = "none" if quant in (None, "auto") else quant
    want_dtype = dtype or "float32"

    def rank(item):
        spec = item[1]["model"]
        return (spec.get("quant") != want_quant, spec.get("dtype") != want_dtype)

    return sorted(found, key=rank)[0]  # stable: newest first among equals


# --------------------------------------------------------------------------- kept results

def results_dir() -> Path:
    """``<TDCOURSE_CACHE>/results/``: results computed from a capture that need the model itself
    (chapter 7's teleport experiment), kept so that a machine without the model can read them.
    Exported and imported with the capture they belong to."""
    path = env.cache_dir() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def result_path(meta: dict[str, Any], name: str) -> Path:
    """Where result ``name`` computed from the capture with metadata ``meta`` is kept:
    ``results/<cache_key(meta)>-<name>.npz``. ``name`` must be letters, digits, ``-`` or ``_``."""
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"result name must be letters, digits, '-' or '_', got {name!r}")
    return results_dir() / f"{cache_key(meta)}-{name}.npz"


def save_result(meta: dict[str, Any], name: str, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
    """Keep ``arrays`` (and the JSON-able ``info``) as result ``name`` of the capture ``meta``.

    Written to a temporary file in the same folder, then renamed into place: a reader never
    sees half a file, and no temporary is left when the write fails. Returns the file's path.

    Raises
    ------
    ValueError
        A ``name`` that is not letters, digits, ``-`` or ``_``.
    CacheError
        The file cannot be written (a full or read-only disk).
    """
    path = result_path(meta, name)
    tmp = path.parent / f"{_tmp_name()}.npz"
    try:
        np.savez(tmp, __info__=np.frombuffer(json.dumps(info).encode(), dtype=np.uint8), **arrays)
        os.replace(tmp, path)
    except OSError as err:
        raise CacheError(f"Could not keep the result {path} ({err.strerror or err}). {env.cache_hint()}") from err
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path


def load_result(meta: dict[str, Any], name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Result ``name`` of the capture ``meta`` as ``(arrays, info)``, or None if not kept.

    Raises
    ------
    CacheError
        The file exists but is damaged (its zip checksums fail); the message says to delete it.
    """
    import zipfile

    path = result_path(meta, name)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        info = json.loads(arrays.pop("__info__").tobytes().decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise CacheError(f"The kept result {path} is damaged ({err}). Delete it; it is computed again "
                         "where the model can be loaded.") from err
    return arrays, info
