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
import errno
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
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
    "EntryWriter",
    "HalfStoreArray",
    "STORE_DTYPES",
    "StoreFile",
    "cache_key",
    "entry_meta",
    "ids_digest",
    "activations_dir",
    "check_cache_room",
    "clean_stale_temporaries",
    "store_is_exact",
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
    acts : ndarray or HalfStoreArray of shape (n_samples, n_sites, d_model), float32
        Memory-mapped, read-only (a float32 store); a :class:`HalfStoreArray` that upcasts
        to float32 what is read (a float16 or bfloat16 store).
    sites : list of str, length n_sites
    texts : list of str, length n_samples
    meta : dict
        The entry's key (:func:`entry_meta`).
    path : pathlib.Path
        The entry's folder.
    info : dict
        How the capture was made, not part of the key: the record's ``"capture"`` (engine,
        backend, batch size; empty for entries written before they were recorded) and
        ``"store"`` (``{"dtype": ..., "layout": "npy"}``).
    source : StoreFile
        Where the array lies on disk (:meth:`StoreFile.read` reads blocks of it).
    """

    acts: Any
    sites: list[str]
    texts: list[str]
    meta: dict[str, Any]
    path: Path
    info: dict[str, Any] | None = None
    source: StoreFile | None = None


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


# --------------------------------------------------------------------------- arrays on disk
#
# One entry's array is one ``.npy`` file (format 1.0), C-ordered, ``(n_samples, n_sites,
# d_model)``: written in place along the sample axis while a capture runs (the file is
# allocated first, each batch is written at its offset with ``os.pwrite``, the checksum is
# streamed over the bytes in file order), and read memory-mapped. Why one file and not
# shards: the number of samples is known before a capture starts, one file is what every
# entry written before looks like (old entries, exports and imports need nothing new), and a
# memory map of it is an ordinary ``ndarray`` that every reader of ``Activations.acts`` already
# handles; shards would need a concatenating view that is not one.
#
# Stores in half precision halve the file. float16 is the ``.npy``'s own ``<f2``; bfloat16,
# which numpy lacks, is kept as its raw 16 bits (``<u2``) and the record says so. Readers
# never see 16-bit values: :class:`HalfStoreArray` upcasts what is indexed to float32, and
# :meth:`StoreFile.read` reads blocks of samples as float32.

#: The dtypes an entry's array can be stored in.
STORE_DTYPES = ("float32", "float16", "bfloat16")
_NPY_DTYPE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2")}


def _check_store_dtype(store_dtype) -> str:
    if not isinstance(store_dtype, str) or store_dtype not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {', '.join(repr(d) for d in STORE_DTYPES)}, got {store_dtype!r}")
    return store_dtype


def to_store(block: np.ndarray, store_dtype: str) -> np.ndarray:
    """``block`` (float32) in the store's dtype: float32 as is, float16 by numpy's rounding,
    bfloat16 by round-to-nearest-even to its 16 raw bits (``uint16``; what ``torch`` does).

    Values beyond a half format's range become inf (float16: beyond 65504); the writer
    refuses them (:class:`EntryWriter`).
    """
    block = np.ascontiguousarray(block, dtype=np.float32)
    if store_dtype == "float32":
        return block
    if store_dtype == "float16":
        with np.errstate(over="ignore"):
            return block.astype(np.float16)
    u = block.view(np.uint32)
    return ((u + (((u >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)


def from_store(raw: np.ndarray, store_dtype: str) -> np.ndarray:
    """Stored values (as :func:`to_store` wrote them) as float32: exact for every dtype."""
    if store_dtype == "bfloat16":
        return (np.asarray(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(raw).astype(np.float32, copy=store_dtype != "float32")


def _finite_raw(raw: np.ndarray, store_dtype: str) -> bool:
    """Whether every stored value is finite, without upcasting (bfloat16: exponent not all ones)."""
    if store_dtype == "bfloat16":
        return not np.any((raw & 0x7F80) == 0x7F80)
    return bool(np.isfinite(raw).all())


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The bytes ``np.save`` would put before an array of ``shape`` and ``dtype`` (format 1.0)."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype),
                                               "fortran_order": False, "shape": tuple(int(x) for x in shape)})
    return buf.getvalue()


@dataclass(frozen=True)
class StoreFile:
    """Where an entry's array lies on disk, and how to read it without loading it whole.

    Attributes
    ----------
    path : pathlib.Path
        The ``.npy`` file.
    offset : int
        Bytes of its header; sample ``i`` starts at ``offset + i * sample_bytes``.
    shape : tuple of int
        ``(n_samples, n_sites, d_model)``.
    dtype : str
        The store's dtype, one of :data:`STORE_DTYPES` (bfloat16 is kept as raw ``uint16``).
    """

    path: Path
    offset: int
    shape: tuple
    dtype: str = "float32"

    @property
    def sample_bytes(self) -> int:
        """Bytes one sample takes in the file (``n_sites * d_model * itemsize``)."""
        return int(self.shape[1]) * int(self.shape[2]) * _NPY_DTYPE[self.dtype].itemsize

    def memmap(self) -> np.ndarray:
        """The stored values, memory-mapped read-only (``uint16`` for bfloat16): no copy in RAM."""
        arr = np.memmap(self.path, dtype=_NPY_DTYPE[self.dtype], mode="r", offset=self.offset, shape=tuple(self.shape))
        return arr.view(np.ndarray)

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples ``start:stop`` as a new float32 array ``(stop - start, n_sites, d_model)``, read
        with plain file reads (not through a memory map, so the pages read do not stay in this
        process's resident memory).

        Raises
        ------
        ValueError
            A range outside ``0 … n_samples``.
        OSError
            The file is shorter than its header says (truncated since it was verified).
        """
        n = int(self.shape[0])
        if not (0 <= start <= stop <= n):
            raise ValueError(f"samples {start}:{stop} are outside 0:{n}")
        raw = np.empty((stop - start, *self.shape[1:]), dtype=_NPY_DTYPE[self.dtype])
        view = memoryview(raw.reshape(-1).view(np.uint8))
        pos, want = 0, len(view)
        base = self.offset + start * self.sample_bytes
        with open(self.path, "rb", buffering=0) as f:
            f.seek(base)
            while pos < want:
                got = f.readinto(view[pos : pos + (1 << 26)])
                if not got:
                    raise OSError(f"{self.path} ends after {base + pos} bytes: it was truncated")
                pos += got
        if self.dtype == "float32" and out is None:
            return raw
        block = from_store(raw, self.dtype)
        if out is not None:
            out[...] = block
            return out
        return block


