"""Full and read-only disks (issue 19): room checked before every large write, a margin never
larger than the write, no temporary left behind on any failure path, and hints that name a
folder that can be written."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tdcourse import env, models, store
from tdcourse.capture import CacheError, save_activations, site_names


def _free(monkeypatch, n_bytes):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=n_bytes))


def _temporaries():
    root = env.cache_dir_path()
    return [p for p in root.rglob("*") if p.name.startswith(".tmp")] if root.exists() else []


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_the_margin_is_never_larger_than_the_write(monkeypatch):
    """An 8 KB capture on a disk with 50 MB free was refused ("needs about 0.06 GiB")."""
    _free(monkeypatch, 50 * 2**20)
    assert store.check_cache_room(8 * 1024) == store.activations_dir()
    _free(monkeypatch, 12 * 1024)
    with pytest.raises(CacheError, match=r"has 12 KiB free and this capture needs about 16 KiB"):
        store.check_cache_room(8 * 1024)
    # a large write keeps 64 MiB free beside it
    _free(monkeypatch, 2**30 + 32 * 2**20)
    with pytest.raises(CacheError, match=r"needs about 1\.06 GiB"):
        store.check_cache_room(2**30)


def test_the_first_conversion_checks_room_before_writing(monkeypatch):
    def never(*a, **k):
        raise AssertionError("the conversion started on a full disk")

    monkeypatch.setattr(models, "_convert_smollm2_into", never)
    _free(monkeypatch, 100 * 2**20)
    with pytest.raises(models.ModelLoadError, match=r"converting the embedded SmolLM2 .*needs about 6\d\d\.\d MiB.*Nothing"):
        models._converted_smollm2_dir()
    assert not (env.cache_dir() / "models" / "smollm2-135m").exists() and not _temporaries()


def _meta():
    return {"format_version": store.FORMAT_VERSION, "model": {"name": "x", "source": "x", "revision": None,
            "quant": "none", "dtype": "float32", "init": "trained", "seed": 0}, "recipe": {"n": 2},
            "data_sha256": "d", "input_ids_sha256": "i", "sites": ["resid_pre", "resid_mid"], "position": "last"}


def _write_entry_full(monkeypatch):
    real = os.pwrite

    def half(fd, data, offset):  # writes part of a block, then the disk is full
        real(fd, bytes(data[:8]), offset)
        _enospc()

    monkeypatch.setattr(store.os, "pwrite", half)
    try:
        with pytest.raises(CacheError, match="No space left on device"):
            save_activations(np.zeros((2, 2, 3), np.float32), site_names(1), ["a", "b"], _meta())
    finally:
        monkeypatch.setattr(store.os, "pwrite", real)


def _save_result_full(monkeypatch):
    def half(file, *a, **k):
        open(file, "wb").write(b"PK" * 10)
        _enospc()

    monkeypatch.setattr(np, "savez", half)
    with pytest.raises(CacheError, match="Could not keep the result"):
        store.save_result(_meta(), "teleport", {"x": np.ones(3)}, {})


def _verdicts_save_full(monkeypatch):
    from tdcourse import verdicts

    target = verdicts.save([], "00_old")  # an old file that must survive
    before = target.read_bytes()
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fd, mode):
            self.f = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, text):
            self.f.write(text[:10])
            self.f.flush()
            _enospc()

    monkeypatch.setattr(verdicts.os, "fdopen", Full)
    with pytest.raises(OSError, match=r"Could not save the verdicts to .*00_old.json \(No space left on device\)"):
        verdicts.save([], "00_old")
    assert target.read_bytes() == before
    leftovers = [p for p in target.parent.iterdir() if p.suffix == ".tmp" or p.name.startswith(".tmp")]
    assert not leftovers, leftovers


def _use_model_full(monkeypatch):
    from pathlib import Path

    from tdcourse import settings

    real = Path.write_text

    def half(self, text, *a, **k):
        real(self, text[:3], *a, **k)
        _enospc()

    monkeypatch.setattr(Path, "write_text", half)
    with pytest.raises(OSError):
        settings.use_model("smollm2-135m", 10)
    monkeypatch.setattr(Path, "write_text", real)
    assert not settings.settings_file().exists()


def _conversion_full(monkeypatch):
    def half(folder, gguf):
        (folder / "model.safetensors").write_bytes(b"x" * 1000)
        _enospc()

    monkeypatch.setattr(models, "_convert_smollm2_into", half)
    with pytest.raises(OSError):
        models._converted_smollm2_dir()


def _standin_full(monkeypatch, tmp_path):
    from transformers import LlamaForCausalLM

    from tdcourse import standins

    monkeypatch.setattr(standins, "STANDINS", {"tiny": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                            num_key_value_heads=1, head_dim=8, intermediate_size=16)})
    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", lambda self, folder, **k: (
        open(os.path.join(folder, "model.safetensors"), "wb").write(b"x" * 100), _enospc()))
    monkeypatch.setattr(models, "_converted_smollm2_dir", lambda: _tokenizer_folder(tmp_path))
    with pytest.raises(OSError):
        standins.build_standin("tiny")


def _tokenizer_folder(tmp_path):
    from test_cache_roundtrip import _tiny_folder

    folder = tmp_path / "tok"
    if not folder.exists():
        _tiny_folder(folder)
    return folder


@pytest.mark.parametrize("writer", ["entry", "result", "verdicts", "use_model", "conversion", "standin"])
def test_no_temporary_is_left_when_a_write_fails(writer, monkeypatch, tmp_path):
    if writer == "entry":
        _write_entry_full(monkeypatch)
    elif writer == "result":
        _save_result_full(monkeypatch)
    elif writer == "verdicts":
        _verdicts_save_full(monkeypatch)
    elif writer == "use_model":
        _use_model_full(monkeypatch)
    elif writer == "conversion":
        _conversion_full(monkeypatch)
    else:
        _standin_full(monkeypatch, tmp_path)
    assert not _temporaries(), _temporaries()


def test_a_read_only_home_is_never_suggested(tmp_path):
    """HOME on a folder that takes no writes, no TDCOURSE_CACHE: the message names a folder that
    can be written (in the temporary folder), not one inside the home."""
    child_env = {k: v for k, v in os.environ.items() if k not in ("TDCOURSE_CACHE", "XDG_CACHE_HOME")}
    child_env.update(HOME="/proc/self", TMPDIR=str(tmp_path))
    code = "from tdcourse.__main__ import main; import sys; sys.exit(main(['capture', '--n', '3']))"
    out = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line
    assert "$HOME" not in line and "TDCOURSE_CACHE=/proc" not in line
    assert f"export TDCOURSE_CACHE={tmp_path}/tdcourse-cache" in line, line
    assert env.cache_hint().endswith("$HOME/tdcourse-cache")  # a writable home is suggested as before
