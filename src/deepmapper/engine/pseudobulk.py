"""Pseudobulk differential expression: counts summed per sample, a negative-binomial GLM (PyDESeq2).

The field's answer to pseudo-replication in single-cell comparisons across donors (Squair et
al. 2021, Nat Commun 12:5692; Crowell et al. 2020, muscat): the sample, not the cell, is the
replicate. Each tested label is compared with the rest (two labels: one comparison) by
PyDESeq2's Wald test on the design ``~group``; size factors by median of ratios (PyDESeq2's
default, which falls back to its iterative estimate when every gene has a zero somewhere).

PyDESeq2 is an optional dependency (``pip install deepmapper[samples]`` or ``pip install
pydeseq2``): without it :class:`PseudobulkUnavailable` says so and callers fall back or skip.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np

log = logging.getLogger(__name__)


class PseudobulkUnavailable(RuntimeError):
    """The pseudobulk GLM cannot run here (PyDESeq2 missing, or no counts); the message says why."""


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pydeseq2") is not None


def deseq2(sums: np.ndarray, sample_labels: np.ndarray, classes: list[str], *,
           feature_names: list[str] | None = None, n_cpus: int = 1, blocks: np.ndarray | None = None) -> dict:
    """PyDESeq2 on pseudobulk counts ``sums`` (samples x features), its per-gene fits on ``n_cpus``
    processes (the results do not depend on it: every gene is fitted on its own). ``blocks`` (the
    donor of each sample, a paired design): the design is ``~ block + group``, so the label is
    compared within donors.

    Returns ``{"tested": [label index], "p", "padj", "log2fc", "stat"}``, each (len(tested), F):
    one row per tested label (label against the rest; for two labels only the second label,
    log2 fold change = label 2 over label 1). Features with zero counts in every sample get NaN.
    """
    if not available():
        raise PseudobulkUnavailable("PyDESeq2 is not installed (pip install pydeseq2)")
    import pandas as pd
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.ds import DeseqStats

    labels = np.asarray(sample_labels, np.int64)
    sums = np.rint(np.asarray(sums, np.float64)).astype(np.int64)
    present = [c for c in range(len(classes)) if np.any(labels == c)]
    if len(present) < 2:
        raise PseudobulkUnavailable("fewer than two labels among the samples")
    tested = present[1:2] if len(present) == 2 else present
    n_f = sums.shape[1]
    names = [f"f{j}" for j in range(n_f)]
    keep = sums.sum(0) > 0
    out = {k: np.full((len(tested), n_f), np.nan) for k in ("p", "padj", "log2fc", "stat")}
    sample_ids = [f"s{i}" for i in range(sums.shape[0])]
    counts = pd.DataFrame(sums[:, keep], index=sample_ids, columns=np.asarray(names)[keep])
    for row, c in enumerate(tested):
        group = np.where(labels == c, "b", "a")           # the label ("b") against the rest ("a")
        meta = pd.DataFrame({"group": group}, index=sample_ids)
        if blocks is not None:
            meta.insert(0, "block", [f"d{int(b)}" for b in blocks])
        with warnings.catch_warnings():
            # PyDESeq2 warns when its parametric dispersion trend falls back to the mean trend (few
            # samples); the fallback is its documented behaviour, recorded nowhere else
            warnings.simplefilter("ignore", UserWarning)
            dds = DeseqDataSet(counts=counts, metadata=meta, design="~group" if blocks is None else "~block + group",
                               quiet=True, n_cpus=n_cpus)
            dds.deseq2()
            st = DeseqStats(dds, contrast=["group", "b", "a"], quiet=True, n_cpus=n_cpus)
            st.summary()
        res = st.results_df
        for key, col in (("p", "pvalue"), ("padj", "padj"), ("log2fc", "log2FoldChange"), ("stat", "stat")):
            out[key][row, keep] = res[col].to_numpy(np.float64)
    out["tested"] = tested
    return out


def size_factors(sums: np.ndarray) -> np.ndarray:
    """Median-of-ratios size factors (DESeq2's estimator) over the genes with no zero count: the
    reference the tests compare PyDESeq2's normalisation with."""
    sums = np.asarray(sums, np.float64)
    ok = np.all(sums > 0, axis=0)
    logs = np.log(sums[:, ok])
    return np.exp(np.median(logs - logs.mean(0), axis=1))


def baseline(adata, classes: list[str]):
    """(ranking DataFrame, info dict) of the pseudobulk baseline of a dataset with a sample key.

    Score = -log10 of the smallest Wald p value over the tested labels (Bonferroni over labels);
    ``log2fc`` of that label, DESeq2's ``padj`` beside. Raises :class:`PseudobulkUnavailable` when
    PyDESeq2 is missing, the dataset has no sample key, or it holds no raw counts."""
    import time


    from deepmapper import io
    from deepmapper.engine.samples import pseudobulk_sums
    from deepmapper.engine.split import sample_labels as labels_of

    found = io.samples(adata)
    if found is None:
        raise PseudobulkUnavailable("no sample key: a pseudobulk needs the sample of every cell (--sample-key)")
    counts = io.counts_matrix(adata)
    if counts is None:
        raise PseudobulkUnavailable("the dataset holds no raw counts (the input was log-normalised, e.g. a .raw "
                                    "of log values): a negative-binomial GLM needs counts; give the counts "
                                    "(--matrix layer:counts) to get it")
    t0 = time.perf_counter()
    codes, _ = io.labels(adata)
    s_codes, names = found
    lab = labels_of(codes, s_codes, len(names))
    sums = pseudobulk_sums(counts, s_codes, len(names))
    paired = io.sample_blocks(adata)
    res = deseq2(sums, lab, classes, blocks=None if paired is None else paired[0])
    p = res["p"]
    with np.errstate(invalid="ignore"):
        best = np.where(np.all(np.isnan(p), axis=0), 0, np.nanargmin(np.where(np.isnan(p), np.inf, p), axis=0))
    cols = np.arange(p.shape[1])
    p_best = np.minimum(1.0, p[best, cols] * p.shape[0])
    score = -np.log10(np.clip(np.nan_to_num(p_best, nan=1.0), 1e-300, 1.0)) + 0.0   # 0, never "-0"
    from deepmapper.engine.baselines import ranking

    features = [str(v) for v in adata.var_names]
    table = ranking(features, score)
    index = {f: j for j, f in enumerate(features)}
    order = np.asarray([index[f] for f in table["feature"]])
    table["log2fc"] = res["log2fc"][best, cols][order]
    table["pvalue"] = p_best[order]
    table["padj"] = res["padj"][best, cols][order]
    design = "~group" if paired is None else "~donor + group (paired: the label within donors)"
    info = {"method": "pseudobulk", "test": f"PyDESeq2 Wald test, {design}, label against the rest",
            "score": "-log10 p (smallest over tested labels, Bonferroni)", "n_samples": len(names),
            "samples_per_label": {classes[c]: int((lab == c).sum()) for c in range(len(classes))},
            "tested": [classes[c] for c in res["tested"]],
            "n_significant": int(np.nansum(res["padj"].min(0) < 0.05)) if res["padj"].size else 0,
            "seconds": round(time.perf_counter() - t0, 3), "classes": list(classes),
            "per_class_top": {classes[c]: [str(features[j]) for j in np.argsort(
                np.nan_to_num(res["p"][r], nan=1.0), kind="stable")[:20]] for r, c in enumerate(res["tested"])}}
    return table, info
