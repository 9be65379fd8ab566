"""The built book, as a reader sees it: every chapter page opened in headless Chromium with
the network blocked; each chart must be drawn and no error or traceback shown.

Needs the built book (``make book``) and Debian's ``chromium`` (``.ci/run`` installs it; on a
laptop: ``sudo apt-get install chromium``, or set ``CHROMIUM=/path/to/chrome``). Without
either, these tests are skipped with a message saying so. Screenshots go to
``_build/screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
sys.path.insert(0, str(ROOT / "tools"))


def _chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _pages() -> list[Path]:
    return sorted(HTML.glob("notebooks/*.html"))


def _run_chromium(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}",
             # no network: any host name fails to resolve, as on a workshop's dead Wi-Fi
             "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=20000"]
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=timeout)


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
