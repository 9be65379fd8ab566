"""The course's one setting: environment over the settings file over the default."""

from __future__ import annotations

import json

import pytest

from tdcourse import settings
from tdcourse.models import DEFAULT_MODEL


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("TDCOURSE_MODEL", raising=False)
    monkeypatch.delenv("TDCOURSE_N", raising=False)


def test_default_is_the_embedded_model():
    s = settings.course_settings()
    assert (s.model, s.n, s.source) == (DEFAULT_MODEL, 1000, "default")
    model, n = s
    assert (model, n) == ("smollm2-135m", 1000)


def test_environment_wins_over_the_file(monkeypatch):
    settings.use_model("llama-3.1-8b", 500)
    assert tuple(settings.course_settings()) == ("llama-3.1-8b", 500)
    monkeypatch.setenv("TDCOURSE_MODEL", "meta-llama/Llama-3.1-8B")
    s = settings.course_settings()
    assert (s.model, s.n) == ("meta-llama/Llama-3.1-8B", 500)  # N still from the file
    assert "TDCOURSE_MODEL" in s.source and "course.json" in s.source
    monkeypatch.setenv("TDCOURSE_N", "128")
    assert tuple(settings.course_settings()) == ("meta-llama/Llama-3.1-8B", 128)


def test_use_model_writes_the_file_in_the_cache(tmp_path):
    path = settings.use_model("smollm2-135m", 200)
    assert path == settings.settings_file()
    assert json.loads(path.read_text()) == {"model": "smollm2-135m", "n": 200}


def test_a_folder_is_stored_as_an_absolute_path(tmp_path, monkeypatch):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    settings.use_model("my-model", 10)
    assert settings.course_settings().model == str(folder.resolve())


@pytest.mark.parametrize("bad", ["0", "-3", "1.5", "ten", "True"])
def test_bad_n_in_the_environment_is_refused(monkeypatch, bad):
    monkeypatch.setenv("TDCOURSE_N", bad)
    with pytest.raises(ValueError, match="TDCOURSE_N"):
        settings.course_settings()


@pytest.mark.parametrize("bad", [0, 1.5, True, "x", None])
def test_use_model_refuses_a_bad_n(bad):
    with pytest.raises(ValueError, match="N must be"):
        settings.use_model("smollm2-135m", bad)


def test_a_broken_settings_file_says_how_to_fix_it():
    settings.settings_file().write_text("{not json")
    with pytest.raises(ValueError, match="delete it"):
        settings.course_settings()
    settings.settings_file().write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        settings.course_settings()


def test_every_chapter_reads_the_one_setting():
    """No chapter types its own model or N: each takes them from course_settings()."""
    import re
    from pathlib import Path

    for nb in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        code = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        assert "MODEL, N = tdcourse.course_settings()" in code, nb.name
        assert not re.search(r"^\s*(MODEL|N)\s*=", code, flags=re.M), f"{nb.name} sets MODEL or N by hand"


# --- checked when written and when read (issue 19) -------------------------------------------


@pytest.mark.parametrize("model, says", [
    ("gpt5", "Unknown model 'gpt5'"),
    ("bad id/x y", "Unknown model"),
    ("FILE", "is a file, not a model folder"),
    ("models/llama-L9", "does not exist.*read as a path, not as a hub id"),
    ("./nowhere", "does not exist"),
    ("EMPTY", "has no config.json"),
])
def test_use_model_refuses_what_names_no_model_and_writes_nothing(model, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "models" / "llama-L8").mkdir(parents=True)
    with pytest.raises(ValueError, match=says):
        settings.use_model(model, 10)
    assert not settings.settings_file().exists()
    assert not [p for p in settings.settings_file().parent.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize("content, says", [
    ({"modle": "llama-3.1-8b"}, r"unknown keys \['modle'\].*may hold only \['model', 'n', 'engine', 'remote'\]"),
    ({"model": "smollm2-135m", "n": 10, "N": 5}, r"unknown keys \['N'\]"),
    ({"model": "gpt5"}, "Unknown model 'gpt5'"),
    ({"model": 7}, "The model must be"),
    ({"n": "many"}, "N must be"),
])
def test_a_settings_file_is_checked_when_read(content, says):
    settings.settings_file().write_text(json.dumps(content))
    with pytest.raises(ValueError, match=says) as err:
        settings.course_settings()
    assert "course.json" in str(err.value)


def test_a_settings_file_that_is_not_utf8_names_the_file():
    settings.settings_file().write_bytes(b'{"model": "sm\xf6llm"}')
    with pytest.raises(ValueError, match=r"course.json is not UTF-8 text.*delete it"):
        settings.course_settings()


def test_the_environment_is_checked_too(monkeypatch, tmp_path):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("TDCOURSE_MODEL", str(tmp_path / "afile"))
    with pytest.raises(ValueError, match="TDCOURSE_MODEL.*is a file, not a model folder"):
        settings.course_settings()
    monkeypatch.setenv("TDCOURSE_MODEL", "gpt5")
    with pytest.raises(ValueError, match="TDCOURSE_MODEL.*Unknown model"):
        settings.course_settings()
    # a folder that is gone is kept: its captures may be cached (an instructor's export)
    monkeypatch.setenv("TDCOURSE_MODEL", str(tmp_path / "deleted-model"))
    assert settings.course_settings().model == str(tmp_path / "deleted-model")
