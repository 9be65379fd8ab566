"""Loading: local model folders keyed by content, folder messages, the hub's time-out, the
verified SmolLM2 conversion, and the GPU load path (decided with monkeypatched torch.cuda)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from tdcourse import models
from tdcourse.models import ModelLoadError, ModelTooLargeError, UnsupportedModelError, load_model, load_tokenizer, resolve_spec


def write_folder(folder: Path, config=None, seed: int = 0) -> Path:
    """A tiny Llama (width 32, 2 layers) with a word-level tokenizer, saved like a hub model."""
    from tokenizers import Tokenizer
    from tokenizers import models as tm
    from tokenizers import pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(tm.WordLevel({f"w{i}": i for i in range(100)}, unk_token="w3"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w3", eos_token="w1", pad_token="w0")
    fast.save_pretrained(folder)
    config = config or transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "models" / "tiny-llama")


def key(name, **kw):
    return load_tokenizer(resolve_spec(name, device="cpu", **kw))[2]


# --------------------------------------------------------------------------- local folders


def test_local_folder_loads_and_is_named_by_its_absolute_path(folder):
    model, tok = load_model(str(folder), device="cpu")
    spec = model.tdcourse_spec
    assert spec.source == "local" and spec.name == str(folder.resolve())
    assert spec.label == "tiny-llama"  # chapters print the folder's name, not its path
    assert spec.revision.startswith("content:") and len(spec.revision) == len("content:") + 32
    assert type(model).__name__ == "LlamaForCausalLM" and tok.padding_side == "right"


def test_same_folder_by_two_paths_gives_one_key(folder, tmp_path, monkeypatch):
    link = tmp_path / "link-to-model"
    link.symlink_to(folder)
    monkeypatch.chdir(folder.parent)
    by_relative = key("./tiny-llama")
    monkeypatch.chdir(tmp_path)
    assert key("models/tiny-llama/") == by_relative == key(str(link)) == key(str(folder))


def test_changing_one_weight_changes_the_key(folder):
    from safetensors.torch import load_file, save_file

    before = key(str(folder))
    assert key(str(folder)) == before  # stable
    path = folder / "model.safetensors"
    tensors = load_file(path)
    name = "model.layers.1.mlp.up_proj.weight"
    tensors[name][3, 5] += 1e-3
    time.sleep(0.01)
    save_file(tensors, path, metadata={"format": "pt"})
    after = key(str(folder))
    assert after.revision != before.revision
    assert (after.name, after.source) == (before.name, before.source)
    # the same bytes at another path (a copy) give the same content digest
    copy = folder.parent / "copy"
    copy.mkdir()
    for p in folder.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    assert models.local_folder_digest(copy) == after.revision


def test_config_change_changes_the_key_and_random_init_ignores_the_weights(folder):
    trained, random = key(str(folder)), key(str(folder), init="random")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last weight
    weights.write_bytes(bytes(data))
    assert key(str(folder)).revision != trained.revision
    assert key(str(folder), init="random").revision == random.revision  # random weights do not read the file
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5
    (folder / "config.json").write_text(json.dumps(cfg))
    assert key(str(folder), init="random").revision != random.revision


def test_empty_folder_and_folder_without_tokenizer_say_what_is_missing(tmp_path, folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"empty is empty: a model folder needs config.json"):
        load_model(str(empty), device="cpu")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (folder / f).unlink()
    with pytest.raises(ModelLoadError, match=r"tiny-llama has no tokenizer files \(tokenizer.json / tokenizer.model\)"):
        load_model(str(folder), device="cpu")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no tokenizer files .*, no weight files"):
        load_model(str(folder), device="cpu")


def test_missing_folder_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(ValueError, match="model folder './no-such-model' does not exist"):
        resolve_spec("./no-such-model", device="cpu")
    with pytest.raises(ValueError, match="does not exist"):
        resolve_spec(str(tmp_path / "a" / "b"), device="cpu")


def test_unsupported_family_is_refused_before_the_weights_load(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "granite", transformers.GraniteConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, residual_multiplier=0.5))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("weights were loaded"))
    with pytest.raises(UnsupportedModelError, match="'granite' models.*Supported families"):
        load_model(str(folder), device="cpu")


# --------------------------------------------------------------------------- the hub


def test_hub_that_never_answers_times_out_and_says_how_to_go_offline(monkeypatch):
    """A server that accepts connections and never answers: the load stops within the time-out."""
    import huggingface_hub.constants as hc

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # the kernel accepts connections; nobody ever reads or answers
    monkeypatch.setattr(hc, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models.env, "hf_token", lambda: None)
    result = {}

    def run():
        try:
            load_tokenizer(resolve_spec("someorg/no-such-model", device="cpu"))
        except Exception as err:  # noqa: BLE001 - the test inspects it
            result["err"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    server.close()
    assert not worker.is_alive(), "load_tokenizer hung on a hub that never answers"
    err = result.get("err")
    assert isinstance(err, ModelLoadError)
    assert "did not answer within 1 s" in str(err) and "HF_HUB_OFFLINE=1" in str(err)
    assert "load_model('smollm2-135m')" in str(err)


def test_offline_mode_reads_only_the_local_cache(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models.env, "hf_token", lambda: None)
    monkeypatch.setattr(models, "_hub_answers", lambda *a: pytest.fail("the hub was asked while offline"))
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache and offline mode is on"):
        load_tokenizer(resolve_spec("someorg/no-such-model", device="cpu"))


@pytest.mark.slow
def test_embedded_model_never_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the embedded model opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(models, "_hub_answers", refuse)
    tok, config, spec = load_tokenizer(resolve_spec("smollm2-135m", device="cpu"))
    assert config.model_type == "llama" and spec.source.startswith("embedded:")
    model, _ = load_model("smollm2-135m", device="cpu")
    assert model.tdcourse_spec == spec


# --------------------------------------------------------------------------- embedded SmolLM2 conversion


class FakeConversion:
    """Stands in for the GGUF dequantisation: writes a small model folder, counts the calls."""

    def __init__(self, fail_after_partial: bool = False):
        self.calls = 0
        self.fail = fail_after_partial

    def __call__(self, folder: Path, gguf: Path) -> None:
        self.calls += 1
        (folder / "config.json").write_text('{"model_type": "llama"}')
        (folder / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(1 << 14))
        if self.fail:
            raise KeyboardInterrupt("killed half-way")
        (folder / "tokenizer.json").write_text("{}")


def test_conversion_is_verified_and_redone_when_edited(monkeypatch, capsys):
    fake = FakeConversion()
    monkeypatch.setattr(models, "_convert_smollm2_into", fake)
    target = models._converted_smollm2_dir()
    assert fake.calls == 1 and json.loads((target / "tdcourse-source.json").read_text())["content"].startswith("content:")
    assert models._converted_smollm2_dir() == target and fake.calls == 1  # verified, not converted again
    weights = target / "model.safetensors"
    good = weights.read_bytes()
    data = bytearray(good)
    half = len(data) // 2
    data[:half], data[half:] = data[half:], data[:half]  # two halves swapped: same size
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert models._converted_smollm2_dir() == target
    assert fake.calls == 2 and "differs from the conversion recorded" in capsys.readouterr().out
    assert weights.read_bytes() == good
    assert not list(target.parent.glob(".tmp-*"))


def test_old_marker_with_the_same_bytes_is_upgraded_in_place(monkeypatch):
    fake = FakeConversion()
    monkeypatch.setattr(models, "_convert_smollm2_into", fake)
    target = models._converted_smollm2_dir()
    marker = target / "tdcourse-source.json"
    record = json.loads(marker.read_text())
    del record["content"]  # as written before content digests
    marker.write_text(json.dumps(record))
    inode = (target / "model.safetensors").stat().st_ino
    assert models._converted_smollm2_dir() == target and fake.calls == 2
    assert "content" in json.loads(marker.read_text())
    assert (target / "model.safetensors").stat().st_ino == inode  # the folder was not swapped


def test_killed_conversion_leaves_nothing_and_stale_temps_are_removed(monkeypatch):
    monkeypatch.setattr(models, "_convert_smollm2_into", FakeConversion(fail_after_partial=True))
    with pytest.raises(KeyboardInterrupt):
        models._converted_smollm2_dir()
    models_dir = models.env.cache_dir() / "models"
    assert list(models_dir.iterdir()) == []  # no partial model, no temporary folder
    # What a SIGKILL leaves (no finally runs): a temporary folder named after its dead writer.
    dead = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE)
    dead_pid = int(dead.communicate()[0])
    live_name = models.env.temporary_name("-smollm2")
    killed = models_dir / live_name.replace(f"-{os.getpid()}-", f"-{dead_pid}-")
    old = models_dir / ".tmp-convert-smollm2-abc"  # an older naming, 7 h untouched
    live = models_dir / live_name  # this process is alive: another conversion in progress
    for p in (killed, old, live):
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"partial")
    seven_hours_ago = time.time() - 7 * 3600
    os.utime(old, (seven_hours_ago, seven_hours_ago))
    monkeypatch.setattr(models, "_convert_smollm2_into", FakeConversion())
    models._converted_smollm2_dir()
    assert not killed.exists() and not old.exists() and live.exists()


def _field_value(field):
    """A GGUF metadata field's value (``ReaderField.contents()`` where gguf has it, else read
    from its parts: gguf 0.11 lacks it)."""
    import gguf

    if hasattr(field, "contents"):
        return field.contents()
    main = field.types[0]

    def one(i):
        part = field.parts[i]
        return bytes(part).decode() if field.types[-1] == gguf.GGUFValueType.STRING else part.tolist()[0]

    if main == gguf.GGUFValueType.ARRAY:
        return [one(i) for i in field.data]
    if main == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode()
    return field.parts[field.data[0]].tolist()[0]


def _gguf_slice(src: Path, dst: Path, n_layers: int = 1, n_vocab: int = 2048) -> None:
    """A real slice of the embedded GGUF: its metadata, with ``block_count`` = ``n_layers`` and
    the first ``n_vocab`` tokens (the specials and the 256 byte tokens come first; the merges
    among the kept tokens), the rows of the embedding for them, the final norm and the
    quantised tensors of the first ``n_layers`` blocks, bytes copied unchanged. Converting it
    runs the same code on the same kinds of tensors as the whole model; the whole model's
    98,000 vocabulary and merge strings alone take most of a conversion (GGUF parsing)."""
    import gguf

    reader = gguf.GGUFReader(src)
    arch = _field_value(reader.fields["general.architecture"])
    tokens = _field_value(reader.fields["tokenizer.ggml.tokens"])[:n_vocab]
    kept = set(tokens)

    def merge_kept(m: str) -> bool:
        a, _, b = m.partition(" ")
        return a in kept and b in kept and a + b in kept

    changed = {f"{arch}.block_count": n_layers, f"{arch}.vocab_size": n_vocab, "tokenizer.ggml.tokens": tokens}
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        if field.name in changed:
            value = changed[field.name]
        elif field.name == "tokenizer.ggml.token_type":
            value = _field_value(field)[:n_vocab]
        elif field.name == "tokenizer.ggml.merges":
            value = [m for m in _field_value(field) if merge_kept(m)]
        else:
            value = _field_value(field)
        vtype = field.types[0]
        try:
            writer.add_key_value(field.name, value, vtype, sub_type=field.types[-1] if len(field.types) > 1 else None)
        except TypeError:  # gguf before sub_type: the array's type is read from its values
            writer.add_key_value(field.name, value, vtype)
    keep = [(t, t.data[:n_vocab] if t.name == "token_embd.weight" else t.data) for t in reader.tensors
            if not t.name.startswith("blk.") or int(t.name.split(".")[1]) < n_layers]
    for t, data in keep:
        writer.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data in keep:
        writer.write_tensor_data(np.ascontiguousarray(data))
    writer.close()


@pytest.mark.slow
def test_real_conversion_swapped_tensor_halves_are_caught(tmp_path, monkeypatch):
    """The issue's case on the real weights: two halves of one tensor swapped, same file size.

    On a slice of the embedded GGUF (one block, 2048 tokens; its real quantised tensors and
    metadata): the conversion, its content digest and the re-conversion of an edited folder all
    run for real, in seconds instead of converting the whole model twice (86 s in make test)."""
    from safetensors.torch import load_file, save_file

    sliced = tmp_path / "gguf" / "SmolLM2-slice.Q4_1.gguf"
    sliced.parent.mkdir()
    _gguf_slice(models.smollm2_gguf_path(), sliced, n_layers=1)
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: sliced)
    monkeypatch.setenv("TDCOURSE_CACHE", str(tmp_path / "cache"))
    target = models._converted_smollm2_dir()
    path = target / "model.safetensors"
    tensors = load_file(path)
    assert {k for k in tensors if k.startswith("model.layers.")} and all(
        k.startswith("model.layers.0.") for k in tensors if k.startswith("model.layers."))
    name = "model.layers.0.mlp.up_proj.weight"
    good = tensors[name].clone()
    assert good.shape == (1536, 576) and good.abs().sum() > 0               # dequantised, not empty
    tensors[name] = torch.cat([good[good.shape[0] // 2:], good[: good.shape[0] // 2]])
    save_file(tensors, path, metadata={"format": "pt"})
    model, tok = load_model("smollm2-135m", device="cpu")
    assert model.config.num_hidden_layers == 1 and model.config.vocab_size == 2048
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, good)        # converted again
    ids = tok("The cat sat on the", return_tensors="pt").input_ids
    assert torch.isfinite(model(ids).logits).all()


# --------------------------------------------------------------------------- the GPU load path (no GPU needed)


class FakeCuda:
    """torch.cuda as seen on a GPU machine: capability, free and total memory."""

    def __init__(self, monkeypatch, capability=(8, 0), free_gb=70.0, total_gb=80.0, reserved_gb=0.0, allocated_gb=0.0):
        g = 2**30
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # True even on a T4
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (int(free_gb * g), int(total_gb * g)))
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: int(reserved_gb * g))
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: int(allocated_gb * g))
        monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda *a: None)
        monkeypatch.setattr(models.env, "gpu_memory_gb", lambda: total_gb)


@pytest.mark.parametrize("capability, dtype", [((7, 5), "float16"), ((7, 0), "float16"), ((8, 0), "bfloat16"),
                                               ((8, 9), "bfloat16"), ((9, 0), "bfloat16")])
def test_dtype_follows_compute_capability_not_is_bf16_supported(monkeypatch, capability, dtype):
    FakeCuda(monkeypatch, capability=capability)
    assert resolve_spec("smollm2-135m", device="cuda").dtype == dtype
    assert resolve_spec("smollm2-135m", device="cpu").dtype == "float32"


def test_available_gpu_memory_counts_free_plus_reusable_cache(monkeypatch):
    FakeCuda(monkeypatch, free_gb=10.0, total_gb=80.0, reserved_gb=30.0, allocated_gb=20.0)
    assert models._gpu_memory_gb() == pytest.approx((20.0, 80.0))


def test_trained_weights_stream_to_the_gpu_with_a_device_map(monkeypatch, folder):
    FakeCuda(monkeypatch)
    seen = {}
    real = transformers.AutoModelForCausalLM.from_pretrained

    def from_pretrained(path, **kwargs):
        seen.update(kwargs)
        model = real(path, dtype=kwargs["dtype"])  # loaded on the CPU here; a GPU would receive it
        model.to = lambda *a, **k: pytest.fail("the model was copied after loading (.to) instead of streamed")
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    model, _ = load_model(str(folder), device="cuda")
    assert seen["device_map"] == {"": 0} and seen["low_cpu_mem_usage"] is True
    assert seen["dtype"] == torch.bfloat16 and model.tdcourse_spec.dtype == "bfloat16"


def test_cpu_load_keeps_no_device_map(monkeypatch, folder):
    seen = {}
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda path, **kw: seen.update(kw) or real(path, **kw))
    model, _ = load_model(str(folder), device="cpu")
    assert "device_map" not in seen and seen["dtype"] == torch.float32
    assert next(model.parameters()).device.type == "cpu"


def test_second_model_on_a_busy_gpu_is_refused_with_how_to_free(monkeypatch, folder):
    FakeCuda(monkeypatch, free_gb=5.0, total_gb=22.0)  # an L4 holding one 8B model in bf16
    monkeypatch.setattr(models, "_count_params_from_config", lambda config: 8_030_000_000)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(ModelTooLargeError, match=r"5\.0 GiB free of 22\.0 GiB.*del model; import gc; gc.collect\(\); "
                                                 r"torch.cuda.empty_cache\(\)"):
        load_model(str(folder), device="cuda", quant="none")
    # the same model on an empty card of that size fits
    FakeCuda(monkeypatch, free_gb=21.5, total_gb=22.0)
    models.check_fits(8_030_000_000, "bfloat16", "none", *models._gpu_memory_gb(), total_gb=22.0)


def test_check_fits_beyond_the_total_suggests_4bit_not_freeing():
    with pytest.raises(ModelTooLargeError, match="quant='4bit'") as info:
        models.check_fits(8_030_000_000, "float16", "none", 14.0, total_gb=15.0)
    assert "empty_cache" not in str(info.value)


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="PyTorch sees no CUDA GPU"):
        load_model("smollm2-135m", device="cuda")


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("kwargs, match", [
    (dict(seed=True), "seed must be a whole number >= 0"),
    (dict(seed=-1), "seed must be a whole number >= 0"),
    (dict(seed=1.5), "seed must be a whole number >= 0"),
    (dict(seed="0"), "seed must be a whole number >= 0"),
    (dict(name=3), "model name must be a non-empty string"),
    (dict(name="  "), "model name must be a non-empty string"),
    (dict(quant="8bit"), "quant must be one of 'auto', 'none', '4bit'"),
    (dict(quant=None), "quant must be one of"),
    (dict(dtype="fp16"), "dtype must be one of 'float32', 'bfloat16', 'float16' or None"),
    (dict(init="untrained"), "init must be one of 'trained', 'random'"),
    (dict(device="gpu"), "device must be 'cpu', 'cuda'"),
    (dict(device=0), "device must be 'cpu', 'cuda'"),
])
def test_bad_arguments_are_named(kwargs, match):
    args = {"name": "smollm2-135m", **kwargs}
    with pytest.raises(ValueError, match=match):
        resolve_spec(**args)
    with pytest.raises(ValueError, match=match):
        load_model(**args)


def test_numpy_integer_seed_is_accepted():
    assert resolve_spec("smollm2-135m", seed=np.int64(3), device="cpu").seed == 3


def test_load_tokenizer_wants_a_spec():
    with pytest.raises(TypeError, match="spec must be a ModelSpec"):
        load_tokenizer("smollm2-135m")
