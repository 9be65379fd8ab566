"""Matrix products through torch's BLAS: the same speed whichever kernel OpenBLAS picks.

numpy and scipy multiply through OpenBLAS, which picks a kernel for the CPU it finds: its
Haswell kernel on this course's CI machines, its generic one on CPUs it does not know or under
``OPENBLAS_CORETYPE=Prescott`` (CI runs the whole course so once). The generic kernel is 3 to 5
times slower for the analyses' large products: a 576 × 576 complex product takes 38 ms with the
Haswell kernel, 192 ms with the generic one, and 36-51 ms through torch (MKL), whichever
OpenBLAS kernel is in use. :func:`matmul` is ``a @ b`` through torch; the analyses whose time
goes into products (chapter 2's bootstrap passes, chapter 8's Jacobian products) call it.
The values are the same products to rounding (another summation order: last bits only).
:func:`eigvals` is ``np.linalg.eigvals`` through torch (LAPACK's geev in MKL): a 2048 × 2048
real matrix takes 5.0 s either way, against 5.1 s through numpy with the Haswell kernel and 8.9 s
with the generic one; chapter 8 takes one at 4096 × 4096 per run on the 8B-shaped stand-in.
"""

from __future__ import annotations

import numpy as np

__all__ = ["eigvals", "matmul"]


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2-D float32 / float64 / complex128 arrays, through :func:`torch.matmul`.

    Parameters
    ----------
    a : ndarray of shape (m, k)
    b : ndarray of shape (k, n)

    Returns
    -------
    ndarray of shape (m, n)
        numpy's result dtype for ``a @ b`` (a real matrix times a complex one is complex).
        numpy itself where torch is not installed.

    Raises
    ------
    ValueError
        Shapes that do not chain (as numpy would).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul needs (m, k) and (k, n) arrays, got {a.shape} and {b.shape}")
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the course
        return a @ b
    dtype = np.result_type(a, b)
    return (torch.from_numpy(np.asarray(a, dtype=dtype)) @ torch.from_numpy(np.asarray(b, dtype=dtype))).numpy()


def eigvals(a: np.ndarray) -> np.ndarray:
    """The eigenvalues of a square float64 matrix, complex128, through :func:`torch.linalg.eigvals`.

    Parameters
    ----------
    a : ndarray of shape (n, n)

    Returns
    -------
    ndarray of shape (n,), complex128
        In LAPACK's order (as ``np.linalg.eigvals``; both call geev, so a real eigenvalue has an
        imaginary part of exactly 0). numpy itself where torch is not installed.

    Raises
    ------
    ValueError
        Not a square 2-D array.
    """
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"eigvals needs a square (n, n) array, got shape {a.shape}")
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the course
        return np.linalg.eigvals(a).astype(np.complex128)
    return torch.linalg.eigvals(torch.from_numpy(np.asarray(a, dtype=np.float64))).numpy().astype(np.complex128)
