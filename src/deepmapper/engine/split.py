"""One fixed stratified train / validation / held-out split per run (pure numpy).

The split depends on the run seed only, not on the pass: every arrangement is
judged on the same held-out cells, which is what lets evaluate ensemble the
softmax over arrangements, and lets several arrangements train in lock-step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepmapper.errors import InputError


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def stratified_split(codes: np.ndarray, *, test_fraction: float, val_fraction: float, seed: int,
                     classes: list[str] | None = None, min_class_size: int = 5,
                     where: str = "input") -> Split:
    """Per class: ``round(n * test_fraction)`` held out (>= 1), then ``round(rest * val_fraction)``
    (>= 1) for validation, the rest for training (>= 1). Sorted index arrays."""
    codes = np.asarray(codes)
    rng = np.random.default_rng([int(seed), 7919])  # its own stream, independent of arrangements
    parts = {"train": [], "val": [], "test": []}
    for c in np.unique(codes):
        idx = np.flatnonzero(codes == c)
        name = classes[c] if classes is not None else str(c)
        if idx.size < max(3, min_class_size):
            raise InputError(f"class '{name}' has {idx.size} cells, too few for a stratified "
                             f"train/validation/held-out split (need {max(3, min_class_size)})",
                             where=where, field="labels",
                             fix="merge or drop this class, or lower --min-class-size (at least 3).")
        idx = rng.permutation(idx)
        n_test = max(1, int(round(idx.size * test_fraction)))
        rest = idx.size - n_test
        n_val = max(1, int(round(rest * val_fraction)))
        if rest - n_val < 1:
            n_val = rest - 1
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    return Split(**{k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()})


def validation_folds(codes: np.ndarray, split: Split, n_folds: int, seed: int) -> np.ndarray:
    """Fold id (0..n_folds-1) of every non-held-out cell, -1 for held-out cells.

    Class by class the cells are shuffled and dealt round-robin from a random
    starting fold, so every fold holds about ``1 / n_folds`` of each class and
    small classes do not all land in fold 0. Pass ``t`` validates on fold
    ``t mod n_folds`` and trains on the others (see :func:`pass_cells`).
    """
    codes = np.asarray(codes)
    rng = np.random.default_rng([int(seed), 6007])
    folds = np.full(codes.shape[0], -1, dtype=np.int64)
    pool = np.sort(np.concatenate([split.train, split.val]))
    for c in np.unique(codes[pool]):
        idx = rng.permutation(pool[codes[pool] == c])
        folds[idx] = (np.arange(idx.size) + rng.integers(n_folds)) % n_folds
    return folds


def pass_cells(split: Split, folds: np.ndarray | None, pass_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(training cells, validation cells) of pass ``pass_index``: the fixed split without folds,
    else fold ``pass_index mod n_folds`` for validation and the other folds for training."""
    if folds is None:
        return split.train, split.val
    n_folds = int(folds.max()) + 1
    f = pass_index % n_folds
    return np.flatnonzero((folds >= 0) & (folds != f)), np.flatnonzero(folds == f)


def n_validation_folds(val_fraction: float) -> int:
    """Folds for rotating validation: about ``1 / val_fraction`` (at least 2)."""
    return max(2, int(round(1.0 / val_fraction)))
