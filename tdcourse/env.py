"""Where the course runs: Colab, CI or a laptop; the device; the cache directory; the HF token.

The only global state in :mod:`tdcourse` is one cache directory, chosen by the environment
variable ``TDCOURSE_CACHE`` (default: ``~/.cache/tdcourse``, or ``$XDG_CACHE_HOME/tdcourse``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CacheDirError", "TMP_PREFIX", "STALE_TMP_S", "cache_dir", "cache_dir_path", "cache_hint",
           "room_problem", "temporary_name", "clean_stale_temporaries", "where", "device", "gpu_memory_gb", "ram_gb", "hf_token", "report", "use_drive"]


class CacheDirError(OSError):
    """The cache directory cannot be used (a file is in its place, or it cannot be created)."""


def cache_dir_path() -> Path:
    """Where the cache directory is, without creating or checking it (see :func:`cache_dir`)."""
    env = os.environ.get("TDCOURSE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tdcourse"


def _writable(folder: Path) -> bool:
    """Whether a new folder can be made in ``folder``: tried, not read from its mode bits (root
    passes every permission check, and a read-only mount or /proc refuses writes anyway)."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=folder))
        return True
    except OSError:
        return False


def cache_hint() -> str:
    """One sentence saying how to choose another cache folder, naming one that can be written:
    ``$HOME/tdcourse-cache`` when the home takes writes, else one in the temporary folder (a
    read-only home must not be suggested)."""
    import tempfile

    home = Path.home()
    for base, shown in ((home, "$HOME/tdcourse-cache"), (Path(tempfile.gettempdir()), None)):
        if _writable(base):
            folder = shown or str(base / "tdcourse-cache")
            return f"Set TDCOURSE_CACHE to a folder you can write, e.g. export TDCOURSE_CACHE={folder}"
    return "Set TDCOURSE_CACHE to a folder you can write (your home and the temporary folder cannot be written)."


#: Room kept free beside a write, at most: a write of fewer bytes keeps its own size free.
ROOM_MARGIN_BYTES = 64 * 2**20


def room_problem(folder: Path, n_bytes: int, what: str) -> str | None:
    """None if ``folder`` can be written and its disk can take ``n_bytes`` more, else one sentence.

    Writes and removes a small probe file (a read-only folder is found now, not after minutes
    of work), then compares ``n_bytes`` plus a margin with the disk's free space
    (:func:`shutil.disk_usage`). The margin is ``min(64 MiB, n_bytes)``: never larger than the
    write itself, so an 8 KB write needs 16 KB, a 1 GB one 1.06 GB.

    Parameters
    ----------
    folder : pathlib.Path
        An existing folder, where the write will go.
    n_bytes : int
        What the write will take.
    what : str
        The write, for the message (e.g. ``"this capture"``).

    Returns
    -------
    str or None
        What is wrong (not writable; how much is free and needed) and what to do.
    """
    import shutil

    probe = Path(folder) / temporary_name(".probe")
    try:
        with open(probe, "wb") as f:
            f.write(b"tdcourse")
    except OSError as err:
        return f"The folder {folder} is not writable ({err.strerror or err}). {cache_hint()}"
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    n_bytes = max(int(n_bytes), 0)
    need = n_bytes + min(ROOM_MARGIN_BYTES, n_bytes)
    free = shutil.disk_usage(folder).free
    if free < need:
        def size(b):
            return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB" if b >= 2**20 else f"{b / 2**10:.0f} KiB"
        return (f"The folder {folder} has {size(free)} free and {what} needs about {size(need)}. Free some space "
                "or set TDCOURSE_CACHE to a folder on a larger disk.")
    return None


