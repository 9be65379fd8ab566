"""What every ``check_…`` helper shares: run a learner's function on fixed cases, compare with
the known answer, and print one line per case (✓ / ✗ with the reason). Never raises on a
learner's bug: the bug is reported.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["Case", "run_case", "report"]

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
    if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        return desc, False, (f"expected {np.round(want, 4).ravel()[:4].tolist()}…, "
                             f"got {np.round(got, 4).ravel()[:4].tolist()}…")
    return desc, True, ""


def report(cases: Sequence[Case], width: int | None = None) -> bool:
    """Print one ✓ / ✗ line per case and a summary; return whether all passed.

    ``width``: wrap each case's line at this many characters (later lines indented by two
    spaces), e.g. 68 for the book's page column (see :func:`tdcourse.verdicts.say`); None, the
    default, prints each case on one line.
    """
    import textwrap

    ok = all(passed for _, passed, _ in cases)
    for desc, passed, msg in cases:
        line = ("✓ " if passed else "✗ ") + desc + (f": {msg}" if msg and not passed else "")
        print(textwrap.fill(line, width, subsequent_indent="  ") if width else line)
    print("All checks passed." if ok else "Some checks failed: compare with the definition above.")
    return ok
