"""The repository address lives in _config.yml; badges and install cells must agree with it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import repo_url  # noqa: E402


def test_badges_and_install_cells_agree_with_config():
    assert repo_url.problems() == []


def _copy(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", root)
    shutil.copy(ROOT / "CONTRIBUTING.md", root)
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(nb, root / "notebooks")
    monkeypatch.setattr(repo_url, "ROOT", root)
    monkeypatch.setattr(repo_url, "CONFIG", root / "_config.yml")
    return root


def test_a_stale_badge_is_found(tmp_path, monkeypatch):
    root = _copy(tmp_path, monkeypatch)
    nb = root / "notebooks" / "03_growth.ipynb"
    nb.write_text(nb.read_text().replace("github/tdcourse/transformer-dynamics/", "github/someone/else/"))
    found = repo_url.problems()
    assert len(found) == 1 and found[0].startswith("03_growth.ipynb: Colab badge")


def test_set_url_moves_every_place(tmp_path, monkeypatch):
    root = _copy(tmp_path, monkeypatch)
    repo_url.set_url("https://github.com/fork/td-course")
    assert repo_url.repository() == ("https://github.com/fork/td-course", "fork/td-course", "main")
    assert repo_url.problems() == []
    cell = "".join(json.loads((root / "notebooks" / "01_residual_stream.ipynb").read_text())["cells"][1]["source"])
    assert "git+https://github.com/fork/td-course" in cell
