"""Per-pixel attributions of a trained model: one entry point, several methods.

``attribute(model, images, targets, cfg, baseline)`` returns float32
``(N, channels*side*side)`` (channel-major; one channel unless the model takes
the pair channel); ``transform.to_features`` maps the pixels back to features.

Methods (``cfg.method``):

- ``integrated_gradients`` (default): Captum IntegratedGradients from the
  baseline image to the input. Signed; per image the attributions sum to
  ``f(x)[t] - f(baseline)[t]`` (completeness).
- ``saliency``: the signed gradient of the target logit (Captum Saliency,
  ``abs=False``) **times (input - baseline)**, i.e. a one-step, first-order
  version of integrated gradients. We multiply because a plain gradient is a
  sensitivity that ignores whether the feature is expressed in the cell; the
  product is a contribution on the same scale as the other methods and equals
  integrated gradients exactly for a linear model.
- ``occlusion``: Captum Occlusion with a ``w x w`` window, stride ``w``
  (``cfg.occlusion_window``); each pixel gets ``f(x)[t] - f(x with its window
  set to the baseline)[t]``. When ``w`` does not divide the side, the image is
  padded (padding ignored by the model) so the border is covered too.
- ``attention_rollout``: ``vit`` backbone only. Abnar & Zuidema (2020): per
  block, average the heads, add the identity (residual), renormalise rows,
  multiply through the blocks; the cls token's row over the patch tokens is
  spread to every pixel of its patch. Non-negative and class-agnostic (the
  targets are not used).

Why the baseline matters (and why the default is the training-mean image):
against an all-zeros image a pixel that is high in *every* cell looks
important because it is far from zero, although it tells no class apart; the
training-mean image removes that offset. ``baseline`` is a ``(1, 1, side,
side)`` tensor; it is used when ``cfg.baseline == "train_mean"``, zeros are used
when ``cfg.baseline == "zeros"`` or no baseline is given.

The model is put in eval mode and its parameters stop requiring gradients for
the duration (nothing accumulates in ``.grad``); both are restored afterwards.
Images are processed in chunks of ``cfg.internal_batch_size`` so that no
forward pass sees more images than that.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np

from deepmapper.errors import ConfigError


@dataclass(frozen=True)
class Method:
    """An attribution method and what the trainer may do with it (Captum's one-class-per-method idea:
    a new method is one decorated function here; nothing else keeps a list of names)."""
    name: str
    fn: Callable
    stacked: bool = False          # has a batched form over a stacked model's members (engine.train)
    needs_attention: bool = False  # reads attention the model records (vit)
    one_channel: bool = False      # reads one-channel images only (no pair channel)


_REGISTRY: dict[str, Method] = {}


def register(name: str, **props):
    """Decorator: register ``fn(model, x, t, base, cfg)`` (one chunk) as attribution method ``name``."""
    def wrap(fn):
        _REGISTRY[name] = Method(name, fn, **props)
        return fn
    return wrap


def method_info(name: str) -> Method:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown attribution method '{name}'", field="attribution.method",
                          fix=f"use one of {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def attribute(model, images, targets, cfg, baseline=None, *, progress: bool = False) -> np.ndarray:
    """Signed per-pixel attributions ``(N, side*side)`` float32 of ``targets`` for ``images``.

    ``images``: ``(N, channels, side, side)`` tensor or array; ``targets``: ``N`` class
    indices; ``cfg``: :class:`deepmapper.config.AttributionConfig`. With
    ``progress`` a bar over the chunks is shown on a terminal (quiet in logs).
    """
    import torch

    from deepmapper._utils.progress import Progress

    method = method_info(cfg.method)
    device = _device(model)
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images,
                        dtype=torch.float32).to(device)
    if x.ndim != 4 or x.shape[1] < 1 or x.shape[2] != x.shape[3]:
        raise ValueError(f"images must be (N, channels, side, side), got {tuple(x.shape)}")
    n, channels, side = x.shape[0], x.shape[1], x.shape[-1]
    t = torch.as_tensor(np.asarray(targets.cpu() if torch.is_tensor(targets) else targets),
                        dtype=torch.long).reshape(-1).to(device)
    if t.shape[0] != n:
        raise ValueError(f"{t.shape[0]} targets for {n} images")
    base = _baseline(cfg, baseline, side, device, channels)
    if n == 0:
        return np.zeros((0, channels * side * side), dtype=np.float32)

    if method.needs_attention and not hasattr(model, "record_attention"):
        raise ConfigError(f"{method.name} needs a model that records attention "
                          f"(backbone vit), not {type(model).__name__}",
                          field="attribution.method",
                          fix="use backbone vit, or attribution integrated_gradients.")
    if method.one_channel and channels != 1:
        raise ConfigError(f"{method.name} reads one-channel images", field="attribution.method",
                          fix="use integrated_gradients, or --no-pair-channel.")
    fn = method.fn

    chunk = max(1, int(cfg.internal_batch_size))
    out = np.empty((n, channels * side * side), dtype=np.float32)
    with _frozen_eval(model):
        bar = Progress(-(-n // chunk), f"attribution ({cfg.method})", "chunk", enabled=progress)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            a = fn(model, x[start:stop], t[start:stop], base, cfg)
            out[start:stop] = a.detach().reshape(stop - start, -1).cpu().numpy()
            bar.update(1)
        bar.close()
    return out


# -- helpers -------------------------------------------------------------------

def _device(model):
    import torch

    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _baseline(cfg, baseline, side, device, channels: int = 1):
    import torch

    if baseline is None or cfg.baseline == "zeros":
        return torch.zeros(1, channels, side, side, device=device)
    b = torch.as_tensor(np.asarray(baseline) if not torch.is_tensor(baseline) else baseline,
                        dtype=torch.float32).to(device)
    if b.numel() != channels * side * side:
        raise ValueError(f"baseline must be (1, {channels}, {side}, {side}), got {tuple(b.shape)}")
    return b.reshape(1, channels, side, side)


@contextmanager
def _frozen_eval(model):
    """Eval mode, parameters not requiring grad; restored on exit."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


