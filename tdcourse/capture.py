"""Read the residual stream at the last token of each sample, and cache what was read.

Sites (the paper's two per layer; TransformerLens names in code, the paper's in prose):

=====================  ===========  ==============================================================
site name              paper        the point in a HF Llama decoder layer ``l``
=====================  ===========  ==============================================================
``resid_pre.{l}``      pre-Attn l   input of ``model.layers[l]`` (before ``input_layernorm``)
``resid_mid.{l}``      pre-MLP l    input of ``layers[l].post_attention_layernorm``, i.e.
                                    ``resid_pre.{l}`` + the attention block's output
=====================  ===========  ==============================================================

That is Llama's (and Mistral's, Qwen's); families that normalise block outputs put
``resid_mid`` elsewhere (OLMo-2: input of ``mlp``; Gemma-2/3: input of
``pre_feedforward_layernorm``): :data:`tdcourse.models.RESIDUAL_SITES` says where, and
:func:`tdcourse.models.check_residual_sites` checks it on the first batch of every capture.

The central array has shape ``(n_samples, 2 * n_layers, d_model)``, sites ordered
``resid_pre.0, resid_mid.0, resid_pre.1, …, resid_mid.{L-1}``: the paper's "time" axis.
``resid_pre.0`` is the token embedding. Not captured: the last block's output and the final
norm (HF's ``hidden_states[-1]`` is the final-norm output, not a residual state).

Plain PyTorch forward pre-hooks on the HF model: no wrapper library, so values are the raw
residual stream.

The cache (``<TDCOURSE_CACHE>/activations/``): one folder per capture, named by the model, its
precision, N and a hash of everything that determines the values (model, revision, recipe,
data, token ids, format); batch size is not in it because it does not change the values. Every
read checks the entry's checksum once per process, its shape and that it is finite; writes are
atomic and safe with concurrent writers; the room needed is checked before a capture starts.
:func:`export_activations` / :func:`import_activations` move captures between machines (an
instructor's GPU to offline laptops), and :func:`load_activations` finds an imported capture
when the model itself cannot be reached; :func:`model_available` tells a chapter whether the
model's weights can be loaded here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import env
from .data import SampleRecipe, body_lines, build_samples, check_int, check_recipe, load_wikitext
from .models import DEFAULT_MODEL, ModelSpec, decoder_layers, load_model, load_tokenizer, resolve_spec

__all__ = [
    "FORMAT_VERSION",
    "SITE_KINDS",
    "Activations",
    "CacheError",
    "check_acts",
    "nonfinite_sites",
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
    "activations_dir",
    "results_dir",
    "result_path",
    "save_result",
    "load_result",
    "check_cache_room",
    "clean_stale_temporaries",
    "find_entries",
    "export_activations",
    "import_activations",
    "ModelAvailability",
    "model_available",
]

FORMAT_VERSION = 1
SITE_KINDS = ("resid_pre", "resid_mid")
_PAPER = {"resid_pre": "pre-Attn", "resid_mid": "pre-MLP"}


class CacheError(RuntimeError):
    """A cached activation file is corrupt, truncated or does not match what was asked."""


def site_names(n_layers: int) -> list[str]:
    """``["resid_pre.0", "resid_mid.0", …, "resid_mid.{n_layers-1}"]`` (length ``2 * n_layers``)."""
    check_int(n_layers, "n_layers")
    return [f"{kind}.{l}" for l in range(n_layers) for kind in SITE_KINDS]


def site_index(kind: str, layer: int, n_layers: int) -> int:
    """Position of site ``kind.layer`` on the site axis.

    Raises ``ValueError`` for an unknown kind, a layer that is not an integer (``1.7`` is
    refused, not read as layer 1) or a layer outside ``0 … n_layers-1``.
    """
    if kind not in SITE_KINDS:
        raise ValueError(f"site kind must be one of {SITE_KINDS}, got {kind!r}")
    layer = check_int(layer, "layer", minimum=None)
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is out of range: this model has layers 0 to {n_layers - 1}")
    return 2 * layer + SITE_KINDS.index(kind)


def paper_site_name(site: str) -> str:
    """``"resid_mid.3"`` → ``"pre-MLP 3"`` (the paper's words)."""
    kind, layer = site.split(".")
    return f"{_PAPER[kind]} {layer}"


def check_acts(acts, min_samples: int = 1, min_sites: int = 1, name: str = "acts", why: str = "",
               finite: bool = True) -> np.ndarray:
    """``acts`` as an array of shape ``(n_samples, n_sites, d_model)``, or a ``ValueError``
    that says what was expected.

    Every analysis of the course enters through this check, so no verdict is ever computed
    from NaN or inf: a single non-finite value stops it with a message naming the first
    samples and sites that hold one. Dtypes follow the course's one rule
    (:func:`tdcourse.checks.check_dtype`): float32 and float64 as they are, integers as
    float64, anything else (float16 above all: its squares overflow) refused with how to convert.

    Parameters
    ----------
    acts : array-like of shape (n_samples, n_sites, d_model)
    min_samples, min_sites : int
        The fewest samples (axis 0) and sites (axis 1) the caller can work with.
    name : str
        The argument's name, for the message.
    why : str
        What the minimum is for, appended to the message (e.g. ``"for a correlation"``).
    finite : bool
        Refuse NaN and inf (default). The check reads the array once, in blocks of samples
        (about 0.2 s for a 1 GB float32 array on one core); it allocates no full-size mask.

    Returns
    -------
    ndarray of shape (n_samples, n_sites, d_model)
        ``acts`` itself when it is already a floating array (no copy).

    Raises
    ------
    ValueError
        Wrong number of axes, empty, too few samples or sites, a dtype other than float32,
        float64 or integer, or non-finite values.
    """
    from .checks import check_dtype

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
    floating = arr.dtype == np.float32 or arr.dtype == np.float64
    arr = check_dtype(arr, name)  # before any statistic: float16 and friends are refused here
    if floating and finite:
        bad = nonfinite_sites(arr)
        if len(bad):
            raise ValueError(_nonfinite_message(arr, bad, name))
    return arr


def nonfinite_sites(acts: np.ndarray, block_bytes: int = 8 << 20) -> np.ndarray:
    """The ``(sample, site)`` pairs of ``acts`` that hold a NaN or an inf.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model), floating
    block_bytes : int
        Samples are checked in blocks of about this size (cache-friendly; no full-size mask).

    Returns
    -------
    ndarray of int of shape (n_bad, 2)
        Rows ``(sample, site)``, in order; empty when every value is finite.
    """
    arr = np.asarray(acts)
    per_sample = max(1, arr[0].nbytes if arr.ndim and len(arr) else 1)
    step = max(1, block_bytes // per_sample)
    found = []
    for start in range(0, arr.shape[0], step):
        block = arr[start : start + step]
        if np.isfinite(block).all():
            continue
        s, t = np.nonzero(~np.isfinite(block).reshape(block.shape[0], block.shape[1], -1).all(axis=2))
        found.append(np.stack([s + start, t], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def _nonfinite_message(arr: np.ndarray, bad: np.ndarray, name: str, first: int = 5) -> str:
    n_sites = arr.shape[1]
    names = site_names(n_sites // 2) if n_sites % 2 == 0 else None
    where = ", ".join(f"sample {s} at site {t}" + (f" ({names[t]})" if names else "") for s, t in bad[:first])
    more = f" and {len(bad) - first} more" if len(bad) > first else ""
    samples = np.unique(bad[:, 0]).size
    return (f"{name} holds NaN or inf in {len(bad)} (sample, site) pairs over {samples} samples: {where}{more}. "
            "No analysis is computed from non-finite activations. If they came from a capture in float16, "
            "capture again in float32 or bfloat16 (rebuild=True); if from your own code, find the step that "
            "made them.")


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
        """States at one site, shape ``(n_samples, d_model)``.

        ``kind`` is ``"resid_pre"`` or ``"resid_mid"``; ``layer`` an integer in ``0 … n_layers-1``
        (``1.7`` or ``True`` are refused with a ``ValueError``, never read as layer 1).
        """
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
        from .models import residual_sites  # resid_mid's module depends on the family (OLMo-2, Gemma-2/3)

        for l, (layer, mid) in enumerate(residual_sites(model)):
            for pos, module in ((2 * l, layer), (2 * l + 1, mid)):
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


def _pad_id(model, pad_token_id: int | None) -> int:
    """A token id to fill padded slots with: the given one, else the config's pad or eos id,
    and 0 when that id is outside the embedding table (a pad token added to a tokenizer whose
    model was not resized). Padded slots come after each sample's last real token and are
    masked, so their value is never read: any id inside the vocabulary gives the same states."""
    vocab = None
    emb = getattr(model, "get_input_embeddings", lambda: None)()
    if emb is not None and getattr(emb, "num_embeddings", None):
        vocab = int(emb.num_embeddings)
    candidates = [pad_token_id, model.config.pad_token_id, model.config.eos_token_id]
    for c in candidates:
        c = c[0] if isinstance(c, (list, tuple)) and c else c
        if isinstance(c, int) and not isinstance(c, bool) and c >= 0 and (vocab is None or c < vocab):
            return c
    return 0


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

    batch_size = check_int(batch_size, "batch_size")
    if len(input_ids) == 0:
        raise ValueError("input_ids is empty")
    if any(len(x) == 0 for x in input_ids):
        raise ValueError("every sample needs at least one token")
    layers = decoder_layers(model)
    n_sites = 2 * len(layers)
    d_model = model.config.hidden_size
    device = _model_device(model)
    pad_token_id = _pad_id(model, pad_token_id)
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

    from .models import check_residual_sites  # refuses a model whose sites would be read wrongly

    check_residual_sites(model, *_pad(input_ids, np.arange(min(4, len(input_ids))), pad_token_id, device)[:2])
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
#
# One entry = one folder ``activations/<tag>-<key>/`` holding ``acts.npy`` and ``meta.json``.
# Writers build the entry in a temporary folder inside ``activations/`` (same filesystem, so
# the final rename is atomic) and install it under an exclusive lock on
# ``activations/.locks/<entry>.lock``; readers hold a shared lock on that file while they read.
# A reader therefore sees a whole old entry or a whole new one, and concurrent writers of one
# key all succeed (the last one's entry stays). Where the filesystem has no ``flock`` (some
# network mounts), the lock is skipped and the rename alone keeps entries whole.

_TMP_PREFIX = env.TMP_PREFIX
STALE_TMP_S = env.STALE_TMP_S
_MIN_FREE_BYTES = 64 * 2**20
_REQUIRED_RECORD = ("meta", "shape", "sites", "texts")
_REQUIRED_META = ("format_version", "model", "recipe", "data_sha256", "input_ids_sha256", "sites", "position")
# (path, device, inode, size, mtime_ns, checksum) of acts.npy files verified by this process:
# a cache of work done (a full-file hash), never of results. Files modified in the last
# _RACY_S seconds are not remembered (timestamps are coarser than a quick rewrite).
_VERIFIED: set[tuple] = set()
_RACY_S = 2.0


def cache_key(meta: dict[str, Any]) -> str:
    """Hex digest naming the cache entry of ``meta`` (stable JSON, SHA-256, 24 hex digits)."""
    blob = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _hasher(algo: str):
    if algo == "sha256":
        return hashlib.sha256()
    if algo == "xxh3_128":
        import xxhash

        return xxhash.xxh3_128()
    raise CacheError(f"unknown checksum algorithm {algo!r} in the cache entry")


def _default_algo() -> str:
    # xxh3 (installed with ``datasets``) hashes at ~5 GB/s, SHA-256 at ~1 GB/s: the checksum
    # guards against corruption, not against an attacker.
    import importlib.util

    return "xxh3_128" if importlib.util.find_spec("xxhash") is not None else "sha256"


def _file_digest(path: Path, algo: str) -> str:
    h = _hasher(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _slug(text: str, limit: int = 48) -> str:
    """``text`` as a short, safe part of a folder name: letters, digits, ``.``, ``_``, ``-``;
    never empty, never starting with ``-`` or ``.``; long names keep their end (the folder
    name of a local model), the cache key keeps entries distinct."""
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text).replace("/", "--")).strip("-.")
    if len(slug) > limit:
        slug = slug[-limit:].lstrip("-.")
    return slug or "model"


def _entry_name(meta: dict[str, Any]) -> str:
    spec = meta["model"]
    tag = "-".join(_slug(str(spec.get(k)), 16) for k in ("quant", "dtype", "init"))
    return f"{_slug(spec['name'])}-{tag}-n{int(meta['recipe']['n'])}-{cache_key(meta)}"


def activations_dir() -> Path:
    """The folder of the activation cache, ``<cache>/activations`` (created on first use).

    Raises
    ------
    CacheError
        A file is where the folder should be, or it cannot be created.
    """
    path = env.cache_dir() / "activations"
    if path.exists() and not path.is_dir():
        raise CacheError(f"{path} is a file, not a folder: move it away, or set TDCOURSE_CACHE to another folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(f"The activation cache {path} cannot be created ({err}). "
                         "Set TDCOURSE_CACHE to a folder you can write.") from err
    return path


def _entry_dir(meta: dict[str, Any]) -> Path:
    return activations_dir() / _entry_name(meta)


@contextlib.contextmanager
def _locked(entry: Path, exclusive: bool) -> Iterator[None]:
    """Hold a lock on ``entry`` (exclusive for writers, shared for readers) where possible."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic rename alone
        yield
        return
    lock_dir = entry.parent / ".locks"
    try:
        lock_dir.mkdir(exist_ok=True)
        fd = os.open(lock_dir / f"{entry.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # read-only cache: nobody can write it, reading needs no lock
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError:  # filesystem without flock
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


def _tmp_name() -> str:
    return env.temporary_name()


def clean_stale_temporaries(folder: Path | None = None, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Remove leftovers of killed saves (``.tmp-*`` in the activation cache); see
    :func:`tdcourse.env.clean_stale_temporaries`, which this calls with the activation folder."""
    return env.clean_stale_temporaries(Path(folder) if folder is not None else activations_dir(), max_age_s)


def check_cache_room(n_bytes: int, folder: Path | None = None) -> Path:
    """Make sure the activation cache can take ``n_bytes`` more, before a capture starts.

    Writes and removes a small probe file (a read-only folder is found now, not after the
    capture) and compares ``n_bytes`` (plus 64 MiB) with the free space of the folder's disk
    (:func:`shutil.disk_usage`).

    Parameters
    ----------
    n_bytes : int
        What the entry will take (``n_samples * n_sites * d_model * 4`` for float32).
    folder : pathlib.Path or None
        Default: the activation cache folder.

    Returns
    -------
    pathlib.Path
        The folder checked.

    Raises
    ------
    CacheError
        The folder is not writable or its disk has too little free space; one line that says
        how much is needed and how to choose another folder (``TDCOURSE_CACHE``).
    """
    folder = Path(folder) if folder is not None else activations_dir()
    probe = folder / f"{_tmp_name()}.probe"
    try:
        with open(probe, "wb") as f:
            f.write(b"tdcourse")
        probe.unlink()
    except OSError as err:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise CacheError(f"The cache folder {folder} is not writable ({err.strerror or err}): nothing was captured. "
                         "Set TDCOURSE_CACHE to a folder you can write.") from err
    need = int(n_bytes) + _MIN_FREE_BYTES
    free = shutil.disk_usage(folder).free
    if free < need:
        raise CacheError(f"The cache folder {folder} has {free / 2**30:.2f} GiB free and this capture needs about "
                         f"{need / 2**30:.2f} GiB: nothing was captured. Free some space or set TDCOURSE_CACHE "
                         "to a folder on a larger disk.")
    return folder


def save_activations(acts: np.ndarray, sites: list[str], texts: list[str], meta: dict[str, Any]) -> Path:
    """Write one cache entry atomically and return its folder.

    The entry is written into a temporary folder inside the cache, checksummed, then renamed
    into place under the entry's lock, replacing an older entry of the same key. Concurrent
    saves of one key all succeed; a reader sees the whole old or the whole new entry. Stale
    temporary folders of killed saves are removed first (:func:`clean_stale_temporaries`).

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
        Stored as float32; must be finite.
    sites : list of str, length n_sites
    texts : list of str, length n_samples
    meta : dict
        The entry's key (see :func:`load_activations`); must hold ``model`` and ``recipe``.

    Raises
    ------
    ValueError
        ``acts`` holds NaN or inf, or ``sites``/``texts`` do not match its shape.
    CacheError
        The cache cannot be written (the message says why: no space, read-only, ...).
    """
    arr = check_acts(acts)
    if len(sites) != arr.shape[1] or len(texts) != arr.shape[0]:
        raise ValueError(f"sites ({len(sites)}) and texts ({len(texts)}) must match acts' shape {arr.shape}")
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"meta lacks {missing}")
    folder = activations_dir()
    clean_stale_temporaries(folder)
    target = folder / _entry_name(meta)
    tmp = folder / _tmp_name()
    algo = _default_algo()
    try:
        tmp.mkdir()
        np.save(tmp / "acts.npy", np.ascontiguousarray(arr, dtype=np.float32))
        record = {
            "meta": meta,
            "key": cache_key(meta),
            "shape": list(arr.shape),
            "sites": list(sites),
            "texts": list(texts),
            "checksum": {"algorithm": algo, "hex": _file_digest(tmp / "acts.npy", algo)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "meta.json").write_text(json.dumps(record, indent=1))
        _install(tmp, target)
    except OSError as err:
        raise CacheError(f"Could not write the cache entry {target} ({err.strerror or err}). Free some space or "
                         "set TDCOURSE_CACHE to a folder you can write.") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _install(tmp: Path, target: Path) -> None:
    """Rename the complete folder ``tmp`` to ``target`` under ``target``'s exclusive lock."""
    with _locked(target, exclusive=True):
        old = None
        if target.exists() or target.is_symlink():
            old = target.parent / _tmp_name()
            os.replace(target, old)  # a file or folder in the way: moved aside, removed below
        os.replace(tmp, target)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                old.unlink()


def _read_npy(npy: Path, algo: str | None) -> tuple[np.ndarray, str | None]:
    """Read a float32 ``.npy`` in one pass, hashing its bytes on the way when ``algo`` is given."""
    h = _hasher(algo) if algo else None
    with open(npy, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        header_len = f.tell()
        if fortran or dtype != np.dtype("<f4"):
            raise ValueError(f"expected a C-ordered little-endian float32 array, got {dtype} (fortran={fortran})")
        if h is not None:
            f.seek(0)
            h.update(f.read(header_len))
        arr = np.empty(shape, dtype=np.float32)
        buf = memoryview(arr.reshape(-1).view(np.uint8))
        pos, step = 0, 1 << 24
        while pos < len(buf):
            got = f.readinto(buf[pos : pos + step])
            if not got:
                raise ValueError(f"the file ends after {header_len + pos} bytes, {header_len + len(buf)} expected")
            if h is not None:
                h.update(buf[pos : pos + got])
            pos += got
        if f.read(1):
            raise ValueError("the file is longer than its header says")
    return arr, (h.hexdigest() if h is not None else None)


def _stat_key(npy: Path, checksum: str) -> tuple | None:
    st = os.stat(npy)
    if time.time() - st.st_mtime < _RACY_S:
        return None
    return (str(npy.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, checksum)


def _record_checksum(record: dict[str, Any]) -> tuple[str, str] | None:
    if isinstance(record.get("checksum"), dict):
        c = record["checksum"]
        if isinstance(c.get("algorithm"), str) and isinstance(c.get("hex"), str):
            return c["algorithm"], c["hex"]
        return None
    if isinstance(record.get("sha256"), str):  # entries written before the checksum field
        return "sha256", record["sha256"]
    return None


def read_activations(path: Path, expect_meta: dict[str, Any] | None = None, verify: bool = True) -> Activations:
    """Read a cache entry, checking its checksum and (if given) that its metadata is ``expect_meta``.

    The checksum of ``acts.npy`` is computed while the file is read (one pass). A file
    verified once by this process, unchanged since (same inode, size and modification time),
    is not hashed again: a chapter that reads the same entry twice pays the hash once.

    Parameters
    ----------
    path : pathlib.Path
        The entry's folder.
    expect_meta : dict or None
        The metadata the caller asked for; the entry must hold exactly this.
    verify : bool
        Check the checksum (default).

    Returns
    -------
    Activations

    Raises
    ------
    CacheError
        The entry is missing, incomplete, corrupt, holds NaN or inf, is of another format
        version or built for something else; the message says how to rebuild it.
    """
    path = Path(path)
    rebuild = (f"Delete {path} and capture again (load_activations(..., rebuild=True) or "
               "`python -m tdcourse capture ... --rebuild`).")
    with _locked(path, exclusive=False):
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            raise CacheError(f"The activation cache entry {path} {what}. {rebuild}")
        try:
            record = json.loads((path / "meta.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CacheError(f"The activation cache entry {path} has no readable meta.json ({err}). {rebuild}") from err
        if not isinstance(record, dict):
            raise CacheError(f"{path / 'meta.json'} is not a metadata record. {rebuild}")
        missing = [k for k in _REQUIRED_RECORD if k not in record]
        meta = record.get("meta")
        if not isinstance(meta, dict):
            missing.append("meta")
            meta = {}
        if meta.get("format_version") not in (None, FORMAT_VERSION) and not missing:
            raise CacheError(f"{path} was written by capture format {meta.get('format_version')}, "
                             f"this tdcourse reads format {FORMAT_VERSION}. {rebuild}")
        missing += [f"meta.{k}" for k in _REQUIRED_META if k not in meta]
        checksum = _record_checksum(record)
        if verify and checksum is None:
            missing.append("checksum")
        if missing:
            raise CacheError(f"{path / 'meta.json'} lacks {sorted(set(missing))}: the entry is incomplete. {rebuild}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise CacheError(f"{path} was written by capture format {meta.get('format_version')}, "
                             f"this tdcourse reads format {FORMAT_VERSION}. {rebuild}")
        sites, texts, shape = record["sites"], record["texts"], record["shape"]
        if not (isinstance(sites, list) and isinstance(texts, list) and isinstance(shape, list)
                and all(isinstance(x, str) for x in sites) and all(isinstance(x, str) for x in texts)):
            raise CacheError(f"{path / 'meta.json'} has malformed sites, texts or shape. {rebuild}")
        if expect_meta is not None and meta != expect_meta:
            diff = sorted(k for k in set(meta) | set(expect_meta) if meta.get(k) != expect_meta.get(k))
            raise CacheError(f"{path} holds activations for other settings (differs in {diff}). {rebuild}")
        npy = path / "acts.npy"
        try:
            key = _stat_key(npy, checksum[1]) if (verify and checksum) else None
            hash_now = verify and (key is None or key not in _VERIFIED)
            acts, digest = _read_npy(npy, checksum[0] if hash_now else None)
        except (OSError, ValueError) as err:
            raise CacheError(f"{npy} is missing, truncated or unreadable ({err}). {rebuild}") from err
    if hash_now and digest != checksum[1]:
        raise CacheError(f"{npy} is corrupt or truncated (checksum mismatch). {rebuild}")
    if list(acts.shape) != shape or acts.shape[1] != len(sites) or acts.shape[0] != len(texts):
        raise CacheError(f"{npy} has shape {acts.shape}, its metadata says {shape}. {rebuild}")
    if hash_now:
        bad = nonfinite_sites(acts)
        if len(bad):
            raise CacheError(f"{npy}: {_nonfinite_message(acts, bad, 'the cached array')} {rebuild}")
        if key is not None:
            _VERIFIED.add(key)
    return Activations(acts=acts, sites=list(sites), texts=list(texts), meta=meta, path=path)


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


def _data_digest(recipe: SampleRecipe) -> str:
    """The ``data_sha256`` of ``recipe``'s samples, from the shipped text alone (no tokenizer)."""
    chosen = body_lines(load_wikitext(split=recipe.split), recipe.min_chars, recipe.max_chars)[: recipe.n]
    return hashlib.sha256("\n".join(chosen).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- finding entries


def _entry_records(folder: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable entry's folder and ``meta.json`` record (unverified), newest first."""
    folder = Path(folder) if folder is not None else activations_dir()
    out = []
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir()]
    except OSError:
        return out
    for p in entries:
        try:
            record = json.loads((p / "meta.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("meta"), dict):
            out.append((p, record))
    out.sort(key=lambda pr: str(pr[1].get("created", "")), reverse=True)
    return out


def _is_path_name(model: str) -> bool:
    """True for a model name that can only be a folder path, never an alias or a hub id."""
    return (model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1
            or os.path.isabs(model))


def _names_of(model: str) -> set[str]:
    from .models import ALIASES

    names = {model, model.lower()}
    if model.lower() in ALIASES:
        names.add(ALIASES[model.lower()])
    if _is_path_name(model):  # local folders are named by their absolute path
        names.add(str(Path(model).expanduser().resolve()))
    return names


def find_entries(
    model: str,
    recipe: SampleRecipe,
    init: str | None = "trained",
    seed: int | None = 0,
    quant: str | None = None,
    dtype: str | None = None,
    data_sha256: str | None = None,
    folder: Path | None = None,
) -> list[tuple[Path, dict[str, Any]]]:
    """Cached entries of ``model`` on ``recipe``'s samples, whatever precision captured them.

    An entry matches when its model name (or source), its recipe (all fields, ``n``
    included), its data hash and its format version are the ones asked, and its ``init`` /
    ``seed`` / ``quant`` / ``dtype`` too where those are given (None: any). Entries of another
    recipe, N or init never match.

    Returns
    -------
    list of (pathlib.Path, dict)
        Folder and ``meta`` of each match, newest first (not yet verified: read them with
        :func:`read_activations`).
    """
    data_sha256 = data_sha256 or _data_digest(recipe)
    names = _names_of(model)
    want_recipe = recipe.to_dict()
    found = []
    for p, record in _entry_records(folder):
        m = record["meta"]
        spec = m.get("model") if isinstance(m.get("model"), dict) else {}
        if (m.get("format_version") != FORMAT_VERSION or m.get("recipe") != want_recipe
                or m.get("data_sha256") != data_sha256 or m.get("sites") != list(SITE_KINDS)
                or m.get("position") != "last"
                or not ({spec.get("name"), spec.get("source")} & names)):
            continue
        if init is not None and spec.get("init") != init:
            continue
        if seed is not None and spec.get("init") == "random" and spec.get("seed") != seed:
            continue
        if quant is not None and spec.get("quant") != quant:
            continue
        if dtype is not None and spec.get("dtype") != dtype:
            continue
        found.append((p, m))
    return found


def _pick(found: list[tuple[Path, dict]], quant: str | None, dtype: str | None) -> tuple[Path, dict]:
    """The best of several matching entries: the asked precision first, then full precision."""
    def rank(item):
        spec = item[1]["model"]
        return (spec.get("quant") != (quant or "none"), spec.get("dtype") != (dtype or "float32"))

    return sorted(found, key=rank)[0]  # stable: newest first among equals


def _use_found(found, quant, dtype, why: str, progress: bool) -> Activations:
    path, meta = _pick(found, quant, dtype)
    act = read_activations(path, expect_meta=meta)
    spec = meta["model"]
    print(f"Using the cached capture {path.name} ({spec.get('quant')}, {spec.get('dtype')}, revision "
          f"{spec.get('revision')}): {why}")
    return act


# --------------------------------------------------------------------------- loading


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

    Where the exact entry cannot be named or is not there, an entry captured elsewhere is
    used (an instructor's export, :func:`import_activations`): when the model's tokenizer
    cannot be read (offline, gated, a deleted local folder), or when ``quant="auto"`` and
    ``dtype=None`` leave the precision open and no entry of this machine's precision exists.
    It must match the model, ``n``, the whole recipe, the data, ``init`` and ``seed`` (and
    ``quant`` / ``dtype`` when they are given); which capture is used is printed.

    Parameters
    ----------
    model : str
        Model name as for :func:`tdcourse.models.load_model`.
    n : int
        Number of samples (``recipe.n`` is replaced by it); an integer ≥ 1.
    quant, init, seed, dtype : as for :func:`tdcourse.models.load_model`
    recipe : SampleRecipe or None
        Defaults to :class:`tdcourse.data.SampleRecipe` ().
    batch_size : int
        Samples per forward pass, ≥ 1. Not part of the cache key: it does not change the
        values (up to float rounding).
    rebuild : bool
        Capture again even if a cache entry exists.
    progress : bool

    Returns
    -------
    Activations
        ``acts`` of shape ``(n, 2 * n_layers, d_model)``; unpacks as ``acts, sites, texts``.

    Raises
    ------
    ValueError
        An argument of the wrong type or range (the message names it).
    tdcourse.models.ModelLoadError
        The model cannot be loaded and no matching capture is cached.
    CacheError
        The cache entry is broken, or the cache cannot take the capture (checked before it starts).
    """
    from dataclasses import replace

    from .models import ModelLoadError

    n = check_int(n, "n")
    seed = check_int(seed, "seed", minimum=0)
    batch_size = check_int(batch_size, "batch_size")
    for flag, fname in ((rebuild, "rebuild"), (progress, "progress")):
        if not isinstance(flag, bool):
            raise ValueError(f"{fname} must be True or False, got {flag!r}")
    recipe = check_recipe(replace(recipe or SampleRecipe(), n=n))
    open_precision = quant == "auto" and dtype is None
    pinned_quant = None if quant == "auto" else quant
    try:
        spec = resolve_spec(model, quant=quant, dtype=dtype, init=init, seed=seed)
        # The tokenizer alone fixes the samples, and the config gives the hub revision, so a cached
        # entry is found without loading the model's weights.
        tok, config, spec = load_tokenizer(spec)
    except (ModelLoadError, OSError, ValueError) as err:
        missing_folder = isinstance(model, str) and _is_path_name(model) and not Path(model).expanduser().is_dir()
        if rebuild or (isinstance(err, ValueError) and not missing_folder):
            raise
        found = find_entries(model, recipe, init=init, seed=seed, quant=pinned_quant, dtype=dtype)
        if not found:
            msg = (f"{err} No capture of {model} with n={n} ({init}) is cached either; an instructor's export "
                   "can be installed with `python -m tdcourse import FILE`.")
            try:
                new = type(err)(msg)
            except TypeError:
                new = ModelLoadError(msg)
            raise new from err
        reason = " ".join(str(err).split())
        reason = reason if len(reason) <= 200 else reason[:197] + "..."
        return _use_found(found, quant, dtype, f"the model itself cannot be read here ({reason}).", progress)
    samples = build_samples(tok, recipe)
    meta = _meta(spec, recipe, samples.data_sha256, _ids_digest(samples.input_ids))
    path = _entry_dir(meta)
    if not rebuild:
        if path.exists() or path.is_symlink():
            return read_activations(path, expect_meta=meta)
        found = [(p, m) for p, m in find_entries(model, recipe, init=init, seed=seed,
                                                 data_sha256=samples.data_sha256)
                 if m.get("input_ids_sha256") == meta["input_ids_sha256"]
                 and m["model"].get("revision") == spec.revision]
        same = [p for p, m in found if m == meta]
        if same:  # the very entry, under a name of an earlier tdcourse or copied by hand
            return read_activations(same[0], expect_meta=meta)
        if open_precision:
            if found:
                return _use_found(found, quant, dtype, f"no capture in {spec.dtype} is cached on this machine and "
                                  "quant/dtype were left open (pass them to capture here instead).", progress)
    n_sites = 2 * int(getattr(config, "num_hidden_layers", 0) or 0)
    width = int(getattr(config, "hidden_size", 0) or 0)
    check_cache_room(len(samples.input_ids) * n_sites * width * 4 + (1 << 20))
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


# --------------------------------------------------------------------------- export / import
#
# A workshop: the instructor captures on a GPU, exports one .tar, laptops import it and run
# every chapter offline (load_activations finds the imported entries, see above).

# --------------------------------------------------------------------------- derived results


def results_dir() -> Path:
    """``<TDCOURSE_CACHE>/results/``: results computed from a capture that need the model itself
    (chapter 7's teleport experiment), kept so that a machine without the model can read them.
    Exported and imported with the capture they belong to."""
    path = env.cache_dir() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def result_path(meta: dict[str, Any], name: str) -> Path:
    """Where result ``name`` computed from the capture with metadata ``meta`` is kept:
    ``results/<cache_key(meta)>-<name>.npz``. ``name`` must be letters, digits, ``-`` or ``_``."""
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"result name must be letters, digits, '-' or '_', got {name!r}")
    return results_dir() / f"{cache_key(meta)}-{name}.npz"


def save_result(meta: dict[str, Any], name: str, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> Path:
    """Keep ``arrays`` (and the JSON-able ``info``) as result ``name`` of the capture ``meta``.

    Written to a temporary file in the same folder, then renamed into place: a reader never
    sees half a file. Returns the file's path.
    """
    path = result_path(meta, name)
    tmp = path.parent / f"{_tmp_name()}.npz"
    try:
        np.savez(tmp, __info__=np.frombuffer(json.dumps(info).encode(), dtype=np.uint8), **arrays)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path


def load_result(meta: dict[str, Any], name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Result ``name`` of the capture ``meta`` as ``(arrays, info)``, or None if not kept.

    Raises
    ------
    CacheError
        The file exists but is damaged (its zip checksums fail); the message says to delete it.
    """
    import zipfile

    path = result_path(meta, name)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        info = json.loads(arrays.pop("__info__").tobytes().decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise CacheError(f"The kept result {path} is damaged ({err}). Delete it; it is computed again "
                         "where the model can be loaded.") from err
    return arrays, info


EXPORT_FORMAT = "tdcourse-activations-export"
EXPORT_VERSION = 1
_EXPORT_ROOT = "tdcourse-export"


def export_activations(
    model: str,
    n: int,
    out: str | Path,
    recipe: SampleRecipe | None = None,
    quant: str | None = None,
    dtype: str | None = None,
    seed: int = 0,
    control: bool = True,
) -> list[Path]:
    """Write the cached captures of ``model`` on ``n`` samples into one ``.tar`` file.

    The file holds every matching entry (the trained captures, of whatever precision, unless
    ``quant`` / ``dtype`` narrow them, and the random-init control with ``seed``) with its
    ``meta.json``, the results kept for it (:func:`save_result`: chapter 7's teleport
    experiment, where it ran) and a manifest of checksums; no model weights. Each entry is
    verified before it is written. Install it elsewhere with :func:`import_activations`.

    Parameters
    ----------
    model : str
        As given to :func:`load_activations` (alias, hub id, local folder).
    n : int
    out : str or pathlib.Path
        The ``.tar`` file to write (replaced atomically).
    recipe : SampleRecipe or None
    quant, dtype : str or None
        Keep only trained captures of this precision (None: all).
    seed : int
        Seed of the random-init control.
    control : bool
        Include the random-init control (when cached).

    Returns
    -------
    list of pathlib.Path
        The cache entries exported.

    Raises
    ------
    CacheError
        No trained capture of ``model`` with ``n`` samples is cached, or an entry is corrupt.
    """
    import tarfile
    from dataclasses import replace

    n = check_int(n, "n")
    seed = check_int(seed, "seed", minimum=0)
    recipe = check_recipe(replace(recipe or SampleRecipe(), n=n))
    entries = find_entries(model, recipe, init="trained", quant=quant, dtype=dtype)
    if not entries:
        raise CacheError(f"No capture of {model} with n={n} is cached in {activations_dir()}: capture it first "
                         f"(python -m tdcourse capture --model {model} --n {n}).")
    if control:
        entries += find_entries(model, recipe, init="random", seed=seed)
    out = Path(out).expanduser()
    manifest = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "model": model, "n": n, "entries": []}
    for path, _ in entries:
        read_activations(path)  # verified before it leaves
        meta_bytes = (path / "meta.json").read_bytes()
        manifest["entries"].append({"name": path.name, "meta_sha256": hashlib.sha256(meta_bytes).hexdigest(),
                                    "acts_bytes": (path / "acts.npy").stat().st_size})
    results = sorted(p for path, meta in entries for p in results_dir().glob(f"{cache_key(meta)}-*.npz"))
    manifest["results"] = [{"name": p.name, "sha256": _file_digest(p, "sha256")} for p in results]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f"{_tmp_name()}.tar"
    try:
        with tarfile.open(tmp, "w") as tar:
            blob = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(f"{_EXPORT_ROOT}/MANIFEST.json")
            info.size, info.mtime = len(blob), int(time.time())
            import io

            tar.addfile(info, io.BytesIO(blob))
            for path, _ in entries:
                for fname in ("meta.json", "acts.npy"):
                    tar.add(path / fname, arcname=f"{_EXPORT_ROOT}/{path.name}/{fname}", recursive=False)
            for p in results:
                tar.add(p, arcname=f"{_EXPORT_ROOT}/results/{p.name}", recursive=False)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return [p for p, _ in entries]


def import_activations(file: str | Path) -> list[Path]:
    """Install the captures of an export file (:func:`export_activations`) into this cache.

    Every entry is checked before it is installed: its ``meta.json`` against the manifest's
    SHA-256, its array against the checksum in its metadata (and for NaN / inf, shape and
    format). Entries are renamed into place atomically, under the same lock as a capture;
    an existing entry of the same key is replaced. Folder names are computed from each
    entry's metadata, never taken from the file.

    Parameters
    ----------
    file : str or pathlib.Path
        A ``.tar`` written by :func:`export_activations` (``python -m tdcourse export``).

    Returns
    -------
    list of pathlib.Path
        The installed entry folders, then the kept results installed with them (chapter 7's
        teleport results, see :func:`save_result`).

    Raises
    ------
    CacheError
        The file is not an export, is damaged (checksum mismatch, missing member) or the cache
        cannot take it (checked before anything is written).
    """
    import tarfile

    file = Path(file).expanduser()
    damaged = f"{file} is not a complete tdcourse export: export it again (python -m tdcourse export ...)."
    try:
        tar = tarfile.open(file, "r:*")
    except (OSError, tarfile.TarError) as err:
        raise CacheError(f"{file} cannot be opened as an export ({err}).") from err
    installed: list[Path] = []
    with tar:
        members = {m.name: m for m in tar.getmembers()}

        def member_bytes(name: str, limit: int | None = None) -> bytes:
            m = members.get(name)
            if m is None or not m.isfile():
                raise CacheError(f"{damaged} ({name} is missing)")
            f = tar.extractfile(m)
            return f.read() if limit is None else f.read(limit)

        try:
            manifest = json.loads(member_bytes(f"{_EXPORT_ROOT}/MANIFEST.json"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CacheError(f"{damaged} (unreadable manifest: {err})") from err
        if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
            raise CacheError(f"{file} is not a tdcourse activation export.")
        if manifest.get("version") != EXPORT_VERSION:
            raise CacheError(f"{file} is export version {manifest.get('version')}; this tdcourse reads "
                             f"version {EXPORT_VERSION}. Export it again with the same tdcourse version.")
        entries = manifest.get("entries")
        if not isinstance(entries, list) or not entries:
            raise CacheError(f"{damaged} (the manifest lists no entries)")
        folder = activations_dir()
        total = 0
        for e in entries:
            m = members.get(f"{_EXPORT_ROOT}/{e.get('name')}/acts.npy") if isinstance(e, dict) else None
            if m is None or not m.isfile():
                raise CacheError(f"{damaged} (an entry's acts.npy is missing)")
            total += m.size
        check_cache_room(total, folder)
        clean_stale_temporaries(folder)
        for e in entries:
            name = e["name"]
            meta_bytes = member_bytes(f"{_EXPORT_ROOT}/{name}/meta.json")
            if hashlib.sha256(meta_bytes).hexdigest() != e.get("meta_sha256"):
                raise CacheError(f"{damaged} ({name}/meta.json does not match the manifest's checksum)")
            tmp = folder / _tmp_name()
            try:
                tmp.mkdir()
                (tmp / "meta.json").write_bytes(meta_bytes)
                m = members[f"{_EXPORT_ROOT}/{name}/acts.npy"]
                with tar.extractfile(m) as src, open(tmp / "acts.npy", "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 24)
                try:
                    act = read_activations(tmp)  # checksum, shape, format, finite
                except CacheError as err:
                    raise CacheError(f"{damaged} ({name}: {err})") from err
                target = folder / _entry_name(act.meta)
                _install(tmp, target)
                installed.append(target)
            except OSError as err:
                raise CacheError(f"Could not install {name} into {folder} ({err.strerror or err}).") from err
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        for r in manifest.get("results", []):
            name = r.get("name", "") if isinstance(r, dict) else ""
            if not (name.endswith(".npz") and all(c.isalnum() or c in "-_." for c in name)):
                raise CacheError(f"{damaged} (a result has an unexpected name: {name!r})")
            blob = member_bytes(f"{_EXPORT_ROOT}/results/{name}")
            if hashlib.sha256(blob).hexdigest() != r.get("sha256"):
                raise CacheError(f"{damaged} (results/{name} does not match the manifest's checksum)")
            target = results_dir() / name
            tmp = target.parent / f"{_tmp_name()}.npz"
            try:
                tmp.write_bytes(blob)
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            installed.append(target)
    return installed


@dataclass(frozen=True)
class ModelAvailability:
    """Whether a model's weights can be loaded here, and if not, why (see :func:`model_available`).

    Truthy when they can. ``reason`` is one sentence for the reader either way.
    """

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


def model_available(model: str = DEFAULT_MODEL, quant: str = "auto", dtype: str | None = None,
                    init: str = "trained", seed: int = 0) -> ModelAvailability:
    """Can ``model`` itself be loaded on this machine (not only its cached activations)?

    Chapters that run the model (chapter 1's ``hidden_states`` check, chapter 7's forward
    passes) ask this first: on a laptop that imported an instructor's captures of a gated or
    unreachable model, the activations load but the model does not, and the chapter can say
    so and skip those cells. Reads the tokenizer and config (no weights); for a local folder
    with trained weights, also looks for weight files.

    Returns
    -------
    ModelAvailability
        ``ok`` and a ``reason`` (why not: offline, gated without a token, folder missing, no
        weight files, unknown name).
    """
    from .models import ModelLoadError

    try:
        spec = resolve_spec(model, quant=quant, dtype=dtype, init=init, seed=seed)
        load_tokenizer(spec)
    except (ModelLoadError, OSError, ValueError) as err:
        return ModelAvailability(False, f"{model} cannot be loaded here: {err}")
    folder = Path(str(model)).expanduser()
    if init == "trained" and folder.is_dir():
        weights = [p for pat in ("*.safetensors", "*.bin", "*.gguf") for p in folder.glob(pat)]
        if not weights:
            return ModelAvailability(False, f"{folder} holds no weight files (*.safetensors, *.bin).")
    return ModelAvailability(True, f"{model} can be loaded here.")


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
