"""What every ``check_…`` helper shares: run a learner's function on fixed cases, compare with
the known answer, and print one line per case (✓ / ✗ with the reason). Never raises on a
learner's bug: the bug is reported.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["Case", "run_case", "report", "agreement"]

#: (what the case is, whether it passed, why not)
Case = tuple[str, bool, str]


def run_case(desc: str, fn: Callable, args: tuple, want: np.ndarray, rtol: float = 1e-6, atol: float = 1e-9,
             mistakes: Sequence[tuple[str, np.ndarray]] = ()) -> Case:
    """Call ``fn(*args)`` and compare it with ``want`` (shape and values, NaN equal to NaN).

    ``mistakes``: optional ``(what, wrong answer)`` pairs, the values the usual mistakes give on
    these arguments; when the learner's result matches one of them (shape and values, same
    tolerances), the message names that mistake instead of listing numbers. Without it the
    function behaves as before.
    """
    try:
        got = np.asarray(fn(*args), dtype=float)
    except Exception as err:  # a learner's bug is reported, not raised
        return desc, False, f"raised {type(err).__name__}: {err}"
    want = np.asarray(want, dtype=float)
    ok = got.shape == want.shape and np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    if ok:
        return desc, True, ""
    for what, wrong in mistakes:
        wrong = np.asarray(wrong, dtype=float)
        if got.shape == wrong.shape and np.allclose(got, wrong, rtol=rtol, atol=atol, equal_nan=True):
            return desc, False, f"this matches a known mistake: {what}"
    if got.shape != want.shape:
        return desc, False, f"shape {got.shape}, expected {want.shape}"
    return desc, False, (f"expected {np.round(want, 4).ravel()[:4].tolist()}…, "
                         f"got {np.round(got, 4).ravel()[:4].tolist()}…")


def report(cases: Sequence[Case], width: int = 68) -> bool:
    """Print one ✓ / ✗ line per case and a summary; return whether all passed.

    Each line is wrapped at ``width`` characters (later lines indented by two spaces), as
    :func:`tdcourse.verdicts.say` does, so that it fits the book's content column.
    """
    import textwrap

    ok = all(passed for _, passed, _ in cases)
    for desc, passed, msg in cases:
        line = ("✓ " if passed else "✗ ") + desc + (f": {msg}" if msg and not passed else "")
        print(textwrap.fill(line, width, subsequent_indent="  "))
    print("All checks passed." if ok else "Some checks failed: compare with the definition above.")
    return ok


def agreement(yours, library) -> str:
    """How closely a learner's result matches the library's, in words for a printed line.

    Parameters
    ----------
    yours, library : array_like of the same shape
        The learner's values and the library's on the same input.

    Returns
    -------
    str
        ``"agree exactly"``, ``"agree to N significant digits"`` (N from the largest relative
        difference, at most 15; a value below 1e-12 of the largest counts relative to that), or ``"differ: shapes (…) and (…)"`` /
        ``"differ: largest relative difference X"``; NaN counts as equal to NaN.
    """
    a = np.asarray(yours, dtype=float)
    b = np.asarray(library, dtype=float)
    if a.shape != b.shape:
        return f"differ: shapes {a.shape} and {b.shape}"
    same_nan = np.isnan(a) & np.isnan(b)
    if np.any(np.isnan(a) != np.isnan(b)):
        return "differ: NaN in one where the other has a number"
    a, b = a[~same_nan], b[~same_nan]
    if a.size == 0 or np.array_equal(a, b):
        return "agree exactly"
    scale = np.maximum(np.abs(b), max(1e-12 * float(np.abs(b).max()), np.finfo(float).tiny))
    err = float(np.max(np.abs(a - b) / scale))
    if err >= 1e-3:
        return f"differ: largest relative difference {err:.2g}"
    return f"agree to {min(15, int(np.floor(-np.log10(err))))} significant digits"
