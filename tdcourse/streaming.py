"""Reading a capture in bounded memory: blocks of samples, and the memory map's pages given back.

A cached capture is a read-only memory map (:mod:`tdcourse.store`). Opening it loads nothing,
but every page an analysis reads through the map stays in the process's resident memory
(RSS) until the map is closed: a statistic that reads a 1.9 GB capture once, however small
its own working memory, ends with a 1.9 GB process. The analyses therefore read a capture
through :func:`read`, which copies what it selects and then gives the map's pages back to the
operating system (``madvise(MADV_DONTNEED)``; the file's data stays in the page cache, so
reading it again costs a memory copy, not a disk read). Their resident memory is then their
working memory.

* :func:`release`: give back the pages of the memory map under an array (nothing for an array
  held in memory);
* :func:`read`: ``acts[key]`` as a new array, the map's pages given back;
* :func:`sample_blocks`: the sample ranges of a pass over ``n`` samples in bounded memory;
* :func:`site_means`: the mean state of every unit at every site, in one pass of blocks.

Arrays held in memory (``np.ndarray`` not backed by a map) pass through unchanged: the same
code streams a cached capture and a learner's array.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

from .store import HalfStoreArray, from_store

__all__ = ["BLOCK_BYTES", "is_mapped", "read", "release", "sample_blocks", "site_means"]

#: Default bytes of one block of samples, in float64, for a streamed pass.
BLOCK_BYTES = 32 << 20

_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


def _mapping(acts: Any) -> mmap.mmap | None:
    """The ``mmap`` under ``acts`` when it is a map of a file that stays intact when its pages
    are dropped (read-only or shared), else None."""
    if isinstance(acts, HalfStoreArray):
        acts = acts._raw
    obj, depth = acts, 0
    while obj is not None and depth < 16:
        if isinstance(obj, np.memmap):
            mm = getattr(obj, "_mmap", None)
            # "c" (copy-on-write) maps hold private edits that MADV_DONTNEED would discard
            return mm if isinstance(mm, mmap.mmap) and getattr(obj, "mode", "c") in ("r", "r+", "w+") else None
        obj, depth = getattr(obj, "base", None), depth + 1
    return None


def is_mapped(acts: Any) -> bool:
    """Whether ``acts`` is read through a memory map of a file (a cached capture)."""
    return _mapping(acts) is not None


def release(acts: Any) -> None:
    """Give back the resident pages of the memory map under ``acts`` (nothing otherwise).

    The values stay readable (a later read maps them again from the page cache); only this
    process's resident memory shrinks. Safe for read-only and shared maps, which are the only
    ones it touches; does nothing on platforms without ``madvise`` (Windows).

    Parameters
    ----------
    acts : ndarray or tdcourse.store.HalfStoreArray
    """
    mm = _mapping(acts)
    if mm is None or _DONTNEED is None or not hasattr(mm, "madvise"):
        return
    try:
        mm.madvise(_DONTNEED)
    except (OSError, ValueError):  # a closed map, or a kernel that refuses: memory only, never results
        pass


def read(acts: Any, key: Any, dtype: Any = None) -> np.ndarray:
    """``acts[key]`` as an array that does not keep the memory map's pages resident.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model), or HalfStoreArray
    key : index
        Any numpy index (``np.s_[10:20, 3:5]``, an index array, ...).
    dtype : numpy dtype, optional
        Convert to it (e.g. ``np.float64``); default: as stored (a half store reads as float32).

    Returns
    -------
    ndarray
        A new array (the caller may modify it) when ``dtype`` is given or ``acts`` is
        memory-mapped (its pages are then given back, see :func:`release`); otherwise, for an
        array held in memory, a view where numpy gives one (no copy: read it, do not write it).
    """
    if not is_mapped(acts):
        part = acts[key]
        return np.asarray(part) if dtype is None else np.array(part, dtype=dtype, copy=True)
    out = _read_file(acts, key)
    if out is None:  # an index the plain reads below do not cover: through the map, then give it back
        out = np.array(acts[key], copy=True)
        release(acts)
    return out if dtype is None else out.astype(dtype, copy=False)


def _file_of(acts: Any) -> tuple[str, int, tuple, np.dtype, str] | None:
    """Where a memory-mapped array lies: ``(path, file offset of its first element, strides,
    stored dtype, store dtype name)``; None when it is not a map of a file with contiguous rows."""
    half = isinstance(acts, HalfStoreArray)
    raw = acts._raw if half else acts
    obj, depth = raw, 0
    while obj is not None and not isinstance(obj, np.memmap) and depth < 16:
        obj, depth = getattr(obj, "base", None), depth + 1
    if not isinstance(obj, np.memmap) or getattr(obj, "filename", None) is None or raw.ndim != 3:
        return None
    if raw.strides[2] != raw.itemsize:
        return None
    delta = raw.__array_interface__["data"][0] - obj.__array_interface__["data"][0]
    return obj.filename, int(obj.offset) + int(delta), raw.strides, raw.dtype, acts.store_dtype if half else ""


def _rows(key: Any, n: int) -> np.ndarray | None:
    """A 1-D index of samples (a slice of step 1 or a 1-D integer array), or None."""
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        return np.arange(start, stop) if step == 1 else None
    arr = np.asarray(key)
    if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer) and (arr.size == 0 or (arr.min() >= -n and arr.max() < n)):
        return arr % n if arr.size else arr.astype(np.int64)
    return None


def _read_file(acts: Any, key: Any) -> np.ndarray | None:
    """``acts[key]`` read with plain file reads (the page cache, not this process's memory), for
    the indexes the streamed statistics use: samples (a slice or an index array) with all sites,
    a slice of sites or one site; and ``(rows, sites)`` gathers of integer arrays. None for any
    other index.

    Why not the memory map: a read of a few sites of every sample maps, with the kernel's
    fault-around and large page-cache folios, far more of the file than it reads; those pages
    count in the process's resident memory until given back."""
    where = _file_of(acts)
    if where is None:
        return None
    path, base, (s0, s1, _), stored, store_dtype = where
    n, n_sites, d = (int(x) for x in acts.shape)
    key = key if isinstance(key, tuple) else (key,)
    if len(key) > 2 or any(k is Ellipsis or k is None for k in key):
        return None
    row_bytes = d * stored.itemsize
    if len(key) == 2 and not isinstance(key[1], slice) and np.ndim(key[1]) > 0:  # (rows, sites) gather
        rows, sites = np.asarray(key[0]), np.asarray(key[1])
        if not (np.issubdtype(rows.dtype, np.integer) and np.issubdtype(sites.dtype, np.integer)):
            return None
        if any(a.size and (a.min() < -m or a.max() >= m) for a, m in ((rows, n), (sites, n_sites))):
            return None  # out of bounds: numpy's own IndexError
        try:
            rows, sites = np.broadcast_arrays(rows % n, sites % n_sites)
        except ValueError:
            return None
        out = np.empty(rows.shape + (d,), dtype=stored)
        flat = out.reshape(-1, d)
        offsets = base + rows.reshape(-1).astype(np.int64) * s0 + sites.reshape(-1).astype(np.int64) * s1
        _pread_into(path, [(int(o), flat[i]) for i, o in enumerate(offsets)])
        return from_store(out, store_dtype) if store_dtype else out
    rows = _rows(key[0], n)
    if rows is None:
        return None
    if len(key) == 1:
        j0, nj, squeeze = 0, n_sites, False
    elif isinstance(key[1], slice):
        j0, j1, step = key[1].indices(n_sites)
        if step != 1:
            return None
        nj, squeeze = max(0, j1 - j0), False
    elif isinstance(key[1], (int, np.integer)):
        if not -n_sites <= int(key[1]) < n_sites:
            return None
        j0, nj, squeeze = int(key[1]) % n_sites, 1, True
    else:
        return None
    out = np.empty((len(rows), nj, d), dtype=stored)
    if nj and len(rows):
        jobs = []
        if s1 == row_bytes:  # the sites of one sample are contiguous: one read per sample
            whole = s0 == nj * s1 and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows)))
            if whole:  # and the samples too: one read
                jobs.append((base + int(rows[0]) * s0 + j0 * s1, out))
            else:
                jobs.extend((base + int(r) * s0 + j0 * s1, out[i]) for i, r in enumerate(rows))
        else:
            jobs.extend((base + int(r) * s0 + (j0 + j) * s1, out[i, j]) for i, r in enumerate(rows) for j in range(nj))
        _pread_into(path, jobs)
    out = out[:, 0] if squeeze else out
    return from_store(out, store_dtype) if store_dtype else out


