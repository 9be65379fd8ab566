"""The course's one setting: which model every chapter runs, and on how many samples.

Every chapter's settings cell reads :func:`course_settings`, so a learner chooses the model
once for the whole course, in one of three ways (first found wins):

1. the environment variables ``TDCOURSE_MODEL`` and ``TDCOURSE_N``
   (``TDCOURSE_MODEL=llama-3.1-8b make book``);
2. the file ``course.json`` in the cache directory, written by :func:`use_model` or
   ``python -m tdcourse use --model llama-3.1-8b``: it lives beside the captures, so on Colab,
   with the cache on Google Drive (:func:`tdcourse.env.use_drive`), every chapter's runtime
   reads the same setting;
3. the default: the embedded SmolLM2-135M, N = 1000, which needs no network.

Each chapter prints the model it runs and where that choice came from. Every command of
``python -m tdcourse`` that takes ``--model`` / ``--n`` uses this setting when they are not given.

The setting may also say how a missing capture of that model is made: ``engine`` (``"hooks"``,
the default, or ``"nnsight"``) and ``remote`` (True: on NDIF, for models no GPU here holds,
``llama-3.1-70b`` / ``llama-3.1-405b``): ``python -m tdcourse use --model llama-3.1-70b
--engine nnsight --remote``, or ``TDCOURSE_ENGINE=nnsight`` / ``TDCOURSE_REMOTE=1``. Chapters
still read the cache as before; only a capture that is not cached runs remotely.

The setting is checked when it is written and when it is read: ``course.json`` holds only the
keys ``model`` and ``n`` (a typo such as ``"modle"`` is refused, never ignored), the model is an
alias, a well-formed hub id or an existing model folder (a word such as ``gpt5``, a file or a
missing path is refused with what to give instead), and the file must be UTF-8 JSON. Each
problem is one ``ValueError`` that names the place to fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import env
from .models import DEFAULT_MODEL, MissingModelFolderError, classify_model_name

__all__ = ["DEFAULT_N", "ENGINES", "CourseSettings", "course_settings", "use_model", "settings_file"]

DEFAULT_N = 1000
_FILE = "course.json"
#: The keys ``course.json`` may hold.
KEYS = ("model", "n", "engine", "remote")
#: The capture engines (:mod:`tdcourse.hooks`, :mod:`tdcourse.nnsight_engine`).
ENGINES = ("hooks", "nnsight")


@dataclass(frozen=True)
class CourseSettings:
    """The model every chapter runs and the number of samples it reads.

    Attributes
    ----------
    model : str
        An alias (``"smollm2-135m"``, ``"llama-3.1-8b"``), a hub id or a local model folder.
    n : int
        Number of WikiText-2 samples captured (>= 1).
    source : str
        Where the setting came from: ``"environment"``, the settings file's path, or ``"default"``.
    engine : str
        How a capture that is not cached is made: ``"hooks"`` (default) or ``"nnsight"``.
    remote : bool
        Run the nnsight engine on NDIF (``engine`` is then ``"nnsight"``).

    Unpacks as ``MODEL, N = course_settings()``: engine and remote are read by
    :func:`tdcourse.capture.load_activations` itself.
    """

    model: str
    n: int
    source: str
    engine: str = "hooks"
    remote: bool = False

    def __iter__(self):
        return iter((self.model, self.n))

    def __str__(self) -> str:
        how = f", captured with {self.engine}" + (" on NDIF" if self.remote else "") if self.engine != "hooks" else ""
        return f"model: {self.model}, N = {self.n}{how} (set by: {self.source})"


def settings_file() -> Path:
    """``$TDCOURSE_CACHE/course.json``, where :func:`use_model` writes the course's setting."""
    return env.cache_dir() / _FILE


