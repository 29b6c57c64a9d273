"""Plots in the scanpy style: the figures a user looks at first.

- :func:`rank_features`: the top features with their selection frequency;
- :func:`stability`: the rank of each top feature in every pass;
- :func:`attribution_map`: the median importance as a pseudo-image;
- :func:`pairs`: per top gene pair, gene a against gene b coloured by class.

Every function reads ``adata.uns[key]`` as written by
:func:`deepmapper.tl.rank_features` or :func:`deepmapper.read_results`, draws
with matplotlib, and follows scanpy's conventions: ``ax=`` draws into given
axes, ``save=`` writes the figure (a path, or ``True`` for
``deepmapper_<plot>.png``), ``show=False`` returns the axes (``show=None`` or
``True`` shows the figure and returns None). scanpy's own
``sc.pl.rank_genes_groups_dotplot(adata, key="deepmapper")`` (and the other
``rank_genes_groups_*`` plots) show the per-group rankings.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deepmapper.errors import InputError

__all__ = ["rank_features", "stability", "attribution_map", "pairs"]


def rank_features(adata, key: str = "deepmapper", *, n_features: int = 20, ax=None, show: bool | None = None,
                  save: str | Path | bool | None = None):
    """Bar chart of the top features' selection frequency, coloured by median importance.

    Parameters
    ----------
    adata
        AnnData holding a DeepMapper result.
    key
        Key of the result in ``adata.uns`` (``key_added`` of :func:`deepmapper.tl.rank_features`).
    n_features
        Number of top features (by final rank) to show.
    ax
        Matplotlib axes to draw into; a new figure when None.
    show
        Show the figure (default); ``False`` returns the axes.
    save
        Path of an image file to write, or ``True`` for ``deepmapper_rank_features.png``.

    Returns
    -------
    matplotlib.axes.Axes or None
        The axes when ``show=False``.
    """
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    uns = _result(adata, key)
    top = uns["ranking"].sort_values("rank", kind="stable").head(_positive(n_features, "n_features"))
    fig, ax = _axes(ax, (5.5, 0.28 * len(top) + 1.2))
    norm = colors.Normalize(vmin=0.0, vmax=float(top["median_importance"].max()) or 1.0)
    cmap = plt.get_cmap("viridis")
    y = np.arange(len(top))
    ax.barh(y, top["selection_frequency"], color=cmap(norm(top["median_importance"].to_numpy())))
    ax.set_yticks(y, [str(n) for n in top.index])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.axvline(0.5, color="0.6", lw=0.8, ls="--")
    n_passes = len(uns["summary"].get("used_passes", []))
    ax.set_xlabel(f"selection frequency (top {int(uns['params']['top_k'])} of a pass; {n_passes} passes)")
    ax.set_title("DeepMapper: top features")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="median importance")
    return _finish(fig, ax, show, save, "rank_features")


def stability(adata, key: str = "deepmapper", *, n_features: int = 20, ax=None, show: bool | None = None,
              save: str | Path | bool | None = None):
    """The rank of each top feature in every pass (one dot per pass, the median as a bar).

    A feature whose dots stay near the top in every arrangement is a stable
    finding; one that is near the top in a few passes only is not. The dashed
    line is the per-pass top-k that selection frequency counts.

    Parameters
    ----------
    adata
        AnnData holding a DeepMapper result with per-pass importances
        (``uns[key]["pass_importance"]``; :func:`deepmapper.read_results` reads
        them from ``passes/``).
    key
        Key of the result in ``adata.uns``.
    n_features
        Number of top features (by final rank) to show.
    ax, show, save
        As in :func:`rank_features`.

    Returns
    -------
    matplotlib.axes.Axes or None
        The axes when ``show=False``.
    """
    from deepmapper.engine.accumulate import ranks

    uns = _result(adata, key)
    if "pass_importance" not in uns:
        raise InputError(f"adata.uns['{key}'] holds no per-pass importances", field="pass_importance",
                         fix="read a results directory that has its passes/ folder, or run "
                             "deepmapper.tl.rank_features.")
    per_pass = ranks(np.asarray(uns["pass_importance"], dtype=np.float64))   # (passes, features), 1 = best
    features = [str(f) for f in uns["features"]]
    top = uns["ranking"].sort_values("rank", kind="stable").head(_positive(n_features, "n_features"))
    cols = [features.index(str(f)) for f in top.index]
    fig, ax = _axes(ax, (max(5.0, 0.32 * len(top) + 1.5), 4.0))
    rng = np.random.default_rng(0)
    for x, j in enumerate(cols):
        r = per_pass[:, j]
        ax.scatter(x + rng.uniform(-0.18, 0.18, r.size), r, s=14, color="tab:blue", alpha=0.7, lw=0)
        ax.hlines(np.median(r), x - 0.3, x + 0.3, color="black", lw=1.5)
    ax.axhline(int(uns["params"]["top_k"]), color="0.5", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.invert_yaxis()
    ax.set_xticks(np.arange(len(cols)), [str(f) for f in top.index], rotation=90)
    ax.set_ylabel("rank in the pass (log scale)")
    ax.set_title(f"DeepMapper: stability across {per_pass.shape[0]} passes")
    return _finish(fig, ax, show, save, "stability")


def attribution_map(adata, key: str = "deepmapper", *, arrangement: int | str = 0, annotate: int = 8,
                    cmap: str = "magma", ax=None, show: bool | None = None,
                    save: str | Path | bool | None = None):
    """The median importance of every feature drawn as the square pseudo-image the model sees.

    Parameters
    ----------
    adata
        AnnData holding a DeepMapper result.
    key
        Key of the result in ``adata.uns``.
    arrangement
        An integer ``t`` (default 0): the arrangement of pass ``t`` (seed
        ``seed + t``), the image as that pass's model saw it: when the pair
        screen placed pairs, the pair arrangement training used (each placed
        pair in two adjacent pixels of a row, outlined;
        ``uns[key]["placed_pairs"]``), else the plain seeded arrangement.
        ``"rank"``: features placed by rank, row by row from the top left, so
        the image shows how fast importance falls off.
    annotate
        Label the pixels of this many top features with their names (in an
        arrangement; ``"rank"`` puts them in the first pixels and is not labelled).
        Placed pairs are outlined in an arrangement whatever ``annotate`` is.
    cmap
        Matplotlib colour map.
    ax, show, save
        As in :func:`rank_features`.

    Returns
    -------
    matplotlib.axes.Axes or None
        The axes when ``show=False``.
    """
    from deepmapper.results.ranking import pass_arrangement
    from deepmapper.model.transform import square_side

    uns = _result(adata, key)
    table = uns["ranking"]
    features = [str(f) for f in uns["features"]]
    n = len(features)
    side = square_side(n)
    placed = np.zeros((0, 2), np.int64)
    if isinstance(arrangement, str) and arrangement == "rank":
        perm = np.array([features.index(str(f)) for f in table.sort_values("rank", kind="stable").index])
        title = "by rank from the top left"
        annotate = 0
    else:
        if isinstance(arrangement, bool) or not isinstance(arrangement, (int, np.integer)) or arrangement < 0:
            raise InputError(f"arrangement must be a pass index >= 0 or 'rank' (got {arrangement!r})",
                             field="arrangement", fix="pass e.g. arrangement=0 for the first pass, or 'rank'.")
        ranked = [int(t) for t in uns.get("pass_indices", [])]
        if ranked and int(arrangement) not in ranked:      # a pass that never ran, or was not ranked from
            raise InputError(f"pass {int(arrangement)} is not one of the passes ranked from "
                             f"({', '.join(map(str, ranked[:10]))}{' ...' if len(ranked) > 10 else ''})",
                             field="arrangement", fix=f"pass one of uns['{key}']['pass_indices'], or 'rank'.")
        perm, placed = pass_arrangement(uns, int(arrangement), key=key)
        title = f"arrangement of pass {int(arrangement)}" + (f", {len(placed)} pairs" if len(placed) else "")
    median = table["median_importance"].reindex(features).to_numpy(np.float64)
    image = np.full(side * side, np.nan)
    image[:n] = median[perm]
    image = image.reshape(side, side)
    fig, ax = _axes(ax, (5.5, 5.0))
    shown = ax.imshow(np.ma.masked_invalid(image), cmap=cmap, interpolation="nearest")
    fig.colorbar(shown, ax=ax, label="median importance", shrink=0.8)
    pixel_of = np.empty(n, dtype=np.int64)
    pixel_of[perm] = np.arange(n)
    from matplotlib.patches import Rectangle

    right = set()
    for a, b in placed:                           # each placed pair: one outlined domino of two pixels
        left = min(pixel_of[a], pixel_of[b])
        right.add(int(left) + 1)
        ax.add_patch(Rectangle((left % side - 0.5, left // side - 0.5), 2, 1, fill=False, ec="tab:green",
                               lw=0.9, label="_pair"))
    for name in table.sort_values("rank", kind="stable").index[:max(int(annotate), 0)]:
        p = pixel_of[features.index(str(name))]
        ax.plot(p % side, p // side, marker="s", ms=6, mfc="none", mec="tab:cyan", mew=1.0)
        ax.annotate(str(name), (p % side, p // side), xytext=(4, -10 if int(p) in right else 4),  # no overlap
                    textcoords="offset points", fontsize=7, color="tab:cyan")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"DeepMapper attribution map ({title}, {side}x{side})")
    return _finish(fig, ax, show, save, "attribution_map")


MAX_PAIR_CELLS = 3000   # cells on each scatter (a seeded sample beyond), as the report's pairs section


def pairs(adata, key: str = "deepmapper", *, n_pairs: int = 6, groupby: str | None = None,
          max_cells: int = MAX_PAIR_CELLS, ncols: int = 3, size: float | None = None, show: bool | None = None,
          save: str | Path | bool | None = None, return_fig: bool = False):
    """Per top gene pair, every cell's gene a against gene b, coloured by class.

    The pairs are those the pair screen placed side by side, best first
    (``uns[key]["pairs"]``, ``findings_pairs.tsv``): genes whose correlation
    inside one class differs from the rest, so each alone may not separate
    the classes. A flipped or lost correlation shows as a differently tilted
    cloud; the pair's own class is drawn darker and on top, the others light.
    The values are the analysed ones (``uns[key]["values_from"]``: the matrix
    the analysis read, normalised as it was), as in the report's pairs section.

    Parameters
    ----------
    adata
        AnnData holding a DeepMapper result: from :func:`deepmapper.tl.rank_features`
        (the values are read from the matrix it analysed) or :func:`deepmapper.read_results`
        (``dataset.h5ad``, the values as analysed).
    key
        Key of the result in ``adata.uns``.
    n_pairs
        Number of top pairs to draw (fewer when the run placed fewer).
    groupby
        ``adata.obs`` column to colour by; default the result's ``groupby``.
    max_cells
        At most this many cells per scatter (a seeded sample of the cells beyond, the same in every
        panel).
    ncols
        Panels per row.
    size
        Marker size (points^2); default from the number of cells.
    show, save
        As in :func:`rank_features` (``save=True``: ``deepmapper_pairs.png``).
    return_fig
        Return the figure (not shown) instead of the axes.

    Returns
    -------
    list of matplotlib.axes.Axes, matplotlib.figure.Figure or None
        One axes per pair drawn (best pair first) when ``show=False``; the figure with
        ``return_fig=True``.

    Raises
    ------
    InputError
        The result has no pair table, ``groupby`` is not in ``obs``, or the pairs' genes are not in
        the matrix the values come from. A run that placed no pair is a ``UserWarning`` (one line)
        and None, not an error.
    """
    import matplotlib.pyplot as plt

    uns = _result(adata, key)
    table = _pair_table(uns, key)
    if len(table) == 0:                 # a finding, not an error: one line, no figure (README)
        import warnings

        on = bool(((uns["params"].get("config") or {}).get("interactions", True)))
        warnings.warn("deepmapper.pl.pairs: the run placed no gene pairs, nothing to draw ("
                      + ("the screen found no pair with q below interaction_q; deepmapper.pl.rank_features "
                         "shows the single features)" if on else
                         "interactions were off; rerun with interactions=True, the default)"),
                      UserWarning, stacklevel=2)
        return None
    top = table.head(_positive(n_pairs, "n_pairs"))
    ncols = min(_positive(ncols, "ncols"), len(top))
    groupby = str(groupby if groupby is not None else uns["params"]["groupby"])
    if groupby not in adata.obs.columns:
        raise InputError(f"no obs column '{groupby}' to colour the cells by", field="groupby",
                         fix="pass groupby= an adata.obs column (the result's groups: "
                             f"'{uns['params']['groupby']}').")
    n = int(adata.n_obs)
    rows = np.arange(n) if n <= _positive(max_cells, "max_cells") else \
        np.sort(np.random.default_rng(0).choice(n, int(max_cells), replace=False))
    genes = list(dict.fromkeys(g for a, b in zip(top["feature_a"], top["feature_b"]) for g in (a, b)))
    values = _analysed_values(adata, uns, genes, rows, key)
    labels = np.asarray(adata.obs[groupby].astype(str))[rows]
    colours = _class_colours(adata, groupby, uns, labels)
    ms = float(size) if size is not None else float(np.clip(2000.0 / max(len(rows), 1), 2.0, 20.0))

    nrows = -(-len(top) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 1.6, 3.3 * nrows), squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[len(top):]:
        ax.set_visible(False)
    for ax, r in zip(axes, top.itertuples(index=False)):
        a, b, cls = str(r.feature_a), str(r.feature_b), str(r[2])
        order = [c for c in colours if c != cls] + ([cls] if cls in colours else [])
        for c in order:                            # the pair's class last: on top
            mask = labels == c
            emph = c == cls
            ax.scatter(values[a][mask], values[b][mask], s=ms * (1.4 if emph else 1.0), color=colours[c],
                       alpha=0.85 if emph else 0.35, lw=0, label=c, rasterized=len(rows) > 2000)
        ax.set_xlabel(a)
        ax.set_ylabel(b)
        corr = ""
        if np.isfinite(getattr(r, "corr_in_class", np.nan)) and np.isfinite(getattr(r, "corr_rest", np.nan)):
            corr = f"\nr = {r.corr_in_class:.2f} in {cls}, {r.corr_rest:.2f} in the rest"
        ax.set_title(f"{a} x {b} (class {cls}){corr}", fontsize=9)
    handles = [plt.Line2D([], [], ls="", marker="o", color=colours[c], label=c) for c in colours]
    fig.legend(handles=handles, title=groupby, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               fontsize=8)
    fig.suptitle(f"DeepMapper: top {len(top)} gene pair{'s' if len(top) != 1 else ''}", y=1.0)
    fig.tight_layout()
    drawn = axes[:len(top)]
    if return_fig:
        _finish(fig, drawn, False, save, "pairs")
        return fig
    return _finish(fig, drawn, show, save, "pairs")


# -- helpers -----------------------------------------------------------------------------

def _pair_table(uns: dict, key: str):
    if "pairs" not in uns:
        raise InputError(f"adata.uns['{key}'] holds no pair table", field="pairs",
                         fix="rerun deepmapper.tl.rank_features, or deepmapper.read_results on a run of this "
                             "version of DeepMapper (it writes findings_pairs.tsv).")
    return uns["pairs"]


def _analysed_values(adata, uns: dict, genes: list[str], rows: np.ndarray, key: str) -> dict:
    """gene -> values of ``rows`` as the analysis saw them (``uns[key]['values_from']``)."""
    import scipy.sparse as sp

    from deepmapper.io import TARGET_SUM

    where = dict(uns.get("values_from") or {"matrix": "X", "normalize": False})
    matrix = str(where.get("matrix", "X"))
    if matrix == "raw":
        if adata.raw is None:
            raise InputError("the result was computed on adata.raw but adata.raw is None", field="raw",
                             fix="plot on the AnnData that deepmapper.tl.rank_features analysed.")
        X, names = adata.raw.X, adata.raw.var_names
    elif matrix.startswith("derived:"):
        raise InputError(f"the analysed values ({matrix.split(':', 1)[1]}) were computed from adata and are not "
                         "held in it", field="values_from",
                         fix="run the analysis with 'deepmapper run' and plot deepmapper.read_results(outdir): "
                             "its dataset.h5ad holds the analysed values.")
    elif matrix.startswith("layer:"):
        name = matrix.split(":", 1)[1]
        if name not in adata.layers:
            raise InputError(f"the result was computed on layer '{name}', which adata does not have",
                             field="layer", fix="plot on the AnnData that deepmapper.tl.rank_features analysed.")
        X, names = adata.layers[name], adata.var_names
    else:
        X, names = adata.X, adata.var_names
    index = {str(v): i for i, v in enumerate(names)}
    missing = [g for g in genes if g not in index]
    if missing:
        raise InputError(f"pair gene '{missing[0]}' is not in the {matrix} matrix of adata", field="pairs",
                         fix=f"plot on the AnnData the result adata.uns['{key}'] was computed on.")
    block = X[rows]
    totals = None
    if where.get("normalize"):
        totals = np.asarray(block.sum(axis=1), dtype=np.float64).ravel()
    block = block[:, [index[g] for g in genes]]
    block = np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)
    if totals is not None:                         # normalize_total + log1p, as io.normalize_log1p
        scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
        block = np.log1p(block * scale[:, None])
    return {g: block[:, k] for k, g in enumerate(genes)}


def _class_colours(adata, groupby: str, uns: dict, labels: np.ndarray) -> dict:
    """class -> colour: scanpy's ``adata.uns[f"{groupby}_colors"]`` when it matches the categories,
    else matplotlib's tab10 / tab20 in the result's class order."""
    import matplotlib.pyplot as plt

    present = set(labels.tolist())
    classes = [str(c) for c in uns.get("summary", {}).get("classes", [])]
    col = adata.obs[groupby]
    cats = [str(c) for c in col.cat.categories] if hasattr(col, "cat") else []
    stored = adata.uns.get(f"{groupby}_colors")
    if cats and stored is not None and len(stored) == len(cats):
        colours = dict(zip(cats, [str(c) for c in stored]))
        order = [c for c in classes if c in colours] + [c for c in cats if c not in classes]
        return {c: colours[c] for c in order if c in present}
    order = [c for c in classes if c in present] + sorted(present - set(classes))
    cmap = plt.get_cmap("tab10" if len(order) <= 10 else "tab20")
    return {c: cmap(k % cmap.N) for k, c in enumerate(order)}


def _result(adata, key: str) -> dict:
    from deepmapper.results.ranking import get

    return get(adata, key)


def _positive(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"{name} must be a positive integer (got {n!r})", field=name, fix=f"pass e.g. {name}=20.")
    return int(n)


def _axes(ax, size):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=size)
        return fig, ax
    return ax.figure, ax


def _finish(fig, ax, show, save, name: str):
    import matplotlib.pyplot as plt

    from deepmapper._utils.atomic import atomic_path

    if save:
        path = Path(f"deepmapper_{name}.png") if save is True else Path(save)
        fmt = path.suffix.lstrip(".") or "png"
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight", dpi=150)
    if show is None or show:
        plt.show()
        return None
    return ax
