"""Captures of a local model folder: export on one machine, import on another that cannot load
the model (folder deleted: an offline laptop), room checked before a capture starts, and
integer arguments of load_activations validated."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tdcourse import capture as cap
from tdcourse.capture import CacheError, load_activations, load_runs
from tdcourse.models import ModelLoadError

N = 12


def _tiny_folder(path, n_layers=2):
    """A ``n_layers``-layer (default 2), width-32 Llama with seeded random weights and a byte-level tokenizer, saved to ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<eos>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      eos_token_id=len(vocab) - 1, bos_token_id=len(vocab) - 1)
    LlamaForCausalLM(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return str(path)


@pytest.fixture
def folder(tmp_path):
    return _tiny_folder(tmp_path / "models" / "tiny-llama")


def test_export_import_and_offline_laptop(folder, tmp_path, monkeypatch, capsys):
    gpu = tmp_path / "gpu-cache"
    monkeypatch.setenv("TDCOURSE_CACHE", str(gpu))
    trained, control = load_runs(folder, n=N, progress=False)
    out = tmp_path / "workshop.tar"
    exported = cap.export_activations(folder, N, out)
    assert {p.name for p in exported} == {trained.path.name, control.path.name}

    # the laptop: another cache, and the model folder is gone
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path / "laptop-cache"))
    shutil.rmtree(folder)
    assert not cap.model_available(folder)
    assert "cannot be loaded" in cap.model_available(folder).reason
    with pytest.raises((ModelLoadError, ValueError), match="import"):
        load_activations(folder, n=N, progress=False)  # nothing imported yet: says how to get captures
    installed = cap.import_activations(out)
    assert len(installed) == 2 and all(p.parent.parent == tmp_path / "laptop-cache" for p in installed)
    capsys.readouterr()
    t2, c2 = load_runs(folder, n=N, progress=False)
    said = capsys.readouterr().out
    assert "Using the cached capture" in said and "none, float32" in said
    np.testing.assert_array_equal(t2.acts, trained.acts)
    np.testing.assert_array_equal(c2.acts, control.acts)
    assert t2.meta == trained.meta and c2.meta["model"]["init"] == "random"
    # never an entry of another n, recipe or seed
    with pytest.raises((ModelLoadError, ValueError)):
        load_activations(folder, n=N - 1, progress=False)
    with pytest.raises((ModelLoadError, ValueError)):
        load_activations(folder, n=N, recipe=cap.SampleRecipe(max_tokens=20), progress=False)
    with pytest.raises((ModelLoadError, ValueError)):
        load_activations(folder, n=N, init="random", quant="none", seed=1, progress=False)
    # a pinned precision must match: the import holds float32 only
    with pytest.raises((ModelLoadError, ValueError)):
        load_activations(folder, n=N, dtype="bfloat16", progress=False)


def test_other_precision_is_found_when_precision_is_left_open(folder, tmp_path, monkeypatch, capsys):
    """A GPU wrote bfloat16; this machine would capture float32: with quant/dtype left open the
    bfloat16 capture is used (and said), with dtype pinned it is not."""
    first = load_activations(folder, n=N, dtype="bfloat16", progress=False)
    assert first.meta["model"]["dtype"] == "bfloat16"
    capsys.readouterr()
    again = load_activations(folder, n=N, progress=False)
    assert again.path == first.path and "bfloat16" in capsys.readouterr().out
    pinned = load_activations(folder, n=N, dtype="float32", progress=False)
    assert pinned.path != first.path and pinned.meta["model"]["dtype"] == "float32"


def test_import_refuses_a_damaged_file(folder, tmp_path, monkeypatch):
    import tarfile

    load_activations(folder, n=N, progress=False)
    out = tmp_path / "x.tar"
    cap.export_activations(folder, N, out, control=False)
    # flip one byte inside the array member
    with tarfile.open(out) as tar:
        m = next(m for m in tar.getmembers() if m.name.endswith("acts.npy"))
        offset = m.offset_data + m.size - 1
    raw = bytearray(out.read_bytes())
    raw[offset] ^= 0xFF
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(raw))
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path / "other"))
    with pytest.raises(CacheError, match="not a complete tdcourse export"):
        cap.import_activations(bad)
    assert not any((tmp_path / "other" / "activations").glob("*-n12-*"))  # nothing installed
    assert not [p for p in (tmp_path / "other" / "activations").iterdir() if p.name.startswith(".tmp-")]
    with pytest.raises(CacheError, match="not a tdcourse activation export|cannot be opened"):
        cap.import_activations(tmp_path / "models" / "tiny-llama" / "config.json")


