"""What every ``check_…`` helper shares: run a learner's function on fixed cases, compare with
the known answer, and print one line per case (✓ / ✗ with the reason). Never raises on a
learner's bug: the bug is reported.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["Case", "run_case", "report"]

#: (what the case is, whether it passed, why not)
Case = tuple[str, bool, str]


def run_case(desc: str, fn: Callable, args: tuple, want: np.ndarray, rtol: float = 1e-6, atol: float = 1e-9,
             mistakes: Mapping[str, np.ndarray] | None = None) -> Case:
    """Call ``fn(*args)`` and compare it with ``want`` (shape and values, NaN equal to NaN).

    Parameters
    ----------
    desc : str
        What the case is, in words a learner understands.
    fn : callable
        The learner's function.
    args : tuple
        Its arguments (copies are not made: pass fresh arrays).
    want : array_like
        The right answer.
    rtol, atol : float
        As for :func:`numpy.allclose`.
    mistakes : mapping of str to array_like, optional
        ``{what went wrong and how to fix it: the value that mistake gives}``. When the learner's
        value matches one of them (and not ``want``), that message is the reason printed; a
        mistake whose value equals ``want`` cannot be told apart and is skipped. None (the default):
        the reason names the expected and the returned values, as before this argument existed.

    Returns
    -------
    Case
        ``(desc, passed, why not)``.
    """
    try:
        got = np.asarray(fn(*args), dtype=float)
    except Exception as err:  # a learner's bug is reported, not raised
        return desc, False, f"raised {type(err).__name__}: {err}"
    want = np.asarray(want, dtype=float)
    if got.shape != want.shape:
        return desc, False, f"shape {got.shape}, expected {want.shape}"
    if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        for why, value in (mistakes or {}).items():
            value = np.asarray(value, dtype=float)
            if value.shape == want.shape and not np.allclose(value, want, rtol=rtol, atol=atol, equal_nan=True) \
                    and np.allclose(got, value, rtol=rtol, atol=atol, equal_nan=True):
                return desc, False, why
        return desc, False, (f"expected {np.round(want, 4).ravel()[:4].tolist()}…, "
                             f"got {np.round(got, 4).ravel()[:4].tolist()}…")
    return desc, True, ""


def report(cases: Sequence[Case], width: int | None = None) -> bool:
    """Print one ✓ / ✗ line per case and a summary; return whether all passed.

    Parameters
    ----------
    cases : sequence of Case
        ``(what the case is, whether it passed, why not)``, e.g. from :func:`run_case`.
    width : int or None, default None
        Wrap each case at this many characters, later lines indented by two spaces (68 fits the
        book's content column, as :func:`tdcourse.verdicts.say` does); None prints each case on
        one line, as before this argument existed.

    Returns
    -------
    bool
    """
    import textwrap

    ok = all(passed for _, passed, _ in cases)
    for desc, passed, msg in cases:
        line = ("✓ " if passed else "✗ ") + desc + (f": {msg}" if msg and not passed else "")
        print(line if width is None else textwrap.fill(line, width, subsequent_indent="  ", break_on_hyphens=False))
    print("All checks passed." if ok else "Some checks failed: compare with the definition above.")
    return ok
