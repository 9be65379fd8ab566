"""Write the files that let the built book draw charts and maths with no network.

1. ``book/_static/vega-offline.js``: the Vega, Vega-Lite and Vega-Embed libraries bundled by
   vl-convert, wrapped in a function scope (Sphinx's own JS defines a global ``_`` that the
   bundle would clash with), preceded by a ``VEGA_DEBUG`` preset whose version strings are
   exactly those altair's chart HTML asks for. altair's default renderer then uses this
   copy instead of the CDN. Jupyter Book loads every ``.js`` in ``_static`` on every page.
2. ``book/_extra/mathjax/tex-svg.js``: MathJax 3 from the npm registry (``npm pack``),
   served through ``html_extra_path``; ``_config.yml`` points ``mathjax_path`` at it.

Run: ``python tools/offline_assets.py`` (the Makefile does, before each book build).
Regenerate whenever altair is upgraded: ``tests/test_book.py`` checks the versions match.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VEGA_JS = ROOT / "book" / "_static" / "vega-offline.js"
MATHJAX_JS = ROOT / "book" / "_extra" / "mathjax" / "tex-svg.js"
MATHJAX_VERSION = "3.2.2"


def altair_versions() -> dict[str, str]:
    """The library versions altair's default HTML renderer asks the CDN for."""
    import altair as alt

    chart = alt.Chart(alt.Data(values=[{"a": 1}])).mark_point().encode(x="a:Q")
    with alt.renderers.enable("default"):
        html = chart._repr_mimebundle_()["text/html"]  # what a notebook cell outputs
    found = dict(re.findall(r'maybeLoadScript\("(vega|vega-lite|vega-embed)", "([^"]+)"\)', html))
    if set(found) != {"vega", "vega-lite", "vega-embed"}:
        raise RuntimeError("Could not read the Vega versions from altair's HTML template; has altair changed?")
    return {"vega_version": found["vega"], "vegalite_version": found["vega-lite"],
            "vegaembed_version": found["vega-embed"]}


def preset_line(versions: dict[str, str]) -> str:
    return f"window.VEGA_DEBUG = Object.assign(window.VEGA_DEBUG || {{}}, {json.dumps(versions, sort_keys=True)});"


def write_vega_bundle() -> Path:
    import vl_convert as vlc

    versions = altair_versions()
    vl = "v" + "_".join(versions["vegalite_version"].split(".")[:2])
    try:
        bundle = vlc.javascript_bundle(vl_version=vl)
    except Exception:
        bundle = vlc.javascript_bundle()
    text = (f"/* Vega / Vega-Lite / Vega-Embed for offline reading, made by tools/offline_assets.py (vl-convert {vlc.__version__}). */\n"
            f"{preset_line(versions)}\n(function () {{\n{bundle}\n}})();\n")
    VEGA_JS.parent.mkdir(parents=True, exist_ok=True)
    VEGA_JS.write_text(text)
    return VEGA_JS


def write_mathjax() -> Path | None:
    if MATHJAX_JS.exists():
        return MATHJAX_JS
    npm = shutil.which("npm")
    if npm is None:
        print("npm not found: the book will load MathJax from its CDN (maths needs a network).", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run([npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--silent"], cwd=tmp, check=True,
                           capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError) as err:
            print(f"npm pack mathjax failed ({err}): the book will load MathJax from its CDN.", file=sys.stderr)
            return None
        tgz = next(Path(tmp).glob("mathjax-*.tgz"))
        with tarfile.open(tgz) as tar:
            member = tar.getmember("package/es5/tex-svg.js")
            data = tar.extractfile(member).read()
    MATHJAX_JS.parent.mkdir(parents=True, exist_ok=True)
    MATHJAX_JS.write_bytes(data)
    return MATHJAX_JS


def main() -> int:
    print(f"wrote {write_vega_bundle().relative_to(ROOT)}")
    mj = write_mathjax()
    if mj:
        print(f"wrote {mj.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
