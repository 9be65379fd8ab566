"""Altair chart builders, one per kind of figure the chapters draw.

Every builder takes arrays (shapes documented) and returns an ``alt.Chart`` (or a layered /
concatenated chart) that the notebook displays. Data is passed compactly (one row per site
with arrays flattened by Vega-Lite) so a 60 × 576 heat map stays small in the page. The
built book draws them offline through one local copy of the Vega libraries (see
``tools/offline_assets.py``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np




def _alt():
    import altair as alt

    return alt


def site_frame(values: Mapping[str, np.ndarray], sites: Sequence[str], value_name: str = "value"):
    """Long DataFrame with columns ``site``, ``depth`` (site position), ``series`` and
    ``value_name`` from ``{series: ndarray of shape (n_sites,)}``."""
    import pandas as pd

    frames = []
    for series, arr in values.items():
        arr = np.asarray(arr, dtype=float)
        if arr.shape != (len(sites),):
            raise ValueError(f"series {series!r} has shape {arr.shape}, expected ({len(sites)},) (one value per site)")
        frames.append(pd.DataFrame({"site": list(sites), "depth": np.arange(len(sites)), "series": series, value_name: arr}))
    return pd.concat(frames, ignore_index=True)


def heatmap(
    matrix: np.ndarray,
    sites: Sequence[str],
    title: str = "",
    color_title: str = "value",
    diverging: bool = True,
    clip_quantile: float | None = 0.99,
    width: int = 640,
    height: int = 300,
):
    """Heat map of a sites × units matrix (e.g. the mean activation, the paper's Fig. 1B).

    Parameters
    ----------
    matrix : ndarray of shape (n_sites, n_units)
    sites : sequence of str, length n_sites
    diverging : bool
        A blue-white-red scale centred on 0 (for signed values), else viridis.
    clip_quantile : float or None
        Colour scale limits at this quantile of |value|, so a few massive units do not wash
        out the rest (they show saturated). None: the full range.
    """
    alt = _alt()
    import pandas as pd

    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != len(sites):
        raise ValueError(f"matrix must have shape (n_sites={len(sites)}, n_units), got {matrix.shape}")
    n_units = matrix.shape[1]
    rows = pd.DataFrame({
        "site": list(sites),
        "depth": np.arange(len(sites)),
        "v": [np.round(r, 4).tolist() for r in matrix],
        "unit": [list(range(n_units))] * len(sites),
    })
    lim = float(np.quantile(np.abs(matrix), clip_quantile)) if clip_quantile else float(np.abs(matrix).max())
    lim = lim or 1.0
    scale = (alt.Scale(scheme="blueorange", domain=[-lim, lim], clamp=True) if diverging
             else alt.Scale(scheme="viridis", domain=[float(matrix.min()), lim], clamp=True))
    return (
        alt.Chart(rows, title=title)
        .transform_flatten(["v", "unit"])
        .mark_rect()
        .encode(
            x=alt.X("unit:O", title=f"unit (0–{n_units - 1})", axis=alt.Axis(labels=False, ticks=False)),
            y=alt.Y("depth:O", title="site (depth ↓)", axis=alt.Axis(labelExpr="datum.value % 4 == 0 ? datum.value : ''")),
            color=alt.Color("v:Q", title=color_title, scale=scale),
            tooltip=["site:N", "unit:Q", alt.Tooltip("v:Q", format=".3f", title=color_title)],
        )
        .properties(width=width, height=height)
    )


def curves(
    values: Mapping[str, np.ndarray],
    sites: Sequence[str],
    y_title: str,
    title: str = "",
    bands: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    log_y: bool = False,
    width: int = 560,
    height: int = 260,
):
    """One line per series against site depth, with optional shaded bands.

    Parameters
    ----------
    values : {series: ndarray of shape (n_sites,)}
    sites : sequence of str, length n_sites
    bands : {series: (lo, hi)} with lo, hi of shape (n_sites,), optional
        E.g. quantile bands or a bootstrap interval; drawn under the line, same colour.
    log_y : bool
    """
    alt = _alt()

    df = site_frame(values, sites, "y")
    yscale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    color = alt.Color("series:N", title=None, legend=alt.Legend(orient="top"))
    x = alt.X("depth:Q", title="site (resid_pre 0, resid_mid 0, resid_pre 1, …)")
    line = alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        x=x, y=alt.Y("y:Q", title=y_title, scale=yscale), color=color,
        tooltip=["series:N", "site:N", alt.Tooltip("y:Q", format=".4g", title=y_title)],
    )
    layers = []
    if bands:
        lo = site_frame({k: v[0] for k, v in bands.items()}, sites, "lo")
        hi = site_frame({k: v[1] for k, v in bands.items()}, sites, "hi")
        lo["hi"] = hi["hi"].to_numpy()
        layers.append(alt.Chart(lo).mark_area(opacity=0.2).encode(x=x, y="lo:Q", y2="hi:Q", color=color))
    layers.append(line)
    return alt.layer(*layers, title=title).properties(width=width, height=height)


def histograms(
    values: Mapping[str, np.ndarray],
    x_title: str,
    bins: int | np.ndarray = 50,
    title: str = "",
    density: bool = True,
    width: int = 480,
    height: int = 240,
):
    """Overlaid histograms (step lines) of several samples on shared bins.

    Parameters
    ----------
    values : {series: ndarray of any shape}
        Flattened; NaNs dropped.
    bins : int or ndarray of bin edges
    density : bool
        Normalise each to unit area, so samples of different sizes compare.
    """
    alt = _alt()
    import pandas as pd

    flat = {k: np.asarray(v, dtype=float).ravel() for k, v in values.items()}
    flat = {k: v[np.isfinite(v)] for k, v in flat.items()}
    allv = np.concatenate([v for v in flat.values() if v.size]) if flat else np.array([0.0])
    edges = np.histogram_bin_edges(allv, bins=bins) if np.isscalar(bins) else np.asarray(bins)
    frames = []
    for k, v in flat.items():
        counts, _ = np.histogram(v, bins=edges, density=density)
        frames.append(pd.DataFrame({"x": edges[:-1], "x2": edges[1:], "count": counts, "series": k}))
    df = pd.concat(frames, ignore_index=True)
    return (
        alt.Chart(df, title=title)
        .mark_bar(opacity=0.5, binSpacing=0)
        .encode(
            x=alt.X("x:Q", title=x_title, bin="binned"),
            x2="x2:Q",
            y=alt.Y("count:Q", title="density" if density else "count", stack=None),
            color=alt.Color("series:N", title=None, legend=alt.Legend(orient="top")),
            tooltip=["series:N", alt.Tooltip("x:Q", format=".3g"), alt.Tooltip("count:Q", format=".3g")],
        )
        .properties(width=width, height=height)
    )
