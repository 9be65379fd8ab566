"""verdicts.table: whole texts (no cut at pandas' 50 characters), no index column, wrapping cells."""

from __future__ import annotations

import html

import pytest

from tdcourse import verdicts

LONG_CRITERION = (
    "the magnitude of the mean over units of R, rescaled from our n sites to the paper's 64, lies "
    "within a factor 1.5 of 10.74 and differs from the layer-shuffled null (two-sided permutation "
    "p < 0.05); partly if one of the two holds")
LONG_UNCERTAINTY = "null mean 14.6 ± 0.3 over 1000 layer shuffles (z = -12); the shuffled curves turn more"


def _two():
    return [verdicts.judge("C9", "units circle about ten times", LONG_CRITERION, "smollm2-135m", 10.2345678,
                           agrees=True, uncertainty=LONG_UNCERTAINTY, detail="mean-trajectory reading"),
            verdicts.judge("C13", "states flow back", "share of inward arrows > 1/2 (Wilson 95 % CI)",
                           "random init", 0.41, agrees=False, uncertainty="CI 0.31-0.51")]


def test_table_shows_whole_texts_without_index():
    out = verdicts.table(_two())
    page = out._repr_html_()  # what a notebook cell and the book render
    shown = html.unescape(page)
    assert LONG_CRITERION in shown and LONG_UNCERTAINTY in shown
    assert "…" not in page and "..." not in page
    assert "row_heading" not in page, "the table shows an index column"
    assert "white-space: normal" in page
    headers = list(out.data.columns)
    assert headers == ["claim", "model", "outcome", "value", "uncertainty", "criterion"]
    assert list(out.data["value"]) == ["10.23", "0.41"]
    assert len(out.data) == 2


def test_table_full_columns_and_escaping():
    v = verdicts.judge("C1", "r <b>high</b>", "median r > 0.8", "m", 0.9, agrees=True, chapter="02_continuity")
    out = verdicts.table([v], full=True)
    assert list(out.data.columns)[-3:] == ["detail", "paper", "chapter"]
    page = out.to_html()
    assert "r &lt;b&gt;high&lt;/b&gt;" in page and "<b>high</b>" not in page
    assert "02_continuity" in page


def test_table_ids_are_stable_and_distinct():
    a, b = verdicts.table(_two()).to_html(), verdicts.table(_two()).to_html()
    assert a == b  # re-running a chapter gives the same HTML
    c = verdicts.table(_two()[:1]).to_html()
    assert c.split('id="', 1)[1][:20] != a.split('id="', 1)[1][:20]  # two tables on a page: own CSS scope


def test_table_rejects_non_verdicts():
    with pytest.raises(TypeError, match="item 1 is dict"):
        verdicts.table([_two()[0], _two()[1].to_dict()])
