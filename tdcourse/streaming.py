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

from .store import HalfStoreArray

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
    part = acts[key]
    if not is_mapped(acts):
        return np.asarray(part) if dtype is None else np.array(part, dtype=dtype, copy=True)
    out = np.array(part, dtype=dtype, copy=True)
    release(acts)
    return out


def sample_blocks(n_samples: int, per_sample_bytes: int, max_bytes: int | None = None) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``0 … n_samples`` in order, each at most ``max_bytes``
    (default :data:`BLOCK_BYTES`) of ``per_sample_bytes`` per sample (at least one sample)."""
    step = max(1, int(BLOCK_BYTES if max_bytes is None else max_bytes) // max(1, int(per_sample_bytes)))
    return [(i, min(i + step, n_samples)) for i in range(0, n_samples, step)]


def site_means(acts: Any, max_bytes: int | None = None) -> np.ndarray:
    """Mean over samples of every unit at every site, float64, in one pass of sample blocks.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model), or HalfStoreArray
    max_bytes : int, optional
        Bytes of one block, counted in float64 (default :data:`BLOCK_BYTES`).

    Returns
    -------
    ndarray of shape (n_sites, d_model)
        Equals ``acts.astype(np.float64).mean(0)`` to float64 rounding (the sum runs block by
        block).
    """
    n, n_sites, d = acts.shape
    total = np.zeros((n_sites, d))
    for i0, i1 in sample_blocks(n, n_sites * d * 8, max_bytes):
        total += read(acts, np.s_[i0:i1]).sum(0, dtype=np.float64)
    return total / n
