"""The second capture engine: nnsight, locally or remotely on NDIF.

`nnsight <https://nnsight.net>`_ (Fiotto-Kaufman et al., ICLR 2025, arXiv:2407.14561) traces a
PyTorch model: inside ``with model.trace(...)`` a module's ``.input`` / ``.output`` is the value
the forward pass computes there, and ``nnsight.save(value)`` marks what comes back. With
``remote=True`` the same block runs on **NDIF**, the National Deep Inference Fabric, which hosts
Llama 3.1 8B, 70B and 405B: the block (its code and the token ids) is sent, the model runs on
NDIF's GPUs, and only the saved values come back (nnsight.net, "Remote Execution").

This engine reads the very sites the hooks read (:mod:`tdcourse.hooks`): the input of decoder
layer ``l`` (``resid_pre.l``) and the input of the family's mid module (``resid_mid.l``,
:data:`tdcourse.models.RESIDUAL_SITES`), at the last real token of each right-padded sample,
and saves only those rows: ``(batch, 2 * n_layers, d_model)`` per batch. Locally it gives the
hooks' values bit for bit at batch size 1 and to float rounding in padded batches (tested on
SmolLM2, the 4-layer stand-in, OLMo-2 and Gemma-2), so the engine is not part of the cache
key; the entry's record says which engine wrote it.

The residual self-check (:func:`tdcourse.models.check_residual_sites`) runs on the first
samples of every capture: locally on the model itself, remotely inside a trace that returns
only the ``(n_layers, 2)`` gaps, judged by the same rule
(:func:`tdcourse.models.judge_residual_gaps`).

What NDIF does not run for the course: the random-init control (NDIF serves its trained
weights only), the chapters' own forward passes with local hooks (chapter 1's check, chapter
7's teleport experiment, chapter 8's Jacobians). :func:`tdcourse.capture.model_available`
says so to a chapter. Offline, :func:`remote_problems` names what is missing (network, NDIF
key, Hugging Face token, access to 405B) before anything is sent.

nnsight is imported only when this engine runs: importing it changes the process (it adds a
``.save`` method to every Python object and patches ``torch.Tensor.backward``).
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import env
from .data import check_int
from .hooks import _Collector, _batches, _pad, _pad_id, _vocab_size, check_inputs, check_token_ids, input_device
from .models import (GATED_ORGS, RESIDUAL_SITES, ModelFiles, RemoteUnavailableError, check_residual_sites,
                     decoder_layers, judge_residual_gaps, model_family, text_config)

__all__ = [
    "DEFAULT_NDIF_HOST",
    "NDIF_APPLICATION_MODELS",
    "capture",
    "capture_traced",
    "capture_remote",
    "residual_gaps",
    "remote_model",
    "remote_problems",
    "ndif_api_key",
    "nnsight_version",
]

#: NDIF's API, as nnsight's shipped configuration names it (``NDIF_HOST`` overrides it).
DEFAULT_NDIF_HOST = "https://api.ndif.us"
#: Models NDIF runs only for users whose application was approved (the others: any key).
NDIF_APPLICATION_MODELS = ("meta-llama/Llama-3.1-405B", "meta-llama/Llama-3.1-405B-Instruct")
_INSTALL = "pip install 'tdcourse[remote]' (or pip install nnsight==0.8.1)"
_KEY_HELP = ("create a free account at login.ndif.us and copy its API key, then set it: on Colab add a secret "
             "named NDIF_API_KEY (key icon in the left bar, notebook access on), elsewhere "
             "`export NDIF_API_KEY=...`")


def nnsight_version() -> str | None:
    """The installed nnsight's version, or None when it is not installed (nothing is imported)."""
    if importlib.util.find_spec("nnsight") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nnsight")
    except PackageNotFoundError:  # pragma: no cover - an unpackaged checkout
        return "unknown"


def _require_nnsight():
    if nnsight_version() is None:
        raise RemoteUnavailableError(f"The nnsight engine needs the package nnsight: {_INSTALL}.")
    import nnsight

    return nnsight


def ndif_host() -> str:
    """NDIF's API address: ``$NDIF_HOST``, else :data:`DEFAULT_NDIF_HOST`."""
    return os.environ.get("NDIF_HOST") or DEFAULT_NDIF_HOST