def test_export_without_a_capture_says_how(folder, tmp_path):
    with pytest.raises(CacheError, match="capture it first"):
        cap.export_activations(folder, N, tmp_path / "x.tar")


def test_full_or_read_only_cache_is_found_before_the_capture(folder, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the cache was checked")

    monkeypatch.setattr(cap, "load_weights", no_model)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=2**20))
    with pytest.raises(CacheError, match=r"free and this capture needs about .*Nothing was captured"):
        load_activations(folder, n=N, progress=False)
    monkeypatch.setattr(shutil, "disk_usage", real)
    with pytest.raises(CacheError, match="not writable"):
        cap.check_cache_room(100, folder=__import__("pathlib").Path("/proc/self"))


@pytest.mark.parametrize("kwargs, name", [
    ({"n": 1.5}, "n"), ({"n": True}, "n"), ({"n": "12"}, "n"), ({"n": 0}, "n"), ({"n": 12.0}, "n"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": -1}, "batch_size"), ({"batch_size": 2.0}, "batch_size"),
    ({"seed": -1}, "seed"), ({"seed": 0.5}, "seed"), ({"rebuild": "yes"}, "rebuild"),
])
def test_load_activations_validates_every_integer(kwargs, name):
    args = {"n": 3, **kwargs}
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        load_activations("smollm2-135m", progress=False, **args)


def test_batch_size_does_not_change_the_cached_values(folder):
    a = load_activations(folder, n=N, batch_size=1, progress=False)
    b = load_activations(folder, n=N, batch_size=5, rebuild=True, progress=False)
    assert a.path == b.path  # batch size is not in the key ...
    np.testing.assert_allclose(a.acts, b.acts, rtol=1e-5, atol=1e-5)  # ... because it does not change values


def test_an_entry_under_an_older_name_is_still_found(folder, capsys):
    first = load_activations(folder, n=N, progress=False)
    old = first.path.parent / ("--" + first.path.name)  # how earlier versions named local-folder entries
    first.path.rename(old)
    capsys.readouterr()
    again = load_activations(folder, n=N, dtype="float32", progress=False)
    assert again.path == old and capsys.readouterr().out == ""
    np.testing.assert_array_equal(again.acts, first.acts)


def test_capture_and_read_with_a_read_only_home_and_unusable_hf_home(folder, tmp_path):
    """Neither the capture of a local model nor reading it back needs a writable home or HF cache."""
    import os
    import subprocess
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_"))}
    env.update(HF_HOME=str(blocker / "below"), HOME="/proc/self", TDCOURSE_CACHE=str(tmp_path / "c"),
               OMP_NUM_THREADS="1")
    code = ("import sys; from tdcourse.capture import load_activations as la; "
            "a = la(sys.argv[1], n=4, progress=False); b = la(sys.argv[1], n=4, progress=False); "
            "print(a.path == b.path, (a.acts == b.acts).all())")
    out = subprocess.run([sys.executable, "-c", code, folder], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["True", "True"]


def test_a_model_folder_with_a_long_odd_path(tmp_path):
    """A ~250-character path whose last folder starts with '-': the entry name stays short and safe."""
    deep = tmp_path.joinpath(*(["a-rather-long-folder-name-for-models"] * 5), "-tiny llama (copy)")
    assert len(str(deep)) > 240
    path = _tiny_folder(deep)
    act = load_activations(path, n=4, progress=False)
    assert len(act.path.name) < 130 and not act.path.name.startswith("-")
    assert load_activations(path, n=4, progress=False).path == act.path


def test_cli_rebuild_replaces_a_file_in_the_way(folder, capsys):
    from tdcourse.__main__ import main

    assert main(["capture", "--model", folder, "--n", "4"]) == 0
    entry = load_activations(folder, n=4, progress=False).path
    import shutil as sh

    sh.rmtree(entry)
    entry.write_text("not an entry")
    capsys.readouterr()
    assert main(["capture", "--model", folder, "--n", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a folder" in err[0] and "--rebuild" in err[0]
    assert main(["capture", "--model", folder, "--n", "4", "--rebuild"]) == 0
    assert entry.is_dir() and load_activations(folder, n=4, progress=False).acts.shape == (4, 4, 32)


# --- the fallback never substitutes another precision, init or recipe (issue 19) --------------


def _fake_4bit(entry):
    """Save, as the newest entry, a '4-bit' capture of the same model and samples (other values)."""
    import copy

    meta = copy.deepcopy(entry.meta)
    meta["model"]["quant"] = "4bit"
    return cap.save_activations(entry.acts + 1.0, entry.sites, entry.texts, meta)


def test_auto_prefers_full_precision_and_says_which_entry(folder, tmp_path, capsys):
    full = load_activations(folder, n=N, progress=False)
    four = _fake_4bit(full)  # newer than the full-precision entry
    control = load_activations(folder, n=N, init="random", quant="none", progress=False)
    shutil.rmtree(folder)  # the model cannot be read any more
    capsys.readouterr()
    got = load_activations(folder, n=N, progress=False)  # quant="auto"
    said = capsys.readouterr().out
    assert got.path == full.path and full.path.name in said and "full precision" in said
    np.testing.assert_array_equal(got.acts, full.acts)
    asked = load_activations(folder, n=N, quant="4bit", progress=False)
    assert asked.path == four and "4-bit NF4" in capsys.readouterr().out
    assert load_activations(folder, n=N, init="random", quant="none", progress=False).path == control.path
    for kwargs in ({"n": N + 1}, {"recipe": cap.SampleRecipe(max_tokens=20)}, {"init": "random", "seed": 3, "quant": "none"},
                   {"dtype": "bfloat16"}):
        with pytest.raises((ModelLoadError, ValueError)):
            load_activations(folder, **{"n": N, "progress": False, **kwargs})


def test_a_readable_model_is_captured_rather_than_served_in_4bit(folder, capsys):
    """Precision left open, the model readable, only a 4-bit entry cached: on this CPU "auto" means
    full precision, so it is captured here, never the 4-bit capture served in its place."""
    full = load_activations(folder, n=N, progress=False)
    _fake_4bit(full)
    shutil.rmtree(full.path)
    capsys.readouterr()
    again = load_activations(folder, n=N, progress=False)
    assert again.meta["model"]["quant"] == "none" and "Using the cached capture" not in capsys.readouterr().out
    np.testing.assert_allclose(again.acts, full.acts, rtol=1e-6, atol=1e-6)


def test_pick_entry_ranks_full_precision_first_whatever_the_order():
    from pathlib import Path

    from tdcourse.store import pick_entry

    def e(q, d):
        return (Path(f"{q}-{d}"), {"model": {"quant": q, "dtype": d}})

    found = [e("4bit", "float32"), e("none", "bfloat16"), e("none", "float32")]
    for quant in ("auto", None):
        assert pick_entry(found, quant, None)[0].name == "none-float32"
        assert pick_entry(found[::-1], quant, None)[0].name == "none-float32"
    assert pick_entry(found, "4bit", None)[0].name == "4bit-float32"
    assert pick_entry(found, "auto", "bfloat16")[0].name == "none-bfloat16"


def test_an_unsupported_family_is_refused_without_advice_about_exports(tmp_path):
    from transformers import GPT2Config

    from tdcourse.models import UnsupportedModelError

    path = _tiny_folder(tmp_path / "gpt2ish")
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(path)
    with pytest.raises(UnsupportedModelError) as err:
        load_activations(path, n=2, progress=False)
    assert "export" not in str(err.value) and "gpt2" in str(err.value)
