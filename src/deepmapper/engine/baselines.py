"""Baselines on all features, judged on the same held-out cells as the neural model.

- ``logistic``: L2-penalised multinomial logistic regression on every feature,
  standardised with training statistics (sparse input: scaled by the standard
  deviation only, ``with_mean=False``, so it is never densified); fitted once on
  train + validation cells of the run's split, accuracy on its held-out cells.
  Feature score = L2 norm over classes of the feature's coefficients (for two
  classes sklearn fits one coefficient vector; its absolute value is the score).
- ``wilcoxon``: the Wilcoxon rank-sum test of scanpy's ``rank_genes_groups(method=
  "wilcoxon")``, one class versus the rest, computed in numpy (:func:`wilcoxon_z`,
  equal to scanpy's scores; scanpy's numba kernels cost over a minute of compiling
  on a fresh machine); feature score = the largest z-score over classes.

- ``pseudobulk`` (datasets with a sample key): counts summed per sample, PyDESeq2's
  negative-binomial GLM, each label against the rest (:mod:`deepmapper.engine.pseudobulk`); feature
  score = -log10 p. Added by itself; when it cannot run (PyDESeq2 missing, no raw counts)
  ``baselines.json`` says why under ``pseudobulk.unavailable``.

- ``interactions``: the pair screen alone (``interactions.tsv`` of the run, given as
  ``screen``): a gene's score is the largest |t| of the screened pairs it is in
  (with q below the threshold first, the rest after), genes in no listed pair
  score 0. Shows what the model adds beyond the screen.

Each writes ``<method>.tsv`` (feature, rank, score; rank 1 = strongest; ties by
feature order) and both go into ``baselines.json`` (accuracy, per-class top
features, split sizes).
"""
from __future__ import annotations

import hashlib
import logging
import time
import warnings

import numpy as np

from deepmapper.errors import ConfigError

log = logging.getLogger(__name__)

METHODS = ("logistic", "wilcoxon")
TOP_PER_CLASS = 20
MAX_ITER = 2000


def ranking(features, score):
    """DataFrame feature, rank, score sorted by score (descending; ties keep feature order)."""
    import pandas as pd

    score = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=0.0)
    order = np.argsort(-score, kind="stable")
    return pd.DataFrame({"feature": np.asarray(features, dtype=object)[order],
                         "rank": np.arange(1, len(order) + 1, dtype=np.int64),
                         "score": score[order]})


def _top(features, values, k: int = TOP_PER_CLASS) -> list[str]:
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")[:k]
    return [str(features[i]) for i in order]


def fit_logistic(x, codes, *, C: float = 1.0, seed: int = 0, tol: float = 1e-4):
    """(fitted LogisticRegression, converged) on a standardised matrix (dense or sparse):
    the L2-penalised multinomial fit shared by the baseline and the cnn's wide path."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    model = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed, tol=tol)
    # One BLAS thread. L-BFGS here is many small products, where BLAS threads wait on each other
    # (and on torch's): 10x fewer CPU seconds and less wall time on pbmc68k, 4,000 x 3,000 dense and
    # 20,000 x 5,000 sparse (docs/performance.md). And the fit no longer depends on the core count: a
    # weakly penalised fit stops where the loss stops falling in floating point, which the summation
    # order moves.
    with threadpool_limits(1, user_api="blas"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, codes)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not converged:
        log.warning("logistic regression did not converge in %d iterations; the fit is still usable", MAX_ITER)
    return model, converged


def softmax_coefficients(model, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(coef (n_classes, F), intercept (n_classes,)) giving the same probabilities as ``model``
    through a softmax: sklearn keeps one vector for two classes (the logit of class 1)."""
    coef, intercept = np.asarray(model.coef_, np.float64), np.asarray(model.intercept_, np.float64)
    if coef.shape[0] == 1:
        coef, intercept = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    # a class absent from the fitted cells gets no weights and a very low intercept
    full_coef = np.zeros((n_classes, coef.shape[1]))
    full_intercept = np.full(n_classes, intercept.min() - 10.0)
    present = np.asarray(model.classes_, dtype=np.int64)
    full_coef[present], full_intercept[present] = coef, intercept
    return full_coef, full_intercept


