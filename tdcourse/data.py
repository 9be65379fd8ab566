"""The WikiText-2 text the course reads, and the N samples built from it.

The course ships the raw test split of ``wikitext-2-raw-v1`` (CC BY-SA 3.0 / GFDL, see
``tdcourse/datafiles/wikitext-2-raw/NOTICE.md``) and reads it as a plain text file: no
``datasets`` cache is written, so a read-only home or an unusable ``HF_HOME`` does not matter.
Online users may read the hub copy instead (``source="hub"``, through ``datasets``, with a
time-out); the default never touches the hub for the test split.

The test split gives 1,833 body lines of at least 100 characters, so N cannot pass 1,833 with
it. The train split (36,718 rows) is not shipped (no exact public copy of the raw split could
be verified from the machines that build the course); ``SampleRecipe(split="train")`` reads
it through ``datasets`` when online and fails at once, saying so, offline. The recipe, and so
the cache key, names the split.

The sample recipe (:class:`SampleRecipe`), deterministic:

1. take the lines of the split in file order, stripped of surrounding white space;
2. keep body lines: not empty, not a heading (``= Title =``, ``= = Section = =``), at least
   ``min_chars`` characters long;
3. keep the first ``n``;
4. tokenize each with the model's tokenizer *without* the tokenizer's own special tokens,
   then, when ``add_special_tokens`` is True, put the model's document-start token first by
   the course's explicit rule (:func:`bos_token_id`): a tokenizer whose BOS token is one of
   :data:`DOCUMENT_START_TOKENS` gets it (Llama 3.x ``<|begin_of_text|>``, Llama 2 / Mistral
   ``<s>``, Gemma ``<bos>``); every other gets none (SmolLM2, whose BOS slot holds the chat
   token ``<|im_start|>``; Qwen; OLMo-2). Keep the first ``max_tokens`` tokens.

Why a rule and not the tokenizer's default: the default depends on the transformers version
and on settings such as ``add_bos_token`` (transformers 4.57 gives SmolLM2's converted tokenizer
``<|im_start|>`` as BOS and adds it; 5.x does not), and every sample would change with it. With
the rule the samples are the same token ids under every allowed version. The cache key holds
the ids' digest, so the first token is part of it.

Most lines are longer than ``max_tokens`` and are cut inside a sentence, so the last token,
the one the course reads, varies (WikiText lines nearly all end with " ."; a whole-line recipe
would make most samples end on that one token).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

__all__ = ["DOCUMENT_START_TOKENS", "SPLITS", "SHIPPED_SPLITS", "SampleRecipe", "Samples", "bos_token_id", "check_int", "check_recipe", "local_data_file", "load_wikitext", "body_lines", "build_samples"]

_LOCAL = ("datafiles", "wikitext-2-raw", "wiki.test.raw")
#: The splits of wikitext-2-raw-v1, and those shipped with the course (read offline).
SPLITS = ("train", "validation", "test")
SHIPPED_SPLITS = ("test",)
HUB_TIMEOUT_S = 60.0  # wait this long for the hub copy, then use the shipped one


def check_int(value: Any, name: str, minimum: int | None = 1) -> int:
    """``value`` as a Python int, or a ``ValueError`` naming the argument.

    Integers only: ``bool``, ``float`` (also ``1.0``) and strings are refused, never coerced,
    so ``n=1.5`` or ``n="12"`` cannot silently become another number.

    Parameters
    ----------
    value : int or numpy integer
    name : str
        The argument's name, for the message (e.g. ``"n"``, ``"batch_size"``).
    minimum : int or None
        The smallest value allowed (default 1: a count or a size); None for no bound.

    Raises
    ------
    ValueError
        Not an integer, or below ``minimum``.
    """
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__}); "
                         f"pass a whole number such as {name}={max(minimum or 0, 1)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


#: BOS tokens that mark the start of a document in their family's pretraining data: a sample
#: starts with one of these when the model's tokenizer names it as its BOS token.
DOCUMENT_START_TOKENS = ("<|begin_of_text|>", "<s>", "<bos>")


def bos_token_id(tokenizer) -> int | None:
    """The token id the course puts first in every sample read by ``tokenizer``'s model, or None.

    The rule (see the module docstring): the tokenizer's ``bos_token`` if its text is one of
    :data:`DOCUMENT_START_TOKENS` and it has an id, else None. It reads the token's name, never
    the tokenizer's ``add_bos_token`` setting, so it gives the same answer under every
    transformers version.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase or any object with ``bos_token`` and
        ``convert_tokens_to_ids``

    Returns
    -------
    int or None
        E.g. 128000 for Llama 3.1 (``<|begin_of_text|>``), None for SmolLM2.
    """
    token = getattr(tokenizer, "bos_token", None)
    if not isinstance(token, str) or token not in DOCUMENT_START_TOKENS:
        return None
    tid = tokenizer.convert_tokens_to_ids(token)
    if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
        return None
    return tid


@dataclass(frozen=True)
class SampleRecipe:
    """How the N samples are built (see the module docstring). Part of the cache key.

    ``add_special_tokens``: start every sample with the model's document-start token by the
    course's rule (:func:`bos_token_id`; True, the default) or with none (False). The
    tokenizer's own default special tokens are never used.

    ``split``: the split of wikitext-2-raw-v1 the lines come from: ``"test"`` (default,
    shipped: at most 1,833 samples with ``min_chars=100``) or ``"train"`` / ``"validation"``
    (read through ``datasets`` when online; see :func:`load_wikitext`). Part of the cache key.
    """

    n: int = 1000
    min_chars: int = 100
    max_tokens: int = 48
    add_special_tokens: bool = True
    split: str = "test"
    #: Keep only lines of at most this many characters (None: no upper bound). With
    #: ``max_tokens`` above the longest line's length, samples are whole lines.
    max_chars: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["max_chars"] is None:  # absent, so the cache keys of earlier recipes stay the same
            del out["max_chars"]
        return out


@dataclass(frozen=True)
class Samples:
    """The built samples.

    Attributes
    ----------
    texts : list of str, length n
        The decoded text each sample holds after truncation (what the model reads).
    lines : list of str, length n
        The WikiText line each sample came from.
    input_ids : list of list of int, length n
        Token ids, each at most ``recipe.max_tokens`` long.
    recipe : SampleRecipe
    data_sha256 : str
        SHA-256 of the n source lines (joined with newlines): identifies the data.
    bos_token_id : int or None
        The token every sample starts with (:func:`bos_token_id`), None when none was put first.
    """

    texts: list[str]
    lines: list[str]
    input_ids: list[list[int]]
    recipe: SampleRecipe
    data_sha256: str
    bos_token_id: int | None = None


def local_data_file() -> Path:
    """Path of the shipped raw test split (2,891 lines, CRLF, UTF-8)."""
    return Path(str(files("tdcourse").joinpath(*_LOCAL)))


def _read_local(split: str) -> list[str]:
    if split != "test":
        raise ValueError(f"The course ships only the test split; for {split!r} use source='hub'.")
    path = local_data_file()
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path} is missing: reinstall tdcourse (pip install -e .).") from err
    # str.splitlines is how ``datasets``' text builder splits too (same 2,891 lines).
    return [t.strip() for t in text.splitlines()]


def _read_hub(split: str, timeout: float) -> list[str]:
    """The hub copy through ``datasets``, cached inside the course's cache, within ``timeout`` s."""
    import threading

    from . import env

    result: dict[str, Any] = {}

    def work():
        try:
            import datasets

            datasets.disable_progress_bars()
            ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=split,
                                       cache_dir=str(env.cache_dir() / "datasets"))
            result["lines"] = [t.strip() for t in ds["text"]]
        except BaseException as err:  # network, hub, cache: reported by the caller
            result["error"] = err

    # A daemon thread: a hub that accepts the connection but never answers cannot hang the
    # course (nor the interpreter's exit).
    worker = threading.Thread(target=work, name="tdcourse-wikitext-hub", daemon=True)
    worker.start()
    worker.join(timeout)
    if "lines" in result:
        return result["lines"]
    if worker.is_alive():
        raise TimeoutError(f"the hub did not answer within {timeout:g} s")
    raise result["error"]


