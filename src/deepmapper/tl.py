"""Tools in the scanpy style: ``deepmapper.tl.rank_features``.

The analysis of ``deepmapper run`` (the same ``runner.analyse``), in memory, on an
AnnData a notebook already holds; the result goes back into that AnnData in the
layout of ``scanpy.tl.rank_genes_groups`` (see :mod:`deepmapper.results.ranking`).
"""
from __future__ import annotations

import difflib

from deepmapper.errors import ConfigError, InputError

__all__ = ["rank_features"]

# Config parameters that rank_features sets through its own arguments.
_OWN_SETTINGS = {
    "label_key": "pass the label column as groupby",
    "matrix": "choose the matrix with layer= or use_raw=",
    "cluster": "cluster first (e.g. sc.tl.leiden) and pass groupby='leiden'",
    "sample_key": "pass the sample column as sample_key=",
}


def rank_features(adata, groupby: str, *, groups="all", reference: str = "rest", n_genes: int | None = None,
                  layer: str | None = None, use_raw: bool | None = None, passes: int = 10,
                  key_added: str = "deepmapper", copy: bool = False, sample_key: str | None = None, **settings):
    """Rank every feature that separates the groups of ``adata.obs[groupby]``.

    Each feature becomes one pixel of a square pseudo-image under a seeded
    random arrangement; a small image model learns the groups; attributions
    (integrated gradients by default) are projected back to features and
    accumulated over ``passes`` arrangements into one ranking with stability
    statistics. This is the analysis of ``deepmapper run`` (same code, same
    result for the same seed and thread count), run in memory on the GPU when
    one is visible, else on the CPU.

    Parameters
    ----------
    adata
        Annotated data matrix (cells x features). Counts are normalised
        (``normalize_total`` + ``log1p``) only when the chosen matrix looks like
        counts (setting ``normalize``).
    groupby
        Column of ``adata.obs`` holding the groups (at least two, each with at
        least ``min_class_size`` cells). A cell with an empty or NaN label is an
        error naming the fix; with the setting ``missing_labels`` (e.g.
        ``missing_labels="NA,None"``), cells whose label is empty or one of those
        values are left out with a warning.
    groups
        ``"all"``, or the groups to report (as scanpy). With ``reference="rest"``
        the model still learns every group, and the rest is all other cells.
    reference
        ``"rest"`` (each group against all other cells), or a group: only the
        cells of ``groups`` and of the reference are analysed, and each group's
        direction, score and log fold change are against the reference (its
        evidence is the model's towards that group); the reference gets no
        table (as scanpy).
    n_genes
        Features stored per group; default every analysed feature, so every
        ``sc.pl.rank_genes_groups_*`` plot (``values_to_plot`` included) and a
        pre-ranked list (GSEA) work.
    layer
        Analyse ``adata.layers[layer]`` instead of ``X``.
    use_raw
        Analyse ``adata.raw``. Default: ``adata.raw`` when present and no
        ``layer`` is given, else ``adata.X`` (as scanpy).
    passes
        Number of accepted passes (arrangements) to accumulate.
    key_added
        Key in ``adata.uns`` and prefix of the ``adata.var`` columns.
    sample_key
        Column of ``adata.obs`` naming each cell's sample or donor (e.g. ``"donor"``), one label per
        sample (a condition), or the donors of a paired design, every donor under several labels
        (before / after treatment, or cell types within donors: the samples are then donor x label,
        the labels are compared within donors and donors are held out whole; a mix of the two is
        refused). With it the held-out set and
        validation folds are whole samples, the ranking is median importance x ``-log10`` of the
        sample-level p value (judged without a sample where the effect collapses without it; that p alone when no pass
        passes the accuracy gate on held-out samples, with a trust warning, or when a pass trained
        on fewer than 3 samples of a label, as with 3 or 4 per label;
        ``uns[key_added]["summary"]["sample_level"]`` says which and why), permutations move labels between samples, and the ranking gains
        ``model_rank``, ``sample_p``, ``sample_p_left_out``, ``sample_q`` and ``sample_reproducibility``
        (see docs/output.md).
    copy
        Return a copy of ``adata`` holding the result instead of writing into it.
    **settings
        Any flat run parameter of ``deepmapper run`` (``deepmapper run --help``,
        :mod:`deepmapper.config`), e.g. ``epochs=20``, ``seed=1``,
        ``backbone="cnn_small"``, ``attribution="saliency"``, ``threads=1``,
        ``device="cpu"``.

    Returns
    -------
    anndata.AnnData or None
        ``adata`` copied with the result if ``copy``, else None. Sets

        ``adata.uns[key_added]``
            ``params``, and structured arrays ``names``, ``scores``,
            ``logfoldchanges``, ``pvals``, ``pvals_adj``, ``mean_rank`` with one
            field per group (as ``scanpy.tl.rank_genes_groups``), highest score
            first: ``scores`` > 0 are up in the group (and evidence for it),
            < 0 down, 0 not read as evidence for it (with ``sample_key``: the
            direction x ``ranking``'s ``median_importance`` x ``-log10`` of the
            group's sample-level p, ``pvals``); ``trust`` (whether the
            model is to be believed, against logistic regression); ``ranking``
            (one row per feature: ``rank``, ``selection_frequency``,
            ``median_importance``, ``mean_rank``, ``pfer_bound``), ``summary``,
            ``evaluation``, ``features``, ``pass_importance``, ``pass_indices``;
            ``pairs`` (the gene pairs the screen placed side by side, best first,
            with the screen's ``score``, ``q_value``, ``corr_in_class``,
            ``corr_rest``; empty when none), ``placed_pairs`` (their feature
            indices, in the order the arrangements place them) and
            ``values_from`` (where the analysed values are, for
            :func:`deepmapper.pl.pairs`); see :mod:`deepmapper.results.ranking`.
            DeepMapper is not a statistical test: ``pvals`` and ``pvals_adj``
            are NaN unless a ``sample_key`` gives the sample-level p and q.
        ``adata.var[f"{key_added}_rank"]``, ``_selection_frequency``, ``_median_importance``, ``_mean_rank``, ``_pfer_bound``
            per feature (NaN for features not analysed).

    Raises
    ------
    InputError
        ``groupby``, ``layer`` or ``raw`` is missing, or the data cannot be
        analysed (one group, too few cells, NaN values, ...).
    ConfigError
        An unknown or invalid setting.

    Examples
    --------
    >>> import scanpy as sc, deepmapper as dm
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> dm.tl.rank_features(adata, "bulk_labels", passes=4, epochs=20)
    >>> sc.get.rank_genes_groups_df(adata, group=None, key="deepmapper").head()
    >>> sc.pl.rank_genes_groups_dotplot(adata, key="deepmapper", n_genes=3)
    """
    from deepmapper import io
    from deepmapper._utils.progress import notebook_logging
    from deepmapper.pipeline import runner
    from deepmapper.results import ranking

    notebook_logging()   # in a notebook with no logging set up, the run's INFO lines are shown

    where = "deepmapper.tl.rank_features"
    cfg = _config(passes, settings, where)
    io.check_in_memory(adata, where=where)
    matrix = _matrix(adata, groupby, layer, use_raw, where)
    groups, reference, keep = _groups(adata, groupby, groups, reference, n_genes, where)
    dataset = io.from_anndata(adata, label_key=groupby, matrix=matrix,
                              normalize="never" if cfg.input.modality == "atac" else cfg.input.normalize,
                              min_class_size=cfg.input.min_class_size, modality=cfg.input.modality,
                              source=f"AnnData ({where})", sample_key=sample_key,
                              missing_labels=cfg.input.missing_labels, keep=keep)
    dataset = _derived_features(dataset, cfg)
    out = _keeping_torch_state(lambda: runner.analyse(dataset, cfg, progress=True, where=where))
    target = adata.copy() if copy else adata
    used = {p.pass_index: p for p in out["passes"]}
    pass_indices = [int(i) for i in out["summary"]["used_passes"]]
    raw_used, layer_used = ranking.matrix_params(matrix)
    placed = used[pass_indices[0]].pairs if pass_indices else None       # every pass places the same pairs
    ranking.store(target, dataset, findings=out["findings"], per_class=out["per_class"], summary=out["summary"],
                  evaluation=out["evaluation"], key_added=key_added,
                  # the label column recorded as findings.json records it (dm.read_results gives the same)
                  params=ranking.run_params(cfg.with_params({"label_key": str(groupby)}, where=where)
                                            if cfg.input.label_key is None else cfg,
                                            groupby=groupby, use_raw=raw_used, layer=layer_used, matrix=matrix),
                  pass_importance=[used[i].importance for i in pass_indices], pass_indices=pass_indices,
                  pairs=out.get("pairs"), screen=out.get("interactions"), placed_pairs=placed,
                  values_from=_values_from(dataset, matrix), groups=groups, reference=reference, n_genes=n_genes)
    trust = out["summary"]["trust"]
    if not trust["trustworthy"]:
        import warnings

        from deepmapper.results.findings import trust_line

        warnings.warn(f"{where}: {trust_line(trust)}", UserWarning, stacklevel=2)
    return target if copy else None


