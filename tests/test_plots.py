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


def test_heatmap_bins_wide_matrices_keeping_the_largest_value():
    """4096 units are drawn as 512 bins of 8, each the entry of largest |value| (sign kept)."""
    m = np.zeros((4, 4096))
    m[1, 9] = -50.0   # a massive unit in bin 1
    m[2, 4095] = 3.0  # the last unit, in the last bin
    chart = plots.heatmap(m, site_names(2))
    spec = chart.to_dict()
    data = spec["datasets"][next(iter(spec["datasets"]))]
    assert len(data) == 4 and len(data[0]["v"]) == 512
    assert data[1]["v"][1] == -50.0 and data[2]["v"][511] == 3.0 and data[0]["v"][0] == 0.0
    assert "512 bins of 8" in spec["encoding"]["x"]["title"]
    # up to max_columns, one column per unit, as before
    shown, _ = plots.bin_columns(np.arange(12.0).reshape(2, 6), 6)
    assert shown.shape == (2, 6)
    shown, title = plots.bin_columns(np.array([[1.0, -4.0, 2.0, 0.5, 7.0]]), 2)
    assert shown.tolist() == [[-4.0, 7.0]] and "2 bins of 3" in title


def test_paired_scatter_samples_large_series_and_says_so():
    """8,192 points (4,096 units x 2 models) exceed Altair's 5,000-row limit: a stated subset is drawn."""
    rng = np.random.default_rng(0)
    pairs = {"trained": (rng.normal(size=4096), rng.normal(size=4096)),
             "random init": (rng.normal(size=4096) + 10, rng.normal(size=4096))}
    chart = plots.paired_scatter(pairs, "x", "y", title="per unit")
    spec = chart.to_dict()  # raises MaxRowsError if the data were not reduced
    rows = [r for d in spec["datasets"].values() for r in d if "series" in r]
    assert len(rows) == 4000
    assert {r["series"] for r in rows} == {"trained", "random init"}
    assert spec["title"]["subtitle"][1:] == ["trained: 2,000 of 4,096 points", "random init: 2,000 of 4,096 points"]
    # the diagonal spans all the data, not only the points drawn
    diag = [d for d in spec["datasets"].values() if len(d) == 2 and "series" not in d[0]][0]
    allx = np.concatenate([np.r_[x, y] for x, y in pairs.values()])
    assert diag[0]["x"] == pytest.approx(allx.min()) and diag[1]["x"] == pytest.approx(allx.max())
    # small series are drawn whole, with no subtitle
    small = plots.paired_scatter({"a": (np.arange(5.0), np.arange(5.0))}, "x", "y", title="t").to_dict()
    assert small["title"] == "t"


def test_band_charts_legend_shows_the_line_colour_in_two_columns():
    """A band drawn under a line must not give the legend its pale swatch (issue: legends took the
    band's opacity); legends wrap in two columns to fit the page."""
    import vl_convert as vlc

    sites = site_names(3)
    bands = {"a": (np.arange(6.0), np.arange(6.0) + 2), "b": (np.full(6, 0.5), np.full(6, 2.0))}
    for chart in (plots.curves({"a": np.arange(6.0) + 1, "b": np.ones(6)}, sites, "y", bands=bands),
                  plots.band_lines(np.arange(6.0), {"a": np.arange(6.0) + 1, "b": np.ones(6)}, "x", "y", bands=bands)):
        spec = chart.to_dict()
        svg = vlc.vegalite_to_svg(json.dumps(spec))
        symbols = svg.split('role-legend-symbol')[1:]
        assert len(symbols) == 2
        assert all('opacity="1"' in sym.split("</g>")[0] for sym in symbols)
        legend = [layer["encoding"]["color"]["legend"] for layer in spec["layer"]][0]
        assert legend["columns"] == 2 and legend["symbolOpacity"] == 1
