"""One fixed stratified train / validation / held-out split per run (pure numpy).

The split depends on the run seed only, not on the pass: every arrangement is
judged on the same held-out cells, which is what lets evaluate ensemble the
softmax over arrangements, and lets several arrangements train in lock-step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError


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
