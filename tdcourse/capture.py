"""Read the residual stream at the last token of each sample, and cache what was read.

Sites (the paper's two per layer; TransformerLens names in code, the paper's in prose):

=====================  ===========  ==============================================================
site name              paper        the point in a HF Llama decoder layer ``l``
=====================  ===========  ==============================================================
``resid_pre.{l}``      pre-Attn l   input of ``model.layers[l]`` (before ``input_layernorm``)
``resid_mid.{l}``      pre-MLP l    input of ``layers[l].post_attention_layernorm``, i.e.
                                    ``resid_pre.{l}`` + the attention block's output
=====================  ===========  ==============================================================

The central array has shape ``(n_samples, 2 * n_layers, d_model)``, sites ordered
``resid_pre.0, resid_mid.0, resid_pre.1, …, resid_mid.{L-1}``: the paper's "time" axis.
``resid_pre.0`` is the token embedding. Not captured: the last block's output and the final
norm (HF's ``hidden_states[-1]`` is the final-norm output, not a residual state).

Plain PyTorch forward pre-hooks on the HF model: no wrapper library, so values are the raw
residual stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import env
from .data import SampleRecipe, build_samples
from .models import DEFAULT_MODEL, ModelSpec, decoder_layers, load_model, load_tokenizer, resolve_spec

__all__ = [
    "FORMAT_VERSION",
    "SITE_KINDS",
    "Activations",
    "CacheError",
    "check_acts",
    "site_names",
    "site_index",
    "paper_site_name",
    "residual_hooks",
    "capture",
    "cache_key",
    "save_activations",
    "read_activations",
    "load_activations",
    "load_runs",
]

FORMAT_VERSION = 1
SITE_KINDS = ("resid_pre", "resid_mid")
_PAPER = {"resid_pre": "pre-Attn", "resid_mid": "pre-MLP"}


class CacheError(RuntimeError):
    """A cached activation file is corrupt, truncated or does not match what was asked."""


def site_names(n_layers: int) -> list[str]:
    """``["resid_pre.0", "resid_mid.0", …, "resid_mid.{n_layers-1}"]`` (length ``2 * n_layers``)."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be positive, got {n_layers}")
    return [f"{kind}.{l}" for l in range(n_layers) for kind in SITE_KINDS]


def site_index(kind: str, layer: int, n_layers: int) -> int:
    """Position of site ``kind.layer`` on the site axis.

    Raises ``ValueError`` for an unknown kind or a layer outside ``0 … n_layers-1``.
    """
    if kind not in SITE_KINDS:
        raise ValueError(f"site kind must be one of {SITE_KINDS}, got {kind!r}")
    if not 0 <= int(layer) < n_layers:
        raise ValueError(f"layer {layer} is out of range: this model has layers 0 to {n_layers - 1}")
    return 2 * int(layer) + SITE_KINDS.index(kind)


def paper_site_name(site: str) -> str:
    """``"resid_mid.3"`` → ``"pre-MLP 3"`` (the paper's words)."""
    kind, layer = site.split(".")
    return f"{_PAPER[kind]} {layer}"


