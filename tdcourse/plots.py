"""Altair chart builders, one per kind of figure the chapters draw.

Every builder takes arrays (shapes documented) and returns an ``alt.Chart`` (or a layered /
concatenated chart) that the notebook displays. One visual language for the whole book: a run
is named by :func:`label` (``"trained"``, ``"4-bit copy"``, ``"random-init control"``) and has
the same colour in every chart (:data:`RUN_COLORS`), whatever the order of the series; so has
each kind of null or yardstick (:data:`NULL_COLORS`: shuffles grey, random directions purple,
the random walk brown); every builder sets its colour scale explicitly (:func:`series_colors`). Data is passed compactly (one row per site
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


def _legend(**kw):
    """The legend of every series chart: on top, in two columns that wrap (so 4–8 entries fit a
    700-pixel page column), labels cut at 300 px, and opaque swatches (the line's colour, not a
    pale band's)."""
    return _alt().Legend(**({"orient": "top", "labelLimit": 300, "columns": 2, "symbolOpacity": 1} | kw))


# --------------------------------------------------------------------------- the book's visual language

#: Colours of the runs a chapter compares, the same in every chart of the book: one hue per run
#: kind, its first shade for the run itself and the next ones for a run's sub-series ("trained ·
#: within (attention)", "trained · across (MLP)"). Keys are :data:`tdcourse.verdicts.RUN_LABELS`'
#: labels, which is what :func:`label` names a run.
RUN_COLORS: dict[str, tuple[str, ...]] = {
    "trained": ("#4c78a8", "#9ecae9", "#2a4a70", "#6f9fcf"),
    "4-bit copy": ("#439894", "#8cc7c2", "#275c59", "#62b3ad"),
    "random-init control": ("#f58518", "#ffbf79", "#a8570c", "#f9a65a"),
}

#: Nulls and yardsticks: the label a chart gives each kind and its colour, the same in every
#: chart. Shuffles are grey (a white-noise curve is what a layer shuffle makes of any curve);
#: random directions purple; the random walk brown. A series named ``"<label> (…)"`` (e.g.
#: ``"layer-shuffled null (trained)"``) takes its label's colour.
NULL_COLORS: dict[str, tuple[str, ...]] = {
    "site-shuffled null": ("#8c8c8c", "#bdbdbd"),
    "layer-shuffled null": ("#8c8c8c", "#bdbdbd"),
    "shuffled-samples null": ("#8c8c8c", "#bdbdbd"),
    "white noise": ("#8c8c8c", "#bdbdbd"),
    "random basis": ("#b279a2", "#d6a5c9"),
    "random direction": ("#b279a2", "#d6a5c9"),
    "random walk": ("#9d755d", "#c9a88e"),
}

#: Every other series (estimators, kinds of step, injection layers…), in the order a chart lists
#: them; none of these is a run's or a null's colour.
OTHER_COLORS: tuple[str, ...] = ("#54a24b", "#e45756", "#eeca3b", "#ff9da6", "#17becf", "#bcbd22", "#6b4c9a",
                                 "#e377c2")

#: Arrows of a flow field (:func:`flow_field`): back toward the unperturbed trajectory or away.
ARROW_COLORS = {"inward": "#54a24b", "outward": "#e45756", "arrow": "#8c8c8c"}


def label(run) -> str:
    """The book's one name for a run in every chart legend and title: ``"trained"``, ``"4-bit
    copy"`` or ``"random-init control"``, whatever the model (the chapter prints the model once,
    in its settings cell).

    Parameters
    ----------
    run : Activations or str
        A run from :func:`tdcourse.load_runs` (its ``meta["model"]`` says how its weights were
        made) or a model label (:attr:`Activations.label`).

    Returns
    -------
    str
        A key of :data:`RUN_COLORS`; a random-init control of a seed other than 0 adds it:
        ``"random-init control (seed 3)"``.

    Raises
    ------
    TypeError
        If ``run`` is neither a run nor a string.
    """
    from .verdicts import run_label

    return run_label(run)


def run_tag(run) -> str:
    """Former name of :func:`label` (kept for old notebooks): the book's name for a run."""
    if not isinstance(getattr(run, "meta", None), dict):
        raise TypeError(f"run must be an Activations record (with .meta), got {type(run).__name__}")
    return label(run)


def _run_of(name: str) -> str | None:
    """The run label a series name starts with (``"trained · within"`` → ``"trained"``), or None."""
    head = name.split(" · ", 1)[0]
    for run in RUN_COLORS:
        if head == run or head.startswith(run + " ("):
            return run
    return None


def _null_of(name: str) -> str | None:
    for null in NULL_COLORS:
        if name == null or name.startswith(null + " ") or name.startswith(null + ","):
            return null
    return None


def series_colors(names: Sequence[str], colors: Mapping[str, str] | None = None) -> list[str]:
    """The colour of each series of one chart, by the book's palette.

    Parameters
    ----------
    names : sequence of str
        The chart's series, in legend order (no repeats).
    colors : {name: colour}, optional
        Explicit colours for some series (they win).

    Returns
    -------
    list of str
        One CSS colour per name: a run (``"trained"``, ``"4-bit copy"``, ``"random-init
        control"``, or ``"<run> · <what>"``) takes its hue in :data:`RUN_COLORS`, its first shade
        for its first series in the chart, the next shade for the next; a null or yardstick
        takes its colour in :data:`NULL_COLORS` (its second shade if another series of the
        chart already has the first); anything else takes :data:`OTHER_COLORS` in order. So a
        run has the same colour in every chart, however the names sort.
    """
    colors = dict(colors or {})
    used: set[str] = set()
    per_run: dict[str, int] = {}
    n_other = 0
    out = []
    for name in names:
        if name in colors:
            c = colors[name]
        elif (run := _run_of(name)) is not None:
            shades = RUN_COLORS[run]
            c = shades[per_run.get(run, 0) % len(shades)]
            per_run[run] = per_run.get(run, 0) + 1
        elif (null := _null_of(name)) is not None:
            shades = NULL_COLORS[null]
            c = next((s for s in shades if s not in used), shades[-1])
        else:
            c = OTHER_COLORS[n_other % len(OTHER_COLORS)]
            n_other += 1
        used.add(c)
        out.append(c)
    return out


def _color(names: Sequence[str], colors: Mapping[str, str] | None = None, field: str = "series", legend=True):
    """The colour encoding of a chart's series: an explicit scale (domain = the names in order,
    range = :func:`series_colors`), the legend in that order."""
    alt = _alt()
    names = list(dict.fromkeys(str(n) for n in names))
    return alt.Color(f"{field}:N", title=None, sort=names,
                     scale=alt.Scale(domain=names, range=series_colors(names, colors)),
                     legend=_legend() if legend else None)


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
    x_title: str | None = None,
    y_title: str = "site (depth ↓)",
    max_columns: int = 576,
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
    max_columns : int
        Most columns drawn. A wider matrix (Llama 3.1 8B's 4096 units) is drawn in bins of
        ``ceil(n_units / max_columns)`` consecutive units, each showing the entry of largest
        |value| in its bin (a massive unit stays visible), and the x-axis title says so: the
        page stays small and a column stays at least about a pixel wide. SmolLM2's 576 units
        are drawn one per column.

    Returns
    -------
    alt.Chart
        One data row per site (the units flattened by Vega-Lite).
    """
    alt = _alt()
    import pandas as pd

    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != len(sites):
        raise ValueError(f"matrix must have shape (n_sites={len(sites)}, n_units), got {matrix.shape}")
    if int(max_columns) < 1:
        raise ValueError(f"max_columns must be a positive number of columns, got {max_columns}")
    n_units = matrix.shape[1]
    lim = float(np.nanquantile(np.abs(matrix), clip_quantile)) if clip_quantile else float(np.nanmax(np.abs(matrix)))
    lim = lim or 1.0
    vmin = float(np.nanmin(matrix))
    shown, unit_title = bin_columns(matrix, int(max_columns))
    if shown.shape[1] == n_units:
        unit_title = f"unit (0–{n_units - 1})"
    rows = pd.DataFrame({
        "site": list(sites),
        "depth": np.arange(len(sites)),
        "v": [[float(f"{x:.3g}") for x in r] for r in shown],  # 3 significant digits: small pages
        "unit": [list(range(shown.shape[1]))] * len(sites),
    })
    scale = (alt.Scale(scheme="blueorange", domain=[-lim, lim], clamp=True) if diverging
             else alt.Scale(scheme="viridis", domain=[vmin, lim], clamp=True))
    return (
        alt.Chart(rows, title=title)
        .transform_flatten(["v", "unit"])
        .mark_rect()
        .encode(
            x=alt.X("unit:O", title=x_title or unit_title, axis=alt.Axis(labels=False, ticks=False)),
            y=alt.Y("depth:O", title=y_title, axis=alt.Axis(labelExpr="datum.value % 4 == 0 ? datum.value : ''")),
            color=alt.Color("v:Q", title=color_title, scale=scale),
            tooltip=["site:N", alt.Tooltip("unit:Q", title="unit" if shown.shape[1] == n_units else "bin"), alt.Tooltip("v:Q", format=".3f", title=color_title)],
        )
        .properties(width=width, height=height)
    )


def bin_columns(matrix: np.ndarray, max_columns: int) -> tuple[np.ndarray, str]:
    """Reduce a wide matrix to at most ``max_columns`` columns, keeping its extremes.

    Parameters
    ----------
    matrix : ndarray of shape (n_rows, n_cols)
    max_columns : int

    Returns
    -------
    shown : ndarray of shape (n_rows, ceil(n_cols / k))
        ``matrix`` itself when ``n_cols <= max_columns``; else, for bins of ``k =
        ceil(n_cols / max_columns)`` consecutive columns (the last one may be shorter), the
        entry of largest absolute value in each bin, with its sign.
    title : str
        Says what a column is, e.g. ``"units 0–4095 in 512 bins of 8 (largest |value| shown)"``.
    """
    m = np.asarray(matrix, dtype=float)
    n_rows, n_cols = m.shape
    if n_cols <= max_columns:
        return m, f"column (0–{n_cols - 1})"
    k = -(-n_cols // max_columns)
    n_bins = -(-n_cols // k)
    padded = np.full((n_rows, n_bins * k), np.nan)
    padded[:, :n_cols] = m
    blocks = padded.reshape(n_rows, n_bins, k)
    a = np.where(np.isnan(blocks), -np.inf, np.abs(blocks))
    pick = np.argmax(a, axis=2)
    shown = np.take_along_axis(blocks, pick[..., None], axis=2)[..., 0]
    return shown, f"units 0–{n_cols - 1} in {n_bins} bins of {k} (largest |value| shown)"


def sample_rows(n: int, max_rows: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_rows`` of ``n`` rows: all of them, or a seeded random subset in
    order (what a chart draws when its data would be too large for the page)."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(max_rows), replace=False))


def curves(
    values: Mapping[str, np.ndarray],
    sites: Sequence[str],
    y_title: str,
    title: str = "",
    bands: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    log_y: bool = False,
    width: int = 560,
    height: int = 260,
    x_title: str = "site (resid_pre 0, resid_mid 0, resid_pre 1, …)",
    colors: Mapping[str, str] | None = None,
    y_domain: tuple[float, float] | None = None,
):
    """One line per series against site depth, with optional shaded bands.

    Parameters
    ----------
    values : {series: ndarray of shape (n_sites,)}
    sites : sequence of str, length n_sites
    bands : {series: (lo, hi)} with lo, hi of shape (n_sites,), optional
        E.g. quantile bands or a bootstrap interval; drawn under the line, same colour.
    log_y : bool
    colors : {series: colour}, optional
        Colours for some series, overriding the book's palette (:func:`series_colors`:
        a run, a null or a yardstick has the same colour in every chart).
    y_domain : (lo, hi), optional
        Show only this range of the y axis; lines and bands leave the chart at its edges
        (clipped), so a few extreme sites do not flatten the rest. Say in the text which
        values lie outside.
    """
    alt = _alt()

    df = site_frame(values, sites, "y")
    scale = {} if y_domain is None else {"domain": [float(y_domain[0]), float(y_domain[1])]}
    yscale = alt.Scale(type="log", **scale) if log_y else alt.Scale(zero=False, **scale)
    clip = y_domain is not None
    color = _color(list(values) + [k for k in (bands or {}) if k not in values], colors)
    x = alt.X("depth:Q", title=x_title)
    line = alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=12), clip=clip).encode(
        x=x, y=alt.Y("y:Q", title=y_title, scale=yscale), color=color,
        tooltip=["series:N", "site:N", alt.Tooltip("y:Q", format=".4g", title=y_title)],
    )
    layers = []
    if bands:
        lo = site_frame({k: v[0] for k, v in bands.items()}, sites, "lo")
        hi = site_frame({k: v[1] for k, v in bands.items()}, sites, "hi")
        lo["hi"] = hi["hi"].to_numpy()
        band_y = alt.Y("lo:Q", scale=yscale) if clip else "lo:Q"
        layers.append(alt.Chart(lo).mark_area(opacity=0.2, clip=clip).encode(x=x, y=band_y, y2="hi:Q", color=color))
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
    colors: Mapping[str, str] | None = None,
):
    """Overlaid histograms (step lines) of several samples on shared bins.

    Parameters
    ----------
    values : {series: ndarray of any shape}
        Flattened; NaNs dropped.
    bins : int or ndarray of bin edges
    density : bool
        Normalise each to unit area, so samples of different sizes compare.
    colors : {series: colour}, optional
        Colours for some series, overriding the book's palette (:func:`series_colors`:
        a run, a null or a yardstick has the same colour in every chart).
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
            color=_color(list(values), colors),
            tooltip=["series:N", alt.Tooltip("x:Q", format=".3g"), alt.Tooltip("count:Q", format=".3g")],
        )
        .properties(width=width, height=height)
    )