def logistic(adata, split, *, seed: int = 0, C: float = 1.0):
    """(ranking DataFrame, info dict) of a penalised logistic regression on all features."""
    import scipy.sparse as sp
    from sklearn.preprocessing import StandardScaler

    from deepmapper import io

    codes, classes = io.labels(adata)
    features = [str(v) for v in adata.var_names]
    X = adata.X
    sparse = sp.issparse(X)
    X = sp.csr_matrix(X, dtype=np.float32) if sparse else np.asarray(X, dtype=np.float32)
    fit_idx = np.sort(np.concatenate([split.train, split.val]))
    scaler = StandardScaler(with_mean=not sparse)
    x_fit = scaler.fit_transform(X[fit_idx])
    x_test = scaler.transform(X[split.test])
    t0 = time.perf_counter()
    model, converged = fit_logistic(x_fit, codes[fit_idx], C=C, seed=seed)
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
    """(ranking DataFrame, info dict) of the Wilcoxon rank-sum test, each class versus the rest."""
    from deepmapper import io

    codes, classes = io.labels(adata)
    features = [str(v) for v in adata.var_names]
    t0 = time.perf_counter()
    z = wilcoxon_z(adata.X, codes, len(classes))
    table = ranking(features, z.max(axis=0))
    info = {"method": "wilcoxon", "score": "max over classes of the one-vs-rest z-score (tie-corrected)",
            "seconds": round(time.perf_counter() - t0, 3), "classes": list(classes),
            "per_class_top": {c: _top(features, z[k]) for k, c in enumerate(classes)}}
    return table, info


