"""Features <-> pseudo-image pixels under a seeded arrangement (pure, no torch needed).

An arrangement of ``n`` features is a permutation ``perm`` of ``0..n-1``: the
feature ``perm[p]`` sits at pixel ``p`` (row-major) of a ``side x side`` image,
``side = ceil(sqrt(n))``; pixels ``n..side*side-1`` are padding and stay zero.
Every function indexes the last axis, so it works on numpy arrays and torch
tensors alike, and on any leading batch shape.

With screened pairs (:func:`pair_arrangement`), each pair occupies a horizontal
domino: two pixels side by side in one row, at columns ``(2m, 2m + 1)``. The
dominoes used are drawn at random, the order within each at random, and every
other feature takes a random remaining pixel, all from the pass seed; with no
pairs the arrangement is exactly :func:`arrangement`'s. A feature may be in one
pair only (``interactions.select_pairs`` keeps each feature's best pair).
"""
from __future__ import annotations

import math

import numpy as np


def square_side(n_features: int) -> int:
    """Smallest side whose square holds ``n_features`` pixels."""
    if n_features < 1:
        raise ValueError("n_features must be >= 1")
    side = math.isqrt(n_features)
    return side if side * side == n_features else side + 1


def arrangement(n_features: int, seed: int) -> np.ndarray:
    """Seeded permutation (int64) of the features: pass t uses ``seed + t``."""
    return np.random.default_rng(int(seed)).permutation(n_features).astype(np.int64)


def dominoes(n_features: int) -> np.ndarray:
    """Left pixels of the non-overlapping horizontal pixel pairs inside the first ``n_features`` pixels:
    columns (0, 1), (2, 3), ... of every row, padding excluded."""
    side = square_side(n_features)
    left = np.arange(0, max(0, n_features - 1), dtype=np.int64)
    col = left % side
    return left[(col % 2 == 0) & (col + 1 < side)]


def max_pairs(n_features: int) -> int:
    """How many pairs an image of ``n_features`` pixels can hold side by side."""
    return int(len(dominoes(n_features)))


def pair_arrangement(n_features: int, pairs, seed: int) -> np.ndarray:
    """Seeded permutation with every pair ``(a, b)`` of ``pairs`` (M, 2) in adjacent pixels.

    ``pairs`` must be disjoint (no feature twice) and fit (:func:`max_pairs`); with no pairs this
    is :func:`arrangement` (same seed, same permutation).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return arrangement(n_features, seed)
    flat = pairs.ravel()
    if len(np.unique(flat)) != len(flat) or flat.min() < 0 or flat.max() >= n_features:
        raise ValueError("pairs must be disjoint feature indices in 0..n_features-1")
    slots = dominoes(n_features)
    if len(pairs) > len(slots):
        raise ValueError(f"{len(pairs)} pairs do not fit side by side in {n_features} pixels "
                         f"(at most {len(slots)})")
    rng = np.random.default_rng([int(seed), 2])
    chosen = rng.choice(slots, size=len(pairs), replace=False)
    flip = rng.integers(0, 2, len(pairs)).astype(bool)
    perm = np.full(n_features, -1, dtype=np.int64)
    perm[chosen] = np.where(flip, pairs[:, 1], pairs[:, 0])
    perm[chosen + 1] = np.where(flip, pairs[:, 0], pairs[:, 1])
    free = perm < 0
    rest = np.setdiff1d(np.arange(n_features, dtype=np.int64), flat)
    perm[free] = rng.permutation(rest)
    return perm


def pair_pixels(perm: np.ndarray, pairs) -> np.ndarray:
    """Left pixel of each pair under ``perm`` (M,); ValueError when a pair is not side by side."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    inv = inverse(np.asarray(perm))
    pa, pb = inv[pairs[:, 0]], inv[pairs[:, 1]]
    left, right = np.minimum(pa, pb), np.maximum(pa, pb)
    side = square_side(len(perm))
    if np.any(right - left != 1) or np.any(left // side != right // side):
        raise ValueError("a pair is not in adjacent pixels of one row")
    return left


def inverse(perm: np.ndarray) -> np.ndarray:
    """``inv[j]`` is the pixel of feature ``j``."""
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.shape[0], dtype=perm.dtype)
    return inv


def to_pixels(x, perm):
    """(..., n_features) -> (..., side*side) flat images, padding zero.

    Works for numpy arrays and torch tensors; a gather, no loop over features.
    """
    n = perm.shape[0]
    side = square_side(n)
    pad = side * side - n
    gathered = x[..., perm]
    if pad == 0:
        return gathered
    if isinstance(x, np.ndarray):
        widths = [(0, 0)] * (gathered.ndim - 1) + [(0, pad)]
        return np.pad(gathered, widths)
    import torch.nn.functional as F  # torch tensors only reach here

    return F.pad(gathered, (0, pad))


def to_images(x, perm):
    """(batch, n_features) -> (batch, 1, side, side)."""
    side = square_side(perm.shape[0])
    flat = to_pixels(x, perm)
    return flat.reshape(flat.shape[:-1] + (1, side, side)) if isinstance(flat, np.ndarray) \
        else flat.reshape(*flat.shape[:-1], 1, side, side)


def to_features(pixel_map, perm):
    """Per-pixel values (..., side*side) or (..., side, side) -> per-feature (..., n_features).

    Padding pixels are dropped; feature ``j`` reads pixel ``inv[j]``.
    """
    n = perm.shape[0]
    side = square_side(n)
    shape = tuple(pixel_map.shape)
    # (..., side, side) wins when it fits, except that a 2-d (batch, 1) is flat for side 1
    if shape[-2:] == (side, side) and (side > 1 or len(shape) >= 3):
        flat = pixel_map.reshape(shape[:-2] + (side * side,))
    elif shape[-1:] == (side * side,):
        flat = pixel_map
    else:
        raise ValueError(f"expected (..., {side * side}) or (..., {side}, {side}) pixels, got {shape}")
    inv = inverse(np.asarray(perm))
    if not isinstance(flat, np.ndarray):
        import torch

        inv = torch.as_tensor(inv, device=flat.device)
    return flat[..., inv]