def ndif_api_key() -> str | None:
    """The NDIF API key nnsight will send, or None: ``$NDIF_API_KEY``, the Colab secret
    ``NDIF_API_KEY``, or the key saved in nnsight's user configuration
    (``~/.config/nnsight/config.yaml`` or ``$NNSIGHT_CONFIG``, written by ``nnsight.login()``),
    in that order, as nnsight itself reads them. Read without importing nnsight."""
    if os.environ.get("NDIF_API_KEY"):
        return os.environ["NDIF_API_KEY"]
    key = env.colab_secret("NDIF_API_KEY")
    if key:
        return key
    path = Path(os.environ.get("NNSIGHT_CONFIG") or Path(os.environ.get("XDG_CONFIG_HOME", "~/.config"))
                / "nnsight" / "config.yaml").expanduser()
    try:
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
        key = (data.get("API") or {}).get("APIKEY")
        return key if isinstance(key, str) and key else None
    except Exception:  # no file, not YAML, no yaml module: no saved key
        return None


def _ndif_deployments(host: str, timeout: float) -> dict:
    """NDIF's ``/status``: repo id -> deployment record. Raises what the request raised."""
    import httpx

    response = httpx.get(f"{host}/status", timeout=httpx.Timeout(timeout, read=max(timeout, 10.0)))
    response.raise_for_status()
    out = {}
    for name, value in (response.json().get("deployments") or {}).items():
        if isinstance(value, dict):
            out.setdefault(value.get("repo_id", name), []).append(value)
    return out


def remote_problems(source: str, timeout: float = 5.0) -> list[str]:
    """What stops a remote capture of hub model ``source`` on NDIF from here, checked at once.

    Parameters
    ----------
    source : str
        The hub id (``"meta-llama/Llama-3.1-70B"``).
    timeout : float
        Seconds to wait for NDIF's status endpoint.

    Returns
    -------
    list of str
        One sentence per missing thing, empty when nothing is missing that can be checked
        before a job is sent: nnsight not installed; no NDIF API key; NDIF not reachable (no
        network, or a proxy that blocks it); the model not running on NDIF now; no Hugging
        Face token for a gated model (its tokenizer and config are read from the hub); for
        405B, that access is granted on application (said when it cannot be checked).
    """
    problems = []
    if nnsight_version() is None:
        problems.append(f"nnsight is not installed ({_INSTALL})")
    if not ndif_api_key():
        problems.append(f"no NDIF API key ({_KEY_HELP})")
    host = ndif_host()
    reachable = False
    try:
        deployments = _ndif_deployments(host, timeout)
        reachable = True
    except Exception as err:  # DNS failure, refused connection, time-out, an HTTP error page
        what = " ".join(f"{type(err).__name__}: {err}".split())[:160]
        problems.append(f"no network connection to NDIF ({host} did not answer within {timeout:g} s: {what})")
    if reachable:
        running = [d for d in deployments.get(source, []) if d.get("application_state") == "RUNNING"]
        if not running:
            up = sorted(r for r, ds in deployments.items() if any(d.get("application_state") == "RUNNING" for d in ds))
            problems.append(f"NDIF does not run {source} now (running: {', '.join(up) or 'none'}; see "
                            "nnsight.net/status)")
    if any(source.startswith(org) for org in GATED_ORGS) and not env.hf_token():
        problems.append(f"no Hugging Face token for the gated {source} (its tokenizer and config are read from the "
                        f"hub: accept the licence on huggingface.co/{source}, then set HF_TOKEN, on Colab as a secret)")
    if source in NDIF_APPLICATION_MODELS and (not reachable or not ndif_api_key()):
        problems.append(f"{source} runs on NDIF only for users whose application was approved (ndif.us); "
                        "not checked here")
    return problems


def remote_unavailable_message(source: str, problems: list[str], reason: str = "") -> str:
    """One message for :class:`tdcourse.models.RemoteUnavailableError`: what is missing, and where to read more."""
    lines = "; ".join(problems) if problems else reason
    return (f"The remote capture of {source} on NDIF cannot run from here: {lines}. Nothing was sent. "
            "The page 'Beyond one GPU' (book/beyond.md) walks through the setup; captures made elsewhere can be "
            "imported with `python -m tdcourse import FILE`.")


