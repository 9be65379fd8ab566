"""The course repository's address lives in one place: ``repository.url`` (and ``branch``) in
``_config.yml``. Every chapter's "Open in Colab" badge and Colab install cell, the book's launch
button and CONTRIBUTING's templates derive from it.

    python tools/repo_url.py                 # list every place that disagrees with _config.yml
    python tools/repo_url.py --set URL       # a fork: write URL into _config.yml and every place

``tests/test_repo_url.py`` fails when a badge or install cell disagrees with ``_config.yml``.
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


def repository() -> tuple[str, str, str]:
    """``(url, "owner/name", branch)`` from ``_config.yml``; ``ValueError`` if not a GitHub URL."""
    repo = yaml.safe_load(CONFIG.read_text())["repository"]
    url, branch = repo["url"].rstrip("/"), repo.get("branch", "main")
    m = GITHUB.match(url)
    if not m:
        raise ValueError(f"repository.url in {CONFIG} must be https://github.com/<owner>/<name>, got {url!r}")
    return url, m.group(1), branch


def badge(slug: str, branch: str, notebook: str) -> str:
    """The Colab badge line of ``notebook`` (a file name under ``notebooks/``)."""
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{notebook})")


def install_line(url: str) -> str:
    """The Colab cell's line that installs the course library from the repository."""
    return f'    %pip install -q "tdcourse[quant] @ git+{url}"'


_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*\)")
_INSTALL = re.compile(r'    %pip install -q "tdcourse\[quant\] @ git\+[^"]*"')


def problems() -> list[str]:
    """Every place whose address disagrees with ``_config.yml`` (empty: all agree)."""
    url, slug, branch = repository()
    out = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        text = ["".join(c["source"]) for c in cells]
        badges = [m.group(0) for t in text for m in _BADGE.finditer(t)]
        installs = [m.group(0) for t in text for m in _INSTALL.finditer(t)]
        if badges != [badge(slug, branch, nb.name)]:
            out.append(f"{nb.name}: Colab badge {badges or 'missing'} should be {badge(slug, branch, nb.name)}")
        if installs != [install_line(url)]:
            out.append(f"{nb.name}: install cell {installs or 'missing'} should be {install_line(url).strip()}")
    return out


def set_url(new_url: str) -> None:
    """Write ``new_url`` into ``_config.yml``, every notebook's badge and install cell, CONTRIBUTING."""
    old_url, old_slug, branch = repository()
    m = GITHUB.match(new_url.rstrip("/"))
    if not m:
        raise SystemExit(f"error: {new_url!r} is not https://github.com/<owner>/<name>")
    new_url, new_slug = new_url.rstrip("/"), m.group(1)
    CONFIG.write_text(CONFIG.read_text().replace(f"url: {old_url}", f"url: {new_url}"))
    for path in [*sorted((ROOT / "notebooks").glob("*.ipynb")), ROOT / "CONTRIBUTING.md"]:
        text = path.read_text()
        path.write_text(text.replace(f"github/{old_slug}/", f"github/{new_slug}/").replace(f"git+{old_url}", f"git+{new_url}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", metavar="URL", help="write this repository address everywhere")
    args = parser.parse_args(argv)
    if args.set:
        set_url(args.set)
    found = problems()
    for line in found:
        print(line)
    if not found:
        print(f"every badge and install cell points at {repository()[0]}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
