"""tdcourse: the helper library of the course "Transformer Dynamics" (Fernando & Guitchounts,
arXiv:2502.12131), reproduced chapter by chapter.

Data flows one way: ``data`` → ``models`` → ``hooks`` / ``nnsight_engine`` / ``store`` / ``exchange`` →
``capture``
→ measures and dynamics → ``plots``. The one global setting is the cache directory
(``TDCOURSE_CACHE``); the course's model and N are read from it or from the environment by
:func:`course_settings`.

The names below are imported when first used (``tdcourse.load_runs``), so importing one
submodule (``import tdcourse.store``) does not import the others.
"""

from __future__ import annotations

from importlib import import_module

from . import _progress  # noqa: F401  (tqdm's text bars in Jupyter, without its ipywidgets warning)

__version__ = "0.1.0"

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "Activations": "capture", "CacheError": "capture", "load_activations": "capture", "load_runs": "capture",
    "site_names": "capture", "DEFAULT_MODEL": "models", "load_model": "models", "course_settings": "settings",
    "use_model": "settings", "Verdict": "verdicts", "judge": "verdicts",
}

__all__ = ["Activations", "CacheError", "DEFAULT_MODEL", "Verdict", "judge", "load_activations",
           "load_model", "load_runs", "site_names", "course_settings", "use_model", "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tdcourse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