def _pread_into(path: str, jobs: list[tuple[int, np.ndarray]]) -> None:
    """Fill each contiguous array of ``jobs`` with the file's bytes at its offset."""
    import os

    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        for offset, arr in jobs:
            view = memoryview(arr.reshape(-1).view(np.uint8))
            pos = 0
            while pos < len(view):
                if hasattr(os, "preadv"):
                    got = os.preadv(fd, [view[pos:]], offset + pos)
                else:  # pragma: no cover - platforms without preadv
                    f.seek(offset + pos)
                    got = f.readinto(view[pos:])
                if not got:
                    raise OSError(f"{path} ends before byte {offset + pos + len(view) - pos}: it was truncated")
                pos += got


def sample_blocks(n_samples: int, per_sample_bytes: int, max_bytes: int | None = None) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``0 … n_samples`` in order, each at most ``max_bytes``
    (default :data:`BLOCK_BYTES`) of ``per_sample_bytes`` per sample (at least one sample)."""
    step = max(1, int(BLOCK_BYTES if max_bytes is None else max_bytes) // max(1, int(per_sample_bytes)))
    return [(i, min(i + step, n_samples)) for i in range(0, n_samples, step)]


def site_means(acts: Any, max_bytes: int | None = None, idx: Any = None) -> np.ndarray:
    """Mean over samples of every unit at every site, float64, in one pass of sample blocks.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model), or HalfStoreArray
    max_bytes : int, optional
        Bytes of one block, counted in float64 (default :data:`BLOCK_BYTES`).
    idx : sequence of int, optional
        The samples to average (default: all), e.g. a held-out split.

    Returns
    -------
    ndarray of shape (n_sites, d_model)
        Equals ``acts[idx].astype(np.float64).mean(0)`` to float64 rounding (the sum runs
        block by block; no copy of the selected samples).

    Raises
    ------
    ValueError
        ``idx`` empty, not whole numbers, or outside ``0 … n_samples − 1``.
    """
    n, n_sites, d = acts.shape
    rows = np.arange(n) if idx is None else np.asarray(idx)
    if rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer) \
            or rows.min() < 0 or rows.max() >= n:
        raise ValueError(f"idx must be a non-empty list of sample indices in 0 … {n - 1}, got {idx!r:.80}")
    total = np.zeros((n_sites, d))
    for i0, i1 in sample_blocks(len(rows), n_sites * d * 8, max_bytes):
        key = np.s_[i0:i1] if idx is None else rows[i0:i1]
        total += read(acts, key).sum(0, dtype=np.float64)
    return total / len(rows)
