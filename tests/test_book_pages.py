"""The built book's chapter and prose pages at a 390 px phone (split from ``test_book.py`` so that
pytest-xdist spreads the browser checks over both workers: each file runs on one, and each loads
every page once, at its own width): only a wide table scrolls. The helpers, the browser and the
1280 px checks are in ``test_book.py``."""

from __future__ import annotations

import pytest
from test_book import (  # noqa: F401 - browser: the module-scoped fixture, used by name
    PHONE,
    _measure_page,
    _pages,
    _prose_pages,
    browser,
    layout_problems,
    needs_browser,
)


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
@pytest.mark.parametrize("page", _prose_pages() or [None], ids=lambda p: p.stem if p else "no-pages")
def test_prose_page_fits_a_phone_at_390px(page, browser):  # noqa: F811 - the imported fixture
    """At a 390 px phone a prose page never scrolls sideways (the theme's sidebars, a long path in
    inline code); only a wide table or a display formula may scroll, inside its own box."""
    if page is None:
        pytest.skip("the book is not built: run `make book` first")
    m, _errors = _measure_page(browser, page, PHONE)
    assert m["viewport"] == PHONE[0]
    problems = layout_problems(m, phone=True)
    assert not problems, (f"{page.name} at {PHONE[0]} px (content column {m['column']['width']:.0f} px):\n  "
                          + "\n  ".join(problems))
