"""Which cache entry a request names, remembered: a cache hit without torch or transformers.

:func:`tdcourse.capture.load_activations` names a cache entry by its metadata
(:func:`tdcourse.store.entry_meta`), which needs the model's tokenizer: the token ids of the
samples are part of it. Finding that out costs importing torch and transformers and tokenising
the N samples, about 3 s of one core a run, in every chapter kernel, test and scoreboard worker,
even when the entry is in the cache. This module remembers the answer.

- **key**: everything the metadata is computed from, read without torch or transformers: the
  resolved :class:`~tdcourse.models.ModelSpec` (:func:`tdcourse.models.resolve_spec`; the
  device is told without importing a CPU-only torch, :func:`tdcourse.env.device`), the
  :class:`~tdcourse.data.SampleRecipe`, the store dtype, every file of the model's folder and
  the shipped WikiText-2 file by name, size, modification and change times and inode (what
  :func:`tdcourse.models.local_folder_digest` memoises its digests by), the versions of
  transformers and tokenizers, and the source of the ``tdcourse`` package
  (:func:`tdcourse.memo.source_digest`).
- **only where the files are here**: the embedded model and local model folders, with the
  shipped test split. A hub model's revision is the hub's answer and a split read from the hub
  is the hub's file: those requests always take the full path.
- **where**: ``<TDCOURSE_CACHE>/results/lookup/<xxh3 of the key>.json``, holding the key and the
  metadata; written atomically after the full path named an entry that exists.
- **use**: a record whose key is not the request's, that cannot be read, or whose entry is
  gone is ignored (the full path runs and writes it again). The entry itself is then read by
  :func:`tdcourse.store.read_entry` with the recorded metadata as ``expect_meta``, so its
  checksum and its own metadata are checked as on the full path.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from . import env
from .data import SHIPPED_SPLITS, SampleRecipe, local_data_file
from .models import ModelSpec, _is_embedded, _is_local, converted_smollm2_path, resolve_spec

__all__ = ["FORMAT", "lookup_dir", "request_key", "recall", "remember"]

#: Version of the record layout; a record of another format is ignored.
FORMAT = 1


def lookup_dir() -> Path:
    """``<TDCOURSE_CACHE>/results/lookup``: where the records are kept (created on use)."""
    return env.cache_dir() / "results" / "lookup"


def _files_signature(folder: Path) -> list[list[Any]]:
    """``[relative path, size, mtime_ns, ctime_ns, inode]`` of every file under ``folder``, sorted
    (``OSError`` if it cannot be read)."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            st = os.stat(os.path.join(root, name))
            rel = os.path.relpath(os.path.join(root, name), folder)
            out.append([rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    return out


def _model_folder(spec: ModelSpec) -> Path | None:
    if _is_embedded(spec.source):
        return converted_smollm2_path()
    if _is_local(spec.source):
        return Path(spec.name)
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def request_key(model: str, quant: str, dtype: str | None, init: str, seed: int, recipe: SampleRecipe,
                store_dtype: str) -> dict[str, Any] | None:
    """The key of a request to :func:`tdcourse.capture.load_activations`, or None where it has
    no cheap key (a hub model, a split that is not shipped, a folder that cannot be read, an
    argument :func:`tdcourse.models.resolve_spec` refuses: the full path then runs and says what
    is wrong).

    Parameters
    ----------
    model, quant, dtype, init, seed : as for :func:`tdcourse.models.resolve_spec`
    recipe : tdcourse.data.SampleRecipe
        Checked, its ``n`` set.
    store_dtype : str

    Returns
    -------
    dict or None
        JSON-able.
    """
    from .memo import source_digest

    if recipe.split not in SHIPPED_SPLITS:
        return None
    try:
        spec = resolve_spec(model, quant=quant, dtype=dtype, init=init, seed=seed)
        folder = _model_folder(spec)
        if folder is None or not folder.is_dir():
            return None
        files = _files_signature(folder)
        data = local_data_file()
        st = data.stat()
    except (ValueError, OSError):
        return None
    return {
        "format": FORMAT,
        "spec": asdict(spec),
        "recipe": recipe.to_dict(),
        "store_dtype": store_dtype,
        "model_files": files,
        "data_file": [str(data), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino],
        "versions": {p: _version(p) for p in ("transformers", "tokenizers")},
        "tdcourse_source": source_digest(),
    }


def _record_path(key: dict[str, Any]) -> Path:
    import xxhash

    blob = json.dumps(key, sort_keys=True).encode()
    return lookup_dir() / f"{xxhash.xxh3_128_hexdigest(blob)}.json"


def recall(key: dict[str, Any] | None) -> dict[str, Any] | None:
    """The entry metadata remembered for ``key``, or None (no key, no record, a record that
    cannot be read or holds another key)."""
    if key is None:
        return None
    try:
        record = json.loads(_record_path(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("key") != key:
        return None
    meta = record.get("meta")
    if not isinstance(meta, dict) or not _names_the_request(meta, key):
        return None
    return meta


def _names_the_request(meta: dict[str, Any], key: dict[str, Any]) -> bool:
    """Whether ``meta`` is an entry of the request's model (every field but the revision, which
    only the full path learns), recipe and init: a record never names another capture."""
    model = meta.get("model")
    if not isinstance(model, dict) or meta.get("recipe") != key["recipe"]:
        return False
    spec = {k: v for k, v in key["spec"].items() if k != "revision" or v is not None}
    return all(model.get(k) == v for k, v in spec.items())


def remember(key: dict[str, Any] | None, meta: dict[str, Any]) -> None:
    """Keep ``meta`` as the answer to ``key`` (nothing for a None key). Written atomically; a
    write that fails (a read-only or full cache) is skipped: the record only saves time."""
    if key is None:
        return
    path = _record_path(key)
    tmp = path.parent / f"{env.temporary_name()}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"format": FORMAT, "key": key, "meta": meta}, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass
