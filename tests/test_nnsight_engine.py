"""The nnsight engine (issue 22, item 1): the same sites and values as the hooks, locally and
through NDIF's request path (nnsight's ``remote="local"``: every request serialised and run
here); the engine is recorded but not keyed; the remote path fails at once and clearly
offline; what NDIF cannot run is said, never skipped silently."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import transformers

from tdcourse import capture as cap
from tdcourse import hooks, models
from tdcourse import nnsight_engine as ne
from tdcourse.models import RemoteUnavailableError, ResidualSiteError, SiteMap

COMMON = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
#: a pre-norm family and the two post-norm layouts (OLMo-2: mid = mlp input; Gemma-2: sandwich norms)
FAMILIES = {"LlamaConfig": {}, "Olmo2Config": {}, "Gemma2Config": {"head_dim": 8}}


def tiny(config_name: str, seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    config = getattr(transformers, config_name)(**COMMON, **FAMILIES[config_name])
    return transformers.AutoModelForCausalLM.from_config(config).eval().requires_grad_(False).to(dtype)


def sample_ids(seed: int = 0, lengths=(5, 9, 3, 7, 4, 8, 6)) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 100, size=k).tolist() for k in lengths]


def _byte_tokenizer():
    """A byte-level tokenizer built here (no files): nnsight's TransformersModel needs one."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers import models as tmodels
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<eos>"] = len(vocab)
    tok = Tokenizer(tmodels.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    fast.pad_token, fast.padding_side = fast.eos_token, "right"
    return fast


def _files(model, tok=None, dtype="float32", source="meta-llama/Llama-3.1-70B"):
    spec = models.ModelSpec(name=source, source=source, revision="r", quant="none", dtype=dtype, init="trained",
                            seed=0)
    return models.ModelFiles(tokenizer=tok or _byte_tokenizer(), config=model.config, spec=spec, path=source,
                             load_kwargs={}, hub={})


def _simulated_ndif(model, tok):
    from nnsight.modeling.transformers import TransformersModel

    return TransformersModel(model, tokenizer=tok)


# --------------------------------------------------------------------------- equal to the hooks


@pytest.mark.parametrize("config_name", list(FAMILIES))
def test_local_nnsight_equals_the_hooks(config_name):
    model, ids = tiny(config_name), sample_ids()
    one = hooks.capture(model, ids, batch_size=1, progress=False)
    got = ne.capture(model, ids, batch_size=1, progress=False)
    assert got.dtype == np.float32 and got.shape == one.shape == (7, 4, 32)
    np.testing.assert_array_equal(got, one)  # bit for bit at batch size 1
    padded = ne.capture(model, ids, batch_size=4, progress=False)
    np.testing.assert_array_equal(padded, hooks.capture(model, ids, batch_size=4, progress=False))
    assert np.abs(padded - one).max() <= 1e-6 * np.abs(one).max()


@pytest.mark.parametrize("config_name", list(FAMILIES))
def test_ndif_request_path_equals_the_hooks(config_name):
    """remote="local": nnsight serialises each job exactly as for NDIF and runs it here; the
    batches of one job travel as one session."""
    model, ids, tok = tiny(config_name), sample_ids(), _byte_tokenizer()
    want = hooks.capture(model, ids, batch_size=1, progress=False)
    files = _files(model, tok)
    nn_model = _simulated_ndif(model, tok)
    for job_bytes in (1, 1 << 30):  # one batch per job, then every batch in one job
        got = ne.capture_remote(files, ids, batch_size=3, nn_model=nn_model, remote="local", progress=False,
                                job_bytes=job_bytes)
        assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()
    np.testing.assert_array_equal(
        ne.capture_remote(files, ids, batch_size=1, nn_model=nn_model, remote="local", progress=False), want)
    assert tok.padding_side == "right"  # nnsight's left padding is not left on the course's tokenizer


@pytest.mark.parametrize("config_name", list(FAMILIES))
def test_the_residual_check_inside_a_trace_measures_what_the_hooks_measure(config_name):
    model, tok = tiny(config_name), _byte_tokenizer()
    ids, mask, _ = hooks._pad(sample_ids(), np.arange(4), 0, torch.device("cpu"))
    want = models.check_residual_sites(model, ids, mask)
    family = models.model_family(model)
    for nn_model, path, remote in ((_simulated_ndif(model, tok), "model.layers", "local"),
                                   (__import__("nnsight").NNsight(model.model), "layers", False)):
        with torch.inference_mode():
            gaps, dtype = ne.residual_gaps(nn_model, family, path, ids, mask, remote=remote)
        assert dtype == "float32" and gaps.shape == (2, 2)
        np.testing.assert_allclose(gaps, want, atol=1e-7)


@pytest.mark.parametrize("family", ["olmo2", "gemma2"])
def test_a_wrong_site_map_is_refused_on_the_ndif_path_too(monkeypatch, family):
    model = tiny({"olmo2": "Olmo2Config", "gemma2": "Gemma2Config"}[family])
    tok = _byte_tokenizer()
    monkeypatch.setitem(models.RESIDUAL_SITES, family, SiteMap("post_attention_layernorm", "self_attn", "mlp"))
    with pytest.raises(ResidualSiteError, match=r"fails at layer 0 .*refuses the model"):
        ne.capture_remote(_files(model, tok), sample_ids(), nn_model=_simulated_ndif(model, tok), remote="local",
                          progress=False)
    with pytest.raises(ResidualSiteError):
        ne.capture(model, sample_ids(), progress=False)


def test_values_in_another_dtype_than_the_key_says_are_refused():
    model, tok = tiny("LlamaConfig", dtype=torch.bfloat16), _byte_tokenizer()
    with pytest.raises(RemoteUnavailableError, match="came back in bfloat16.*keyed as computed in float32"):
        ne.capture_remote(_files(model, tok, dtype="float32"), sample_ids(), nn_model=_simulated_ndif(model, tok),
                          remote="local", progress=False)
    got = ne.capture_remote(_files(model, tok, dtype="bfloat16"), sample_ids(), nn_model=_simulated_ndif(model, tok),
                            remote="local", progress=False, batch_size=1)
    np.testing.assert_array_equal(got, hooks.capture(model, sample_ids(), batch_size=1, progress=False))


def test_the_engine_writes_into_a_cache_entry_as_it_goes():
    from tdcourse.store import EntryWriter

    model, ids = tiny("LlamaConfig"), sample_ids()
    meta = {"format_version": cap.FORMAT_VERSION, "model": {"name": "t", "source": "t", "revision": None,
            "quant": "none", "dtype": "float32", "init": "trained", "seed": 0}, "recipe": {"n": 7},
            "data_sha256": "d", "input_ids_sha256": "i", "sites": ["resid_pre", "resid_mid"], "position": "last"}
    with EntryWriter(meta, (7, 4, 32), cap.site_names(2), [""] * 7, info={"engine": "nnsight"}) as w:
        ne.capture(model, ids, batch_size=3, progress=False, out=w)
        path = w.commit()
    run = cap.read_activations(path)
    np.testing.assert_array_equal(run.acts, ne.capture(model, ids, batch_size=3, progress=False))
    assert run.engine == "nnsight"


@pytest.mark.parametrize("how", ["cpu_offload", "disk_offload"])
def test_an_offloaded_model_gives_the_unsplit_rows(how, tmp_path):
    """The nnsight engine on a model whose weights accelerate keeps on the CPU or disk (the
    embedding on the meta device), as on a node split with device_map='auto'."""
    import accelerate

    model, ids = tiny("LlamaConfig"), sample_ids()
    want = hooks.capture(model, ids, batch_size=4, progress=False)
    other = tiny("LlamaConfig")
    split = (accelerate.cpu_offload(other, execution_device="cpu") if how == "cpu_offload"
             else accelerate.disk_offload(other, tmp_path, execution_device="cpu"))
    assert next(split.parameters()).device.type == "meta"
    got = ne.capture(split, ids, batch_size=4, progress=False)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_missing_nnsight_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(ne, "nnsight_version", lambda: None)
    with pytest.raises(RemoteUnavailableError, match=r"pip install 'tdcourse\[remote\]'"):
        ne.capture(tiny("LlamaConfig"), sample_ids(), progress=False)
    assert any("nnsight is not installed" in p for p in ne.remote_problems("meta-llama/Llama-3.1-70B", timeout=1))


# --------------------------------------------------------------------------- the library path


def test_load_activations_with_either_engine_finds_one_entry(tmp_path):
    """The engine is not in the cache key (same values), and the record says which one wrote it."""
    from test_cache_roundtrip import _tiny_folder

    folder = _tiny_folder(tmp_path / "m")
    first = cap.load_activations(folder, n=6, progress=False, engine="nnsight", batch_size=4)
    assert first.engine == "nnsight" and first.info["capture"]["backend"] == "local"
    again = cap.load_activations(folder, n=6, progress=False)  # hooks: reads the nnsight capture
    assert again.path == first.path and again.engine == "nnsight"
    hooked = cap.load_activations(folder, n=6, progress=False, engine="hooks", rebuild=True, batch_size=4)
    assert hooked.path == first.path and hooked.engine == "hooks"
    np.testing.assert_allclose(hooked.acts, first.acts, rtol=1e-6, atol=1e-7)
    record = json.loads((first.path / "meta.json").read_text())
    assert record["capture"]["engine"] == "hooks" and "engine" not in json.dumps(record["meta"])


def test_a_remote_capture_through_the_library_path(tmp_path, monkeypatch):
    """load_activations(remote=True) end to end with NDIF simulated (nnsight's remote="local"
    on a bfloat16 model): keyed as bfloat16, recorded as NDIF, read back by a chapter's plain
    call when the hub is out of reach, and stored exactly in bfloat16 when asked."""
    import functools
    from dataclasses import replace

    from test_cache_roundtrip import _tiny_folder

    folder = _tiny_folder(tmp_path / "m")
    real_files = models.open_model(models.resolve_spec(folder))
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval().requires_grad_(False).to(torch.bfloat16)

    def fake_open(spec):  # the hub answers with the tiny model's tokenizer and config
        assert spec.source == "meta-llama/Llama-3.1-70B" and spec.dtype == "bfloat16" and spec.quant == "none"
        return replace(real_files, spec=replace(spec, revision="r1"))

    monkeypatch.setattr(cap, "open_model", fake_open)
    monkeypatch.setattr(ne, "remote_problems", lambda source, timeout=5.0: [])
    monkeypatch.setattr(ne, "remote_model", lambda files: _simulated_ndif(model, files.tokenizer))
    monkeypatch.setattr(ne, "capture_remote", functools.partial(ne.capture_remote, remote="local"))
    run = cap.load_activations("llama-3.1-70b", n=5, remote=True, progress=False, batch_size=2)
    assert run.meta["model"]["dtype"] == "bfloat16" and run.meta["model"]["name"] == "llama-3.1-70b"
    assert run.info["capture"]["backend"] == "ndif" and run.engine == "nnsight (NDIF)"
    ids = [real_files.tokenizer(t, add_special_tokens=False)["input_ids"] for t in run.texts]
    np.testing.assert_allclose(run.acts, hooks.capture(model, ids, batch_size=1, progress=False),
                               rtol=1e-6, atol=1e-6)
    half = cap.load_activations("llama-3.1-70b", n=5, remote=True, progress=False, store_dtype="bfloat16",
                                rebuild=True)
    assert half.path == run.path and half.info["store"]["dtype"] == "bfloat16"  # exact: same key
    np.testing.assert_array_equal(np.asarray(half.acts), np.asarray(run.acts))

    def offline(spec):
        raise models.GatedModelError("no token here")

    monkeypatch.setattr(cap, "open_model", offline)
    read = cap.load_activations("llama-3.1-70b", n=5, progress=False)  # what a chapter calls
    assert read.path == run.path


# --------------------------------------------------------------------------- offline, and what NDIF cannot run


@pytest.mark.parametrize("model", ["llama-3.1-70b", "llama-3.1-405b"])
def test_offline_the_remote_path_fails_at_once_saying_what_is_missing(model, monkeypatch):
    for var in ("NDIF_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(models.env, "hf_token", lambda: None)
    monkeypatch.setenv("NNSIGHT_CONFIG", "/nonexistent/config.yaml")
    monkeypatch.setenv("NDIF_HOST", "http://ndif.invalid")  # never resolves: no network
    t0 = time.perf_counter()
    with pytest.raises(RemoteUnavailableError) as err:
        cap.load_activations(model, n=4, remote=True, progress=False)
    assert time.perf_counter() - t0 < 60
    msg = str(err.value)
    assert "no network connection to NDIF" in msg and "no NDIF API key" in msg and "NDIF_API_KEY" in msg
    assert "no Hugging Face token" in msg and "Nothing was sent" in msg and "book/beyond.md" in msg
    assert ("application" in msg) == (model == "llama-3.1-405b")


def test_with_a_key_and_a_token_only_the_network_is_missing(monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", "k")
    monkeypatch.setattr(models.env, "hf_token", lambda: "hf_x")
    monkeypatch.setenv("NDIF_HOST", "http://ndif.invalid")
    problems = ne.remote_problems("meta-llama/Llama-3.1-70B", timeout=2)
    assert len(problems) == 1 and problems[0].startswith("no network connection to NDIF (http://ndif.invalid")


def test_ndif_status_names_a_model_that_is_not_running(monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", "k")
    monkeypatch.setattr(models.env, "hf_token", lambda: "hf_x")
    monkeypatch.setattr(ne, "_ndif_deployments", lambda host, timeout: {
        "meta-llama/Llama-3.1-70B": [{"application_state": "RUNNING"}],
        "meta-llama/Llama-3.1-405B": [{"application_state": "DEPLOYING"}]})
    assert ne.remote_problems("meta-llama/Llama-3.1-70B") == []
    (problem,) = ne.remote_problems("meta-llama/Llama-3.1-405B")
    assert "does not run meta-llama/Llama-3.1-405B now (running: meta-llama/Llama-3.1-70B" in problem


@pytest.mark.parametrize("kwargs, match", [
    (dict(init="random"), "random-init control cannot run on NDIF"),
    (dict(quant="4bit"), "unquantised"),
    (dict(device_map="auto"), "place weights on this machine"),
    (dict(engine="hooks"), "runs on the nnsight engine"),
])
def test_what_ndif_cannot_run_is_refused_with_the_reason(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cap.load_activations("llama-3.1-70b", n=4, remote=True, progress=False, **kwargs)


@pytest.mark.parametrize("model", ["smollm2-135m", "/tmp"])
def test_remote_is_for_hub_models(model):
    with pytest.raises(ValueError, match="NDIF runs the hub models it hosts"):
        cap.load_activations(model, n=4, remote=True, progress=False)


def test_the_setting_can_name_the_70b_on_ndif_and_chapters_are_told(monkeypatch):
    from tdcourse import settings

    for var in ("TDCOURSE_MODEL", "TDCOURSE_N", "TDCOURSE_ENGINE", "TDCOURSE_REMOTE"):
        monkeypatch.delenv(var, raising=False)
    settings.use_model("llama-3.1-70b", 200, engine="nnsight", remote=True)
    s = settings.course_settings()
    assert (tuple(s), s.engine, s.remote) == (("llama-3.1-70b", 200), "nnsight", True)
    assert "captured with nnsight on NDIF" in str(s)
    assert cap.capture_engine("llama-3.1-70b") == ("nnsight", True)
    assert cap.capture_engine("smollm2-135m") == ("hooks", False)  # the setting's engine is for its model only
    with pytest.raises(models.ModelLoadError):  # the control is never sent to NDIF by the setting: tried here
        cap.load_activations("llama-3.1-70b", n=3, init="random", progress=False)
    with pytest.raises(ValueError, match="random-init control cannot run on NDIF"):  # unless asked explicitly
        cap.load_activations("llama-3.1-70b", n=3, init="random", remote=True, progress=False)
    avail = cap.model_available("llama-3.1-70b", purpose="chapter 7's teleport experiment")
    assert not avail and "captured remotely on NDIF" in avail.reason and "chapter 7's teleport" in avail.reason
    with pytest.raises(ValueError, match="NDIF runs the hub models"):
        settings.use_model("smollm2-135m", 10, remote=True)
    monkeypatch.setenv("TDCOURSE_MODEL", "smollm2-135m")
    assert settings.course_settings().remote is False  # the file's engine is not applied to another model
    monkeypatch.setenv("TDCOURSE_REMOTE", "1")
    with pytest.raises(ValueError, match="NDIF runs the hub models"):
        settings.course_settings()


def test_load_runs_says_why_the_control_is_missing_for_a_remote_model(monkeypatch, capsys):
    """An imported 70B capture, offline: the trained run is read, the control (which NDIF cannot
    run and which was not exported) is skipped with its reason, kept in runs.skipped."""
    from tdcourse.data import SampleRecipe, body_lines, load_wikitext
    from tdcourse.store import entry_meta, _data_digest

    recipe = SampleRecipe(n=3)
    spec = models.ModelSpec("llama-3.1-70b", "meta-llama/Llama-3.1-70B", "r1", "none", "bfloat16", "trained", 0)
    meta = entry_meta(spec, recipe, _data_digest(recipe), "ids")
    acts = np.random.default_rng(0).normal(size=(3, 4, 8)).astype(np.float32)
    texts = body_lines(load_wikitext())[:3]
    cap.save_activations(acts, cap.site_names(2), texts, meta)

    def offline(spec):
        raise models.GatedModelError("no token here")

    monkeypatch.setattr(cap, "open_model", offline)
    runs = cap.load_runs("llama-3.1-70b", n=3, remote=True, progress=False)
    assert len(runs) == 1 and isinstance(runs, list)
    np.testing.assert_array_equal(runs[0].acts, acts)
    assert "NDIF runs trained weights only" in runs.skipped["random-init control"]
    assert "random-init control is skipped" in capsys.readouterr().out
    with pytest.raises(models.ModelLoadError):  # not remote: a missing control is an error, as before
        cap.load_runs("llama-3.1-70b", n=3, remote=False, progress=False)


# --------------------------------------------------------------------------- the course's models


def _course_samples(tok, n):
    from tdcourse.data import SampleRecipe, build_samples

    return build_samples(tok, SampleRecipe(n=n)).input_ids


@pytest.mark.slow
@pytest.mark.parametrize("which", ["smollm2-135m", "4-layer stand-in"])
def test_nnsight_equals_the_hooks_on_the_course_models(which, smollm2):
    """The embedded SmolLM2 and the 4-layer stand-in: bit for bit at batch size 1, within
    1e-6 of the largest value in the course's padded batches of 8 (WikiText samples 16-31,
    whose batches hold samples of 24 to 48 tokens)."""
    from tdcourse.models import load_model
    from tdcourse.standins import build_standin

    model, tok = smollm2 if which == "smollm2-135m" else load_model(str(build_standin("4-layer")))
    ids = _course_samples(tok, 32)
    one = hooks.capture(model, ids[:8], batch_size=1, progress=False)
    np.testing.assert_array_equal(ne.capture(model, ids[:8], batch_size=1, progress=False), one)
    ids = ids[16:]
    assert len({len(x) for x in ids[:8]}) > 1 and len({len(x) for x in ids[8:]}) > 1  # both batches padded
    want = hooks.capture(model, ids, batch_size=1, progress=False)
    got = ne.capture(model, ids, batch_size=8, progress=False)
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()
    np.testing.assert_array_equal(got, hooks.capture(model, ids, batch_size=8, progress=False))


# --------------------------------------------------------------------------- the command line


def test_cli_remote_capture_offline_is_one_error_line(monkeypatch, capsys):
    from tdcourse.__main__ import main

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(models.env, "hf_token", lambda: None)
    monkeypatch.setenv("NNSIGHT_CONFIG", "/nonexistent/config.yaml")
    monkeypatch.setenv("NDIF_HOST", "http://ndif.invalid")
    assert main(["capture", "--model", "llama-3.1-70b", "--n", "3", "--remote"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: The remote capture of meta-llama/Llama-3.1-70B on NDIF cannot run") and "\n" not in err
    assert "no NDIF API key" in err and "no network connection to NDIF" in err


def test_cli_use_and_capture_take_the_engine(monkeypatch, capsys, tmp_path):
    from test_cache_roundtrip import _tiny_folder

    from tdcourse import settings
    from tdcourse.__main__ import main

    for var in ("TDCOURSE_MODEL", "TDCOURSE_N", "TDCOURSE_ENGINE", "TDCOURSE_REMOTE"):
        monkeypatch.delenv(var, raising=False)
    assert main(["use", "--model", "llama-3.1-405b", "--n", "50", "--remote"]) == 0
    s = settings.course_settings()
    assert (s.model, s.n, s.engine, s.remote) == ("llama-3.1-405b", 50, "nnsight", True)
    assert main(["use", "--model", "smollm2-135m", "--remote"]) == 2
    assert "NDIF runs the hub models" in capsys.readouterr().err
    assert main(["use", "--model", "llama-3.1-70b", "--engine", "hooks", "--remote"]) == 2
    folder = _tiny_folder(tmp_path / "m")
    assert main(["capture", "--model", folder, "--n", "4", "--engine", "nnsight", "--store-dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "engine: nnsight, stored as bfloat16" in out


def test_the_ndif_key_is_read_where_nnsight_reads_it(monkeypatch, tmp_path):
    """$NDIF_API_KEY, the Colab secret NDIF_API_KEY, then nnsight's saved config."""
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setenv("NNSIGHT_CONFIG", str(tmp_path / "none.yaml"))
    assert ne.ndif_api_key() is None
    (tmp_path / "c.yaml").write_text("API:\n  APIKEY: saved-key\n")
    monkeypatch.setenv("NNSIGHT_CONFIG", str(tmp_path / "c.yaml"))
    assert ne.ndif_api_key() == "saved-key"
    monkeypatch.setattr(models.env, "colab_secret", lambda name: "colab-key" if name == "NDIF_API_KEY" else None)
    assert ne.ndif_api_key() == "colab-key"
    monkeypatch.setenv("NDIF_API_KEY", "env-key")
    assert ne.ndif_api_key() == "env-key"
