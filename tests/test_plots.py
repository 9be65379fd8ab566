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


# --- one visual language: the same run has the same colour and name in every chart


def _color_scales(spec) -> list[dict]:
    """Every colour encoding of series in a Vega-Lite spec (layers, concatenations, facets)."""
    out = []
    if isinstance(spec, dict):
        enc = spec.get("encoding", {})
        c = enc.get("color") if isinstance(enc, dict) else None
        if isinstance(c, dict) and c.get("field") in ("series", "arrow"):
            out.append(c)
        for v in spec.values():
            out += _color_scales(v)
    elif isinstance(spec, list):
        for v in spec:
            out += _color_scales(v)
    return out


def _colours(chart) -> dict[str, str]:
    scales = _color_scales(chart.to_dict())
    assert scales, "no series colour encoding"
    found = {}
    for c in scales:
        assert "scale" in c and "domain" in c["scale"] and "range" in c["scale"], f"no explicit scale: {c}"
        for name, col in zip(c["scale"]["domain"], c["scale"]["range"]):
            assert found.setdefault(name, col) == col, f"{name} has two colours in one chart"
    return found


def _every_builder(values: dict):
    """Each series builder, on the series ``values`` ({name: ndarray of 6 values})."""
    sites = site_names(3)
    x = np.arange(6.0)
    return [
        plots.curves(values, sites, "y", bands={k: (v - 1, v + 1) for k, v in values.items()}),
        plots.histograms(values, "x"),
        plots.band_lines(x, values, "x", "y", bands={k: (v - 1, v + 1) for k, v in values.items()}),
        plots.step_lines(x, values, "x", "y", dashed=list(values)[-1:]),
        plots.xy_lines({k: (x, v) for k, v in values.items()}, "x", "y"),
        plots.paired_scatter({k: (x, v) for k, v in values.items()}, "x", "y"),
        plots.estimates(["a", "b", "c", "d", "e", "f"], {k: (v, v - 1, v + 1) for k, v in values.items()}, "g", "y"),
    ]


def test_a_run_has_the_book_colour_in_every_builder_whatever_the_order():
    v = {name: np.arange(6.0) + i for i, name in enumerate(
        ["trained", "random-init control", "site-shuffled null", "4-bit copy"])}
    for order in (list(v), list(reversed(v)), sorted(v)):
        for chart in _every_builder({k: v[k] for k in order}):
            got = _colours(chart)
            assert got["trained"] == plots.RUN_COLORS["trained"][0]
            assert got["random-init control"] == plots.RUN_COLORS["random-init control"][0]
            assert got["4-bit copy"] == plots.RUN_COLORS["4-bit copy"][0]
            assert got["site-shuffled null"] == plots.NULL_COLORS["site-shuffled null"][0]


def test_sub_series_take_their_run_hue_and_others_never_a_run_colour():
    names = ["random-init control · within (attention)", "trained · within (attention)",
             "trained · across (MLP)", "random-init control · across (MLP)", "kNN (k = 3)", "binned (10 × 10)",
             "layer-shuffled null (trained)", "white noise (what a layer shuffle gives)", "random walk",
             "random basis (median r)"]
    got = dict(zip(names, plots.series_colors(names)))
    assert got["trained · within (attention)"] == plots.RUN_COLORS["trained"][0]
    assert got["trained · across (MLP)"] == plots.RUN_COLORS["trained"][1]
    assert got["random-init control · within (attention)"] == plots.RUN_COLORS["random-init control"][0]
    assert got["random-init control · across (MLP)"] == plots.RUN_COLORS["random-init control"][1]
    assert got["kNN (k = 3)"] == plots.OTHER_COLORS[0] and got["binned (10 × 10)"] == plots.OTHER_COLORS[1]
    assert got["random walk"] == plots.NULL_COLORS["random walk"][0]
    assert got["random basis (median r)"] == plots.NULL_COLORS["random basis"][0]
    # two greys in one chart: the second takes the lighter shade
    assert got["layer-shuffled null (trained)"] != got["white noise (what a layer shuffle gives)"]
    run_colours = {c for shades in plots.RUN_COLORS.values() for c in shades}
    assert not run_colours & set(plots.OTHER_COLORS) and not run_colours & set(plots.ARROW_COLORS.values())
    assert not run_colours & {c for shades in plots.NULL_COLORS.values() for c in shades}
    # an explicit colour wins
    assert plots.series_colors(["trained"], {"trained": "#000000"}) == ["#000000"]


def test_label_names_runs_as_the_book_does():
    from types import SimpleNamespace as NS

    assert plots.label(NS(meta={"model": {"init": "trained", "quant": "none"}})) == "trained"
    assert plots.label(NS(meta={"model": {"init": "random", "seed": 0}})) == "random-init control"
    assert plots.label(NS(meta={"model": {"quant": "4bit"}})) == "4-bit copy"
    assert plots.label("smollm2-135m · random init (seed 0)") == "random-init control"
    assert plots.label("llama-3.1-8b · 4bit") == "4-bit copy" and plots.label("llama-3.1-8b") == "trained"
    with pytest.raises(TypeError):
        plots.label(3)


def test_flow_field_arrows_are_not_run_colours():
    chart = plots.flow_field(np.zeros((2, 2)), np.ones((2, 2)), np.zeros((3, 2)), np.array([True, False]))
    assert _colours(chart) == {"inward": plots.ARROW_COLORS["inward"], "outward": plots.ARROW_COLORS["outward"]}
