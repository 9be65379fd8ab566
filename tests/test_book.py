"""The built book, as a reader sees it: every chapter page (and every prose page, ``book/*.html``,
for the layout and script checks) opened in headless Chromium with
the network blocked; each chart must be drawn and no error or traceback shown; at a 1280 px
window every drawn chart, code cell, printed line and table must fit the content column (nothing
scrolls sideways); at a 390 px phone the charts shrink to the column, code and printed lines
wrap, and only a wide table (or a display formula) may scroll, inside its own box; no script on
the page may throw. Every chart's colours follow the book's palette (``tdcourse.plots``).

Needs the built book (``make book``) and Debian's ``chromium`` (``.ci/run`` installs it; on a
laptop: ``sudo apt-get install chromium``, or set ``CHROMIUM=/path/to/chrome``). Without
either, these tests are skipped with a message saying so. Each page is loaded once per width
and every check reads that load. ``make screenshots`` (``TDCOURSE_SCREENSHOTS=1``) also saves
each load to ``_build/screenshots/`` (``<chapter>-1280.png`` and ``<chapter>-390.png``: the whole
page at 1280 px and at 390 px, as the layout test measured it); off by default, since a
full-page PNG costs about as much as the checks (1-6 s a page).

The layout test drives Chromium through the DevTools protocol over a pipe
(``--remote-debugging-pipe``: JSON messages ending in a NUL byte on file descriptors 3 and 4),
so it needs no Python package beyond the standard library.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
#: Save a screenshot of every load (``make screenshots``).
TAKE_SHOTS = os.environ.get("TDCOURSE_SCREENSHOTS", "") not in ("", "0")
sys.path.insert(0, str(ROOT / "tools"))


def _chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _pages() -> list[Path]:
    """The built chapter pages."""
    return sorted(HTML.glob("notebooks/*.html"))


def _prose_pages() -> list[Path]:
    """The built prose pages (``book/*.md``: the landing page, the scoreboard, Beyond one GPU, ...):
    no charts, but the same theme, tables and inline code as the chapters."""
    return sorted(HTML.glob("book/*.html"))


def test_vega_bundle_matches_altair():
    """The local Vega bundle must announce exactly the versions altair's charts ask for, or
    charts silently fall back to the CDN (and stay blank offline)."""
    from offline_assets import VEGA_JS, altair_versions, preset_line

    if not VEGA_JS.exists():
        pytest.skip("book/_static/vega-offline.js is not generated yet: run `make book` (or `make assets`)")
    assert preset_line(altair_versions()) in VEGA_JS.read_text()[:2000], \
        "altair changed: regenerate the bundle with `python tools/offline_assets.py`"


needs_browser = pytest.mark.skipif(_chromium() is None, reason=(
    "no Chromium found: install Debian's `chromium` (sudo apt-get install chromium) or set CHROMIUM "
    "to a Chrome binary to check the built pages in a browser"))


# --- layout at laptop width ----------------------------------------------------------------

#: The window a learner reads the book in: a 1280 px laptop screen.
WINDOW = (1280, 900)
#: A phone: 390 CSS pixels wide (an iPhone 12-15).
PHONE = (390, 844)
#: Pixels a chart or table may pass the column's edge by (sub-pixel rounding).
SLACK_PX = 1


class Browser:
    """Headless Chromium driven through the DevTools protocol over a pipe (no extra package).

    ``send(method, session=..., **params)`` returns the command's result; events that arrive
    meanwhile are kept in ``events``. Chromium reads commands on its fd 3 and writes answers
    on fd 4, each a JSON message followed by a NUL byte.
    """

    def __init__(self, chromium: str, timeout: float = 90.0):
        import fcntl  # POSIX only: imported here so that the module still collects elsewhere

        self.timeout = timeout
        cmd_r, cmd_w = os.pipe()
        out_r, out_w = os.pipe()
        # copies above 10, so that putting them on 3 and 4 in the child cannot clobber each other
        child_in = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(out_w, fcntl.F_DUPFD_CLOEXEC, 10)

        def _pipes_on_3_and_4():
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}",
                 "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                 "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen([chromium, *flags], preexec_fn=_pipes_on_3_and_4, close_fds=False,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for fd in (cmd_r, out_w, child_in, child_out):
            os.close(fd)
        self._w, self._r = cmd_w, out_r
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def _next_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe (did it crash?)")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, session: str | None = None, timeout: float | None = None, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            answer = self._next_message(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, event: str, session: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, m in enumerate(self.events):
                if m.get("method") == event and m.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._next_message(deadline))

    def open(self, url: str, width: int = WINDOW[0], height: int = WINDOW[1]) -> tuple[str, str]:
        """A new tab of ``width`` CSS pixels showing ``url``, loaded; returns (target, session)."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride", session=session, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", session=session, url=url)
        self.wait_for("Page.loadEventFired", session)
        return target, session

    def evaluate(self, session: str, expression: str):
        out = self.send("Runtime.evaluate", session=session, expression=expression, awaitPromise=True,
                        returnByValue=True)
        if "exceptionDetails" in out:
            raise RuntimeError(f"script failed in the page: {out['exceptionDetails']}")
        return out["result"].get("value")

    def screenshot(self, session: str, path: Path, max_height: int = 16000) -> None:
        """The whole page (up to ``max_height`` px) as a PNG at the emulated width."""
        size = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
        data = self.send("Page.captureScreenshot", session=session, format="png", captureBeyondViewport=True,
                         clip=clip)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def script_errors(self, session: str) -> list[str]:
        """Uncaught exceptions (script errors included) the page has thrown so far."""
        out = []
        for m in self.events:
            if m.get("method") == "Runtime.exceptionThrown" and m.get("sessionId") == session:
                d = m["params"]["exceptionDetails"]
                out.append((d.get("exception") or {}).get("description") or d.get("text", "?"))
        return out

    def close_tab(self, target: str) -> None:
        self.send("Target.closeTarget", targetId=target)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        for fd in (self._w, self._r):
            os.close(fd)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


#: Runs in the page: waits until every altair chart is drawn, opens every dropdown (solutions,
#: collapsed cells), then measures the content column (``article.bd-article`` less its padding), every drawn chart, every printed output
#: (``pre`` in a cell's output: its scroll width against its visible width, and its longest
#: line in characters against how many characters the box shows) and every table / image of
#: an output.
MEASURE_JS = r"""
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const charts = () => [...document.querySelectorAll('div[id^="altair-viz-"]')];
  const drawn = () => charts().filter(e => e.querySelector('svg, canvas')).length;
  for (let i = 0; i < 300 && (drawn() < charts().length || document.readyState !== 'complete'); i++)
    await sleep(100);
  // what a reader can open counts too: solutions behind a dropdown, collapsed cells
  // the book's collapsed blocks (solutions, the verdict table) are opened to be measured; a chart's
  // own action menu (vega-embed's "…", also a <details>) stays shut, as a reader sees it
  document.querySelectorAll('details').forEach(d => { if (!d.closest('.vega-embed')) d.open = true; });
  document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
  await document.fonts.ready;
  // the maths is typeset by the local MathJax, asynchronously
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await sleep(300);
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const acs = getComputedStyle(article), box = article.getBoundingClientRect();
  const col = {left: box.left + parseFloat(acs.paddingLeft), right: box.right - parseFloat(acs.paddingRight)};
  col.width = col.right - col.left;
  const cells = [...document.querySelectorAll('.cell')];
  const where = e => {
    const cell = e.closest('.cell'), sec = e.closest('section');
    const h = sec && sec.querySelector('h1, h2, h3');
    const head = h ? ` under "${h.textContent.replace(/[#¶]/g, '').trim()}"` : '';
    return (cell ? `cell ${cells.indexOf(cell) + 1}` : 'the page') + head;
  };
  const out = {viewport: innerWidth, column: col, expected: charts().length, drawn: drawn(),
               charts: [], texts: [], boxes: [], scrollers: [],
               page: {scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth},
               // what the page shows (no script's source): errors and tracebacks are looked for in it
               shown: document.body.innerText, typeset: document.querySelectorAll('mjx-container').length};
  for (const e of document.querySelectorAll('.vega-embed')) {
    const g = e.querySelector('svg, canvas'); const r = (g || e).getBoundingClientRect();
    const t = e.querySelector('.role-title-text text');
    out.charts.push({where: where(e), left: r.left, right: r.right, width: r.width,
                     title: t ? t.textContent : ''});
  }
  const probe = document.createElement('span');
  // code and printed lines: a cell's, and a code block in the prose (a chapter's text, a prose page)
  for (const p of new Set(article.querySelectorAll('.cell_output pre, div.output pre, .cell_input pre, div.highlight pre'))) {
    probe.textContent = 'M'.repeat(100); p.appendChild(probe);
    const cw = probe.getBoundingClientRect().width / 100; p.removeChild(probe);
    const pcs = getComputedStyle(p);
    const inner = p.clientWidth - parseFloat(pcs.paddingLeft) - parseFloat(pcs.paddingRight);
    const longest = p.textContent.split('\n').reduce((a, b) => b.length > a.length ? b : a, '');
    const r = p.getBoundingClientRect();
    out.texts.push({where: where(p), scroll: p.scrollWidth, client: p.clientWidth, right: r.right,
                    shows: Math.floor(inner / cw), longest: longest.length, line: longest.slice(0, 100),
                    kind: p.closest('.cell_output, div.output') ? 'printed line' : 'code line'});
  }
  for (const e of article.querySelectorAll('.cell_output table, .cell_output img, .cell_output iframe')) {
    const r = e.getBoundingClientRect();
    out.boxes.push({where: where(e), tag: e.tagName.toLowerCase(), left: r.left, right: r.right, width: r.width});
  }
  // every box that scrolls sideways (its content wider than itself), and what it holds
  for (const e of article.querySelectorAll('*')) {
    if (e.scrollWidth <= e.clientWidth + 1 || e.clientWidth === 0) continue;
    const ox = getComputedStyle(e).overflowX;
    if (ox !== 'auto' && ox !== 'scroll') continue;
    const table = e.matches('table') || (e.querySelector('table') !== null && !e.querySelector('pre, svg, canvas'));
    const maths = e.matches('mjx-container, .math, .MathJax') || e.querySelector('mjx-container') !== null;
    out.scrollers.push({where: where(e), tag: e.tagName.toLowerCase(), cls: e.className.toString().slice(0, 60),
                        table: table, maths: maths && !table, scroll: e.scrollWidth, client: e.clientWidth});
  }
  return out;
})()
"""


def layout_problems(m: dict, phone: bool = False) -> list[str]:
    """What a reader at this width cannot see, one sentence each, from :data:`MEASURE_JS`'s report.

    On a laptop (``phone=False``) nothing may scroll sideways. On a phone, a wide table (or a
    display formula, which cannot reflow) may scroll inside its own box; every chart, code cell
    and printed line must fit, and the page itself must not scroll sideways.
    """
    col = m["column"]
    problems = []
    page = m.get("page")
    if page and page["scroll"] > page["client"] + SLACK_PX:
        problems.append(f"the page is {page['scroll']} px wide in a {page['client']} px window: it scrolls sideways")
    for c in m["charts"]:
        if c["right"] > col["right"] + SLACK_PX or c["left"] < col["left"] - SLACK_PX:
            title = f' "{c["title"]}"' if c["title"] else ""
            problems.append(f"chart{title} in {c['where']} is {c['width']:.0f} px wide: "
                            f"{c['right'] - col['right']:.0f} px past the {col['width']:.0f} px column")
    for t in m["texts"]:
        if t["scroll"] > t["client"] + SLACK_PX or t["right"] > col["right"] + SLACK_PX:
            problems.append(f"{t.get('kind', 'printed line')} of {t['longest']} characters in {t['where']} scrolls "
                            f"sideways (the box shows {t['shows']}): {t['line']!r}")
    for b in m["boxes"]:
        if b["right"] > col["right"] + SLACK_PX:
            problems.append(f"{b['tag']} in {b['where']} is {b['width']:.0f} px wide: "
                            f"{b['right'] - col['right']:.0f} px past the {col['width']:.0f} px column")
    for s in m.get("scrollers", []):
        if s["tag"] == "pre":
            continue  # code and printed lines: reported above, with their longest line
        if phone and (s["table"] or s["maths"]):
            continue  # a wide table or formula scrolls inside its own box: allowed on a phone
        what = "table" if s["table"] else ("formula" if s["maths"] else f"<{s['tag']} class={s['cls']!r}>")
        problems.append(f"{what} in {s['where']} scrolls sideways inside its box ({s['scroll']} px of content "
                        f"in {s['client']} px)")
    return problems


@pytest.fixture(scope="module")
def browser():
    if _chromium() is None:
        pytest.skip("no Chromium found: install Debian's `chromium` or set CHROMIUM")
    b = Browser(_chromium())
    yield b
    b.close()


def _measure(browser: Browser, url: str, shot: Path | None = None,
             window: tuple[int, int] = WINDOW) -> tuple[dict, list[str]]:
    target, session = browser.open(url, *window)
    try:
        m = browser.evaluate(session, MEASURE_JS)
        if shot is not None:
            browser.screenshot(session, shot)
        return m, browser.script_errors(session)
    finally:
        browser.close_tab(target)


_MEASURED: dict[tuple[Path, int], tuple[dict, list[str]]] = {}


def _measure_page(browser: Browser, page: Path, window: tuple[int, int] = WINDOW) -> tuple[dict, list[str]]:
    """One load per built page and width for the tests below (with its full-page screenshot
    under ``make screenshots``)."""
    if (page, window[0]) not in _MEASURED:
        shot = SHOTS / f"{page.stem}-{window[0]}.png" if TAKE_SHOTS else None
        _MEASURED[(page, window[0])] = _measure(browser, page.as_uri(), shot, window)
    return _MEASURED[(page, window[0])]


@needs_browser
@pytest.mark.parametrize("page", _pages() or [None], ids=lambda p: p.stem if p else "no-pages")
def test_chapter_page_fits_the_column_at_1280px(page, browser):
    """At a 1280 px window every drawn chart, printed line and table of a chapter fits the
    content column (about 690 px there), so nothing needs sideways scrolling."""
    if page is None:
        pytest.skip("the book is not built: run `make book` first")
    m, _ = _measure_page(browser, page)
    assert m["viewport"] == WINDOW[0]
    assert m["drawn"] == m["expected"], f"{m['expected'] - m['drawn']} of {m['expected']} charts were not drawn"
    problems = layout_problems(m)
    assert not problems, (f"{page.name} at {WINDOW[0]} px (content column {m['column']['width']:.0f} px):\n  "
                          + "\n  ".join(problems))


@needs_browser
@pytest.mark.parametrize("page", _prose_pages() or [None], ids=lambda p: p.stem if p else "no-pages")
def test_prose_page_fits_the_window_at_1280px(page, browser):
    """At a 1280 px window nothing on a prose page scrolls sideways: not the page, not a table,
    not a line of code; and no script on it throws."""
    if page is None:
        pytest.skip("the book is not built: run `make book` first")
    m, errors = _measure_page(browser, page)
    assert m["viewport"] == WINDOW[0]
    problems = layout_problems(m)
    assert not problems, (f"{page.name} at {WINDOW[0]} px (content column {m['column']['width']:.0f} px):\n  "
                          + "\n  ".join(problems))
    assert not errors, f"{page.name}: " + "; ".join(errors)


@needs_browser
@pytest.mark.parametrize("page", _pages() or [None], ids=lambda p: p.stem if p else "no-pages")
def test_chapter_page_draws_offline(page, browser):
    """With the network blocked (no host name resolves) every chart is drawn by the book's own
    Vega copy, the maths is typeset by its own MathJax, and no error or traceback is shown."""
    if page is None:
        pytest.skip("the book is not built: run `make book` first")
    html = page.read_text()
    n_charts = len(re.findall(r'<div id="altair-viz-[0-9a-f]+"', html))
    m, _errors = _measure_page(browser, page)
    shown = m["shown"]
    assert "Error loading script" not in shown, "a chart tried to load Vega from the network"
    assert "Javascript Error" not in shown, "a chart failed to render"
    assert "Traceback (most recent call last)" not in shown, "the page shows a Python traceback"
    assert 'class="output traceback' not in html and "ansi-red-fg" not in html, "the page holds an error output"
    assert m["expected"] == n_charts, f"the page has {m['expected']} charts, its HTML {n_charts}"
    assert m["drawn"] == n_charts, f"{n_charts - m['drawn']} of {n_charts} charts were not drawn"
    # maths is typeset by the local MathJax (no raw \( … \) left) where the page has any
    if "\\(" in html:
        assert m["typeset"] > 0, "MathJax did not typeset the page's maths"


@needs_browser
@pytest.mark.parametrize("page", _pages() or [None], ids=lambda p: p.stem if p else "no-pages")
def test_chapter_page_scripts_run_without_errors(page, browser):
    """No script on the page throws (e.g. a constant declared twice by the theme's extensions)."""
    if page is None:
        pytest.skip("the book is not built: run `make book` first")
    _, errors = _measure_page(browser, page)
    assert not errors, f"{page.name}: " + "; ".join(errors)


# A page with the book's layout where it matters: a content column of 688 px (what the
# sphinx-book-theme article gives at 1280 px), cells whose outputs are charts, printed text
# (pre with overflow: auto, as the theme styles it) and tables.
_FIXTURE = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; font-family: sans-serif; }}
main {{ display: flex; }} nav {{ width: 288px; flex: none; }}
article.bd-article {{ width: 688px; padding: 0 16px; flex: none; }}
pre {{ overflow: auto; font-family: monospace; font-size: 14px; padding: 8px; margin: 0; }}
.vega-embed {{ display: inline-block; }}
</style></head><body><main><nav></nav><article class="bd-article"><section><h2>What we found</h2>
{cells}</section></article></main></body></html>"""
_CELL = '<div class="cell"><div class="cell_output"><div class="output">{}</div></div></div>'


def _chart(width: int) -> str:
    """A drawn chart as vega-embed 7 writes it: the SVG (with its viewBox) in a chart wrapper."""
    return (f'<div id="altair-viz-{width}" class="vega-embed"><div class="chart-wrapper">'
            f'<svg width="{width}" height="150" viewBox="0 0 {width} 150">'
            f'<g class="role-title-text"><text>{width} px</text></g></svg></div></div>')


def _fixture(tmp_path: Path, name: str, cells: list[str]) -> str:
    path = tmp_path / f"{name}.html"
    path.write_text(_FIXTURE.format(cells="\n".join(_CELL.format(c) for c in cells)))
    return path.as_uri()


@needs_browser
def test_layout_check_fails_on_five_panels_and_long_lines(tmp_path, browser):
    """The check itself: a five-panel-wide chart, a wide chart in a closed dropdown, a
    273-character printed line and a table that does not wrap are each reported; two 230 px panels, a 70-character line and
    ``verdicts.table`` with long texts are not."""
    from tdcourse import verdicts

    long = ("the magnitude of the mean over units of R, rescaled to the paper's 64 sites, lies within a "
            "factor 1.5 of 10.74 and differs from the layer-shuffled null (two-sided permutation p < 0.05)")
    vs = [verdicts.judge("C9", "units circle about ten times", long, "smollm2-135m", 10.2, agrees=True,
                         uncertainty="null mean 14.6 ± 0.3 over 1000 layer shuffles; " * 2)]
    good = _fixture(tmp_path, "good", [
        _chart(2 * 230 + 60), "<pre>" + "x" * 70 + "</pre>", verdicts.table(vs).to_html()])
    bad = _fixture(tmp_path, "bad", [
        _chart(5 * 230 + 245), "<pre>" + "C3 agrees: " + "y" * 262 + "</pre>",
        f'<table style="white-space: nowrap"><tr><td>{long}</td></tr></table>',
        f"<details><summary>Solution</summary>{_chart(900)}</details>"])

    m, errors = _measure(browser, good)
    assert m["column"]["width"] == 688 and not errors
    assert layout_problems(m) == []

    m, _ = _measure(browser, bad)
    problems = layout_problems(m)
    assert len(problems) == 5, problems
    page, chart, hidden, text, table = problems
    assert page.startswith("the page is") and "scrolls sideways" in page
    assert chart.startswith('chart "1395 px" in cell 1 under "What we found" is 1395 px wide: 707 px past')
    assert hidden.startswith('chart "900 px" in cell 4')  # inside a closed dropdown
    assert text.startswith("printed line of 273 characters in cell 2")
    assert 60 < int(re.search(r"the box shows (\d+)", text).group(1)) < 100  # 14 px monospace in 688 px
    assert table.startswith("table in cell 3")


def test_layout_check_measures_a_code_block_in_the_prose(tmp_path, browser):
    """A code block in a page's text (a prose page's command, outside any cell) is measured as a
    cell's code is: a 200-character line is reported, a 70-character one is not."""
    path = tmp_path / "prose.html"
    block = '<div class="highlight"><pre>{}</pre></div>'
    path.write_text(_FIXTURE.format(cells=block.format("python -m tdcourse " + "z" * 181)
                                    + block.format("x" * 70)))
    m, _ = _measure(browser, path.as_uri())
    assert [t["longest"] for t in m["texts"]] == [200, 70]
    problems = layout_problems(m)
    assert len(problems) == 1, problems  # the line (it scrolls inside its box, not the page)
    assert problems[0].startswith('code line of 200 characters in the page under "What we found" scrolls')


# A phone-width page with the book's own stylesheet (book/_static/tdcourse.css) or without it.
_PHONE = """<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<style>body {{ margin: 0; font-family: sans-serif; }} article.bd-article {{ padding: 0 16px; }}
pre {{ overflow: auto; font-family: monospace; font-size: 14px; padding: 8px; margin: 0; }}
.vega-embed {{ display: inline-block; }} span.pre {{ white-space: nowrap; }} {css}</style></head><body><article class="bd-article"><section>
<h2>What we found</h2>{cells}</section></article></body></html>"""
_INPUT = '<div class="cell"><div class="cell_input"><pre>{}</pre></div></div>'


def _phone_page(tmp_path: Path, name: str, css: str) -> str:
    from tdcourse import verdicts

    vs = [verdicts.judge("C9", "units circle", "a long criterion " * 6, "smollm2-135m · random init (seed 0)", 10.2,
                         agrees=True, uncertainty="null mean 14.6 ± 0.3 over 1000 layer shuffles")]
    cells = [_INPUT.format("x = " + "y" * 70), _CELL.format(_chart(520)), _CELL.format(verdicts.table(vs).to_html()),
             _CELL.format("<pre>" + "C3 agrees: " + "z" * 57 + "</pre>"),
             # a prose page's: a log's path in inline code and in plain text, a wide table
             '<p>log <code class="docutils literal notranslate"><span class="pre">'
             + "benchmarks/results/cpu_capture_memory_70b_shape.log</span></code>, and "
             + "benchmarks/results/cpu2_robustness_costs.log too</p>",
             '<table class="table"><tr>' + "<td>agrees:&nbsp;robust&nbsp;to&nbsp;4</td>" * 4 + "</tr></table>"]
    path = tmp_path / f"{name}.html"
    path.write_text(_PHONE.format(css=css, cells="\n".join(cells)))
    return path.as_uri()


@needs_browser
def test_phone_check_passes_the_books_css_and_fails_without_it(tmp_path, browser):
    """At 390 px, with book/_static/tdcourse.css, a 520 px chart shrinks to the column, a 74-character
    code line and a 68-character printed line wrap, a long path in inline code or in plain text
    breaks, and the verdict table and a prose page's wide table scroll inside their own boxes
    (allowed); without that stylesheet the chart, the code and the printed line are each reported,
    and the page scrolls sideways."""
    css = (ROOT / "book" / "_static" / "tdcourse.css").read_text()
    m, errors = _measure(browser, _phone_page(tmp_path, "with", css), window=PHONE)
    assert not errors and m["viewport"] == PHONE[0]
    assert any(s["table"] for s in m["scrollers"]), "the wide table should scroll inside its box"
    assert layout_problems(m, phone=True) == []
    assert any(p.startswith("table in cell 3") and "scrolls sideways inside its box" in p
               for p in layout_problems(m)), \
        "at a laptop width the same scrolling table is a problem"

    m, _ = _measure(browser, _phone_page(tmp_path, "without", ""), window=PHONE)
    problems = layout_problems(m, phone=True)
    kinds = sorted(p.split(" in cell")[0].split(" of ")[0] for p in problems if not p.startswith("the page"))
    assert kinds == ['chart "520 px"', "code line", "printed line"], problems
    assert problems[0].startswith("the page is"), problems


@needs_browser
def test_script_error_check_sees_a_double_declaration(tmp_path, browser):
    """The page-error check reports what every page logged before the fix: one constant
    declared by two inline scripts."""
    decl = '<script>const THEBE_JS_URL = "x";</script>'
    url = _fixture(tmp_path, "twice", [decl + decl])
    _, errors = _measure(browser, url)
    assert errors and "THEBE_JS_URL" in errors[0] and "already been declared" in errors[0]


def test_unique_scripts_writes_an_inline_script_once():
    """book/_ext/unique_scripts.py: the inline script Sphinx holds twice (as file name None
    and as '') is written once; distinct scripts and their order are kept."""
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    from sphinx.builders.html._assets import _JavaScript
    from unique_scripts import unique_scripts

    thebe = 'const THEBE_JS_URL = "https://unpkg.com/thebe@0.8.2/lib/index.js"'
    context = {"script_files": [_JavaScript("_static/doctools.js"), _JavaScript(None, body=thebe),
                                _JavaScript("_static/sphinx-thebe.js", **{"async": "async"}),
                                _JavaScript("", body=thebe), _JavaScript("", body="var x = 1"),
                                _JavaScript("_static/doctools.js")]}
    unique_scripts(None, "notebooks/01", "page.html", context, None)
    kept = [(s.filename, s.attributes.get("body")) for s in context["script_files"]]
    assert kept == [("_static/doctools.js", None), (None, thebe), ("_static/sphinx-thebe.js", None),
                    ("", "var x = 1")]


# --- one visual language: every chart's colours are the book's palette -------------------------


def chart_specs(html: str) -> list[dict]:
    """The Vega-Lite spec of every altair chart in a built page (the first argument of the
    ``(function(spec, embedOpt){…})(SPEC, {"mode": "vega-lite"})`` call altair writes)."""
    decoder = json.JSONDecoder()
    specs = []
    for m in re.finditer(r"\}\)\((?=\{)", html):
        spec, end = decoder.raw_decode(html, m.end())
        if html[end:end + 20].lstrip().startswith(", {") and "vega-lite" in html[end:end + 40]:
            specs.append(spec)
    return specs


def _series_colours(spec, out: list) -> list:
    """Every colour encoding of a chart's series (``series`` / ``arrow`` fields), in layers,
    concatenations and facets."""
    if isinstance(spec, dict):
        enc = spec.get("encoding")
        colour = enc.get("color") if isinstance(enc, dict) else None
        if isinstance(colour, dict) and colour.get("type") == "nominal":
            out.append(colour)
        for v in spec.values():
            _series_colours(v, out)
    elif isinstance(spec, list):
        for v in spec:
            _series_colours(v, out)
    return out


#: Words of a model's own label, which a legend must not show (the book's names are plots.label's).
_MODEL_WORDS = re.compile(r"random init \(seed|smollm2|llama|· 4bit|standin", re.I)


def palette_problems(specs: list[dict], where: str) -> list[str]:
    """Where a chart's colours or names leave the book's palette (``tdcourse.plots``): a series
    colour without an explicit scale, a run or a null in a colour not its own, a model label in a
    legend."""
    from tdcourse import plots

    problems = []
    for k, spec in enumerate(specs, 1):
        for enc in _series_colours(spec, []):
            scale = enc.get("scale") or {}
            if "domain" not in scale or "range" not in scale:
                problems.append(f"{where}, chart {k}: the colour of {enc.get('field')!r} has no explicit scale")
                continue
            for name, colour in zip(scale["domain"], scale["range"]):
                name = str(name)
                if _MODEL_WORDS.search(name):
                    problems.append(f"{where}, chart {k}: legend names a model, {name!r} (use plots.label(run))")
                run = plots._run_of(name)
                if run is not None and colour not in plots.RUN_COLORS[run]:  # a run's series: its hue
                    problems.append(f"{where}, chart {k}: {name!r} is {colour}, not the {run} hue "
                                    f"{plots.RUN_COLORS[run]}")
                elif name in plots.RUN_COLORS and colour != plots.RUN_COLORS[name][0]:
                    problems.append(f"{where}, chart {k}: {name!r} is {colour}, not {plots.RUN_COLORS[name][0]}")
                null = plots._null_of(name)
                if null is not None and run is None and colour not in plots.NULL_COLORS[null]:
                    problems.append(f"{where}, chart {k}: {name!r} is {colour}, not {plots.NULL_COLORS[null]}")
    return problems


@pytest.mark.parametrize("page", _pages() or [None], ids=lambda p: p.stem if p else "no-pages")
def test_every_chart_uses_the_books_palette(page):
    """In every chart of every built chapter a run (trained, 4-bit copy, random-init control) and a
    null or yardstick have the colour and name of tdcourse.plots' palette, on an explicit scale."""
    if page is None:
        pytest.skip("the book is not built: run `make book` first")
    html = page.read_text()
    specs = chart_specs(html)
    assert len(specs) == len(re.findall(r'<div id="altair-viz-[0-9a-f]+"', html)), "a chart's spec was not found"
    assert palette_problems(specs, page.stem) == []


def test_palette_check_fails_on_an_old_chart():
    """The check itself: a chart as the book drew it before (no scale, a model label) is reported;
    the builders' charts are not."""
    import numpy as np
    import altair as alt
    import pandas as pd

    from tdcourse import plots

    old = alt.Chart(pd.DataFrame({"x": [1, 2], "series": ["smollm2-135m · random init (seed 0)", "trained"]})) \
        .mark_point().encode(x="x:Q", color=alt.Color("series:N"))
    wrong = plots.histograms({"trained": np.arange(5.0)}, "x", colors={"trained": "#f58518"})
    assert palette_problems([old.to_dict()], "old") == ["old, chart 1: the colour of 'series' has no explicit scale"]
    assert palette_problems([wrong.to_dict()], "w") == [
        "w, chart 1: 'trained' is #f58518, not the trained hue ('#4c78a8', '#9ecae9', '#2a4a70', '#6f9fcf')"]
    bad_name = plots.histograms({"smollm2-135m": np.arange(5.0)}, "x")
    assert "legend names a model" in palette_problems([bad_name.to_dict()], "n")[0]
    good = plots.curves({"random-init control": np.arange(6.0), "trained": np.ones(6)}, ["a"] * 6, "y")
    html = f'<div id="altair-viz-1"></div><script>(function(spec, embedOpt){{}})({json.dumps(good.to_dict())}, ' \
           '{"mode": "vega-lite"});</script>'
    assert len(chart_specs(html)) == 1 and palette_problems(chart_specs(html), "g") == []


@needs_browser
def test_offline_check_reads_what_the_page_shows(tmp_path, browser):
    """The load the checks share reports the text a reader sees (an embed's error, a traceback)
    and no typeset maths where no MathJax ran."""
    url = _fixture(tmp_path, "broken", [
        '<div class="vega-embed">Javascript Error: Loading failed</div>',
        "<pre>Traceback (most recent call last):\n  File ...</pre>", "<p>\\(x^2\\)</p>"])
    m, _ = _measure(browser, url)
    assert "Javascript Error: Loading failed" in m["shown"]
    assert "Traceback (most recent call last)" in m["shown"]
    assert m["typeset"] == 0 and m["expected"] == 0
