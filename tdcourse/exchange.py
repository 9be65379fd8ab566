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
import re
import shutil
import time
from pathlib import Path

from .data import SampleRecipe, check_int, check_recipe
from .store import (CacheError, _entry_name, _file_digest, _locked, _tmp_name, activations_dir, cache_key,
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
    entries = find_entries(model, recipe, init="trained", quant=quant, dtype=dtype, any_store=True)
    if not entries:
        raise CacheError(f"No capture of {model} with n={n} is cached in {activations_dir()}: capture it first "
                         f"(python -m tdcourse capture --model {model} --n {n}).")
    if control:
        entries += find_entries(model, recipe, init="random", seed=seed, any_store=True)
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


_RESULT_NAME = re.compile(r"([0-9a-f]{24})-[A-Za-z0-9_-]+\.npz")


def _entry_differs(existing: Path, staged: Path) -> str | None:
    """None when the entry at ``existing`` holds what ``staged`` holds, else how it differs."""
    if not existing.is_dir():
        return "something else is in its place"
    try:
        old = json.loads((existing / "meta.json").read_text())
        new = json.loads((staged / "meta.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "the cached entry is unreadable"
    if not isinstance(old, dict) or old.get("meta") != new.get("meta"):
        return "other metadata"
    algo, hex_new = new["checksum"]["algorithm"], new["checksum"]["hex"]
    old_sum = old.get("checksum") if isinstance(old.get("checksum"), dict) else {}
    try:
        hex_old = old_sum["hex"] if old_sum.get("algorithm") == algo else _file_digest(existing / "acts.npy", algo)
    except (OSError, KeyError):
        return "the cached array is unreadable"
    return None if hex_old == hex_new else "other values (captured elsewhere, e.g. on another GPU or batch size)"


def import_activations(file: str | Path, replace: bool = False) -> list[Path]:
    """Install the captures of an export file (:func:`export_activations`) into this cache:
    all of them or nothing.

    Everything is read and checked before anything is installed: the manifest; each entry's
    ``meta.json`` against the manifest's SHA-256 and for well-formed fields, its array against
    the checksum in its metadata (and for NaN / inf, shape and format); each kept result's
    name, SHA-256, and that it belongs to an entry of this export (a result of another capture
    is refused, never installed). Folder names are computed from each entry's metadata, never
    taken from the file. An entry or result the cache already holds with the same contents is
    left as it is; one of the same key whose contents differ is replaced only with
    ``replace=True`` (otherwise the error lists them and nothing is installed). Entries are
    renamed into place under the same lock as a capture; if an install fails midway, what was
    installed is taken back and what it replaced is put back.

    Parameters
    ----------
    file : str or pathlib.Path
        A ``.tar`` written by :func:`export_activations` (``python -m tdcourse export``).
    replace : bool
        Replace cached entries and results of the same key whose contents differ
        (``python -m tdcourse import FILE --replace``); each replacement is printed.

    Returns
    -------
    list of pathlib.Path
        The entry folders, then the kept results (chapter 7's teleport results, see
        :func:`tdcourse.store.save_result`) the cache now holds from this file.

    Raises
    ------
    CacheError
        One sentence, and nothing installed: the file is not an export, is truncated or
        damaged (a checksum mismatch, a missing member, a malformed manifest or metadata such
        as ``recipe.n = null``, a result with a bad name or of no imported entry), would replace
        differing entries without ``replace=True``, or the cache cannot take it (its room is
        checked before anything is written).
    ValueError
        ``replace`` is not True or False.
    """
    import tarfile
    import zlib

    if not isinstance(replace, bool):
        raise ValueError(f"replace must be True or False, got {replace!r}")
    file = Path(file).expanduser()
    damaged = f"{file} is not a complete tdcourse export: export it again (python -m tdcourse export ...)."
    unreadable = (OSError, EOFError, tarfile.TarError, zlib.error)
    try:
        tar = tarfile.open(file, "r:*")
    except unreadable as err:
        why = str(err).strip().splitlines()[-1].strip(" -") if str(err).strip() else type(err).__name__
        raise CacheError(f"{file} cannot be opened as an export: it is not a whole tar file ({why}). "
                         "Export it again (python -m tdcourse export ...).") from err
    folder, rdir = activations_dir(), results_dir()
    entries: list[tuple[Path, Path, str]] = []  # (staged folder, target, name in the file)
    results: list[tuple[Path, Path]] = []  # (staged file, target)
    keys: set[str] = set()  # cache keys of the staged entries: the only results that may come with them
    try:
        with tar:
            try:
                members = {m.name: m for m in tar.getmembers()}
            except unreadable as err:
                raise CacheError(f"{damaged} (the archive is truncated or damaged: {err})") from err

            def member(name: str):
                m = members.get(name)
                if m is None or not m.isfile():
                    raise CacheError(f"{damaged} ({name} is missing)")
                return m

            def member_bytes(name: str) -> bytes:
                try:
                    return tar.extractfile(member(name)).read()
                except unreadable as err:
                    raise CacheError(f"{damaged} ({name} is truncated: {err})") from err

            try:
                manifest = json.loads(member_bytes(f"{_EXPORT_ROOT}/MANIFEST.json"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CacheError(f"{damaged} (unreadable manifest: {err})") from err
            if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
                raise CacheError(f"{file} is not a tdcourse activation export.")
            if manifest.get("version") != EXPORT_VERSION:
                raise CacheError(f"{file} is export version {manifest.get('version')}; this tdcourse reads "
                                 f"version {EXPORT_VERSION}. Export it again with the same tdcourse version.")
            listed, kept = manifest.get("entries"), manifest.get("results", [])
            if not isinstance(listed, list) or not listed:
                raise CacheError(f"{damaged} (the manifest lists no entries)")
            if not (all(isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("meta_sha256"), str)
                        for e in listed) and isinstance(kept, list)
                    and all(isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("sha256"), str)
                            for r in kept)):
                raise CacheError(f"{damaged} (the manifest's entries or results are malformed)")
            for r in kept:  # names first: a bad one stops the import before anything is staged
                if not _RESULT_NAME.fullmatch(r["name"]):
                    raise CacheError(f"{damaged} (a result has an unexpected name: {r['name']!r})")
            names = [f"{_EXPORT_ROOT}/{e['name']}/acts.npy" for e in listed]
            names += [f"{_EXPORT_ROOT}/results/{r['name']}" for r in kept]
            check_cache_room(sum(member(n).size for n in names), folder)
            clean_stale_temporaries(folder)
            clean_stale_temporaries(rdir)

            for e in listed:
                name = e["name"]
                meta_bytes = member_bytes(f"{_EXPORT_ROOT}/{name}/meta.json")
                if hashlib.sha256(meta_bytes).hexdigest() != e["meta_sha256"]:
                    raise CacheError(f"{damaged} ({name}/meta.json does not match the manifest's checksum)")
                tmp = folder / _tmp_name()
                entries.append((tmp, tmp, name))  # cleaned up on any failure below
                try:
                    tmp.mkdir()
                    (tmp / "meta.json").write_bytes(meta_bytes)
                    with tar.extractfile(member(f"{_EXPORT_ROOT}/{name}/acts.npy")) as src, \
                            open(tmp / "acts.npy", "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 24)
                except (EOFError, tarfile.TarError, zlib.error) as err:
                    raise CacheError(f"{damaged} ({name}/acts.npy is truncated: {err})") from err
                except OSError as err:
                    raise CacheError(f"Could not stage {name} in {folder} ({err.strerror or err}); nothing was "
                                     "installed.") from err
                try:
                    meta = read_entry(tmp).meta  # checksum, shape, format, well-formed metadata, finite
                except CacheError as err:
                    raise CacheError(f"{damaged} ({name}: {err})") from err
                entries[-1] = (tmp, folder / _entry_name(meta), name)
                keys.add(cache_key(meta))
            targets = [t for _, t, _ in entries]
            if len(set(targets)) != len(targets):
                raise CacheError(f"{damaged} (two entries hold the same capture)")
            for r in kept:
                name = r["name"]
                if _RESULT_NAME.fullmatch(name).group(1) not in keys:
                    raise CacheError(f"{damaged} (results/{name} belongs to no entry of this export: a result "
                                     "of another capture is never installed)")
                blob = member_bytes(f"{_EXPORT_ROOT}/results/{name}")
                if hashlib.sha256(blob).hexdigest() != r["sha256"]:
                    raise CacheError(f"{damaged} (results/{name} does not match the manifest's checksum)")
                tmp = rdir / f"{_tmp_name()}.npz"
                results.append((tmp, rdir / name))
                try:
                    tmp.write_bytes(blob)
                except OSError as err:
                    raise CacheError(f"Could not stage results/{name} in {rdir} ({err.strerror or err}); nothing "
                                     "was installed.") from err

        # What would be replaced, and what is already there.
        plan: list[tuple[Path, Path]] = []
        replaced, same = [], []
        for tmp, target, _ in entries:
            if target.exists() or target.is_symlink():
                how = _entry_differs(target, tmp)
                if how is None:
                    same.append(target)
                    continue
                replaced.append(f"{target.name} ({how})")
            plan.append((tmp, target))
        for tmp, target in results:
            if target.exists() or target.is_symlink():
                try:
                    identical = _file_digest(target, "sha256") == _file_digest(tmp, "sha256")
                except OSError:
                    identical = False
                if identical:
                    same.append(target)
                    continue
                replaced.append(f"results/{target.name} (other contents)")
            plan.append((tmp, target))
        if replaced and not replace:
            raise CacheError(f"{file} would replace {len(replaced)} cached file(s) of the same key whose contents "
                             f"differ: {'; '.join(replaced)}. Nothing was installed. To replace them, import again "
                             "with --replace (import_activations(..., replace=True)).")
        _install_all(plan)
        for what in replaced:
            print(f"Replaced {what}.")
        installed = {t for _, t in plan} | set(same)
        return [t for _, t, _ in entries if t in installed] + [t for _, t in results if t in installed]
    finally:
        for tmp, _, _ in entries:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        for tmp, _ in results:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _install_all(plan: list[tuple[Path, Path]]) -> None:
    """Rename every staged ``tmp`` to its ``target``, all or none.

    What a target held is moved aside first and removed only when every rename succeeded; on
    a failure the renamed ones are taken back and what they replaced is put back.
    """
    done: list[tuple[Path, Path, Path | None]] = []  # (tmp, target, what it held, moved aside)
    try:
        for tmp, target in plan:
            with _locked(target, exclusive=True):
                old = None
                if target.exists() or target.is_symlink():
                    old = target.parent / _tmp_name()
                    os.replace(target, old)
                try:
                    os.replace(tmp, target)
                except OSError:
                    if old is not None:
                        os.replace(old, target)
                    raise
            done.append((tmp, target, old))
    except OSError as err:
        for tmp, target, old in reversed(done):
            with contextlib.suppress(OSError):
                os.replace(target, tmp)  # staged again: removed by the caller
                if old is not None:
                    os.replace(old, target)
        raise CacheError(f"Could not install into {plan[0][1].parent} ({err.strerror or err}): nothing was "
                         "installed.") from err
    for _, _, old in done:
        if old is None:
            continue
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                old.unlink()
