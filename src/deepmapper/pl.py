"""Plots in the scanpy style: the figures a user looks at first.

- :func:`rank_features`: the top features with their selection frequency;
- :func:`stability`: the rank of each top feature in every pass;
- :func:`attribution_map`: the median importance as a pseudo-image.

Every function reads ``adata.uns[key]`` as written by
:func:`deepmapper.tl.rank_features` or :func:`deepmapper.read_results`, draws
with matplotlib, and follows scanpy's conventions: ``ax=`` draws into given
axes, ``save=`` writes the figure (a path, or ``True`` for
``deepmapper_<plot>.png``), ``show=False`` returns the axes (``show=None`` or
``True`` shows the figure and returns None). scanpy's own
``sc.pl.rank_genes_groups_dotplot(adata, key="deepmapper")`` (and the other
``rank_genes_groups_*`` plots) show the per-group rankings.

The plot of feature pairs comes with the interaction screen (it will read
``adata.uns[key]["pairs"]``) and is added here with it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["rank_features", "stability", "attribution_map"]


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
    from .accumulate import ranks

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
        ``seed + t``), the image as that pass's model saw it. ``"rank"``:
        features placed by rank, row by row from the top left, so the image
        shows how fast importance falls off.
    annotate
        Label the pixels of this many top features with their names (in an
        arrangement; ``"rank"`` puts them in the first pixels and is not labelled).
    cmap
        Matplotlib colour map.
    ax, show, save
        As in :func:`rank_features`.

    Returns
    -------
    matplotlib.axes.Axes or None
        The axes when ``show=False``.
    """
    from .transform import arrangement as make_arrangement
    from .transform import square_side

    uns = _result(adata, key)
    table = uns["ranking"]
    features = [str(f) for f in uns["features"]]
    n = len(features)
    side = square_side(n)
    if isinstance(arrangement, str) and arrangement == "rank":
        perm = np.array([features.index(str(f)) for f in table.sort_values("rank", kind="stable").index])
        title = "by rank from the top left"
        annotate = 0
    else:
        if isinstance(arrangement, bool) or not isinstance(arrangement, (int, np.integer)) or arrangement < 0:
            raise InputError(f"arrangement must be a pass index >= 0 or 'rank' (got {arrangement!r})",
                             field="arrangement", fix="pass e.g. arrangement=0 for the first pass, or 'rank'.")
        perm = make_arrangement(n, int(uns["params"]["seed"]) + int(arrangement))
        title = f"arrangement of pass {int(arrangement)}"
    median = table["median_importance"].reindex(features).to_numpy(np.float64)
    image = np.full(side * side, np.nan)
    image[:n] = median[perm]
    image = image.reshape(side, side)
    fig, ax = _axes(ax, (5.5, 5.0))
    shown = ax.imshow(np.ma.masked_invalid(image), cmap=cmap, interpolation="nearest")
    fig.colorbar(shown, ax=ax, label="median importance", shrink=0.8)
    pixel_of = np.empty(n, dtype=np.int64)
    pixel_of[perm] = np.arange(n)
    for name in table.sort_values("rank", kind="stable").index[:max(int(annotate), 0)]:
        p = pixel_of[features.index(str(name))]
        ax.plot(p % side, p // side, marker="s", ms=6, mfc="none", mec="tab:cyan", mew=1.0)
        ax.annotate(str(name), (p % side, p // side), xytext=(4, 4), textcoords="offset points", fontsize=7,
                    color="tab:cyan")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"DeepMapper attribution map ({title}, {side}x{side})")
    return _finish(fig, ax, show, save, "attribution_map")


# -- helpers -----------------------------------------------------------------------------

def _result(adata, key: str) -> dict:
    from .ranking import get

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

    from .atomic import atomic_path

    if save:
        path = Path(f"deepmapper_{name}.png") if save is True else Path(save)
        fmt = path.suffix.lstrip(".") or "png"
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight", dpi=150)
    if show is None or show:
        plt.show()
        return None
    return ax
