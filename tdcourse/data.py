"""The WikiText-2 text the course reads, and the N samples built from it.

The course ships the raw test split of ``wikitext-2-raw-v1`` (CC BY-SA 3.0 / GFDL, see
``tdcourse/datafiles/wikitext-2-raw/NOTICE.md``) and reads it through ``datasets``. Online
users may read the hub copy instead (``source="hub"``); the default never touches the hub.

The sample recipe (:class:`SampleRecipe`), deterministic:

1. take the lines of the split in file order, stripped of surrounding white space;
2. keep body lines: not empty, not a heading (``= Title =``, ``= = Section = =``), at least
   ``min_chars`` characters long;
3. keep the first ``n``;
4. tokenize each with the model's tokenizer (``add_special_tokens`` as set: Llama 3.1 then
   starts with ``<|begin_of_text|>``, SmolLM2 adds nothing) and keep its first
   ``max_tokens`` tokens.

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

__all__ = ["SampleRecipe", "Samples", "local_data_file", "load_wikitext", "body_lines", "build_samples"]

_LOCAL = ("datafiles", "wikitext-2-raw", "wiki.test.raw")


@dataclass(frozen=True)
class SampleRecipe:
    """How the N samples are built (see the module docstring). Part of the cache key."""

    n: int = 1000
    min_chars: int = 100
    max_tokens: int = 48
    add_special_tokens: bool = True
    split: str = "test"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    """

    texts: list[str]
    lines: list[str]
    input_ids: list[list[int]]
    recipe: SampleRecipe
    data_sha256: str


def local_data_file() -> Path:
    """Path of the shipped raw test split (2,891 lines, CRLF, UTF-8)."""
    return Path(str(files("tdcourse").joinpath(*_LOCAL)))


def load_wikitext(source: str = "local", split: str = "test") -> list[str]:
    """Lines of WikiText-2 (raw) through ``datasets``, in file order, stripped.

    Parameters
    ----------
    source : {"local", "hub"}
        ``"local"`` (default) reads the copy shipped with the course, offline, in about a
        second. ``"hub"`` reads ``wikitext``/``wikitext-2-raw-v1`` from the Hugging Face hub
        and, if that fails, says so and falls back to the local copy (test split only).
    split : str
        Only ``"test"`` is shipped; other splits need ``source="hub"``.

    Returns
    -------
    list of str
        Every line, stripped, empty lines included (they are dropped by :func:`body_lines`).
    """
    import datasets

    datasets.disable_progress_bars()
    if source == "hub":
        try:
            ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=split)
            return [t.strip() for t in ds["text"]]
        except Exception as err:  # network, hub or cache failure
            if split != "test":
                raise RuntimeError(f"Could not read WikiText-2 split {split!r} from the hub: {err}") from err
            print(f"Could not read WikiText-2 from the hub ({type(err).__name__}); using the copy shipped "
                  "with the course (same test split).")
    elif source != "local":
        raise ValueError(f"source must be 'local' or 'hub', got {source!r}")
    if split != "test":
        raise ValueError(f"The course ships only the test split; for {split!r} use source='hub'.")
    path = local_data_file()
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall tdcourse (pip install -e .).")
    ds = datasets.load_dataset("text", data_files=str(path), split="train", keep_in_memory=True)
    return [t.strip() for t in ds["text"]]


def body_lines(lines: list[str], min_chars: int = 100) -> list[str]:
    """Body lines: non-empty, not starting with ``=`` (headings ``= Title =``, ``= = Section = =``
    and two table-legend lines), at least ``min_chars`` characters long."""
    return [t for t in lines if t and not t.startswith("=") and len(t) >= min_chars]


def build_samples(tokenizer, recipe: SampleRecipe = SampleRecipe(), lines: list[str] | None = None) -> Samples:
    """Build the samples of ``recipe`` with ``tokenizer`` (see the module docstring).

    Raises
    ------
    ValueError
        If fewer than ``recipe.n`` lines pass the filter; the message gives how many do.
    """
    if recipe.n < 1:
        raise ValueError(f"n must be at least 1, got {recipe.n}")
    if recipe.max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {recipe.max_tokens}")
    if lines is None:
        lines = load_wikitext(split=recipe.split)
    body = body_lines(lines, recipe.min_chars)
    if len(body) < recipe.n:
        raise ValueError(
            f"The recipe builds at most {len(body)} samples from the {recipe.split} split with "
            f"min_chars={recipe.min_chars}, and n={recipe.n} were asked. Ask for fewer samples or "
            "lower min_chars."
        )
    chosen = body[: recipe.n]
    enc = tokenizer(chosen, add_special_tokens=recipe.add_special_tokens)
    ids = [list(x[: recipe.max_tokens]) for x in enc["input_ids"]]
    texts = tokenizer.batch_decode(ids, skip_special_tokens=False)
    digest = hashlib.sha256("\n".join(chosen).encode("utf-8")).hexdigest()
    return Samples(texts=texts, lines=chosen, input_ids=ids, recipe=recipe, data_sha256=digest)
