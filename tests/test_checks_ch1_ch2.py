"""The checks of the first two chapters' exercises accept the right answer and reject the usual
wrong ones, each with the words that name it (the residual hooks: tests/test_hooks_exercise.py).

- ``stationarity.check_drift_ratio``: the factor N left out, numpy's default ddof=0, the axes
  swapped, standard deviations instead of variances;
- ``stationarity.check_first_crossing``: ``np.argmax`` of an all-False column (site 0 for a unit
  that never crosses), the sign forgotten, the last crossing, the median over the wrong axis;
- ``continuity.check_adjacent_corr``: per sample instead of across samples (both forms), no
  centring (both forms), mixed normalisations, the wrong pair of sites (s, s + 2), transposed.

Also ``exercises.run_case(mistakes=...)`` and ``exercises.report(width=...)``, which they use.
"""

from __future__ import annotations

import numpy as np
import pytest

from tdcourse import continuity, exercises, stationarity


def _out(capsys) -> str:
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 68  # fits the book's column
    return out.replace("\n  ", " ")


# --------------------------------------------------------------------------- drift ratio


def drift_right(acts):
    n = acts.shape[0]
    return n * acts.mean(0).var(0, ddof=1) / acts.var(0, ddof=1).mean(0)


@pytest.mark.parametrize("wrong, words", [
    (lambda a: a.mean(0).var(0, ddof=1) / a.var(0, ddof=1).mean(0), "the factor n_samples is missing"),
    (lambda a: a.shape[0] * a.mean(0).var(0) / a.var(0).mean(0), "np.var uses ddof=0 by default"),
    (lambda a: a.shape[0] * a.mean(1).var(0, ddof=1) / a.var(1, ddof=1).mean(0), "the axes are swapped"),
    (lambda a: a.shape[0] * a.mean(0).std(0, ddof=1) / a.std(0, ddof=1).mean(0), "standard deviations"),
], ids=["no-N", "ddof0", "axes-swapped", "std"])
def test_check_drift_ratio(capsys, wrong, words):
    assert stationarity.check_drift_ratio(drift_right)
    assert stationarity.check_drift_ratio(stationarity.drift_ratio)
    assert "All checks passed" in _out(capsys)
    assert not stationarity.check_drift_ratio(wrong)
    out = _out(capsys)
    assert "✗" in out and words in out


# --------------------------------------------------------------------------- first crossing


def crossing_right(mean, factor=10.0):
    big = np.abs(mean) > factor * np.median(np.abs(mean), axis=1, keepdims=True)
    return np.where(big.any(axis=0), big.argmax(axis=0), -1)


def _big(mean, factor, signed=False, axis=1):
    x = mean if signed else np.abs(mean)
    return x > factor * np.median(np.abs(mean), axis=axis, keepdims=True)


@pytest.mark.parametrize("wrong, words", [
    (lambda m, f: _big(m, f).argmax(0), "np.argmax of an all-False column is 0"),
    (lambda m, f: np.where(_big(m, f, signed=True).any(0), _big(m, f, signed=True).argmax(0), -1),
     "a negative unit was missed"),
    (lambda m, f: np.where(_big(m, f).any(0), len(m) - 1 - _big(m, f)[::-1].argmax(0), -1), "last site above"),
    (lambda m, f: np.where(_big(m, f, axis=0).any(0), _big(m, f, axis=0).argmax(0), -1),
     "the median is over the units of each site"),
], ids=["argmax", "sign", "last", "median-axis"])
def test_check_first_crossing(capsys, wrong, words):
    assert stationarity.check_first_crossing(crossing_right)
    _out(capsys)
    assert not stationarity.check_first_crossing(wrong)
    out = _out(capsys)
    assert "✗" in out and words in out


# --------------------------------------------------------------------------- adjacent correlation


def corr_right(acts):
    a = np.asarray(acts, dtype=float)
    z = (a - a.mean(axis=0)) / a.std(axis=0)
    return (z[:, :-1] * z[:, 1:]).mean(axis=0)


def _z(a, axis):
    return (a - a.mean(axis, keepdims=True)) / a.std(axis, keepdims=True)


@pytest.mark.parametrize("wrong, words", [
    (lambda a: (_z(a, 2)[:, :-1] * _z(a, 2)[:, 1:]).mean(2), "correlates the units within one sample"),
    (lambda a: (_z(a, 2)[:, :-1] * _z(a, 2)[:, 1:]).mean(0), "standardised across the units of each sample"),
    (lambda a: ((a / a.std(0))[:, :-1] * (a / a.std(0))[:, 1:]).mean(0), "not centred (E[ab] / (σa σb))"),
    (lambda a: (a[:, :-1] * a[:, 1:]).sum(0) / np.sqrt((a[:, :-1] ** 2).sum(0) * (a[:, 1:] ** 2).sum(0)),
     "not centred (the cosine"),
    (lambda a: ((a - a.mean(0))[:, :-1] * (a - a.mean(0))[:, 1:]).sum(0) / (len(a) - 1)
     / (a.std(0)[:-1] * a.std(0)[1:]), "different normalisations"),
    (lambda a: (_z(a, 0)[:, :-2] * _z(a, 0)[:, 2:]).mean(0), "you paired site s with site s + 2"),
    (lambda a: corr_right(a[:, 0::2]), "you paired resid_pre.l with resid_pre.l+1"),
    (lambda a: corr_right(a).T, "rows and columns swapped"),
], ids=["per-sample", "standardised-across-units", "uncentred", "cosine", "mixed-ddof", "s-to-s+2", "pre-to-pre",
        "transposed"])
def test_check_adjacent_corr(capsys, wrong, words):
    assert continuity.check_adjacent_corr(corr_right)
    assert continuity.check_adjacent_corr(continuity.adjacent_corr)
    assert continuity.check_adjacent_corr(lambda a: np.stack(
        [[np.corrcoef(a[:, s, u], a[:, s + 1, u])[0, 1] for u in range(a.shape[2])] for s in range(a.shape[1] - 1)]))
    assert _out(capsys).count("All checks passed") == 3
    assert not continuity.check_adjacent_corr(wrong)
    out = _out(capsys)
    assert "✗" in out and words in out


def test_check_adjacent_corr_other_failures(capsys):
    assert not continuity.check_adjacent_corr(lambda a: 1 / 0)
    assert "raised ZeroDivisionError" in _out(capsys)
    assert not continuity.check_adjacent_corr(lambda a: np.ones((a.shape[1] - 1, a.shape[2])))
    assert "expected [" in _out(capsys)


def test_the_example_tells_the_mistakes_apart():
    """Each named mistake gives a value far from r on the check's example (not within 1e-6)."""
    a = continuity._corr_example()
    r = continuity.adjacent_corr(a)
    uncentred = ((a / a.std(0))[:, :-1] * (a / a.std(0))[:, 1:]).mean(0)
    assert np.abs(uncentred - r).max() > 0.1
    assert np.abs((_z(a, 2)[:, :-1] * _z(a, 2)[:, 1:]).mean(0) - r).max() > 0.1
    assert np.ptp(r) > 0.2  # units with different correlations


# --------------------------------------------------------------------------- exercises helpers


def test_run_case_names_a_matching_mistake():
    want = np.array([1.0, 2.0])
    assert exercises.run_case("c", lambda: want, (), want, mistakes={"m": want * 2}) == ("c", True, "")
    assert exercises.run_case("c", lambda: want * 2, (), want, mistakes={"m": want * 2})[2] == "m"
    # a mistake equal to the right answer cannot be told apart and is never named
    case = exercises.run_case("c", lambda: want * 3, (), want, mistakes={"same": want, "m": want * 2})
    assert not case[1] and case[2].startswith("expected [1.0, 2.0]")
    # unchanged without mistakes
    assert exercises.run_case("c", lambda: want * 3, (), want) == case


def test_report_wraps_at_the_books_column_unless_told(capsys):
    long = [("a case " * 20, False, "why " * 20)]
    assert not exercises.report(long, width=None)
    assert max(map(len, capsys.readouterr().out.splitlines())) > 100
    assert not exercises.report(long)  # the default: the book's 68 characters
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 68 and lines[1].startswith("  ")


# --------------------------------------------------------------------------- findings notes


def _run(label, acts, init="trained"):
    from types import SimpleNamespace

    n_layers = acts.shape[1] // 2
    sites = [f"resid_{k}.{l}" for l in range(n_layers) for k in ("pre", "mid")]
    return SimpleNamespace(label=label, acts=acts, sites=sites, n_layers=n_layers, d_model=acts.shape[2],
                           meta={"model": {"name": label.split(" · ")[0], "init": init, "seed": 0}})


def _drifting(seed, drift):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(40, 6, 8)) * np.arange(1, 7)[None, :, None]
            + drift * np.arange(6)[None, :, None]).astype(np.float32)


