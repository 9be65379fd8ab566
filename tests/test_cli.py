"""The command line: every expected error is one line ``error: ...`` and exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tdcourse import capture as cap
from tdcourse import env
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


# --- every failure is one line (issue 19) -----------------------------------------------------


def _oov_folder(path):
    """A model whose embedding has 50 rows beside a tokenizer of 258 tokens: ids past 49 exist."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from test_cache_roundtrip import _tiny_folder

    _tiny_folder(path)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      eos_token_id=1, bos_token_id=1)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return str(path)


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Files a learner might point the CLI at, in a working folder that has a models/ folder."""
    import os

    from test_cache_roundtrip import _tiny_folder
    from test_exchange import _export_tar

    monkeypatch.delenv("TDCOURSE_MODEL", raising=False)
    monkeypatch.delenv("TDCOURSE_N", raising=False)
    work = tmp_path / "work"
    (work / "models" / "llama-L8").mkdir(parents=True)
    monkeypatch.chdir(work)
    w = {"tmp": tmp_path, "file": work / "weights.bin", "empty": work / "empty-model"}
    w["file"].write_bytes(b"x" * 100)
    w["empty"].mkdir()
    w["folder"] = _tiny_folder(tmp_path / "tiny")
    gpt2 = _tiny_folder(tmp_path / "gpt2ish")
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(gpt2)
    w["gpt2"] = gpt2
    w["oov"] = _oov_folder(tmp_path / "oov")
    w["damaged"] = _tiny_folder(tmp_path / "damaged")
    weights = tmp_path / "damaged" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # a download cut short
    # export files: junk, truncated, and one whose metadata says recipe.n = null
    w["junk"] = tmp_path / "junk.tar"
    w["junk"].write_bytes(b"not a tar" * 50)
    entry = cap.save_activations(np.zeros((3, 4, 5), np.float32), cap.site_names(2), ["a", "b", "c"],
                                 {"format_version": cap.FORMAT_VERSION, "model": {"name": "x", "source": "x",
                                  "revision": None, "quant": "none", "dtype": "float32", "init": "trained", "seed": 0},
                                  "recipe": {"n": 3}, "data_sha256": "d", "input_ids_sha256": "i",
                                  "sites": ["resid_pre", "resid_mid"], "position": "last"})
    good = _export_tar(tmp_path, [entry], name="good.tar")
    w["truncated"] = tmp_path / "truncated.tar"
    w["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 3])

    def null_n(manifest, files):
        import hashlib

        key = next(k for k in files if k.endswith("meta.json"))
        record = json.loads(files[key])
        record["meta"]["recipe"]["n"] = None
        files[key] = json.dumps(record).encode()
        manifest["entries"][0]["meta_sha256"] = hashlib.sha256(files[key]).hexdigest()

    w["null_n"] = _export_tar(tmp_path, [entry], edit=null_n, name="null-n.tar")
    import shutil

    shutil.rmtree(entry)
    os.environ.pop("TDCOURSE_MODEL", None)
    return w


def _absurd_header(world):
    """Capture the tiny model, then give its cached array a header claiming ~1e19 bytes."""
    act = cap.load_activations(world["folder"], n=3, progress=False)
    npy = act.path / "acts.npy"
    blob = npy.read_bytes()
    n = int.from_bytes(blob[8:10], "little")
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 9999, 9999), }"
    npy.write_bytes(blob[:10] + (text.ljust(n - 1) + "\n").encode() + blob[10 + n:])


#: (argv with {placeholders}, environment, setup, what the one line says)
BAD = [
    (["capture", "--model", "gpt5", "--n", "3"], {}, None, "Unknown model 'gpt5'"),
    (["capture", "--model", "{file}", "--n", "3"], {}, None, "is a file, not a model folder"),
    (["capture", "--n", "3"], {"TDCOURSE_MODEL": "{file}"}, None, "TDCOURSE_MODEL gives .* is a file, not a model folder"),
    (["capture", "--model", "models/llama-L9", "--n", "3"], {}, None, "does not exist.*llama-L8.*not as a hub id"),
    (["capture", "--model", "{empty}", "--n", "3"], {}, None, "is empty: a model folder needs config.json"),
    (["capture", "--model", "{gpt2}", "--n", "3"], {}, None, "does not know where .*'gpt2'.*Supported families"),
    (["capture", "--model", "{oov}", "--n", "3"], {}, None, r"holds token id \d+, outside .*vocabulary \(ids 0 to 49\)"),
    (["capture", "--model", "{folder}", "--n", "3", "--init", "random", "--device-map", "auto"], {}, None,
     "random-init control is drawn on one device"),
    (["capture", "--model", "{folder}", "--n", "3"], {}, _absurd_header, "header's shape .* needs .* bytes"),
    (["capture", "--model", "{damaged}", "--n", "3"], {}, None, r"Could not load the weights of .*damaged \(\w+Error"),
    (["capture", "--n", "3"], {}, lambda w: env.cache_dir().joinpath("course.json").write_text('{"modle": "x"}'),
     r"unknown keys \['modle'\]"),
    (["capture"], {}, lambda w: env.cache_dir().joinpath("course.json").write_bytes(b'{"model": "\xff"}'),
     "course.json is not UTF-8 text"),
    (["use", "--model", "gpt5"], {}, None, "Unknown model 'gpt5'"),
    (["use", "--model", "{file}"], {}, None, "is a file, not a model folder"),
    (["use", "--model", "./nowhere"], {}, None, "does not exist"),
    (["use", "--model", "{empty}"], {}, None, "has no config.json"),
    (["import", "{junk}"], {}, None, "cannot be opened as an export: it is not a whole tar file"),
    (["import", "{truncated}"], {}, None, "cannot be opened as an export|truncated"),
    (["import", "{null_n}"], {}, None, "malformed: meta.recipe.n must be a whole number >= 1, got None"),
    (["export", "--model", "{folder}", "--n", "3", "--out", "x.tar"], {}, None, "capture it first"),
    (["scoreboard", "--model", "gpt5", "--n", "3"], {}, None, "Unknown model 'gpt5'"),
    (["capture", "--model", "smollm2-135m", "--n", "3"], {}, "full_disk", "converting the embedded SmolLM2 .*needs about"),
]


@pytest.mark.parametrize("argv, environ, setup, says", BAD, ids=[" ".join(b[0])[:40] + str(i) for i, b in enumerate(BAD)])
def test_every_bad_input_is_one_error_line(world, argv, environ, setup, says, monkeypatch, capsys):
    import re
    import shutil

    if setup == "full_disk":
        real = shutil.disk_usage
        monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=50 * 2**20))
    elif setup is not None:
        setup(world)
    for k, v in environ.items():
        monkeypatch.setenv(k, v.format(**world))
    capsys.readouterr()
    code = main([a.format(**world) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    line = _one_error_line_text(err)
    assert re.search(says, line), line
    assert "instructor's export" not in line or argv[0] != "capture" or "gpt2" not in argv[2]
    cache = env.cache_dir_path()
    leftovers = [p for p in cache.rglob(".tmp*")] if cache.exists() else []
    assert not leftovers, leftovers


def _one_error_line_text(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("exc", [AttributeError("'Gemma3Config' object has no attribute 'hidden_size'"),
                                 TypeError("int() argument must be a string"), AssertionError(), KeyError("x")])
def test_an_unexpected_error_is_one_line_that_says_it_is_a_bug(exc, monkeypatch, capsys):
    import re

    def boom(**kwargs):
        raise exc

    monkeypatch.setattr(cap, "load_activations", boom)
    assert main(["capture", "--model", "smollm2-135m", "--n", "3"]) == 1
    line = _one_error_line_text(capsys.readouterr().err)
    assert f"unexpected {type(exc).__name__}" in line and "bug in tdcourse" in line
    path = re.search(r"the full traceback is in (\S+) ", line).group(1)
    text = open(path).read()
    assert "Traceback (most recent call last)" in text and type(exc).__name__ in text and "capture" in text


def test_the_real_entry_point_prints_no_traceback(tmp_path):
    import os
    import subprocess
    import sys

    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"junk")
    env = {**os.environ, "TDCOURSE_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "tdcourse", "import", str(junk)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error: ") and len(out.stderr.strip().splitlines()) == 1


def test_every_command_honours_the_setting(world, monkeypatch, capsys):
    """capture / export / scoreboard take --model and --n from the course's setting when not given."""
    from tdcourse import __main__ as cli

    seen = {}

    def fake_load(**kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(cap, "load_activations", fake_load)
    monkeypatch.setenv("TDCOURSE_MODEL", world["folder"])
    monkeypatch.setenv("TDCOURSE_N", "7")
    assert main(["capture"]) == 2
    assert seen["model"] == world["folder"] and seen["n"] == 7
    assert main(["capture", "--n", "5", "--model", "smollm2-135m"]) == 2
    assert (seen["model"], seen["n"]) == ("smollm2-135m", 5)
    assert main(["export", "--out", "x.tar"]) == 2
    assert "No capture of " + world["folder"] + " with n=7" in capsys.readouterr().err
    for cmd in ("capture", "export", "scoreboard"):
        helptext = " ".join(cli._parser()._subparsers._group_actions[0].choices[cmd].format_help().split())
        assert "default: the course's setting (TDCOURSE_MODEL / TDCOURSE_N, course.json" in helptext, cmd
