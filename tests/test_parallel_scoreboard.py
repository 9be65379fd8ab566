"""The scoreboard's worker processes: the same outcomes whatever the number of jobs, and a run
travels to a worker as the cache entry it was read from, never as another array."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from tdcourse import robustness
from tdcourse.capture import Activations, CacheError, read_activations, save_activations, site_names


def _walk(n=80, s=16, d=40, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((n, s, d)) * np.linspace(0.5, 2.0, s)[None, :, None]
    return (steps.cumsum(1) + rng.standard_normal((1, 1, d)) * 3).astype(np.float32)


def _meta(n):
    from tdcourse import capture as cap

    return {"format_version": cap.FORMAT_VERSION, "model": {"name": "walk", "source": "walk", "revision": None,
            "quant": "none", "dtype": "float32", "init": "trained", "seed": 0},
            "recipe": {"n": n}, "data_sha256": "d", "input_ids_sha256": "i", "sites": ["resid_pre", "resid_mid"],
            "position": "last"}


def _cached_run(acts: np.ndarray) -> Activations:
    n, s, _ = acts.shape
    path = save_activations(acts, site_names(s // 2), [f"sample {i}" for i in range(n)], _meta(n))
    return read_activations(path)


def test_a_cached_run_pickles_as_its_file_and_comes_back_equal():
    acts = _walk()
    run = _cached_run(acts)
    blob = pickle.dumps(run)
    assert len(blob) < acts.nbytes / 4  # the place of the file, not the array
    back = pickle.loads(blob)
    np.testing.assert_array_equal(np.asarray(back.acts), acts)
    assert back.sites == run.sites and back.texts == run.texts and back.meta == run.meta


@pytest.mark.parametrize("change", ["slice", "copy", "in memory"])
def test_any_other_array_pickles_whole(change):
    acts = _walk()
    run = _cached_run(acts)
    other = {"slice": lambda: dataclasses.replace(run, acts=run.acts[:10]),
             "copy": lambda: dataclasses.replace(run, acts=np.array(run.acts) * 2),
             "in memory": lambda: Activations(acts=acts[:, ::-1].copy(), sites=run.sites, texts=run.texts,
                                              meta=run.meta, path=run.path, source=run.source)}[change]()
    back = pickle.loads(pickle.dumps(other))
    np.testing.assert_array_equal(np.asarray(back.acts), np.asarray(other.acts))  # never the file's array


def test_a_removed_entry_stops_the_worker_with_a_message():
    run = _cached_run(_walk())
    blob = pickle.dumps(run)
    run.source.path.write_bytes(b"")  # truncated after it was read
    with pytest.raises(CacheError, match="removed or truncated"):
        pickle.loads(blob)


def test_two_jobs_give_the_same_outcomes_in_the_same_order():
    run = _cached_run(_walk())
    chapters = {"01_residual_stream": ("stationarity", ("C7",)), "03_growth": ("geometry", ("C4", "C5"))}
    one = robustness.evaluate([run], chapters=chapters, progress=False, jobs=1)
    two = robustness.evaluate([run], chapters=chapters, progress=False, jobs=2)
    assert [(v.claim, v.model, v.outcome) for v in one[0]] == [(v.claim, v.model, v.outcome) for v in two[0]]
    assert [(o.spec.row, o.spec.name, o.kind, o.outcome, o.note) for o in one[1]] == \
        [(o.spec.row, o.spec.name, o.kind, o.outcome, o.note) for o in two[1]]
    assert len(one[1]) > 10


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True, "2"])
def test_jobs_must_be_a_whole_number(jobs):
    with pytest.raises(ValueError, match="jobs must be"):
        robustness.evaluate([], chapters={}, progress=False, jobs=jobs)


def test_a_skipped_chapter_and_run_is_not_run_with_its_reason_everywhere():
    from tdcourse import scoreboard

    run = _cached_run(_walk())
    chapters = {"01_residual_stream": ("stationarity", ("C7",))}
    found, outcomes, _ = robustness.evaluate([run], chapters=chapters, progress=False,
                                             skip={("stationarity", "trained"): "too dear here"})
    assert found == [] and outcomes and all(o.verdict is None and o.note == "too dear here" for o in outcomes)
    summ = robustness.summarise(outcomes)
    assert summ == {}
    board = scoreboard.to_markdown(found, [run.label], summ, {run.label: "trained"})
    c7 = next(r for r in board.splitlines() if r.startswith("| **C7**"))
    assert "not run here" in c7 and "fragile" not in c7
    page = robustness.to_markdown(outcomes, kinds=["trained"])
    assert "too dear here" in page and "—" not in page.split("## C7")[1]


def test_the_books_build_skips_only_the_sequel_on_the_4bit_copy_and_says_why():
    assert set(robustness.SKIP) == {("jacobians", "4-bit")}
    assert "4-bit" in robustness.SKIP[("jacobians", "4-bit")] and "minutes" in robustness.SKIP[("jacobians", "4-bit")]


def test_captures_and_analyses_in_one_pool_give_evaluates_outcomes(tmp_path, capsys):
    """tdcourse.build: each run captured in a worker (its data axis read in the same forward
    passes) and its analyses queued as soon as it is there; the outcomes are evaluate's on the
    same runs, in the same order."""
    from test_cache_roundtrip import _tiny_folder

    from tdcourse import build

    folder = _tiny_folder(tmp_path / "models" / "tiny-llama", n_layers=6)
    axes = ("token 25 of 48",)
    jobs_ = [build.RunJob("trained", dict(model=folder, n=60, quant="none"), axes),
             build.RunJob("control", dict(model=folder, n=60, init="random", quant="none"), axes)]
    chapters = {"01_residual_stream": ("stationarity", ("C7",)), "03_growth": ("geometry", ("C4", "C5"))}
    runs, data_runs, (found, outcomes, _sec) = build.capture_and_evaluate(jobs_, jobs=2, chapters=chapters)
    out = capsys.readouterr().out
    assert "'token 25 of 48' read in the same forward passes" in out and "03_growth" in out
    assert [robustness._kind_of(r, i) for i, r in enumerate(runs)] == ["trained", "control"]
    token25 = data_runs["token 25 of 48"]
    assert set(token25) == {"trained", "control"}
    assert all("read_within" in r.info["capture"] for r in token25.values())  # no forward pass of its own
    assert token25["trained"].meta["recipe"]["max_tokens"] == 25
    ref_found, ref_outcomes, _ = robustness.evaluate(runs, data_runs, chapters=chapters, progress=False, jobs=1)
    assert [(v.claim, v.model, v.outcome, v.value) for v in found] == \
        [(v.claim, v.model, v.outcome, v.value) for v in ref_found]
    assert [(o.spec.row, o.spec.name, o.kind, o.outcome, o.note) for o in outcomes] == \
        [(o.spec.row, o.spec.name, o.kind, o.outcome, o.note) for o in ref_outcomes]
    assert any(o.spec.data == "token 25 of 48" and o.verdict is not None for o in outcomes)
    serial = build.capture_and_evaluate(jobs_, jobs=1, chapters=chapters, progress=False)  # read from the cache
    assert [r.path for r in serial[0]] == [r.path for r in runs]
    assert [(o.spec.name, o.kind, o.outcome) for o in serial[2][1]] == [(o.spec.name, o.kind, o.outcome)
                                                                       for o in outcomes]


def test_one_job_per_run_kind():
    from tdcourse import build

    twice = [build.RunJob("trained", {"model": "x", "n": 3}), build.RunJob("trained", {"model": "y", "n": 3})]
    with pytest.raises(ValueError, match="one job per run kind"):
        build.capture_and_evaluate(twice, jobs=2)


def test_only_the_samples_cut_shorter_are_read_in_the_same_pass():
    from tdcourse import build

    assert build.prefix_axes(list(robustness.DATA)) == ["token 25 of 48"]  # "whole lines" is another recipe
    assert [j.kind for j in build.scoreboard_jobs()] == list(robustness.RUN_KINDS)
    assert [j.axes for j in build.scoreboard_jobs()] == [robustness.BUILD_AXES, (), robustness.BUILD_AXES]