def _check_n(n, where: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        if isinstance(n, str) and n.strip().isdigit():
            n = int(n.strip())
        else:
            raise ValueError(f"N must be a whole number of samples >= 1; {where} gives {n!r}.")
    if n < 1:
        raise ValueError(f"N must be a whole number of samples >= 1; {where} gives {n!r}.")
    return n


def _check_model(model, where: str, writing: bool = False) -> str:
    """``model`` if it names a model (:func:`tdcourse.models.classify_model_name`), else a
    ``ValueError`` naming ``where``. A folder is returned as its absolute path. Read back from
    the file or the environment, a folder that no longer exists is kept (its captures may be
    cached: :func:`tdcourse.capture.load_activations` finds them); when written it must exist."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"The model must be an alias, a hub id or a folder; {where} gives {model!r}.")
    try:
        name, source = classify_model_name(model)
    except MissingModelFolderError as err:
        if writing:
            raise ValueError(f"{where} gives {model!r}: {err}") from None
        return model.strip()
    except ValueError as err:
        raise ValueError(f"{where} gives {model!r}: {err}") from None
    if source == "local" and writing and not (Path(name) / "config.json").is_file():
        raise ValueError(f"{where} gives {model!r}: the folder {name} has no config.json, so it is not a model "
                         "folder. Save the model there first (model.save_pretrained(folder), "
                         "tokenizer.save_pretrained(folder)).")
    return name if source == "local" else model.strip()


def _check_engine(engine, remote, where: str, model: str | None = None) -> tuple[str, bool]:
    """``(engine, remote)`` if they name a way to capture ``model``, else a ``ValueError`` naming ``where``."""
    if not isinstance(remote, bool):
        if isinstance(remote, str) and remote.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            remote = remote.strip().lower() in ("1", "true", "yes", "on")
        else:
            raise ValueError(f"remote must be true or false; {where} gives {remote!r}.")
    if engine is None:
        engine = "nnsight" if remote else "hooks"
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"The capture engine must be one of {list(ENGINES)}; {where} gives {engine!r}.")
    if remote and engine != "nnsight":
        raise ValueError(f"{where}: a remote capture runs on the nnsight engine (engine 'nnsight'), not {engine!r}.")
    if remote and model is not None:
        try:
            _, source = classify_model_name(model)
        except ValueError:
            source = "local"
        if source == "local" or source.startswith("embedded:"):
            raise ValueError(f"{where}: NDIF runs the hub models it hosts, not {model!r}; remote applies to hub "
                             "models such as llama-3.1-70b or llama-3.1-405b.")
    return engine, remote


def _read_file(path: Path) -> dict:
    """The settings file as a dict of known keys, or one ``ValueError`` that names the file."""
    fix = f"delete it or run `python -m tdcourse use --model {DEFAULT_MODEL}`"
    try:
        saved = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start} cannot be read): {fix}.") from err
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable settings file ({err}): {fix}.") from err
    if not isinstance(saved, dict):
        raise ValueError(f"{path} must hold a JSON object such as "
                         '{"model": "smollm2-135m", "n": 1000}: delete it or rewrite it.')
    unknown = sorted(set(saved) - set(KEYS))
    if unknown:
        raise ValueError(f"{path} holds unknown keys {unknown}: it may hold only {list(KEYS)} "
                         f"(e.g. {{\"model\": \"{DEFAULT_MODEL}\", \"n\": {DEFAULT_N}}}); {fix}.")
    return saved


def course_settings() -> CourseSettings:
    """The model and N that every chapter runs (see the module docstring for the order).

    Returns
    -------
    CourseSettings
        Unpacks as ``MODEL, N = course_settings()``.

    Raises
    ------
    ValueError
        If ``TDCOURSE_N`` or the settings file holds something other than a positive whole
        number; ``TDCOURSE_MODEL`` or the file names no model (an unknown word, a file); the
        file is not UTF-8 JSON or holds a key other than ``model``, ``n``, ``engine`` and
        ``remote``; an unknown engine, or ``remote`` for a model NDIF cannot run (a folder,
        the embedded model). The message names the place to fix.
    """
    model_env, n_env = os.environ.get("TDCOURSE_MODEL"), os.environ.get("TDCOURSE_N")
    saved: dict = {}
    path = settings_file()
    if path.exists() and not (model_env and n_env):
        saved = _read_file(path)
    sources = []
    if model_env:
        model = _check_model(model_env, "TDCOURSE_MODEL")
        sources.append("TDCOURSE_MODEL")
    elif "model" in saved:
        model = _check_model(saved["model"], str(path))
        sources.append(str(path))
    else:
        model = DEFAULT_MODEL
    if n_env:
        n = _check_n(n_env, "TDCOURSE_N")
        sources.append("TDCOURSE_N")
    elif "n" in saved:
        n = _check_n(saved["n"], str(path))
        if str(path) not in sources:
            sources.append(str(path))
    else:
        n = DEFAULT_N
    # How a missing capture is made: from the environment, else from the file when the file
    # also named the model (the file's engine never applies to a model set elsewhere).
    engine_env, remote_env = os.environ.get("TDCOURSE_ENGINE") or None, os.environ.get("TDCOURSE_REMOTE")
    from_file = not model_env and "model" in saved
    engine = engine_env if engine_env else (saved.get("engine") if from_file else None)
    remote = remote_env if remote_env is not None else (saved.get("remote", False) if from_file else False)
    where = "TDCOURSE_ENGINE / TDCOURSE_REMOTE" if (engine_env or remote_env is not None) else str(path)
    engine, remote = _check_engine(engine, remote, where, model)
    if engine_env or remote_env is not None:
        sources.append("TDCOURSE_ENGINE" if engine_env else "TDCOURSE_REMOTE")
    return CourseSettings(model=model, n=n, source=", ".join(sources) or "default", engine=engine, remote=remote)


def use_model(model: str, n: int = DEFAULT_N, engine: str | None = None, remote: bool = False) -> Path:
    """Choose the model (and N) for every chapter, in ``$TDCOURSE_CACHE/course.json``.

    Parameters
    ----------
    model : str
        Alias, hub id or local model folder (a folder is stored as an absolute path).
    n : int
        Samples per capture, >= 1.
    engine : {"hooks", "nnsight"} or None
        How a capture that is not cached is made (None: ``"hooks"``, or ``"nnsight"`` with
        ``remote``).
    remote : bool
        Capture on NDIF (hub models NDIF hosts: ``llama-3.1-70b``, ``llama-3.1-405b``, ...).

    Returns
    -------
    pathlib.Path
        The settings file written (atomically). Environment variables still take precedence over it.

    Raises
    ------
    ValueError
        ``model`` names no model (an unknown word such as ``"gpt5"``, a file, a folder that
        does not exist or has no ``config.json``), ``n`` is not a whole number >= 1, an
        unknown engine, or ``remote`` for a local folder or the embedded model. Nothing is
        written then.
    OSError
        The cache folder cannot be written.
    """
    model = _check_model(model, "use_model", writing=True)
    n = _check_n(n, "use_model")
    engine, remote = _check_engine(engine, remote, "use_model", model)
    record = {"model": model, "n": n}
    if engine != "hooks" or remote:  # the file of a plain setting stays as before
        record.update(engine=engine, remote=remote)
    path = settings_file()
    tmp = path.parent / env.temporary_name(".json")
    try:
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
