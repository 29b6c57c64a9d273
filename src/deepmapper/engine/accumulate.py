"""Accumulate per-pass importances into one ranking with stability statistics (pure numpy).

Per pass: features are ranked by importance (rank 1 = most important; ties are
broken by feature index so the result is deterministic) and the top ``k`` form
that pass's selected set. Over the accepted passes:

- ``selection_frequency``: fraction of passes whose top-k holds the feature;
- ``median_importance``: median of the pass importance, each pass scaled to sum 1
  (passes differ in scale; the scaling keeps one pass from dominating);
- ``mean_rank``: Borda mean rank; the final ``rank`` orders by it (ties: higher
  selection frequency, then feature order);
- ``pfer_bound``: Meinshausen-Buhlmann bound on the expected number of false
  selections when cutting at this feature's selection frequency,
  ``q^2 / ((2 pi - 1) p)`` with ``q = k``, ``p = n_features``, for ``pi > 0.5``
  (infinite otherwise).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def gate(accuracy: float, *, min_accuracy: float, majority_rate: float) -> bool:
    """A pass counts when it beats both the configured floor and always-guess-the-majority
    (``PreparedData.gate_score`` gives both figures: with a sample key, balanced accuracy and 1 / labels)."""
    return bool(accuracy >= min_accuracy and accuracy > majority_rate)


def ranks(importance: np.ndarray) -> np.ndarray:
    """Rank of every feature (1 = largest importance); ties by feature index. Works per row."""
    importance = np.asarray(importance, dtype=np.float64)
    order = np.argsort(-importance, axis=-1, kind="stable")
    out = np.empty_like(order)
    idx = np.arange(importance.shape[-1])
    if importance.ndim == 1:
        out[order] = idx + 1
    else:
        np.put_along_axis(out, order, np.broadcast_to(idx + 1, order.shape), axis=-1)
    return out


def top_k_mask(importance: np.ndarray, k: int) -> np.ndarray:
    return ranks(importance) <= k


def mb_bound(q: float, p: int, pi_threshold: float) -> float:
    """Meinshausen-Buhlmann (2010) bound on E[false selections]; inf for pi <= 0.5."""
    if pi_threshold <= 0.5 or p <= 0:
        return math.inf
    return float(q * q / ((2.0 * pi_threshold - 1.0) * p))


def normalise(importance: np.ndarray) -> np.ndarray:
    """Scale each pass (row) to sum 1 over absolute values; an all-zero pass stays zero."""
    imp = np.abs(np.asarray(importance, dtype=np.float64))
    total = imp.sum(axis=-1, keepdims=True)
    return np.divide(imp, total, out=np.zeros_like(imp), where=total > 0)


@dataclass
class Accumulated:
    rank: np.ndarray
    selection_frequency: np.ndarray
    median_importance: np.ndarray
    mean_rank: np.ndarray
    pfer_bound: np.ndarray
    n_passes: int
    top_k: int

    def order(self) -> np.ndarray:
        """Feature indices from rank 1 downwards."""
        return np.argsort(self.rank, kind="stable")


def accumulate(importances: np.ndarray, top_k: int) -> Accumulated:
    """importances: (n_passes, n_features) of accepted passes only."""
    imp = np.atleast_2d(np.asarray(importances, dtype=np.float64))
    n_passes, n_features = imp.shape
    if n_passes == 0:
        raise ValueError("no accepted passes to accumulate")
    k = min(int(top_k), n_features)
    r = ranks(imp)
    freq = (r <= k).mean(axis=0)
    mean_rank = r.mean(axis=0)
    median_imp = np.median(normalise(imp), axis=0)
    # Final order: Borda mean rank, then selection frequency, then feature order.
    order = np.lexsort((np.arange(n_features), -freq, mean_rank))
    final = np.empty(n_features, dtype=np.int64)
    final[order] = np.arange(1, n_features + 1)
    pfer = np.array([mb_bound(k, n_features, f) for f in freq])
    return Accumulated(rank=final, selection_frequency=freq, median_importance=median_imp,
                       mean_rank=mean_rank, pfer_bound=pfer, n_passes=n_passes, top_k=k)


def stability_table(acc: Accumulated, thresholds=(0.6, 0.7, 0.8, 0.9)) -> list[dict]:
    """For each frequency cut: how many features pass it and the MB bound on false ones."""
    p = acc.rank.shape[0]
    return [{"threshold": t, "n_selected": int((acc.selection_frequency >= t).sum()),
             "pfer_bound": mb_bound(acc.top_k, p, t)} for t in thresholds]


# -- per-group direction (what marks a group, up or down) -----------------------------------

def group_means(X, codes: np.ndarray, n_classes: int, reference: int | None = None):
    """(mean of each group, mean of its comparison) per feature, both (n_classes, n_features).

    The comparison is the rest of the cells (all other groups) or, with ``reference``, that one
    group, as ``scanpy.tl.rank_genes_groups``. ``X``: dense or scipy sparse (not densified)."""
    codes = np.asarray(codes, dtype=np.int64)
    n = len(codes)
    onehot = np.zeros((n, n_classes), dtype=np.float64)
    onehot[np.arange(n), codes] = 1.0
    sums = np.asarray(X.T @ onehot, dtype=np.float64).T          # sparse.T @ dense -> dense (k, F)
    sizes = onehot.sum(axis=0)[:, None]
    mean_group = sums / np.maximum(sizes, 1)
    if reference is None:
        mean_other = (sums.sum(axis=0, keepdims=True) - sums) / np.maximum(n - sizes, 1)
    else:
        mean_other = np.broadcast_to(mean_group[reference], mean_group.shape).copy()
    return mean_group, mean_other


def log_fold_changes(mean_group: np.ndarray, mean_other: np.ndarray) -> np.ndarray:
    """log2 fold change as scanpy computes it from means of log1p values:
    ``log2((expm1(mean_group) + 1e-9) / (expm1(mean_other) + 1e-9))``."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return np.log2((np.expm1(mean_group) + 1e-9) / (np.expm1(mean_other) + 1e-9))


