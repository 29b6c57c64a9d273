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
    """A pass counts when it beats both the configured floor and always-guess-the-majority."""
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
