"""The ranking inside an AnnData: what ``deepmapper.tl.rank_features`` writes and ``read_results`` loads.

Both paths end in :func:`store`, so a notebook sees one structure whether the
analysis ran in memory or came from ``deepmapper run`` / ``nextflow run``:

``adata.uns[key]`` (the layout of ``scanpy.tl.rank_genes_groups``)
    ``params``
        ``groupby``, ``reference`` (``"rest"`` or a group), ``method``
        (``"deepmapper"``), ``use_raw``, ``layer``, ``corr_method`` (``"none"``)
        (as scanpy), plus ``groups``, ``matrix``, ``n_genes``, ``passes``,
        ``seed``, ``backbone``, ``attribution``, ``top_k`` and the whole flat
        configuration in ``config``.
    ``names``, ``scores``, ``logfoldchanges``, ``pvals``, ``pvals_adj``, ``mean_rank``
        structured arrays with one field per group (groups in sorted order,
        the order of DeepMapper's classes; the reference has none), ``n_genes``
        rows (default every analysed feature), highest score first, as scanpy's
        (``findings_per_class.tsv``). ``scores`` is the median signed attribution
        share towards the group (the evidence) signed by the direction (the
        group's mean against the rest's, or the reference's): positive = up in
        the group, negative = down, 0 = not evidence for the group
        (:func:`deepmapper.engine.accumulate.marker_scores`); ``logfoldchanges``
        is computed as scanpy does (log2 of the ratio of ``expm1`` of the group
        and comparison means of the analysed matrix; NaN when it has negative
        values); ``mean_rank`` the Borda mean rank of the signed attribution.
        DeepMapper is not a test: ``pvals`` and ``pvals_adj`` are NaN (use
        ``pfer_bound`` for error control) except with a sample key, where they
        are each feature's ``sample_p_left_out`` and ``sample_q`` (the sample-level
        test with any one sample left out and its Benjamini-Hochberg q, one per
        feature across the labels), so ``sc.get.rank_genes_groups_df(...,
        pval_cutoff=0.05)`` keeps what that test calls.
    ``trust``
        whether the model is to be believed (``findings.json["trust"]``):
        ``trustworthy``, ``reasons``, ``baseline_accuracy`` (logistic regression
        on the same held-out cells; None when not fitted), ``margin``, and the
        figures behind them (absent for results written before the verdict).
    ``ranking``
        DataFrame, one row per analysed feature (index), best first: ``rank``,
        ``selection_frequency``, ``median_importance``, ``mean_rank``,
        ``pfer_bound``, ``is_denovo`` (``findings.tsv``).
    ``summary``
        per-pass accuracies, accepted flags, stop and best epochs, the passes
        used, the stability table (DataFrame), versions (``findings.json``).
    ``evaluation``
        arrangement-ensembled held-out accuracy, ``confusion_matrix`` (array),
        ``per_class`` metrics (DataFrame) (``evaluation.json``).
    ``features``, ``pass_importance``, ``pass_indices``
        the analysed features in dataset order (the order arrangements permute)
        and the per-pass importances of the passes used (``passes/``; absent
        when a results directory has no pass files).
    ``pairs``
        DataFrame, the gene pairs the passes placed side by side, best first
        (``findings_pairs.tsv``): ``feature_a``, ``feature_b``, ``class`` (the
        class the pair was screened for), ``rank``, ``selection_frequency``,
        ``median_importance``, ``mean_rank`` (of the pair's product channel over
        the passes; NaN with the pair channel off), ``rank_a``, ``rank_b`` (the
        genes' own ranks), and the screen's ``score``, ``q_value``,
        ``corr_in_class``, ``corr_rest`` (``interactions.tsv``; NaN when it is
        absent). Empty when the screen placed no pair or interactions were off;
        absent for results written before the screen existed.
    ``placed_pairs``
        (M, 2) int64: the placed pairs as indices into ``features``, in the order
        the passes placed them; the arrangement of pass ``t`` is
        ``transform.pair_arrangement(len(features), placed_pairs, seed + t)``, as in
        training (read from the pass files, else re-selected from
        ``interactions.tsv`` as training does; absent when neither is there).
    ``values_from``
        where this AnnData holds the analysed values that :func:`deepmapper.pl.pairs`
        draws: ``{"matrix": "X" | "raw" | "layer:NAME", "normalize": bool}``
        (``normalize``: apply ``normalize_total`` + ``log1p`` first, as the
        analysis did to counts). ``read_results`` gives ``{"matrix": "X",
        "normalize": False}``: ``dataset.h5ad`` holds the analysed values.

``adata.var`` columns ``{key}_rank``, ``{key}_selection_frequency``,
``{key}_median_importance``, ``{key}_mean_rank``, ``{key}_pfer_bound``: one value
per feature of ``adata.var_names`` (NaN for a feature that was not analysed,
e.g. a gene of ``adata.var`` missing from ``adata.raw``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deepmapper.errors import FormatError, InputError
from deepmapper.results import layout

KEY = "deepmapper"
VAR_COLUMNS = ("rank", "selection_frequency", "median_importance", "mean_rank", "pfer_bound")
_SUMMARY_KEYS = ("accuracies", "accepted", "stop_epochs", "best_epochs", "early_stopped", "pass_indices",
                 "used_passes", "n_passes_run", "n_passes_accepted", "mean_accuracy", "n_features", "n_cells",
                 "classes", "top_k", "features_sha256", "dataset_sha256", "n_pairs", "pair_channel")
# findings.json's sample_level without the per-sample panel (that is findings_samples.tsv):
# what the rank with a sample key was made of, and why, where a scanpy user reads the ranking
_SAMPLE_LEVEL_KEYS = ("sample_key", "design", "n_samples", "samples_per_label", "test", "note", "rank",
                      "model_left_out", "n_sample_q_below", "q_threshold", "pair_screen")


def store(target, dataset, *, findings, per_class, summary: dict, evaluation: dict | None, key_added: str,
          params: dict, pass_importance=None, pass_indices=None, pairs=None, screen=None, placed_pairs=None,
          values_from: dict | None = None, groups="all", reference: str = "rest", n_genes: int | None = None) -> None:
    """Write the ranking of ``dataset`` (the analysed AnnData) into ``target.uns[key_added]`` and
    ``target.var`` (``target`` may be ``dataset`` itself).

    The groups' fields are in natural order (:func:`natural_order`: cluster 2 before cluster 10).
    ``pairs``: the accumulated pair table (``findings.build``'s fourth value, ``findings_pairs.tsv``);
    ``screen``: the screen's table (``interactions.tsv``), joined in; ``placed_pairs``: (M, 2) feature
    indices in the passes' order; ``values_from``: see the module docstring."""
    import pandas as pd

    from deepmapper.results.findings import RANK_TEST_ALONE

    classes = natural_order(str(c) for c in summary["classes"])
    features = np.asarray([str(v) for v in dataset.var_names], dtype=object)
    ranking = findings.copy()
    ranking.index = pd.Index(ranking.pop("feature").astype(str).to_numpy(), dtype=object)
    ranking = ranking.sort_values("rank", kind="stable")
    ranking["is_denovo"] = ranking["is_denovo"].astype(bool)

    # per-group structured arrays, as scanpy's rank_genes_groups (one field per group)
    cols, n_genes = group_arrays(dataset, per_class, classes, features, groups=groups, reference=reference,
                                 n_genes=n_genes,
                                 sample_q=ranking["sample_q"] if "sample_q" in ranking.columns else None,
                                 sample_p=ranking["sample_p"] if "sample_p" in ranking.columns else None,
                                 # pvals: the p whose BH q is sample_q (older results: sample_p was)
                                 sample_pvals=next((ranking[c] for c in ("sample_p_left_out", "sample_p")
                                                    if c in ranking.columns), None),
                                 importance=ranking["median_importance"],
                                 model_used=(summary.get("sample_level") or {}).get("rank") != RANK_TEST_ALONE)
    uns = {"params": {**params, "reference": str(reference), "groups": groups if groups == "all" else list(groups),
                      "n_genes": int(n_genes)}}
    for col, per_group in cols.items():
        uns[col] = np.rec.fromarrays(list(per_group.values()), names=list(per_group))
    uns["ranking"] = ranking
    uns["summary"] = _summary(summary)
    if summary.get("trust") is not None:                 # absent in results written before the verdict
        uns["trust"] = trust_dict(summary["trust"])
    if evaluation is not None:
        uns["evaluation"] = _evaluation(evaluation)
    uns["features"] = features
    if pass_importance is not None:
        uns["pass_importance"] = np.asarray(pass_importance, dtype=np.float32)
        uns["pass_indices"] = np.asarray(pass_indices, dtype=np.int64)
    if pairs is not None:
        uns["pairs"] = pair_table(pairs, screen)
    if placed_pairs is not None:
        placed = np.asarray(placed_pairs, dtype=np.int64).reshape(-1, 2)
        if placed.size and (placed.min() < 0 or placed.max() >= len(features)):
            raise FormatError(f"a placed pair names feature {int(placed.max())} of {len(features)}",
                              field="pairs", fix="use pass files and dataset.h5ad from the same run.")
        uns["placed_pairs"] = placed
    uns["values_from"] = dict(values_from or {"matrix": "X", "normalize": False})
    target.uns[key_added] = uns

    # per-feature columns on the caller's var (NaN where a var feature was not analysed)
    aligned = ranking.reindex(pd.Index([str(v) for v in target.var_names], dtype=object))
    for col in VAR_COLUMNS:
        values = aligned[col].to_numpy()
        if col == "rank" and not np.isnan(values.astype(float)).any():
            values = values.astype(np.int64)
        target.var[f"{key_added}_{col}"] = values


PAIR_COLUMNS = ("feature_a", "feature_b", "class", "rank", "selection_frequency", "median_importance", "mean_rank",
                "rank_a", "rank_b")
SCREEN_COLUMNS = ("score", "q_value", "corr_in_class", "corr_rest")


def pair_table(pairs, screen=None):
    """``uns[key]["pairs"]``: the accumulated pairs, best first, with the screen's statistics of each pair
    (matched on genes and class, in either order) joined in."""
    import pandas as pd

    table = pairs.copy()
    for col in PAIR_COLUMNS:
        if col not in table.columns:
            table[col] = np.nan
    table = table[list(PAIR_COLUMNS)].reset_index(drop=True)
    for col in ("feature_a", "feature_b", "class"):
        table[col] = table[col].astype(str).astype(object)
    for col in ("rank", "rank_a", "rank_b"):
        table[col] = table[col].astype(np.int64)
    for col in ("selection_frequency", "median_importance", "mean_rank"):
        table[col] = table[col].astype(np.float64)
    if len(table):
        table = table.sort_values("rank", kind="stable").reset_index(drop=True)
    stats: dict[tuple, int] = {}
    have = [c for c in SCREEN_COLUMNS if screen is not None and c in screen.columns]
    if have:
        for i, key in enumerate(zip(screen["feature_a"].astype(str), screen["feature_b"].astype(str),
                                    screen["class"].astype(str))):
            stats.setdefault(key, i)                  # the table is best first: a pair's best row
    for col in SCREEN_COLUMNS:
        source = screen[col].to_numpy(np.float64) if col in have else None
        values = np.full(len(table), np.nan)
        for k, (a, b, c) in enumerate(zip(table["feature_a"], table["feature_b"], table["class"])):
            i = stats.get((a, b, c), stats.get((b, a, c)))
            if source is not None and i is not None:
                values[k] = source[i]
        table[col] = pd.Series(values, dtype=np.float64)
    return table


GROUP_FIELDS = ("names", "scores", "logfoldchanges", "pvals", "pvals_adj", "mean_rank")


def group_arrays(dataset, per_class, classes: list[str], features, *, groups="all", reference: str = "rest",
                 n_genes: int | None = None, sample_q=None, sample_p=None, sample_pvals=None, importance=None,
                 model_used: bool = True) -> tuple[dict, int]:
    """``{field: {group: array}}`` in scanpy's order (highest score first) and the rows per group.

    From ``findings_per_class.tsv`` (the groups against the rest). With ``reference`` a group, the
    direction, score and log fold change of each other group are taken against that group's cells
    instead (the evidence stays the model's; :func:`deepmapper.engine.accumulate.marker_scores`), and the
    reference has no table of its own (as scanpy). ``groups``: the groups to keep ("all").
    ``n_genes``: rows kept per group (None: every feature in the table). ``sample_q``: a Series of the
    sample-level q value by feature (a sample key), which becomes ``pvals_adj``; ``sample_pvals`` the
    p values it adjusts (``sample_p_left_out``), which become ``pvals``; else NaN; ``sample_p``: the
    rank's p value (a recomputed score's evidence). ``importance``: findings.tsv's
    ``median_importance`` by feature, the model's factor of a recomputed score with a sample key
    (``findings.rank_score``). ``model_used``: False when
    the run ranked by the sample-level test alone (``findings.model_left_out``), so recomputed scores are too."""
    from deepmapper import io
    from deepmapper.engine import accumulate as acc
    from deepmapper.results.findings import DIRECTION_NAMES, log_values_or_warn, rank_score

    codes, ds_classes = io.labels(dataset)
    shown = [c for c in classes if (groups == "all" or c in groups) and c != reference]
    per_class = per_class.copy()
    per_class["class"] = per_class["class"].astype(str)
    position = {f: i for i, f in enumerate(features)}
    recompute = reference != "rest" or "score" not in per_class.columns   # old results: no score column
    if recompute:
        ref = None if reference == "rest" else ds_classes.index(reference)
        mean_group, mean_other = acc.group_means(dataset.X, codes, len(ds_classes), reference=ref)
        log_ok = log_values_or_warn(dataset.X, warn=False)
    cols: dict[str, dict[str, np.ndarray]] = {c: {} for c in GROUP_FIELDS}
    lengths = set()
    for cls in shown:
        rows = per_class[per_class["class"] == cls].sort_values("rank", kind="stable")
        if recompute:
            c = ds_classes.index(cls)
            idx = np.asarray([position[n] for n in rows["feature"].astype(str)], dtype=np.int64)
            direction = acc.directions(mean_group[c, idx], mean_other[c, idx])
            if "sample_p" in rows.columns:          # a sample key: scored as findings_per_class.tsv is
                score = rank_score(importance.reindex(rows["feature"].astype(str)).to_numpy(np.float64),
                                   rows["sample_p"].to_numpy(np.float64), model_used=model_used,
                                   direction=direction)
            else:
                score = acc.marker_scores(rows["median_importance"].to_numpy(np.float64), direction)
            lfc = acc.log_fold_changes(mean_group[c, idx], mean_other[c, idx]) if log_ok \
                else np.full(len(idx), np.nan)
            rows = rows.assign(score=score, logfoldchange=lfc,
                               direction=[DIRECTION_NAMES[int(d)] for d in direction])
            rows = rows.iloc[acc.score_order(score)[0]] if len(rows) else rows
        if n_genes is not None:
            rows = rows.head(int(n_genes))
        lengths.add(len(rows))
        cols["names"][cls] = rows["feature"].astype(str).to_numpy(dtype=object)
        cols["scores"][cls] = rows["score"].to_numpy(np.float32)
        cols["logfoldchanges"][cls] = rows["logfoldchange"].to_numpy(np.float32)
        cols["mean_rank"][cls] = rows["mean_rank"].to_numpy(np.float64)
        cols["pvals"][cls] = np.full(len(rows), np.nan) if sample_pvals is None \
            else sample_pvals.reindex(cols["names"][cls]).to_numpy(np.float64)
        cols["pvals_adj"][cls] = np.full(len(rows), np.nan) if sample_q is None \
            else sample_q.reindex(cols["names"][cls]).to_numpy(np.float64)
    if len(lengths) != 1:
        raise FormatError(f"the per-class tables have different lengths ({sorted(lengths)})",
                          field="findings_per_class", fix="rerun the accumulate step.")
    return {col: {c: per_group[c] for c in shown} for col, per_group in cols.items()}, lengths.pop()


def trust_dict(trust: dict) -> dict:
    """``uns[key]["trust"]``: findings.json's ``trust`` (``trustworthy``, ``reasons``, ``baseline_accuracy``
    (None: not compared), ``margin``, and the figures behind them)."""
    out = dict(trust)
    out["trustworthy"] = bool(out["trustworthy"])
    out["reasons"] = [str(r) for r in out.get("reasons") or []]
    out["baseline_accuracy"] = None if out.get("baseline_accuracy") is None else float(out["baseline_accuracy"])
    out["margin"] = float(out["margin"])
    return out


def _summary(summary: dict) -> dict:
    import pandas as pd

    out = {}
    for k in _SUMMARY_KEYS:
        v = summary.get(k)
        if v is None:
            continue
        out[k] = np.asarray(v) if isinstance(v, list) else v
    stab = pd.DataFrame(summary.get("stability") or [], columns=["threshold", "n_selected", "pfer_bound"])
    if len(stab):
        stab["pfer_bound"] = stab["pfer_bound"].astype(float)   # None (JSON null) -> NaN: infinite bound
        stab.loc[stab["pfer_bound"].isna(), "pfer_bound"] = np.inf
    out["stability"] = stab
    if summary.get("sample_level"):
        out["sample_level"] = {k: summary["sample_level"][k] for k in _SAMPLE_LEVEL_KEYS
                               if summary["sample_level"].get(k) is not None}
    out["versions"] = {str(k): str(v) for k, v in (summary.get("versions") or {}).items()}
    return out


def _evaluation(evaluation: dict) -> dict:
    import pandas as pd

    out = {}
    for k, v in evaluation.items():
        if k == "per_class":
            cols = {"precision": float, "recall": float, "f1": float, "support": np.int64}
            out[k] = pd.DataFrame(v).T[list(cols)].astype(cols)
        elif k == "confusion_matrix":
            out[k] = np.asarray(v, dtype=np.int64)
        elif isinstance(v, list):
            out[k] = np.asarray(v)
        else:
            out[k] = v
    return out


def natural_order(names) -> list[str]:
    """Group names with their numbers compared by value ('2' before '10', 'CD4+' before 'CD14+'), as
    Leiden and Louvain number clusters and scanpy lists them; ties by the plain text."""
    import re

    def key(name: str):
        return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t], name
    return sorted(names, key=key)


