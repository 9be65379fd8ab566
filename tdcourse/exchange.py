"""Move captures between machines: one ``.tar`` out of a cache, into another.

A workshop: the instructor captures on a GPU, exports one file
(``python -m tdcourse export``), laptops import it (``python -m tdcourse import FILE``) and run
every chapter offline: :func:`tdcourse.capture.load_activations` finds the imported entries
when the model itself cannot be reached. The file holds each entry's ``meta.json`` and
``acts.npy``, the results kept for them (:func:`tdcourse.store.save_result`) and a manifest of
checksums; never model weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import time
from pathlib import Path

from .data import SampleRecipe, check_int, check_recipe
from .store import (CacheError, _entry_name, _file_digest, _install, _tmp_name, activations_dir, cache_key,
                    check_cache_room, clean_stale_temporaries, find_entries, read_entry, results_dir)

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "export_activations", "import_activations"]


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
    ``meta.json``, the results kept for it (:func:`tdcourse.store.save_result`: chapter 7's
    teleport experiment, where it ran) and a manifest of checksums; no model weights. Each entry is
    verified before it is written. Install it elsewhere with :func:`import_activations`.

    Parameters
    ----------
    model : str
        As given to :func:`tdcourse.capture.load_activations` (alias, hub id, local folder).
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
        read_entry(path)  # verified before it leaves
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
        teleport results, see :func:`tdcourse.store.save_result`).

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
                    act = read_entry(tmp)  # checksum, shape, format, finite
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

