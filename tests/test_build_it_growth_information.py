"""Chapters 3 and 4 (issue 21): the learner builds the chapter's method first, and the check says
whether it is right. Each check accepts the definition and rejects the usual mistakes, by name;
the chapters' generated "what we found" sentences agree with the numbers they are built from
(no "… for: no claim", no "r does not show the dip" where r drops as much as MI)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from tdcourse import exercises, geometry, information, stats
from tdcourse.capture import Activations, site_names


def _out(capsys) -> str:
    return capsys.readouterr().out


# --------------------------------------------------------------------------- chapter 3: Hoyer density


def hoyer_right(h):
    h = np.asarray(h, dtype=np.float64)
    return (np.abs(h).sum(-1) / np.linalg.norm(h, axis=-1) - 1) / (np.sqrt(h.shape[-1]) - 1)


REAL_LIKE = np.random.default_rng(0).standard_normal((6, 8, 40)).astype(np.float32)
REAL_LIKE[:, 4:, 3] *= 50  # a massive unit at the later sites


def test_hoyer_check_accepts_the_definition_on_known_and_real_like_vectors(capsys):
    assert geometry.check_hoyer_density(hoyer_right, REAL_LIKE)
    out = _out(capsys)
    assert "✗" not in out and "real residual vectors, shape (6, 8, 40)" in out


@pytest.mark.parametrize("wrong, named", [
    (lambda h: (np.asarray(h).sum(-1) / np.linalg.norm(h, axis=-1) - 1) / (np.sqrt(h.shape[-1]) - 1),
     "signed values, not magnitudes"),
    (lambda h: np.abs(h).sum(-1) / np.linalg.norm(h, axis=-1) / np.sqrt(h.shape[-1]), "(‖h‖₁/‖h‖₂) / √D"),
    (lambda h: (np.abs(h).sum(-1) / np.linalg.norm(h, axis=-1) - 1) / np.sqrt(h.shape[-1]), "(ratio − 1) / √D"),
    (lambda h: 1 - hoyer_right(h), "Hoyer's sparsity"),
    (lambda h: np.abs(h).sum(-1) / np.linalg.norm(h, axis=-1), "without the normalisation"),
], ids=["no-abs", "ratio-over-sqrt-d", "sqrt-d-not-sqrt-d-minus-1", "sparsity", "unnormalised"])
def test_hoyer_check_rejects_and_names_the_usual_mistakes(capsys, wrong, named):
    assert not geometry.check_hoyer_density(wrong, REAL_LIKE)
    out = _out(capsys)
    assert "✗" in out and named in out


def test_hoyer_check_rejects_the_wrong_axis(capsys):
    # D taken from the first axis: right only when the array is one vector
    assert not geometry.check_hoyer_density(lambda h: (np.abs(h).sum(-1) / np.linalg.norm(h, axis=-1) - 1)
                                            / (np.sqrt(np.shape(h)[0]) - 1))
    assert "✗ a batch of Gaussian vectors" in _out(capsys)


# --------------------------------------------------------------------------- chapter 3: velocity


def velocity_right(acts):
    acts = np.asarray(acts, dtype=np.float64)
    return np.linalg.norm(acts[:, 1:] - acts[:, :-1], axis=-1).mean(0)


def velocity_loop(acts):  # a slow, explicit version: also right
    acts = np.asarray(acts, dtype=np.float64)
    n, s, _ = acts.shape
    return np.array([np.mean([np.sqrt(np.sum((acts[i, t + 1] - acts[i, t]) ** 2)) for i in range(n)])
                     for t in range(s - 1)])


@pytest.mark.parametrize("fn", [velocity_right, velocity_loop])
def test_velocity_check_accepts_the_definition(capsys, fn):
    assert geometry.check_velocity(fn, REAL_LIKE)
    assert "✗" not in _out(capsys)


def _norm(a):
    return np.linalg.norm(np.asarray(a, dtype=np.float64), axis=-1)


@pytest.mark.parametrize("wrong, named", [
    (lambda a: (_norm(a)[:, 1:] - _norm(a)[:, :-1]).mean(0), "a difference of norms"),
    (lambda a: np.linalg.norm(np.diff(a, axis=1), axis=0).mean(-1), "a mean over units"),
    (lambda a: np.linalg.norm(np.diff(a, axis=1).mean(0), axis=-1), "the norm of the mean step"),
    (lambda a: np.concatenate([[0.0], velocity_right(a)[:-1]]), "steps shifted by one"),
    (lambda a: np.linalg.norm(np.asarray(a)[:, 2:] - np.asarray(a)[:, :-2], axis=-1).mean(0),
     "steps two sites apart"),
    (lambda a: np.linalg.norm(np.diff(a, axis=1), axis=-1), "without their mean over samples"),
    (lambda a: np.abs(np.diff(a, axis=1)).mean(-1).mean(0), "not its Euclidean norm"),
], ids=["difference-of-norms", "mean-over-units", "norm-of-mean-step", "off-by-one-shift", "two-sites-apart",
        "no-mean-over-samples", "l1-mean"])
def test_velocity_check_rejects_and_names_the_usual_mistakes(capsys, wrong, named):
    assert not geometry.check_velocity(wrong, REAL_LIKE)
    out = _out(capsys)
    assert "✗" in out and named in out


def test_velocity_check_rejects_an_off_by_one_slice(capsys):
    # h_{s+2} − h_{s+1}: one step too few, caught on the shape
    assert not geometry.check_velocity(lambda a: np.linalg.norm(np.asarray(a)[:, 2:] - np.asarray(a)[:, 1:-1],
                                                                axis=-1).mean(0))
    assert "shape (3,), expected (4,)" in _out(capsys)


# --------------------------------------------------------------------------- chapter 3: fraction above τ


def frac_right(h, tau):
    h = np.asarray(h, dtype=np.float64)
    return np.mean(np.abs(h) > tau * np.sqrt(np.mean(h**2, -1, keepdims=True)), -1)


def test_fraction_check_accepts_the_definition(capsys):
    assert geometry.check_fraction_above(frac_right)
    assert "✗" not in _out(capsys)


@pytest.mark.parametrize("wrong, named", [
    (lambda h, t: np.mean(h > t * np.sqrt(np.mean(h**2, -1, keepdims=True)), -1), "signed values"),
    (lambda h, t: np.mean(np.abs(h) > t * np.std(h, -1, keepdims=True), -1), "the standard deviation"),
    (lambda h, t: np.mean(np.abs(h) > t * np.abs(h).mean(-1, keepdims=True), -1), "the mean |h|"),
    (lambda h, t: np.sum(np.abs(h) > t * np.sqrt(np.mean(h**2, -1, keepdims=True)), -1), "a count of units"),
], ids=["no-abs", "std-not-rms", "mean-abs-scale", "count-not-share"])
def test_fraction_check_rejects_and_names_the_usual_mistakes(capsys, wrong, named):
    assert not geometry.check_fraction_above(wrong)
    out = _out(capsys)
    assert "✗" in out and named in out


# --------------------------------------------------------------------------- chapter 4: binned MI


def _codes(v, bins):
    return np.floor((rankdata(v) - 1) * bins / len(v)).astype(int)


def _table(x, y, bins):
    p = np.zeros((bins, bins))
    np.add.at(p, (_codes(x, bins), _codes(y, bins)), 1 / len(x))
    return p


def mi_right(x, y, bins=10):
    p = _table(x, y, bins)
    px, py = p.sum(1), p.sum(0)
    nz = p > 0
    return np.sum(p[nz] * np.log(p[nz] / np.outer(px, py)[nz]))


def mi_entropy(x, y, bins=10):
    p = _table(x, y, bins)
    nz = p > 0
    return -np.sum(p[nz] * np.log(p[nz]))


def mi_other_marginals(x, y, bins=10):
    p = _table(x, y, bins)
    px = np.histogram(x, bins)[0] / len(x)  # equal-width bins: another binning than the joint's
    py = np.histogram(y, bins)[0] / len(y)
    nz = p > 0
    with np.errstate(divide="ignore"):
        return np.sum(p[nz] * np.log(p[nz] / np.outer(px, py)[nz]))


def mi_bits(x, y, bins=10):
    p = _table(x, y, bins)
    px, py = p.sum(1), p.sum(0)
    nz = p > 0
    return np.sum(p[nz] * np.log2(p[nz] / np.outer(px, py)[nz]))


def mi_shuffled(x, y, bins=10):
    return mi_right(x, np.random.default_rng(7).permutation(y), bins)


def mi_sorted(x, y, bins=10):
    return mi_right(np.sort(x), np.sort(y), bins)


def mi_equal_width(x, y, bins=10):
    p = np.histogram2d(x, y, bins)[0] / len(x)
    nz = p > 0
    return np.sum(p[nz] * np.log(p[nz] / np.outer(p.sum(1), p.sum(0))[nz]))


UNIT = np.random.default_rng(1).standard_normal(300)
UNIT_AFTER = np.tanh(UNIT) + 0.3 * np.random.default_rng(2).standard_normal(300)


@pytest.mark.parametrize("fn", [mi_right, lambda x, y, b: information.binned_mi(x, y, bins=b, correction=False)],
                         ids=["by-hand", "library-plug-in"])
def test_binned_mi_check_accepts_the_plug_in_estimate_in_nats(capsys, fn):
    assert information.check_binned_mi(fn, UNIT, UNIT_AFTER)
    out = _out(capsys)
    assert "✗" not in out and "one real unit before and after a step, 300 samples" in out


@pytest.mark.parametrize("wrong, named", [
    (mi_entropy, "the joint entropy"),
    (mi_other_marginals, "marginals from other bins than the joint"),
    (mi_bits, "bits (log base 2)"),
    (mi_sorted, "sorted separately"),
    (mi_equal_width, "equal-width bins"),
    (lambda x, y, b: information.binned_mi(x, y, bins=b), "the Miller–Madow correction"),
], ids=["entropy-not-mi", "marginals-other-binning", "bits-not-nats", "sorted-separately", "equal-width",
        "miller-madow"])
def test_binned_mi_check_rejects_and_names_the_usual_mistakes(capsys, wrong, named):
    assert not information.check_binned_mi(wrong, UNIT, UNIT_AFTER)
    out = _out(capsys)
    assert "✗" in out and named in out


def test_binned_mi_check_rejects_a_shuffled_pairing(capsys):
    assert not information.check_binned_mi(mi_shuffled)
    out = _out(capsys)
    assert "✗ y = x + noise" in out and "✗ y = x²" in out


def test_binned_mi_check_wants_both_halves_of_a_real_pair():
    with pytest.raises(ValueError, match="give both x and y"):
        information.check_binned_mi(mi_right, UNIT)
    with pytest.raises(ValueError, match="same shape"):
        information.check_binned_mi(mi_right, UNIT, UNIT_AFTER[:10])


# --------------------------------------------------------------------------- the shared helpers


def test_run_case_names_a_known_mistake_and_stays_as_before_without_one():
    want, wrong = np.array([1.0, 2.0]), np.array([2.0, 4.0])
    assert exercises.run_case("d", lambda: wrong, (), want, mistakes=[("doubling", wrong)]) == \
        ("d", False, "this matches a known mistake: doubling")
    assert exercises.run_case("d", lambda: wrong, (), want) == \
        ("d", False, "expected [1.0, 2.0]…, got [2.0, 4.0]…; first difference at index 0: expected 1, got 2")
    assert exercises.run_case("d", lambda: want, (), want, mistakes=[("same", want)]) == ("d", True, "")
    assert exercises.run_case("d", lambda: np.ones(3), (), want)[2] == "shape (3,), expected (2,)"


def test_report_wraps_long_lines_for_the_book(capsys):
    exercises.report([("a case " * 20, False, "why " * 10)])
    lines = _out(capsys).splitlines()
    assert all(len(line) <= 68 for line in lines) and lines[1].startswith("  ")


@pytest.mark.parametrize("yours, lib, said", [
    (np.array([1.0, 2.0]), np.array([1.0, 2.0]), "agree exactly"),
    (np.array([1.0, 2.0]) * (1 + 3e-9), np.array([1.0, 2.0]), "agree to 8 significant digits"),
    (np.array([1.0, 2.1]), np.array([1.0, 2.0]), "differ: largest relative difference 0.05"),
    (np.ones(3), np.ones(2), "differ: shapes (3,) and (2,)"),
    (np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), "agree exactly"),
    (np.array([np.nan, 1.0]), np.array([0.5, 1.0]), "differ: NaN in one where the other has a number"),
])
def test_agreement_in_words(yours, lib, said):
    assert exercises.agreement(yours, lib) == said


# --------------------------------------------------------------------------- generated sentences


def _iv(est, lo, hi):
    return stats.Interval(est, lo, hi)


def _dip(rel, low=1):
    i = _iv(0.0, 0.0, 0.0)
    return information.DipRecovery(curve=np.zeros(8), low=low, drop=i, rel_drop=_iv(*rel), climb=i, rho_after=i,
                                   early=2)


STEPS = [f"step{i}" for i in range(8)]


def test_r_against_mi_when_both_drop_by_the_same_34_percent():
    """Issue 21's sentence: both drop by 34 % at the same step; r must not be said to miss the dip."""
    said = information.r_versus_mi(_dip((0.34, 0.20, 0.45)), _dip((0.34, 0.24, 0.42)), STEPS)
    assert "by 34% [24%, 42%] at the same step, the kNN MI by 34% [20%, 45%]" in said
    assert "r shows the same drop as the MI" in said and "does not show" not in said


