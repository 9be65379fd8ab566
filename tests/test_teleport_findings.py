"""Chapter 7's generated sentences and tables (issue 21): what each chart shows, the "what we found"
notes and the per-layer tables, on synthetic flow fields whose answer is known."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from test_perturb import _flows

from tdcourse import perturb, verdicts

TRAINED, CONTROL = "smollm2-135m", "smollm2-135m · random init (seed 0)"


class _Run:
    def __init__(self, label):
        self.label = label


def _pair(pull_trained=0.3, pull_late=-0.2, pull_control=0.3, kl=(6.0, 6.0), kl_control=0.01):
    """A trained model and a control; ``kl``: median KL of the grid at the (early, late) layers."""
    t = _flows(pull_trained, pull_late, label=TRAINED)
    c = _flows(pull_control, pull_late, label=CONTROL, seed=1)
    m = t.kl.shape[1]
    early, late = kl
    t = dataclasses.replace(t, kl=np.repeat([[early], [early], [(early + late) / 2], [late], [late]], m, axis=1),
                            kl_random=np.full_like(t.kl, 0.5), top1_kept=np.zeros_like(t.top1_kept))
    c = dataclasses.replace(c, kl=np.full_like(c.kl, kl_control), kl_random=np.full_like(c.kl, kl_control / 2))
    runs = [_Run(TRAINED), _Run(CONTROL)]
    return runs, {TRAINED: t, CONTROL: c}


def _plain(text: str) -> None:
    """What no generated sentence may hold: a raw model label, an empty list, E-notation, a cut label."""
    assert "random init (seed" not in text and "smollm2" not in text
    assert "[]" not in text and ": no claim" not in text and "for: no" not in text
    assert not re.search(r"\d[eE][-+]?\d", text)
    assert "…" not in text


def test_layer_table_is_one_column_per_layer_and_prints_integers_as_integers():
    fl = _flows(0.3, -0.2)
    table = perturb.layer_table(fl, k=1)
    assert list(table.columns) == perturb.layer_names(fl) == ["0 (paper 0)", "1 (paper 7)", "3 (paper 15)",
                                                               "4 (paper 23)", "5 (paper 31)"]
    assert table.shape == (13, 5) and table.index[0] == "r, full space"
    s = fl.summary(k=1)
    assert table.loc["r, full space"].tolist() == pytest.approx(s["ratio full"].tolist())
    assert table.loc["inward share, plane"].tolist() == pytest.approx(s["inward plane"].tolist())
    html = verdicts.styled(table, index=True).to_html()
    assert "0.0000" not in html and "nan" not in html.lower()
    # a whole number stays whole: the share of top-1 kept is 0 here, and every interval is text
    assert ">0<" in html and " – " in table.loc["r, 95 % interval"].iloc[0]


def test_findings_table_names_runs_as_the_book_does():
    runs, flows = _pair()
    table = perturb.findings_table(runs, flows)
    assert list(table.columns) == ["run", "layer", "r", "inward", "pull after 4", "pull, random", "KL"]
    assert table["run"].tolist() == ["trained"] * 5 + ["random-init control"] * 5
    assert table["layer"].iloc[1] == "1 (paper 7)"
    assert table["r"].iloc[0] == pytest.approx(flows[TRAINED].summary(1)["ratio full"].iloc[0])
    html = verdicts.styled(table).to_html()
    _plain(html)


def test_ratio_and_inward_notes_follow_the_numbers():
    runs, flows = _pair(pull_trained=0.3, pull_late=-0.2, pull_control=-0.2)
    ratio = perturb.chart_notes(runs, flows, "ratio")
    assert len(ratio) == 2
    # trained: early layers (0 and 1) contract, the late ones (4, 5) grow; layer 3 is a late one here too
    assert "grows at layers 3 (paper 15), 4 (paper 23) and 5 (paper 31), shrinks at layers 0 and 1 (paper 7)" \
        in ratio[0]
    assert ratio[0].startswith("The trained model") and ratio[1].startswith("The random-init control")
    assert "shrinks" not in ratio[1]  # the control grows everywhere
    inward = perturb.chart_notes(runs, flows, "inward")
    assert "more than half of the arrows point inward at layers 0 and 1 (paper 7)" in inward[0]
    assert "fewer than half at layers 0, 1 (paper 7)" in inward[1]
    # random directions: kept fraction exactly 1 everywhere, so no share differs from ½... and none is inward
    assert "for random directions (full space) fewer than half at layers 0, 1 (paper 7)" in inward[0]
    for s in ratio + inward:
        _plain(s)


def test_kept_note_says_where_a_pull_builds_up():
    runs, flows = _pair(pull_trained=0.3, pull_late=-0.2, pull_control=0.0)
    kept = perturb.chart_notes(runs, flows, "kept", k=4)
    # 4 layers on: early κ̄ = 0.7**4 = 0.24; late 1.2**k; the last layers end sooner
    assert "(3 for layer 3, 2 for layer 4, 1 for layer 5, where the model ends)" in kept[0]
    assert "A pull builds up (κ̄ below 0.9) at layers 0 and 1 (paper 7)" in kept[0]
    assert "grows along its own direction (κ̄ above 1.1) at layers 3 (paper 15), 4 (paper 23) and" in kept[0]
    assert "Random directions of the same length: κ̄ 1 at layer 1 (paper 7) and 1 at 3 (paper 15)" in kept[0]
    assert "A pull builds up" not in kept[1] and "within 0.1 of 1 at layers 0 and 1 (paper 7)" in kept[1]
    with pytest.raises(ValueError, match="chart must be one of"):
        perturb.chart_notes(runs, flows, "speed")
    with pytest.raises(ValueError, match="k must be"):
        perturb.chart_notes(runs, flows, "kept", k=0)


def test_arrow_note_says_where_the_network_hardly_moves_the_points():
    runs, flows = _pair(pull_trained=0.3, pull_late=-0.2)
    c = flows[CONTROL]
    still = c.moved_pc.copy()  # the control leaves every point where it was dropped, but at layer 0
    for j, l in enumerate(c.layers):
        if l > 0:
            still[j, :, l:] = c.coords[j][:, None]
    flows[CONTROL] = dataclasses.replace(c, moved_pc=still)
    arrows = perturb.chart_notes(runs, flows, "arrows", k=2)
    assert "green arrows 100% at layer 0, 100% at 1 (paper 7)" in arrows[0]
    assert "hardly moves" not in arrows[0]
    assert ("At layers 1 (paper 7), 3 (paper 15), 4 (paper 23) and 5 (paper 31) the arrows are under a tenth of "
            "that distance: the network hardly moves the points there.") in arrows[1]
    assert "0% at 1 (paper 7)" in arrows[1]


@pytest.mark.parametrize("kl, words", [((6.0, 6.0), "as much as late ones (23 and 31) or more, 6 against 6 nats"),
                                       ((1.0, 6.0), "less than late ones (23 and 31), 1 against 6 nats")])
def test_kl_note_reads_early_against_late_and_the_control(kl, words):
    runs, flows = _pair(kl=kl)
    notes = perturb.chart_notes(runs, flows, "kl")
    assert words in notes[0]
    assert "the grid moves it more at 5 of 5 layers" in notes[0]
    assert "most likely token unchanged in 0% to 0% of runs" in notes[0]
    assert "hardly depends on the state" in notes[1] and "at most 0.01 nats" in notes[1]
    # a control that moves as much as the trained model is described with its own numbers
    runs, flows = _pair(kl=kl, kl_control=5.0)
    assert "hardly depends" not in perturb.chart_notes(runs, flows, "kl")[1]
    for s in notes:
        _plain(s)


@pytest.mark.parametrize("pull_control, reading", [(0.0, "the size of the pull comes with training"),
                                                   (0.3, "so the pull comes with the architecture"),
                                                   (0.08, "part of the pull comes with training")])
def test_findings_notes_read_the_control_as_a_control(pull_control, reading):
    runs, flows = _pair(pull_trained=0.3, pull_control=pull_control)
    found = [v for r in runs for v in perturb.verdicts(r, "07_teleport", flows=flows[r.label], n_boot=200)]
    notes = perturb.findings_notes(runs, found, flows)
    text = " ".join(notes)
    assert reading in text
    assert notes[0].startswith("The trained model: inward arrows") and notes[1].startswith("The random-init control")
    assert "On the trained model the distance reading agrees, the arrow reading agrees." in text
    _plain(text)


def test_findings_notes_without_a_pull_say_so():
    runs, flows = _pair(pull_trained=-0.1, pull_late=-0.2, pull_control=-0.1)
    found = [v for r in runs for v in perturb.verdicts(r, "07_teleport", flows=flows[r.label], n_boot=200)]
    text = " ".join(perturb.findings_notes(runs, found, flows))
    assert "the trained model hardly pulls there" in text
    assert "neither grid displacements" in text and "specific to the plane" not in text
    _plain(text)
