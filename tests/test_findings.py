"""Chapters' "what we found" as paragraphs (verdicts.findings and the modules' findings_notes),
reader tables without an index (verdicts.styled), wrapped prints (verdicts.say), and the
helpers moved out of the notebooks."""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tdcourse import information, plots, stationarity, verdicts
from tdcourse import rotations as rot


def _v(claim="C9", model="smollm2-135m", outcome="agrees", value=0.5):
    return verdicts.Verdict(claim=claim, paper="units circle about ten times", criterion="a criterion",
                            model=model, value=value, uncertainty="CI 0.1-0.9", outcome=outcome)


def test_findings_renders_lines_then_notes_and_the_verdict_table_collapsed():
    notes = ["The median unit grows 3.54e+04-fold from site 1 to the last site."]
    f = verdicts.findings([_v()], notes=notes)
    page = f._repr_html_()
    assert "<p>The median unit grows 35,400-fold" in page  # no E-notation in prose
    assert page.index("<li>") < page.index("<details") < page.index("<p>") < page.index("<table")
    assert "a criterion" in html.unescape(page)


def test_findings_says_a_disagreement_plainly():
    f = verdicts.findings([_v(outcome="disagrees"), _v(model="m · random init (seed 0)", outcome="disagrees")])
    (line,) = f.lines
    assert "Trained disagrees with the paper" in line
    assert "the control does not show it either" in line and "control: disagrees" not in line
    # no disagreement, no such words
    assert "with the paper" not in verdicts.findings([_v()]).lines[0]


def test_findings_text_form_fits_80_columns():
    f = verdicts.findings([], notes=["word " * 60])
    assert all(len(line) <= 80 for line in str(f).splitlines())


def test_findings_rejects_non_string_notes():
    with pytest.raises(TypeError, match="notes must be strings"):
        verdicts.findings([_v()], notes=[3.0])


def test_styled_has_no_index_and_wraps():
    df = pd.DataFrame({"model": ["trained"], "text": ["x" * 120]})
    page = verdicts.styled(df).to_html()
    assert "x" * 120 in page
    assert 'class="row_heading' not in page  # no 0…n index column
    assert "white-space: normal" in page
    assert 'class="row_heading' in verdicts.styled(df.set_index("model"), index=True).to_html()
    with pytest.raises(TypeError, match="DataFrame"):
        verdicts.styled(df["model"])


def test_say_wraps_long_lines(capsys):
    verdicts.say("a " * 100 + "end")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 1 and all(len(line) <= 68 for line in lines)  # 69 fit a solution box at 1280 px
    assert lines[1].startswith("  ")


def test_rotation_wrap_convention_at_exactly_pi():
    # dx = ±4 alternates: every inner step reverses exactly; for the middle step numpy's atan2
    # gets a cross product of -0.0 and would return -π
    a = np.array([-2.0, 2.0, -2.0, 2.0, -2.0])
    ang = rot.turning_angles(a)
    assert np.all(ang > -np.pi) and np.all(ang <= np.pi)
    assert ang[1] == np.pi
    assert rot.rotation_count(a) == pytest.approx(ang.sum() / (2 * np.pi))
    assert rot.rotation_count(a) == pytest.approx(-0.25)
    assert rot.rotation_count(-a) == pytest.approx(-0.25)


def test_explained_by_bins_is_one_for_a_step_function_and_checks_input():
    x = np.arange(100.0)
    y = (x >= 50).astype(float)  # constant within each of 10 equal-count bins
    assert information.explained_by_bins(x, y) == pytest.approx(1.0)
    assert information.explained_by_bins(x, np.sin(x * 0.37) + 0.0 * x) < 0.5
    with pytest.raises(ValueError, match="constant"):
        information.explained_by_bins(x, np.ones(100))
    with pytest.raises(ValueError, match="same length"):
        information.explained_by_bins(x, x[:10])


def test_run_tag():
    assert plots.run_tag(SimpleNamespace(meta={"model": {"init": "random", "seed": 0}})) == "random-init control"
    assert plots.run_tag(SimpleNamespace(meta={"model": {"init": "random", "seed": 3}})) == "random-init control (seed 3)"
    assert plots.run_tag(SimpleNamespace(meta={"model": {}})) == "trained"
    assert plots.label(SimpleNamespace(meta={"model": {"quant": "4bit"}})) == "4-bit copy"
    with pytest.raises(TypeError):
        plots.run_tag(object())


def test_stationarity_notes_state_the_computed_numbers():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(40, 6, 8)) * np.arange(1, 7)[None, :, None] + np.arange(6)[None, :, None]
    run = SimpleNamespace(label="toy", acts=acts, sites=[f"s{i}" for i in range(6)], meta={"model": {}})
    res = stationarity.stationarity(acts, n_null=3, seed=0)
    found = [verdicts.Verdict(claim="C7", paper="non-stationary", criterion="c", model="toy",
                              value=res.frac_drifting, uncertainty="", outcome="agrees")]
    notes = stationarity.findings_notes([run], {"toy": res}, found)
    q99 = verdicts.number(float(np.quantile(res.null_drift, 0.99)))
    assert f"(F above {q99};" in notes[0]
    assert f"{res.frac_drifting:.1%} of units drift" in notes[0]
    assert re.search(r"On toy, C7 agrees\.", notes[-1])


