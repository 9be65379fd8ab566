"""What every ``check_…`` helper shares: run a learner's function on fixed cases, compare with
the known answer, and print one line per case (✓ / ✗ with the reason). Never raises on a
learner's bug: the bug is reported.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["Case", "run_case", "report", "which_mistake"]

#: Printed lines are wrapped at this many characters (the book's column, as ``verdicts.say``).
WIDTH = 68

#: (what the case is, whether it passed, why not)
Case = tuple[str, bool, str]


def run_case(desc: str, fn: Callable, args: tuple, want: np.ndarray, rtol: float = 1e-6, atol: float = 1e-9) -> Case:
    """Call ``fn(*args)`` and compare it with ``want`` (shape and values, NaN equal to NaN)."""
    try:
        got = np.asarray(fn(*args), dtype=float)
    except Exception as err:  # a learner's bug is reported, not raised
        return desc, False, f"raised {type(err).__name__}: {err}"
    want = np.asarray(want, dtype=float)
    if got.shape != want.shape:
        return desc, False, f"shape {got.shape}, expected {want.shape}"
    close = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    if not close.all():
        if want.ndim == 0:
            return desc, False, f"expected {want:.6g}, got {got:.6g}"
        at = np.unravel_index(int(np.argmin(close)), want.shape)  # the first value that differs
        where = int(at[0]) if len(at) == 1 else tuple(int(i) for i in at)
        return desc, False, (f"expected {np.round(want, 4).ravel()[:4].tolist()}…, "
                             f"got {np.round(got, 4).ravel()[:4].tolist()}…; first difference at index {where}: "
                             f"expected {want[at]:.6g}, got {got[at]:.6g}")
    return desc, True, ""


def report(cases: Sequence[Case], hint: str = "") -> bool:
    """Print one ✓ / ✗ line per case and a summary; return whether all passed.

    ``hint`` (optional) is printed after the summary when a case failed, e.g. the usual
    mistake that gives exactly the learner's answers (:func:`which_mistake`). Lines longer
    than :data:`WIDTH` characters are wrapped (later lines indented by two spaces).
    """
    import textwrap

    def show(text: str) -> None:  # wrapped to fit the book's column, as verdicts.say does
        print(textwrap.fill(text, WIDTH, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False))

    ok = all(passed for _, passed, _ in cases)
    for desc, passed, msg in cases:
        show(("✓ " if passed else "✗ ") + desc + (f": {msg}" if msg and not passed else ""))
    show("All checks passed." if ok else "Some checks failed: compare with the definition above.")
    if hint and not ok:
        show(hint)
    return ok


def which_mistake(fn: Callable, cases: Sequence[tuple], mistakes: Sequence[tuple[str, Callable]],
                  rtol: float = 1e-6, atol: float = 1e-9) -> str | None:
    """Name the usual mistake that gives the learner's answers.

    Parameters
    ----------
    fn : callable
        The learner's function.
    cases : sequence of tuple
        The argument tuples the check called ``fn`` with.
    mistakes : sequence of (description, callable)
        Known wrong versions of the method, each taking the same arguments as ``fn``.

    Returns
    -------
    str or None
        The description of the first mistake whose answer equals ``fn``'s (shape and values, as
        :func:`run_case` compares) on every case, or None (no known mistake fits, or ``fn`` raised).
    """
    try:
        got = [np.asarray(fn(*args), dtype=float) for args in cases]
    except Exception:  # the learner's error is reported by the check itself
        return None
    for desc, wrong in mistakes:
        try:
            want = [np.asarray(wrong(*args), dtype=float) for args in cases]
        except Exception:  # a mistake that cannot run on a case does not fit it
            continue
        if all(g.shape == w.shape and np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
               for g, w in zip(got, want)):
            return desc
    return None