def _keeping_torch_state(analyse):
    """Run ``analyse`` and give the notebook its torch back: training seeds torch's global generator
    per pass and ``threads=`` sets torch's thread count, which other torch code in the same session
    (scvi-tools, a user's model) would otherwise inherit."""
    import torch

    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng():
            return analyse()
    finally:
        torch.set_num_threads(threads)


def _groups(adata, groupby: str, groups, reference, n_genes, where: str):
    """(groups as stored, the reference as stored, mask of the cells to analyse or None) for scanpy's
    groups/reference/n_genes. Group names are compared as the dataset keeps them: text without
    leading or trailing spaces (io strips labels), so ``reference=5`` finds the cluster "5" and
    ``groups=["A "]`` the group "A"."""
    import numpy as np

    column = adata.obs[groupby]
    present = sorted(c for c in set(column.astype(str).str.strip().unique()) if c not in ("nan", ""))
    if n_genes is not None and (isinstance(n_genes, bool) or not isinstance(n_genes, (int, np.integer))
                                or n_genes < 1):
        raise InputError(f"n_genes must be a positive integer or None (got {n_genes!r})", where=where,
                         field="n_genes", fix="pass e.g. n_genes=100, or None for every feature.")
    if isinstance(groups, str) and groups != "all":
        raise InputError(f"groups must be 'all' or a list of groups (got {groups!r})", where=where, field="groups",
                         fix=f"pass groups=[{groups!r}] (as scanpy).")
    if groups != "all":
        groups = [str(g).strip() for g in groups]
        unknown = [g for g in groups if g not in present]
        if unknown or not groups:
            raise InputError(f"no group {', '.join(map(repr, unknown)) or '(none given)'} in '{groupby}'",
                             where=where, field="groups",
                             fix=f"choose from {', '.join(sorted(present)[:12])}" + (" ..." if len(present) > 12 else "")
                             + ".")
    reference = str(reference).strip()
    if reference != "rest" and reference not in present:
        raise InputError(f"reference {reference!r} is not a group of '{groupby}'", where=where, field="reference",
                         fix=f"pass reference='rest' or one of {', '.join(sorted(present)[:12])}.")
    if reference == "rest":
        return groups, reference, None
    compared = present if groups == "all" else groups
    if not [g for g in compared if g != reference]:
        raise InputError(f"nothing to compare with the reference {reference!r}", where=where, field="groups",
                         fix="give groups besides the reference, or groups='all'.")
    keep = column.astype(str).str.strip().isin([*compared, reference]).to_numpy()
    return groups, reference, keep


