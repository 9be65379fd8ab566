"""Links a reader can follow.

1. In the built book (``make book``), every link, image and script that points inside the
   book leads to a file that exists, and every ``#anchor`` to an id on that page. Sphinx checks
   its own cross-references at build time (``-W``), but not raw HTML, Markdown links to files,
   or assets; this does, offline, with the standard library's HTML parser.
2. Every built chapter links to the pages a reader needs beside it: Setup, the claims page (at
   the claim it tests), the glossary and the scoreboard.
3. In the sources (book pages; chapters' markdown and code cells), nothing points readers to
   a file they cannot see (``shared/paper.md``, "our summary of the paper"), or names a
   "third-party reimplementation" without linking the references.
"""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"


class _Links(HTMLParser):
    """The ids of a page and the (tag, attribute, value) of every link-like attribute."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        for key in {"a": "href", "link": "href", "img": "src", "script": "src", "iframe": "src"}.get(tag, "").split():
            if a.get(key):
                self.links.append((tag, a[key]))


def _parse(path: Path, article_only: bool = False) -> _Links:
    """Parse a page; with ``article_only``, only its content column (not the theme's navigation,
    which links every page from every page)."""
    text = path.read_text(errors="replace")
    if article_only:
        m = re.search(r'<article[^>]*class="[^"]*bd-article.*?</article>', text, flags=re.S)
        text = m.group(0) if m else ""
    p = _Links()
    p.feed(text)
    return p


def _pages() -> list[Path]:
    if not HTML.exists():
        return []
    return sorted(p for p in HTML.rglob("*.html")
                  if not {"_static", "_sources", "_images"} & set(p.relative_to(HTML).parts))


def broken_links(page: Path, root: Path) -> list[str]:
    """Links of ``page`` (inside ``root``) whose file or anchor does not exist, as sentences."""
    parsed, cache = _parse(page), {}
    out = []
    for tag, link in parsed.links:
        url = urlsplit(link)
        if url.scheme or url.netloc or link.startswith(("mailto:", "javascript:", "data:")):
            continue  # outside the book (checked by no one offline)
        target = (page.parent / unquote(url.path)).resolve() if url.path else page
        if target.is_dir():
            target = target / "index.html"
        try:
            target.relative_to(root.resolve())
        except ValueError:
            out.append(f"<{tag}> {link!r} leaves the book")
            continue
        if not target.exists():
            out.append(f"<{tag}> {link!r}: no file {target.relative_to(root.resolve())}")
        elif url.fragment and target.suffix == ".html":
            if target not in cache:
                cache[target] = parsed.ids if target == page else _parse(target).ids
            if unquote(url.fragment) not in cache[target]:
                out.append(f"<{tag}> {link!r}: no id {url.fragment!r} on {target.name}")
    return out


@pytest.mark.parametrize("page", _pages() or [None],
                         ids=lambda p: str(p.relative_to(HTML)) if p else "no-pages")
def test_internal_links_resolve(page):
    if page is None:
        pytest.skip("the book is not built: run `make book` first")
    broken = broken_links(page, HTML)
    assert not broken, f"{page.relative_to(HTML)}:\n  " + "\n  ".join(broken)


def test_broken_link_check_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "claims.html").write_text('<h2 id="claim-c1">C1</h2>')
    page = tmp_path / "chapter.html"
    page.write_text('<p id="top"><a href="book/claims.html#claim-c1">ok</a> <a href="#top">ok</a>'
                    '<a href="https://example.org/x">external</a> <a href="book/claims.html#claim-c99">bad</a>'
                    '<img src="_images/none.png"> <a href="../outside.html">out</a></p>')
    assert broken_links(page, tmp_path) == [
        "<a> 'book/claims.html#claim-c99': no id 'claim-c99' on claims.html",
        "<img> '_images/none.png': no file _images/none.png",
        "<a> '../outside.html' leaves the book"]


# --- every chapter links what a reader needs beside it ----------------------------------------

def _chapters() -> list[Path]:
    return sorted(HTML.glob("notebooks/*.html")) if HTML.exists() else []


@pytest.mark.parametrize("page", _chapters() or [None], ids=lambda p: p.stem if p else "no-pages")
def test_chapter_links_setup_claims_glossary_scoreboard(page):
    if page is None:
        pytest.skip("the book is not built: run `make book` first")
    hrefs = []  # each link of the content column as "path/from/book/root.html#anchor"
    for tag, link in _parse(page, article_only=True).links:
        url = urlsplit(link)
        if tag == "a" and not url.scheme and url.path:
            target = (page.parent / unquote(url.path)).resolve()
            rel = target.relative_to(HTML.resolve()).as_posix() if target.is_relative_to(HTML.resolve()) else ""
            hrefs.append(rel + (f"#{url.fragment}" if url.fragment else ""))
    need = {
        "Setup": r"^book/setup\.html",
        "the claims page, at a claim": r"^book/claims\.html#claim-c\d+$",
        "the glossary (a {term} link)": r"^book/background\.html#term-",
        "the scoreboard": r"^book/scoreboard\.html",
    }
    missing = [what for what, pattern in need.items() if not any(re.search(pattern, h) for h in hrefs)]
    assert not missing, f"{page.name} does not link to: " + ", ".join(missing)


def test_chapter_link_check_reads_the_content_column_only(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "HTML", tmp_path)
    (tmp_path / "notebooks").mkdir()
    nav = '<nav><a href="../book/setup.html">Setup</a><a href="../book/scoreboard.html">Scoreboard</a></nav>'
    page = tmp_path / "notebooks" / "02_continuity.html"
    page.write_text(nav + '<article class="bd-article" role="main"><p>See '
                    '<a href="../book/claims.html#claim-c1">C1</a> and '
                    '<a class="reference internal" href="../book/background.html#term-site">sites</a>.</p></article>')
    with pytest.raises(AssertionError, match="does not link to: Setup, the scoreboard\n"):
        test_chapter_links_setup_claims_glossary_scoreboard(page)  # the sidebar's links do not count
    page.write_text(page.read_text().replace(
        "</p></article>", ' <a href="../book/setup.html#the-cache">cache</a>, '
        '<a href="../book/scoreboard.html">scoreboard</a></p></article>'))
    test_chapter_links_setup_claims_glossary_scoreboard(page)


# --- sources: nothing a reader cannot follow ----------------------------------------------------

UNFOLLOWABLE = [
    (r"shared/paper\.md", "a file outside the repository: cite {doc}`claims` / {ref}`… <claim-cN>`"),
    (r"our\s+(working\s+)?summary\s+of\s+the\s+paper|\bthe\s+paper\s+summary\b",
     "a summary readers cannot see: cite {doc}`claims`"),
    (r"third-party\s+reimplementation(?![^\n]*\{ref\})",
     "an unnamed source: link it, e.g. {ref}`DBravy/oscillations <ref-dbravy>`"),
]


def _source_texts() -> list:
    out = [pytest.param(p.read_text(), id=str(p.relative_to(ROOT))) for p in sorted((ROOT / "book").glob("*.md"))]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells)  # code cells show on the page too
        out.append(pytest.param(text, id=str(nb.relative_to(ROOT))))
    return out


@pytest.mark.parametrize("text", _source_texts())
def test_pages_cite_only_what_readers_can_follow(text, request):
    name = request.node.callspec.id
    found = [f"{' '.join(m.group(0).split())!r} ({why})" for pattern, why in UNFOLLOWABLE
             for m in re.finditer(pattern, text, flags=re.I)]
    assert not found, f"{name}: " + "; ".join(found)