def cache_dir() -> Path:
    """The course's one cache directory (created on first use).

    ``$TDCOURSE_CACHE`` if set, else ``$XDG_CACHE_HOME/tdcourse``, else ``~/.cache/tdcourse``.
    Converted models live in ``models/``, captured activations in ``activations/``.

    Raises
    ------
    CacheDirError
        The path (or a folder above it) is a file, or the folder cannot be created; the
        message says which path and how to choose another (``TDCOURSE_CACHE``).
    """
    path = cache_dir_path()
    hint = cache_hint()
    if path.exists() and not path.is_dir():
        raise CacheDirError(f"The cache directory {path} is a file, not a folder. Move that file away or "
                            f"choose another folder. {hint}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise CacheDirError(f"The cache directory {path} cannot be created: a file is in the way ({err}). {hint}") from err
    except OSError as err:
        raise CacheDirError(f"The cache directory {path} cannot be created ({err.strerror or err}). {hint}") from err
    return path


TMP_PREFIX = ".tmp-"
#: Temporary files or folders older than this are removed by the next clean-up whatever their
#: owner (writing a cache entry or converting a model takes seconds to minutes).
STALE_TMP_S = 6 * 3600


def _host() -> str:
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9.]+", "", socket.gethostname())[:32] or "host"


def temporary_name(suffix: str = "") -> str:
    """A unique name for a temporary file or folder inside the cache: ``.tmp-<host>-<pid>-<random>``.

    Write into ``<folder>/<name>`` in the folder where the result will live (same filesystem,
    so the final :func:`os.replace` is atomic and never crosses devices); the name lets
    :func:`clean_stale_temporaries` tell a killed writer's leftover from a live one.
    """
    import uuid

    return f"{TMP_PREFIX}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def clean_stale_temporaries(folder: Path, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Remove leftovers of killed writers: ``.tmp-*`` files and folders directly in ``folder``.

    One is removed when the process that made it (its name holds host and pid, see
    :func:`temporary_name`) no longer runs on this host, or when it is older than
    ``max_age_s`` seconds (also one from another host sharing the folder, e.g. Google Drive,
    or of an older naming). Live writers' temporaries are kept. Errors are ignored (a
    read-only folder is left as it is).

    Parameters
    ----------
    folder : pathlib.Path
    max_age_s : float

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    import shutil
    import time

    here = _host()
    removed = []
    now = time.time()
    try:
        leftovers = [p for p in Path(folder).iterdir() if p.name.startswith(TMP_PREFIX)]
    except OSError:
        return removed
    for p in leftovers:
        parts = p.name[len(TMP_PREFIX):].split("-")
        try:
            age = now - p.lstat().st_mtime
        except OSError:
            continue
        dead = len(parts) >= 3 and parts[0] == here and parts[1].isdigit() and not _pid_alive(int(parts[1]))
        if dead or age > max_age_s:
            try:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def use_drive(folder: str = "tdcourse-cache", mount_point: str = "/content/drive") -> Path | None:
    """On Colab, keep the course's cache on Google Drive; elsewhere do nothing.

    Colab runs each notebook in its own runtime and wipes its disk when the runtime ends, so a
    cache in the runtime's home would be captured again by every chapter. This mounts Drive
    (Colab asks for permission once per runtime) and sets ``TDCOURSE_CACHE`` to
    ``MyDrive/<folder>``: the first chapter captures, the others read, and the course's
    setting (:func:`tdcourse.settings.use_model`) is shared too.

    Parameters
    ----------
    folder : str
        Folder under ``MyDrive`` (created if missing).
    mount_point : str
        Where Drive is mounted.

    Returns
    -------
    pathlib.Path or None
        The cache folder on Drive, or None when not on Colab, or when ``TDCOURSE_CACHE`` is
        already set (an explicit choice wins).
    """
    if where() != "colab" or os.environ.get("TDCOURSE_CACHE"):
        return None
    from google.colab import drive  # type: ignore  # pragma: no cover - only on Colab

    drive.mount(mount_point)  # pragma: no cover
    path = Path(mount_point) / "MyDrive" / folder  # pragma: no cover
    path.mkdir(parents=True, exist_ok=True)  # pragma: no cover
    os.environ["TDCOURSE_CACHE"] = str(path)  # pragma: no cover
    print(f"The course's cache is on Google Drive: {path}")  # pragma: no cover
    return path  # pragma: no cover


