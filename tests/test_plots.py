from __future__ import annotations

import json

import numpy as np
import pytest

from tdcourse import plots
from tdcourse.capture import site_names


def test_heatmap_is_compact_and_checks_shape():
    m = np.random.default_rng(0).normal(size=(6, 50))
    chart = plots.heatmap(m, site_names(3), title="t")
    spec = chart.to_dict()
    data = spec["datasets"][next(iter(spec["datasets"]))]
    assert len(data) == 6 and len(data[0]["v"]) == 50  # one row per site, units flattened by Vega-Lite
    with pytest.raises(ValueError, match="n_sites"):
        plots.heatmap(m, site_names(2))


def test_curves_and_histograms_render_to_svg():
    sites = site_names(3)
    c = plots.curves({"a": np.arange(6.0), "b": np.ones(6)}, sites, "y",
                     bands={"a": (np.arange(6.0) - 1, np.arange(6.0) + 1)})
    h = plots.histograms({"real": np.random.default_rng(0).normal(size=100), "null": np.zeros(10)}, "r")
    import vl_convert as vlc

    for chart in (c, h):
        svg = vlc.vegalite_to_svg(json.dumps(chart.to_dict()))
        assert svg.startswith("<svg") and "NaN" not in svg
    with pytest.raises(ValueError, match="one value per site"):
        plots.curves({"a": np.arange(5.0)}, sites, "y")
