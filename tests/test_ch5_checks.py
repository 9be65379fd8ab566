"""Chapter 5's checks name the usual mistakes: the wrap into [−π, π) (seen only on a curve with
exact reversals), the amplitude growth's four slips, an unfilled template, and exercise 5.3's
``run.acts[2:]`` (samples dropped instead of sites)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from tdcourse import exercises, rotations as rot


def _r_with(wrap):
    def r(a):
        a = np.asarray(a, dtype=float)
        x, y = a - a[0], np.gradient(a) - np.gradient(a)[0]
        theta = np.arctan2(np.diff(y), np.diff(x))
        return wrap(np.diff(theta)).sum() / (2 * np.pi)
    return r


def test_an_exact_reversal_counts_plus_pi():
    zigzag = np.tile([0.0, 1.0], 10)
    assert rot.rotation_count(zigzag) == pytest.approx(7.25)
    assert _r_with(lambda d: np.pi - (np.pi - d) % (2 * np.pi))(zigzag) == pytest.approx(7.25)
    assert _r_with(lambda d: (d + np.pi) % (2 * np.pi) - np.pi)(zigzag) == pytest.approx(-8.75)
    assert rot.rotation_count(zigzag) > 0  # the chapter's sentence: an exact reversal is the exception to R < 0


def test_the_half_open_wrap_the_other_way_is_rejected_and_named(capsys):
    assert rot.check_rotation_count(_r_with(lambda d: np.pi - (np.pi - d) % (2 * np.pi)))
    capsys.readouterr()
    assert not rot.check_rotation_count(_r_with(lambda d: (d + np.pi) % (2 * np.pi) - np.pi))
    out = capsys.readouterr().out
    assert "✗ a zigzag" in out and "expected 7.25, got -8.75" in out
    assert "wrapped into [−π, π)" in out.replace("\n  ", " ")


@pytest.mark.parametrize("desc, wrong", rot._GROWTH_MISTAKES, ids=[d[:30] for d, _ in rot._GROWTH_MISTAKES])
def test_each_growth_mistake_is_rejected_and_named(desc, wrong, capsys):
    assert not rot.check_amplitude_growth(wrong)
    out = capsys.readouterr().out.replace("\n  ", " ")
    assert f"Your growth looks like this usual mistake: {desc}." in out


def test_the_growth_mistakes_are_the_ones_a_learner_writes(capsys):
    def no_std(a):
        x, y = rot.phase_portrait(np.asarray(a, dtype=float))
        n = x.shape[-1]
        k = round(n / 3)
        amp = lambda xs, ys: np.sqrt(((xs - xs.mean(-1, keepdims=True)) ** 2
                                      + (ys - ys.mean(-1, keepdims=True)) ** 2).mean(-1))
        return amp(x[..., n - k:], y[..., n - k:]) / amp(x[..., :k], y[..., :k])

    assert not rot.check_amplitude_growth(no_std)
    assert "not standardised" in capsys.readouterr().out.replace("\n  ", " ")
    assert rot.check_amplitude_growth(rot.amplitude_growth)


@pytest.mark.parametrize("check", [rot.check_amplitude_growth,
                                   lambda f: rot.check_rotation_count(f, portrait=f)])
def test_an_unfilled_template_is_not_written_yet(check, capsys):
    def template(a): ...

    assert not check(template)
    out = capsys.readouterr().out
    assert out.startswith("Not written yet") and "nan" not in out


def test_run_case_names_a_none_result():
    assert exercises.run_case("x", lambda: None, (), 1.0)[2] == exercises.NOT_WRITTEN
    assert exercises.run_case("x", lambda: float(None), (), 1.0)[2].startswith(exercises.NOT_WRITTEN)
    assert exercises.run_case("x", lambda: ..., (), 1.0)[2] == exercises.NOT_WRITTEN  # `return ...`

    def rotation_count_on_a_template(a):
        x, y = None  # what `x, y = my_phase_portrait(a)` meets while that is a template
        return x

    assert exercises.run_case("x", rotation_count_on_a_template, (1,), 1.0)[2].startswith(exercises.NOT_WRITTEN)
    def raises_template():
        raise NotImplementedError("your code here")

    assert exercises.run_case("x", raises_template, (), 1.0)[2].startswith(exercises.NOT_WRITTEN)
    assert exercises.run_case("x", lambda: 2.0, (), 1.0)[2] == "expected 1, got 2"
    assert exercises.run_case("x", lambda: 1 / 0, (), 1.0)[2] == "raised ZeroDivisionError: division by zero"


def test_yours_or_stands_in_only_for_an_unwritten_function(capsys):
    def mine(a): ...

    used = exercises.yours_or(mine, rot.rotation_count, np.arange(6.0))
    assert used.stand_in is rot.rotation_count and used(np.arange(6.0)) == rot.rotation_count(np.arange(6.0))
    assert "mine is not written yet" in capsys.readouterr().out
    assert exercises.yours_or(rot.amplitude_growth, rot.rotation_count, np.arange(9.0)) is rot.amplitude_growth
    assert capsys.readouterr().out == ""


@pytest.fixture(scope="module")
def run():
    acts = np.random.default_rng(0).standard_normal((30, 14, 8)).cumsum(1).astype(np.float32)
    return types.SimpleNamespace(acts=acts, label="toy")


def test_check_cut_accepts_the_sites_dropped_and_prints_the_verdict(run, capsys):
    cut = rot.rotation_test(run.acts[:, 2:], "mean", n_shuffles=40, seed=0)
    assert rot.check_cut(cut, run)
    out = capsys.readouterr().out.replace("\n  ", " ")
    assert "✓ sites used: 12 (sites 2…13 of 14)" in out and "C9's criterion: " in out


@pytest.mark.parametrize("acts, reading, says", [
    (lambda a: a[2:], "mean", "run.acts[2:] drops samples"),
    (lambda a: a[:, :-2], "mean", "the last sites dropped"),
    (lambda a: a[:, 1:], "mean", "13 sites"),
    (lambda a: a[:, 2:], "per-sample", "the reading is 'per-sample'"),
])
def test_check_cut_rejects_the_slips(run, acts, reading, says, capsys):
    cut = rot.rotation_test(acts(run.acts), reading, n_shuffles=20, seed=0)
    assert not rot.check_cut(cut, run)
    out = capsys.readouterr().out.replace("\n  ", " ")
    assert says in out and "C9's criterion" not in out