def test_r_against_mi_when_r_drops_further_or_less():
    further = information.r_versus_mi(_dip((0.81, 0.79, 0.83)), _dip((0.99, 0.98, 1.0)), STEPS)
    assert "r drops further than the MI" in further
    less = information.r_versus_mi(_dip((0.81, 0.79, 0.83)), _dip((0.30, 0.20, 0.40), low=3), STEPS)
    assert "r drops less than the MI" in less and "at step3 (the kNN MI at step1)" in less


def _run(acts, init="trained"):
    meta = {"model": {"name": "toy", "source": "local", "revision": None, "quant": "none", "dtype": "float32",
                      "init": init, "seed": 0, "init_device": "cpu" if init == "random" else None}}
    return Activations(acts=acts.astype(np.float32), sites=site_names(acts.shape[1] // 2),
                       texts=[""] * acts.shape[0], meta=meta)


def _growth_runs():
    rng = np.random.default_rng(0)
    n, sites, d = 40, 10, 24
    depth = np.arange(sites, dtype=float)
    trained = (rng.standard_normal((n, 1, d)) + np.cumsum(rng.standard_normal((n, sites, d)), axis=1)) \
        * (1 + depth)[None, :, None] ** 2
    trained[:, 4:, 0] *= 30  # a massive unit
    control = rng.standard_normal((n, sites, d))  # nothing rises: no claim shared with the trained run
    return [_run(trained), _run(control, init="random")]


def test_growth_notes_never_list_nothing_and_read_the_control_as_a_control():
    runs = _growth_runs()
    dens = {r.label: geometry.density_indices(r.acts) for r in runs}
    found = [v for r in runs for v in geometry.verdicts(r, density=dens[r.label], n_boot=100)]
    trends = geometry.trend_table(runs, dens, n_boot=100)
    mean_map = {r.label: (geometry.fraction_above(r.acts.mean(0), 1.0, relative=False),
                          geometry.fraction_above(r.acts.mean(0), 0.5, trim=0.05)) for r in runs}
    notes = geometry.findings_notes(runs, found, density=dens, trends=trends, mean_map=mean_map)
    text = " ".join(notes)
    assert "no claim" not in text and "for: " not in text and "()" not in text
    assert "disagree" not in text.split("Trained beside the control.")[1]  # the control is not judged
    assert notes[0].startswith("trained.") and notes[1].startswith("random-init control.")
    d = trends[trends.model == "trained"]
    assert f"{int(d.rises.sum())} of {len(d)} indices rise with depth" in notes[0]
    growth = [float(np.median(geometry.norms(r.acts), 0)[-1] / np.median(geometry.norms(r.acts), 0)[1])
              for r in runs]
    assert "Trained beside the control." in notes[-1]
    assert ("training makes the growth" in notes[-1]) == (growth[0] > 1.5 * growth[1])


def test_growth_notes_without_a_control_say_nothing_about_one():
    runs = _growth_runs()[:1]
    dens = {r.label: geometry.density_indices(r.acts) for r in runs}
    found = [v for r in runs for v in geometry.verdicts(r, density=dens[r.label], n_boot=100)]
    notes = geometry.findings_notes(runs, found, density=dens, trends=geometry.trend_table(runs, dens, n_boot=100))
    assert len(notes) == 1 and "control" not in notes[0]


def _mi_runs():
    rng = np.random.default_rng(3)
    n, d = 120, 6
    noise = np.r_[0.3, 3.0, 3.0, np.linspace(2.0, 0.2, 12)]  # a dip at steps 1-2, then a climb
    h = [rng.standard_normal((n, d))]
    for s in noise:
        h.append(h[-1] / h[-1].std(0) + s * rng.standard_normal((n, d)))
    trained = np.stack(h, axis=1)
    flat = [rng.standard_normal((n, d))]
    for _ in noise:
        flat.append(flat[-1] / flat[-1].std(0) + 0.8 * rng.standard_normal((n, d)))
    return [_run(trained), _run(np.stack(flat, axis=1), init="random")]


def test_information_notes_compare_r_with_mi_as_the_numbers_say():
    runs = _mi_runs()
    profiles = {r.label: information.mi_profile(r.acts, n_units=6) for r in runs}
    found = [v for r in runs for v in information.verdicts(r, profile=profiles[r.label], n_boot=200)]
    names = geometry.step_sites(runs[0].sites)
    notes = information.findings_notes(runs, found, profiles, names, token_test=(0.01, 0.2, 30))
    text = " ".join(notes)
    for run, note in zip(runs, notes):
        p = profiles[run.label]
        want = information.r_versus_mi(information.dip_and_recovery(p.mi["knn"].T, seed=0),
                                       information.dip_and_recovery(p.mi["gaussian"].T, seed=0), names)
        assert want in note
    assert "no claim" not in text and "for: " not in text
    assert "control: agrees" not in text and "control: partly" not in text  # the control is not judged
    assert "comes from samples that share their last token" in text  # 0.01 < 0.25 × 0.2
    dt, dc = (information.dip_and_recovery(profiles[r.label].mi["knn"].T, seed=0) for r in runs)
    for part, t, c in (("the sharp drop", dt.drops, dc.drops), ("the climb back", dt.climbs, dc.climbs)):
        said = {(True, True): "there in the control too → the architecture", (True, False): "only in the trained "
                "model → training", (False, True): "in the control but not in the trained model"}.get((t, c))
        if said:
            assert part in text.lower() and said in text
    assert notes[-1].startswith("The paper: MI drops sharply")


def _profile(curve, n_units=6):
    rng = np.random.default_rng(0)
    mi = np.asarray(curve)[:, None] + 0.01 * rng.standard_normal((len(curve), n_units))
    return information.MIProfile(units=np.arange(n_units), mi={k: mi for k in ("knn", "binned", "gaussian", "copula")},
                                 null={"knn": 0 * mi, "binned": 0 * mi}, r=0 * mi, k=3, bins=10)


@pytest.mark.parametrize("curve, said", [
    ([1.0, 0.3, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1], "and is back up at 0."),
    ([1.0, 0.8, 0.6, 0.4, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4], "and is lower still at the next step, 0."),
], ids=["back-up", "lower-still"])
def test_information_notes_say_back_up_only_when_the_next_step_is_higher(curve, said):
    run = _mi_runs()[0]
    prof = {run.label: _profile(curve)}
    found = information.verdicts(run, profile=prof[run.label], n_boot=200)
    note = information.findings_notes([run], found, prof, geometry.step_sites(run.sites))[0]
    assert said in note and ("back up" in note) != ("lower still" in note)