@pytest.mark.parametrize("control_drift, words", [
    (5.0, "The random-init control drifts too"),
    (0.0, "The random-init control does not drift"),
], ids=["architecture", "training"])
def test_stationarity_notes_read_the_control_as_a_control(control_drift, words):
    from tdcourse import verdicts

    runs = [_run("toy", _drifting(0, 5.0)), _run("toy · random init (seed 0)", _drifting(1, control_drift), "random")]
    res = {r.label: stationarity.stationarity(r.acts) for r in runs}
    found = [v for r in runs for v in stationarity.verdicts(r, result=res[r.label])]
    notes = stationarity.findings_notes(runs, res, found)
    text = " ".join(notes)
    assert words in text
    assert "Random-init control: agrees" not in text and "control: disagrees" not in text.lower()
    f_t, f_c = (float(np.median(res[r.label].drift)) for r in runs)
    assert (f"median F {verdicts.number(f_t)} (trained) against {verdicts.number(f_c)}") in text
    ratio = f_t / f_c
    assert ("stronger in the trained model" in text) == (ratio > 1.5)
    assert notes[0].startswith("trained: ") and notes[1].startswith("random-init control: ")


def test_stationarity_notes_say_a_disagreement_plainly():
    rng = np.random.default_rng(0)
    run = _run("toy", rng.normal(size=(40, 6, 8)).astype(np.float32))  # stationary by construction
    res = {"toy": stationarity.stationarity(run.acts)}
    found = stationarity.verdicts(run, result=res["toy"])
    assert found[0].outcome == "disagrees"
    assert "C7 disagrees with the paper" in " ".join(stationarity.findings_notes([run], res, found))


@pytest.fixture(scope="module")
def two_runs():
    rng = np.random.default_rng(0)
    n, layers, d = 60, 4, 12
    walk = np.cumsum(rng.normal(size=(n, 2 * layers, d)), axis=1).astype(np.float32)
    # a "trained" stream whose writes grow with depth, and a control whose writes shrink
    steps = rng.normal(size=(n, 2 * layers, d)) * np.linspace(0.2, 3.0, 2 * layers)[None, :, None]
    trained = np.cumsum(steps, axis=1).astype(np.float32) + rng.normal(size=(n, 1, d)).astype(np.float32) * 3
    runs = [_run("toy", trained), _run("toy · random init (seed 0)", walk, "random")]
    res = {r.label: continuity.analyse(r.acts, n_boot=20, n_dirs=d, seed=0) for r in runs}
    found = [v for r in runs for v in continuity.verdicts(r, "x", analysis=res[r.label])]
    return runs, res, found


def test_continuity_notes_read_the_control_as_a_control(two_runs):
    runs, res, found = two_runs
    notes = continuity.findings_notes(runs, res, found)
    text = " ".join(notes)
    assert "Control: agrees" not in text and "Control: disagrees" not in text
    by = {(v.claim, v.model): v.outcome for v in found}
    for claim in ("C1", "C2", "C3"):
        t, c = by[(claim, "toy")], by[(claim, "toy · random init (seed 0)")]
        line = next(n for n in notes if n.startswith(f"{claim}:"))
        pos = ("agrees", "partly")
        if t in pos and c in pos:
            assert "The random-init control shows it too → the architecture" in line
        elif t in pos:
            assert "The random-init control does not show it → training" in line


def test_continuity_notes_c2_and_c3_follow_the_numbers(two_runs):
    from tdcourse import verdicts

    runs, res, found = two_runs
    notes = continuity.findings_notes(runs, res, found)
    c2 = next(n for n in notes if n.startswith("C2:"))
    c3 = next(n for n in notes if n.startswith("C3:"))
    trend = {r.label: float(continuity.depth_trend(res[r.label].write[:, None])[0]) for r in runs}
    t, c = trend["toy"], trend["toy · random init (seed 0)"]
    assert t > 0 > c  # the fixture is built so: the write grows in one, shrinks in the other
    assert f"falls with depth in the control (Spearman ρ with depth {verdicts.number(c)})" in c2
    assert f"does not fall in the trained model (Spearman ρ with depth {verdicts.number(t)})" in c2
    g_attn, g_mlp = (float(np.median(x)) for x in continuity.split_within_across(res["toy"].write[:, None]))
    who = "the MLP" if g_mlp > g_attn else "attention"
    assert f"In the trained model {who} writes more" in c3
    assert ("holds in the trained model" in c3) == (g_mlp > g_attn)


def test_continuity_notes_name_the_model():
    rng = np.random.default_rng(0)
    acts = np.cumsum(rng.normal(size=(40, 6, 8)), axis=1).astype(np.float32)
    for name, said in (("smollm2-135m", True), ("llama-3.1-8b", False)):
        run = _run(name, acts)
        res = {name: continuity.analyse(acts, n_boot=10, n_dirs=8, seed=0)}
        notes = continuity.findings_notes([run], res, continuity.verdicts(run, analysis=res[name]))
        assert (f"These numbers are {name}'s (3 layers)" in notes[-1]) == said