def matrix_params(matrix: str) -> tuple[bool, str | None]:
    """(use_raw, layer) as scanpy names them, for the dataset's ``matrix`` provenance."""
    if str(matrix).startswith("layer:"):
        return False, str(matrix).split(":", 1)[1]
    return str(matrix) == "raw", None


def run_params(cfg, *, groupby: str, use_raw: bool, layer: str | None, matrix: str) -> dict:
    """``uns[key]['params']``: scanpy's keys, then DeepMapper's."""
    flat = cfg.flat()
    return {"groupby": str(groupby), "reference": "rest", "method": "deepmapper", "use_raw": bool(use_raw),
            "layer": layer, "corr_method": "none", "matrix": str(matrix), "passes": int(cfg.run.passes), "seed": int(cfg.run.seed),
            "backbone": str(cfg.backbone.kind), "attribution": str(cfg.attribution.method),
            "top_k": int(cfg.run.top_k), "config": flat}


def get(adata, key: str = KEY) -> dict:
    """``adata.uns[key]``, or one clear error when it is not a DeepMapper result."""
    uns = adata.uns.get(key) if hasattr(adata, "uns") else None
    if not isinstance(uns, dict) or (uns.get("params") or {}).get("method") != "deepmapper":
        have = [k for k, v in getattr(adata, "uns", {}).items()
                if isinstance(v, dict) and (v.get("params") or {}).get("method") == "deepmapper"]
        raise InputError(f"no DeepMapper result in adata.uns['{key}']", field="key",
                         fix=(f"use key={have[0]!r}" if have else
                              "run deepmapper.tl.rank_features(adata, groupby) or deepmapper.read_results(outdir) "
                              "first") + ".")
    return uns