class HalfStoreArray:
    """A read-only, float32 view of an entry stored in half precision (float16 or bfloat16).

    It behaves as the float32 array ``(n_samples, n_sites, d_model)`` would where the course
    reads one: ``shape``, ``dtype`` (float32), ``len``, indexing (``acts[:, 3]``, ``acts[10:20]``
    return float32 ndarrays) and ``np.asarray(acts)`` (the whole array, upcast block by block).
    No 16-bit value ever reaches an analysis. Memory: indexing upcasts only what it selects;
    ``np.asarray`` allocates the whole float32 array, so analyses that must stay small read
    :meth:`tdcourse.capture.Activations.blocks` instead.
    """

    def __init__(self, source: StoreFile):
        self._source = source
        self._raw = source.memmap()

    shape = property(lambda self: tuple(self._raw.shape))
    ndim = property(lambda self: 3)
    dtype = property(lambda self: np.dtype(np.float32))
    size = property(lambda self: int(np.prod(self._raw.shape)))
    nbytes = property(lambda self: 4 * self.size)
    store_dtype = property(lambda self: self._source.dtype)

    def __len__(self) -> int:
        return int(self._raw.shape[0])

    def __getitem__(self, key) -> np.ndarray:
        return from_store(self._raw[key], self._source.dtype)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, dtype=np.float32)
        step = max(1, (64 << 20) // max(1, self._source.sample_bytes * 2))
        for start in range(0, len(self), step):
            out[start : start + step] = from_store(self._raw[start : start + step], self._source.dtype)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __setitem__(self, key, value):
        raise ValueError("the cached activations are read-only")

    def __getattr__(self, name):
        # Any other ndarray method (acts.mean(0), acts.reshape(...), np.mean(acts)) works on the
        # whole array upcast to float32 (correct, and as large as the float32 array would be).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(np.asarray(self), name)

    def __repr__(self) -> str:
        return f"HalfStoreArray(shape={self.shape}, stored as {self._source.dtype}, read as float32)"


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


class EntryWriter:
    """Write one cache entry along the sample axis while a capture runs, then install it.

    The array's file is allocated at its full size in a temporary folder inside the cache
    (a disk that cannot hold it fails now, not after an hour of capture), each block of
    samples is converted to the store's dtype, checked and written at its offset, and the
    checksum is streamed over the bytes in file order (no second pass over the file).
    :meth:`commit` writes ``meta.json`` and renames the folder into place under the entry's
    lock; leaving the ``with`` block on an error removes the temporary folder. The memory it
    holds is one block: a capture's peak memory does not grow with the number of samples.

    Parameters
    ----------
    meta : dict
        The entry's key (:func:`entry_meta`).
    shape : tuple of int
        ``(n_samples, n_sites, d_model)``.
    sites : list of str, length n_sites
    texts : list of str, length n_samples
    store_dtype : {"float32", "float16", "bfloat16"}
        The dtype of the file. A half store is refused block by block where a value does
        not fit (float16 overflows beyond 65504: the message says to use bfloat16).
    exact : bool
        The store must reproduce the values exactly (a half store of values computed in that
        very dtype): each block is read back and compared, and a difference is an error, never
        a silently rounded entry.
    info : dict or None
        JSON-able facts about how the capture was made that are not part of the key (the
        engine, the backend, the batch size), kept in the record as ``"capture"``.

    Raises
    ------
    ValueError
        ``sites`` / ``texts`` do not match ``shape``, ``meta`` lacks a field, an unknown
        ``store_dtype``; on :meth:`write`: a block of the wrong shape, out of order, with NaN
        or inf (after conversion), or not exact when ``exact``.
    CacheError
        The cache cannot be written (no space, read-only, ...).

    Examples
    --------
    >>> with EntryWriter(meta, (n, 2 * L, d), sites, texts) as w:   # doctest: +SKIP
    ...     for block in blocks:
    ...         w.write(block)
    ...     path = w.commit()
    """

    def __init__(self, meta: dict[str, Any], shape: tuple, sites: list[str], texts: list[str],
                 store_dtype: str = "float32", exact: bool = False, info: dict[str, Any] | None = None):
        self.store_dtype = _check_store_dtype(store_dtype)
        shape = tuple(int(x) for x in shape)
        if len(shape) != 3 or min(shape) < 1 or len(sites) != shape[1] or len(texts) != shape[0]:
            raise ValueError(f"sites ({len(sites)}) and texts ({len(texts)}) must match the shape {shape} "
                             "(n_samples, n_sites, d_model), none of them 0")
        missing = [k for k in _REQUIRED_META if k not in meta]
        if missing:
            raise ValueError(f"meta lacks {missing}")
        bad = meta_problem(meta)
        if bad:
            raise ValueError(bad)
        if meta.get("store_dtype", self.store_dtype) != self.store_dtype:
            raise ValueError(f"meta names the store dtype {meta['store_dtype']!r} and the writer {self.store_dtype!r}")
        self.meta, self.shape, self.sites, self.texts = meta, shape, list(sites), list(texts)
        self.exact, self.info = bool(exact), dict(info or {})
        self.dtype = _NPY_DTYPE[self.store_dtype]
        folder = activations_dir()
        clean_stale_temporaries(folder)
        self.target = folder / _entry_name(meta)
        self.tmp = folder / _tmp_name()
        self.algo = _default_algo()
        self.written = 0
        self._fd: int | None = None
        header = _npy_header(shape, self.dtype)
        self.offset = len(header)
        self.sample_bytes = shape[1] * shape[2] * self.dtype.itemsize
        size = self.offset + shape[0] * self.sample_bytes
        try:
            self.tmp.mkdir()
            self._fd = os.open(self.tmp / "acts.npy", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(self._fd, header)
            self._allocate(size)
        except OSError as err:
            self.abort()
            raise CacheError(f"Could not write the cache entry {self.target} ({err.strerror or err}): it needs "
                             f"{size / 2**30:.2f} GiB. Free some space or choose another cache folder. "
                             f"{env.cache_hint()}") from err
        self._hash = _hasher(self.algo)
        self._hash.update(header)

    def _allocate(self, size: int) -> None:
        """Reserve the file's blocks now (``posix_fallocate``), else extend it (sparse)."""
        try:
            os.posix_fallocate(self._fd, 0, size)
        except (AttributeError, OSError) as err:  # no fallocate here (macOS, some filesystems)
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise
            os.ftruncate(self._fd, size)

    def __enter__(self) -> "EntryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.abort()

    def __setitem__(self, key, block) -> None:
        """``writer[a:b] = block``: as :meth:`write`, with ``a`` the next sample to write."""
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise ValueError("an entry is written by slices of samples, in order: writer[a:b] = block")
        start = self.written if key.start is None else int(key.start)
        if start != self.written:
            raise ValueError(f"samples must be written in order: the next is {self.written}, got {start}")
        block = np.asarray(block)
        stop = self.shape[0] if key.stop is None else min(int(key.stop), self.shape[0])  # numpy's clipping
        if stop - start != len(block):
            raise ValueError(f"the slice {start}:{key.stop} holds {stop - start} samples, the block {len(block)}")
        self.write(block)

    def write(self, block: np.ndarray) -> None:
        """Append samples: ``block`` of shape ``(b, n_sites, d_model)`` (float32, or what converts to it).

        Raises
        ------
        ValueError
            Wrong shape, more samples than the entry holds, NaN or inf after conversion (a
            float16 store of values beyond 65504), or a value changed by an ``exact`` store.
        CacheError
            The disk refused the write.
        """
        if self._fd is None:
            raise ValueError("this writer is closed")
        block = np.asarray(block)
        if block.ndim != 3 or block.shape[1:] != self.shape[1:]:
            raise ValueError(f"a block must have shape (b, {self.shape[1]}, {self.shape[2]}), got {block.shape}")
        if self.written + len(block) > self.shape[0]:
            raise ValueError(f"the entry holds {self.shape[0]} samples; {self.written + len(block)} were written")
        raw = to_store(block, self.store_dtype)
        if not _finite_raw(raw, self.store_dtype):
            rows = np.nonzero(~np.isfinite(from_store(raw, self.store_dtype)).reshape(len(raw), -1).all(axis=1))[0]
            why = (f" ({self.store_dtype} holds values up to 65504: store in bfloat16 or float32 instead)"
                   if self.store_dtype == "float16" and np.isfinite(block[rows[0]]).all() else "")
            raise ValueError(f"sample {self.written + int(rows[0])} holds NaN or inf in the {self.store_dtype} "
                             f"store{why}; nothing was cached.")
        if self.exact and self.store_dtype != "float32" and not np.array_equal(from_store(raw, self.store_dtype), block):
            raise ValueError(f"the values are not exactly representable in {self.store_dtype}, although the model "
                             "computed in it: store them in float32 (store_dtype='float32').")
        data = memoryview(raw.reshape(-1).view(np.uint8))
        pos, where = 0, self.offset + self.written * self.sample_bytes
        try:
            while pos < len(data):
                pos += os.pwrite(self._fd, data[pos : pos + (1 << 26)], where + pos)
        except OSError as err:
            self.abort()
            raise CacheError(f"Could not write the cache entry {self.target} ({err.strerror or err}). "
                             f"Free some space or choose another cache folder. {env.cache_hint()}") from err
        self._hash.update(data)
        self.written += len(block)

    def commit(self) -> Path:
        """Write ``meta.json`` and install the entry (replacing an older one of the same key).

        Returns
        -------
        pathlib.Path
            The entry's folder.

        Raises
        ------
        ValueError
            Fewer samples were written than the entry holds.
        CacheError
            The cache cannot be written.
        """
        if self._fd is None:
            raise ValueError("this writer is closed")
        if self.written != self.shape[0]:
            raise ValueError(f"only {self.written} of {self.shape[0]} samples were written")
        record = {
            "meta": self.meta,
            "key": cache_key(self.meta),
            "shape": list(self.shape),
            "sites": self.sites,
            "texts": self.texts,
            "checksum": {"algorithm": self.algo, "hex": self._hash.hexdigest()},
            "store": {"dtype": self.store_dtype, "layout": "npy"},
            "capture": self.info,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        try:
            os.close(self._fd)
            self._fd = None
            (self.tmp / "meta.json").write_text(json.dumps(record, indent=1))
            _install(self.tmp, self.target)
        except OSError as err:
            self.abort()
            raise CacheError(f"Could not write the cache entry {self.target} ({err.strerror or err}). Free some "
                             f"space or choose another cache folder. {env.cache_hint()}") from err
        return self.target

    def abort(self) -> None:
        """Close the file and remove the temporary folder (nothing is installed). Idempotent."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)


def write_entry(acts: np.ndarray, sites: list[str], texts: list[str], meta: dict[str, Any],
                store_dtype: str = "float32", info: dict[str, Any] | None = None) -> Path:
    """Write one cache entry atomically and return its folder.

    The entry is written into a temporary folder inside the cache, checksummed, then renamed
    into place under the entry's lock, replacing an older entry of the same key. Concurrent
    writes of one key all succeed; a reader sees the whole old or the whole new entry. Stale
    temporary folders of killed writes are removed first (:func:`clean_stale_temporaries`).
    The array is not checked for NaN here: :func:`tdcourse.capture.save_activations` does that
    before it calls this. A capture writes its entry batch by batch instead (:class:`EntryWriter`).

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
        Stored as C-ordered float32 (or ``store_dtype``), written in blocks of about 64 MiB.
    sites : list of str, length n_sites
    texts : list of str, length n_samples
    meta : dict
        The entry's key (:func:`entry_meta`).
    store_dtype : {"float32", "float16", "bfloat16"}
    info : dict or None
        Kept in the record as ``"capture"`` (see :class:`EntryWriter`).

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
    arr = acts if isinstance(acts, (np.ndarray, HalfStoreArray)) else np.asarray(acts)
    if arr.ndim != 3 or len(sites) != arr.shape[1] or len(texts) != arr.shape[0]:
        raise ValueError(f"sites ({len(sites)}) and texts ({len(texts)}) must match acts' shape {arr.shape}")
    step = max(1, (64 << 20) // max(1, 4 * arr.shape[1] * arr.shape[2]))
    with EntryWriter(meta, arr.shape, sites, texts, store_dtype=store_dtype, info=info) as w:
        for start in range(0, arr.shape[0], step):
            w.write(arr[start : start + step])
        return w.commit()


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


def _open_npy(npy: Path, store_dtype: str = "float32") -> tuple[int, tuple]:
    """Check a ``.npy`` file's header against its size; return ``(header bytes, shape)``.

    Nothing is allocated from the header's numbers before the file's size confirms them: a
    damaged header must not ask for an absurd array (a MemoryError, or all the machine's RAM).
    """
    want_dtype = _NPY_DTYPE[store_dtype]
    with open(npy, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        header_len = f.tell()
        if fortran or dtype != want_dtype:
            what = "float32" if store_dtype == "float32" else f"{store_dtype} (stored as {want_dtype})"
            raise ValueError(f"expected a C-ordered little-endian {what} array, got {dtype} (fortran={fortran})")
        if len(shape) != 3 or not all(isinstance(x, int) and x >= 0 for x in shape):
            raise ValueError(f"the header holds shape {shape}, not (n_samples, n_sites, d_model)")
        want = header_len + want_dtype.itemsize * int(np.prod(shape, dtype=object))
        have = os.fstat(f.fileno()).st_size
    if have < want:
        raise ValueError(f"the header's shape {tuple(shape)} needs {want} bytes and the file has {have}: "
                         "the file is truncated or its header is damaged")
    if have > want:
        raise ValueError("the file is longer than its header says")
    return header_len, tuple(shape)


def _scan_npy(source: StoreFile, algo: str | None, block_bytes: int = 16 << 20) -> tuple[str | None, bool]:
    """One pass over the file in blocks of samples: its checksum (when ``algo`` is given) and
    whether every value is finite. Memory: one block, read with plain reads (no memory map)."""
    h = _hasher(algo) if algo else None
    finite = True
    per = max(1, source.sample_bytes)
    step = max(1, block_bytes // per)
    n = int(source.shape[0])
    dtype = _NPY_DTYPE[source.dtype]
    buf = np.empty(step * per, dtype=np.uint8)
    with open(source.path, "rb", buffering=0) as f:
        head = f.read(source.offset)
        if h is not None:
            h.update(head)
        for start in range(0, n, step):
            count = min(step, n - start) * per
            view = memoryview(buf[:count])
            pos = 0
            while pos < count:
                got = f.readinto(view[pos:])
                if not got:
                    raise ValueError(f"the file ends after {source.offset + start * per + pos} bytes, "
                                     f"{source.offset + n * per} expected")
                pos += got
            if h is not None:
                h.update(view)
            if finite and not _finite_raw(buf[:count].view(dtype), source.dtype):
                finite = False
        if f.read(1):
            raise ValueError("the file is longer than its header says")
    return (h.hexdigest() if h is not None else None), finite


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

    The checksum of ``acts.npy`` is computed in one streamed pass over the file. A file
    verified once by this process, unchanged since (same inode, size and modification time),
    is not hashed again: a chapter that reads the same entry twice pays the hash once. Old
    entries (one float32 ``acts.npy``, no ``"store"`` in the record) read as before.

    Parameters
    ----------
    path : pathlib.Path
        The entry's folder.
    expect_meta : dict or None
        The metadata the caller asked for; the entry must hold exactly this.
    verify : bool
        Check the checksum and that every value is finite (default). Without it only the
        header is checked against the file's size.
    check : callable or None
        ``check(acts, sites)`` returns a sentence naming where the NaN or inf are (called only
        when the streamed pass found one). None: :func:`_nonfinite_problem`.

    Returns
    -------
    Entry
        ``acts`` of shape ``(n_samples, n_sites, d_model)``, float32, memory-mapped and
        read-only (a half store: a :class:`HalfStoreArray` that upcasts what is read); sites,
        texts, meta, path, info, source. Nothing of the array is loaded into RAM here: the
        checksum and the NaN check stream over the file in blocks of 16 MiB.

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
        store = record.get("store") if isinstance(record.get("store"), dict) else {"dtype": "float32"}
        store_dtype = store.get("dtype")
        if store_dtype not in STORE_DTYPES or meta.get("store_dtype", store_dtype) != store_dtype:
            raise CacheError(f"{path / 'meta.json'} names the store dtype {store_dtype!r} (key: "
                             f"{meta.get('store_dtype')!r}), not one of {list(STORE_DTYPES)}. {rebuild}")
        npy = path / "acts.npy"
        try:
            offset, npy_shape = _open_npy(npy, store_dtype)
            source = StoreFile(path=npy, offset=offset, shape=npy_shape, dtype=store_dtype)
            if list(npy_shape) != shape or npy_shape[1] != len(sites) or npy_shape[0] != len(texts):
                raise CacheError(f"{npy} has shape {npy_shape}, its metadata says {shape}. {rebuild}")
            key = _stat_key(npy, checksum[1]) if (verify and checksum) else None
            hash_now = verify and (key is None or key not in _VERIFIED)
            digest, finite = _scan_npy(source, checksum[0]) if hash_now else (None, True)
            acts = source.memmap() if store_dtype == "float32" else HalfStoreArray(source)
        except (OSError, ValueError) as err:
            raise CacheError(f"{npy} is missing, truncated or unreadable ({err}). {rebuild}") from err
    if hash_now and digest != checksum[1]:
        raise CacheError(f"{npy} is corrupt or truncated (checksum mismatch). {rebuild}")
    if hash_now:
        if not finite:
            problem = (check or _nonfinite_problem)(np.asarray(acts), list(sites))
            raise CacheError(f"{npy}: {problem or 'holds NaN or inf.'} {rebuild}")
        if key is not None:
            _VERIFIED.add(key)
    info = {"capture": record["capture"] if isinstance(record.get("capture"), dict) else {},
            "store": {"dtype": store_dtype, "layout": "npy"}}
    return Entry(acts=acts, sites=list(sites), texts=list(texts), meta=meta, path=path, info=info, source=source)


def entry_meta(spec: ModelSpec, recipe: SampleRecipe, data_sha256: str, ids_sha256: str,
               store_dtype: str = "float32") -> dict[str, Any]:
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
    store_dtype : {"float32", "float16", "bfloat16"}
        The dtype the array is stored in. Part of the key only when it changes the values
        (:func:`store_is_exact`): a bfloat16 store of a model computed in bfloat16 holds the
        very values a float32 store would, and shares its key.

    Returns
    -------
    dict
        JSON-able; :func:`cache_key` of it names the entry. Keys of float32 stores are the
        ones every earlier tdcourse wrote.
    """
    meta = {
        "format_version": FORMAT_VERSION,
        "model": spec.to_dict(),
        "recipe": recipe.to_dict(),
        "data_sha256": data_sha256,
        "input_ids_sha256": ids_sha256,
        "sites": list(SITE_KINDS),
        "position": "last",
    }
    if not store_is_exact(_check_store_dtype(store_dtype), spec.dtype, spec.quant):
        meta["store_dtype"] = store_dtype
    return meta


def store_is_exact(store_dtype: str, compute_dtype: str, quant: str = "none") -> bool:
    """Whether a store in ``store_dtype`` keeps every value a model computing in
    ``compute_dtype`` writes to its residual stream.

    float32 keeps every value; a half store keeps the values of a model whose residual stream
    is in that same half dtype (the hidden states are that dtype: storing them is a copy). A
    4-bit model computes in its compute dtype, so the same rule holds.
    """
    return store_dtype == "float32" or store_dtype == compute_dtype


def ids_digest(ids: list[list[int]]) -> str:
    """SHA-256 (hex) of the samples' token ids, as compact JSON."""
    return hashlib.sha256(json.dumps(ids, separators=(",", ":")).encode()).hexdigest()


def _data_digest(recipe: SampleRecipe) -> str | None:
    """The ``data_sha256`` of ``recipe``'s samples, from the text alone (no tokenizer); None
    when the split is not shipped and cannot be read here (the train split offline)."""
    try:
        lines = load_wikitext(split=recipe.split)
    except (RuntimeError, OSError):
        if recipe.split == "test":
            raise
        return None
    chosen = body_lines(lines, recipe.min_chars, recipe.max_chars)[: recipe.n]
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
    store_dtype: str | None = None,
    any_store: bool = False,
) -> list[tuple[Path, dict[str, Any]]]:
    """Cached entries of ``model`` on ``recipe``'s samples, whatever precision captured them.

    An entry matches when its model name (or source), its recipe (all fields, ``n`` and the
    split included), its data hash and its format version are the ones asked, and its
    ``init`` / ``seed`` / ``quant`` / ``dtype`` too where those are given (None: any). Entries
    of another recipe, N or init never match. Entries whose store rounded the values (a
    ``"store_dtype"`` in their key) match only when that ``store_dtype`` is asked (or
    ``any_store``: every store, as an export wants). When the
    recipe's split is not shipped and cannot be read here (the train split offline), the
    data hash is not compared: the recipe names the split.

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
                or (data_sha256 is not None and m.get("data_sha256") != data_sha256)
                or m.get("sites") != list(SITE_KINDS)
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
        if not any_store and m.get("store_dtype") not in (None, store_dtype):
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