def where() -> str:
    """``"colab"``, ``"ci"`` or ``"laptop"``: where this Python process runs."""
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "colab"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return "ci"
    return "laptop"


def device() -> str:
    """``"cuda"`` if a CUDA GPU is visible to torch, else ``"mps"`` on Apple silicon, else ``"cpu"``.

    With a CPU-only build of torch on Linux or Windows (:func:`torch_is_cpu_only`) the answer
    is ``"cpu"`` without importing torch (about 2 s a process).
    """
    if "torch" not in sys.modules and sys.platform != "darwin" and torch_is_cpu_only():
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def torch_is_cpu_only() -> bool:
    """Whether the installed torch is a build without CUDA, ROCm or XPU support, read from its
    ``torch/version.py`` without importing torch. False when that cannot be told (no torch,
    an unreadable or unfamiliar file): the caller then asks torch itself."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.submodule_search_locations:
            return False
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text(encoding="utf-8")
    except (OSError, ValueError, ImportError, UnicodeDecodeError):
        return False
    backends = {}
    for name in ("cuda", "hip", "xpu"):
        found = re.search(rf"^{name}\s*(?::[^=\n]*)?=\s*(.+?)\s*$", text, flags=re.M)
        backends[name] = found.group(1) if found else None
    return backends["cuda"] == "None" and backends["hip"] == "None" and backends["xpu"] in ("None", None)


def gpu_memory_gb() -> float | None:
    """Total memory of CUDA GPU 0 in GiB, or ``None`` without a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


def ram_gb() -> float | None:
    """Physical memory of this machine in GiB, or ``None`` where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def colab_secret(name: str) -> str | None:
    """The Colab secret ``name`` (the key icon in Colab's left bar), or None: outside Colab, when
    no such secret exists, or when the notebook was not given access to it."""
    if where() != "colab":
        return None
    try:  # pragma: no cover - only on Colab
        from google.colab import userdata  # type: ignore

        return userdata.get(name) or None
    except Exception:
        return None


def hf_token() -> str | None:
    """A Hugging Face token from ``$HF_TOKEN`` (or ``$HUGGING_FACE_HUB_TOKEN``), the Colab
    secret ``HF_TOKEN``, or the ``huggingface-cli login`` store, in that order; ``None`` if none."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var):
            return os.environ[var]
    token = colab_secret("HF_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:
        return None


@dataclass(frozen=True)
class Report:
    """What :func:`report` found; printed as one line per field."""

    where: str
    device: str
    gpu_name: str | None
    gpu_memory_gb: float | None
    ram_gb: float | None
    torch_threads: int
    cache_dir: str
    cache_problem: str | None = None

    def __str__(self) -> str:
        gpu = f"{self.gpu_name} ({self.gpu_memory_gb:.1f} GiB)" if self.gpu_name else "none"
        ram = f"{self.ram_gb:.1f} GiB" if self.ram_gb else "unknown"
        return (
            f"running on : {self.where}\n"
            f"device     : {self.device} (torch threads: {self.torch_threads})\n"
            f"GPU        : {gpu}\n"
            f"RAM        : {ram}\n"
            f"cache      : {self.cache_dir}"
            + (f"\ncache error: {self.cache_problem}" if self.cache_problem else "")
        )


def report() -> Report:
    """Where we run, on which device, with how much memory, and where the cache is.

    A cache directory that cannot be used does not stop the report: ``cache_problem`` says
    what is wrong with it (None when it is usable).
    """
    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        cache, problem = str(cache_dir()), None
    except CacheDirError as err:
        cache, problem = str(cache_dir_path()), str(err)
    return Report(
        where=where(),
        device=device(),
        gpu_name=name,
        gpu_memory_gb=gpu_memory_gb(),
        ram_gb=ram_gb(),
        torch_threads=torch.get_num_threads(),
        cache_dir=cache,
        cache_problem=problem,
    )