def check_acts(acts, min_samples: int = 1, min_sites: int = 1, name: str = "acts", why: str = "") -> np.ndarray:
    """``acts`` as an array of shape ``(n_samples, n_sites, d_model)``, or a ``ValueError``
    that says what was expected. Integer arrays are converted to float64.

    Parameters
    ----------
    acts : array-like of shape (n_samples, n_sites, d_model)
    min_samples, min_sites : int
        The fewest samples (axis 0) and sites (axis 1) the caller can work with.
    name : str
        The argument's name, for the message.
    why : str
        What the minimum is for, appended to the message (e.g. ``"for a correlation"``).
    """
    arr = np.asarray(acts)
    if arr.ndim != 3:
        raise ValueError(f"{name} must have shape (n_samples, n_sites, d_model), got {arr.shape}")
    if min(arr.shape) < 1:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    reason = f" {why}" if why else ""
    if arr.shape[0] < min_samples:
        raise ValueError(f"{name} needs at least {min_samples} samples on axis 0{reason}, got {arr.shape[0]}")
    if arr.shape[1] < min_sites:
        raise ValueError(f"{name} needs at least {min_sites} sites on axis 1{reason}, got {arr.shape[1]}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


@dataclass(frozen=True)
class Activations:
    """Captured residual-stream states at the last token.

    Attributes
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model), float32
        ``n_sites = 2 * n_layers``, ordered as :func:`site_names`.
    sites : list of str, length n_sites
    texts : list of str, length n_samples
        What sample ``i`` holds (decoded tokens the model read).
    meta : dict
        The cache key's contents: model spec, sample recipe, data hash, format version.
    path : pathlib.Path or None
        Where it is cached.

    Unpacks as ``acts, sites, texts = load_activations(...)``.
    """

    acts: np.ndarray
    sites: list[str]
    texts: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.acts, self.sites, self.texts))

    @property
    def n_layers(self) -> int:
        return self.acts.shape[1] // 2

    @property
    def d_model(self) -> int:
        return self.acts.shape[2]

    @property
    def label(self) -> str:
        """Human label of the model that produced it, e.g. ``"smollm2-135m · random init (seed 0)"``."""
        spec = self.meta.get("model", {})
        return ModelSpec(**spec).label if spec else "unknown model"

    def site(self, kind: str, layer: int) -> np.ndarray:
        """States at one site, shape ``(n_samples, d_model)``."""
        return self.acts[:, site_index(kind, layer, self.n_layers)]


def _layer_input(args: tuple, kwargs: dict):
    return args[0] if args else kwargs["hidden_states"]


