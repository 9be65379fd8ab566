"""The repository address and release live in _config.yml; badges, the placeholder note, the Colab
install cells and CONTRIBUTING's copy of that cell must agree with it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import repo_url  # noqa: E402


def test_badges_notes_and_install_cells_agree_with_config():
    assert repo_url.problems() == []


def test_the_release_is_the_package_version():
    """The install cell installs the tag of the version the book documents (bump both together:
    python tools/repo_url.py --release vX.Y.Z)."""
    text = (ROOT / "pyproject.toml").read_text()
    pyproject_version = next(line.split("=")[1].strip().strip('"') for line in text.splitlines()
                             if line.startswith("version"))
    assert repo_url.release() == f"v{pyproject_version}"


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


def _cell(root: Path, name: str, i: int) -> str:
    return "".join(json.loads((root / "notebooks" / name).read_text())["cells"][i]["source"])


def test_a_stale_badge_is_found(tmp_path, monkeypatch):
    root = _copy(tmp_path, monkeypatch)
    nb = root / "notebooks" / "03_growth.ipynb"
    nb.write_text(nb.read_text().replace("github/tdcourse/transformer-dynamics/", "github/someone/else/"))
    found = repo_url.problems()
    assert len(found) == 1 and found[0].startswith("03_growth.ipynb: Colab badge")


def test_a_stale_install_cell_or_contributing_is_found(tmp_path, monkeypatch):
    root = _copy(tmp_path, monkeypatch)
    nb = root / "notebooks" / "05_rotations.ipynb"
    nb.write_text(nb.read_text().replace('REF = \\"v0.1.0\\"', 'REF = \\"main\\"'))
    contributing = root / "CONTRIBUTING.md"
    contributing.write_text(contributing.read_text().replace("raise SystemExit(", "raise RuntimeError("))
    found = repo_url.problems()
    assert [f.split(":")[0] for f in found] == ["05_rotations.ipynb", "CONTRIBUTING.md"], found


def test_the_placeholder_note_follows_the_config(tmp_path, monkeypatch):
    root = _copy(tmp_path, monkeypatch)
    assert repo_url.placeholder() is True
    assert repo_url.NOTE in _cell(root, "01_residual_stream.ipynb", 0)
    nb = root / "notebooks" / "02_continuity.ipynb"
    data = json.loads(nb.read_text())
    data["cells"][0]["source"] = "".join(data["cells"][0]["source"]).replace("\n\n" + repo_url.NOTE, "")
    nb.write_text(json.dumps(data))
    found = repo_url.problems()
    assert len(found) == 1 and "02_continuity.ipynb: the placeholder note under the badge is missing" in found[0]


def test_set_url_moves_every_place_and_ends_the_placeholder(tmp_path, monkeypatch):
    root = _copy(tmp_path, monkeypatch)
    repo_url.set_url("https://github.com/fork/td-course")
    assert repo_url.repository() == ("https://github.com/fork/td-course", "fork/td-course", "main")
    assert repo_url.placeholder() is False
    assert repo_url.problems() == []
    cell = _cell(root, "01_residual_stream.ipynb", 1)
    assert 'URL = "https://github.com/fork/td-course"' in cell and 'REF = "v0.1.0"' in cell
    first = _cell(root, "01_residual_stream.ipynb", 0)
    assert "github/fork/td-course/blob/main/notebooks/01_residual_stream.ipynb" in first
    assert repo_url.NOTE not in first
    assert "github/fork/td-course/" in (root / "CONTRIBUTING.md").read_text()
    # the rest of _config.yml is untouched
    config = yaml.safe_load((root / "_config.yml").read_text())
    assert config["repository"]["release"] == "v0.1.0" and config["execute"]["execute_notebooks"] == "cache"


def test_set_release_pins_every_install_cell(tmp_path, monkeypatch):
    root = _copy(tmp_path, monkeypatch)
    repo_url.set_release("3f2a9c1")
    assert repo_url.release() == "3f2a9c1" and repo_url.problems() == []
    assert 'REF = "3f2a9c1"' in _cell(root, "07_teleport.ipynb", 1)
    with pytest.raises(SystemExit, match="not a git tag or commit"):
        repo_url.set_release("v1; rm -rf /")


def test_the_install_cell_is_as_ruff_formats_it(tmp_path):
    """Written whole by the tool, it must not be reformatted by `ruff format` (the test of the
    notebooks' layout would then disagree with repo_url's check)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install ruff)")
    import subprocess

    src = tmp_path / "cell.py"
    cell = repo_url.colab_cell("https://github.com/tdcourse/transformer-dynamics", "v0.1.0") + "\n"
    src.write_text(cell)
    subprocess.run([ruff, "format", "--no-force-exclude", "--line-length", "74", "--isolated", str(src)],
                   check=True, capture_output=True)
    assert src.read_text() == cell
