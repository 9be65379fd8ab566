"""Input checks shared by every analysis: the dtype, finiteness, and the smallest run that carries a verdict.

One rule for dtypes, decided here and applied by :func:`tdcourse.capture.check_acts` (the entry
of every analysis of a capture) and :func:`check_array` (every other array a public function
takes):

- ``float32`` and ``float64`` are used as they are;
- integers (and Python lists of numbers) are converted to ``float64``, exactly for magnitudes
  up to 2**53;
- every other dtype is refused with a ``ValueError`` that says how to convert: ``float16``
  (tempting at 8B size: squares and sums of residual states overflow its largest value, 65504,
  and give a NaN or ``inf`` verdict), ``longdouble``, complex numbers, booleans, objects.

Non-finite values (NaN, ``inf``) are refused too: no statistic is computed from them.

The smallest run that carries a verdict is stated by each analysis module as ``MIN_SAMPLES``
and ``MIN_LAYERS`` and checked at its entry with :func:`check_run_size`, in words a learner
understands.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_dtype", "check_array", "check_run_size"]


def check_dtype(arr: np.ndarray, name: str = "acts") -> np.ndarray:
    """``arr`` if it is float32 or float64, integers as float64, else a ``ValueError``.

    Parameters
    ----------
    arr : ndarray
    name : str
        The argument's name, for the message.

    Returns
    -------
    ndarray
        ``arr`` itself (no copy) when float32 or float64.

    Raises
    ------
    ValueError
        Any other dtype (float16, longdouble, complex, bool, object, strings), with how to convert.
    """
    dt = arr.dtype
    if dt == np.float32 or dt == np.float64:
        return arr
    if "." in name:  # an attribute, e.g. run.acts of a (frozen) Activations
        obj, attr = name.rsplit(".", 1)
        fix = f"{obj} = dataclasses.replace({obj}, {attr}={name}.astype(np.float32))"
    else:
        fix = f"{name} = {name}.astype(np.float32)"
    if np.issubdtype(dt, np.integer):
        return arr.astype(np.float64)
    if np.issubdtype(dt, np.floating):
        why = (" (its largest value is 65504: squares and sums of residual states overflow it and give "
               "NaN or inf)") if dt == np.float16 else ""
        raise ValueError(f"{name} has dtype {dt}{why}. The analyses compute in float32 or float64: convert it "
                         f"once, e.g. {fix} (exact for float16 and bfloat16).")
    if dt.kind == "V" and dt.itemsize == 2:  # bfloat16 from ml_dtypes / torch's numpy bridge
        raise ValueError(f"{name} has dtype {dt} (a 16-bit float). The analyses compute in float32 or float64: "
                         f"convert it once, e.g. {fix} (exact).")
    raise ValueError(f"{name} must hold real numbers (float32 or float64), got dtype {dt}")


def check_array(x: Any, name: str = "x", min_ndim: int = 0, finite: bool = True) -> np.ndarray:
    """``x`` as a float32 / float64 array, or a ``ValueError`` that says what is wrong.

    Parameters
    ----------
    x : array-like
    name : str
        The argument's name, for the message.
    min_ndim : int
        The fewest axes ``x`` may have.
    finite : bool
        Refuse NaN and inf (default).

    Returns
    -------
    ndarray
        ``x`` itself when it is already a float32 / float64 array (see :func:`check_dtype`).

    Raises
    ------
    ValueError
        Too few axes, a dtype other than float32 / float64 / integer, or a NaN or inf (the
        message says how many and where the first is).
    """
    arr = np.asarray(x)
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axes, got shape {arr.shape}")
    arr = check_dtype(arr, name)
    if finite and arr.size and not np.isfinite(arr).all():
        bad = ~np.isfinite(arr)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} holds {int(bad.sum())} NaN or inf value(s) (the first at index {first}); "
                         "no statistic is computed from non-finite values. Find the step that made them.")
    return arr


class RunTooSmallError(ValueError):
    """A run with too few layers or samples for an analysis (:func:`check_run_size`). The
    robustness page reads it on an alternative specification as "not run" with its message."""


def check_run_size(acts: np.ndarray, min_samples: int, min_layers: int, analysis: str) -> None:
    """Refuse a run too small to carry the verdict of ``analysis``, in a learner's words.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
        ``n_sites = 2 * n_layers`` (``resid_pre`` and ``resid_mid`` of every layer).
    min_samples : int
        The fewest samples (the course's N) the analysis needs.
    min_layers : int
        The fewest layers (``2 * min_layers`` sites) the analysis needs.
    analysis : str
        What is refused, e.g. ``"Chapter 5's rotation analysis (C9, C10)"``.

    Raises
    ------
    RunTooSmallError
        (a ``ValueError``) Fewer layers or samples than needed; the message says why and what to do.
    """
    n, n_sites = acts.shape[:2]
    n_layers = n_sites // 2
    if n_layers < min_layers:
        raise RunTooSmallError(
            f"Too few layers: {analysis} needs a model with at least {min_layers} layers ({2 * min_layers} sites, "
            f"resid_pre and resid_mid of each), and this one has {n_layers} ({n_sites} sites). A trend or a cycle "
            "along depth cannot be read from so few steps. Use a deeper model (the course's smallest is the 4-layer "
            "stand-in: python -m tdcourse standin --kind 4-layer).")
    if n < min_samples:
        raise RunTooSmallError(
            f"Too few samples: {analysis} needs at least N = {min_samples} samples to carry a verdict, and this run "
            f"has N = {n}. Its intervals and nulls are resampled over samples, so with fewer the verdict would be "
            f"noise. Use more samples (the course's N is 1000: TDCOURSE_N=1000, or n=... in load_runs).")
