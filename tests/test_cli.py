"""The command line: every expected error is one line ``error: ...`` and exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tdcourse import capture as cap
from tdcourse.__main__ import main


@pytest.mark.parametrize("argv, says", [
    (["capture", "--n", "14", "--batch-size", "-1"], "--batch-size: must be at least 1, got -1"),
    (["capture", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["capture", "--n", "1.5"], "--n: must be a whole number, got '1.5'"),
    (["capture", "--n", "0"], "--n: must be at least 1"),
    (["capture", "--seed", "-2"], "--seed: must be 0 or more"),
    (["scoreboard", "--n", "0"], "--n: must be at least 1"),
    (["export", "--n", "-5", "--out", "x.tar"], "--n: must be at least 1"),
])
def test_bad_arguments_stop_before_anything_runs(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cache_dir_that_is_a_file(tmp_path, monkeypatch, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("TDCOURSE_CACHE", str(f))
    assert main(["info"]) == 2
    assert "is a file, not a folder" in _one_error_line(capsys)
    assert main(["capture", "--n", "3"]) == 2
    assert "is a file, not a folder" in _one_error_line(capsys)


def test_entry_without_sites_is_one_line(capsys, monkeypatch):
    """A broken entry (metadata lacking ``sites``) gives the rebuild hint, not a KeyError."""
    meta = {"format_version": cap.FORMAT_VERSION, "model": {"name": "x", "quant": "none", "dtype": "float32",
            "init": "trained"}, "recipe": {"n": 2}, "data_sha256": "d", "input_ids_sha256": "i",
            "sites": ["resid_pre", "resid_mid"], "position": "last"}
    path = cap.save_activations(np.zeros((2, 2, 3), np.float32), cap.site_names(1), ["a", "b"], meta)
    record = json.loads((path / "meta.json").read_text())
    del record["sites"]
    (path / "meta.json").write_text(json.dumps(record))
    monkeypatch.setattr(cap, "_entry_dir", lambda m: path)
    monkeypatch.setattr(cap, "open_model", lambda spec: (_Tok(), _Cfg(), spec))
    assert main(["capture", "--n", "2"]) == 2
    line = _one_error_line(capsys)
    assert "lacks ['sites']" in line and "--rebuild" in line


class _Tok:
    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[1, 2, 3] for _ in texts]}

    def batch_decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        return ["abc" for _ in ids]


class _Cfg:
    num_hidden_layers = 1
    hidden_size = 3


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), FloatingPointError("NaN in capture"),
                                 PermissionError(13, "Permission denied")])
def test_any_expected_error_is_one_line(exc, monkeypatch, capsys):
    def boom(**kwargs):
        raise exc

    monkeypatch.setattr(cap, "load_activations", boom)
    assert main(["capture", "--n", "3"]) == 2
    line = _one_error_line(capsys)
    assert str(exc.args[-1]) in line


def test_export_and_import_say_what_is_wrong(tmp_path, capsys):
    assert main(["export", "--model", "smollm2-135m", "--n", "3", "--out", str(tmp_path / "x.tar")]) == 2
    assert "capture it first" in _one_error_line(capsys)
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    assert main(["import", str(tmp_path / "junk.tar")]) == 2
    assert "cannot be opened as an export" in _one_error_line(capsys)
