"""A chapter's "what we found" in a few lines, then its details collapsed (issue 21): one line per
claim with the outcome on each run, the random-init control read as a control, how robust the
trained outcome is; no cut labels, no empty lists, no E-notation; tables whose numbers read as
numbers and never break inside a word or a number."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tdcourse import verdicts
from tdcourse.robustness import Robustness

ROOT = Path(__file__).resolve().parents[1]
TRAINED, CONTROL, QUANT = "smollm2-135m", "smollm2-135m · random init (seed 0)", "smollm2-135m · 4bit"
LONG = ("Contraction: r_l = mean full-space distance to the unperturbed state k layers after injecting at "
        "layer l / mean initial displacement, over the grid points (95 % bootstrap CI over points)")


def _v(claim="C7", model=TRAINED, outcome="agrees", criterion="share of drifting units > 0.5", paper=None,
       value=0.5):
    return verdicts.Verdict(claim=claim, paper=paper or f"the paper's {claim}", criterion=criterion, model=model,
                            value=value, uncertainty="CI 0.1-0.9", outcome=outcome)


def _line(found, robustness=None):
    lines = verdicts.findings(found, robustness=robustness).lines
    assert len(lines) == 1, lines
    return lines[0]


def _text(f) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", f._repr_html_())) + "\n" + str(f)


@pytest.mark.parametrize("trained, control, said", [
    ("agrees", "agrees", "the control shows it too → the architecture"),
    ("partly", "agrees", "the control shows it too → the architecture"),
    ("agrees", "partly", "the control shows part of it → partly the architecture, partly training"),
    ("agrees", "disagrees", "the control does not → training"),
    ("disagrees", "agrees", "the control shows it, the trained model does not → training removes it"),
    ("disagrees", "disagrees", "the control does not show it either"),
])
def test_the_control_is_read_as_a_control(trained, control, said):
    line = _line([_v(outcome=trained), _v(model=CONTROL, outcome=control)])
    assert said in line
    # the control is never said to agree or disagree with the paper
    assert not re.search(r"control:? (agrees|partly|disagrees)", line)
    assert line.count("with the paper") == (trained == "disagrees")


def test_one_line_per_claim_with_the_claim_in_short_and_each_run():
    found = [_v("C1"), _v("C2", outcome="disagrees"), _v("C1", model=CONTROL), _v("C2", model=CONTROL)]
    lines = verdicts.findings(found).lines
    assert lines == (
        "C1 · units stay highly correlated from one site to the next. Trained agrees; the control shows it "
        "too → the architecture.",
        "C2 · that correlation rises with depth. Trained disagrees with the paper; the control shows it, the "
        "trained model does not → training removes it.",
    )


def test_claims_in_short_are_those_of_the_claims_page():
    page = (ROOT / "book" / "claims.md").read_text()
    rows = dict(re.findall(r"^\| \{ref\}`(C\d+) <claim-c\d+>` \| ([^|]+?) \|", page, flags=re.M))
    assert rows == verdicts.CLAIMS


def test_a_claim_read_two_ways_names_each_reading():
    found = [_v("C13", criterion=LONG), _v("C13", outcome="disagrees", criterion="share of inward arrows > 1/2"),
             _v("C13", model=CONTROL, outcome="disagrees", criterion=LONG),
             _v("C13", model=CONTROL, outcome="disagrees", criterion="share of inward arrows > 1/2")]
    f = verdicts.findings(found)
    (line,) = f.lines
    assert "Distance reading: trained agrees; the control does not → training." in line
    assert "Arrows reading: trained disagrees with the paper; the control does not show it either." in line
    assert "reading 1" not in line and LONG[:40] not in line  # named, not numbered or cut from the criterion
    # each criterion once, whole, in the details
    assert ("C13 (distance)", LONG) in f.criteria and ("C13 (arrows)", "share of inward arrows > 1/2") in f.criteria
    assert LONG in _text(f)


def test_the_4bit_copy_and_a_beyond_the_paper_row():
    found = [_v("C1 (random basis)", paper="Beyond the paper: C1 repeated on one random basis."),
             _v("C1 (random basis)", model=QUANT, outcome="partly")]
    line = _line(found)
    assert line.startswith("C1 (random basis) · beyond the paper: C1 read along random directions")
    assert "the 4-bit copy partly" in line
    assert "the 4-bit copy agrees too" in _line([_v(), _v(model=QUANT)])


def test_robustness_in_the_line_with_the_alternatives_that_flip_it():
    rob = {("C7", TRAINED): Robustness("C7", "trained", "agrees", flips=("the 25th token of 48", "a 5 % pull floor"),
                                       holds=("r > 0.9",), seeds=("seed 1",), unstable=("seed 1 → partly",)),
           ("C7", CONTROL): Robustness("C7", "control", "agrees", holds=("a", "b", "c"))}
    f = verdicts.findings([_v(), _v(model=CONTROL)], robustness=rob)
    (line,) = f.lines
    assert ("Trained agrees (FRAGILE: flips with the 25th token of 48 and a 5 % pull floor; unstable: seed 1 → "
            "partly)") in line
    assert "FRAGILE" not in line.split("; the control")[1]  # a robust control is not marked
    details = " ".join(f.paragraphs)
    assert "C7 on the trained model: fragile: the 25th token of 48, a 5 % pull floor; unstable: seed 1" in details
    assert "C7 on the random-init control: robust to 3 alternatives" in details


def test_robustness_words_robust_untested_and_on_the_line():
    robust = {("C7", TRAINED): Robustness("C7", "trained", "agrees", holds=("a", "b", "c", "d", "e", "f"))}
    assert _line([_v()], robust) == "C7 · the dynamics are non-stationary. Trained agrees (robust to 6 alternatives)."
    untested = {("C7", TRAINED): Robustness("C7", "trained", "agrees", holds=("a",))}
    assert _line([_v()], untested).endswith("Trained agrees (robustness not tested).")
    close = {("C7", TRAINED): Robustness("C7", "trained", "agrees", holds=("a", "b"), close=True,
                                         margin="5.035 % against the 5 % line: 0.035 points above")}
    assert _line([_v()], close).endswith("(robust to 2 alternatives; on the line: 5.035 % against the 5 % line: "
                                         "0.035 points above).")


def test_no_empty_lists_and_no_cut_labels():
    found = [_v("C9", criterion=LONG), _v("C9", criterion=LONG + " (per sample)"),
             _v("C9", model=CONTROL, criterion=LONG), _v("C9", model=CONTROL, criterion=LONG + " (per sample)")]
    text = _text(verdicts.findings(found, robustness={}))
    assert not re.search(r"(for|in|on|with|by|FRAGILE):\s*[.;]", text), "a list said with nothing in it"
    assert "no claim" not in text and "…" not in text
    assert "has not been computed" in text  # robustness not computed: said, not silently left out


def test_no_e_notation_in_any_sentence():
    notes = ["The median unit grows 3.54e+04-fold from site 1; p = 1.2e-05 and 2E3 steps."]
    f = verdicts.findings([_v()], notes=notes)
    assert "35,400-fold" in f.paragraphs[0] and "p = 0.000012" in f.paragraphs[0] and "2000 steps" in f.paragraphs[0]
    assert not re.search(r"\d[eE][+-]?\d", " ".join(f.lines + f.paragraphs))


@pytest.mark.parametrize("x, digits, out", [
    (3.54e4, 3, "35,400"), (1000.0, 3, "1000"), (7.0, 4, "7"), (-0.0, 4, "0"), (-0.00001, 2, "-0.00001"),
    (1.23456e-5, 3, "0.0000123"), (0.5, 3, "0.5"), (2.3456, 3, "2.35"), (-12345.6, 4, "-12,346"),
    (np.float32(0.25), 2, "0.25"), (np.int64(576), 3, "576"), (float("nan"), 3, "n/a"),
])
def test_number_for_prose(x, digits, out):
    assert verdicts.number(x, digits) == out


def test_number_refuses_what_is_not_a_number():
    for bad in (True, "3", None):
        with pytest.raises(TypeError, match="real number"):
            verdicts.number(bad)


def test_findings_renders_lines_then_a_collapsed_block():
    f = verdicts.findings([_v(), _v(model=CONTROL)], notes=["numbers"], tables=[pd.DataFrame({"a": [1.5]})])
    page = f._repr_html_()
    lines, rest = page.split("<details", 1)
    assert '<ul class="tdcourse-lines">' in lines and lines.count("<li>") == 1
    assert "<table" not in lines and "<p>numbers</p>" in rest
    assert rest.index("<summary>") < rest.index("<p>numbers</p>") < rest.rindex("<table")
    assert "open" not in rest.split(">", 1)[0]  # collapsed
    # the verdict table names runs as the charts do, and keeps whole texts
    last = rest[rest.rindex("<table"):]
    assert ">random-init control<" in last and ">trained<" in last and "random init (seed 0)" not in last
    # text form: the lines first, then the block's title and its contents
    text = str(f)
    assert text.startswith("- C7 · the dynamics are non-stationary.")
    assert text.index("[The numbers, the criteria and the full verdict table]") < text.index("numbers\n")


def test_tables_show_integers_as_integers_and_never_break_inside_a_number_or_word():
    df = pd.DataFrame({"layer": [7.0, 15.0], "samples": [1000.0, 1000.0], "ratio": [134.7560, -0.0], "tiny": [-1.5e-6, 2.0],
                       "kept": [True, False], "run": ["trained", "random-init control"]})
    page = verdicts.styled(df.set_index("run").T, index=True).to_html()
    cells = re.findall(r"<t[dh][^>]*>([^<]*)</t[dh]>", page)
    assert {"7", "15", "1000", "134.8", "0", "-0.0000015", "2", "yes", "no"} <= set(c.strip() for c in cells)
    assert not re.search(r">\s*-?\d+\.0+\s*<|>\s*-0\s*<|\de-\d", page)  # no 7.0000, no -0, no 1.5e-06
    css = page.split("</style>")[0]
    assert "anywhere" not in css and "break-all" not in css  # words and numbers are never cut
    assert "overflow-x: auto" in css and "display: block" in css and "max-width: 100%" in css  # scrolls in its box
    nowrap = set(re.findall(r"#(T_\w+_row\d+_col\d+)", "".join(re.findall(r"([^{}]*)\{\s*white-space: nowrap", css))))
    numeric = set(re.findall(r'<td id="(T_\w+)" class="data[^"]*" >\s*-?\d', page))
    assert len(numeric) == 8 and numeric <= nowrap  # every numeric cell stays on one line