# --------------------------------------------------------------------------- tracing


def _module_path(root, target) -> str:
    """The attribute path of ``target`` inside ``root`` (``"layers"``, ``"model.layers"``)."""
    for name, module in root.named_modules():
        if module is target:
            return name
    raise ValueError("the decoder layers are not a submodule of the traced model")


def _envoy(root, path: str):
    for part in path.split(".") if path else ():
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def _layers_container(model):
    """The ``ModuleList`` holding the decoder layers (``model.model.layers`` for Llama)."""
    first = decoder_layers(model)[0]
    for module in model.modules():
        children = list(module.children())
        if children and children[0] is first and len(children) == len(decoder_layers(model)):
            return module
    raise ValueError("no ModuleList holds the decoder layers")


def _trace_rows(nn_model, layers_path: str, mid: str, ids, mask, rows, last, remote) -> list:
    """One forward pass: the rows ``(rows, last)`` at both sites of every layer, a list of
    ``2 * n_layers`` tensors of shape (batch, d_model), in the model's dtype. The pass stops
    after the last site (the last MLP, the final norm and the LM head are not run)."""
    import nnsight

    layers = _envoy(nn_model, layers_path)
    with nn_model.trace(input_ids=ids, attention_mask=mask, use_cache=False, remote=remote) as tracer:
        outs = []
        for layer in layers:
            outs.append(layer.input[rows, last])
            outs.append(getattr(layer, mid).input[rows, last])
        saved = nnsight.save(outs)
        tracer.stop()
    return list(saved)


def _trace_jobs(nn_model, layers_path: str, mid: str, batches: list, remote) -> list[list]:
    """Several batches in one NDIF job (an nnsight session): one queue wait for them all.

    ``batches`` holds ``(ids, mask, rows, last)``; returns one list of ``2 * n_layers``
    tensors per batch. Locally (``remote`` False) each batch is its own trace.
    """
    import nnsight

    if not remote:
        return [_trace_rows(nn_model, layers_path, mid, *b, remote=False) for b in batches]
    with nn_model.session(remote=remote):
        results = []
        for ids, mask, rows, last in batches:
            layers = _envoy(nn_model, layers_path)
            with nn_model.trace(input_ids=ids, attention_mask=mask, use_cache=False) as tracer:
                outs = []
                for layer in layers:
                    outs.append(layer.input[rows, last])
                    outs.append(getattr(layer, mid).input[rows, last])
                results.append(outs)
                tracer.stop()
        saved = nnsight.save(results)
    return [list(r) for r in saved]


def residual_gaps(nn_model, family: str, layers_path: str, ids, mask=None, remote=False):
    """The residual identities of :func:`tdcourse.models.check_residual_sites`, measured inside
    an nnsight trace (locally or on NDIF); only the ``(n_layers, 2)`` gaps come back.

    Parameters
    ----------
    nn_model : nnsight model (``NNsight`` or ``TransformersModel``)
    family : str
        A key of :data:`tdcourse.models.RESIDUAL_SITES`.
    layers_path : str
        Attribute path of the decoder layers inside ``nn_model`` (``"model.layers"``).
    ids, mask : torch.LongTensor of shape (batch, seq)
    remote : bool or str
        As nnsight's ``trace(remote=...)`` (``"local"``: NDIF's serialisation, run here).

    Returns
    -------
    gaps : ndarray of shape (n_layers, 2)
        Relative gaps (attention identity, MLP identity), as
        :func:`tdcourse.models.check_residual_sites` measures them.
    dtype : str
        The residual stream's dtype on the machine that ran it (``"bfloat16"`` on NDIF).
    """
    import nnsight
    import torch

    names = RESIDUAL_SITES[family]
    layers = _envoy(nn_model, layers_path)
    with nn_model.trace(input_ids=ids, attention_mask=mask, use_cache=False, remote=remote):
        gaps = []
        for layer in layers:
            pre = layer.input
            attn = getattr(layer, names.attn_write).output
            attn = attn[0] if isinstance(attn, (tuple, list)) else attn
            mid = getattr(layer, names.mid).input
            mlp = getattr(layer, names.mlp_write).output
            mlp = mlp[0] if isinstance(mlp, (tuple, list)) else mlp
            nxt = layer.output
            nxt = nxt[0] if isinstance(nxt, (tuple, list)) else nxt
            a, b, c = pre.float(), mid.float(), nxt.float()
            g_attn = (b - a - attn.float()).norm() / torch.stack([a.norm(), b.norm()]).max().clamp_min(1e-30)
            g_mlp = (c - b - mlp.float()).norm() / torch.stack([b.norm(), c.norm()]).max().clamp_min(1e-30)
            gaps.append(torch.stack([g_attn, g_mlp]).detach().double().cpu())
        out = nnsight.save([torch.stack(gaps), str(pre.dtype).replace("torch.", "")])
    gaps_t, dtype = out
    return gaps_t.detach().numpy(), dtype


