from __future__ import annotations

from tdcourse import env


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path / "c"))
    assert env.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    monkeypatch.delenv("TDCOURSE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert env.cache_dir() == tmp_path / "xdg" / "tdcourse"


def test_where(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.setenv("CI", "true")
    assert env.where() == "ci"
    monkeypatch.setenv("CI", "")
    assert env.where() == "laptop"
    monkeypatch.setenv("COLAB_RELEASE_TAG", "x")
    assert env.where() == "colab"


def test_hf_token_from_env(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abc")
    assert env.hf_token() == "hf_abc"


def test_report_prints_device_and_cache():
    text = str(env.report())
    assert "device" in text and "cache" in text
