"""What every ``check_…`` helper shares: run a learner's function on fixed cases, compare with
the known answer, and print one line per case (✓ / ✗ with the reason). Never raises on a
learner's bug: the bug is reported.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["Case", "NOT_WRITTEN", "run_case", "report", "agreement", "which_mistake", "unwritten", "yours_or",
           "whose", "first_samples", "COMPARE_MIB"]

#: Printed lines are wrapped at this many characters (the book's column, as ``verdicts.say``).
WIDTH = 68

#: How much of a capture (MiB of float32) :func:`first_samples` hands to a learner's function,
#: which works on in-memory copies (often float64, several at once): 200 samples of SmolLM2,
#: 64 at Llama 3.1 8B's shape, 12 at the 70B's.
COMPARE_MIB = 64

#: (what the case is, whether it passed, why not)
Case = tuple[str, bool, str]

#: The reason :func:`run_case` gives when the learner's function returned None (or failed on a
#: None it returned): an exercise's template, whose body is ``...``, is not written yet.
NOT_WRITTEN = "returned None: not written yet (or a `return` is missing)"


def _none_error(err: Exception) -> bool:
    """Whether an error is a template's: ``raise NotImplementedError``, or what its None or ``...``
    raises downstream (``float(None)``, ``x, y = None``…), in the check's code or the learner's."""
    return isinstance(err, NotImplementedError) or (
        isinstance(err, TypeError) and ("NoneType" in str(err) or "'ellipsis'" in str(err)))


def unwritten(outcome) -> bool:
    """Whether one call of a learner's function shows an unfilled template.

    For a ``check_…`` that does not go through :func:`run_case`: pass what the call returned,
    or the exception it raised, and report the case with :data:`NOT_WRITTEN` when this is True
    (:func:`report` then prints one "Not written yet" line).

    Parameters
    ----------
    outcome : object or Exception
        The value the learner's function returned, or the exception the call (or the check's
        code on its value) raised.

    Returns
    -------
    bool
        True for None or ``...`` (a template's body ``...``, or ``return ...``), for
        ``NotImplementedError``, and for a ``TypeError`` about ``NoneType`` or ``'ellipsis'``
        (code choking on such a value, e.g. ``float(None)``).
    """
    if isinstance(outcome, BaseException):
        return _none_error(outcome)
    return outcome is None or outcome is Ellipsis


def run_case(desc: str, fn: Callable, args: tuple, want: np.ndarray, rtol: float = 1e-6, atol: float = 1e-9,
             mistakes: "Mapping[str, np.ndarray] | Sequence[tuple[str, np.ndarray]] | None" = None) -> Case:
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
    mistakes : mapping of str to array_like, or sequence of (str, array_like) pairs, optional
        What the usual mistakes give on these arguments: ``{what went wrong: the value that
        mistake gives}``. When the learner's value matches one of them (and not ``want``), the
        reason printed is that mapping key (write it as the whole reason), or "this matches a known
        mistake: <what>" for pairs; a mistake whose value equals ``want`` is never named. None (the
        default): the reason names the expected and the returned values.

    Returns
    -------
    Case
        ``(desc, passed, why not)``; "why not" starts with :data:`NOT_WRITTEN` when ``fn``
        returned None or ``...``, as an exercise's unfilled template (body ``...``) does, or raised
        ``NotImplementedError`` or a ``TypeError`` about ``NoneType`` or ``'ellipsis'`` (code
        choking on such a value).
    """
    try:
        value = fn(*args)
    except Exception as err:  # a learner's bug is reported, not raised
        if _none_error(err):
            return desc, False, f"{NOT_WRITTEN}; it raised {type(err).__name__}: {err}"
        return desc, False, f"raised {type(err).__name__}: {err}"
    if value is None or value is Ellipsis:  # a template's body `...` or `return ...`
        return desc, False, NOT_WRITTEN
    got = np.asarray(value, dtype=float)
    want = np.asarray(want, dtype=float)
    ok = got.shape == want.shape and np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    if ok:
        return desc, True, ""
    # a mapping's keys are whole reasons; pairs name the mistake ("this matches a known mistake: …")
    named = isinstance(mistakes, Mapping)
    for what, wrong in (mistakes.items() if named else (mistakes or ())):
        wrong = np.asarray(wrong, dtype=float)
        if np.allclose(wrong, want, rtol=rtol, atol=atol, equal_nan=True) if wrong.shape == want.shape else False:
            continue  # a mistake that gives the right answer here cannot be told apart: never named
        if got.shape == wrong.shape and np.allclose(got, wrong, rtol=rtol, atol=atol, equal_nan=True):
            return desc, False, what if named else f"this matches a known mistake: {what}"
    if got.shape != want.shape:
        return desc, False, f"shape {got.shape}, expected {want.shape}"
    close = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    if want.ndim == 0:
        return desc, False, f"expected {want:.6g}, got {got:.6g}"
    at = np.unravel_index(int(np.argmin(close)), want.shape)  # the first value that differs
    where = int(at[0]) if len(at) == 1 else tuple(int(i) for i in at)
    return desc, False, (f"expected {np.round(want, 4).ravel()[:4].tolist()}…, "
                         f"got {np.round(got, 4).ravel()[:4].tolist()}…; first difference at index {where}: "
                         f"expected {want[at]:.6g}, got {got[at]:.6g}")


def report(cases: Sequence[Case], width: int | None = WIDTH, hint: str = "") -> bool:
    """Print one ✓ / ✗ line per case and a summary; return whether all passed.

    Parameters
    ----------
    cases : sequence of Case
        ``(what the case is, whether it passed, why not)``, e.g. from :func:`run_case`.
    width : int or None, default :data:`WIDTH` (68)
        Wrap each line at this many characters, later lines indented by two spaces, as
        :func:`tdcourse.verdicts.say` does (68 fits the book's content column); None prints each
        case on one line.
    hint : str
        Printed after the summary when a case failed, e.g. the usual mistake that gives exactly
        the learner's answers (:func:`which_mistake`).

    Returns
    -------
    bool
        False also when every case failed because the function returned None (an unfilled
        template): then one line says the function is not written yet, in place of the cases.
    """
    import textwrap

    def show(text: str) -> None:
        print(text if width is None else
              textwrap.fill(text, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False))

    ok = all(passed for _, passed, _ in cases)
    if cases and all(not passed and msg.startswith(NOT_WRITTEN) for _, passed, msg in cases):
        show("Not written yet: your function returns None on every case (its body is still `...`, or "
             "a `return` is missing). Write it, then run this cell again.")
        return False
    for desc, passed, msg in cases:
        show(("✓ " if passed else "✗ ") + desc + (f": {msg}" if msg and not passed else ""))
    show("All checks passed." if ok else "Some checks failed: compare with the definition above.")
    if hint and not ok:
        show(hint)
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


def first_samples(acts, most: int = 200, mib: float = COMPARE_MIB) -> np.ndarray:
    """The first samples of a capture, as many as fit in ``mib`` MiB: the rows on which a chapter
    compares a learner's function with the library's.

    A learner's version of a method is written for clarity: it converts the whole array to
    float64 and keeps a few same-sized temporaries. On 200 samples of the 70B's shape (160 sites
    × 8192 units, 1 GiB of float32) that took one chapter to 7 GiB; the comparison needs far
    fewer rows. The count is ``min(most, len(acts), mib MiB // one sample's float32 bytes)``, and
    at least 1 (the first block of :func:`tdcourse.streaming.sample_blocks`).

    Parameters
    ----------
    acts : ndarray or tdcourse.store.HalfStoreArray of shape (n_samples, n_sites, d_model)
        The capture (``run.acts``), memory-mapped or in memory.
    most : int, default 200
        At most this many samples, whatever their size.
    mib : float, default :data:`COMPARE_MIB`
        The budget, in MiB of float32 values.

    Returns
    -------
    ndarray of shape (k, n_sites, d_model), float32
        A copy in memory of ``acts[:k]``, read with :func:`tdcourse.streaming.read` (plain file
        reads: the memory map's pages are not kept resident).

    Raises
    ------
    ValueError
        When ``acts`` is not 3-D, ``most`` < 1 or ``mib`` <= 0: a message names the argument.
    """
    shape = tuple(getattr(acts, "shape", ()))
    if len(shape) != 3:
        raise ValueError(f"acts must be a capture of shape (n_samples, n_sites, d_model), got shape {shape}")
    if int(most) < 1 or not mib > 0:
        raise ValueError(f"most must be >= 1 and mib > 0, got most={most!r}, mib={mib!r}")
    from . import streaming

    # the first block of the capture's own budgeted blocks, read with plain file reads
    blocks = streaming.sample_blocks(min(int(most), shape[0]), 4 * shape[1] * shape[2], int(mib * 2**20))
    return streaming.read(acts, np.s_[: blocks[0][1] if blocks else 0], np.float32)


def _name(f: Callable) -> str:
    """How a printed line names a function: ``module.name`` without ``tdcourse.`` (a notebook's
    own function by its name alone); a :func:`functools.partial` with its fixed arguments."""
    import functools

    if isinstance(f, functools.partial):
        fixed = [repr(a) for a in f.args] + [f"{k}={v!r}" for k, v in f.keywords.items()]
        return f"{_name(f.func)}(…, {', '.join(fixed)})" if fixed else _name(f.func)
    module = getattr(f, "__module__", None) or ""
    module = "" if module == "__main__" else module.removeprefix("tdcourse.")
    return ".".join(p for p in (module, getattr(f, "__name__", "?")) if p)


def yours_or(fn: Callable, stand_in: Callable, *probe, width: int | None = WIDTH) -> Callable:
    """The learner's function, or ``stand_in`` (saying so) while the learner's is not written.

    A chapter runs the learner's function at scale after the build-it step. In JupyterLab or
    Colab the learner may have skipped the (hidden) solution cell and left the template, whose
    body ``...`` returns None; the chapter must still run top to bottom. This calls
    ``fn(*probe)`` once: if it returns None or ``...`` (or raises ``NotImplementedError`` or a
    ``TypeError`` about ``NoneType`` or ``'ellipsis'``: :func:`unwritten`), it prints that ``fn``
    is not written yet and that ``stand_in`` is used in its place, and returns ``stand_in``;
    otherwise it returns ``fn`` and prints nothing (other errors of ``fn`` are left to the cell
    that uses it, where they show).

    Parameters
    ----------
    fn : callable
        The learner's function.
    stand_in : callable
        What to use while ``fn`` is not written: the library's function of the same signature
        (a :func:`functools.partial` fixes its other arguments; the printed line names them).
    *probe
        Arguments for one call of ``fn``, e.g. one curve.
    width : int or None, default :data:`WIDTH`
        Wrap the printed line at this many characters.

    Returns
    -------
    callable
        ``fn``, or ``stand_in`` (wrapped so that :func:`whose` names it in a printed line).
    """
    import textwrap

    try:
        missing = unwritten(fn(*probe))
    except Exception as err:  # other bugs of the learner's show where the function is used
        missing = unwritten(err)
    if not missing:
        return fn
    text = (f"{getattr(fn, '__name__', 'your function')} is not written yet (it returns None): "
            f"{_name(stand_in)} stands in for it below. Write it (or run the solution cell) "
            "and run this cell again.")
    print(text if width is None else textwrap.fill(text, width, subsequent_indent="  ", break_long_words=False))
    return _StandIn(stand_in, fn)


class _StandIn:
    """``stand_in`` as :func:`yours_or` returns it: called as it is, and known by :func:`whose`."""

    def __init__(self, stand_in: Callable, instead_of: Callable):
        self.stand_in, self.instead_of = stand_in, instead_of
        self.__name__ = getattr(stand_in, "__name__", "stand_in")

    def __call__(self, *args, **kwargs):
        return self.stand_in(*args, **kwargs)


def whose(fn: Callable, yours: str) -> str:
    """How a printed line names the results of a function :func:`yours_or` returned.

    A chapter's at-scale line compares the learner's results with the library's. While the
    library stands in (the template is unfilled), saying "your … agree with the library's" would
    compare the library with itself under the learner's name; this names the stand-in instead.

    Parameters
    ----------
    fn : callable
        What :func:`yours_or` returned.
    yours : str
        The words for the learner's results, e.g. ``"my_pr"`` or ``"your Hoyer densities"``.

    Returns
    -------
    str
        ``yours`` for the learner's function; else e.g. ``"continuity.adjacent_corr (standing
        in: my_adjacent_corr is not written yet)"``.
    """
    if isinstance(fn, _StandIn):
        return (f"{_name(fn.stand_in)} (standing in: {getattr(fn.instead_of, '__name__', 'yours')} "
                "is not written yet)")
    return yours