def capture_traced(
    nn_model,
    layers_path: str,
    mid: str,
    input_ids: Sequence[Sequence[int]],
    n_sites: int,
    d_model: int,
    batch_size: int = 32,
    pad_token_id: int = 0,
    device=None,
    progress: bool = True,
    out=None,
    remote: bool | str = False,
    job_bytes: int = 256 << 20,
    expect_dtype: str | None = None,
    bytes_per_value: int = 2,
):
    """The capture loop of this engine, shared by the local and the remote runs.

    Parameters
    ----------
    nn_model : nnsight model
    layers_path, mid : str
        Where the decoder layers are, and the name of the mid module in each.
    input_ids : sequence of n_samples token-id lists
    n_sites, d_model : int
    batch_size, pad_token_id : as for :func:`tdcourse.hooks.capture`
    device : torch.device or None
        Where the token ids go (None: the CPU; NDIF moves them to its GPUs).
    progress : bool
    out : ndarray, tdcourse.store.EntryWriter or None
        As for :func:`tdcourse.hooks.capture`.
    remote : bool or str
        False: run here. True: on NDIF. ``"local"``: NDIF's serialisation, run here (tests).
    job_bytes : int
        Remote only: batches are grouped into one NDIF job while their results stay under
        about this many bytes (at least one batch per job).
    expect_dtype : str or None
        The dtype the values must come back in (the cache key's ``dtype``); another is an error.
    bytes_per_value : int
        Size of one returned value, for ``job_bytes`` (2 for NDIF's bfloat16).

    Returns
    -------
    ndarray of shape (n_samples, n_sites, d_model), float32, or ``out``

    Raises
    ------
    RemoteUnavailableError
        The values came back in another dtype than ``expect_dtype``.
    FloatingPointError
        A value is NaN or inf.
    """
    import torch
    from tqdm.auto import tqdm

    device = device if device is not None else torch.device("cpu")
    if out is None:
        out = np.empty((len(input_ids), n_sites, d_model), dtype=np.float32)
    sink = _Collector(out, device if not remote else torch.device("cpu"))
    batches = _batches(input_ids, batch_size)
    per_batch = batch_size * n_sites * d_model * bytes_per_value
    group = max(1, job_bytes // max(1, per_batch)) if remote else 1
    bar = tqdm(total=len(batches), desc="capture (NDIF)" if remote is True else "capture", unit="batch",
               disable=not progress)
    for g in range(0, len(batches), group):
        chunk = batches[g : g + group]
        prepared = []
        for idx in chunk:
            ids, mask, last = _pad(input_ids, idx, pad_token_id, device)
            prepared.append((ids, mask, torch.arange(len(idx), device=device), last))
        with torch.inference_mode():
            results = _trace_jobs(nn_model, layers_path, mid, prepared, remote)
        for idx, rows in zip(chunk, results):
            got = str(rows[0].dtype).replace("torch.", "")
            if expect_dtype is not None and got != expect_dtype:
                raise RemoteUnavailableError(
                    f"The residual stream came back in {got}, and this capture is keyed as computed in "
                    f"{expect_dtype}: nothing was cached. Capture again with dtype={got!r}.")
            buf = torch.stack([r.to(sink.device, torch.float32) for r in rows], 1)
            if buf.shape != (len(idx), n_sites, d_model):
                raise ValueError(f"the trace returned shape {tuple(buf.shape)}, expected {(len(idx), n_sites, d_model)}")
            sink.add(idx, buf)
        bar.update(len(chunk))
    bar.close()
    sink.flush()
    sink.check_finite()
    return out


def _wrap_local(nnsight, module, device):
    """``nnsight.NNsight(module)`` whose inputs go to ``device``, the embedding's execution device.

    nnsight moves a trace's inputs to the device of the module's first parameter, which is
    ``meta`` when accelerate offloads that parameter to the CPU or disk (``device_map="auto"``
    on a node too small for the weights): the ids would become meta tensors. The hooks engine
    sends them where the embedding runs (:func:`tdcourse.hooks.input_device`); so does this.
    """
    class _CourseNNsight(nnsight.NNsight):
        @property
        def device(self):
            return device

    return _CourseNNsight(module)


def capture(
    model,
    input_ids: Sequence[Sequence[int]],
    batch_size: int = 32,
    pad_token_id: int | None = None,
    progress: bool = True,
    out=None,
):
    """Residual states at the last real token of each sample, at every site, read by nnsight.

    The same contract as :func:`tdcourse.hooks.capture` (arguments, sites, padding, errors):
    the model runs here, wrapped in ``nnsight.NNsight`` (its decoder only, as the hooks run
    it), and each batch is one trace that saves the ``(batch, 2 * n_layers, d_model)`` rows.
    The residual self-check runs on the model first (:func:`tdcourse.models.check_residual_sites`).
    A model split over devices (``device_map="auto"``, CPU / disk offload) works: the rows
    are read where each layer runs and collected on the input device.

    Returns
    -------
    ndarray of shape (n_samples, 2 * n_layers, d_model), float32, or ``out``

    Raises
    ------
    ValueError, tdcourse.models.UnsupportedModelError, FloatingPointError
        As :func:`tdcourse.hooks.capture`.
    tdcourse.models.RemoteUnavailableError
        nnsight is not installed.
    """
    nnsight = _require_nnsight()
    batch_size = check_int(batch_size, "batch_size")
    check_inputs(input_ids)
    check_token_ids(input_ids, _vocab_size(model))
    family = model_family(model)
    layers = decoder_layers(model)
    device = input_device(model)
    pad_token_id = _pad_id(model, pad_token_id)
    base = getattr(model, "model", model)
    layers_path = _module_path(base, _layers_container(model))
    check_residual_sites(model, *_pad(input_ids, np.arange(min(4, len(input_ids))), pad_token_id, device)[:2])
    wrapped = _wrap_local(nnsight, base, device)
    return capture_traced(wrapped, layers_path, RESIDUAL_SITES[family].mid, input_ids, 2 * len(layers),
                          int(text_config(model).hidden_size), batch_size=batch_size, pad_token_id=pad_token_id,
                          device=device, progress=progress, out=out, remote=False)


def remote_model(files: ModelFiles):
    """The hub model of ``files`` as an nnsight ``TransformersModel`` for NDIF: built on the
    ``meta`` device from its config (no weights are downloaded), with the course's tokenizer.

    Raises
    ------
    RemoteUnavailableError
        nnsight is missing, or the model cannot be built from the hub (offline, gated).
    """
    _require_nnsight()
    import warnings

    from nnsight.modeling.transformers import TransformersModel

    tok = files.tokenizer
    side = tok.padding_side
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nn_model = TransformersModel(files.spec.source, tokenizer=tok, task="text-generation")
    except Exception as err:
        raise RemoteUnavailableError(remote_unavailable_message(
            files.spec.source, remote_problems(files.spec.source),
            f"nnsight could not build {files.spec.source} from the hub ({type(err).__name__}: {err})")) from err
    finally:
        tok.padding_side = side  # nnsight left-pads text; the course passes right-padded ids itself
    return nn_model


def capture_remote(
    files: ModelFiles,
    input_ids: Sequence[Sequence[int]],
    batch_size: int = 32,
    progress: bool = True,
    out=None,
    nn_model=None,
    remote: bool | str = True,
    job_bytes: int = 256 << 20,
    check_first: bool = True,
):
    """Capture on NDIF: the same sites and rows as :func:`capture`, the model on NDIF's GPUs.

    Sent per job: the traced block (its code), the token ids and attention mask of its
    batches and the row indices of their last tokens. Returned: the saved rows, ``(batch,
    2 * n_layers, d_model)`` per batch in NDIF's dtype (bfloat16: 2.6 MB per sample at the
    70B's shape), upcast to float32 here. Batches are grouped into jobs (nnsight sessions) of
    about ``job_bytes`` of results, so the queue is waited for once per job. The residual
    self-check runs first, on NDIF, on the first samples.

    Parameters
    ----------
    files : tdcourse.models.ModelFiles
        The opened hub model (its tokenizer built the samples).
    input_ids, batch_size, progress, out :
        As for :func:`capture`.
    nn_model : nnsight TransformersModel or None
        Default: :func:`remote_model` (tests pass one wrapping a local model).
    remote : bool or str
        True (NDIF) or ``"local"`` (NDIF's serialisation of every request, run on a local
        ``nn_model``: how the tests exercise this path without a network).
    job_bytes : int
    check_first : bool
        Run the residual self-check first (default).

    Returns
    -------
    ndarray of shape (n_samples, 2 * n_layers, d_model), float32, or ``out``

    Raises
    ------
    tdcourse.models.RemoteUnavailableError
        NDIF refused or failed the job (the message carries NDIF's reason: a key without
        access, a model not deployed, a queue that dropped the job) or the values came back
        in an unexpected dtype.
    tdcourse.models.ResidualSiteError
        The residual identities fail on NDIF's model.
    """
    nnsight = _require_nnsight()  # noqa: F841
    import torch

    batch_size = check_int(batch_size, "batch_size")
    check_inputs(input_ids)
    check_token_ids(input_ids, getattr(text_config(files.config), "vocab_size", None),
                    where=f"{files.spec.label}'s vocabulary")
    nn_model = nn_model if nn_model is not None else remote_model(files)
    files.tokenizer.padding_side = "right"  # the course's tokenizers pad right (nnsight sets left)
    module = nn_model._module
    family = model_family(files.config)
    layers = decoder_layers(module)
    layers_path = _module_path(module, _layers_container(module))
    pad = _pad_id(module, files.tokenizer.pad_token_id)
    text = text_config(files.config)
    try:
        if check_first:
            ids, mask, _ = _pad(input_ids, np.arange(min(4, len(input_ids))), pad, torch.device("cpu"))
            with torch.inference_mode():
                gaps, dtype = residual_gaps(nn_model, family, layers_path, ids, mask, remote=remote)
            judge_residual_gaps(gaps, family, dtype)
        return capture_traced(nn_model, layers_path, RESIDUAL_SITES[family].mid, input_ids, 2 * len(layers),
                              int(text.hidden_size), batch_size=batch_size, pad_token_id=pad, progress=progress,
                              out=out, remote=remote, job_bytes=job_bytes, expect_dtype=files.spec.dtype)
    except RemoteUnavailableError:
        raise
    except Exception as err:
        if type(err).__name__ not in ("RemoteError", "WebSocketException", "WebSocketAddressException",
                                       "WebSocketConnectionClosedException", "ConnectError", "ConnectTimeout") \
                and not isinstance(err, OSError):
            raise
        reason = " ".join(str(err).split())[:300]
        hint = ""
        if any(code in reason for code in ("401", "403", "nauthori", "orbidden", "not approved", "access")):
            hint = (" Your NDIF key was refused for this model: check the key, and for 405B that your "
                    "application was approved (ndif.us).")
        raise RemoteUnavailableError(f"NDIF did not complete the capture of {files.spec.source} ({type(err).__name__}: "
                                     f"{reason}).{hint} Nothing was cached.") from err


def engine_info(remote: bool | str, batch_size: int, job_bytes: int | None = None) -> dict[str, Any]:
    """What an entry's record keeps about this engine (not part of the cache key)."""
    info: dict[str, Any] = {"engine": "nnsight", "backend": "ndif" if remote is True else "local",
                            "nnsight_version": nnsight_version(), "batch_size": batch_size}
    if remote is True:
        info.update(host=ndif_host(), ndif_revision="main", job_bytes=job_bytes, when=time.strftime("%Y-%m-%d"))
    return info