def directions(mean_group: np.ndarray, mean_other: np.ndarray) -> np.ndarray:
    """+1 where a feature's mean is higher in the group than in its comparison, -1 lower, 0 equal."""
    return np.sign(np.asarray(mean_group, np.float64) - np.asarray(mean_other, np.float64)).astype(np.int8)


def marker_scores(evidence: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The signed score of scanpy's layout: ``direction * max(evidence, 0)``.

    ``evidence`` is the median over passes of the signed attribution towards the group (each pass
    scaled by its total absolute attribution). Its sign says whether the model reads the feature
    as evidence for the group, not whether the feature is up or down there: with integrated
    gradients against the training-mean image, attribution = (x - mean) * gradient, so a gene
    that is low in the group (x - mean < 0) with a negative gradient is positive evidence too
    (pbmc68k_reduced: TYROBP for B cells, log fold change -7.85, came out with a positive score).
    So the direction comes from the group's mean against its comparison on the analysed matrix
    (the sign of the log fold change), the strength from the evidence. Features the model reads
    against the group (evidence <= 0) mark it in neither direction: score 0, so ``score > 0`` means
    "up in the group and evidence for it" and ``score < 0`` "down in the group and evidence for
    it", as a scanpy score's sign does, and a pre-ranked list (GSEA) reads it as it is."""
    return np.asarray(direction, np.float64) * np.maximum(np.asarray(evidence, np.float64), 0.0)


def score_order(score: np.ndarray) -> np.ndarray:
    """Feature indices per row, highest score first (scanpy's order); ties by feature index."""
    score = np.atleast_2d(np.asarray(score, np.float64))
    idx = np.broadcast_to(np.arange(score.shape[1]), score.shape)
    return np.stack([np.lexsort((idx[r], -score[r])) for r in range(score.shape[0])])
