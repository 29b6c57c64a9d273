"""Features <-> pseudo-image pixels under a seeded arrangement (pure, no torch needed).

An arrangement of ``n`` features is a permutation ``perm`` of ``0..n-1``: the
feature ``perm[p]`` sits at pixel ``p`` (row-major) of a ``side x side`` image,
``side = ceil(sqrt(n))``; pixels ``n..side*side-1`` are padding and stay zero.
Every function indexes the last axis, so it works on numpy arrays and torch
tensors alike, and on any leading batch shape.
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