# --------------------------------------------------------------------------- teleport (chapter 07)


def flow_field(
    starts: np.ndarray,
    ends: np.ndarray,
    trajectory: np.ndarray,
    inward: np.ndarray | None = None,
    title: str = "",
    x_title: str = "PC1",
    y_title: str = "PC2",
    width: int = 210,
    height: int = 210,
):
    """Arrows from injected grid points to where the model carries them, in a PCA plane, with
    the unperturbed trajectory drawn on top (a line from a star, its injection-site point).

    Parameters
    ----------
    starts : ndarray of shape (m, 2)
        Grid points (PCA coordinates).
    ends : ndarray of shape (m, 2)
        Where each point is some layers later, projected onto the same plane. Each arrow is a
        segment ending in a dot.
    trajectory : ndarray of shape (K, 2)
        The unperturbed state from the injection site (row 0, the star) onwards.
    inward : ndarray of shape (m,), bool, or None
        Colour each arrow as pointing back toward the unperturbed trajectory or away from it.
    """
    alt = _alt()
    import pandas as pd

    starts = np.asarray(starts, dtype=float)
    ends = np.asarray(ends, dtype=float)
    trajectory = np.asarray(trajectory, dtype=float)
    if starts.ndim != 2 or starts.shape[1] != 2 or ends.shape != starts.shape:
        raise ValueError(f"starts and ends must both have shape (m, 2), got {starts.shape} and {ends.shape}")
    if trajectory.ndim != 2 or trajectory.shape[1] != 2:
        raise ValueError(f"trajectory must have shape (K, 2), got {trajectory.shape}")
    kind = (np.where(np.asarray(inward, bool), "inward", "outward") if inward is not None
            else np.full(len(starts), "arrow"))
    if kind.shape != (len(starts),):
        raise ValueError(f"inward must have shape ({len(starts)},), got {np.shape(inward)}")
    arrows = pd.DataFrame({"x": starts[:, 0], "y": starts[:, 1], "x2": ends[:, 0], "y2": ends[:, 1], "arrow": kind})
    traj = pd.DataFrame({"x": trajectory[:, 0], "y": trajectory[:, 1], "step": np.arange(len(trajectory))})
    kinds = [k for k in ARROW_COLORS if k in set(kind)]
    color = alt.Color("arrow:N", title=None, legend=alt.Legend(orient="top", labelLimit=400),
                      scale=alt.Scale(domain=kinds, range=[ARROW_COLORS[k] for k in kinds]))
    x = alt.X("x:Q", title=x_title, scale=alt.Scale(zero=False))
    y = alt.Y("y:Q", title=y_title, scale=alt.Scale(zero=False))
    rules = alt.Chart(arrows).mark_rule(strokeWidth=1.2, opacity=0.8).encode(x=x, y=y, x2="x2:Q", y2="y2:Q", color=color)
    heads = alt.Chart(arrows).mark_circle(size=14, opacity=0.9).encode(
        x=alt.X("x2:Q", title=x_title), y=alt.Y("y2:Q", title=y_title), color=color)
    path = alt.Chart(traj).mark_line(color="black", strokeWidth=2, point=alt.OverlayMarkDef(color="black", size=20)).encode(
        x=x, y=y, order="step:Q", tooltip=[alt.Tooltip("step:Q", title="layers after injection")])
    star = alt.Chart(traj.iloc[:1]).mark_point(shape="diamond", size=120, filled=True, color="black").encode(x=x, y=y)
    return alt.layer(rules, heads, path, star, title=title).properties(width=width, height=height)


def panels(charts: Sequence, columns: int = 5, title: str = ""):
    """Charts side by side, wrapping after ``columns`` (each keeps its own axes)."""
    alt = _alt()

    charts = list(charts)
    if not charts:
        raise ValueError("panels needs at least one chart")
    return alt.concat(*charts, columns=int(columns), title=title)


def estimates(
    groups: Sequence[str],
    values: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    x_title: str,
    y_title: str,
    title: str = "",
    reference: float | None = None,
    log_y: bool = False,
    width: int = 420,
    height: int = 240,
    colors: Mapping[str, str] | None = None,
):
    """Point estimates with interval bars, one group per x position, series side by side.

    Parameters
    ----------
    groups : sequence of str, length G
        The x categories, in order (e.g. injection layers).
    values : {series: (estimate, lo, hi)}, each an ndarray of shape (G,)
    reference : float or None
        Draw a dashed horizontal rule there (e.g. 1 for a ratio, 0.5 for a fraction).
    log_y : bool
    colors : {series: colour}, optional
        Colours for some series, overriding the book's palette (:func:`series_colors`:
        a run, a null or a yardstick has the same colour in every chart).
    """
    alt = _alt()
    import pandas as pd

    frames = []
    for series, (est, lo, hi) in values.items():
        arrs = [np.asarray(a, dtype=float) for a in (est, lo, hi)]
        if any(a.shape != (len(groups),) for a in arrs):
            raise ValueError(f"series {series!r}: estimate, lo and hi must each have shape ({len(groups)},)")
        frames.append(pd.DataFrame({"group": list(groups), "series": series, "est": arrs[0], "lo": arrs[1], "hi": arrs[2]}))
    df = pd.concat(frames, ignore_index=True)
    x = alt.X("group:N", title=x_title, sort=list(groups), axis=alt.Axis(labelAngle=0))
    yscale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    color = _color(list(values), colors)
    offset = alt.XOffset("series:N", sort=list(values))
    base = alt.Chart(df)
    bars = base.mark_rule(strokeWidth=2).encode(x=x, xOffset=offset, y=alt.Y("lo:Q", title=y_title, scale=yscale), y2="hi:Q", color=color)
    pts = base.mark_point(filled=True, size=50).encode(
        x=x, xOffset=offset, y=alt.Y("est:Q", title=y_title, scale=yscale), color=color,
        tooltip=["group:N", "series:N", alt.Tooltip("est:Q", format=".3g"), alt.Tooltip("lo:Q", format=".3g"),
                 alt.Tooltip("hi:Q", format=".3g")])
    layers = [bars, pts]
    if reference is not None:
        layers.append(alt.Chart(pd.DataFrame({"ref": [float(reference)]})).mark_rule(strokeDash=[4, 4], color="gray").encode(y="ref:Q"))
    return alt.layer(*layers, title=title).properties(width=width, height=height)


def step_lines(
    x: np.ndarray,
    values: Mapping[str, np.ndarray],
    x_title: str,
    y_title: str,
    title: str = "",
    reference: float | None = None,
    log_y: bool = False,
    dashed: Sequence[str] = (),
    width: int = 420,
    height: int = 240,
    colors: Mapping[str, str] | None = None,
):
    """One line per series against a shared numeric x (e.g. layers after an injection).

    Parameters
    ----------
    x : ndarray of shape (K,)
    values : {series: ndarray of shape (K,)}
        NaNs are left out (a series may be shorter than ``x``).
    reference : float or None
        A dashed horizontal rule there.
    log_y : bool
    dashed : sequence of str
        Series drawn dashed (e.g. controls).
    colors : {series: colour}, optional
        Colours for some series, overriding the book's palette (:func:`series_colors`:
        a run, a null or a yardstick has the same colour in every chart).
    """
    alt = _alt()
    import pandas as pd

    x = np.asarray(x, dtype=float)
    frames = []
    for series, arr in values.items():
        arr = np.asarray(arr, dtype=float)
        if arr.shape != x.shape:
            raise ValueError(f"series {series!r} has shape {arr.shape}, expected {x.shape} (one value per x)")
        keep = np.isfinite(arr)
        frames.append(pd.DataFrame({"x": x[keep], "y": arr[keep], "series": series,
                                    "style": "dashed" if series in set(dashed) else "solid"}))
    df = pd.concat(frames, ignore_index=True)
    yscale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    line = alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=14)).encode(
        x=alt.X("x:Q", title=x_title), y=alt.Y("y:Q", title=y_title, scale=yscale),
        color=_color(list(values), colors),
        strokeDash=alt.StrokeDash("style:N", legend=None,
                                  scale=alt.Scale(domain=["solid", "dashed"], range=[[1, 0], [5, 3]])),
        tooltip=["series:N", alt.Tooltip("x:Q"), alt.Tooltip("y:Q", format=".4g")])
    layers = [line]
    if reference is not None:
        layers.append(alt.Chart(pd.DataFrame({"ref": [float(reference)]})).mark_rule(strokeDash=[4, 4], color="gray").encode(y="ref:Q"))
    return alt.layer(*layers, title=title).properties(width=width, height=height)


