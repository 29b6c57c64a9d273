"""Arrangement-ensembled evaluation on the fixed held-out split.

Every pass predicts the same held-out cells (the split depends on the run seed
only), so the ensemble is the mean of the passes' softmax outputs: the model
read through several arrangements at once.
"""
from __future__ import annotations

import numpy as np

from deepmapper.errors import InputError
from deepmapper.engine.passfile import PassResult


def evaluate(passes: list[PassResult], codes: np.ndarray, classes: list[str], *,
             samples: tuple[np.ndarray, list[str]] | None = None) -> dict:
    """The ensembled held-out predictions of ``passes``, scored. ``samples`` (sample code per cell,
    sample names; with a sample key): the held-out cells' samples are listed (``heldout_samples``),
    so an accuracy on cells can be read as what it is, an accuracy on those donors' cells."""
    if not passes:
        raise InputError("no passes to evaluate", fix="train at least one pass first.")
    heldout = passes[0].heldout_index
    for p in passes[1:]:
        if not np.array_equal(p.heldout_index, heldout):
            raise InputError(f"pass {p.pass_index} was judged on other held-out cells than pass "
                             f"{passes[0].pass_index}", field="heldout_index",
                             fix="use passes from one run (same seed and split fractions).")
    proba = np.mean([p.heldout_proba for p in passes], axis=0)
    truth = np.asarray(codes)[heldout]
    pred = proba.argmax(axis=1)
    n = len(classes)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (truth, pred), 1)
    per_class = {}
    for c, name in enumerate(classes):
        tp = cm[c, c]
        precision = tp / cm[:, c].sum() if cm[:, c].sum() else 0.0
        recall = tp / cm[c].sum() if cm[c].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(float(precision), 6), "recall": round(float(recall), 6),
                           "f1": round(float(f1), 6), "support": int(cm[c].sum())}
    counts = np.bincount(truth, minlength=n)
    return {
        "accuracy": round(float((pred == truth).mean()), 6),
        "n_passes": len(passes),
        "pass_indices": [p.pass_index for p in passes],
        "classes": list(classes),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
        "majority_rate": round(float(counts.max() / counts.sum()), 6),
        "per_pass_accuracy": [round(float(p.accuracy), 6) for p in passes],
        "heldout_size": int(len(heldout)),
        "macro_f1": round(float(np.mean([v["f1"] for v in per_class.values()])), 6),
        # the mean recall over the classes held out: what the gate compares with a sample key
        "balanced_accuracy": round(float(np.mean([v["recall"] for v in per_class.values() if v["support"]])), 6),
        **({} if samples is None else
           {"heldout_samples": sorted({str(samples[1][s]) for s in np.asarray(samples[0])[heldout]})}),
    }
