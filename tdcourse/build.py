"""The book's build: capture the scoreboard's runs and evaluate every chapter on them, side by side.

``make book`` needs three captures of the model (the trained model, its 4-bit copy, the
random-init control), the data axes of :data:`tdcourse.robustness.BUILD_AXES` for the trained
model and the control, and every chapter's analyses on each run (:func:`tdcourse.robustness.evaluate`).
Done one phase after the other on a small machine, the workers wait at each phase's end: three
captures do not divide between two workers, and the analyses could start on the first run long
before the last capture ends. Here one pool of worker processes does both:

1. each run is captured in a worker, and its data axes with it: an axis whose samples are the
   run's cut shorter (``"token 25 of 48"``) is read in the same forward passes
   (:func:`tdcourse.capture.load_activations`'s ``prefixes``), any other is captured after it;
2. as soon as a run is there, its (chapter, run) analyses are queued, the costliest first, behind
   the captures still waiting.

The outcomes are those of :func:`tdcourse.robustness.evaluate` on the same runs, in the same order
(tested): only the schedule differs. A run already in the cache is read, not captured.

Source: the scheduling is ours; the analyses are the chapters' (see :mod:`tdcourse.robustness`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from . import robustness
from .capture import Activations
from .data import SampleRecipe
from .registry import CHAPTERS
from .verdicts import Verdict

__all__ = ["RunJob", "scoreboard_jobs", "capture_run", "capture_and_evaluate", "prefix_axes"]


@dataclass(frozen=True)
class RunJob:
    """One run of the scoreboard to capture.

    Attributes
    ----------
    kind : str
        ``"trained"``, ``"4-bit"`` or ``"control"`` (:data:`tdcourse.robustness.RUN_KINDS`).
    kwargs : dict
        :func:`tdcourse.capture.load_activations`'s arguments for it.
    axes : tuple of str
        The data axes captured with it (:data:`tdcourse.robustness.BUILD_AXES` for the kinds of
        :data:`tdcourse.robustness.DATA_KINDS`, none for the 4-bit copy).
    """

    kind: str
    kwargs: dict
    axes: tuple = ()


def scoreboard_jobs(model: str = "smollm2-135m", n: int = 1000,
                    axes: Sequence[str] = robustness.BUILD_AXES) -> list[RunJob]:
    """The scoreboard's runs (:func:`tdcourse.scoreboard.default_runs`: trained, 4-bit, control),
    in that order, each with the data axes captured for its kind."""
    for a in axes:
        if a not in robustness.DATA or a == robustness.PRIMARY_DATA:
            raise ValueError(f"unknown data axis {a!r}: use keys of robustness.DATA other than "
                             f"{robustness.PRIMARY_DATA!r}")
    with_axes = tuple(axes)
    return [RunJob("trained", dict(model=model, n=n, quant="none"), with_axes),
            RunJob("4-bit", dict(model=model, n=n, quant="4bit")),
            RunJob("control", dict(model=model, n=n, init="random", quant="none"), with_axes)]


def prefix_axes(axes: Sequence[str]) -> list[str]:
    """The data axes among ``axes`` whose samples are the primary samples cut shorter (the same
    recipe and N, a smaller ``max_tokens``): those a capture reads in its own forward passes."""
    base = SampleRecipe()
    out = []
    for a in axes:
        recipe, n_axis, _what = robustness.DATA[a]
        if recipe is None or n_axis is not None or not isinstance(recipe.max_tokens, int):
            continue
        if recipe.max_tokens < base.max_tokens and replace(recipe, max_tokens=base.max_tokens, n=base.n) == base:
            out.append(a)
    return out


def capture_run(job: RunJob) -> tuple[Activations, dict[str, Activations], list[str]]:
    """Capture (or read) one run and its data axes: what one worker does for :func:`capture_and_evaluate`.

    Returns
    -------
    run : Activations
    axes : dict
        ``{axis: Activations}`` of ``job.axes``; an axis that cannot be captured here is left out,
        and said in ``lines``.
    lines : list of str
        One line per capture read or made, with its time.
    """
    from .capture import load_activations

    t0 = time.perf_counter()
    kw = dict(job.kwargs)
    cut = prefix_axes(job.axes)
    run = load_activations(progress=False, prefixes=[robustness.DATA[a][0] for a in cut], **kw)
    lines = [f"  {job.kind:8s} {tuple(run.acts.shape)} (samples, sites, d_model) {time.perf_counter() - t0:6.1f} s"
             + (f", with {', '.join(repr(a) for a in cut)} read in the same forward passes" if cut else "")]
    got: dict[str, Activations] = {}
    for axis in job.axes:
        recipe, n_axis, _what = robustness.DATA[axis]
        t1 = time.perf_counter()
        try:
            got[axis] = load_activations(progress=False, **{**kw, "recipe": recipe, "n": n_axis or kw["n"]})
        except Exception as err:  # noqa: BLE001 - the page says which capture is missing and why
            lines.append(f"  data axis {axis!r}, {job.kind}: not captured ({type(err).__name__}: {err})")
            continue
        lines.append(f"  data axis {axis:16s} {job.kind:8s} {tuple(got[axis].acts.shape)} "
                     f"{time.perf_counter() - t1:6.1f} s")
    return run, got, lines


def capture_and_evaluate(
    jobs_: Sequence[RunJob],
    jobs: int = 2,
    specs: Sequence[robustness.Spec] = robustness.SPECS,
    chapters: Mapping[str, tuple[str, tuple[str, ...]]] | None = None,
    data_modules: Sequence[str] = robustness.DATA_MODULES,
    skip: Mapping[tuple[str, str], str] | None = None,
    progress: bool = True,
) -> tuple[list[Activations], dict[str, dict[str, Activations]], tuple[list[Verdict], list, dict[str, float]]]:
    """Capture the runs of ``jobs_`` and evaluate every chapter on each, in one pool of ``jobs`` workers.

    Parameters
    ----------
    jobs_ : sequence of RunJob
        The runs, in the scoreboard's column order (:func:`scoreboard_jobs`).
    jobs : int
        Worker processes (one BLAS / torch thread each); 1 runs everything in this process,
        one step after the other.
    specs, chapters, data_modules, skip :
        As for :func:`tdcourse.robustness.evaluate`.
    progress : bool
        One line per capture and per (chapter, run) pair, as each ends.

    Returns
    -------
    runs : list of Activations
        In the order of ``jobs_``.
    data_runs : dict
        ``{axis: {kind: Activations}}``, as :func:`tdcourse.robustness.load_data_runs` returns it.
    evaluated : tuple
        What :func:`tdcourse.robustness.evaluate` returns on ``runs`` and ``data_runs``: the same
        verdicts and outcomes in the same order.

    Raises
    ------
    ValueError
        ``jobs`` is not a whole number of at least 1, or two jobs of one kind.
    Exception
        A capture's or an analysis's error, as raised in its worker (the pool is shut down).
    """
    chapters = CHAPTERS if chapters is None else chapters
    robustness._check_jobs(jobs)
    kinds = [j.kind for j in jobs_]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"one job per run kind, got {kinds}")
    all_specs = robustness._all_specs(specs, chapters)
    skip = robustness.SKIP if skip is None else skip
    axes_built = sorted({a for j in jobs_ for a in j.axes})
    runs: dict[int, Activations] = {}
    data_runs: dict[str, dict[str, Activations]] = {}
    results: dict[tuple[int, int], tuple] = {}
    skipped: dict[tuple[int, int], list] = {}

    def say(lines) -> None:
        if progress:
            print("\n".join(lines), flush=True)

    def arrived(k: int, got: tuple) -> dict[tuple[int, int], tuple]:
        run, axes, lines = got
        say(lines)
        kind = robustness._kind_of(run, k)
        if kind != jobs_[k].kind:
            raise ValueError(f"the run captured for {jobs_[k].kind!r} reads as {kind!r} ({run.label})")
        runs[k] = run
        for axis, r in axes.items():
            data_runs.setdefault(axis, {})[kind] = r
        tasks, sk = robustness.kind_tasks(kind, k, run, axes, axes_built, chapters, all_specs, data_modules, skip)
        skipped.update(sk)
        return tasks

    _convert_once(jobs_)
    if jobs == 1:
        for k, job in enumerate(jobs_):
            tasks = arrived(k, capture_run(job))
            for key in sorted(tasks):
                results[key] = robustness._evaluate_one(*tasks[key])
                say([results[key][3]])
    else:
        _pipelined(jobs_, jobs, arrived, results, say)
    ordered = [runs[k] for k in range(len(jobs_))]
    for axis in axes_built:
        data_runs.setdefault(axis, {})
    return ordered, data_runs, robustness.assemble(results, skipped)


def _convert_once(jobs_: Sequence[RunJob]) -> None:
    """Open each local model once here (the embedded model is converted on its first opening),
    so that the workers read the converted copy instead of converting it side by side. A model
    that cannot be opened is left to its worker, whose error then names it."""
    from .models import ModelLoadError, open_model, resolve_spec

    for name in dict.fromkeys(str(j.kwargs.get("model", "smollm2-135m")) for j in jobs_):
        try:
            open_model(resolve_spec(name))
        except (ModelLoadError, OSError, ValueError):
            pass


def _pipelined(jobs_: Sequence[RunJob], jobs: int, arrived, results: dict, say) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # Captures first, the one expected longest first (the 4-bit copy dequantises as it runs); a
    # run's analyses join the queue behind them as soon as its capture is there.
    order = sorted(range(len(jobs_)), key=lambda k: (jobs_[k].kind != "4-bit", k))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=robustness._one_thread) as pool:
        pending: dict[Any, tuple[str, Any]] = {pool.submit(capture_run, jobs_[k]): ("capture", k) for k in order}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                what, key = pending.pop(fut)
                try:
                    got = fut.result()
                except BaseException:
                    for f in pending:
                        f.cancel()
                    raise
                if what == "capture":
                    tasks = arrived(key, got)
                    for tkey in robustness.by_cost(tasks):
                        pending[pool.submit(robustness._evaluate_one, *tasks[tkey])] = ("task", tkey)
                else:
                    results[key] = got
                    say([got[3]])
