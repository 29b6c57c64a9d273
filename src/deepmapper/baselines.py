"""Baselines on all features, judged on the same held-out cells as the neural model.

- ``logistic``: L2-penalised multinomial logistic regression on every feature,
  standardised with training statistics (sparse input: scaled by the standard
  deviation only, ``with_mean=False``, so it is never densified); fitted once on
  train + validation cells of the run's split, accuracy on its held-out cells.
  Feature score = L2 norm over classes of the feature's coefficients (for two
  classes sklearn fits one coefficient vector; its absolute value is the score).
- ``wilcoxon``: scanpy ``rank_genes_groups(method="wilcoxon")``, one class versus
  the rest; feature score = the largest z-score over classes.

Each writes ``<method>.tsv`` (feature, rank, score; rank 1 = strongest; ties by
feature order) and both go into ``baselines.json`` (accuracy, per-class top
features, split sizes).
"""
from __future__ import annotations

import hashlib
import logging
import time
import warnings
from pathlib import Path

import numpy as np

from . import atomic
from .errors import ConfigError

log = logging.getLogger(__name__)

METHODS = ("logistic", "wilcoxon")
TOP_PER_CLASS = 20
MAX_ITER = 2000


def ranking(features, score) -> "pandas.DataFrame":  # noqa: F821
    """feature, rank, score sorted by score (descending; ties keep feature order)."""
    import pandas as pd

    score = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=0.0)
    order = np.argsort(-score, kind="stable")
    return pd.DataFrame({"feature": np.asarray(features, dtype=object)[order],
                         "rank": np.arange(1, len(order) + 1, dtype=np.int64),
                         "score": score[order]})


def _top(features, values, k: int = TOP_PER_CLASS) -> list[str]:
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")[:k]
    return [str(features[i]) for i in order]


def logistic(adata, split, *, seed: int = 0, C: float = 1.0):
    """(ranking DataFrame, info dict) of a penalised logistic regression on all features."""
    import scipy.sparse as sp
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from . import io

    codes, classes = io.labels(adata)
    features = [str(v) for v in adata.var_names]
    X = adata.X
    sparse = sp.issparse(X)
    X = sp.csr_matrix(X, dtype=np.float32) if sparse else np.asarray(X, dtype=np.float32)
    fit_idx = np.sort(np.concatenate([split.train, split.val]))
    scaler = StandardScaler(with_mean=not sparse)
    x_fit = scaler.fit_transform(X[fit_idx])
    x_test = scaler.transform(X[split.test])
    model = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_fit, codes[fit_idx])
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not converged:
        log.warning("logistic regression did not converge in %d iterations; the ranking is still usable", MAX_ITER)
    accuracy = float(np.mean(model.predict(x_test) == codes[split.test]))
    coef = np.asarray(model.coef_, dtype=np.float64)
    if coef.shape[0] == 1:  # two classes: one vector, positive = class 1
        per_class = np.vstack([-coef[0], coef[0]])
        score = np.abs(coef[0])
    else:
        per_class = coef
        score = np.linalg.norm(coef, axis=0)
    table = ranking(features, score)
    majority = float(np.bincount(codes[split.test]).max() / len(split.test))
    info = {
        "method": "logistic", "accuracy": accuracy, "n_train": int(len(fit_idx)), "n_test": int(len(split.test)),
        "majority_rate": majority, "C": float(C), "scaling": "std only (sparse)" if sparse else "standard",
        "converged": bool(converged), "n_iter": int(np.max(model.n_iter_)),
        "seconds": round(time.perf_counter() - t0, 3), "classes": list(classes),
        "per_class_top": {c: _top(features, per_class[k]) for k, c in enumerate(classes)},
    }
    log.info("logistic regression: held-out accuracy %.4f on %d cells (majority rate %.4f)", accuracy,
             len(split.test), majority)
    return table, info


def wilcoxon(adata):
    """(ranking DataFrame, info dict) of scanpy's Wilcoxon rank-sum test, each class versus the rest."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    from . import io

    key = adata.uns["deepmapper"]["label_key"]
    _, classes = io.labels(adata)
    features = [str(v) for v in adata.var_names]
    # A bare copy (shared X): rank_genes_groups writes into uns and must not touch the caller's object.
    probe = ad.AnnData(X=adata.X, obs=pd.DataFrame({key: pd.Categorical(adata.obs[key].astype(str),
                                                                           categories=classes)},
                                                   index=adata.obs_names),
                       var=pd.DataFrame(index=features))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # log-fold-change warnings on non-log data do not touch the scores
        sc.tl.rank_genes_groups(probe, groupby=key, method="wilcoxon", reference="rest", use_raw=False,
                                n_genes=len(features), tie_correct=True)
    res = probe.uns["rank_genes_groups"]
    index = {f: j for j, f in enumerate(features)}
    z = np.zeros((len(classes), len(features)))
    per_class_top = {}
    for k, c in enumerate(classes):
        names = [str(n) for n in res["names"][c]]
        scores = np.nan_to_num(np.asarray(res["scores"][c], dtype=np.float64), nan=0.0)
        z[k, [index[n] for n in names]] = scores
        per_class_top[c] = _top(features, z[k])
    table = ranking(features, z.max(axis=0))
    info = {"method": "wilcoxon", "score": "max over classes of the one-vs-rest z-score",
            "seconds": round(time.perf_counter() - t0, 3), "classes": list(classes),
            "per_class_top": per_class_top}
    return table, info


def run_baselines(adata, outdir, *, split, seed: int, methods=METHODS, C: float = 1.0) -> dict:
    """Write ``outdir/<method>.tsv`` and ``outdir/baselines.json`` (atomically); return the JSON content."""
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"unknown baseline method(s): {', '.join(unknown) or 'none given'}", field="method",
                          fix=f"use {', '.join(METHODS)} or all.")
    outdir = Path(outdir)
    test = np.asarray(split.test, dtype=np.int64)
    summary = {
        "methods": list(methods),
        "split": {"seed": int(seed), "n_train": int(len(split.train)), "n_val": int(len(split.val)),
                  "n_test": int(len(test)),
                  "test_index_sha256": hashlib.sha256(np.ascontiguousarray(test).tobytes()).hexdigest()},
        "dataset": {"n_cells": int(adata.n_obs), "n_features": int(adata.n_vars),
                    "label_key": str(adata.uns["deepmapper"]["label_key"]),
                    "source_sha256": str(adata.uns["deepmapper"].get("source_sha256", ""))},
    }
    for method in methods:
        table, info = logistic(adata, split, seed=seed, C=C) if method == "logistic" else wilcoxon(adata)
        atomic.write_text(outdir / f"{method}.tsv", table.to_csv(sep="\t", index=False, float_format="%.6g"))
        summary[method] = info
    atomic.write_json(outdir / "baselines.json", summary)
    return summary