def pass_arrangement(uns: dict, t: int, *, key: str = KEY) -> tuple[np.ndarray, np.ndarray]:
    """(perm, placed pairs) of pass ``t`` of the result ``uns``: the arrangement that pass trained on.

    The function and inputs of training (``train.member_arrangement``): the placed pairs in the
    passes' order and the pass seed ``seed + t``; with no pairs the plain seeded arrangement."""
    from deepmapper.model.transform import pair_arrangement

    n = len(uns["features"])
    placed = uns.get("placed_pairs")
    if placed is None:
        n_pairs = int(uns.get("summary", {}).get("n_pairs") or 0)
        if n_pairs:
            raise InputError(f"the run placed {n_pairs} gene pairs but adata.uns['{key}'] does not say which, "
                             "so its arrangements cannot be drawn", field="placed_pairs",
                             fix="read a results directory that has its passes/ folder or interactions.tsv, "
                                 "or use arrangement='rank'.")
        placed = np.zeros((0, 2), np.int64)
    placed = np.asarray(placed, dtype=np.int64).reshape(-1, 2)
    return pair_arrangement(n, placed, int(uns["params"]["seed"]) + int(t)), placed


# -- reading a results directory -----------------------------------------------------------

def read_results(outdir, *, key_added: str = KEY):
    """Load a finished ``deepmapper run`` or ``nextflow run`` results directory into an AnnData.

    Parameters
    ----------
    outdir
        The ``--outdir`` of the run: ``dataset.h5ad``, ``findings.tsv``,
        ``findings_per_class.tsv`` and ``findings.json`` are required;
        ``evaluation.json``, ``passes/pass_NNN.npz``, ``findings_pairs.tsv`` and
        ``interactions.tsv`` are read when present.
    key_added
        Key in ``uns`` (and prefix of the ``var`` columns) to store the result under.

    Returns
    -------
    anndata.AnnData
        The dataset as analysed (``dataset.h5ad``: the matrix, the labels in
        ``obs``), with ``uns[key_added]`` and the ``var`` columns that
        :func:`deepmapper.tl.rank_features` writes, so ``sc.get.rank_genes_groups_df``,
        ``sc.pl.rank_genes_groups_dotplot`` and :mod:`deepmapper.pl` work on it.
        Floating-point values are those of the files (6 significant digits in
        the TSV files).

    Raises
    ------
    InputError
        The directory or one of the required files is missing.
    FormatError
        A file is damaged, or the files are not from one run.
    """
    from deepmapper import io
    from deepmapper.config import Config
    from deepmapper.engine.passfile import read_pass
    from deepmapper.results.load import read_json, read_tsv

    root = Path(outdir)
    if not root.is_dir():
        raise InputError("results directory not found", where=str(root), field="outdir",
                         fix="give the --outdir of a finished 'deepmapper run' or 'nextflow run'.")
    for name in (layout.DATASET, layout.FINDINGS, layout.FINDINGS_PER_CLASS, layout.FINDINGS_JSON):
        if not (root / name).is_file():
            raise InputError(f"{name} is missing", where=str(root), field=name,
                             fix="give the --outdir of a finished run (its accumulate step writes the findings, "
                                 "ingest writes dataset.h5ad).")
    dataset = io.read_dataset(root / layout.DATASET)
    findings = read_tsv(root / layout.FINDINGS, ("feature", "rank", "selection_frequency", "median_importance",
                                                  "mean_rank", "pfer_bound", "is_denovo"))
    findings["is_denovo"] = findings["is_denovo"].map(lambda v: str(v).strip().lower() in ("true", "1"))
    per_class = read_tsv(root / layout.FINDINGS_PER_CLASS, ("class", "feature", "rank", "median_importance",
                                                            "mean_rank"))
    summary = read_json(root / layout.FINDINGS_JSON)
    if set(findings["feature"]) != {str(v) for v in dataset.var_names}:
        raise FormatError(f"findings.tsv ranks {len(findings)} features, dataset.h5ad holds {dataset.n_vars} "
                          "(or other names)", where=str(root), field="feature",
                          fix="use findings and dataset.h5ad from the same run.")
    evaluation = read_json(root / layout.EVALUATION) if (root / layout.EVALUATION).is_file() else None

    used = [int(i) for i in summary.get("used_passes", [])]
    pass_importance = None
    placed = _placed_pairs(summary, [str(v) for v in dataset.var_names], where=str(root / layout.FINDINGS_JSON))
    files = {int(f.stem.split("_")[-1]): f for f in (root / "passes").glob("pass_*.npz")} \
        if (root / "passes").is_dir() else {}
    if used and all(i in files for i in used):
        rows = []
        for i in used:
            p = read_pass(files[i])
            if p.n_features != dataset.n_vars:
                raise FormatError(f"pass {i} has {p.n_features} features, dataset.h5ad {dataset.n_vars}",
                                  where=str(files[i]), field="importance",
                                  fix="use pass files and findings from the same run.")
            rows.append(p.importance)
            if placed is None:   # results from before findings.json recorded them: the passes hold them
                placed = np.asarray(p.pairs, dtype=np.int64).reshape(-1, 2)
        pass_importance = np.stack(rows)

    meta = dataset.uns["deepmapper"]
    cfg = Config.from_dict(summary.get("config") or {}, where=str(root / layout.FINDINGS_JSON))
    # the AnnData returned holds the analysed values in X (no .raw): scanpy's readers of use_raw
    # (rank_genes_groups_violin, filter_rank_genes_groups) must look there; params["matrix"] says
    # which matrix of the input was analysed
    params = run_params(cfg, groupby=meta["label_key"], use_raw=False, layer=None, matrix=meta.get("matrix", "X"))
    screen = None
    if (root / layout.INTERACTIONS).is_file():
        from deepmapper.engine.interactions import read_table

        screen = read_table(root / layout.INTERACTIONS)
    pairs = None
    if (root / layout.FINDINGS_PAIRS).is_file():
        pairs = read_tsv(root / layout.FINDINGS_PAIRS, ("feature_a", "feature_b", "class", "rank"))
    store(dataset, dataset, findings=findings, per_class=per_class, summary=summary, evaluation=evaluation,
          key_added=key_added, params=params, pass_importance=pass_importance,
          pass_indices=used if pass_importance is not None else None, pairs=pairs, screen=screen,
          placed_pairs=placed, values_from={"matrix": "X", "normalize": False})
    return dataset


def _placed_pairs(summary: dict, feature_names: list[str], *, where: str):
    """The pairs training placed, as findings.json records them (feature indices, placement order);
    None for results written before that record existed and that placed pairs."""
    recorded = summary.get("placed_pairs")
    if recorded is None:
        return np.zeros((0, 2), np.int64) if int(summary.get("n_pairs") or 0) == 0 else None
    index = {n: k for k, n in enumerate(feature_names)}
    missing = [f for pair in recorded for f in pair if f not in index]
    if missing:
        raise FormatError(f"placed pair feature {missing[0]!r} is not in the dataset", where=where,
                          field="placed_pairs", fix="read findings.json and dataset.h5ad of the same run.")
    return np.asarray([[index[a], index[b]] for a, b in recorded], dtype=np.int64).reshape(-1, 2)