def _values_from(dataset, matrix: str) -> dict:
    """Where the caller's AnnData holds the analysed values (``uns[key]['values_from']``): the matrix read,
    normalised or not; ``derived:...`` when the analysed features were computed from it (ATAC TF-IDF,
    AUCell gene-set scores) and are not in the AnnData."""
    meta = dataset.uns.get("deepmapper", {})
    derived = str(meta.get("matrix", matrix))
    if derived in ("tfidf", "aucell"):
        return {"matrix": f"derived:{derived}", "normalize": False}
    return {"matrix": matrix, "normalize": bool(meta.get("normalized", False))}


def _config(passes, settings: dict, where: str):
    from deepmapper.config import Config, iter_fields

    known = {f.metadata["param"] for _, f in iter_fields()}
    for name in settings:
        if name in _OWN_SETTINGS:
            raise ConfigError(f"'{name}' is not a setting of rank_features", where=where, field=name,
                              fix=_OWN_SETTINGS[name] + ".")
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            raise ConfigError(f"unknown setting '{name}'", where=where, field=name,
                              fix=(f"did you mean {', '.join(close)}? " if close else "")
                              + "Settings are the flat parameters of 'deepmapper run --help', e.g. epochs=20.")
    return Config().with_params({**settings, "passes": passes}, where=where)


def _matrix(adata, groupby, layer, use_raw, where: str) -> str:
    """The ``matrix`` choice (``X``, ``raw``, ``layer:NAME``) for scanpy's layer/use_raw arguments."""
    def columns():
        return ", ".join(map(str, list(adata.obs.columns)[:12])) or "none"

    if not isinstance(groupby, str) or groupby not in adata.obs.columns:
        close = difflib.get_close_matches(str(groupby), [str(c) for c in adata.obs.columns], n=1)
        raise InputError(f"no obs column '{groupby}' (obs columns: {columns()})", where=where, field="groupby",
                         fix=(f"did you mean '{close[0]}'? " if close else "")
                         + "pass the adata.obs column that holds the groups.")
    if layer is not None:
        if use_raw:
            raise InputError("layer and use_raw=True are given together", where=where, field="layer",
                             fix="choose one: layer='NAME' or use_raw=True.")
        if layer not in adata.layers:
            raise InputError(f"no layer '{layer}' (layers: {', '.join(adata.layers.keys()) or 'none'})",
                             where=where, field="layer", fix="pass an existing layer, or layer=None for X.")
        return f"layer:{layer}"
    if use_raw is None:
        use_raw = adata.raw is not None
    if use_raw:
        if adata.raw is None:
            raise InputError("use_raw=True but adata.raw is None", where=where, field="use_raw",
                             fix="use use_raw=False (X) or layer='NAME'.")
        return "raw"
    return "X"


def _derived_features(dataset, cfg):
    """What ``deepmapper run`` does after reading: ATAC TF-IDF, AUCell gene-set features."""
    from deepmapper.features import inputs

    if cfg.input.modality == "atac":
        dataset = inputs._atac_features(dataset, cfg)
    if cfg.input.genesets:
        dataset = inputs._geneset_features(dataset, cfg)
    return dataset
