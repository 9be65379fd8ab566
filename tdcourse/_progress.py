"""Text progress bars in Jupyter without a red warning.

Without ``ipywidgets``, ``tqdm.auto`` (imported by transformers and huggingface_hub, and by
:func:`tdcourse.capture.capture`) warns ``TqdmWarning: IProgress not found`` on its first import
in a Jupyter kernel, which JupyterLab shows in red in every chapter's load cell, and then draws
plain text bars anyway. Importing it once here, with that one warning ignored inside a
``warnings.catch_warnings()`` block, gives the same text bars with no warning; no warning filter
outlives the import.

Installing ``ipywidgets`` instead would turn the bars into widgets, and a book page holding a
widget loads require.js, which makes the offline altair charts fetch Vega from the CDN again
(blank charts offline). On Colab, which has ``ipywidgets``, the bars are widgets as usual.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.auto  # noqa: F401  (cached: later imports do not warn again)