def load_wikitext(source: str = "local", split: str = "test", timeout: float = HUB_TIMEOUT_S) -> list[str]:
    """Lines of WikiText-2 (raw), in file order, stripped.

    Parameters
    ----------
    source : {"local", "hub"}
        ``"local"`` (default) reads the copy shipped with the course as a plain text file:
        offline, no Hugging Face cache needed (a read-only home works); a split that is not
        shipped is read from the hub. ``"hub"`` reads ``wikitext``/``wikitext-2-raw-v1``
        from the Hugging Face hub through ``datasets`` (its cache inside the course's cache
        directory) and, if that fails or takes longer than ``timeout``, says so and falls back
        to the local copy (test split only).
    split : {"test", "train", "validation"}
        Only ``"test"`` is shipped (:data:`SHIPPED_SPLITS`); the others are read from the hub
        (once, then from the ``datasets`` cache).
    timeout : float
        Seconds to wait for the hub (``source="hub"`` only).

    Returns
    -------
    list of str
        Every line, stripped, empty lines included (they are dropped by :func:`body_lines`).

    Raises
    ------
    ValueError
        Unknown ``source`` or ``split``.
    RuntimeError
        A split that is not shipped and the hub cannot be read (offline): the message says
        so and what to use instead.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(repr(x) for x in SPLITS)}, got {split!r}")
    if source == "local" and split not in SHIPPED_SPLITS:
        try:
            return _read_hub(split, timeout)
        except Exception as err:  # network, hub, time-out or cache failure
            raise RuntimeError(
                f"The WikiText-2 {split} split is not shipped with the course (only the test split is: N up to "
                f"1,833 samples offline), and reading it from the Hugging Face hub through datasets failed "
                f"({type(err).__name__}: {' '.join(str(err).split())[:200]}). Online it is read once and "
                "cached; offline, use the test split (SampleRecipe(split='test'), N <= 1833).") from err
    if source == "hub":
        try:
            return _read_hub(split, timeout)
        except Exception as err:  # network, hub, time-out or cache failure
            hint = ("Offline, use source='local' (the default) or set HF_HUB_OFFLINE=1 and "
                    "HF_DATASETS_OFFLINE=1 so no network call is tried.")
            if split != "test":
                raise RuntimeError(f"Could not read WikiText-2 split {split!r} from the hub "
                                   f"({type(err).__name__}: {err}). {hint}") from err
            print(f"Could not read WikiText-2 from the hub ({type(err).__name__}: {err}); using the copy "
                  f"shipped with the course (same test split). {hint}")
    elif source != "local":
        raise ValueError(f"source must be 'local' or 'hub', got {source!r}")
    return _read_local(split)


def body_lines(lines: list[str], min_chars: int = 100, max_chars: int | None = None) -> list[str]:
    """Body lines: non-empty, not starting with ``=`` (headings ``= Title =``, ``= = Section = =``
    and two table-legend lines), at least ``min_chars`` characters long (and at most
    ``max_chars`` when given)."""
    top = float("inf") if max_chars is None else max_chars
    return [t for t in lines if t and not t.startswith("=") and min_chars <= len(t) <= top]


def check_recipe(recipe: SampleRecipe) -> SampleRecipe:
    """``recipe`` if every field has the right type and range, else a ``ValueError`` naming it."""
    if not isinstance(recipe, SampleRecipe):
        raise ValueError(f"recipe must be a SampleRecipe, got {type(recipe).__name__}")
    check_int(recipe.n, "n")
    check_int(recipe.min_chars, "min_chars", minimum=0)
    check_int(recipe.max_tokens, "max_tokens")
    if recipe.max_chars is not None and check_int(recipe.max_chars, "max_chars") < recipe.min_chars:
        raise ValueError(f"max_chars ({recipe.max_chars}) must be at least min_chars ({recipe.min_chars}), or None")
    if not isinstance(recipe.add_special_tokens, bool):
        raise ValueError(f"add_special_tokens must be True or False, got {recipe.add_special_tokens!r}")
    if not isinstance(recipe.split, str) or recipe.split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(repr(x) for x in SPLITS)}, got {recipe.split!r}")
    return recipe


def build_samples(tokenizer, recipe: SampleRecipe = SampleRecipe(), lines: list[str] | None = None) -> Samples:
    """Build the samples of ``recipe`` with ``tokenizer`` (see the module docstring).

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        Called as ``tokenizer(texts, add_special_tokens=False)``; its BOS token decides the
        first token (:func:`bos_token_id`).
    recipe : SampleRecipe
    lines : list of str or None
        The split's lines (default: the shipped WikiText-2 test split, :func:`load_wikitext`).

    Returns
    -------
    Samples
        ``input_ids``: n lists of at most ``recipe.max_tokens`` ids, the BOS (when the rule
        gives one) first; the same ids under every transformers version.

    Raises
    ------
    ValueError
        If fewer than ``recipe.n`` lines pass the filter; the message gives how many do.
    """
    check_recipe(recipe)
    if lines is None:
        lines = load_wikitext(split=recipe.split)
    body = body_lines(lines, recipe.min_chars, recipe.max_chars)
    if len(body) < recipe.n:
        more = (" A larger N needs the train split (SampleRecipe(split='train'), read through datasets "
                "when online)." if recipe.split == "test" else "")
        raise ValueError(
            f"The recipe builds at most {len(body)} samples from the {recipe.split} split with "
            f"min_chars={recipe.min_chars}, and n={recipe.n} were asked. Ask for fewer samples or "
            f"lower min_chars.{more}"
        )
    chosen = body[: recipe.n]
    # The tokenizer's own special tokens depend on its version and settings: never used.
    enc = tokenizer(chosen, add_special_tokens=False)
    bos = bos_token_id(tokenizer) if recipe.add_special_tokens else None
    first = [] if bos is None else [bos]
    ids = [(first + [int(t) for t in x])[: recipe.max_tokens] for x in enc["input_ids"]]
    # No clean-up of spaces: transformers 4.57 strips the space before punctuation by default.
    texts = tokenizer.batch_decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    digest = hashlib.sha256("\n".join(chosen).encode("utf-8")).hexdigest()
    return Samples(texts=texts, lines=chosen, input_ids=ids, recipe=recipe, data_sha256=digest, bos_token_id=bos)