def wilcoxon_z(X, codes: np.ndarray, n_classes: int, *, chunk_values: int = 8_000_000) -> np.ndarray:
    """One-vs-rest Wilcoxon rank-sum z-scores, shape (n_classes, n_features).

    The statistic of scanpy's ``rank_genes_groups(method="wilcoxon", tie_correct=True)``
    (``(R_k - n_k (N + 1) / 2) / sqrt(T n_k n_rest (N + 1) / 12)``, ``T`` the tie
    correction; a constant feature scores 0), computed in numpy: scanpy's numba
    kernels take more than a minute to compile on a fresh machine. Sparse input is
    ranked column chunk by column chunk, the implicit zeros as one tie group, never densified.
    """
    import scipy.sparse as sp

    codes = np.asarray(codes, dtype=np.int64)
    n_cells, n_features = X.shape
    n_k = np.bincount(codes, minlength=n_classes).astype(np.float64)
    rank_sum = np.zeros((n_classes, n_features))
    ties = np.zeros(n_features)
    if sp.issparse(X):
        X = sp.csc_matrix(X)
        X.sum_duplicates()
        nnz_col = np.diff(X.indptr)
        c0 = 0
        while c0 < n_features:
            # as many columns as fit chunk_values stored values (at least one)
            c1 = max(c0 + 1, int(np.searchsorted(X.indptr, X.indptr[c0] + chunk_values, side="right")) - 1)
            c1 = min(c1, n_features)
            lo, hi = X.indptr[c0], X.indptr[c1]
            vals = X.data[lo:hi].astype(np.float64)
            rows = X.indices[lo:hi]
            cols = np.repeat(np.arange(c1 - c0), nnz_col[c0:c1])
            keep = vals != 0  # explicit zeros join the implicit ones
            vals, rows, cols = vals[keep], rows[keep], cols[keep]
            zeros = n_cells - np.bincount(cols, minlength=c1 - c0)
            rank_sum[:, c0:c1], ties[c0:c1] = _rank_sums(vals, rows, cols, c1 - c0, zeros, codes, n_k)
            c0 = c1
    else:
        X = np.asarray(X)
        step = max(1, chunk_values // max(1, n_cells))
        for c0 in range(0, n_features, step):
            block = np.asarray(X[:, c0:c0 + step], dtype=np.float64)
            w = block.shape[1]
            rank_sum[:, c0:c0 + w], ties[c0:c0 + w] = _rank_sums(
                block.T.ravel(), np.tile(np.arange(n_cells), w), np.repeat(np.arange(w), n_cells), w,
                np.zeros(w, dtype=np.int64), codes, n_k)
    n = float(n_cells)
    t_corr = 1.0 - ties / (n ** 3 - n)
    var = t_corr[None, :] * (n_k * (n - n_k))[:, None] * (n + 1.0) / 12.0
    expected = (n_k * (n + 1.0) / 2.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, (rank_sum - expected) / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
    return z


def _rank_sums(vals, rows, cols, n_cols, zeros, codes, n_k):
    """Per class rank sums (n_classes, n_cols) and per column sum of t^3 - t over tie groups.

    ``vals``/``rows``/``cols``: the stored values of ``n_cols`` columns (cols ascending
    or not); ``zeros[j]``: cells of column ``j`` not stored (value 0, one tie group).
    """
    n_classes = n_k.size
    order = np.lexsort((vals, cols))
    v, c, r = vals[order], cols[order], rows[order]
    m = v.size
    stored = np.bincount(c, minlength=n_cols)
    col_start = np.concatenate([[0], np.cumsum(stored)[:-1]])
    pos = np.arange(m) - col_start[c]                   # 0-based position among the column's stored values
    new_run = np.ones(m, dtype=bool)
    if m > 1:
        new_run[1:] = (c[1:] != c[:-1]) | (v[1:] != v[:-1])
    run_id = np.cumsum(new_run) - 1
    run_len = np.bincount(run_id).astype(np.float64)
    avg = pos[new_run][run_id] + (run_len[run_id] + 1.0) / 2.0
    avg += np.where(v > 0, zeros[c], 0)                 # the zeros rank below every positive value
    n_neg = np.bincount(c, weights=(v < 0).astype(np.float64), minlength=n_cols)
    zero_rank = n_neg + (zeros + 1.0) / 2.0
    key = c * n_classes + codes[r]
    sums = np.bincount(key, weights=avg, minlength=n_cols * n_classes).reshape(n_cols, n_classes).T
    stored_k = np.bincount(key, minlength=n_cols * n_classes).reshape(n_cols, n_classes).T
    sums = sums + (n_k[:, None] - stored_k) * zero_rank[None, :]
    z = zeros.astype(np.float64)
    ties = np.bincount(c[new_run], weights=run_len ** 3 - run_len, minlength=n_cols) + z ** 3 - z
    return sums, ties


def screen_baseline(table, features, q_threshold: float = 0.05):
    """(ranking DataFrame, info dict) of the pair screen alone: per gene the largest |score| of its
    listed pairs, pairs with q below the threshold ranked above all others."""
    features = [str(f) for f in features]
    index = {f: k for k, f in enumerate(features)}
    score = np.zeros(len(features))
    passed = table["q_value"].to_numpy(np.float64) < q_threshold
    # passing pairs get +1000 so that every gene of a passing pair ranks above the others
    value = np.abs(table["score"].to_numpy(np.float64)) + np.where(passed, 1000.0, 0.0)
    for col in ("feature_a", "feature_b"):
        idx = np.array([index.get(str(f), -1) for f in table[col]], dtype=np.int64)
        ok = idx >= 0
        np.maximum.at(score, idx[ok], value[ok])
    ranked = ranking(features, score)
    ranked["score"] = np.where(ranked["score"] >= 1000.0, ranked["score"] - 1000.0, ranked["score"])
    top = table[passed].head(TOP_PER_CLASS)
    info = {"method": "interactions", "score": "largest |t| of the gene's screened pairs (q < threshold first)",
            "n_pairs": int(passed.sum()), "q_threshold": float(q_threshold),
            "top_pairs": [[str(a), str(b), str(c)] for a, b, c in zip(top["feature_a"], top["feature_b"],
                                                                       top["class"])]}
    return ranked, info


def _pseudobulk(adata, tables: dict, summary: dict) -> None:
    """The pseudobulk baseline for a dataset with a sample key (nothing without one)."""
    from deepmapper import io
    from deepmapper.engine import pseudobulk

    if io.samples(adata) is None:
        return
    _, classes = io.labels(adata)
    try:
        table, info = pseudobulk.baseline(adata, classes)
    except pseudobulk.PseudobulkUnavailable as err:
        log.warning("pseudobulk baseline skipped: %s", err)
        summary["pseudobulk"] = {"method": "pseudobulk", "unavailable": str(err)}
        return
    tables["pseudobulk"] = table
    summary["methods"].append("pseudobulk")
    summary["pseudobulk"] = info


def run_baselines(adata, *, split, seed: int, methods=METHODS, C: float = 1.0, screen=None,
                  q_threshold: float = 0.05) -> tuple[dict, dict]:
    """``({name: ranking DataFrame}, summary)`` of the baselines on the run's split; the caller
    writes them (``pipeline.runner.step_baselines``). With ``screen`` (the pair screen's table)
    the screen alone is added as ``interactions``."""
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"unknown baseline method(s): {', '.join(unknown) or 'none given'}", field="method",
                          fix=f"use {', '.join(METHODS)} or all.")
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
    tables = {}
    for method in methods:
        tables[method], summary[method] = logistic(adata, split, seed=seed, C=C) if method == "logistic" \
            else wilcoxon(adata)
    _pseudobulk(adata, tables, summary)
    if screen is not None:
        tables["interactions"], summary["interactions"] = screen_baseline(screen, adata.var_names, q_threshold)
        summary["methods"].append("interactions")
    return tables, summary
