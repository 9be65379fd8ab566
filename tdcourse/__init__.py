"""tdcourse: the helper library of the course "Transformer Dynamics" (Fernando & Guitchounts,
arXiv:2502.12131), reproduced chapter by chapter.

Data flows one way: ``data`` → ``models`` → ``capture`` → measures and dynamics → ``plots``.
The one global setting is the cache directory (``TDCOURSE_CACHE``); the course's model and N
are read from it or from the environment by :func:`course_settings`.
"""

from . import _progress  # noqa: F401  (tqdm's text bars in Jupyter, without its ipywidgets warning)
from .capture import Activations, CacheError, load_activations, load_runs, site_names
from .models import DEFAULT_MODEL, load_model
from .settings import course_settings, use_model
from .verdicts import Verdict, judge

__version__ = "0.1.0"

__all__ = ["Activations", "CacheError", "DEFAULT_MODEL", "Verdict", "judge", "load_activations",
           "load_model", "load_runs", "site_names", "course_settings", "use_model", "__version__"]
