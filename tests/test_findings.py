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


def test_findings_renders_paragraphs_then_the_verdict_table():
    notes = ["The median unit grows 3.54e+04-fold from site 1 to the last site."]
    f = verdicts.findings([_v()], notes=notes)
    page = f._repr_html_()
    assert "<p>The median unit grows 3.54e+04-fold" in page
    assert page.index("<p>") < page.index("<table")  # paragraphs first, then the table
    assert "a criterion" in html.unescape(page)


def test_findings_says_a_disagreement_plainly():
    f = verdicts.findings([_v(outcome="agrees"), _v(model="random init", outcome="disagrees")])
    lead = f.paragraphs[0]
    assert "agrees on smollm2-135m" in lead and "disagrees on random init" in lead
    assert "On random init the claim does not hold: our run disagrees with the paper." in lead
    # no disagreement, no such sentence
    assert "does not hold" not in verdicts.findings([_v()]).paragraphs[0]


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
    assert len(lines) > 1 and all(len(line) <= 80 for line in lines)
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
    assert plots.run_tag(SimpleNamespace(meta={"model": {"init": "random"}})) == "random init"
    assert plots.run_tag(SimpleNamespace(meta={"model": {}})) == "trained"
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
    q99 = f"{np.quantile(res.null_drift, 0.99):.3g}"
    assert f"stays below {q99} for 99 % of units" in notes[0]
    assert f"{res.frac_drifting:.1%} of units drift" in notes[0]
    assert re.search(r"Our run on toy: agrees", notes[-1])


def test_findings_lead_tells_readings_apart():
    vs = [verdicts.judge("C12", "early layers harder", "held-out NMSE, early minus late", "m", 1, agrees=True),
          verdicts.judge("C12", "early layers harder", "raw PR early minus late", "m", 1, agrees=False),
          verdicts.judge("C12", "early layers harder", "a", "ctrl", 1, agrees=True),
          verdicts.judge("C12", "early layers harder", "b", "ctrl", 1, agrees=True)]
    lead = verdicts.findings(vs).paragraphs[0]
    assert "agrees on m (reading 1: held-out NMSE" in lead
    assert "disagrees on m (reading 2: raw PR early minus late)" in lead
    assert "agrees on ctrl (both readings)" in lead
    assert "On m (reading 2: raw PR early minus late) the claim does not hold" in lead
