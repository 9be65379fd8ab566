"""The residual stream at the last token of each sample: the course's central array, and where
a chapter gets it.

The central array has shape ``(n_samples, 2 * n_layers, d_model)``, sites ordered
``resid_pre.0, resid_mid.0, resid_pre.1, …, resid_mid.{L-1}``: the paper's "time" axis
(:func:`site_names`). ``resid_pre.0`` is the token embedding. Not captured: the last block's
output and the final norm (HF's ``hidden_states[-1]`` is the final-norm output, not a
residual state). Where each site sits in a decoder layer: :mod:`tdcourse.hooks`.

This module holds the array's API (:class:`Activations`, :func:`site_names`,
:func:`site_index`, :func:`paper_site_name`, :func:`check_acts`, :func:`nonfinite_sites`) and
what chapters call (:func:`load_activations`, :func:`load_runs`, :func:`model_available`).
The work is done by three modules, each importable on its own, none importing this one:

- :mod:`tdcourse.hooks`: the capture engine (forward pre-hooks, padding, batching);
- :mod:`tdcourse.nnsight_engine`: the second engine, nnsight, locally or on NDIF (same sites,
  same values; the engine is recorded in the entry, not keyed);
- :mod:`tdcourse.store`: the cache's entries (keys, locks, checksums, room checks, finding
  an entry; written batch by batch, read memory-mapped, half-precision stores) and the
  results kept beside them;
- :mod:`tdcourse.exchange`: export / import of captures between machines.

Every public name they had here is still importable from here (``from tdcourse.capture import
export_activations``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .data import SampleRecipe, build_samples, check_int, check_recipe
from .exchange import export_activations, import_activations
from .hooks import capture, check_token_ids, residual_hooks
from .models import ALIASES, DEFAULT_MODEL, SITE_KINDS, MissingModelFolderError, ModelLoadError, ModelSpec, \
    ModelTooLargeError, RemoteUnavailableError, UnsupportedModelError, check_model_fits, load_weights, open_model, \
    resolve_spec, text_config
from . import lookup
from . import streaming
from .streaming import release
from .store import (FORMAT_VERSION, CacheError, EntryWriter, HalfStoreArray, StoreFile, _entry_dir, activations_dir, cache_key, check_cache_room,
                    clean_stale_temporaries, entry_meta, find_entries, ids_digest, load_result, pick_entry, read_entry,
                    result_path, results_dir, save_result, write_entry)

# Private names that lived here before the split and that other modules, tests and benchmarks
# reach for (perturb's hooks use ``_layer_input``): the same objects, re-exported.
from .exchange import EXPORT_FORMAT, EXPORT_VERSION  # noqa: E402,F401,I001
from .hooks import _batches, _layer_input, _pad, _pad_id  # noqa: F401
from .store import _TMP_PREFIX, _VERIFIED, STALE_TMP_S, _file_digest, _hasher, _tmp_name  # noqa: F401

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
    "Runs",
    "capture_engine",
    "ENGINES",
]

_PAPER = {"resid_pre": "pre-Attn", "resid_mid": "pre-MLP"}


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

    arr = acts if isinstance(acts, HalfStoreArray) else np.asarray(acts)  # a half store: not upcast whole
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
    arr = acts if isinstance(acts, HalfStoreArray) else np.asarray(acts)  # a half store upcasts block by block
    per_sample = max(1, arr[0].nbytes if arr.ndim and len(arr) else 1)
    step = max(1, block_bytes // per_sample)
    found = []
    for start in range(0, arr.shape[0], step):
        block = arr[start : start + step]
        finite = np.isfinite(block).all()
        release(arr)  # a cached capture's pages read here do not stay resident (tdcourse.streaming)
        if finite:
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
        ``n_sites = 2 * n_layers``, ordered as :func:`site_names`. Read from the cache, it is
        memory-mapped and read-only (nothing is loaded until it is indexed); an entry stored
        in half precision gives a :class:`tdcourse.store.HalfStoreArray`, which upcasts to
        float32 whatever is read from it. To stay within a memory budget at any N, read
        :meth:`blocks` instead of the whole array.
    sites : list of str, length n_sites
    texts : list of str, length n_samples
        What sample ``i`` holds (decoded tokens the model read).
    meta : dict
        The cache key's contents: model spec, sample recipe, data hash, format version.
    path : pathlib.Path or None
        Where it is cached.
    info : dict
        How it was captured, not part of the key: ``info["capture"]`` (``engine``,
        ``backend``, ``batch_size``, ...; empty for entries written before this was recorded)
        and ``info["store"]`` (``{"dtype": "float32" | "float16" | "bfloat16", "layout": "npy"}``).
    source : tdcourse.store.StoreFile or None
        Where ``acts`` lies on disk (None: in memory).

    Unpacks as ``acts, sites, texts = load_activations(...)``.
    """

    acts: Any
    sites: list[str]
    texts: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    info: dict[str, Any] | None = None
    source: StoreFile | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.acts, self.sites, self.texts))

    def __getstate__(self) -> dict[str, Any]:
        # A cached entry read memory-mapped travels to another process (a scoreboard worker)
        # as its file's place, not as a copy of its array; anything else (an array in memory, a
        # slice or a copy of the cached one) is pickled whole, so a worker never gets another
        # array than the one it was given.
        state = dict(self.__dict__)
        if self.source is not None and _maps_whole_file(self.acts, self.source):
            state["acts"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("acts") is None and state.get("source") is not None:
            src = state["source"]
            size = src.offset + int(src.shape[0]) * src.sample_bytes
            if not Path(src.path).is_file() or Path(src.path).stat().st_size < size:
                raise CacheError(f"{src.path} was removed or truncated since this run was read: load it "
                                 "again (tdcourse.load_activations) or capture it again.")
            state = dict(state, acts=src.memmap() if src.dtype == "float32" else HalfStoreArray(src))
        self.__dict__.update(state)

    @property
    def n_samples(self) -> int:
        return int(self.acts.shape[0])

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

    @property
    def engine(self) -> str:
        """The capture engine that produced it: ``"hooks"``, ``"nnsight"`` or ``"nnsight (NDIF)"``;
        ``"unknown"`` for entries written before the engine was recorded."""
        cap = (self.info or {}).get("capture") or {}
        engine = cap.get("engine", "unknown")
        return f"{engine} (NDIF)" if cap.get("backend") == "ndif" else engine

    def site(self, kind: str, layer: int) -> np.ndarray:
        """States at one site, shape ``(n_samples, d_model)``.

        ``kind`` is ``"resid_pre"`` or ``"resid_mid"``; ``layer`` an integer in ``0 … n_layers-1``
        (``1.7`` or ``True`` are refused with a ``ValueError``, never read as layer 1).
        A cached capture's site is read into a new array with plain file reads
        (:func:`tdcourse.streaming.read`): a view of the memory map would leave, through the
        kernel's read-around, most of the file resident in this process once it is read.
        """
        return streaming.read(self.acts, np.s_[:, site_index(kind, layer, self.n_layers)])

    def block_size(self, max_bytes: int = 64 << 20) -> int:
        """Samples per block of :meth:`blocks`: as many as fit ``max_bytes`` in float32, at least 1."""
        max_bytes = check_int(max_bytes, "max_bytes")
        return max(1, max_bytes // max(1, 4 * int(self.acts.shape[1]) * int(self.acts.shape[2])))

    def blocks(self, max_bytes: int = 64 << 20) -> Iterator[np.ndarray]:
        """The samples in order, as float32 blocks of at most ``max_bytes`` (at least one sample).

        Each block is a new ``ndarray`` of shape ``(b, n_sites, d_model)``, float32 whatever
        the store's dtype (a half store is upcast here, block by block; statistics are then
        computed in float32 or float64 by the caller). A cached capture is read from its file
        with plain reads, so the process holds one block at a time: a streamed statistic
        (a sum, a mean, a covariance) over any N needs about ``max_bytes`` of memory.

        Parameters
        ----------
        max_bytes : int
            Memory for one float32 block, bytes (default 64 MiB).

        Yields
        ------
        ndarray of shape (b, n_sites, d_model), float32
            ``b = block_size(max_bytes)`` samples (fewer in the last block); in sample order,
            so ``np.concatenate(list(run.blocks()))`` equals ``np.asarray(run.acts)``.
        """
        step = self.block_size(max_bytes)
        n = self.n_samples
        for start in range(0, n, step):
            stop = min(n, start + step)
            if self.source is not None:
                yield self.source.read(start, stop)
            else:
                yield np.array(self.acts[start:stop], dtype=np.float32)


# --------------------------------------------------------------------------- the cache, as arrays


def _cached_array_problem(acts: np.ndarray, sites: list[str]) -> str | None:
    bad = nonfinite_sites(acts)
    return _nonfinite_message(acts, bad, "the cached array") if len(bad) else None


def save_activations(acts: np.ndarray, sites: list[str], texts: list[str], meta: dict[str, Any]) -> Path:
    """Write one cache entry atomically and return its folder.

    The entry is written into a temporary folder inside the cache, checksummed, then renamed
    into place under the entry's lock, replacing an older entry of the same key. Concurrent
    saves of one key all succeed; a reader sees the whole old or the whole new entry. Stale
    temporary folders of killed saves are removed first (:func:`clean_stale_temporaries`).
    See :func:`tdcourse.store.write_entry`, which this calls after :func:`check_acts`.

    Parameters
    ----------
    acts : ndarray of shape (n_samples, n_sites, d_model)
        Stored as float32; must be finite.
    sites : list of str, length n_sites
    texts : list of str, length n_samples
    meta : dict
        The entry's key (:func:`tdcourse.store.entry_meta`); must hold ``model`` and ``recipe``.

    Raises
    ------
    ValueError
        ``acts`` holds NaN or inf, or ``sites``/``texts`` do not match its shape.
    CacheError
        The cache cannot be written (the message says why: no space, read-only, ...).
    """
    return write_entry(check_acts(acts), sites, texts, meta)


def read_activations(path: Path, expect_meta: dict[str, Any] | None = None, verify: bool = True) -> Activations:
    """Read a cache entry, checking its checksum and (if given) that its metadata is ``expect_meta``.

    The checksum of ``acts.npy`` is computed while the file is read (one pass). A file
    verified once by this process, unchanged since (same inode, size and modification time),
    is not hashed again: a chapter that reads the same entry twice pays the hash once. See
    :func:`tdcourse.store.read_entry`; NaN and inf are named as :func:`check_acts` names them.

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
    return Activations(*read_entry(path, expect_meta=expect_meta, verify=verify, check=_cached_array_problem))


def _use_found(found, quant, dtype, why: str, progress: bool) -> Activations:
    """Read the best of ``found`` (:func:`tdcourse.store.pick_entry`) and say which entry it is."""
    path, meta = pick_entry(found, quant, dtype)
    act = read_activations(path, expect_meta=meta)
    spec = meta["model"]
    precision = "4-bit NF4" if spec.get("quant") == "4bit" else "full precision"
    print(f"Using the cached capture {path.name} ({spec.get('init')}, {spec.get('quant')}, {spec.get('dtype')}: "
          f"{precision}; revision {spec.get('revision')}): {why}")
    return act


# --------------------------------------------------------------------------- loading

ENGINES = ("hooks", "nnsight")


def capture_engine(model: str, engine: str | None = None, remote: bool | None = None) -> tuple[str, bool]:
    """How a missing capture of ``model`` is made: ``(engine, remote)``.

    ``None`` takes the course's setting (:func:`tdcourse.settings.course_settings`) when
    ``model`` is the setting's model, else ``("hooks", False)``: the setting's engine applies
    to the model it names, never to another one a chapter asks for.

    Raises
    ------
    ValueError
        An unknown engine, ``remote`` with the hooks engine, or ``remote`` for a model NDIF
        cannot run (a local folder, the embedded model).
    """
    from .settings import _check_engine, course_settings

    if engine is None or remote is None:
        try:
            setting = course_settings()
            same = _same_model(setting.model, model)
        except ValueError:  # a broken setting is reported where the setting is read, not here
            setting, same = None, False
        if engine is None:
            engine = "nnsight" if remote else (setting.engine if same else "hooks")
        if remote is None:
            remote = setting.remote if same and engine == setting.engine else False
    return _check_engine(engine, remote, "load_activations", model)


def _same_model(a: str, b: str) -> bool:
    from .models import classify_model_name

    try:
        return classify_model_name(a) == classify_model_name(b)
    except ValueError:
        return a == b


def _remote_spec(model, quant, dtype, init, seed, device_map, offload_folder) -> ModelSpec:
    """The spec of a capture on NDIF: the hub model, unquantised, in NDIF's dtype (bfloat16 unless
    ``dtype`` names another; the values are checked to come back in it)."""
    if init != "trained":
        raise ValueError("The random-init control cannot run on NDIF: NDIF runs the trained weights it hosts. "
                         "Capture the control here (remote=False) or leave it out (load_runs(control=False)).")
    if quant not in ("auto", "none"):
        raise ValueError("NDIF runs its models unquantised: use quant='none' (or 'auto') with remote=True.")
    if device_map is not None or offload_folder is not None:
        raise ValueError("device_map and offload_folder place weights on this machine; a remote capture has none here.")
    return resolve_spec(model, quant="none", dtype=dtype or "bfloat16", init=init, seed=seed, device="cpu")


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
    device_map: str | dict | None = None,
    offload_folder: str | Path | None = None,
    engine: str | None = None,
    remote: bool | None = None,
    store_dtype: str = "float32",
    prefixes: Sequence[SampleRecipe] = (),
) -> Activations:
    """The residual stream of ``n`` WikiText-2 samples at the last token, every site.

    Captures on the first call (loading the model, or on NDIF), then reads the cache: every
    chapter calls this with the same arguments and shares one capture. The capture is written
    to the cache batch by batch and read back memory-mapped: memory does not grow with ``n``.

    Where the exact entry cannot be named or is not there, an entry captured elsewhere is
    used (an instructor's export, :func:`import_activations`): when the model's tokenizer
    cannot be read (offline, gated, a deleted local folder), or when ``quant="auto"`` and
    ``dtype=None`` leave the precision open and no entry of this machine's precision exists.
    It must match the model, ``n``, the whole recipe, the data, ``init`` and ``seed``, and
    ``quant`` / ``dtype`` when they are given: another init, recipe, N or a pinned precision is
    never substituted. With the precision left open, full precision comes first (``quant``
    ``"none"``, then float32), and a 4-bit capture never stands in for the full precision this
    machine would capture. Which entry is used, and its precision, is printed.

    A request this cache answered before, for the embedded model or a local folder whose files
    have not changed since, names its entry without importing torch or transformers
    (:mod:`tdcourse.lookup`: about 0.6 s instead of 6 s on SmolLM2's two runs); the entry's
    checksum and metadata are checked as on the full path.

    Parameters
    ----------
    model : str
        Model name as for :func:`tdcourse.models.load_model`.
    n : int
        Number of samples (``recipe.n`` is replaced by it); an integer ≥ 1.
    quant, init, seed, dtype : as for :func:`tdcourse.models.load_model`
    recipe : SampleRecipe or None
        Defaults to :class:`tdcourse.data.SampleRecipe` () (the shipped test split).
    batch_size : int
        Samples per forward pass, ≥ 1. Not part of the cache key: it does not change the
        values (up to float rounding).
    rebuild : bool
        Capture again even if a cache entry exists.
    progress : bool
    device_map, offload_folder :
        Where the weights go, as for :func:`tdcourse.models.load_weights` (``"auto"``: split a
        model too large for one GPU over the GPUs, the CPU and disk). Not part of the cache key:
        the values do not change.
    engine : {"hooks", "nnsight"} or None
        The capture engine (:mod:`tdcourse.hooks`, :mod:`tdcourse.nnsight_engine`). They read
        the same sites and give the same values (tested), so the engine is not part of the
        cache key; the entry records it (:attr:`Activations.engine`). None: the course's
        setting for its model (:func:`capture_engine`), else ``"hooks"``.
    remote : bool or None
        Capture on NDIF with nnsight (hub models NDIF hosts: ``llama-3.1-70b``,
        ``llama-3.1-405b``; an NDIF API key in ``NDIF_API_KEY`` or the Colab secret of that
        name). The model then runs in NDIF's bfloat16 (``dtype`` None) and the random-init
        control is refused (NDIF hosts trained weights only). None: the course's setting, for
        the trained model (a random-init control is captured here).
    store_dtype : {"float32", "float16", "bfloat16"}
        The dtype of the cached array. A half store halves the disk and the download; it is
        part of the key only when it rounds the values (a bfloat16 store of a bfloat16 model,
        e.g. every NDIF capture, is exact and shares the float32 key). Read back, values are
        float32 (:class:`tdcourse.store.HalfStoreArray`, :meth:`Activations.blocks`).
    prefixes : sequence of SampleRecipe
        Recipes whose samples are this call's cut shorter (the same recipe with a smaller
        ``max_tokens``, such as the scoreboard's data axis "token 25 of 48"): when this call
        captures, with the hooks on this machine, each is read in the same forward passes at the
        last token of its shorter samples (:func:`tdcourse.hooks.capture`'s ``also``) and kept
        in its own cache entry, which ``load_activations(recipe=that recipe, ...)`` then reads.
        Causal attention makes a token's state independent of the tokens after it, so the values
        are those of a capture of the shorter samples up to float rounding (tested), at no cost
        of forward passes; the entry records where it was read (``info["read_within"]``). A
        prefix already cached is not read again; when this call does not capture (a cache hit,
        NDIF, nnsight), each prefix is left to its own call.

    Returns
    -------
    Activations
        ``acts`` of shape ``(n, 2 * n_layers, d_model)``, memory-mapped read-only float32;
        unpacks as ``acts, sites, texts``.

    Raises
    ------
    ValueError
        An argument of the wrong type or range (the message names it); a remote capture of
        the random-init control, of a quantised model, of a local folder.
    tdcourse.models.ModelLoadError
        The model cannot be loaded and no matching capture is cached (an
        :class:`~tdcourse.models.UnsupportedModelError` at once: no capture of a refused family
        exists), or a sample holds a token id outside the model's vocabulary.
    tdcourse.models.RemoteUnavailableError
        A remote capture cannot run from here and none is cached: one message lists what is
        missing (network, NDIF key, Hugging Face token, access to 405B).
    CacheError
        The cache entry is broken, or the cache cannot take the capture (checked before it starts).
    ValueError
        A recipe in ``prefixes`` whose samples are not this call's cut shorter.
    """
    from contextlib import ExitStack
    from dataclasses import replace

    from .store import _check_store_dtype, store_is_exact

    n = check_int(n, "n")
    seed = check_int(seed, "seed", minimum=0)
    batch_size = check_int(batch_size, "batch_size")
    for flag, fname in ((rebuild, "rebuild"), (progress, "progress")):
        if not isinstance(flag, bool):
            raise ValueError(f"{fname} must be True or False, got {flag!r}")
    store_dtype = _check_store_dtype(store_dtype)
    if init != "trained" and remote is None and engine is None:
        engine, remote = "hooks", False  # the setting's NDIF applies to the trained model: NDIF has no control
    engine, remote = capture_engine(model, engine, remote)
    recipe = check_recipe(replace(recipe or SampleRecipe(), n=n))
    prefixes = [check_recipe(replace(r, n=n)) for r in _check_prefixes(prefixes, recipe)]
    open_precision = quant == "auto" and dtype is None
    pinned_quant = None if quant == "auto" else quant
    # A request answered before names its entry without torch or transformers (tdcourse.lookup).
    lookup_key = None if (rebuild or remote) else lookup.request_key(model, quant, dtype, init, seed, recipe,
                                                                     store_dtype)
    known = lookup.recall(lookup_key)
    if known is not None and _entry_dir(known).is_dir():
        return read_activations(_entry_dir(known), expect_meta=known)
    try:
        # The name is resolved once and the model opened once (tokenizer and config, no weights):
        # the tokenizer fixes the samples and the config gives the hub revision, so a cached entry
        # is found without loading the weights, and the same files load them if it is not.
        if remote:
            spec0 = _remote_spec(model, quant, dtype, init, seed, device_map, offload_folder)
        else:
            spec0 = resolve_spec(model, quant=quant, dtype=dtype, init=init, seed=seed)
        files = open_model(spec0)
        tok, config, spec = files
    except UnsupportedModelError:
        raise  # no capture of a family the course refuses can be cached: nothing to fall back on
    except (ModelLoadError, OSError, ValueError) as err:
        if rebuild or (isinstance(err, ValueError) and not isinstance(err, MissingModelFolderError)):
            raise
        found = find_entries(model, recipe, init=init, seed=seed, quant=pinned_quant, dtype=dtype,
                             store_dtype=store_dtype)
        if not found:
            tail = (f"No capture of {model} with n={n} ({init}) is cached either; an instructor's export "
                    "can be installed with `python -m tdcourse import FILE`.")
            if remote:
                from .nnsight_engine import remote_problems, remote_unavailable_message

                source = ALIASES.get(str(model).lower(), str(model))
                problems = remote_problems(source)
                cached = f" No capture of {model} with n={n} ({init}) is cached either."
                raise RemoteUnavailableError(remote_unavailable_message(source, problems, str(err)) + cached) from err
            try:
                new = type(err)(f"{err} {tail}")
            except TypeError:
                new = ModelLoadError(f"{err} {tail}")
            raise new from err
        reason = " ".join(str(err).split())
        reason = reason if len(reason) <= 200 else reason[:197] + "..."
        return _use_found(found, quant, dtype, f"the model itself cannot be read here ({reason}).", progress)
    samples = build_samples(tok, recipe)
    check_token_ids(samples.input_ids, getattr(text_config(config), "vocab_size", None), where=f"{spec.label}'s vocabulary")
    meta = entry_meta(spec, recipe, samples.data_sha256, ids_digest(samples.input_ids), store_dtype=store_dtype)
    path = _entry_dir(meta)
    if not rebuild:
        if path.exists() or path.is_symlink():
            acts = read_activations(path, expect_meta=meta)
            lookup.remember(lookup_key, meta)
            return acts
        found = [(p, m) for p, m in find_entries(model, recipe, init=init, seed=seed,
                                                 data_sha256=samples.data_sha256, store_dtype=store_dtype)
                 if m.get("input_ids_sha256") == meta["input_ids_sha256"]
                 and m["model"].get("revision") == spec.revision]
        same = [p for p, m in found if m == meta]
        if same:  # the very entry, under a name of an earlier tdcourse or copied by hand
            return read_activations(same[0], expect_meta=meta)
        # Precision left open: a capture of another dtype (a GPU's bfloat16, NDIF's) stands in
        # for this machine's, and full precision for 4-bit; never 4-bit for the full precision
        # this machine would capture.
        usable = [(p, m) for p, m in found if m["model"].get("quant") in ("none", spec.quant)]
        if open_precision and usable:
            return _use_found(usable, quant, dtype, f"no capture in {spec.dtype} is cached on this machine and "
                              "quant/dtype were left open (pass them to capture here instead).", progress)
    text = text_config(config)
    n_sites = 2 * int(getattr(text, "num_hidden_layers", 0) or 0)
    width = int(getattr(text, "hidden_size", 0) or 0)
    shape = (len(samples.input_ids), n_sites, width)
    itemsize = 4 if store_dtype == "float32" else 2
    check_cache_room(shape[0] * n_sites * width * itemsize + (1 << 20))
    if remote:
        from .nnsight_engine import remote_problems, remote_unavailable_message

        problems = remote_problems(spec.source)
        if problems:
            raise RemoteUnavailableError(remote_unavailable_message(spec.source, problems))
    names = site_names(n_sites // 2)
    exact = store_is_exact(store_dtype, spec.dtype, spec.quant)
    info = {"engine": engine, "backend": "ndif" if remote else "local", "batch_size": batch_size}
    within = [] if remote or engine != "hooks" else _prefix_entries(tok, samples, recipe, prefixes, spec, store_dtype,
                                                                    rebuild)
    if within:
        check_cache_room(sum(shape[0] * n_sites * width * itemsize + (1 << 20) for _m, _s in within))
    with ExitStack() as stack:
        writer = stack.enter_context(EntryWriter(meta, shape, names, samples.texts, store_dtype=store_dtype,
                                                 exact=exact, info=info))
        also = []
        for pmeta, psamples in within:
            pwriter = stack.enter_context(EntryWriter(pmeta, (len(psamples.input_ids), n_sites, width), names,
                                                      psamples.texts, store_dtype=store_dtype, exact=exact))
            also.append((np.array([len(x) - 1 for x in psamples.input_ids]), pwriter))
        info = writer.info  # what is learnt below goes into the record (the writer keeps its own copy)
        t0 = time.perf_counter()
        if remote:
            from . import nnsight_engine

            info.update(nnsight_engine.engine_info(True, batch_size, 256 << 20))
            nnsight_engine.capture_remote(files, samples.input_ids, batch_size=batch_size, progress=progress,
                                          out=writer)
        else:
            mdl = load_weights(files, device_map=device_map, offload_folder=offload_folder)
            info["device"] = str(next((p.device for p in mdl.parameters() if p.device.type != "meta"), "cpu"))
            if device_map is not None:
                info["device_map"] = device_map if isinstance(device_map, str) else "dict"
            if engine == "nnsight":
                from . import nnsight_engine

                info.update(nnsight_engine.engine_info(False, batch_size))
                run = nnsight_engine.capture
            else:
                run = capture
            run(mdl, samples.input_ids, batch_size=batch_size, pad_token_id=tok.pad_token_id, progress=progress,
                out=writer, **({"also": also} if also else {}))
            del mdl
        elapsed = time.perf_counter() - t0
        info["seconds"] = round(elapsed, 1)
        path = writer.commit()
        for _p, pwriter in also:
            pwriter.info.update(info, read_within=f"the forward passes of the capture of {_recipe_text(recipe)}, at "
                                                  "each shorter sample's last token (causal attention: the same "
                                                  "states)")
            ppath = pwriter.commit()
            if progress:
                print(f"Read {_recipe_text(pwriter.meta['recipe'])} in the same forward passes; cached in {ppath}")
    if progress:
        where = " on NDIF" if remote else ""
        print(f"Captured {shape} from {spec.label}{where} in {elapsed:.0f} s with {engine}; cached in {path}")
    acts = read_activations(path, expect_meta=meta, verify=False)
    lookup.remember(lookup_key, meta)
    return acts


def _check_prefixes(prefixes, recipe: SampleRecipe) -> list[SampleRecipe]:
    """``prefixes`` as a list of recipes that differ from ``recipe`` only by a smaller
    ``max_tokens`` (``ValueError`` otherwise)."""
    from dataclasses import replace

    if isinstance(prefixes, SampleRecipe) or not isinstance(prefixes, (list, tuple)):
        raise ValueError(f"prefixes must be a list of SampleRecipe, got {prefixes!r}")
    out = []
    for r in prefixes:
        if not isinstance(r, SampleRecipe):
            raise ValueError(f"prefixes must be a list of SampleRecipe, got an item {r!r}")
        shorter = isinstance(r.max_tokens, int) and r.max_tokens < recipe.max_tokens
        if not shorter or replace(r, n=recipe.n, max_tokens=recipe.max_tokens) != recipe:
            raise ValueError(f"prefixes: {r} is not this capture's recipe ({recipe}) with a smaller max_tokens: "
                             "only samples cut shorter can be read in the same forward passes; capture it with "
                             "its own load_activations call")
        out.append(r)
    return out


def _prefix_entries(tok, samples, recipe: SampleRecipe, prefixes: list[SampleRecipe], spec, store_dtype: str,
                    rebuild: bool) -> list[tuple[dict, Any]]:
    """``[(meta, samples)]`` of the prefix recipes to read in this capture's forward passes: those
    not cached yet (all with ``rebuild``). Each one's token ids are checked to be the start of
    this capture's (``ValueError``): the reading is then exact up to float rounding."""
    out = []
    for r in prefixes:
        psamples = build_samples(tok, r)
        ok = len(psamples.input_ids) == len(samples.input_ids) and all(
            list(a) == list(b[: len(a)]) for a, b in zip(psamples.input_ids, samples.input_ids))
        if not ok:
            raise ValueError(f"prefixes: the samples of {_recipe_text(r)} are not the start of those of "
                             f"{_recipe_text(recipe)} (another tokenisation?); capture it with its own "
                             "load_activations call")
        pmeta = entry_meta(spec, r, psamples.data_sha256, ids_digest(psamples.input_ids), store_dtype=store_dtype)
        pdir = _entry_dir(pmeta)
        if rebuild or not (pdir.exists() or pdir.is_symlink()):
            out.append((pmeta, psamples))
    return out


def _recipe_text(recipe) -> str:
    """A recipe (or its dict in an entry's meta) in a few words: its N and token count."""
    get = recipe.get if isinstance(recipe, dict) else lambda k: getattr(recipe, k)
    return f"{get('n')} samples of at most {get('max_tokens')} tokens"


@dataclass(frozen=True)
class ModelAvailability:
    """Whether a model's weights can be run here, and if not, why (see :func:`model_available`).

    Truthy when they can. ``reason`` is one sentence for the reader either way.
    """

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


def model_available(model: str = DEFAULT_MODEL, quant: str = "auto", dtype: str | None = None,
                    init: str = "trained", seed: int = 0, remote: bool | None = None,
                    purpose: str = "this step") -> ModelAvailability:
    """Can ``model`` itself run on this machine (not only its cached activations be read)?

    Chapters that run the model (chapter 1's ``hidden_states`` check, chapter 7's forward
    passes, chapter 8's Jacobians) ask this first and, when it is False, print its reason
    and skip those cells: never silently. It is False when:

    - the model is captured remotely (the course's setting names NDIF, or ``remote=True``):
      the chapters' own forward passes use local hooks and gradients, which NDIF does not
      run for the course; its weights are not here;
    - the tokenizer or config cannot be read (offline, gated without a token, a deleted
      folder, an unknown name), or a local folder holds no weight files;
    - the weights do not fit this machine's memory (a 70B on a laptop).

    Parameters
    ----------
    model : str
    quant, dtype, init, seed : as for :func:`tdcourse.models.load_model`
    remote : bool or None
        None: the course's setting for ``model`` (:func:`capture_engine`).
    purpose : str
        What the chapter wants to run, for the reason (``"chapter 7's teleport experiment"``).

    Returns
    -------
    ModelAvailability
        ``ok`` and a ``reason`` (why not, or that it can).
    """
    try:
        _, remote = capture_engine(model, None, remote)
    except ValueError as err:
        return ModelAvailability(False, f"{model} cannot be run here: {err}")
    if remote:
        return ModelAvailability(False, (
            f"{model} is captured remotely on NDIF in this course's setting, and {purpose} runs the model here "
            "with local hooks or gradients, which NDIF does not run for the course; its weights are not on this "
            "machine. The captured activations are read as usual."))
    try:
        files = open_model(resolve_spec(model, quant=quant, dtype=dtype, init=init, seed=seed))
    except (ModelLoadError, OSError, ValueError) as err:
        return ModelAvailability(False, f"{model} cannot be loaded here: {err}")
    folder = Path(str(model)).expanduser()
    if init == "trained" and folder.is_dir():
        weights = [p for pat in ("*.safetensors", "*.bin", "*.gguf") for p in folder.glob(pat)]
        if not weights:
            return ModelAvailability(False, f"{folder} holds no weight files (*.safetensors, *.bin).")
    try:
        check_model_fits(files)
    except ModelTooLargeError as err:
        return ModelAvailability(False, f"{model} does not fit here, so {purpose} cannot run: {err}")
    return ModelAvailability(True, f"{model} can be loaded here.")


class Runs(list):
    """The runs a chapter compares (a list of :class:`Activations`), and what was left out, with why.

    Attributes
    ----------
    skipped : dict of str to str
        ``{"random-init control": reason}`` when the control could not be built or read
        (printed when it happens); empty when every run is there.
    """

    def __init__(self, runs=(), skipped: dict[str, str] | None = None):
        super().__init__(runs)
        self.skipped: dict[str, str] = dict(skipped or {})


def load_runs(model: str = DEFAULT_MODEL, n: int = 1000, control: bool = True, **kwargs) -> Runs:
    """The runs a chapter compares: the trained model, then its random-init control.

    ``[trained, control]``, each an :class:`Activations` from :func:`load_activations` with the
    same samples. The control is the same architecture with seeded random weights: what it
    shares with the trained model comes from the architecture, not from training. Where the
    control cannot be built, or with ``control=False``, the list holds the trained run alone,
    the reason is printed and kept in ``runs.skipped``. Chapters loop over this list, so they
    run either way. The control is never captured remotely (NDIF runs trained weights only):
    with a remote setting it is read from the cache, or captured here if it fits, or skipped
    with the reason.

    Parameters
    ----------
    model : str
        As for :func:`load_activations`.
    n : int
        Number of samples, >= 1.
    control : bool
        Add the random-init control (seeded, unquantised, drawn on one device: ``quant``,
        ``device_map``, ``offload_folder``, ``engine`` and ``remote`` apply to the trained
        run only).
    **kwargs
        Passed to :func:`load_activations` (``quant``, ``dtype``, ``seed``, ``recipe``,
        ``batch_size``, ``rebuild``, ``progress``, ``device_map``, ``offload_folder``,
        ``engine``, ``remote``, ``store_dtype``).

    Returns
    -------
    Runs
        A list, ``[trained]`` or ``[trained, control]``, each ``acts`` of shape
        ``(n, 2 * n_layers, d_model)`` on the same samples; ``runs.skipped`` says what is
        missing and why.

    Raises
    ------
    As :func:`load_activations` (a control that cannot be built is skipped, not raised).
    """
    runs = Runs([load_activations(model=model, n=n, **kwargs)])
    if control:  # drawn on one device, unquantised, never on NDIF
        ctrl_kwargs = {k: v for k, v in kwargs.items()
                       if k not in ("quant", "device_map", "offload_folder", "engine", "remote")}
        remote = capture_engine(model, kwargs.get("engine"), kwargs.get("remote"))[1]
        try:
            runs.append(load_activations(model=model, n=n, init="random", quant="none", engine="hooks",
                                         remote=False, **ctrl_kwargs))
        except ModelTooLargeError as err:
            runs.skipped["random-init control"] = f"it does not fit this machine: {err}"
        except ModelLoadError as err:
            if not remote:
                raise
            runs.skipped["random-init control"] = (f"NDIF runs trained weights only, and the control cannot be "
                                                   f"built or found here: {err}")
        for what, why in runs.skipped.items():
            print(f"The {what} is skipped: {why} Chapters then show the trained model alone.")
    return runs


def _maps_whole_file(acts: Any, source: StoreFile) -> bool:
    """Whether ``acts`` is exactly the memory map of ``source`` that the cache hands out (so that
    reopening ``source`` gives the same array), not a slice, copy or other array."""
    if isinstance(acts, HalfStoreArray):
        return acts._source == source
    if not isinstance(acts, np.ndarray) or tuple(acts.shape) != tuple(source.shape) or not acts.flags.c_contiguous:
        return False
    base = acts.base
    return (isinstance(base, np.memmap) and base.filename is not None
            and Path(base.filename).resolve() == Path(source.path).resolve() and base.offset == source.offset
            and base.__array_interface__["data"][0] == acts.__array_interface__["data"][0]
            and base.dtype == acts.dtype and tuple(base.shape) == tuple(acts.shape))

