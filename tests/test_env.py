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


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    import os
    import time

    live = tmp_path / env.temporary_name(".safetensors")  # ours: this process is alive
    dead = tmp_path / f"{env.TMP_PREFIX}{env._host()}-99999999-abc.safetensors"  # a killed conversion
    old = tmp_path / f"{env.TMP_PREFIX}otherhost-12-abc"  # another machine's, a day old
    keep = tmp_path / "model.safetensors"
    for p in (live, dead, keep):
        p.write_bytes(b"x")
    old.mkdir()
    (old / "acts.npy").write_bytes(b"x")
    os.utime(old, (time.time() - 86400,) * 2)
    removed = env.clean_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([dead, old])
    assert live.exists() and keep.exists() and not dead.exists() and not old.exists()
    assert live.name.startswith(".tmp-") and str(os.getpid()) in live.name
