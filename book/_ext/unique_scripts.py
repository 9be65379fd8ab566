"""Sphinx extension: write each page's inline scripts once.

Why: sphinx-thebe (loaded by Jupyter Book on every page) adds an inline script,
``const THEBE_JS_URL = …``, with ``app.add_js_file(None, body=…)`` after the HTML builder has
started. Sphinx 7.4 then holds it twice: once as added (file name ``None``) and once re-added
from its registry before writing (file name ``''``); the two compare unequal, so every page
got two copies and the browser threw ``SyntaxError: Identifier 'THEBE_JS_URL' has already
been declared`` (sphinx-togglebutton's inline ``var`` is doubled the same way, harmlessly).

This keeps the first of any scripts that are equal once ``None`` and ``''`` are treated as
the same file name. Enabled in ``_config.yml``::

    sphinx:
      local_extensions:
        unique_scripts: book/_ext
"""

from __future__ import annotations


def script_key(script) -> tuple:
    """Identity of a script entry: its file name (``None`` and ``''`` alike) and attributes."""
    filename = getattr(script, "filename", script) or ""
    attributes = getattr(script, "attributes", {}) or {}
    return (str(filename), tuple(sorted((str(k), str(v)) for k, v in attributes.items())))


def unique_scripts(app, pagename, templatename, context, doctree) -> None:
    """``html-page-context`` handler: drop repeated entries of ``context["script_files"]``."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = script_key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", unique_scripts, priority=900)  # after other extensions add theirs
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