def test_findings_lead_tells_readings_apart():
    vs = [verdicts.judge("C12", "early layers harder", "held-out NMSE, early minus late", "m", 1, agrees=True),
          verdicts.judge("C12", "early layers harder", "raw PR early minus late", "m", 1, agrees=False),
          verdicts.judge("C12", "early layers harder", "a", "m · random init (seed 0)", 1, agrees=True),
          verdicts.judge("C12", "early layers harder", "b", "m · random init (seed 0)", 1, agrees=True)]
    # C12's readings are two statements of the paper: each gets its own line and its own sentence
    error, dimension = verdicts.findings(vs).lines
    assert error.startswith("C12 (error) · early sites are harder to rebuild from a 2-D code. ")
    assert "Trained agrees; the control shows it too → the architecture." in error
    assert "lower-dimensional" not in error and "disagrees" not in error
    assert dimension.startswith("C12 (dimension) · later sites are lower-dimensional. ")
    assert "Trained disagrees with the paper; the control shows it, the trained model does not" in dimension


# --- the chapters' findings_notes on a small synthetic run: the sentences hold the computed numbers


@pytest.fixture(scope="module")
def toy_run():
    from tdcourse import continuity  # noqa: F401  (imported here so a failure names this fixture)

    rng = np.random.default_rng(0)
    n_layers = 5
    acts = np.cumsum(rng.normal(size=(60, 2 * n_layers, 16)), axis=1).astype(np.float32)
    sites = [f"resid_{k}.{l}" for l in range(n_layers) for k in ("pre", "mid")]
    return SimpleNamespace(label="toy", acts=acts, sites=sites, meta={"model": {}}, n_layers=n_layers, d_model=16)


def test_continuity_notes_state_the_verdict_values(toy_run):
    from tdcourse import continuity

    res = continuity.analyse(toy_run.acts, n_boot=20, n_dirs=16, seed=0)
    found = continuity.verdicts(toy_run, "x", analysis=res)
    notes = continuity.findings_notes([toy_run], {"toy": res}, found)
    by = {v.claim: v for v in found}
    assert notes[0].startswith(f"C1: most units stay highly correlated from site to site. Trained: "
                               f"{by['C1'].outcome} ({verdicts.number(by['C1'].value)};")
    assert (f"median r {verdicts.number(res.median_r.estimate)} against "
            f"{verdicts.number(res.median_r_rot.estimate)}") in notes[-2]


def test_geometry_notes_state_growth_and_trends(toy_run):
    from tdcourse import geometry

    dens = {"toy": geometry.density_indices(toy_run.acts)}
    found = geometry.verdicts(toy_run, "x", n_boot=50, density=dens["toy"])
    trends = geometry.trend_table([toy_run], dens, n_boot=50)
    assert list(trends.columns[:2]) == ["model", "index"] and set(trends.model) == {"trained"}
    (note,) = geometry.findings_notes([toy_run], found, dens, trends)
    med = np.median(geometry.norms(toy_run.acts), 0)
    assert f"grows {med[-1] / med[1]:.3g}-fold" in note
    assert f"{int(trends.rises.sum())} of {len(trends)} indices rise" in note


def test_information_notes_state_the_dip(toy_run):
    from tdcourse import geometry

    prof = {"toy": information.mi_profile(toy_run.acts, n_units=8, seed=0)}
    found = information.verdicts(toy_run, "x", profile=prof["toy"])
    names = geometry.step_sites(toy_run.sites)
    notes = information.findings_notes([toy_run], found, prof, names)
    d = information.dip_and_recovery(prof["toy"].mi["knn"].T, seed=0)
    assert f"falls by {d.rel_drop.estimate:.0%}" in notes[0] and names[d.low] in notes[0]
    said = {"agrees": "agrees", "partly": "partly agrees", "disagrees": "disagrees with the paper"}[found[0].outcome]
    assert notes[-1].endswith(f"The trained model {said}.")
    assert information.shape_table([toy_run], prof, names).shape == (4, 8)


def test_rotation_notes_state_counts_and_yardsticks(toy_run):
    an = {"toy": rot.analyse(toy_run.acts, label="toy", n_shuffles=50, n_samples=20, n_shuffles_per_sample=5)}
    by = {"toy": rot.verdicts(toy_run, "x", analysis=an["toy"])}
    shares = pd.DataFrame([{"model": "toy"} | {c: 0.1 for c in rot.CLASSES}]).set_index("model")
    notes = rot.findings_notes([toy_run], by, an, shares, walk64=10.9, white64=14.8)
    assert f"{an['toy'].mean.abs_rescaled:.2f} turns at 64 sites (mean trajectory, {by['toy'][0].outcome})" in notes[1]
    assert "also holds a Gaussian random walk (10.90)" in notes[1] and "white noise (14.80)" in notes[1]
    assert notes[2].startswith(f"C10. The paper: some units orbit, others spiral outward. Ours, trained: "
                               f"{by['toy'][2].outcome}")


def test_perturb_layer_names():
    from tdcourse import perturb

    fl = SimpleNamespace(layers=(0, 7, 14), paper_layers=(0, 7, 15))
    assert perturb.layer_names(fl) == ["0 (paper 0)", "7 (paper 7)", "14 (paper 15)"]