# --------------------------------------------------------------------------- rotations (chapter 05)


def phase_portraits(
    portraits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    x_title: str = "x = a − a₀",
    y_title: str = "y = ∇a − ∇a₀",
    title: str = "",
    columns: int = 2,
    size: int = 200,
):
    """Small multiples of phase portraits, each curve coloured by depth.

    Each panel draws the segments from point ``l`` to ``l + 1`` (colour: site ``l``) and the
    points, with the start marked (black diamond). Panels keep their own scales.

    Parameters
    ----------
    portraits : {panel title: (x, y)} with x, y ndarrays of shape (n_sites,)
        E.g. from :func:`tdcourse.rotations.phase_portrait`. Panels appear in this order.
    columns : int
        Panels per row (2 fit a 700-pixel page column).
    size : int
        Width and height of a panel in pixels.
    """
    alt = _alt()
    import pandas as pd

    frames = []
    for k, (name, (x, y)) in enumerate(portraits.items()):
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        if x.ndim != 1 or x.shape != y.shape or x.size < 2:
            raise ValueError(f"panel {name!r}: x and y must be 1-D of the same length ≥ 2, got {x.shape} and {y.shape}")
        frames.append(pd.DataFrame({"panel": name, "order": k, "depth": np.arange(x.size - 1),
                                    "x": x[:-1], "y": y[:-1], "x2": x[1:], "y2": y[1:]}))
    if not frames:
        raise ValueError("portraits is empty")
    df = pd.concat(frames, ignore_index=True).round(5)
    color = alt.Color("depth:Q", title="site", scale=alt.Scale(scheme="viridis"))
    seg = alt.Chart().mark_rule(strokeWidth=1.6).encode(
        x=alt.X("x:Q", title=x_title, scale=alt.Scale(zero=False)),
        y=alt.Y("y:Q", title=y_title, scale=alt.Scale(zero=False)),
        x2="x2:Q", y2="y2:Q", color=color,
        tooltip=["panel:N", "depth:Q", alt.Tooltip("x:Q", format=".3g"), alt.Tooltip("y:Q", format=".3g")],
    )
    pts = alt.Chart().mark_circle(size=14).encode(x="x:Q", y="y:Q", color=color)
    start = alt.Chart().mark_point(shape="diamond", size=60, color="black", filled=True).encode(
        x="x:Q", y="y:Q").transform_filter("datum.depth == 0")
    return (
        alt.layer(seg, pts, start, data=df)
        .properties(width=size, height=size)
        .facet(facet=alt.Facet("panel:N", title=None, sort=alt.SortField("order")), columns=columns, title=title)
        .resolve_scale(x="independent", y="independent")
    )


