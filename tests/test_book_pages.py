"""The built book's chapter pages, second half (split from ``test_book.py`` so that pytest-xdist
spreads the browser checks over both workers: each file runs on one): every chart drawn with the
network blocked and no error shown; at a 390 px phone only a wide table scrolls; no script throws.
The helpers, the browser and the 1280 px check are in ``test_book.py``."""

from __future__ import annotations

import re

import pytest
from test_book import (  # noqa: F401 - browser: the module-scoped fixture, used by name
    PHONE,
    SHOTS,
    _measure_page,
    _pages,
    _run_chromium,
    browser,
    layout_problems,
    needs_browser,
)


@needs_browser
@pytest.mark.parametrize("page", _pages() or [None], ids=lambda p: p.stem if p else "no-pages")
def test_chapter_page_draws_offline(page):
    if page is None:
        pytest.skip("the book is not built: run `make book` first")
    html = page.read_text()
    n_charts = len(re.findall(r'<div id="altair-viz-[0-9a-f]+"', html))
    dom = _run_chromium(["--dump-dom", page.as_uri()]).stdout
    SHOTS.mkdir(parents=True, exist_ok=True)
    _run_chromium([f"--screenshot={SHOTS / (page.stem + '.png')}", "--window-size=1280,4000", page.as_uri()])
    shown = re.sub(r"<script.*?</script>", "", dom, flags=re.S)  # what is on the page, not in code
    assert "Error loading script" not in shown, "a chart tried to load Vega from the network"
    assert "Javascript Error" not in shown, "a chart failed to render"
    assert "Traceback (most recent call last)" not in shown, "the page shows a Python traceback"
    assert 'class="output traceback' not in html and "ansi-red-fg" not in html, "the page holds an error output"
    drawn = len(re.findall(r'<div id="altair-viz-[0-9a-f]+" class="vega-embed', dom))
    assert drawn == n_charts, f"{n_charts - drawn} of {n_charts} charts were not drawn"
    # maths is typeset by the local MathJax (no raw \( … \) left) where the page has any
    if "\\(" in html:
        assert "<mjx-container" in dom, "MathJax did not typeset the page's maths"


@needs_browser
@pytest.mark.parametrize("page", _pages() or [None], ids=lambda p: p.stem if p else "no-pages")
def test_chapter_page_fits_a_phone_at_390px(page, browser):  # noqa: F811 - the imported fixture
    """At a 390 px phone the charts shrink to the column, code and printed lines wrap, and only a
    wide table (or a display formula) scrolls, inside its own box; the page never scrolls sideways."""
    if page is None:
        pytest.skip("the book is not built: run `make book` first")
    m, _errors = _measure_page(browser, page, PHONE)
    assert m["viewport"] == PHONE[0]
    assert m["drawn"] == m["expected"], f"{m['expected'] - m['drawn']} of {m['expected']} charts were not drawn"
    problems = layout_problems(m, phone=True)
    assert not problems, (f"{page.name} at {PHONE[0]} px (content column {m['column']['width']:.0f} px):\n  "
                          + "\n  ".join(problems))


@needs_browser
@pytest.mark.parametrize("page", _pages() or [None], ids=lambda p: p.stem if p else "no-pages")
def test_chapter_page_scripts_run_without_errors(page, browser):  # noqa: F811 - the imported fixture
    """No script on the page throws (e.g. a constant declared twice by the theme's extensions)."""
    if page is None:
        pytest.skip("the book is not built: run `make book` first")
    _, errors = _measure_page(browser, page)
    assert not errors, f"{page.name}: " + "; ".join(errors)