# -- methods (one chunk each) ------------------------------------------------------

@register("integrated_gradients", stacked=True)
def _integrated_gradients(model, x, t, base, cfg):
    from captum.attr import IntegratedGradients

    return IntegratedGradients(model).attribute(
        x, baselines=base.expand_as(x), target=t, n_steps=cfg.n_steps,
        internal_batch_size=max(int(cfg.internal_batch_size), x.shape[0]))


@register("saliency", stacked=True)
def _saliency(model, x, t, base, cfg):
    from captum.attr import Saliency

    grad = Saliency(model).attribute(x.detach().requires_grad_(True), target=t, abs=False)
    return grad * (x - base)


@register("occlusion")
def _occlusion(model, x, t, base, cfg):
    import torch.nn.functional as F
    from captum.attr import Occlusion

    w = int(cfg.occlusion_window)
    side = x.shape[-1]
    if w > side:
        raise ConfigError(f"occlusion_window ({w}) is larger than the image side ({side})",
                          field="attribution.occlusion_window", fix=f"use a window of at most {side}.")
    pad = (-side) % w
    # pad so every pixel lies in a window; the wrapped model never sees the padding
    xp = F.pad(x, (0, pad, 0, pad))
    bp = F.pad(base, (0, pad, 0, pad)).expand_as(xp)

    def forward(img):
        return model(img[..., :side, :side])

    attr = Occlusion(forward).attribute(xp, sliding_window_shapes=(1, w, w), strides=(1, w, w),
                                        baselines=bp, target=t, perturbations_per_eval=1)
    return attr[..., :side, :side]


@register("attention_rollout", needs_attention=True, one_channel=True)
def _rollout(model, x, t, base, cfg):
    import torch

    model.record_attention = True
    try:
        with torch.no_grad():
            model(x)
        attentions = [a for a in model.attentions]
    finally:
        model.record_attention = False
        for blk in getattr(model, "blocks", []):
            blk.last_attention = None
    rollout = None
    for attn in attentions:
        a = attn.mean(dim=1)  # average heads: (B, T, T)
        a = a + torch.eye(a.shape[-1], device=a.device)  # residual path
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    grid, patch, side = model.grid, model.patch, model.side
    cls_to_patches = rollout[:, 0, 1:].reshape(-1, grid, grid)
    pixels = cls_to_patches.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)
    return pixels[:, :side, :side]


# the registered names, in registration order (the default first): config's choices read this
METHODS = tuple(_REGISTRY)