def paired_scatter(
    pairs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    x_title: str,
    y_title: str,
    title: str = "",
    diagonal: bool = True,
    width: int = 320,
    height: int = 320,
    max_points: int = 4000,
    seed: int = 0,
    colors: Mapping[str, str] | None = None,
):
    """Scatter of paired values (e.g. a unit's real statistic against its null), one colour per series.

    Parameters
    ----------
    pairs : {series: (x, y)} with x, y ndarrays of shape (n_points,)
    diagonal : bool
        Draw the line y = x over the range of all the data.
    max_points : int
        Most points drawn, over all series. Where there are more (4,096 units × 2 models at
        Llama 3.1 8B's width), each series is drawn on a seeded random subset of an equal
        share, and the subtitle states how many of how many points are shown; the page
        stays small and offline (Altair's 5,000-row limit is never reached).
    seed : int
        Seed of that subset.
    colors : {series: colour}, optional
        Colours for some series, overriding the book's palette (:func:`series_colors`:
        a run, a null or a yardstick has the same colour in every chart).

    Returns
    -------
    alt.LayerChart
    """
    alt = _alt()
    import pandas as pd

    if int(max_points) < len(pairs):
        raise ValueError(f"max_points must allow at least one point per series, got {max_points}")
    frames, shown = [], []
    per = int(max_points) // max(1, len(pairs))
    lo, hi = np.inf, -np.inf
    for name, (x, y) in pairs.items():
        x = np.asarray(x, dtype=float).ravel()
        y = np.asarray(y, dtype=float).ravel()
        if x.shape != y.shape:
            raise ValueError(f"series {name!r}: x and y must have the same length, got {x.size} and {y.size}")
        if x.size:
            lo = min(lo, np.nanmin(x), np.nanmin(y))
            hi = max(hi, np.nanmax(x), np.nanmax(y))
        keep = sample_rows(x.size, per, seed)
        if keep.size < x.size:
            shown.append(f"{name}: {keep.size:,} of {x.size:,}")
        frames.append(pd.DataFrame({"series": name, "x": x[keep], "y": y[keep], "i": keep}))
    df = pd.concat(frames, ignore_index=True).round(5)
    if shown:
        # one line per series: a long model label must not widen the chart
        title = alt.TitleParams(title or "", subtitle=["a random subset is drawn:"] + [f"{x} points" for x in shown])
    pts = alt.Chart(df).mark_circle(size=16, opacity=0.6).encode(
        x=alt.X("x:Q", title=x_title, scale=alt.Scale(zero=False)),
        y=alt.Y("y:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=_color(list(pairs), colors),
        tooltip=["series:N", alt.Tooltip("i:Q", title="index"), alt.Tooltip("x:Q", format=".3g"),
                 alt.Tooltip("y:Q", format=".3g")],
    )
    layers = [pts]
    if diagonal and np.isfinite([lo, hi]).all():
        line = pd.DataFrame({"x": [float(lo), float(hi)], "y": [float(lo), float(hi)]})
        layers.insert(0, alt.Chart(line).mark_line(color="gray", strokeDash=[4, 4]).encode(x="x:Q", y="y:Q"))
    return alt.layer(*layers, title=title).properties(width=width, height=height)


def xy_lines(
    values: Mapping[str, tuple[np.ndarray, np.ndarray]],
    x_title: str,
    y_title: str,
    title: str = "",
    width: int = 420,
    height: int = 260,
    colors: Mapping[str, str] | None = None,
):
    """One line with points per series, against any numeric x (:func:`curves` is for site depth).

    Parameters
    ----------
    values : {series: (x, y)} with x, y ndarrays of shape (n_points,)
    colors : {series: colour}, optional
        Colours for some series, overriding the book's palette (:func:`series_colors`:
        a run, a null or a yardstick has the same colour in every chart).
    """
    alt = _alt()
    import pandas as pd

    frames = []
    for name, (x, y) in values.items():
        x = np.asarray(x, dtype=float).ravel()
        y = np.asarray(y, dtype=float).ravel()
        if x.shape != y.shape:
            raise ValueError(f"series {name!r}: x and y must have the same length, got {x.size} and {y.size}")
        frames.append(pd.DataFrame({"series": name, "x": x, "y": y}))
    df = pd.concat(frames, ignore_index=True)
    return (
        alt.Chart(df, title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("x:Q", title=x_title),
            y=alt.Y("y:Q", title=y_title),
            color=_color(list(values), colors),
            tooltip=["series:N", alt.Tooltip("x:Q", format=".4g"), alt.Tooltip("y:Q", format=".4g")],
        )
        .properties(width=width, height=height)
    )


# --------------------------------------------------------------------------- low-dimensional paths (chapter 06)


def depth_paths(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    x_title: str = "PC1",
    y_title: str = "PC2",
    title: str = "",
    size: int = 260,
    columns: int = 2,
):
    """Trajectories over depth in a 2-D plane: a few samples (thin grey lines) and their mean
    (a line with points coloured by site, the first site marked with a black diamond).

    Parameters
    ----------
    panels : {panel title: (paths, mean)}
        ``paths`` : ndarray of shape (n_show, n_sites, 2), the samples drawn (keep
        ``n_show * n_sites`` ≲ 2,000 per panel); ``mean`` : ndarray of shape (n_sites, 2).
        Panels appear in this order, each with its own axes.
    size : int
        Width and height of a panel in pixels.
    columns : int
        Panels per row.
    """
    alt = _alt()
    import pandas as pd

    frames = []
    for k, (name, (paths, mean)) in enumerate(panels.items()):
        paths = np.asarray(paths, dtype=float)
        mean = np.asarray(mean, dtype=float)
        if mean.ndim != 2 or mean.shape[1] != 2:
            raise ValueError(f"panel {name!r}: mean must have shape (n_sites, 2), got {mean.shape}")
        if paths.ndim != 3 or paths.shape[1:] != mean.shape:
            raise ValueError(f"panel {name!r}: paths must have shape (n_show, {mean.shape[0]}, 2), got {paths.shape}")
        m, s, _ = paths.shape
        # short column names and 4 significant digits: the page carries every row
        frames.append(pd.DataFrame({"panel": k, "kind": "s", "sample": np.repeat(np.arange(m), s),
                                    "depth": np.tile(np.arange(s), m), "x": paths[..., 0].ravel(),
                                    "y": paths[..., 1].ravel()}))
        frames.append(pd.DataFrame({"panel": k, "kind": "m", "sample": -1, "depth": np.arange(s),
                                    "x": mean[:, 0], "y": mean[:, 1]}))
    if not frames:
        raise ValueError("panels is empty")
    df = pd.concat(frames, ignore_index=True)
    for col in ("x", "y"):
        df[col] = [float(f"{v:.4g}") for v in df[col]]
    names = list(panels)
    label = "[" + ", ".join(repr(str(n)) for n in names) + "][datum.value]"
    x = alt.X("x:Q", title=x_title, scale=alt.Scale(zero=False))
    y = alt.Y("y:Q", title=y_title, scale=alt.Scale(zero=False))
    samples = alt.Chart().mark_line(color="#bbbbbb", strokeWidth=0.7, opacity=0.6).encode(
        x=x, y=y, detail="sample:N", order="depth:Q").transform_filter("datum.kind == 's'")
    mean_line = alt.Chart().mark_line(color="black", strokeWidth=1.5).encode(
        x=x, y=y, order="depth:Q").transform_filter("datum.kind == 'm'")
    mean_pts = alt.Chart().mark_circle(size=36, opacity=1).encode(
        x=x, y=y, color=alt.Color("depth:Q", title="site", scale=alt.Scale(scheme="viridis")),
        tooltip=[alt.Tooltip("depth:Q", title="site"), alt.Tooltip("x:Q", format=".3g"), alt.Tooltip("y:Q", format=".3g")],
    ).transform_filter("datum.kind == 'm'")
    start = alt.Chart().mark_point(shape="diamond", size=90, color="black", filled=True).encode(
        x=x, y=y).transform_filter("datum.kind == 'm' && datum.depth == 0")
    return (
        alt.layer(samples, mean_line, mean_pts, start, data=df)
        .properties(width=size, height=size)
        .facet(facet=alt.Facet("panel:O", title=None, header=alt.Header(labelExpr=label, labelFontSize=12)),
               columns=columns, title=title)
        .resolve_scale(x="independent", y="independent")
    )


# --------------------------------------------------------------------------- steps along depth (chapters 03, 04)


def band_lines(
    x: np.ndarray,
    values: Mapping[str, np.ndarray],
    x_title: str,
    y_title: str,
    title: str = "",
    bands: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    reference: float | None = None,
    log_y: bool = False,
    width: int = 560,
    height: int = 240,
    colors: Mapping[str, str] | None = None,
):
    """Lines against a numeric x with optional shaded bands (:func:`curves` draws against site
    depth; this draws against anything else, e.g. the steps between consecutive sites).

    Parameters
    ----------
    x : ndarray of shape (K,)
    values : {series: ndarray of shape (K,)}
        NaNs are left out (e.g. a series defined on every other step only).
    bands : {series: (lo, hi)} with lo, hi of shape (K,), optional
        Drawn under the line of the same series, same colour.
    reference : float or None
        A dashed horizontal rule there (e.g. a null level).
    log_y : bool
    colors : {series: colour}, optional
        Colours for some series, overriding the book's palette (:func:`series_colors`:
        a run, a null or a yardstick has the same colour in every chart).
    """
    alt = _alt()
    import pandas as pd

    x = np.asarray(x, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {x.shape}")

    def frame(vals: Mapping[str, np.ndarray], col: str):
        out = []
        for series, arr in vals.items():
            arr = np.asarray(arr, dtype=float)
            if arr.shape != x.shape:
                raise ValueError(f"series {series!r} has shape {arr.shape}, expected {x.shape} (one value per x)")
            out.append(pd.DataFrame({"x": x, "series": series, col: arr}))
        return pd.concat(out, ignore_index=True)

    df = frame(values, "y").dropna().round(6)
    yscale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    color = _color(list(values) + [k for k in (bands or {}) if k not in values], colors)
    xenc = alt.X("x:Q", title=x_title)
    layers = []
    if bands:
        lo = frame({k: v[0] for k, v in bands.items()}, "lo")
        lo["hi"] = frame({k: v[1] for k, v in bands.items()}, "hi")["hi"].to_numpy()
        lo = lo.dropna().round(6)
        layers.append(alt.Chart(lo).mark_area(opacity=0.2).encode(x=xenc, y=alt.Y("lo:Q", scale=yscale), y2="hi:Q",
                                                                  color=color))
    layers.append(alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        x=xenc, y=alt.Y("y:Q", title=y_title, scale=yscale), color=color,
        tooltip=["series:N", alt.Tooltip("x:Q"), alt.Tooltip("y:Q", format=".4g", title=y_title)]))
    if reference is not None:
        layers.append(alt.Chart(pd.DataFrame({"ref": [float(reference)]})).mark_rule(strokeDash=[4, 4], color="gray")
                      .encode(y="ref:Q"))
    return alt.layer(*layers, title=title).properties(width=width, height=height)


# --------------------------------------------------------------------------- eigenvalues (chapter 08)


def eigenvalue_cloud(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str = "",
    size: int = 260,
    columns: int = 2,
    max_points: int = 1500,
    quantile: float = 0.99,
    seed: int = 0,
):
    """Eigenvalues in the complex plane with the unit circle, one panel per model, coloured by layer.

    Parameters
    ----------
    panels : {panel title: (eigvals, layers)}
        ``eigvals`` : complex ndarray of shape (n_layers_shown, n); ``layers`` : ndarray of shape
        (n_layers_shown,), the layer of each row (the colour).
    size : int
        Width and height of a panel in pixels (the axes have equal scales: the circle is round).
    columns : int
        Panels per row.
    max_points : int
        Most points drawn per panel (a seeded random subset beyond it; the subtitle says how many).
    quantile : float
        Each panel's square frame holds the unit circle and this share of its eigenvalues
        (around 1, the skip's eigenvalue); the rest are left out and counted in the subtitle.
    seed : int
    """
    alt = _alt()
    import pandas as pd

    theta = np.linspace(0, 2 * np.pi, 121)
    circle = pd.DataFrame({"re": np.cos(theta), "im": np.sin(theta), "o": np.arange(theta.size)})
    charts = []
    for name, (ev, layers) in panels.items():
        ev = np.asarray(ev, dtype=complex)
        layers = np.asarray(layers)
        if ev.ndim != 2 or layers.shape != (ev.shape[0],):
            raise ValueError(f"panel {name!r}: eigvals must have shape (k, n) and layers (k,), got {ev.shape}, {layers.shape}")
        lay = np.repeat(layers, ev.shape[1])
        ev = ev.ravel()
        ok = np.isfinite(ev)
        ev, lay = ev[ok], lay[ok]
        if not ev.size:
            raise ValueError(f"panel {name!r} has no finite eigenvalues")
        half = max(1.05, float(np.quantile(np.abs(ev - 1), quantile)) * 1.05)
        lo = (min(-1.05, 1 - half), 1 + half)  # the whole unit circle, and the cloud around 1
        span = (lo[1] - lo[0]) / 2
        hi = (-span, span)                     # a square frame: the circle stays round
        inside = (ev.real >= lo[0]) & (ev.real <= lo[1]) & (np.abs(ev.imag) <= span)
        keep = np.flatnonzero(inside)[sample_rows(int(inside.sum()), max_points, seed)]
        df = pd.DataFrame({"re": ev.real[keep].round(4), "im": ev.imag[keep].round(4), "layer": lay[keep]})
        sub = [f"{keep.size:,} of {ev.size:,} eigenvalues drawn"] + (
            [f"{int((~inside).sum())} outside the frame"] if (~inside).any() else [])
        x = alt.X("re:Q", title="real part", scale=alt.Scale(domain=list(lo), nice=False))
        y = alt.Y("im:Q", title="imaginary part", scale=alt.Scale(domain=list(hi), nice=False))
        ring = alt.Chart(circle).mark_line(color="gray", strokeDash=[4, 3], clip=True).encode(x=x, y=y, order="o:Q")
        pts = alt.Chart(df).mark_circle(size=10, opacity=0.6, clip=True).encode(
            x=x, y=y, color=alt.Color("layer:Q", scale=alt.Scale(scheme="viridis"), title="layer"),
            tooltip=["layer:Q", alt.Tooltip("re:Q", format=".3g"), alt.Tooltip("im:Q", format=".3g")])
        charts.append(alt.layer(ring, pts, title=alt.TitleParams(name, subtitle=sub))
                      .properties(width=size, height=size))
    if not charts:
        raise ValueError("panels is empty")
    return alt.concat(*charts, columns=int(columns), title=title).resolve_scale(color="shared")