@contextlib.contextmanager
def residual_hooks(model, on_state) -> Iterator[None]:
    """Call ``on_state(site_position, hidden)`` at every site during a forward pass.

    ``hidden`` is the raw residual tensor of shape ``(batch, seq, d_model)`` at that site;
    ``site_position`` indexes :func:`site_names`. Hooks are removed on exit, also on error.
    """
    handles = []
    try:
        for l, layer in enumerate(decoder_layers(model)):
            for pos, module in ((2 * l, layer), (2 * l + 1, layer.post_attention_layernorm)):
                def hook(mod, args, kwargs, _pos=pos):
                    on_state(_pos, _layer_input(args, kwargs))
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _batches(input_ids: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    """Sample indices in order, in contiguous batches of ``batch_size``."""
    n = len(input_ids)
    return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _pad(input_ids: Sequence[Sequence[int]], idx: np.ndarray, pad_id: int, device):
    import torch

    lengths = [len(input_ids[i]) for i in idx]
    width = max(lengths)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        ids[row, : lengths[row]] = torch.tensor(input_ids[i])
        mask[row, : lengths[row]] = 1
    return ids.to(device), mask.to(device), torch.tensor(lengths, device=device) - 1


def _model_device(model):
    return next(model.parameters()).device


def capture(
    model,
    input_ids: Sequence[Sequence[int]],
    batch_size: int = 32,
    pad_token_id: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Residual states at the last real token of each sample, at every site.

    Parameters
    ----------
    model : transformers Llama-style causal LM
    input_ids : sequence of n_samples token-id lists (unpadded, any lengths)
    batch_size : int
        Samples per forward pass (right-padded; batches group similar lengths).
    pad_token_id : int or None
        Defaults to the model config's pad or eos id.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    ndarray of shape (n_samples, 2 * n_layers, d_model), float32
        Sites ordered as :func:`site_names`. Only the decoder (``model.model``) runs: the LM
        head is not computed.
    """
    import torch
    from tqdm.auto import tqdm

    if len(input_ids) == 0:
        raise ValueError("input_ids is empty")
    if any(len(x) == 0 for x in input_ids):
        raise ValueError("every sample needs at least one token")
    layers = decoder_layers(model)
    n_sites = 2 * len(layers)
    d_model = model.config.hidden_size
    device = _model_device(model)
    if pad_token_id is None:
        pad_token_id = model.config.pad_token_id
        if pad_token_id is None:
            eos = model.config.eos_token_id
            pad_token_id = eos[0] if isinstance(eos, (list, tuple)) else (eos or 0)
    out = np.empty((len(input_ids), n_sites, d_model), dtype=np.float32)
    base = getattr(model, "model", model)
    state: dict[str, Any] = {}

    def on_state(pos, hidden):
        state["buf"][:, pos] = hidden[state["rows"], state["last"]]

    # Results stay on the device and are copied to the CPU in blocks of about 256 MiB, straight
    # into the output array: a copy per batch would make the CPU wait for the GPU instead of
    # queueing the next batch.
    out_t = torch.from_numpy(out)
    pending: list[tuple[np.ndarray, Any]] = []
    flush_bytes = 256 * 2**20
    finite = torch.ones((), dtype=torch.bool, device=device)

    def flush():
        for idx, buf in pending:
            out_t[idx[0] : idx[-1] + 1].copy_(buf)
        pending.clear()

    with torch.inference_mode(), residual_hooks(model, on_state):
        for idx in tqdm(_batches(input_ids, batch_size), desc="capture", unit="batch", disable=not progress):
            ids, mask, last = _pad(input_ids, idx, pad_token_id, device)
            state["rows"] = torch.arange(len(idx), device=device)
            state["last"] = last
            state["buf"] = torch.empty((len(idx), n_sites, d_model), dtype=torch.float32, device=device)
            base(input_ids=ids, attention_mask=mask, use_cache=False)
            finite &= torch.isfinite(state["buf"]).all()
            pending.append((idx, state["buf"]))
            if len(pending) * state["buf"].numel() * 4 >= flush_bytes:
                flush()
        flush()
    if not bool(finite):
        raise FloatingPointError("The captured activations hold NaN or inf: try float32 or bfloat16 instead of float16.")
    return out


# --------------------------------------------------------------------------- cache


def cache_key(meta: dict[str, Any]) -> str:
    """Hex digest naming the cache entry of ``meta`` (stable JSON, SHA-256, 24 hex digits)."""
    blob = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _entry_dir(meta: dict[str, Any]) -> Path:
    spec = meta["model"]
    tag = f"{spec['name'].replace('/', '--')}-{spec['quant']}-{spec['dtype']}-{spec['init']}-n{meta['recipe']['n']}"
    return env.cache_dir() / "activations" / f"{tag}-{cache_key(meta)}"


def save_activations(acts: np.ndarray, sites: list[str], texts: list[str], meta: dict[str, Any]) -> Path:
    """Write one cache entry atomically (temporary folder, then rename); return its folder."""
    target = _entry_dir(meta)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        np.save(tmp / "acts.npy", np.ascontiguousarray(acts, dtype=np.float32))
        record = {
            "meta": meta,
            "key": cache_key(meta),
            "shape": list(acts.shape),
            "sites": sites,
            "texts": texts,
            "sha256": _sha256_file(tmp / "acts.npy"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "meta.json").write_text(json.dumps(record, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_activations(path: Path, expect_meta: dict[str, Any] | None = None, verify: bool = True) -> Activations:
    """Read a cache entry, checking its checksum and (if given) that its metadata is ``expect_meta``.

    Raises
    ------
    CacheError
        The entry is incomplete, corrupt, of another format version or built for something
        else; the message says how to rebuild it.
    """
    path = Path(path)
    rebuild = (f"Delete {path} and capture again (load_activations(..., rebuild=True) or "
               "`python -m tdcourse capture ... --rebuild`).")
    try:
        record = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CacheError(f"The activation cache entry {path} has no readable meta.json ({err}). {rebuild}") from err
    meta = record.get("meta", {})
    if meta.get("format_version") != FORMAT_VERSION:
        raise CacheError(f"{path} was written by capture format {meta.get('format_version')}, "
                         f"this tdcourse reads format {FORMAT_VERSION}. {rebuild}")
    if expect_meta is not None and meta != expect_meta:
        diff = sorted(k for k in set(meta) | set(expect_meta) if meta.get(k) != expect_meta.get(k))
        raise CacheError(f"{path} holds activations for other settings (differs in {diff}). {rebuild}")
    npy = path / "acts.npy"
    if verify:
        try:
            digest = _sha256_file(npy)
        except OSError as err:
            raise CacheError(f"{npy} is missing or unreadable ({err}). {rebuild}") from err
        if digest != record.get("sha256"):
            raise CacheError(f"{npy} is corrupt or truncated (checksum mismatch). {rebuild}")
    try:
        acts = np.load(npy, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise CacheError(f"{npy} cannot be read ({err}). {rebuild}") from err
    if list(acts.shape) != record.get("shape") or acts.shape[1] != len(record["sites"]) or acts.shape[0] != len(record["texts"]):
        raise CacheError(f"{npy} has shape {acts.shape}, its metadata says {record.get('shape')}. {rebuild}")
    return Activations(acts=acts, sites=list(record["sites"]), texts=list(record["texts"]), meta=meta, path=path)


def _meta(spec: ModelSpec, recipe: SampleRecipe, data_sha256: str, ids_sha256: str) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "model": spec.to_dict(),
        "recipe": recipe.to_dict(),
        "data_sha256": data_sha256,
        "input_ids_sha256": ids_sha256,
        "sites": list(SITE_KINDS),
        "position": "last",
    }


def _ids_digest(ids: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(ids, separators=(",", ":")).encode()).hexdigest()


def load_activations(
    model: str = DEFAULT_MODEL,
    n: int = 1000,
    quant: str = "auto",
    init: str = "trained",
    seed: int = 0,
    dtype: str | None = None,
    recipe: SampleRecipe | None = None,
    batch_size: int = 32,
    rebuild: bool = False,
    progress: bool = True,
) -> Activations:
    """The residual stream of ``n`` WikiText-2 samples at the last token, every site.

    Captures on the first call (loading the model), then reads the cache: every chapter
    calls this with the same arguments and shares one capture.

    Parameters
    ----------
    model : str
        Model name as for :func:`tdcourse.models.load_model`.
    n : int
        Number of samples (``recipe.n`` is replaced by it).
    quant, init, seed, dtype : as for :func:`tdcourse.models.load_model`
    recipe : SampleRecipe or None
        Defaults to :class:`tdcourse.data.SampleRecipe` ().
    batch_size : int
    rebuild : bool
        Capture again even if a cache entry exists.
    progress : bool

    Returns
    -------
    Activations
        ``acts`` of shape ``(n, 2 * n_layers, d_model)``; unpacks as ``acts, sites, texts``.
    """
    from dataclasses import replace

    recipe = replace(recipe or SampleRecipe(), n=int(n))
    spec = resolve_spec(model, quant=quant, dtype=dtype, init=init, seed=seed)
    # The tokenizer alone fixes the samples, and the config gives the hub revision, so a cached
    # entry is found without loading the model's weights.
    tok, _config, spec = load_tokenizer(spec)
    samples = build_samples(tok, recipe)
    meta = _meta(spec, recipe, samples.data_sha256, _ids_digest(samples.input_ids))
    path = _entry_dir(meta)
    if path.exists() and not rebuild:
        return read_activations(path, expect_meta=meta)
    mdl, tok = load_model(model, quant=quant, dtype=dtype, init=init, seed=seed)
    if mdl.tdcourse_spec != spec:  # the hub moved on between the two reads
        spec = mdl.tdcourse_spec
        meta = _meta(spec, recipe, samples.data_sha256, _ids_digest(samples.input_ids))
    t0 = time.perf_counter()
    acts = capture(mdl, samples.input_ids, batch_size=batch_size, pad_token_id=tok.pad_token_id, progress=progress)
    elapsed = time.perf_counter() - t0
    names = site_names(acts.shape[1] // 2)
    path = save_activations(acts, names, samples.texts, meta)
    if progress:
        print(f"Captured {acts.shape} from {spec.label} in {elapsed:.0f} s; cached in {path}")
    return Activations(acts=acts, sites=names, texts=samples.texts, meta=meta, path=path)


def load_runs(model: str = DEFAULT_MODEL, n: int = 1000, control: bool = True, **kwargs) -> list[Activations]:
    """The runs a chapter compares: the trained model, then its random-init control.

    ``[trained, control]``, each an :class:`Activations` from :func:`load_activations` with the
    same samples. The control is the same architecture with seeded random weights: what it
    shares with the trained model comes from the architecture, not from training. Where the
    control cannot be built (an 8B model on a GPU too small to hold it unquantised), or with
    ``control=False``, the list holds the trained run alone and the reason is printed.
    Chapters loop over this list, so they run either way.
    """
    from .models import ModelTooLargeError

    runs = [load_activations(model=model, n=n, **kwargs)]
    if control:
        ctrl_kwargs = {k: v for k, v in kwargs.items() if k != "quant"}
        try:
            runs.append(load_activations(model=model, n=n, init="random", quant="none", **ctrl_kwargs))
        except ModelTooLargeError as err:
            print(f"The random-init control is skipped: {err} Chapters then show the trained model alone.")
    return runs
