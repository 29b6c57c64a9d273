"""Scaled feature rows -> the members' pseudo-images (arrangement and pair channel), and the
per-member augmentation of those images."""
from __future__ import annotations

import numpy as np


class Imager:
    """Scaled feature rows (B, F) -> the K members' images (B, K * channels, side, side).

    Channel 0 of member k: the features under its arrangement (padding zero). Channel 1 (the
    pair channel, when ``channels == 2``): the standardised product of each placed pair at
    the pair's left pixel, zero elsewhere. One gather per channel, no loop over features.
    """

    def __init__(self, data, members: list, side: int, channels: int, device):
        import torch

        self.side, self.channels, self.k = side, channels, len(members)
        self.perms = torch.as_tensor(np.stack([m.perm for m in members]), device=device)
        if channels == 2:
            where = np.zeros((self.k, side * side), np.int64)      # 0: no pair, m + 1: pair m
            for k, m in enumerate(members):
                where[k, m.pair_pixels] = np.arange(1, data.n_pairs + 1)
            self.where = torch.as_tensor(where, device=device)
            self.a = torch.as_tensor(data.pairs[:, 0], device=device)
            self.b = torch.as_tensor(data.pairs[:, 1], device=device)
            self.mean = torch.as_tensor(data.pair_mean, device=device)
            self.scale = torch.as_tensor(data.pair_scale, device=device)

    def __call__(self, rows, *, products: bool = True):
        """``products=False``: the pair channel left at zero (the attribution baseline's: the mean
        of a standardised product)."""
        import torch
        import torch.nn.functional as F

        n, s = rows.shape[1], self.side
        pixels = rows[:, self.perms]                    # (B, K, F)
        if s * s - n:
            pixels = F.pad(pixels, (0, s * s - n))
        if self.channels == 1:
            return pixels.reshape(rows.shape[0], self.k, s, s)
        if products:
            prod = (rows[:, self.a] * rows[:, self.b] - self.mean) / self.scale
        else:
            prod = torch.zeros(rows.shape[0], self.a.shape[0], dtype=rows.dtype, device=rows.device)
        ext = torch.cat([torch.zeros_like(prod[:, :1]), prod], dim=1)      # (B, 1 + M)
        pair = ext[:, self.where]                                          # (B, K, s*s)
        return torch.stack([pixels, pair], dim=2).reshape(rows.shape[0], self.k * 2, s, s)


def augment(images, members: list, cfg, channels: int = 1):
    """Per-member Gaussian noise and pixel dropout on the feature channel, each from that member's own
    generator (the pair channel is left as computed)."""
    import torch

    noise_std, drop = cfg.augmentation.noise_std, cfg.augmentation.feature_dropout
    if noise_std == 0 and drop == 0:
        return images
    shape = (images.shape[0], images.shape[2], images.shape[3])
    out = []
    for k, m in enumerate(members):
        x = images[:, k * channels]
        if noise_std > 0:
            x = x + noise_std * torch.randn(shape, generator=m.generator).to(x.device)
        if drop > 0:
            keep = (torch.rand(shape, generator=m.generator) >= drop).to(x.device)
            x = x * keep
        out.append(x)
        out.extend(images[:, k * channels + c] for c in range(1, channels))
    return torch.stack(out, dim=1)
